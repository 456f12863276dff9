"""Packet encoder/parser and checksum helpers, cross-checked against scapy dissection."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from datapath.build import (
    dsr_opt4_bytes,
    dsr_opt6_bytes,
    geneve_dsr_opt,
    ipv4,
    ipv6,
    tcp_segment,
    udp_datagram,
)
from datapath.csum import checksum, csum_diff, csum_fix, csum_replace
from datapath.packet import find_dsr_opt4, find_dsr_opt6, ip_bytes, parse

ADDR4 = st.binary(min_size=4, max_size=4)
ADDR6 = st.binary(min_size=16, max_size=16)
PORT = st.integers(0, 65535)


def test_dsr_opt4_quirk_bytes() -> None:
    assert dsr_opt4_bytes(ip_bytes("172.16.10.2"), 80) == bytes.fromhex("9a085000020a10ac")


def test_dsr_opt6_layout() -> None:
    b = dsr_opt6_bytes(6, ip_bytes("fd10::2"), 80)
    assert len(b) == 24
    assert b[:4] == bytes([6, 2, 0x1B, 20])
    assert b[20:24] == bytes.fromhex("00500000")


def test_geneve_opt_sizes() -> None:
    assert len(geneve_dsr_opt(ip_bytes("1.2.3.4"), 80)) == 12
    assert len(geneve_dsr_opt(ip_bytes("fd10::2"), 80)) == 24
    assert geneve_dsr_opt(ip_bytes("1.2.3.4"), 80)[:4] == bytes.fromhex("014b8102")


@settings(max_examples=60, deadline=None)
@given(ADDR4, ADDR4, PORT, PORT, st.integers(0, 255), st.binary(max_size=40))
def test_ipv4_tcp_matches_scapy(s: bytes, d: bytes, sp: int, dp: int, fl: int,
                                pl: bytes) -> None:
    pkt = ipv4(s, d, 6, tcp_segment(s, d, sp, dp, fl, payload=pl))
    sc = IP(pkt)
    assert sc[TCP].sport == sp and sc[TCP].dport == dp
    ref = IP(bytes(sc))
    del ref.chksum
    del ref[TCP].chksum
    assert bytes(IP(bytes(ref))) == pkt
    p = parse(bytearray(pkt))
    assert (p.sport, p.dport, p.tcp_flags) == (sp, dp, fl)


@settings(max_examples=60, deadline=None)
@given(ADDR6, ADDR6, PORT, PORT, st.binary(max_size=40))
def test_ipv6_udp_destopt_matches_scapy(s: bytes, d: bytes, sp: int, dp: int,
                                        pl: bytes) -> None:
    ext = dsr_opt6_bytes(17, ip_bytes("fd10::2"), 443)
    pkt = ipv6(s, d, 60, ext + udp_datagram(s, d, sp, dp, pl))
    sc = IPv6(pkt)
    assert sc.haslayer(IPv6ExtHdrDestOpt)
    assert sc[UDP].sport == sp and sc[UDP].dport == dp
    u = sc[UDP]
    chk = u.chksum
    del u.chksum
    assert IPv6(bytes(sc))[UDP].chksum == chk
    assert find_dsr_opt6(bytearray(pkt)) == (ip_bytes("fd10::2"), 443)
    assert parse(bytearray(pkt)).dport == dp


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=20, max_size=60).filter(lambda b: len(b) % 2 == 0),
       st.integers(0, 7), st.sampled_from([2, 4, 16]), st.data())
def test_incremental_equals_full(data: bytes, idx: int, width: int,
                                 draw: st.DataObject) -> None:
    """A port (2 bytes), IPv4 (4) or IPv6 (16) address replaced: each word_sum path."""
    new = draw.draw(st.binary(min_size=width, max_size=width))
    off = (idx * 2) % (len(data) - width)
    buf = bytearray(data + struct.pack("!H", checksum(data)))
    old = bytes(buf[off:off + width])
    buf[off:off + width] = new
    csum_fix(buf, len(data), csum_diff(old, new))
    stored = struct.unpack_from("!H", buf, len(data))[0]
    full = checksum(bytes(buf[:-2]))
    assert stored == full or {stored, full} == {0, 0xFFFF}
    assert checksum(buf) in (0, 0xFFFF)
    assert csum_replace(full, csum_diff(old, old)) in (full, full ^ 0xFFFF)


def test_find_dsr_opt4_roundtrip() -> None:
    s, d = ip_bytes("110.0.11.1"), ip_bytes("192.168.0.1")
    pkt = ipv4(s, d, 6, tcp_segment(s, d, 1, 2), options=dsr_opt4_bytes(ip_bytes("1.2.3.4"), 99))
    assert find_dsr_opt4(pkt) == (ip_bytes("1.2.3.4"), 99)
    assert IP(pkt).ihl == 7
