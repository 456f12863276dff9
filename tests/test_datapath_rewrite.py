"""lb.rewrite (lb4_dnat_request, snat rewrites): checksums stay valid, the parsed view in sync."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from datapath.abstraction import wire_fault
from datapath.build import ipv4, ipv6, tcp_segment, udp_datagram
from datapath.lb import rewrite
from datapath.nodeport import dsr_set_ext6, dsr_set_opt4
from datapath.packet import IPPROTO_TCP, IPPROTO_UDP, parse

ADDR4 = st.binary(min_size=4, max_size=4)
ADDR6 = st.binary(min_size=16, max_size=16)
PORT = st.integers(1, 65535)


def _packet(v6: bool, proto: int, s: bytes, d: bytes, sp: int, dp: int,
            ident: int = 0, payload: bytes = b"pktgen") -> bytearray:
    l4 = (tcp_segment(s, d, sp, dp, payload=payload) if proto == IPPROTO_TCP
          else udp_datagram(s, d, sp, dp, payload=payload))
    return bytearray(ipv6(s, d, proto, l4) if v6 else ipv4(s, d, proto, l4, ident=ident))


def _assert_rewritten(p_buf: bytearray, p: object, src: bool, addr: bytes, port: int) -> None:
    assert wire_fault(p_buf) is None
    again = parse(bytearray(p_buf))
    for field in ("saddr", "daddr", "sport", "dport"):
        assert getattr(again, field) == getattr(p, field), field  # the view matches the bytes
    assert (again.saddr if src else again.daddr) == addr
    assert (again.sport if src else again.dport) == port


@given(st.booleans(), st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]), st.booleans(),
       st.data(), PORT, PORT, PORT)
def test_rewrite_keeps_checksums_valid_and_the_view_in_sync(
        v6: bool, proto: int, src: bool, data: st.DataObject, sp: int, dp: int,
        port: int) -> None:
    addrs = ADDR6 if v6 else ADDR4
    s, d, new = data.draw(addrs), data.draw(addrs), data.draw(addrs)
    p = parse(_packet(v6, proto, s, d, sp, dp))
    rewrite(p, src, new, port)
    _assert_rewritten(p.buf, p, src, new, port)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _carries_twice(check: int, diff: int) -> bool:
    """csum_replace(check, diff): does the first fold of ~check + diff carry again?"""
    s = ((~check) & 0xFFFF) + diff
    return (s & 0xFFFF) + (s >> 16) > 0xFFFF


def _words(b: bytes) -> list[int]:
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def test_rewrite_folds_the_second_carry() -> None:
    """The rare inputs where the first fold of RFC 1624 eqn. 3 carries again: chosen by
    sweeping the IP ident (header checksum) and a payload word (L4 checksum)."""
    s, d, new = bytes([10, 0, 0, 1]), bytes([192, 168, 2, 3]), bytes([255, 255, 255, 254])
    oport, nport = 30080, 8080
    addr_diff = sum(_words(new)) + sum(0xFFFF - w for w in _words(d))
    for proto in (IPPROTO_TCP, IPPROTO_UDP):
        zero = _packet(False, proto, s, d, 40000, oport, payload=b"\0\0pktgen")
        hdr = bytes(zero[:10]) + b"\0\0" + bytes(zero[12:20])
        l4 = bytes(zero[20:])
        coff = 16 if proto == IPPROTO_TCP else 6
        l4_zero = l4[:coff] + b"\0\0" + l4[coff + 2:]
        hsum = _fold(sum(_words(hdr)))  # header sum with ident 0, checksum 0
        lsum = _fold(sum(_words(l4_zero)) + sum(_words(s + d)) + proto + len(l4))
        l4_diff = addr_diff + (0xFFFF - oport) + nport
        hit = [i for i in range(0x10000)
               if _carries_twice((~_fold(hsum + i)) & 0xFFFF, addr_diff)
               or _carries_twice((~_fold(lsum + i)) & 0xFFFF, l4_diff)]
        assert hit, "the sweep reaches the second carry"
        for i in hit:
            buf = _packet(False, proto, s, d, 40000, oport, ident=i,
                          payload=struct.pack("!H", i) + b"pktgen")
            p = parse(buf)
            rewrite(p, False, new, nport)
            _assert_rewritten(p.buf, p, False, new, nport)


@given(st.booleans(), ADDR4, ADDR4, ADDR4, PORT, PORT, PORT)
def test_udp_without_checksum_stays_without(src: bool, s: bytes, d: bytes, new: bytes,
                                            sp: int, dp: int, port: int) -> None:
    """IPv4 UDP checksum 0 means none; a NAT rewrite keeps it 0 (BPF_F_MARK_MANGLED_0)."""
    buf = bytearray(ipv4(s, d, IPPROTO_UDP, udp_datagram(s, d, sp, dp, zero_csum=True)))
    p = parse(buf)
    rewrite(p, src, new, port)
    assert p.buf[20 + 6:20 + 8] == b"\0\0"
    _assert_rewritten(p.buf, p, src, new, port)


class _NoFaults:
    faults: frozenset[str] = frozenset()


@given(st.booleans(), st.data(), PORT, PORT, PORT)
def test_dsr_insert_keeps_the_view_in_sync(v6: bool, data: st.DataObject, sp: int, dp: int,
                                           vport: int) -> None:
    """dsr_set_opt4 / dsr_set_ext6: after the insert the parsed view equals a re-parse."""
    addrs = ADDR6 if v6 else ADDR4
    s, d, vip = data.draw(addrs), data.draw(addrs), data.draw(addrs)
    p = parse(_packet(v6, IPPROTO_TCP, s, d, sp, dp))
    node: Any = _NoFaults()
    (dsr_set_ext6 if v6 else dsr_set_opt4)(node, p, vip, vport)
    assert wire_fault(p.buf) is None
    again = parse(bytearray(p.buf))
    for field in ("saddr", "daddr", "sport", "dport", "l4_off", "l3_len", "proto"):
        assert getattr(again, field) == getattr(p, field), field
