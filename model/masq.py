"""BPF masquerading of pod egress (bpf.masquerade): to-netdev SNAT in the NodePort SNAT map.

Cilium's to-netdev runs nodeport_snat_fwd_ipv4 (nodeport_egress.h:320-420) on whatever
the reverse DNAT left untranslated: snat_v4_needs_masquerade (nat.h:626-789) picks
IPV4_MASQUERADE for a packet from a local endpoint to a destination outside the cluster,
and snat_v4_nat allocates with the same snat_v4_new_mapping, the same map
(cilium_snat_v4_external) and the same port range (NODEPORT_PORT_MIN_NAT..MAX,
nodeport_egress.h:324-325) as NodePort SNAT. model.snat.snat_nat is that allocation; this
module only decides when it runs and with which address.

What is modelled of snat_v4_needs_masquerade: the source must be a local endpoint
(nat.h:657-691); a destination with an ipcache entry (a pod, node or router of the
cluster) is not masqueraded: pods fall in IPV4_SNAT_EXCLUSION_DST_CIDR (the native-routing
CIDR, nat.h:716-720), remote nodes are skipped in native routing (nat.h:745-748). Left
out: host-originated connections reserving ports on the masquerade address (nat.h:648-662),
ip-masq-agent CIDRs, egress gateway, remote-node masquerade in tunnel mode (nat.h:749-761)
and ICMP echo, whose ID Cilium does not clamp to the range (nat.h:970-975; its keys carry
protocol ICMP, so they never meet a TCP/UDP flow's).
"""

from __future__ import annotations

from collections.abc import Container

import attrs

from model.config import CiliumConfig
from model.conntrack import Direction, created, on_packet
from model.drops import DropReason
from model.faults import ModelFault
from model.hooks import egress_key
from model.maps import NodeState
from model.snat import RandomSource, snat_nat
from model.values import IPAddress, Packet, Proto


@attrs.frozen(kw_only=True)
class Masquerade:
    """A masquerade allocation's outcome: the new state and the packet as it leaves, or a
    drop reason (DROP_NAT_NO_MAPPING when 32 tries found no free port)."""

    state: NodeState
    packet: Packet
    drop: DropReason | None = None


def needs_masquerade(masquerade: bool, st: NodeState, pkt: Packet,
                     cluster: Container[IPAddress]) -> bool:
    """snat_v4_needs_masquerade's answer for this model: bpf.masquerade on, TCP/UDP from a
    local endpoint, to an address the ipcache does not know (`cluster`: a container of the
    cluster's addresses)."""
    return (masquerade and pkt.proto in (Proto.TCP, Proto.UDP) and pkt.quote is None
            and pkt.src.addr in st.lb.local_endpoints
            and pkt.dst.addr not in cluster)


def masquerade(cfg: CiliumConfig, st: NodeState, pkt: Packet, target: IPAddress, now: int,
               salt: object, rand: RandomSource, faults: frozenset[ModelFault]) -> Masquerade:
    """The pod's packet through bpf_lxc's CT_EGRESS entry (created or refreshed, so the
    agent's orphan-NAT purge keeps the pair) and snat_v4_nat to IPV4_MASQUERADE."""
    key = egress_key(pkt.src, pkt.dst, pkt.proto)
    version = cfg.version
    old = st.ct.get(key)
    entry = (created(version, pkt, now) if old is None
             else on_packet(version, old, pkt, now, direction=Direction.ORIGINAL))
    st = attrs.evolve(st, ct=st.ct.put(key, entry))
    if ModelFault.MASQ_IGNORES_REVERSE_ENTRY in faults:
        faults = faults | {ModelFault.SNAT_IGNORE_REVERSE_ENTRY}
    res = snat_nat(cfg, st.snat, pkt.src, pkt.dst, pkt.proto, target, now, salt, rand,
                   faults)
    st = attrs.evolve(st, snat=res.snat)
    if res.nat is None:
        return Masquerade(state=st, packet=pkt, drop=DropReason.DROP_NAT_NO_MAPPING)
    return Masquerade(state=st, packet=attrs.evolve(pkt, src=res.nat))
