"""Behaviours the datapath mutation check found unpinned: a service slot naming a backend the
backend map lacks, and a native-routing CIDR of length 0."""

from __future__ import annotations

from typing import Literal

import attrs

from datapath.build import ipv4, ipv6, tcp_segment, udp_datagram
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, Verdict
from datapath.errors import ConfigError
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


def _web(**kw: object) -> NodeConfig:
    return NodeConfig(ipv4="10.0.10.1", selection="first", services=(
        ServiceConfig("172.16.10.2", 80, 1, (7,), **kw),), backends=(  # type: ignore[arg-type]
        BackendConfig(7, "192.168.0.7", 8080),))


def _syn(src: bytes = CLIENT) -> bytes:
    return ipv4(src, VIP, IPPROTO_TCP, tcp_segment(src, VIP, 40000, 80))


def test_terminating_backends_serve_when_none_is_active() -> None:
    """The agent falls back to terminating backends when a service has no active one: they
    fill the slots (count 1 here), so a new connection is still served."""
    cfg = attrs.evolve(_web(), backends=(BackendConfig(7, "192.168.0.7", 8080,
                                                       state="terminating"),))
    r = make_node(cfg).run("from-netdev", _syn())
    assert r.drop_reason is None and bytes(r.packet[16:20]) == ip_bytes("192.168.0.7")


def test_a_bare_source_range_address_is_one_host() -> None:
    """A source range written without a prefix length is a host route (/32): the address
    itself passes, its neighbour is DROP_NOT_IN_SRC_RANGE."""
    node = make_node(_web(source_ranges=("110.0.11.1",)))
    assert node.run("from-netdev", _syn()).drop_reason is None
    other = node.run("from-netdev", _syn(ip_bytes("110.0.11.2")))
    assert other.drop_reason == DropReason.DROP_NOT_IN_SRC_RANGE and node.internal_errors == 0


def test_reprogramming_syncs_the_maglev_tables_from_scratch() -> None:
    """A re-sync writes every map afresh: a Maglev table the new configuration no longer
    has is gone, so its service selects no backend (lb4_select_backend_id_maglev: no
    outer entry, lb.h:1944-1949) -> DROP_NO_SERVICE."""
    table = (7,) * 251
    cfg = attrs.evolve(_web(maglev=table), selection="maglev", maglev_table_size=251)
    node = make_node(cfg)
    assert node.run("from-netdev", _syn()).drop_reason is None
    node.reprogram(attrs.evolve(cfg, services=(ServiceConfig("172.16.10.2", 80, 1, (7,)),)))
    r = node.run("from-netdev", _syn(ip_bytes("110.0.11.3")))
    assert r.drop_reason == DropReason.DROP_NO_SERVICE


def test_reprogramming_syncs_the_ipv6_maglev_tables_from_scratch() -> None:
    """The same for cilium_lb6_maglev (lb6_select_backend_id_maglev, lb.h): the IPv6 table
    of a service the new configuration leaves without one is gone too."""
    vip6, client6 = ip_bytes("fd10::2"), ip_bytes("2001:db8::1")
    svc = ServiceConfig("fd10::2", 80, 2, (8,), maglev=(8,) * 251)
    cfg = NodeConfig(ipv4=None, ipv6="fd05::1", selection="maglev", maglev_table_size=251,
                     services=(svc,), backends=(BackendConfig(8, "fd04::8", 8080),))
    node = make_node(cfg)

    def syn(sport: int) -> bytes:
        return ipv6(client6, vip6, IPPROTO_TCP, tcp_segment(client6, vip6, sport, 80))

    assert node.run("from-netdev", syn(40000)).drop_reason is None
    node.reprogram(attrs.evolve(cfg, services=(attrs.evolve(svc, maglev=()),)))
    r = node.run("from-netdev", syn(40001))
    assert r.drop_reason == DropReason.DROP_NO_SERVICE and node.internal_errors == 0


def test_a_maglev_table_of_the_wrong_size_is_refused() -> None:
    """LB_MAGLEV_LUT_SIZE is the table size: a service's table of another length is a
    configuration error naming the service."""
    cfg = attrs.evolve(_web(maglev=(7,) * 250), selection="maglev", maglev_table_size=251)
    try:
        make_node(cfg)
    except ConfigError as e:
        assert "172.16.10.2:80" in str(e) and "251" in str(e)
    else:
        raise AssertionError("a 250-entry table was accepted")


def test_a_forced_backend_does_not_outlive_its_packet() -> None:
    """IPIP termination forces the outer destination as the backend for that one packet
    (CB_FORCED_BACKEND, a per-packet control buffer): the next packet, here one that XDP
    load-balances, selects from the service's own backends."""
    cfg = NodeConfig(name="be", ipv4="10.0.10.2", mode="snat", ipip_termination=True,
                     services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),),
                     backends=(BackendConfig(124, "192.168.0.9", 8080),),
                     endpoints=(EndpointConfig("192.168.0.1"),))
    node = make_node(cfg)
    syn = _syn()
    r = node.run("from-netdev", ipv4(ip_bytes("10.0.10.1"), ip_bytes("192.168.0.1"), 4, syn))
    assert bytes(r.packet[16:20]) == ip_bytes("192.168.0.1")
    x = node.run("xdp", _syn(ip_bytes("110.0.11.9")))
    assert bytes(x.packet[16:20]) == ip_bytes("192.168.0.9"), x


def test_an_exception_inside_a_hook_is_one_internal_error_and_a_drop() -> None:
    """The datapath never raises: an unexpected exception inside a program is counted (one
    per packet) and the packet is dropped with DROP_INVALID, returned as it came."""
    node = make_node(_web())
    node.maps = None  # type: ignore[assignment]  # every map access now fails
    pkt = _syn()
    r = node.run("from-netdev", pkt)
    assert (r.verdict, r.drop_reason, bytes(r.packet)) == (
        Verdict.CTX_ACT_DROP, DropReason.DROP_INVALID, pkt)
    assert node.internal_errors == 1


def test_ipip_termination_needs_the_switch_and_v120() -> None:
    """cil_from_netdev strips IPIP only with enable_ipip_termination (v1.20
    bpf_host.c:1149-1152); 1.18 has no such path. Without it the packet reaches the pod
    still encapsulated."""
    inner = _syn()
    pkt = ipv4(ip_bytes("10.0.10.1"), ip_bytes("192.168.0.1"), 4, inner)
    cases: tuple[tuple[Literal["1.18", "1.20"], bool, bool], ...] = (
        ("1.20", True, True), ("1.20", False, False), ("1.18", True, False))
    for version, switch, strips in cases:
        cfg = NodeConfig(name="be", ipv4="10.0.10.2", mode="snat", version=version,
                         ipip_termination=switch,
                         endpoints=(EndpointConfig("192.168.0.1"),))
        r = make_node(cfg).run("from-netdev", pkt)
        assert (r.packet[9] != 4) is strips, (version, switch)


def test_overlay_drops_a_first_fragment_without_tracking() -> None:
    """Fragment tracking off: bpf_overlay drops every fragment, the first too, before
    nodeport runs (DROP_FRAG_NOSUPPORT, bpf_overlay.c:71, :275), as bpf_host does; with
    tracking on the first fragment is delivered."""
    from datapath.build import geneve_encap

    pod = ip_bytes("192.168.0.1")
    seg = udp_datagram(CLIENT, pod, 40000, 8080)
    first = ipv4(CLIENT, pod, IPPROTO_UDP, seg, ident=7, frag=0x2000)
    frame = geneve_encap(ip_bytes("10.0.10.9"), ip_bytes("10.0.10.2"), first, 2, b"", 40000)
    for tracking, drop in ((False, DropReason.DROP_FRAG_NOSUPPORT), (True, None)):
        cfg = NodeConfig(name="be", ipv4="10.0.10.2", tunnel=True, version="1.20",
                         fragment_tracking=tracking, endpoints=(EndpointConfig("192.168.0.1"),))
        r = make_node(cfg).run("from-overlay", frame)
        assert r.drop_reason == drop, tracking
