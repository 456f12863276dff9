"""Behaviours of datapath/lxc.py (bpf_lxc, bpf_sock stand-in) the mutation check found unpinned."""

from __future__ import annotations

import struct
from typing import Literal

import attrs

from datapath import lxc
from datapath.build import icmp4_message, ipv4, ipv6, tcp_segment
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, Verdict
from datapath.host import HookResult, Node, make_node
from datapath.maps import TUPLE_F_OUT, CtEntry, CtTuple
from datapath.packet import IPPROTO_ICMP, IPPROTO_TCP, TCP_ACK, TCP_SYN, ip_bytes

OWN, NODE2, POD, BE = "192.168.2.3", "192.168.2.4", "10.0.1.5", "10.0.1.10"
REMOTE_POD, OUTSIDE = "10.0.2.10", "8.8.8.8"
Version = Literal["1.18", "1.20"]


def _syn(dst: str, dport: int, sport: int = 40000, src: str = POD) -> bytes:
    s, d = ip_bytes(src), ip_bytes(dst)
    return ipv4(s, d, IPPROTO_TCP, tcp_segment(s, d, sport, dport))


def _dst(r: HookResult) -> tuple[str, int]:
    """The IPv4/TCP packet's destination address and port as the hook left them."""
    a = ".".join(str(b) for b in bytes(r.packet[16:20]))
    return a, struct.unpack_from("!H", r.packet, 22)[0]


def _wildcard_node(version: Version = "1.20") -> Node:
    """A pod's node with only 0.0.0.0:port NodePort surrogates, a remote node (its ipcache
    entry names itself as tunnel endpoint) and a remote pod (behind that node)."""
    svcs = tuple(ServiceConfig("0.0.0.0", port, n, (7,), kind="nodeport")
                 for n, port in enumerate((30000, 30080, 32767, 32768), start=1))
    return make_node(NodeConfig(
        ipv4=OWN, version=version, selection="first", services=svcs,
        backends=(BackendConfig(7, BE, 8080),),
        endpoints=(EndpointConfig(POD, 25), EndpointConfig(BE, 26)),
        tunnel_endpoints=((NODE2, NODE2), (REMOTE_POD, NODE2))))


def test_wildcard_nodeport_lookup_needs_a_node_address_and_the_nodeport_range() -> None:
    """v1.20 lb4_lookup_wildcard_service (lib/lb.h:1824-1842), called by
    __per_packet_lb_svc_xlate_4 (bpf_lxc.c:187-200): a port in [nodeport_port_min,
    nodeport_port_max] (30000-32767 here, nat_min - 1 the ceiling) to HOST_ID or a remote
    node finds 0.0.0.0:port; outside the range only HOST_ID may (a HostPort, which these
    NodePort surrogates are not); a pod or an outside address never does."""
    node = _wildcard_node()
    sport = 40000
    for dst in (OWN, NODE2):
        for port in (30000, 30080, 32767):
            sport += 1
            r = node.run("from-container", _syn(dst, port, sport))
            assert (r.drop_reason, r.target, _dst(r)) == (None, "lxc:26", (BE, 8080)), (dst, port)
    for dst, port in ((NODE2, 32768), (OWN, 32768), (OUTSIDE, 30080), (REMOTE_POD, 30080)):
        sport += 1
        r = node.run("from-container", _syn(dst, port, sport))
        assert (r.drop_reason, r.target, _dst(r)) == (None, "stack", (dst, port)), (dst, port)
    assert node.internal_errors == 0


def test_v1_18_from_container_has_no_wildcard_lookup() -> None:
    """v1.18 __per_packet_lb_svc_xlate_4 (bpf_lxc.c:97-110) looks up the exact frontend only:
    another node's NodePort leaves the pod untranslated, for that node to serve."""
    node = _wildcard_node("1.18")
    for dst in (NODE2, OWN):
        r = node.run("from-container", _syn(dst, 30080))
        assert (r.drop_reason, r.target, _dst(r)) == (None, "stack", (dst, 30080)), dst


def test_no_service_endpoints_routable_off_passes_a_backendless_service_on() -> None:
    """v1.20 bpf_lxc.c:245-247: without enable_no_service_endpoints_routable, lb4_local's
    DROP_NO_SERVICE becomes handle_nonroutable_endpoints_v4(svc) (lib/lb.h:2404-2412): the
    service's own flags decide - a ClusterIP goes on untranslated (CTX_ACT_OK), an
    eTP=Local LoadBalancer drops."""
    node = make_node(NodeConfig(
        ipv4=OWN, no_service_endpoints_routable=False, endpoints=(EndpointConfig(POD, 25),),
        services=(ServiceConfig("10.96.0.11", 81, 1, (), kind="clusterip"),
                  ServiceConfig("172.16.10.2", 80, 2, (), ext_traffic_local=True))))
    syn = _syn("10.96.0.11", 81)
    r = node.run("from-container", syn)
    assert (r.verdict, r.drop_reason, r.target, bytes(r.packet)) == (
        Verdict.CTX_ACT_OK, None, "stack", syn)
    r = node.run("from-container", _syn("172.16.10.2", 80))
    assert (r.verdict, r.drop_reason) == (Verdict.CTX_ACT_DROP, DropReason.DROP_NO_SERVICE)
    assert node.internal_errors == 0


def test_socket_lb_leaves_the_pods_packets_untranslated() -> None:
    """ENABLE_SOCKET_LB_FULL leaves ENABLE_PER_PACKET_LB undefined (v1.20 bpf_lxc.c:99-105,
    v1.18 bpf_lxc.c:60-66): from-container translates nothing, connect() did."""
    node = make_node(NodeConfig(
        ipv4=OWN, socket_lb=True, selection="first", endpoints=(EndpointConfig(POD, 25),),
        services=(ServiceConfig("10.96.0.10", 80, 1, (7,), kind="clusterip"),),
        backends=(BackendConfig(7, BE, 8080),)))
    syn = _syn("10.96.0.10", 80)
    r = node.run("from-container", syn)
    assert (r.verdict, r.drop_reason, r.target, bytes(r.packet)) == (
        Verdict.CTX_ACT_OK, None, "stack", syn)


def test_a_packet_to_the_loopback_address_without_a_loopback_connection() -> None:
    """hairpin_flow is the CT_EGRESS lookup's ct_state.loopback (v1.20 bpf_lxc.c:1241-1242):
    with no such connection a packet to the service loopback address is an ordinary one,
    its endpoint looked up by its destination (none: up the stack)."""
    node = make_node(NodeConfig(ipv4=OWN, endpoints=(EndpointConfig(POD, 25),)))
    pkt = _syn("169.254.42.1", 8080)
    r = node.run("from-container", pkt)
    assert (r.verdict, r.drop_reason, r.target, bytes(r.packet)) == (
        Verdict.CTX_ACT_OK, None, "stack", pkt)
    assert node.internal_errors == 0


def test_a_loopback_connections_reply_goes_back_by_its_source_whatever_its_address() -> None:
    """hairpin_flow comes from the CT entry alone (bpf_lxc.c:1189): a reply whose CT_EGRESS
    entry is a loopback one has its endpoint looked up by its source (:1241-1242), whatever
    address it is sent to (here one the node no longer uses as its loopback address). The
    lookup leaves the CT map's LRU order alone, as the model's does."""
    node = make_node(NodeConfig(ipv4=OWN, endpoints=(EndpointConfig(POD, 25),)))
    old = "169.254.0.9"
    ct = node.maps.ct_map(False, IPPROTO_TCP)
    hairpin = CtTuple(ip_bytes(old), ip_bytes(POD), 8080, 40000, IPPROTO_TCP,
                          TUPLE_F_OUT)
    other = CtTuple(ip_bytes(OUTSIDE), ip_bytes(POD), 80, 40001, IPPROTO_TCP,
                        TUPLE_F_OUT)
    assert ct.update(hairpin, CtEntry(rev_nat_index=1, loopback=True))
    assert ct.update(other, CtEntry())
    pkt = _syn(old, 40000, sport=8080)
    r = node.run("from-container", pkt)
    assert (r.verdict, r.drop_reason, r.target, bytes(r.packet)) == (
        Verdict.CTX_ACT_OK, None, "lxc:25", pkt)
    assert [k for k, _ in ct.items()] == [hairpin, other]
    assert ct.update(hairpin, CtEntry(rev_nat_index=1))  # no longer a loopback one
    r = node.run("from-container", pkt)
    assert (r.drop_reason, r.target) == (None, "stack")
    assert node.internal_errors == 0


def test_ipv6_hairpin_keeps_the_pods_source_before_1_20() -> None:
    """v1.18 has no IPv6 loopback: lb6_local sets no state->loopback ("No loopback support
    for IPv6", v1.18 lib/lb.h:1104); v1.20 rewrites the source to service_loopback_ipv6."""
    pod, vip = "fd00::10:1:0:a", "fd00::96:a"
    cfg = NodeConfig(ipv4=None, ipv6="fd00::2:3", version="1.18", selection="first",
                     endpoints=(EndpointConfig(pod, 25),),
                     services=(ServiceConfig(vip, 80, 1, (7,), kind="clusterip"),),
                     backends=(BackendConfig(7, pod, 8080),))
    p, v = ip_bytes(pod), ip_bytes(vip)
    syn = ipv6(p, v, IPPROTO_TCP, tcp_segment(p, v, 40000, 80))
    versions: tuple[tuple[Version, bytes], ...] = (("1.18", p), ("1.20", ip_bytes("fe80::1")))
    for version, src in versions:
        r = make_node(attrs.evolve(cfg, version=version)).run("from-container", syn)
        assert r.drop_reason is None and r.target == "lxc:25", version
        assert (bytes(r.packet[8:24]), bytes(r.packet[24:40])) == (src, p), version


def _sock_node() -> Node:
    """This node's own NodePort frontends (the stand-in's surrogate) and a ClusterIP."""
    svcs = tuple(ServiceConfig(OWN, port, n, (7,), kind="nodeport")
                 for n, port in enumerate((30000, 30080, 32768), start=1))
    return make_node(NodeConfig(
        ipv4=OWN, socket_lb=True, selection="first",
        services=(*svcs, ServiceConfig("10.96.0.10", 80, 9, (7,), kind="clusterip")),
        backends=(BackendConfig(7, BE, 8080),), endpoints=(EndpointConfig(POD, 25),),
        tunnel_endpoints=((NODE2, NODE2), (REMOTE_POD, NODE2))))


def test_sock_connect_finds_another_nodes_nodeport_in_the_range_only() -> None:
    """sock4_wildcard_lookup_full (v1.20 bpf_sock.c:243-281): in the NodePort range a
    remote node's address takes the surrogate (read here from this node's own NodePort
    frontend); outside it only HOST_ID may, and a pod or an outside address never does
    (no service: connect() goes on untranslated, bpf_sock.c:333-336)."""
    node = _sock_node()
    be = ip_bytes(BE)
    for port, rev in ((30000, 1), (30080, 2)):
        got = lxc.sock_connect(node, _syn(NODE2, port), None)
        assert got == (lxc.SockPeer(ip_bytes(NODE2), port, be, 8080, rev), None), port
    for dst, port in ((NODE2, 32768), (OUTSIDE, 30080), (REMOTE_POD, 30080),
                      ("10.96.0.99", 80)):
        assert lxc.sock_connect(node, _syn(dst, port), None) == (None, None), (dst, port)
    s, d = ip_bytes(POD), ip_bytes("10.96.0.10")
    echo = ipv4(s, d, IPPROTO_ICMP, icmp4_message(8, 0, b"\0\1\0\1", b""))
    assert lxc.sock_connect(node, echo, None) == (None, None)  # no ports: not translated


def test_sock_connect_draws_from_the_serving_slots_only() -> None:
    """__sock4_xlate_fwd draws key.backend_slot = sock_select_slot % svc->count + 1 (v1.20
    bpf_sock.c:428): slots 1..count. A terminating backend beyond count (and slot 0, the
    master holding the affinity timeout) is never connected to, even when pinned."""
    node = make_node(NodeConfig(
        ipv4=OWN, socket_lb=True,
        services=(ServiceConfig("10.96.0.10", 80, 1, (7, 8), kind="clusterip",
                                affinity_timeout=8),),
        backends=(BackendConfig(7, BE, 8080),
                  BackendConfig(8, "10.0.1.11", 8080, state="terminating"))))
    for pin in (None, 8):
        peer, err = lxc.sock_connect(node, _syn("10.96.0.10", 80), pin)
        assert err is None and peer is not None and peer.backend == ip_bytes(BE), pin


def test_sock_rev_needs_the_service_it_connected_to() -> None:
    """__sock4_xlate_rev (v1.20 bpf_sock.c:613-620): the answer shows the frontend only while
    the service is there with the same rev_nat_index and some backend; else the socket
    sees the backend's own address."""
    node = _sock_node()
    peer, err = lxc.sock_connect(node, _syn("10.96.0.10", 80), None)
    assert err is None and peer is not None
    b, p = ip_bytes(BE), ip_bytes(POD)
    ans = ipv4(b, p, IPPROTO_TCP, tcp_segment(b, p, 8080, 40000, TCP_SYN | TCP_ACK))
    shown = lxc.sock_rewrite(node, ans, peer, forward=False)
    assert (shown[12:16], struct.unpack_from("!H", shown, 20)[0]) == (
        ip_bytes("10.96.0.10"), 80)
    cfg = node.config
    changed = (ServiceConfig("10.96.0.10", 80, 9, (), kind="clusterip"),
               ServiceConfig("10.96.0.10", 80, 10, (7,), kind="clusterip"), None)
    for svc in changed:
        node.reprogram(attrs.evolve(cfg, services=() if svc is None else (svc,)))
        assert lxc.sock_rewrite(node, ans, peer, forward=False) == ans, svc
