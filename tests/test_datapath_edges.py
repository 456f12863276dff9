"""Edges of the reference datapath the mutation check found unpinned: header boundaries,
extension headers, checksum carries, reprogramming, and no internal error on any of them.

Every packet here goes through `Node.run` (or the parser it uses); `internal_errors` must
stay 0: an exception inside a hook is a bug even when `run` turns it into DROP_INVALID.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import attrs
import pytest

from datapath.build import (
    dsr_opt4_bytes,
    dsr_opt6_bytes,
    ext_header,
    geneve_encap,
    icmp4_message,
    icmp6_message,
    ipv4,
    ipv6,
    tcp_segment,
    udp_datagram,
)
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.csum import checksum, csum_diff, csum_fix, csum_replace
from datapath.drop import DatapathDrop, DropReason, Verdict
from datapath.host import HookResult, Node
from datapath.lb import rewrite
from datapath.maps import TUPLE_F_IN, CtTuple, NatEntry
from datapath.nodeport import dsr_set_opt4, encapsulate
from datapath.packet import (
    IPPROTO_AUTH,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_NONE,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_SYN,
    find_dsr_opt6,
    ip_bytes,
    parse,
)

C4, N4, V4, B4, R4 = (ip_bytes(a) for a in ("203.0.113.7", "10.0.10.1", "172.16.10.2",
                                            "10.0.10.20", "10.0.20.30"))
C6, N6, V6, B6 = (ip_bytes(a) for a in ("2001:db8::7", "fd00::1", "fd10::2", "fd04::20"))


def _node(**kw: Any) -> Node:
    """A dual-stack node: a TCP service on each family with one local backend."""
    cfg = NodeConfig(
        name="n", ipv4="10.0.10.1", ipv6="fd00::1", mode="snat",
        services=(ServiceConfig("172.16.10.2", 80, 1, (1,)),
                  ServiceConfig("fd10::2", 80, 2, (2,))),
        backends=(BackendConfig(1, "10.0.10.20", 8080), BackendConfig(2, "fd04::20", 8080)),
        endpoints=(EndpointConfig("10.0.10.20"), EndpointConfig("fd04::20", 26, 128)))
    return Node(attrs.evolve(cfg, **kw))


def run(node: Node, hook: str, pkt: bytes) -> HookResult:
    r = node.run(hook, pkt)
    assert node.internal_errors == 0, "an exception escaped the hook's own checks"
    return r


def dropped(r: HookResult, reason: DropReason) -> bool:
    return r.verdict == Verdict.CTX_ACT_DROP and r.drop_reason == reason


# -- IPv6 extension headers (ipv6.h ipv6_hdrlen_offset: 4 headers at most) ------------------
def _v6(nexthdr: int, payload: bytes, dst: bytes = V6) -> bytearray:
    return bytearray(ipv6(C6, dst, nexthdr, payload))


def _tcp6(dst: bytes = V6, flags: int = TCP_SYN, payload: bytes = b"") -> bytes:
    return tcp_segment(C6, dst, 40000, 80, flags, payload=payload)


def _ah(nexthdr: int) -> bytes:
    """An authentication header of 24 bytes: payload length 4 (in 4-byte words, minus 2)."""
    return bytes([nexthdr, 4, 0, 0]) + b"\x00\x00\x10\x01" + b"\x00\x00\x00\x07" + b"\xaa" * 12


def _frag(nexthdr: int, offset: int, more: bool) -> bytes:
    return bytes([nexthdr, 0]) + struct.pack("!H", (offset << 3) | more) + b"\x12\x34\x56\x78"


def test_extension_headers_are_skipped_by_their_own_length_rules() -> None:
    """Next-header numbers written out (IANA): 43 routing, 60 destination options,
    51 authentication (length in 4-byte words, plus 2), 44 fragment (always 8 bytes), so
    a wrong constant in the parser cannot hide behind the same constant in the builder."""
    tcp = _tcp6()
    for nh, hdr in ((43, ext_header(6, b"\0" * 6)), (60, ext_header(6, b"\0" * 14)),
                    (51, _ah(6)), (44, _frag(6, 0, True))):
        p = parse(_v6(nh, hdr + tcp))
        assert (p.proto, p.l4_off, p.sport, p.dport) == (6, 40 + len(hdr), 40000, 80), nh
        assert p.is_frag == (nh == 44) and p.frag_first
    assert (IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_AUTH, IPPROTO_FRAGMENT) == (
        43, 60, 51, 44)
    # a later fragment: no L4 header to read; the offset is the fragment header's own
    # (the destination address ends in ::1, whose low bits would say "first fragment")
    later = parse(_v6(44, _frag(IPPROTO_TCP, 185, False) + b"x" * 16,
                      dst=ip_bytes("fd10::1")))
    assert later.is_frag and not later.frag_first and later.sport == 0


def test_three_extension_headers_at_most() -> None:
    """ipv6_hdrlen_offset turns IPV6_MAX_HEADERS (4) times and needs one turn to see the
    upper layer: three extension headers pass, a fourth is DROP_INVALID_EXTHDR (v1.20
    ipv6.h:135-161; checked against the compiled v1.20 bpf_host)."""
    def chain(n: int) -> bytes:
        out = b""
        for i in range(n):
            out += ext_header(IPPROTO_TCP if i == n - 1 else IPPROTO_DSTOPTS, b"\0" * 6)
        return out
    p = parse(_v6(IPPROTO_DSTOPTS, chain(3) + _tcp6()))
    assert (p.proto, p.l4_off) == (IPPROTO_TCP, 40 + 3 * 8)
    node = _node()
    for n in (4, 5):
        assert dropped(run(node, "from-netdev", bytes(_v6(IPPROTO_DSTOPTS, chain(n) + _tcp6()))),
                       DropReason.DROP_INVALID_EXTHDR)


def test_ipv6_headers_ending_exactly_at_the_payload_end() -> None:
    # no next header (59) ends the walk with DROP_INVALID_EXTHDR (ipv6.h:83-84), right
    # after the fixed header or after an extension header (vectors/ipv6_ext_headers.yaml)
    for pkt in (_v6(IPPROTO_NONE, b""), _v6(IPPROTO_DSTOPTS, ext_header(IPPROTO_NONE, b"\0" * 6))):
        with pytest.raises(DatapathDrop) as e:
            parse(pkt)
        assert e.value.reason == DropReason.DROP_INVALID_EXTHDR
    one = parse(_v6(IPPROTO_DSTOPTS, ext_header(IPPROTO_TCP, b"\0" * 6) + _tcp6()))
    assert (one.proto, one.l4_off) == (IPPROTO_TCP, 48)
    syn = parse(_v6(IPPROTO_TCP, _tcp6()))  # a bare SYN: the TCP header is the packet's end
    assert (syn.sport, syn.dport, syn.tcp_flags) == (40000, 80, TCP_SYN)
    # find_dsr_v6: a DSR destination-options header that ends the packet is still found
    opt = dsr_opt6_bytes(IPPROTO_NONE, V6, 80)
    assert find_dsr_opt6(_v6(IPPROTO_DSTOPTS, opt)) == (V6, 80)


def test_short_l4_headers() -> None:
    node = _node()
    # IPv4: a TCP data offset of 4 words in a full-length segment (lb4_extract_tuple)
    seg = bytearray(tcp_segment(C4, V4, 40000, 80, payload=b"0123"))
    seg[12] = 4 << 4
    assert dropped(run(node, "from-netdev", ipv4(C4, V4, IPPROTO_TCP, bytes(seg))),
                   DropReason.DROP_CT_INVALID_HDR)
    # UDP length 7 (shorter than its own header), and UDP headers cut short
    dg = bytearray(udp_datagram(C4, V4, 40000, 80))
    struct.pack_into("!H", dg, 4, 7)
    assert dropped(run(node, "from-netdev", ipv4(C4, V4, IPPROTO_UDP, bytes(dg))),
                   DropReason.DROP_INVALID)
    for pkt in (ipv4(C4, V4, IPPROTO_UDP, bytes(dg[:4])),
                ipv6(C6, V6, IPPROTO_UDP, bytes(dg[:4]))):
        assert dropped(run(node, "from-netdev", pkt), DropReason.DROP_INVALID)
    # ICMP: the 8-byte header alone is a whole message
    echo = icmp4_message(8, 0, b"\0\1\0\1", b"")
    assert parse(bytearray(ipv4(C4, N4, IPPROTO_ICMP, echo))).l3_len == 28
    echo6 = icmp6_message(C6, N6, 128, 0, b"\0\1\0\1", b"")
    assert parse(bytearray(ipv6(C6, N6, IPPROTO_ICMPV6, echo6))).l3_len == 48


def test_ipv4_options() -> None:
    node = _node()
    tcp = tcp_segment(C4, N4, 40000, 22, TCP_ACK)
    # a 2-byte option (length 2 is the smallest valid one) before the end of the list
    p = parse(bytearray(ipv4(C4, N4, IPPROTO_TCP, tcp, options=bytes([0x99, 2, 0, 0]))))
    assert (p.l4_off, p.dport) == (24, 22)
    # an option list that ends after an option's type byte, in a packet with no payload
    cut = ipv4(C4, N4, IPPROTO_TCP, b"", options=bytes([1, 1, 1, 0x44]))
    assert dropped(run(node, "from-netdev", cut), DropReason.DROP_INVALID)


# -- hooks ---------------------------------------------------------------------------------
def test_ipv6_local_delivery_decrements_the_hop_limit() -> None:
    """ipv6_local_delivery -> ipv6_l3 -> ipv6_dec_hoplimit (local_delivery.h:227, l3.h:19)."""
    node = _node()
    r = run(node, "from-netdev", ipv6(C6, V6, IPPROTO_TCP, _tcp6(), hlim=64))
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:26"
    assert r.packet[7] == 63 and r.packet[24:40] == B6


def test_forwarding_keeps_the_ipv4_header_checksum_valid_for_every_checksum() -> None:
    """The TTL decrement's incremental checksum update (RFC 1624) at every checksum value:
    about 1 in 256 headers needs the end-around carry."""
    node = _node()
    base = bytearray(ipv4(C4, R4, IPPROTO_TCP, tcp_segment(C4, R4, 1, 2)))
    for ident in range(0, 65536, 7):
        buf = bytearray(base)
        struct.pack_into("!H", buf, 4, ident)
        struct.pack_into("!H", buf, 10, 0)
        struct.pack_into("!H", buf, 10, checksum(buf[:20]))
        node.fib_redirect(parse(buf))
        assert buf[8] == 63 and checksum(buf[:20]) == 0, ident


def test_dsr_option_insert_keeps_the_header_checksum_valid_for_every_checksum() -> None:
    node = _node(mode="dsr")
    base = bytearray(ipv4(C4, B4, IPPROTO_TCP, tcp_segment(C4, B4, 1, 2)))
    for ident in range(65536):  # the second end-around carry: a handful of checksums
        buf = bytearray(base)
        struct.pack_into("!H", buf, 4, ident)
        struct.pack_into("!H", buf, 10, 0)
        struct.pack_into("!H", buf, 10, checksum(buf[:20]))
        dsr_set_opt4(node, parse(buf), V4, 80)
        assert checksum(buf[:28]) == 0, ident


def test_non_first_fragments_are_dropped_on_every_hook() -> None:
    """Without fragment tracking a later fragment has no ports (ipv4.h:152, ipv6.h:444)."""
    node = _node(tunnel=True, tunnel_endpoints=(("10.0.20.30", "192.168.2.4"),))
    frag = ipv4(B4, C4, IPPROTO_UDP, b"x" * 16, frag=10)
    assert dropped(run(node, "to-netdev", frag), DropReason.DROP_FRAG_NOSUPPORT)
    outer = geneve_encap(ip_bytes("192.168.2.4"), N4, frag, 2, b"", 40000)
    assert dropped(run(node, "from-overlay", outer), DropReason.DROP_FRAG_NOSUPPORT)


def test_dsr_info_is_read_from_syns_only() -> None:
    """nodeport_extract_dsr_v6 (nodeport.h:543): a TCP packet without SYN is not searched
    for the DSR option; it makes no DSR CT entry even when it carries one, a SYN does."""
    node = _node(mode="dsr")
    opt = dsr_opt6_bytes(IPPROTO_TCP, V6, 80)
    ct = node.maps.ct6_tcp
    ack = ipv6(C6, B6, IPPROTO_DSTOPTS, opt + _tcp6(B6, TCP_ACK))
    r = run(node, "from-netdev", ack)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:26"
    assert not any(e.dsr_internal for _k, e in ct.items())
    syn = ipv6(C6, B6, IPPROTO_DSTOPTS, opt + _tcp6(B6, TCP_SYN))
    r = run(node, "from-netdev", syn)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:26"
    assert any(e.dsr_internal for _k, e in ct.items())


def test_dsr_delivery_wins_over_a_reverse_snat_entry() -> None:
    """A DSR connection's packets go to the local backend even when a reverse SNAT entry
    happens to match their tuple; and a client SYN carrying a DSR option to a service with
    a local backend is load-balanced, not taken as DSR ingress."""
    node = _node(mode="hybrid")
    opt = dsr_opt4_bytes(V4, 80)
    bport = 50000  # a backend port inside the SNAT range, so reverse SNAT could apply
    stale = NatEntry(ip_bytes("198.51.100.1"), 1, 0)
    for proto in (IPPROTO_TCP, IPPROTO_UDP):  # a reverse SNAT entry the tuple matches
        node.maps.snat4.update(CtTuple(B4, C4, bport, 40000, proto, TUPLE_F_IN), stale)
    syn = ipv4(C4, B4, IPPROTO_TCP, tcp_segment(C4, B4, 40000, bport, TCP_SYN), options=opt)
    r = run(node, "from-netdev", syn)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
    assert r.packet[12:16] == C4  # no reverse SNAT
    udp = ipv4(C4, B4, IPPROTO_UDP, udp_datagram(C4, B4, 40000, bport), options=opt)
    for _ in range(2):  # the second datagram finds the DSR CT entry
        r = run(node, "from-netdev", udp)
        assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
        assert r.packet[12:16] == C4
    # a SYN to the service itself, carrying a DSR option: lb4_local, no DSR CT entry
    node2 = _node(mode="dsr")
    svc_syn = ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40001, 80, TCP_SYN), options=opt)
    r = run(node2, "from-netdev", svc_syn)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
    assert not any(e.dsr_internal for _k, e in node2.maps.ct4_tcp.items())


def test_reprogramming_replaces_source_ranges() -> None:
    svc = ServiceConfig("172.16.10.2", 80, 1, (1,), source_ranges=("203.0.113.0/24",))
    node = _node(services=(svc,))
    syn = ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40000, 80))
    assert run(node, "from-netdev", syn).verdict == Verdict.CTX_ACT_REDIRECT
    node.reprogram(attrs.evolve(node.config, services=(
        attrs.evolve(svc, source_ranges=("192.0.2.0/24",)),)))
    assert dropped(run(node, "from-netdev", syn), DropReason.DROP_NOT_IN_SRC_RANGE)


def test_source_range_prefix_bits() -> None:
    """lb4_src_range_ok: an LPM match on the prefix's bits, the bits after it free."""
    svc = ServiceConfig("172.16.10.2", 80, 1, (1,), source_ranges=("203.0.113.0/28",))
    node = _node(services=(svc,))
    for client, ok in (("203.0.113.15", True), ("203.0.113.16", False),
                       ("203.0.113.17", False), ("203.0.113.0", True)):
        c = ip_bytes(client)
        r = run(node, "from-netdev", ipv4(c, V4, IPPROTO_TCP, tcp_segment(c, V4, 1000, 80)))
        assert (r.verdict == Verdict.CTX_ACT_REDIRECT) == ok, client


def test_maintenance_backends_take_no_slot() -> None:
    node = _node(services=(ServiceConfig("172.16.10.2", 80, 1, (3, 1)),),
                 backends=(BackendConfig(1, "10.0.10.20", 8080),
                           BackendConfig(3, "10.0.10.21", 8080, state="maintenance")))
    rows = dict(node.maps.lb4_services.items())
    assert sorted(k.backend_slot for k in rows) == [0, 1]
    assert [v.backend_id for k, v in rows.items() if k.backend_slot == 1] == [1]


def test_wildcard_service_entry_drops_unserved_ports() -> None:
    """lb4_lookup_service: a miss on {vip, dport, proto} retries the wildcard {vip, 0, 0},
    whose hit drops the packet (DROP_NO_SERVICE) instead of passing it up."""
    from datapath.maps import LB_LOOKUP_SCOPE_EXT, LbKey, LbService

    node = _node()
    node.maps.lb4_services.update(LbKey(V4, 0, 0, LB_LOOKUP_SCOPE_EXT, 0), LbService(0, 0, 9))
    other = ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40000, 81))
    assert dropped(run(node, "from-netdev", other), DropReason.DROP_NO_SERVICE)
    served = ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40000, 80))
    assert run(node, "from-netdev", served).verdict == Verdict.CTX_ACT_REDIRECT


def test_nodeport_ct_entry_carries_the_world_identity() -> None:
    """A remote client is reserved:world, WORLD_IPV4_ID 9 / WORLD_IPV6_ID 10 on a
    dual-stack node (node_config.h:22-24)."""
    node = _node()
    run(node, "from-netdev", ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40000, 80)))
    run(node, "from-netdev", ipv6(C6, V6, IPPROTO_TCP, _tcp6()))
    ids = [{e.src_sec_id for _k, e in m.items() if e.node_port}
           for m in (node.maps.ct4_tcp, node.maps.ct6_tcp)]
    assert ids == [{9}, {10}]  # each family its own world identity


def test_snat_entry_with_a_stale_source_address_is_replaced() -> None:
    """v1.17+ self-healing (nat.h snat_v4_nat_handle_mapping): a forward SNAT entry whose
    translated address is not the node's current one is dropped with its reverse entry and
    the mapping allocated afresh."""
    from datapath.nat import snat_nat

    node = _node()
    p = parse(bytearray(ipv4(C4, R4, IPPROTO_TCP, tcp_segment(C4, R4, 40000, 8080))))
    old = ip_bytes("10.9.9.9")
    fwd = CtTuple(R4, C4, 8080, 40000, IPPROTO_TCP, 0)
    node.maps.snat4.update(fwd, NatEntry(old, 40000, 0))
    node.maps.snat4.update(CtTuple(old, R4, 40000, 8080, IPPROTO_TCP, TUPLE_F_IN),
                           NatEntry(C4, 40000, 0))
    snat_nat(node, p, N4)
    rows = dict(node.maps.snat4.items())
    assert rows[fwd].to_addr == N4 and all(k.daddr != old for k in rows)
    assert len(rows) == 2 and p.saddr == N4
    # when the new allocation fails (the range's one port taken), the stale pair is gone
    full = _node(nat_min=50000, nat_max=50000)
    full.maps.snat4.update(fwd, NatEntry(old, 40000, 0))
    full.maps.snat4.update(CtTuple(N4, R4, 50000, 8080, IPPROTO_TCP, TUPLE_F_IN),
                           NatEntry(ip_bytes("203.0.113.99"), 1, 0))
    p = parse(bytearray(ipv4(C4, R4, IPPROTO_TCP, tcp_segment(C4, R4, 1024, 8080))))
    fwd = CtTuple(R4, C4, 8080, 1024, IPPROTO_TCP, 0)
    full.maps.snat4.update(fwd, NatEntry(old, 50000, 0))
    with pytest.raises(DatapathDrop) as exc:
        snat_nat(full, p, N4)
    assert exc.value.reason == DropReason.DROP_NAT_NO_MAPPING
    assert full.maps.snat4.lookup(fwd) is None


def test_geneve_source_port_covers_the_ephemeral_range() -> None:
    """The outer UDP source port is a flow hash in the kernel's ephemeral range
    32768-60999 (ip_local_port_range): both ends are reached, nothing outside."""
    node = _node(tunnel=True)
    seen_lo = seen_hi = False
    for sport in range(1, 65536):
        h = zlib.crc32(C4 + R4 + struct.pack("!HH", sport, 8080)) % (61000 - 32768)
        if h in (0, 61000 - 32768 - 1):
            p = parse(bytearray(ipv4(C4, R4, IPPROTO_TCP, tcp_segment(C4, R4, sport, 8080))))
            encapsulate(node, p, ip_bytes("192.168.2.4"), b"")
            port = struct.unpack_from("!H", p.buf, 20)[0]
            assert 32768 <= port <= 60999
            seen_lo |= port == 32768
            seen_hi |= port == 60999
    assert seen_lo and seen_hi


def test_ipv6_reject_is_port_unreachable_quoting_at_most_1232_bytes() -> None:
    """tail_no_service_ipv6: ICMPv6 destination unreachable, code 4 (port unreachable),
    the sample capped at ICMPV6_PACKET_MAX_SAMPLE_SIZE = 1280 - 40 - 8 (icmp6.h:573)."""
    node = _node(services=(ServiceConfig("fd10::2", 80, 2, (), proto="udp"),),
                 no_backend_response="reject")
    big = ipv6(C6, V6, IPPROTO_UDP, udp_datagram(C6, V6, 40000, 80, payload=b"q" * 1300))
    r = node.run("from-netdev", big)
    assert node.internal_errors == 0 and r.drop_reason == DropReason.DROP_NO_SERVICE
    out = parse(bytearray(r.packet))
    assert out.proto == IPPROTO_ICMPV6 and r.packet[40:42] == bytes([1, 4])
    assert len(r.packet) - 48 == 1232 and r.packet[48:48 + 40] == big[:40]


def test_node_without_an_ipv6_address_writes_no_partial_address() -> None:
    """A node without an IPv6 address has the unspecified address standing in for it (in
    Cilium such a node has no IPv6 path: bpf_host.c:1234 passes unknown L3 up); an IPv6
    packet SNATed there carries that whole address, not a half-written one."""
    node = _node(ipv6=None, services=(ServiceConfig("fd10::2", 80, 2, (2,)),),
                 backends=(BackendConfig(2, "fd04::99", 8080),), endpoints=())
    r = run(node, "from-netdev", ipv6(C6, V6, IPPROTO_TCP, _tcp6()))
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and len(r.packet) == 60
    assert bytes(r.packet[8:24]) == bytes(16) and r.packet[24:40] == ip_bytes("fd04::99")


def _geneve(udp_payload: bytes, end_pad: int = 0) -> bytes:
    """An outer IPv4/UDP 6081 packet with this exact payload (a Geneve header or less)."""
    udp = struct.pack("!HHHH", 40000, 6081, 8 + len(udp_payload), 0) + udp_payload
    return ipv4(ip_bytes("192.168.2.4"), N4, IPPROTO_UDP, udp) + b"\0" * end_pad


def test_truncated_geneve_is_invalid_without_an_internal_error() -> None:
    node = _node(tunnel=True)
    base = struct.pack("!BBHI", 2, 0, 0x6558, 2 << 8)  # 2 words of options announced
    tlv0 = struct.pack("!HBB", 0x0102, 0x01, 0)  # an empty TLV
    for payload in (b"", base[:4], base, base + tlv0, base + tlv0 + tlv0[:2],
                    base + tlv0 + tlv0 + b"\0" * 13):
        r = run(node, "from-overlay", _geneve(payload))
        assert dropped(r, DropReason.DROP_INVALID), payload.hex()


def test_lb_maps_have_ciliums_sizes() -> None:
    """CILIUM_LB_{SERVICE,BACKENDS,REV_NAT}_MAP_MAX_ENTRIES 65536 (node_config.h:88-92)."""
    m = _node().maps
    assert {x.max_entries for x in (m.lb4_services, m.lb4_backends, m.lb4_reverse_nat,
                                    m.lb6_services, m.lb6_backends,
                                    m.lb6_reverse_nat)} == {65536}


# -- checksums as the kernel computes them ------------------------------------------------
def _kernel_csum_replace(check: int, old: bytes, new: bytes) -> int:
    """bpf_csum_diff (csum_partial over ~old, new as 32-bit words) then
    csum_replace_by_diff: csum_fold(csum_add(diff, ~csum_unfold(check)))."""
    def add32(a: int, b: int) -> int:
        s = a + b
        return (s & 0xFFFFFFFF) + (s >> 32)

    words = [~int.from_bytes(old[i:i + 4], "big") & 0xFFFFFFFF for i in range(0, len(old), 4)]
    words += [int.from_bytes(new[i:i + 4], "big") for i in range(0, len(new), 4)]
    diff = 0
    for w in words:
        diff = add32(diff, w)
    s = add32(diff, ~check & 0xFFFFFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@pytest.mark.parametrize("old,new", [
    (b"\xff\xff\xff\xff", b"\x00\x01\xff\xfe"),  # congruent: the diff is a zero
    (ip_bytes("fd00::1:ffff"), ip_bytes("fd00::1")),  # congruent, old's sum above 0xFFFF
    (ip_bytes("fd10::2"), ip_bytes("fd04::20")),
    (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"),
])
def test_incremental_checksums_match_the_kernels(old: bytes, new: bytes) -> None:
    for check in (0x0000, 0x0001, 0x7FFF, 0xFFFE, 0xFFFF):
        buf = bytearray(struct.pack("!H", check))
        csum_fix(buf, 0, csum_diff(old, new))
        assert struct.unpack("!H", buf)[0] == _kernel_csum_replace(check, old, new), check
    assert csum_diff(old, new) <= 0xFFFF  # a folded 16-bit partial sum
    assert csum_replace(0xFFFF, csum_diff(old, new)) == _kernel_csum_replace(0xFFFF, old, new)


def test_ipv6_rewrite_between_congruent_addresses_updates_a_0xffff_checksum() -> None:
    """DNAT fd10::... -> an address with the same checksum weight: the L4 checksum field
    0xFFFF (equal to 0 for a receiver) becomes 0x0000 as the kernel's update writes it."""
    old, new = ip_bytes("fd00::1:ffff"), ip_bytes("fd00::1")
    seg = bytearray(tcp_segment(C6, old, 40000, 80))
    pkt = bytearray(ipv6(C6, old, IPPROTO_TCP, bytes(seg)))
    # choose the payload-less segment's checksum field to be 0xFFFF by adjusting the window
    for window in range(65536):
        struct.pack_into("!H", pkt, 40 + 14, window)
        struct.pack_into("!H", pkt, 40 + 16, 0)
        if checksum(pkt[40:], _pseudo(C6, old, len(pkt) - 40)) == 0:
            break
    struct.pack_into("!H", pkt, 40 + 16, 0xFFFF)
    p = parse(pkt)
    rewrite(p, False, new, 80)
    assert struct.unpack_from("!H", pkt, 40 + 16)[0] == _kernel_csum_replace(0xFFFF, old, new)


def _pseudo(s: bytes, d: bytes, n: int) -> int:
    from datapath.csum import pseudo_sum

    return pseudo_sum(s, d, IPPROTO_TCP, n)
