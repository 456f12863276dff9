"""The checksum helpers against RFC 1071's definition on any bytes, their fast paths included,
and BPF_F_MARK_MANGLED_0's two rules (kernel bpf_l4_csum_replace)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from datapath.csum import checksum, csum_diff, csum_fix, csum_fold, ones_sum, pseudo_sum, word_sum


def _fold(s: int) -> int:
    """End-around carry until 16 bits remain (RFC 1071 section 4.1)."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _rfc1071(data: bytes, seed: int = 0) -> int:
    """The sum by definition: big-endian 16-bit words, an odd byte padded with zero."""
    if len(data) % 2:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)) + seed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 0xFFFF))
def test_ones_sum_is_rfc1071_folded(data: bytes, seed: int) -> None:
    """Every length (0, 1, 2, odd, even), on the native-order fast path or not."""
    got = ones_sum(data, seed)
    assert got == _rfc1071(data, seed) and got <= 0xFFFF
    assert checksum(data, seed) == (~_rfc1071(data, seed)) & 0xFFFF


@given(st.integers(0, 0xFFFFFFFF))
def test_csum_fold_folds_any_32_bit_sum(s: int) -> None:
    assert csum_fold(s) == (~_fold(s)) & 0xFFFF


@given(st.sampled_from([1, 2, 3, 4, 5, 6, 16, 17, 18]).flatmap(lambda n: st.binary(min_size=n,
                                                                           max_size=n)))
def test_word_sum_is_the_same_sum_unfolded(b: bytes) -> None:
    """word_sum's 2/4/16-byte fast paths and its fallback agree with the definition."""
    assert _fold(word_sum(b)) == _rfc1071(b)


@given(st.binary(min_size=4, max_size=16).filter(lambda b: len(b) in (4, 16)),
       st.sampled_from([6, 17, 58]), st.integers(0, 0xFFFF))
def test_pseudo_sum_is_the_pseudo_header_sum(addr: bytes, proto: int, length: int) -> None:
    """IPv4's and IPv6's pseudo headers (RFC 768/793, RFC 8200 section 8.1) for every L4
    length a packet can have, those of 32768 bytes and more included."""
    saddr, daddr = addr, addr[::-1]
    if len(addr) == 4:
        header = saddr + daddr + bytes([0, proto]) + struct.pack("!H", length)
    else:
        header = saddr + daddr + struct.pack("!I", length) + bytes([0, 0, 0, proto])
    assert pseudo_sum(saddr, daddr, proto, length) == _rfc1071(header)


def test_csum_fix_mangled_0() -> None:
    """BPF_F_MARK_MANGLED_0: a zero (absent) UDP checksum stays zero, and an update whose
    result is zero stores 0xFFFF; without the flag both are plain arithmetic."""
    diff = csum_diff(b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02")
    absent = bytearray(2)
    csum_fix(absent, 0, diff, mangled_0=True)
    assert absent == b"\0\0"
    csum_fix(absent, 0, diff)
    assert absent != b"\0\0"
    for mangled_0, want in ((True, b"\xff\xff"), (False, b"\0\0")):
        buf = bytearray(b"\x12\x34")  # ~0x1234 + 0x1234 = 0xFFFF: the result is zero
        csum_fix(buf, 0, 0x1234, mangled_0=mangled_0)
        assert buf == want, mangled_0
