"""IP fragments at a hook's entry: the L4 ports of a datagram's later fragments (ipfrag.h)."""

from __future__ import annotations

import attrs

from model.config import CiliumConfig, CiliumVersion
from model.drops import DropReason
from model.faults import ModelFault
from model.maps import FragKey, FragPorts, NodeState
from model.values import FRAG_UNITS, Endpoint, Fragment, Packet, Proto, TcpFlags


def load_l4_ports(cfg: CiliumConfig, faults: frozenset[ModelFault], st: NodeState,
                  pkt: Packet) -> tuple[NodeState, Packet, DropReason | None]:
    """ipv4_load_l4_ports / ipv6_load_l4_ports (ipv4.h:143, ipv6.h:430): a fragment's ports.

    With tracking on, the first fragment records its ports under {saddr, daddr, id, proto}
    (ipv4.h:127-134) and a later one takes them from there, or is DROP_FRAG_NOT_FOUND
    (ipv4.h:96-98). With it off, bpf_host and bpf_overlay drop every fragment, the first
    too, before nodeport_lb4 runs (DROP_FRAG_NOSUPPORT: bpf_host.c:612-617, 161-168,
    bpf_overlay.c:71, 275; v1.18 bpf_host.c:617-620, bpf_overlay.c:302-305). v1.18 has no
    IPv6 tracking: ipv6_hdrlen drops every packet with a fragment header (v1.18
    ipv6.h:55-56)."""
    frag = pkt.frag
    if frag is None or pkt.proto not in (Proto.TCP, Proto.UDP):
        return st, pkt, None
    if not cfg.fragment_tracking or (pkt.is_ipv6 and cfg.version is not CiliumVersion.V1_20):
        return st, pkt, DropReason.DROP_FRAG_NOSUPPORT
    key = FragKey(saddr=pkt.src.addr, daddr=pkt.dst.addr, id=frag.id, proto=pkt.proto)
    if not frag.first:
        ports = st.frag.get(key)
        if ports is None:
            return st, pkt, DropReason.DROP_FRAG_NOT_FOUND
        st = attrs.evolve(st, frag=st.frag.touch(key))
        return st, attrs.evolve(pkt, src=Endpoint(addr=pkt.src.addr, port=ports.sport),
                                dst=Endpoint(addr=pkt.dst.addr, port=ports.dport)), None
    if frag.more and ModelFault.FRAG_FIRST_NOT_RECORDED not in faults:
        st = attrs.evolve(st, frag=st.frag.put(key, FragPorts(sport=pkt.src.port,
                                                              dport=pkt.dst.port)))
    return st, pkt, None


def no_l4(pkt: Packet) -> Packet:
    """A later fragment leaves as it came: no L4 header, so only its addresses changed."""
    return attrs.evolve(pkt, src=Endpoint(addr=pkt.src.addr, port=0),
                        dst=Endpoint(addr=pkt.dst.addr, port=0))


def fragments(pkt: Packet, count: int, ident: int) -> tuple[Packet, ...]:
    """A datagram as a sender fragments it: the first keeps the L4 header (ports, flags),
    the others carry only addresses; FRAG_UNITS 8-byte units each, MF on all but the last."""
    out = []
    for j in range(count):
        frag = Fragment(id=ident, offset=j * FRAG_UNITS, more=j < count - 1)
        out.append(attrs.evolve(pkt, frag=frag) if j == 0
                   else no_l4(attrs.evolve(pkt, frag=frag, flags=TcpFlags.NONE)))
    return tuple(out)


ORDERS = ("in-order", "reversed", "first-last")


def ordered(frags: tuple[Packet, ...], order: str) -> tuple[Packet, ...]:
    """The order fragments reach the node: as sent, last first, or first then last then
    the rest (a network may reorder; Cilium needs the first before the others)."""
    if order == "reversed":
        return tuple(reversed(frags))
    if order == "first-last" and len(frags) > 2:
        return (frags[0], frags[-1], *frags[1:-1])
    return frags
