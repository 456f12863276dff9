"""Maglev: the agent's lookup table (pkg/maglev) and the datapath's flow hash (bpf/lib/hash.h).

Facts taken from Cilium (cited, not copied):
- pkg/maglev/maglev.go `maglevSupportedTableSizes`: the table sizes the agent accepts
  (`--bpf-lb-maglev-table-size`, default 16381); `ToConfig`: the hash seed is base64 of 12
  bytes, bytes 0-3 (big-endian) seed MurmurHash3, 4-7 are SeedJhash0 and 8-11 SeedJhash1;
  the loader writes them as the datapath's hash_init4_seed / hash_init6_seed
  (HASH_INIT4_SEED / HASH_INIT6_SEED in v1.18's node_config.h:98-99).
- pkg/maglev/maglev.go `getOffsetAndSkip`: h1, h2 = MurmurHash3_x64_128(backend, seed);
  offset = h1 % M, skip = h2 % (M - 1) + 1; permutation j is (offset + j * skip) % M.
- `setHashString`: a backend's name is "[addr:port/PROTO,State:active]" ("[[v6]:port/...");
  backends are sorted by it, so every node builds the same table from the same set.
- `computeLookupTable`: turns go round the sorted backends; with weights in use (their mean
  above 1, as with the default weight 100) a backend whose counter is ahead skips its turn.
- bpf/lib/hash.h:13 `__hash_from_tuple_v4`: jhash_3words(saddr, dport << 16 | sport,
  nexthdr, hash_init4_seed) (the destination address is left out on purpose); the v6 variant
  (hash.h:25) mixes the four address words first. lb.h:1928 (v1.20) passes the CT tuple's
  ports swapped and a zero source port for affinity services; v1.18's lb.h:1446 hashes the
  CT tuple as it is. The index is hash % LB_MAGLEV_LUT_SIZE into cilium_lb4_maglev's inner
  array for the service's rev_nat_index (lb.h:1943-1952).
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
from collections.abc import Sequence
from typing import Protocol

import attrs

from model.errors import InputError

TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
DEFAULT_TABLE_SIZE = 16381
DEFAULT_HASH_SEED = "JLfvgnHc2kaSUFaI"  # pkg/maglev DefaultHashSeed
DEFAULT_WEIGHT = 100  # pkg/loadbalancer DefaultBackendWeight

M64 = (1 << 64) - 1
M32 = 0xFFFFFFFF


def seeds(seed: str) -> tuple[int, int, int]:
    """(murmur seed, jhash seed v4, jhash seed v6) from the cluster-wide base64 seed."""
    try:
        raw = base64.b64decode(seed, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"cannot decode base64 Maglev hash seed {seed!r}") from e
    if len(raw) != 12:
        raise InputError(f"decoded hash seed is {len(raw)} bytes (not 12 bytes)")
    return (int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big"),
            int.from_bytes(raw[8:12], "big"))


def _rotl64(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F


def _k1(k: int) -> int:
    return (_rotl64((k * _C1) & M64, 31) * _C2) & M64


def _k2(k: int) -> int:
    return (_rotl64((k * _C2) & M64, 33) * _C1) & M64


def murmur3_128(data: bytes, seed: int) -> tuple[int, int]:
    """MurmurHash3_x64_128 (little-endian blocks), the two 64-bit halves."""
    h1 = h2 = seed & M32
    nblocks = len(data) // 16
    for i in range(nblocks):
        h1 ^= _k1(int.from_bytes(data[16 * i:16 * i + 8], "little"))
        h1 = (_rotl64(h1, 27) + h2) & M64
        h1 = (h1 * 5 + 0x52DCE729) & M64
        h2 ^= _k2(int.from_bytes(data[16 * i + 8:16 * i + 16], "little"))
        h2 = (_rotl64(h2, 31) + h1) & M64
        h2 = (h2 * 5 + 0x38495AB5) & M64
    tail = data[16 * nblocks:]
    if len(tail) > 8:
        h2 ^= _k2(int.from_bytes(tail[8:], "little"))
    if tail:
        h1 ^= _k1(int.from_bytes(tail[:8], "little"))
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & M64
    h2 = (h2 + h1) & M64
    h1, h2 = _fmix64(h1), _fmix64(h2)
    h1 = (h1 + h2) & M64
    return h1, (h2 + h1) & M64


def hash_string(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int,
                proto: str) -> str:
    """The backend's name for sorting and hashing (pkg/maglev setHashString)."""
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"[{host}:{port}/{proto},State:active]"


def offset_skip(name: str, m: int, murmur_seed: int, ignore_skip: bool = False
                ) -> tuple[int, int]:
    """getOffsetAndSkip; `ignore_skip` is the seeded fault MAGLEV_SKIP_IGNORED."""
    h1, h2 = murmur3_128(name.encode(), murmur_seed)
    return h1 % m, 1 if ignore_skip else h2 % (m - 1) + 1


Backend = tuple[str, int, int]  # (hash string, backend ID, weight)


@functools.lru_cache(maxsize=128)
def lookup_table(backends: tuple[Backend, ...], m: int, murmur_seed: int,
                 ignore_skip: bool = False) -> tuple[int, ...]:
    """computeLookupTable: M backend IDs; the backends are sorted by name first."""
    if not backends:
        return ()
    bes = sorted(backends)
    n = len(bes)
    perm = [offset_skip(name, m, murmur_seed, ignore_skip) for name, _, _ in bes]
    weight_sum = sum(w for _, _, w in bes)
    cntr = [float(w) / float(n) for _, _, w in bes]
    weighted = weight_sum // n > 1
    nxt = [0] * n
    entry = [-1] * m
    for turn in range(m):
        i = turn % n
        while weighted and (turn + 1) * bes[i][2] < int(cntr[i]):
            i = (i + 1) % n
        if weighted:
            cntr[i] += float(weight_sum)
        off, skip = perm[i]
        c = (off + nxt[i] * skip) % m
        while entry[c] >= 0:
            nxt[i] += 1
            c = (off + nxt[i] * skip) % m
        entry[c] = bes[i][1]
        nxt[i] += 1
    return tuple(entry)


def _rol32(w: int, s: int) -> int:
    return ((w << s) | (w >> (32 - s))) & M32


def _final(a: int, b: int, c: int) -> int:
    c ^= b
    c = (c - _rol32(b, 14)) & M32
    a ^= c
    a = (a - _rol32(c, 11)) & M32
    b ^= a
    b = (b - _rol32(a, 25)) & M32
    c ^= b
    c = (c - _rol32(b, 16)) & M32
    a ^= c
    a = (a - _rol32(c, 4)) & M32
    b ^= a
    b = (b - _rol32(a, 14)) & M32
    c ^= b
    return (c - _rol32(b, 24)) & M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    for s1, s2, s3 in ((4, 6, 8), (16, 19, 4)):
        a = ((a - c) & M32) ^ _rol32(c, s1)
        c = (c + b) & M32
        b = ((b - a) & M32) ^ _rol32(a, s2)
        a = (a + c) & M32
        c = ((c - b) & M32) ^ _rol32(b, s3)
        b = (b + a) & M32
    return a, b, c


JHASH_INITVAL = 0xDEADBEEF


def _le32(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def _bswap16(port: int) -> int:
    return ((port & 0xFF) << 8) | ((port >> 8) & 0xFF)


def flow_hash(saddr: ipaddress.IPv4Address | ipaddress.IPv6Address, sport: int, dport: int,
              nexthdr: int, seed: int) -> int:
    """__hash_from_tuple_v4/v6 on a little-endian host: the address and ports are loaded
    in network order as native words (hash.h:13, :25); `sport`/`dport` as hashed."""
    word = (_bswap16(dport) << 16) | _bswap16(sport)
    raw = saddr.packed
    if saddr.version == 4:
        init = (seed + JHASH_INITVAL + 12) & M32  # jhash_3words
        return _final((_le32(raw) + init) & M32, (word + init) & M32, (nexthdr + init) & M32)
    a, b, c = _mix(_le32(raw[0:4]), _le32(raw[4:8]), _le32(raw[8:12]))
    a, b, c = _mix((a + _le32(raw[12:16])) & M32, (b + word) & M32, (c + nexthdr) & M32)
    return _final((a + seed) & M32, b, c)


def select(table: Sequence[int], saddr: ipaddress.IPv4Address | ipaddress.IPv6Address,
           sport: int, dport: int, nexthdr: int, seed: int) -> int:
    """lb4/lb6_select_backend_id_maglev's lookup: table[hash % size] (0 when empty)."""
    if not table:
        return 0
    return table[flow_hash(saddr, sport, dport, nexthdr, seed) % len(table)]


IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class FlowPicker(Protocol):
    """How a node turns a flow into a table entry: the hash for traces, a prover's function."""

    def pick(self, table: tuple[int, ...], saddr: IPAddr, sport: int, dport: int,
             nexthdr: int, seed: int) -> int:
        """The backend ID the table holds at the flow's hash."""
        ...


@attrs.frozen
class JhashPicker:
    """The datapath's own: table[jhash % size] (select)."""

    def pick(self, table: tuple[int, ...], saddr: IPAddr, sport: int, dport: int,
             nexthdr: int, seed: int) -> int:
        """select() on concrete values."""
        return select(table, saddr, sport, dport, nexthdr, seed)
