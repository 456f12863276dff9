"""A fragment's L4 ports on bytes: cilium_ipv4/6_frag_datagrams (ipv4.h, ipv6.h, ipfrag.h)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datapath.drop import DatapathDrop, DropReason
from datapath.maps import FragKey, FragPorts
from datapath.packet import PORT_PROTOS, Parsed

if TYPE_CHECKING:
    from datapath.host import Node

def load_l4_ports(node: Node, p: Parsed, entry: bool = True) -> None:
    """ipv4_load_l4_ports / ipv6_load_l4_ports (v1.20 ipv4.h:143-158, ipv6.h:430-444).

    Tracking on: the first fragment records its ports under {daddr, saddr, id, proto}
    (ipv4.h:113-134), a later one reads them or is DROP_FRAG_NOT_FOUND (ipv4.h:96-98).
    Tracking off: bpf_host / bpf_overlay drop every fragment, the first too, before
    nodeport (DROP_FRAG_NOSUPPORT: bpf_host.c:612-617, 161-168; bpf_overlay.c:71, 275;
    v1.18 bpf_host.c:617-620, bpf_overlay.c:302-305). v1.18 drops any IPv6 packet with a
    fragment header (v1.18 ipv6.h:55-56). `entry` False: to-netdev, where no handle_ipv4
    runs first, so without tracking only a later fragment is dropped (ipv4.h:151-152).
    """
    if not (p.is_frag or p.frag_hdr) or p.proto not in PORT_PROTOS:
        return
    cfg = node.config
    if p.v6 and cfg.version == "1.18":  # any fragment header, an atomic fragment's too
        raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT)
    if not p.is_frag:
        return
    if not cfg.fragment_tracking and (entry or not p.frag_first):
        raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT)
    if not cfg.fragment_tracking:
        return
    frag = node.maps.frag6 if p.v6 else node.maps.frag4
    key = FragKey(p.daddr, p.saddr, p.frag_id, p.proto)
    if not p.frag_first:
        ports = frag.lookup(key)
        if ports is None:
            raise DatapathDrop(DropReason.DROP_FRAG_NOT_FOUND)
        p.sport, p.dport = ports.sport, ports.dport
        p.frag_ports = True
        return
    if "frag_first_not_recorded" not in node.faults:
        frag.update(key, FragPorts(p.sport, p.dport))
