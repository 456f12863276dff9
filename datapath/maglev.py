"""Maglev backend selection on bytes: hash.h's tuple hash and lb.h's table lookup.

Written from bpf/lib/jhash.h and bpf/lib/hash.h as the BPF program computes them on a
little-endian host: the CT tuple's address and ports are loaded as native words straight
from network-order bytes (hash.h:13 jhash_3words(saddr, dport << 16 | sport, nexthdr,
hash_init4_seed); hash.h:25 for IPv6, the four address words mixed first). Independent of
model/maglev.py on purpose: the difftest compares the two.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datapath.host import Node
    from datapath.maps import LbService
    from datapath.packet import Parsed

_U32 = 0xFFFFFFFF
_LE4 = struct.Struct("<4I")
_LE1 = struct.Struct("<I")


def _rol(x: int, k: int) -> int:
    return ((x << k) & _U32) | (x >> (32 - k))


def jhash_mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix (jhash.h)."""
    a = ((a - c) & _U32) ^ _rol(c, 4)
    c = (c + b) & _U32
    b = ((b - a) & _U32) ^ _rol(a, 6)
    a = (a + c) & _U32
    c = ((c - b) & _U32) ^ _rol(b, 8)
    b = (b + a) & _U32
    a = ((a - c) & _U32) ^ _rol(c, 16)
    c = (c + b) & _U32
    b = ((b - a) & _U32) ^ _rol(a, 19)
    a = (a + c) & _U32
    c = ((c - b) & _U32) ^ _rol(b, 4)
    b = (b + a) & _U32
    return a, b, c


def jhash_final(a: int, b: int, c: int) -> int:
    """__jhash_final (jhash.h): the final c."""
    c = ((c ^ b) - _rol(b, 14)) & _U32
    a = ((a ^ c) - _rol(c, 11)) & _U32
    b = ((b ^ a) - _rol(a, 25)) & _U32
    c = ((c ^ b) - _rol(b, 16)) & _U32
    a = ((a ^ c) - _rol(c, 4)) & _U32
    b = ((b ^ a) - _rol(a, 14)) & _U32
    return ((c ^ b) - _rol(b, 24)) & _U32


def tuple_hash(saddr: bytes, sport_be: bytes, dport_be: bytes, nexthdr: int, seed: int) -> int:
    """__hash_from_tuple_v4 / _v6 with the ports as the 2-byte network-order fields."""
    (ports,) = _LE1.unpack(sport_be + dport_be)  # dport << 16 | sport as native words
    if len(saddr) == 4:
        init = (seed + 0xDEADBEEF + 12) & _U32
        (a,) = _LE1.unpack(saddr)
        return jhash_final((a + init) & _U32, (ports + init) & _U32, (nexthdr + init) & _U32)
    p1, p2, p3, p4 = _LE4.unpack(saddr)
    a, b, c = jhash_mix(p1, p2, p3)
    a, b, c = jhash_mix((a + p4) & _U32, (b + ports) & _U32, (c + nexthdr) & _U32)
    return jhash_final((a + seed) & _U32, b, c)


def select_backend_id(node: Node, p: Parsed, svc: LbService, affinity: bool) -> int:
    """lb4/lb6_select_backend_id_maglev: the CT tuple holds the client port in dport and the
    service port in sport (lb4_extract_tuple). v1.20 (lb.h:1937-1951) hashes them swapped,
    with a zero client port on affinity frontends; v1.18 (lb.h:1446) as they are. A missing
    outer or inner entry selects 0 (lb.h:1944-1949)."""
    table = (node.maps.lb6_maglev if p.v6 else node.maps.lb4_maglev).get(svc.rev_nat_index)
    if not table:
        return 0
    client, service = struct.pack("!H", p.sport), struct.pack("!H", p.dport)
    if node.config.version == "1.20":
        lo, hi = (b"\0\0" if affinity else client), service
    else:
        lo, hi = service, client
    # seeded fault maglev_hash_daddr: the VIP in place of the client address
    saddr = p.daddr if "maglev_hash_daddr" in node.faults else p.saddr
    seed = node.config.hash_seed6 if p.v6 else node.config.hash_seed4
    h = tuple_hash(saddr, lo, hi, p.proto, seed)
    return table[h % node.config.maglev_table_size]
