"""Service lookup, backend selection and L3/L4 rewrites (bpf/lib/lb.h)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.conntrack import ct_create, ct_lookup
from datapath.csum import csum_diff
from datapath.drop import DatapathDrop, DropReason
from datapath.maglev import select_backend_id
from datapath.maps import (
    AFFINITY_TIMEOUT_MASK,
    BE_STATE_ACTIVE,
    LB_LOOKUP_SCOPE_EXT,
    SVC_FLAG_AFFINITY,
    TUPLE_F_SERVICE,
    AffinityKey,
    AffinityMatch,
    AffinityVal,
    CtEntry,
    CtTuple,
    LbBackend,
    LbKey,
    LbService,
)
from datapath.packet import (
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    TCP_SYN,
    Parsed,
)

if TYPE_CHECKING:
    from datapath.host import Node

_H = struct.Struct("!H")


_new = tuple.__new__  # NamedTuple construction without the Python-level __new__


def lb_lookup_service(node: Node, p: Parsed) -> tuple[LbKey, LbService] | None:
    """lb4_lookup_service(): exact {addr, dport, proto} first, then the wildcard key."""
    svcs = node.lb6_svc if p.v6 else node.lb4_svc
    # A plain tuple hashes and compares equal to the LbKey it spells.
    t = (p.daddr, p.dport, p.proto, LB_LOOKUP_SCOPE_EXT, 0)
    svc = svcs.get(t)
    if svc is None:
        t = (p.daddr, 0, 0, LB_LOOKUP_SCOPE_EXT, 0)
        svc = svcs.get(t)
        if svc is None:
            return None
    return _new(LbKey, t), svc


def _select_slot(node: Node, key: LbKey, count: int) -> int:
    if node.pinned_backend is not None:
        svcs = node.lb6_svc if len(key.address) == 16 else node.lb4_svc
        for slot in range(1, count + 1):
            s = svcs.get((key.address, key.dport, key.proto, key.scope, slot))
            if s is not None and s.backend_id == node.pinned_backend:
                return slot
    if node.config.selection == "first":
        return 1
    return (node.prandom() % count) + 1


def lb_local(node: Node, p: Parsed, key: LbKey, svc: LbService) -> tuple[int, LbBackend, bool]:
    """lb4_local(): CT_SERVICE lookup, backend (re)selection, CT_SERVICE creation."""
    v6 = p.v6
    proto = p.proto
    tcp_flags = p.tcp_flags
    maps = node.maps
    backends = node.lb6_be if v6 else node.lb4_be
    tcp = proto == IPPROTO_TCP
    # lb4_extract_tuple crosses the ports: sport holds the destination port.
    tup = _new(CtTuple, (p.daddr, p.saddr, p.sport, p.dport, proto, TUPLE_F_SERVICE))
    ct = (maps.ct6_tcp if tcp else maps.ct6_any) if v6 else (
        maps.ct4_tcp if tcp else maps.ct4_any)
    entry = ct_lookup(node, ct, tup, tcp_flags, tcp, True, size=len(p.buf)) \
        if node.ct_svc_reuse else None
    affinity = svc.flags & SVC_FLAG_AFFINITY
    if entry is not None:
        be = backends.get(entry.backend_id)
        if be is not None and (be.flags == BE_STATE_ACTIVE or not tcp_flags & TCP_SYN
                               or node.syn_keeps_terminating):
            if affinity:
                _update_affinity(node, v6, p.saddr, svc, entry.backend_id)
            return entry.backend_id, be, False
        backend_id, be = _pick(node, backends, key, svc.count, p, svc)
        entry.backend_id = backend_id
        if affinity:
            _update_affinity(node, v6, p.saddr, svc, backend_id)
        return backend_id, be, False
    if svc.count == 0:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    backend_id = _affinity_backend_id(node, v6, p.saddr, svc) if affinity else 0
    found = backends.get(backend_id) if backend_id else None
    if found is None:
        backend_id, found = _pick(node, backends, key, svc.count, p, svc)
    new = CtEntry(backend_id=backend_id, rev_nat_index=svc.rev_nat_index)
    if not ct_create(node, ct, tup, new, tcp, True, size=len(p.buf)):  # service
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)
    if affinity:
        _update_affinity(node, v6, p.saddr, svc, backend_id)
    return backend_id, found, True


def _affinity_backend_id(node: Node, v6: bool, client: bytes, svc: LbService) -> int:
    """__lb4_affinity_backend_id(): the client's backend if fresh and still matched, else 0
    (a stale or unmatched entry is deleted)."""
    amap = node.maps.lb6_affinity if v6 else node.maps.lb4_affinity
    akey = AffinityKey(client, svc.rev_nat_index)
    val = amap.lookup(akey)
    if val is None:
        return 0
    timeout = svc.backend_id & AFFINITY_TIMEOUT_MASK  # slot 0: the affinity timeout
    expired = val.last_used + timeout <= node.now
    if "affinity_expiry_inverted" in node.faults:
        expired = not expired
    if expired or AffinityMatch(val.backend_id, svc.rev_nat_index) \
            not in node.maps.lb_affinity_match:
        amap.delete(akey)
        return 0
    val.last_used = node.now
    return val.backend_id


def _update_affinity(node: Node, v6: bool, client: bytes, svc: LbService,
                     backend_id: int) -> None:
    """lb4_update_affinity_by_addr(): {backend, now} for the client on this frontend."""
    amap = node.maps.lb6_affinity if v6 else node.maps.lb4_affinity
    amap.update(AffinityKey(client, svc.rev_nat_index), AffinityVal(node.now, backend_id))


def _pick(node: Node, backends: dict[int, LbBackend], key: LbKey,
          count: int, p: Parsed, svc: LbService) -> tuple[int, LbBackend]:
    """Select a slot and resolve its backend; no backends or a dangling ID: DROP_NO_SERVICE."""
    if count == 0:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    if node.maglev and node.pinned_backend is None:  # LB_SELECTION_MAGLEV: no slot at all
        bid = select_backend_id(node, p, svc, bool(svc.flags & SVC_FLAG_AFFINITY))
        be = backends.get(bid)
        if be is None:
            raise DatapathDrop(DropReason.DROP_NO_SERVICE)
        return bid, be
    if node.pinned_backend is None and node.random_pick:  # the common case of _select_slot
        slot = (node.prandom() % count) + 1
    else:
        slot = _select_slot(node, key, count)
    svcs = node.lb6_svc if len(key.address) == 16 else node.lb4_svc
    s = svcs.get((key.address, key.dport, key.proto, key.scope, slot))
    backend_id = 0 if s is None else int(s.backend_id)
    be = backends.get(backend_id)
    if be is None:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    return backend_id, be


_HH = struct.Struct("!HH")
_4S = struct.Struct("4s")
_CSUM_OFF = {IPPROTO_TCP: 16, IPPROTO_UDP: 6, IPPROTO_ICMPV6: 2}


def rewrite(p: Parsed, src: bool, addr: bytes | None, port: int | None,
            l4_csum: bool = True) -> None:
    """Rewrite source or destination address/port with incremental checksum fixes."""
    buf = p.buf
    proto = p.proto
    l4diff = 0
    if addr is not None:
        off = (8 if src else 24) if p.v6 else (12 if src else 16)
        alen = len(addr)
        if alen == 4:  # bpf_csum_diff() of one 32-bit word, as two 16-bit words
            o0, o1 = _HH.unpack_from(buf, off)
            n0, n1 = _HH.unpack(addr)
            if o0 != n0 or o1 != n1:
                _4S.pack_into(buf, off, addr)  # cheaper than a slice assignment
                d = n0 + n1 + (0xFFFF - o0) + (0xFFFF - o1)
                # RFC 1624 eqn. 3 (csum_replace); d is a few 16-bit words: two folds suffice.
                s = ((~_H.unpack_from(buf, 10)[0]) & 0xFFFF) + d
                s = (s & 0xFFFF) + (s >> 16)
                _H.pack_into(buf, 10, (~((s & 0xFFFF) + (s >> 16))) & 0xFFFF)
                l4diff = d
        elif buf[off:off + alen] != addr:  # IPv6: no header checksum, L4 only
            l4diff = csum_diff(bytes(buf[off:off + alen]), addr)
            buf[off:off + alen] = addr
        if src:
            p.saddr = addr
        else:
            p.daddr = addr
    if port is not None and proto in PORT_PROTOS:
        if p.frag_first:
            poff = p.l4_off if src else p.l4_off + 2
            oldp = _H.unpack_from(buf, poff)[0]
            if oldp != port:
                _H.pack_into(buf, poff, port)
                l4diff += (0xFFFF - oldp) + port
        # a later fragment has no L4 header; its tuple still takes the port (lb4_local)
        if src:
            p.sport = port
        else:
            p.dport = port
    if l4diff and l4_csum and p.frag_first:
        rel = _CSUM_OFF.get(proto)
        if rel is None:
            return
        csum_off = p.l4_off + rel
        check = _H.unpack_from(buf, csum_off)[0]
        if proto == IPPROTO_UDP and not check:
            return  # UDP without a checksum stays without one (BPF_F_MARK_MANGLED_0)
        s = ((~check) & 0xFFFF) + l4diff  # csum_replace, as above
        s = (s & 0xFFFF) + (s >> 16)
        s = (~((s & 0xFFFF) + (s >> 16))) & 0xFFFF
        _H.pack_into(buf, csum_off, (s or 0xFFFF) if proto == IPPROTO_UDP else s)


def src_range_ok(node: Node, p: Parsed, svc: LbService, deny: bool) -> bool:
    """lb4_src_range_ok(): LPM hit in cilium_lb4_source_range XOR the deny flag."""
    prefixes = node.maps.src_range.get(svc.rev_nat_index, [])
    addr = int.from_bytes(p.saddr, "big")
    bits = len(p.saddr) * 8
    hit = False
    for net, plen in prefixes:
        if len(net) == len(p.saddr):
            mask = ((1 << plen) - 1) << (bits - plen) if plen else 0
            if addr & mask == int.from_bytes(net, "big") & mask:
                hit = True
                break
    return hit != deny
