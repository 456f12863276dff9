"""SNAT port allocation and the NAT map's forward/reverse pair (bpf/lib/nat.h)."""

from __future__ import annotations

import hashlib
from typing import Protocol

import attrs

from model.config import SNAT_COLLISION_RETRIES, CiliumConfig, CiliumVersion
from model.faults import ModelFault
from model.maps import LruMap, NatEntry, NatTuple, TupleFlags
from model.values import Endpoint, FlowKey, IPAddress, Proto

NatMap = LruMap[NatTuple, NatEntry]


def prandom(seed: int, *parts: object) -> int:
    """get_prandom_u32() made deterministic: a 32-bit hash of the seed and call site."""
    text = repr((seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "big")


class RandomSource(Protocol):
    """Where get_prandom_u32() comes from: seeded for traces, an open choice for proofs."""

    def u32(self, *site: object) -> int:
        """One 32-bit draw at a call site (the site makes concrete draws reproducible)."""
        ...


@attrs.frozen
class SeededRandom:
    """The scenario's `cilium.seed`: every draw a hash of the seed and its call site."""

    seed: int

    def u32(self, *site: object) -> int:
        """prandom of the seed and site."""
        return prandom(self.seed, *site)


def clamp_port(cfg: CiliumConfig, val: int, faults: frozenset[ModelFault] = frozenset()) -> int:
    """__snat_clamp_port_range: multiply-shift (v1.17+) or modulo (v1.13) into the NAT range."""
    start, end = cfg.nat_min, cfg.nat_max_port
    if ModelFault.NAT_RANGE_OVERLAPS_NODEPORT in faults:
        start = cfg.nodeport_min
    val &= 0xFFFF
    if cfg.version is CiliumVersion.V1_13:
        span = end - start
        return start + (val % span if span else 0)
    return start + ((val * (end - start + 1)) >> 16)


def fwd_key(client: Endpoint, backend: Endpoint, proto: Proto) -> NatTuple:
    """The original-direction (OUT) SNAT tuple {c_ip, b_ip, c_port, b_port}."""
    return NatTuple(saddr=client.addr, daddr=backend.addr, sport=client.port,
                    dport=backend.port, nexthdr=proto, flags=TupleFlags.OUT)


def rev_key(backend: Endpoint, nat: Endpoint, proto: Proto) -> NatTuple:
    """The reverse (IN) SNAT tuple {b_ip, L, b_port, N} a reply is looked up with."""
    return NatTuple(saddr=backend.addr, daddr=nat.addr, sport=backend.port, dport=nat.port,
                    nexthdr=proto, flags=TupleFlags.IN)


@attrs.frozen(kw_only=True)
class SnatResult:
    """Outcome of __snat_v4_nat: the new map and the NAT endpoint, or None on exhaustion."""

    snat: NatMap
    nat: Endpoint | None
    retries: int = 0


def snat_nat(cfg: CiliumConfig, snat: NatMap, client: Endpoint, backend: Endpoint,
             proto: Proto, target: IPAddress, now: int, salt: object, rand: RandomSource,
             faults: frozenset[ModelFault] = frozenset()) -> SnatResult:
    """snat_v4_nat_handle_mapping + snat_v4_new_mapping for the nodeport forward SNAT."""
    okey = fwd_key(client, backend, proto)
    existing = snat.get(okey)
    if existing is not None and existing.to_addr == target:
        nat = Endpoint(addr=existing.to_addr, port=existing.to_port)
        rkey = rev_key(backend, nat, proto)
        snat = snat.touch(okey)
        if snat.get(rkey) is None:  # self-healing (v1.17+): restore the reverse entry
            snat = snat.put(rkey, NatEntry(to_addr=client.addr, to_port=client.port,
                                           created=now))
        return SnatResult(snat=snat, nat=nat)
    if existing is not None:  # stale target address: drop both and allocate afresh
        snat = snat.delete(rev_key(backend, Endpoint(addr=existing.to_addr,
                                                     port=existing.to_port), proto))
        snat = snat.delete(okey)
    port = client.port
    if not cfg.nat_min <= port <= cfg.nat_max_port:
        port = clamp_port(cfg, rand.u32("snat", salt, okey, now, 0), faults)
    for retries in range(SNAT_COLLISION_RETRIES):
        nat = Endpoint(addr=target, port=port)
        rkey = rev_key(backend, nat, proto)
        rentry = NatEntry(to_addr=client.addr, to_port=client.port, created=now)
        if ModelFault.SNAT_IGNORE_REVERSE_ENTRY in faults:
            inserted: NatMap | None = snat.put(rkey, rentry)
        else:
            inserted = snat.put_noexist(rkey, rentry)
        if inserted is not None:
            snat = inserted.put(okey, NatEntry(to_addr=target, to_port=port, created=now))
            return SnatResult(snat=snat, nat=nat, retries=retries)
        nxt = port + 1 if retries else rand.u32("snat", salt, okey, now, retries + 1)
        port = clamp_port(cfg, nxt, faults)
    return SnatResult(snat=snat, nat=None, retries=SNAT_COLLISION_RETRIES)


def snat_rev_nat(snat: NatMap, pkt_src: Endpoint, pkt_dst: Endpoint, proto: Proto,
                 faults: frozenset[ModelFault] = frozenset(), *,
                 version: CiliumVersion = CiliumVersion.V1_20,
                 now: int = 0) -> tuple[NatMap, Endpoint | None]:
    """snat_v4_rev_nat: the original client for a reply to L:N; from 1.20 on it also restores
    a lost OUT entry (v1.20 nat.h:426-446), which 1.18 and older do not (v1.18 nat.h:365-399)."""
    rkey = rev_key(pkt_src, pkt_dst, proto)
    entry = snat.get(rkey)
    if entry is None:
        return snat, None
    client = Endpoint(addr=entry.to_addr, port=entry.to_port)
    if ModelFault.REVSNAT_WRONG_PORT in faults:
        client = Endpoint(addr=entry.to_addr, port=pkt_dst.port)
    okey = fwd_key(client, pkt_src, proto)
    snat = snat.touch(rkey)
    if version is CiliumVersion.V1_20 and snat.get(okey) is None:
        snat = snat.put(okey, NatEntry(to_addr=pkt_dst.addr, to_port=pkt_dst.port,
                                       created=now))  # bpf_mono_now(), nat.h:442
    return snat, client


def snat_rev_nat_icmp_error(snat: NatMap, quote: FlowKey) -> tuple[NatMap, Endpoint | None]:
    """snat_v4_rev_nat_handle_icmp_error (nat.h:1017-1125; v1.18 :881) and the v6 twin for
    packet-too-big (nat.h:2027): the quoted packet left this node SNATed, so its reverse key
    is {saddr=quote.dst, daddr=quote.src, ports likewise} (nat.h:1046-1061); the entry
    names the client whose address and port go back into the quote's source (nat.h:1115).
    None: no mapping (NAT_PUNT_TO_STACK, nat.h:1087)."""
    rkey = rev_key(quote.dst, quote.src, quote.proto)
    entry = snat.get(rkey)
    if entry is None:
        return snat, None
    return snat.touch(rkey), Endpoint(addr=entry.to_addr, port=entry.to_port)
