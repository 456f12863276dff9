"""IPIP behaviours the datapath mutation check found unpinned (datapath/ipip.py survivors)."""

from __future__ import annotations

import struct

import pytest

from datapath.build import ipv4, ipv6, tcp_segment
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, Verdict
from datapath.host import Node, make_node
from datapath.ipip import kernel_ipip
from datapath.packet import IPPROTO_TCP, ip_bytes

CLIENT4, VIP4, BACKEND4 = ip_bytes("110.0.11.1"), ip_bytes("172.16.10.2"), ip_bytes("192.168.0.2")
CLIENT6, VIP6, BACKEND6 = ip_bytes("100::"), ip_bytes("200::"), ip_bytes("300::")
LB4, LB6 = ip_bytes("10.0.10.1"), ip_bytes("500::")
POD4, POD6 = ip_bytes("192.168.0.1"), ip_bytes("fd00::1")
EXPERIMENTAL = 253  # an IP protocol with no service and no port: plain local delivery

LB_CFG = NodeConfig(name="lb", ipv4="10.0.10.1", ipv6="500::", mode="dsr", dispatch="ipip",
                    version="1.20",
                    services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),
                              ServiceConfig("200::", 80, 2, (125,))),
                    backends=(BackendConfig(124, "192.168.0.2", 8080),
                              BackendConfig(125, "300::", 8080)))


def _be_node() -> Node:
    return make_node(NodeConfig(
        name="be", ipv4="10.0.10.2", ipv6="500::2", mode="dsr", dispatch="ipip",
        ipip_termination=True, services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),),
        backends=(BackendConfig(124, "192.168.0.9", 8080),),
        endpoints=(EndpointConfig("192.168.0.1"), EndpointConfig("fd00::1"))))


def _syn4(tos: int = 0) -> bytes:
    return ipv4(CLIENT4, VIP4, IPPROTO_TCP, tcp_segment(CLIENT4, VIP4, 111, 80), tos=tos)


def _syn6(tclass: int = 0) -> bytes:
    return ipv6(CLIENT6, VIP6, IPPROTO_TCP, tcp_segment(CLIENT6, VIP6, 111, 80), tclass=tclass)


def _tc_encap(inner: bytes) -> bytes:
    r = make_node(LB_CFG).run("from-netdev", inner)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.drop_reason is None
    assert r.target == ("cilium_ipip6" if inner[0] >> 4 == 6 else "cilium_ipip4")
    return bytes(r.packet)


@pytest.mark.parametrize(("ecn", "want"), [(0, 0), (1, 1), (2, 2), (3, 2)])  # DSCP 46 above
def test_tc_outer_header_takes_only_the_inner_ecn_bits(ecn: int, want: int) -> None:
    """dsr_set_ipip4_dev / dsr_set_ipip6_dev (v1.20 nodeport.h:1668, v6 :258) zero the
    tunnel key, tos included; the collect-md device's ip_md_tunnel_xmit / ipxip6_tnl_xmit
    then apply INET_ECN_encapsulate(0, inner dsfield) (include/net/inet_ecn.h): the outer
    TOS / traffic class is the inner's ECN field alone, its DSCP not copied, and a
    congestion-experienced inner (CE) gives ECT(0)."""
    out = _tc_encap(_syn4(0xB8 | ecn))
    assert out[1] == want and out[20:] == _syn4(0xB8 | ecn)
    out6 = _tc_encap(_syn6(0xB8 | ecn))
    first = struct.unpack_from("!I", out6)[0]
    assert first >> 28 == 6 and (first >> 20) & 0xFF == want and out6[40:] == _syn6(0xB8 | ecn)


def test_tc_outer_ipv4_header_has_ip_id_zero() -> None:
    """The kernel's iptunnel_xmit picks the outer IP id with __ip_select_ident (a hash, no
    fixed value; DF is clear: dsr_set_ipip4_dev sets no BPF_F_DONT_FRAGMENT,
    nodeport.h:1674-1675). There is no Cilium value to compare: this pins the reference's
    documented reading (docs/ipip.md, vectors/ipip_dsr.yaml): id 0, flags and offset 0."""
    out = _tc_encap(_syn4())
    assert out[4:8] == b"\0\0\0\0" and out[9] == 4


@pytest.mark.parametrize("v6", [False, True])
def test_the_adapters_ipip_device_writes_the_references_tc_header(v6: bool) -> None:
    """ciliumbpf's collect-md IPIP device (kernel_ipip) writes what the reference's tc path
    writes for the tunnel key bpf_host set (v1.20 nodeport.h:1659-1681): an IPv6 outer
    header for a 16-byte remote, source the node's own address of that family (the route's
    source: TUNNEL_KEY_WITHOUT_SRC_IP, nodeport.h:1661), then the inner packet unchanged."""
    inner = _syn6(0xB9) if v6 else _syn4(0xB9)
    remote = BACKEND6 if v6 else BACKEND4
    out = kernel_ipip(LB_CFG, inner, remote)
    assert out == _tc_encap(inner)
    if v6:
        assert out[6] == 41 and out[8:24] == LB6 and out[24:40] == remote and out[40:] == inner
    else:
        assert out[9] == 4 and out[12:16] == LB4 and out[16:20] == remote and out[20:] == inner


def test_termination_strips_a_bare_inner_header() -> None:
    """v1.20 bpf_host.c:1149-1175 (v6 :1061-1087) terminates any IPIP (ihl 5) / IPv6-in-IPv6
    packet to a local endpoint; the shrink, bpf_skb_adjust_room, only fails when less than
    one IPv4 / IPv6 header would remain (net/core/filter.c, len_min). An outer header
    over a bare 20 / 40-byte inner header (the 40 / 80-byte boundary) is stripped, and the
    inner goes on as if it had arrived alone."""
    inner4 = ipv4(CLIENT4, POD4, EXPERIMENTAL, b"")
    inner6 = ipv6(CLIENT6, POD6, EXPERIMENTAL, b"")
    for outer, inner in ((ipv4(LB4, POD4, 4, inner4), inner4),
                         (ipv6(LB6, POD6, 41, inner6), inner6)):
        assert len(outer) in (40, 80)
        r, alone = _be_node().run("from-netdev", outer), _be_node().run("from-netdev", inner)
        assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
        assert (bytes(r.packet), r.target) == (bytes(alone.packet), alone.target)
        assert len(r.packet) == len(inner)


def test_termination_leaves_non_ipip_and_ipip_with_options() -> None:
    """v1.20 bpf_host.c:1149-1151: termination needs protocol IPPROTO_IPIP *and* an outer header
    without options (ipv4_hdrlen == 20). A plain TCP packet to a local pod and an IPIP one
    whose outer header carries options reach the pod untouched."""
    seg = tcp_segment(CLIENT4, POD4, 111, 8080)
    plain = ipv4(CLIENT4, POD4, IPPROTO_TCP, seg)
    with_opts = ipv4(LB4, POD4, 4, _syn4(), options=b"\x01\x01\x01\x01")  # NOPs, ihl 6
    for pkt, hdr in ((plain, 20), (with_opts, 24)):
        node = _be_node()
        r = node.run("from-netdev", pkt)
        assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
        assert len(r.packet) == len(pkt) and r.packet[hdr:] == pkt[hdr:]
        assert node.internal_errors == 0


def test_a_runt_frame_on_a_terminating_node_is_dropped_cleanly() -> None:
    """A frame shorter than an IPv4 header fails cil_from_netdev's first
    revalidate_data_pull (v1.20 bpf_host.c:1126, v6 :1031): DROP_INVALID, before the
    termination check reads the protocol byte (no exception in the reference)."""
    for runt in (b"\x45" + b"\0" * 8, b"\x60" + b"\0" * 5):
        node = _be_node()
        r = node.run("from-netdev", runt)
        assert (r.verdict, r.drop_reason) == (Verdict.CTX_ACT_DROP, DropReason.DROP_INVALID)
        assert node.internal_errors == 0


@pytest.mark.parametrize("v6", [False, True])
def test_xdp_outer_header_whatever_the_inner_ttl_and_length(v6: bool) -> None:
    """dsr_set_ipip4 / dsr_set_ipip6 at XDP (v1.20 nodeport.h:1690-1735) write the outer
    length as the inner's plus one header (an odd length too) and their own TTL / hop limit
    (IPDEFTTL), not the inner packet's; the IPv4 outer checksum stays valid."""
    from datapath.csum import checksum
    from datapath.drop import XdpVerdict

    seen = set()
    for ttl, data in ((64, b""), (17, b"x" * 7)):
        if v6:
            seg = tcp_segment(CLIENT6, VIP6, 111, 80, payload=data)
            inner = ipv6(CLIENT6, VIP6, IPPROTO_TCP, seg, hlim=ttl)
        else:
            seg = tcp_segment(CLIENT4, VIP4, 111, 80, payload=data)
            inner = ipv4(CLIENT4, VIP4, IPPROTO_TCP, seg, ttl=ttl)
        r = make_node(LB_CFG).run("xdp", inner)
        assert r.verdict == XdpVerdict.XDP_TX
        out = bytes(r.packet)
        if v6:
            assert struct.unpack_from("!H", out, 4)[0] == len(inner) and out[40:] == inner
            seen.add(out[7])
        else:
            assert struct.unpack_from("!H", out, 2)[0] == len(inner) + 20
            assert checksum(out[:20]) == 0 and out[20:] == inner
            seen.add(out[8])
    assert len(seen) == 1, seen  # the inner TTL / hop limit does not reach the outer header


def test_v1_18_hands_a_local_backends_dsr_request_on_untranslated() -> None:
    """v1.18 nodeport_xlate4 skips the DNAT of a DSR service under IPIP for a local backend
    too (v1.18 nodeport.h:1441-1449): the request keeps the frontend as destination, so tc's
    local delivery finds no endpoint for it and it goes up the stack, unchanged (the CT_EGRESS
    entry written on the way is keyed by the backend's address, :2619-2640)."""
    cfg = NodeConfig(name="lb", ipv4="10.0.10.1", mode="dsr", dispatch="ipip", version="1.18",
                     services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),),
                     backends=(BackendConfig(124, "192.168.0.1", 80),),
                     endpoints=(EndpointConfig("192.168.0.1"),))
    syn = _syn4()
    r = make_node(cfg).run("from-netdev", syn)
    assert (r.verdict, r.drop_reason, r.target, bytes(r.packet)) == (
        Verdict.CTX_ACT_OK, None, "stack", syn)
