"""Behaviours the datapath mutation check found unpinned: a service slot naming a backend the
backend map lacks, and a native-routing CIDR of length 0."""

from __future__ import annotations

import attrs

from datapath.build import ipv4, tcp_segment, udp_datagram
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, Verdict
from datapath.host import make_node
from datapath.packet import IPPROTO_TCP, IPPROTO_UDP, ip_bytes

CLIENT, VIP = ip_bytes("110.0.11.1"), ip_bytes("172.16.10.2")


def test_a_slot_naming_a_missing_backend_is_no_service() -> None:
    """lb4_local (v1.20 lb.h:2230-2232): the slot's backend ID has no entry in the backend
    map (the agent deletes a backend before it rewrites the slots) -> DROP_NO_SERVICE."""
    node = make_node(NodeConfig(ipv4="10.0.10.1", selection="first", services=(
        ServiceConfig("172.16.10.2", 80, 1, (7,)),), backends=(
        BackendConfig(7, "192.168.0.7", 8080),)))
    assert node.maps.lb4_backends.delete(7)
    syn = ipv4(CLIENT, VIP, IPPROTO_TCP, tcp_segment(CLIENT, VIP, 40000, 80))
    r = node.run("from-netdev", syn)
    assert (r.verdict, r.drop_reason) == (Verdict.CTX_ACT_DROP, DropReason.DROP_NO_SERVICE)
    assert node.internal_errors == 0


def test_an_exclusion_cidr_of_length_zero_covers_every_address() -> None:
    """The reference reads a /0 native-routing CIDR as every address (nothing masqueraded).
    Cilium's ipv4_is_in_subnet (lib/ipv4.h:87) computes 1 << 32 for it, undefined in C, so
    there is no Cilium behaviour to compare: this pins the reference's reading."""
    cfg = NodeConfig(ipv4="10.0.10.1", masquerade=True, endpoints=(
        EndpointConfig("192.168.0.1", 25, 127),))
    pod, server = ip_bytes("192.168.0.1"), ip_bytes("110.0.11.1")
    pkt = ipv4(pod, server, IPPROTO_UDP, udp_datagram(pod, server, 50001, 80))
    for cidrs, src in (((), ip_bytes("10.0.10.1")), (("0.0.0.0/0",), pod)):
        node = make_node(attrs.evolve(cfg, snat_exclusion_cidrs=cidrs))
        r = node.run("to-netdev", pkt)
        assert r.verdict == Verdict.CTX_ACT_OK and bytes(r.packet[12:16]) == src, cidrs
