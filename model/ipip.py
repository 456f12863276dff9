"""DSR dispatch ipip: the LB node's encapsulation and the backend node's termination switch."""

from __future__ import annotations

import attrs

from model.config import CiliumConfig, CiliumVersion, DsrDispatch
from model.faults import ModelFault
from model.values import Encap, Endpoint, IPAddress, Outer, Packet

# The tunnel key's tunnel_id: get_tunnel_id(LOCAL_NODE_ID) for a seclabel 0 sender; the
# kernel's ipip device puts no identity on the wire (an IPIP header has no field for it).
IPIP_TUNNEL_ID = 0


def encapsulate(node_ip: IPAddress, pkt: Packet, backend: IPAddress,
                faults: frozenset[ModelFault] = frozenset()) -> Packet:
    """dsr_set_ipip4/6 (v1.20 nodeport.h:1696-1755, :302-348; v1.18 :1469-1520): the
    request keeps its tuple (no DNAT, nodeport_skip_xlate4) inside an outer IP header to the
    backend's own address. The outer source at XDP is rss_gen_src4(client, hint) over
    IPV4_RSS_PREFIX, which the agent sets to IPV4_DIRECT_ROUTING with 32 prefix bits unless
    --bpf-lb-rss-ipv4-src-cidr is given, so the node's address; on tc the kernel's
    cilium_ipip4 device picks the route's source for the tunnel key (TUNNEL_KEY_WITHOUT_
    SRC_IP), the same address in the model's one-device nodes."""
    inner = pkt
    if ModelFault.IPIP_DNATS_INNER in faults:
        inner = attrs.evolve(pkt, dst=Endpoint(addr=backend, port=pkt.dst.port))
    return attrs.evolve(inner, outer=Outer(src=node_ip, dst=backend, vni=IPIP_TUNNEL_ID,
                                           kind=Encap.IPIP))


def terminates(cfg: CiliumConfig, local_endpoint: bool) -> bool:
    """Whether cil_from_netdev strips the outer header (v1.20 bpf_host.c:1149-1152): the
    node config enable_ipip_termination (--enable-ipip-termination), an outer destination
    that is a local endpoint. v1.18 has no such path: its IPIP backends decapsulate
    themselves (the standalone L4LB's design)."""
    return cfg.version is CiliumVersion.V1_20 and cfg.ipip_termination and local_endpoint


def v118_ipip_skips(cfg: CiliumConfig, dsr: bool) -> bool:
    """v1.18's nodeport_xlate4/6 (v1.18 nodeport.h:1441-1449, :180-188): under IPIP no DSR
    service is DNATed, not even to a local backend; v1.20 DNATs local ones (:1642-1653)."""
    return dsr and cfg.dispatch is DsrDispatch.IPIP and cfg.version is CiliumVersion.V1_18
