"""Internet checksum helpers with the semantics of the BPF csum helpers (RFC 1071/1624)."""

from __future__ import annotations

import struct

_H = struct.Struct("!H")


def _swap_sum(s: int) -> int:
    """Fix a native-order (little-endian) word sum back to network order."""
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ((s & 0xFF) << 8) | (s >> 8)


_LITTLE = struct.pack("=H", 1) == b"\x01\x00"


def ones_sum(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """Folded 16-bit ones'-complement sum of data in network order, plus seed."""
    n = len(data)
    s = 0
    if n >= 2:
        mv = memoryview(data)[: n & ~1]
        s = _swap_sum(sum(mv.cast("H"))) if _LITTLE else sum(struct.unpack(f"!{n // 2}H", mv))
    if n & 1:
        s += data[n - 1] << 8
    s += seed
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_fold(s: int) -> int:
    """Fold a 32-bit partial sum and complement it, like csum_fold()."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def checksum(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """Full Internet checksum of data (used where Cilium's helpers compute from scratch)."""
    return csum_fold(ones_sum(data, seed))


_8H = struct.Struct("!8H")


def word_sum(b: bytes) -> int:
    """Unfolded sum of 16-bit words of a 2/4/16-byte field (fast path for rewrites)."""
    n = len(b)
    if n == 4:
        v = int.from_bytes(b, "big")
        return (v >> 16) + (v & 0xFFFF)
    if n == 2:
        return (b[0] << 8) | b[1]
    if n == 16:
        return sum(_8H.unpack(b))
    return ones_sum(b)


def csum_diff(old: bytes, new: bytes, seed: int = 0) -> int:
    """bpf_csum_diff(): partial sum of ~old + new (both even length) on top of seed."""
    s = seed + word_sum(new)
    if old:
        o = word_sum(old)
        while o >> 16:
            o = (o & 0xFFFF) + (o >> 16)
        s += 0xFFFF - o
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_replace(check: int, diff: int) -> int:
    """Apply a csum_diff() result to a stored checksum field (RFC 1624 eqn. 3).

    diff is a sum of a few 16-bit words (< 2**32 - 2**16), so two folds always suffice.
    """
    s = ((~check) & 0xFFFF) + diff
    s = (s & 0xFFFF) + (s >> 16)
    return (~((s & 0xFFFF) + (s >> 16))) & 0xFFFF


def csum_fix(buf: bytearray, off: int, diff: int, mangled_0: bool = False) -> None:
    """bpf_l3/l4_csum_replace(ctx, off, 0, diff, ...) after a bpf_csum_diff(): the 16-bit
    checksum at off adjusted by diff; mangled_0 is BPF_F_MARK_MANGLED_0 (UDP: a zero
    checksum means none and stays zero, and no update may produce one)."""
    check = _H.unpack_from(buf, off)[0]
    if mangled_0 and check == 0:
        return
    res = csum_replace(check, diff)
    _H.pack_into(buf, off, 0xFFFF if mangled_0 and res == 0 else res)


def pseudo_sum(saddr: bytes, daddr: bytes, proto: int, length: int) -> int:
    """Folded sum of the IPv4/IPv6 pseudo header for L4 checksums."""
    return ones_sum(saddr + daddr, proto + (length & 0xFFFF) + (length >> 16))
