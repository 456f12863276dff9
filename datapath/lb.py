"""Service lookup, backend selection and L3/L4 rewrites (bpf/lib/lb.h)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.conntrack import ct_create, ct_lookup
from datapath.csum import csum_diff
from datapath.drop import DatapathDrop, DropReason
from datapath.maps import (
    BE_STATE_ACTIVE,
    LB_LOOKUP_SCOPE_EXT,
    TUPLE_F_SERVICE,
    CtEntry,
    CtTuple,
    HashMap,
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


def lb_lookup_service(node: Node, p: Parsed) -> tuple[LbKey, LbService] | None:
    """lb4_lookup_service(): exact {addr, dport, proto} first, then the wildcard key."""
    svcs = node.maps.lb6_services if p.v6 else node.maps.lb4_services
    key = LbKey(p.daddr, p.dport, p.proto, LB_LOOKUP_SCOPE_EXT, 0)
    svc = svcs.lookup(key)
    if svc is not None:
        return key, svc
    wkey = LbKey(p.daddr, 0, 0, LB_LOOKUP_SCOPE_EXT, 0)
    wsvc = svcs.lookup(wkey)
    if wsvc is not None:
        return wkey, wsvc
    return None


def _select_slot(node: Node, key: LbKey, count: int) -> int:
    if node.pinned_backend is not None:
        svcs = node.maps.lb6_services if len(key.address) == 16 else node.maps.lb4_services
        for slot in range(1, count + 1):
            s = svcs.lookup(LbKey(key.address, key.dport, key.proto, key.scope, slot))
            if s is not None and s.backend_id == node.pinned_backend:
                return slot
    if node.config.selection == "first":
        return 1
    return (node.prandom() % count) + 1


def lb_local(node: Node, p: Parsed, key: LbKey, svc: LbService) -> tuple[int, LbBackend, bool]:
    """lb4_local(): CT_SERVICE lookup, backend (re)selection, CT_SERVICE creation."""
    maps = node.maps
    svcs = maps.lb6_services if p.v6 else maps.lb4_services
    backends = maps.lb6_backends if p.v6 else maps.lb4_backends
    tcp = p.proto == IPPROTO_TCP
    # lb4_extract_tuple crosses the ports: sport holds the destination port.
    tup = CtTuple(p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_SERVICE)
    ct = maps.ct_map(p.v6, p.proto)
    entry = None if "ct_service_not_reused" in node.faults else ct_lookup(
        node, ct, tup, p.tcp_flags, tcp, service=True)
    if entry is not None:
        be = backends.lookup(entry.backend_id)
        if be is not None and (be.flags == BE_STATE_ACTIVE or not p.tcp_flags & TCP_SYN):
            return entry.backend_id, be, False
        backend_id, be = _pick(node, svcs, backends, key, svc.count)
        entry.backend_id = backend_id
        return backend_id, be, False
    backend_id, be = _pick(node, svcs, backends, key, svc.count)
    new = CtEntry(backend_id=backend_id, rev_nat_index=svc.rev_nat_index)
    if not ct_create(node, ct, tup, new, p.tcp_flags, tcp, service=True):
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)
    return backend_id, be, True


def _pick(node: Node, svcs: HashMap[LbKey, LbService], backends: HashMap[int, LbBackend],
          key: LbKey, count: int) -> tuple[int, LbBackend]:
    """Select a slot and resolve its backend; no backends or a dangling ID: DROP_NO_SERVICE."""
    if count == 0:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    slot = _select_slot(node, key, count)
    s = svcs.lookup(LbKey(key.address, key.dport, key.proto, key.scope, slot))
    backend_id = 0 if s is None else int(s.backend_id)
    be = backends.lookup(backend_id)
    if be is None:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    return backend_id, be


_HH = struct.Struct("!HH")
_ADDR_OFF = {(False, True): 12, (False, False): 16, (True, True): 8, (True, False): 24}
_CSUM_OFF = {IPPROTO_TCP: 16, IPPROTO_UDP: 6, IPPROTO_ICMPV6: 2}


def _fold_replace(check: int, diff: int) -> int:
    # RFC 1624 eqn. 3 (csum_replace), inlined for the per-packet path.
    s = ((~check) & 0xFFFF) + diff
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def rewrite(p: Parsed, src: bool, addr: bytes | None, port: int | None,
            l4_csum: bool = True) -> None:
    """Rewrite source or destination address/port with incremental checksum fixes."""
    buf = p.buf
    proto = p.proto
    l4diff = 0
    if addr is not None:
        off = _ADDR_OFF[p.v6, src]
        alen = len(addr)
        if alen == 4:  # bpf_csum_diff() of one 32-bit word, as two 16-bit words
            o0, o1 = _HH.unpack_from(buf, off)
            n0, n1 = _HH.unpack(addr)
            if o0 != n0 or o1 != n1:
                buf[off:off + 4] = addr
                d = n0 + n1 + (0xFFFF - o0) + (0xFFFF - o1)
                _H.pack_into(buf, 10, _fold_replace(_H.unpack_from(buf, 10)[0], d))
                l4diff = d
        elif buf[off:off + alen] != addr:  # IPv6: no header checksum, L4 only
            l4diff = csum_diff(bytes(buf[off:off + alen]), addr)
            buf[off:off + alen] = addr
        if src:
            p.saddr = addr
        else:
            p.daddr = addr
    if port is not None and p.frag_first and proto in PORT_PROTOS:
        poff = p.l4_off if src else p.l4_off + 2
        oldp = _H.unpack_from(buf, poff)[0]
        if oldp != port:
            _H.pack_into(buf, poff, port)
            l4diff += (0xFFFF - oldp) + port
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
        if proto == IPPROTO_UDP:
            if check:
                _H.pack_into(buf, csum_off, _fold_replace(check, l4diff) or 0xFFFF)
        else:
            _H.pack_into(buf, csum_off, _fold_replace(check, l4diff))


def lb_dnat_request(node: Node, p: Parsed, be: LbBackend) -> None:
    """lb4_dnat_request(): destination -> backend, port only when the backend has one."""
    rewrite(p, False, be.address, be.port or None,
            l4_csum="no_csum_update_after_dnat" not in node.faults)


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
