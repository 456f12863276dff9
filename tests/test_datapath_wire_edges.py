"""Wire details the mutation check found untested: Geneve option TLVs, IPv4 options led by
NOPs, and the agent's wildcard service entry written from a service's configuration."""

from __future__ import annotations

import struct

from datapath.build import geneve_dsr_opt, geneve_encap, ipv4, ipv6, tcp_segment
from datapath.config import NodeConfig, ServiceConfig
from datapath.drop import DatapathDrop, DropReason
from datapath.host import geneve_decap, make_node
from datapath.packet import DSR_GENEVE_OPT_CLASS, DSR_GENEVE_OPT_TYPE, IPPROTO_TCP, ip_bytes, parse

NODE, CLIENT, VIP = "10.0.10.2", "203.0.113.7", "172.16.10.1"
INNER = ipv4(ip_bytes(CLIENT), ip_bytes(VIP), IPPROTO_TCP,
             tcp_segment(ip_bytes(CLIENT), ip_bytes(VIP), 40000, 80))


def _tlv(cls: int, typ: int, data: bytes) -> bytes:
    return struct.pack("!HBB", cls, typ, len(data) // 4) + data


def _decap(opts: bytes) -> tuple[bytearray, tuple[bytes, int] | None]:
    frame = geneve_encap(ip_bytes("10.0.10.9"), ip_bytes(NODE), INNER, 2, opts, 40000)
    return geneve_decap(bytearray(frame))


def test_only_the_dsr_class_and_type_carry_the_dsr_address() -> None:
    """bpf_overlay takes the option as DSR only when its class is DSR_GENEVE_OPT_CLASS and
    its type DSR_GENEVE_OPT_TYPE (v1.20 nodeport.h:1938-1946, v6 :555-564): an option of
    the DSR option's size with another class or type is not DSR information."""
    data = ip_bytes(VIP) + struct.pack("!H", 80) + b"\0\0"
    inner, info = _decap(geneve_dsr_opt(ip_bytes(VIP), 80))
    assert info == (ip_bytes(VIP), 80) and bytes(inner) == INNER
    for cls, typ in ((0x0102, 0x01), (DSR_GENEVE_OPT_CLASS, 0x01),
                     (0x0102, DSR_GENEVE_OPT_TYPE)):
        inner, info = _decap(_tlv(cls, typ, data))
        assert info is None and bytes(inner) == INNER, (hex(cls), hex(typ))


def test_a_second_option_hides_the_dsr_option() -> None:
    """Geneve carries any number of option TLVs (RFC 8926 section 3.5) and the device hands
    the whole block on; Cilium copies it into one struct geneve_dsr_opt4 (12 bytes), which
    bpf_skb_get_tunnel_opt refuses for a longer block (v1.20 nodeport.h:1936): a DSR option
    with another option before or after it is no DSR information, and the frame still
    decaps to its inner packet."""
    dsr, other = geneve_dsr_opt(ip_bytes(VIP), 80), _tlv(0x0102, 0x01, b"")
    for opts in (dsr + other, other + dsr):
        inner, info = _decap(opts)
        assert bytes(inner) == INNER and info is None, opts.hex()


def test_only_the_first_header_is_read_and_a_short_block_is_zero_filled() -> None:
    """Only opt_class and type are checked (nodeport.h:1938-1939), not the length field:
    a lone DSR-class option with a wrong length is read at the struct's offsets; a block
    shorter than the struct is zero-filled by the helper (port 0)."""
    words = ip_bytes(VIP) + struct.pack("!H", 80) + b"\0\0"
    hdr = struct.pack("!HBB", DSR_GENEVE_OPT_CLASS, DSR_GENEVE_OPT_TYPE, 1)
    assert _decap(hdr + words)[1] == (ip_bytes(VIP), 80)
    assert _decap(hdr + ip_bytes(VIP))[1] == (ip_bytes(VIP), 0)
    assert _decap(hdr)[1] == (b"\0" * 4, 0)


def test_an_ipv6_inner_packet_reads_the_24_byte_struct() -> None:
    """The IPv6 extraction (nodeport.h:552-553) copies into struct geneve_dsr_opt6, 24
    bytes: the IPv6 DSR option fits, and 12 more bytes of option do not."""
    vip6, client6 = ip_bytes("fd00::10"), ip_bytes("2001:db8::7")
    seg = tcp_segment(client6, vip6, 40000, 80)
    inner6 = ipv6(client6, ip_bytes("fd00::2"), IPPROTO_TCP, seg)
    for extra, want in ((b"", (vip6, 80)), (_tlv(0x0102, 0x01, b"\0" * 8), None)):
        frame = geneve_encap(ip_bytes("10.0.10.9"), ip_bytes(NODE), inner6, 2,
                             geneve_dsr_opt(vip6, 80) + extra, 40000, inner_v6=True)
        inner, info = geneve_decap(bytearray(frame))
        assert bytes(inner) == inner6 and info == want, extra.hex()


def test_the_device_takes_only_ethernet_payloads() -> None:
    """geneve_udp_encap_recv (drivers/net/geneve.c) drops a protocol type other than
    Transparent Ethernet Bridging (0x6558) on a device without inner_proto_inherit."""
    frame = bytearray(geneve_encap(ip_bytes("10.0.10.9"), ip_bytes(NODE), INNER, 2, b"", 40000))
    struct.pack_into("!H", frame, 20 + 8 + 2, 0x0800)
    try:
        geneve_decap(frame)
    except DatapathDrop as e:
        assert e.reason == DropReason.DROP_INVALID
    else:
        raise AssertionError("an IPv4 protocol type was decapsulated")


def test_ipv4_options_led_by_a_nop() -> None:
    """A NOP is a single byte (RFC 791): after it the next option's type and length are
    read at the following byte, and an option may end exactly at the header's end. Cilium
    itself reads only ihl (ipv4_hdrlen); the parser must accept well-formed options."""
    seg = tcp_segment(ip_bytes(CLIENT), ip_bytes(VIP), 40000, 80)
    plain = ipv4(ip_bytes(CLIENT), ip_bytes(VIP), IPPROTO_TCP, seg)
    # NOP, Router Alert, EOL + padding; NOP, NOP, a 2-byte option (RFC 4727's experimental
    # type 0x9E) ending exactly where the header does
    for opts in (bytes([1, 0x94, 4, 0, 0, 0, 0, 0]), bytes([1, 1, 0x9E, 2])):
        hdr = bytearray(plain[:20] + opts)
        hdr[0] = 0x40 | (len(hdr) // 4)
        struct.pack_into("!H", hdr, 2, len(hdr) + len(seg))
        p = parse(hdr + bytearray(seg))
        assert (p.l4_off, p.sport, p.dport) == (len(hdr), 40000, 80), opts.hex()


def test_a_wildcard_service_from_its_configuration() -> None:
    """The agent's wildcard entry is IPPROTO_ANY (0) with port 0 (lb.h:389-396): written
    from a service configured with protocol "any", it makes packets to the VIP's other
    ports DROP_NO_SERVICE."""
    node = make_node(NodeConfig(ipv4=NODE, services=(
        ServiceConfig(frontend=VIP, port=0, rev_nat_index=9, proto="any"),)))
    other = ipv4(ip_bytes(CLIENT), ip_bytes(VIP), IPPROTO_TCP,
                 tcp_segment(ip_bytes(CLIENT), ip_bytes(VIP), 40000, 81))
    r = node.run("from-netdev", other)
    assert r.drop_reason == DropReason.DROP_NO_SERVICE and node.internal_errors == 0
