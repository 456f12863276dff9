"""Connection tracking as bpf/lib/conntrack.h does it: lookups, TCP flag tracking, creation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from datapath.maps import BPF_ANY, TUPLE_F_IN, TUPLE_F_OUT, CtEntry, CtTuple, LruHashMap, NatEntry
from datapath.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

if TYPE_CHECKING:
    from datapath.host import Node

CT_LIFETIME_TCP = 8000
CT_LIFETIME_NONTCP = 60
CT_SERVICE_LIFETIME_TCP = 8000
CT_SERVICE_LIFETIME_NONTCP = 60
CT_SYN_TIMEOUT = 60
CT_CLOSE_TIMEOUT = 10
# node_config.h's default (every flag bit), which the agent's default `bpf.monitorFlags: all`
# keeps (v1.20 node_config.h:45-46)
CT_REPORT_FLAGS = 0xFF
# TCP_FLAG_SYN as conntrack.h tests it: __constant_cpu_to_be32(0x00020000), a mask for the
# 32-bit union tcp_flags (include/linux/tcp.h:77), read as an integer on the little-endian
# BPF target. Against an 8-bit flags byte it matches nothing.
TCP_FLAG_SYN_BE32 = 0x00000200

WORLD_IPV4_ID = 9
WORLD_IPV6_ID = 10


def _timeout(entry: CtEntry, tcp: bool, service: bool) -> int:
    if not tcp:
        return CT_SERVICE_LIFETIME_NONTCP if service else CT_LIFETIME_NONTCP
    if entry.rx_closing and entry.tx_closing:
        return CT_CLOSE_TIMEOUT
    if not entry.seen_non_syn:
        return CT_SYN_TIMEOUT
    return CT_SERVICE_LIFETIME_TCP if service else CT_LIFETIME_TCP


ETH_HLEN = 14


def _record(entry: CtEntry, flags: int, reply: bool) -> None:
    """__ct_update_timeout: OR the packet's TCP flags (masked by CT_REPORT_FLAGS) into
    rx_flags_seen for CT_INGRESS, tx_flags_seen otherwise (v1.20 conntrack.h:176-225)."""
    if reply:
        entry.rx_flags_seen |= flags & CT_REPORT_FLAGS
    else:
        entry.tx_flags_seen |= flags & CT_REPORT_FLAGS


def _update(node: Node, entry: CtEntry, flags: int, service: bool, reply: bool) -> None:
    """ct_update_timeout (conntrack.h:236-260): seen_non_syn, seen flags, new lifetime."""
    if not flags & TCP_SYN:
        entry.seen_non_syn = True
    _record(entry, flags, reply)
    entry.lifetime = node.now + _timeout(entry, True, service)


def ct_lookup(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, tcp_flags: int,
              tcp: bool, service: bool = False, reply: bool = False, *, size: int
              ) -> CtEntry | None:
    """__ct_lookup(): None means CT_NEW (including a SYN that reopens a closing entry).
    `reply` is CT_INGRESS (rx), else CT_EGRESS or, with `service`, CT_SERVICE (tx).
    `size` is the IP packet's length; with CT accounting the entry counts the packet and
    its frame, Ethernet header included (ctx_full_len, conntrack.h:376-378).

    ACTION_CLOSE closes both directions for CT_SERVICE and for an RST unless
    ct_entry_seen_both_syns (conntrack.h:139, 411), which as compiled is never true;
    a FIN closes only the direction it travels (CT_INGRESS -> rx_closing, else tx_closing).
    """
    entry = ct._d.get(key)  # LruHashMap.lookup, inlined for the per-packet path
    if entry is None:
        return None
    if ct.refresh:
        ct._d.move_to_end(key)
    if node.ct_accounting:
        entry.packets += 1
        entry.bytes += size + ETH_HLEN
    if not tcp:  # ACTION_UNSPEC, never closing: only the lifetime (conntrack.h:683)
        entry.lifetime = node.now + _timeout(entry, tcp, service)
        return entry
    alive = not (entry.rx_closing and entry.tx_closing)
    if alive:  # `if (ct_entry_alive(entry))`, conntrack.h:373
        _update(node, entry, tcp_flags, service, reply)
    if tcp_flags & (TCP_FIN | TCP_RST):  # ct_tcp_select_action: ACTION_CLOSE first
        # ct_entry_seen_both_syns (conntrack.h:139-145) masks the __u8 flag bytes with the
        # __be32 TCP_FLAG_SYN: never true, so any RST closes both directions.
        both_syns = (entry.rx_flags_seen & TCP_FLAG_SYN_BE32
                     and entry.tx_flags_seen & TCP_FLAG_SYN_BE32)
        if service or (tcp_flags & TCP_RST and not both_syns):
            entry.rx_closing = True
            entry.tx_closing = True
        elif reply:
            entry.rx_closing = True
        else:
            entry.tx_closing = True
        if entry.rx_closing and entry.tx_closing:
            # a dead entry keeps its close timeout until the next FIN/RST (conntrack.h:427)
            _record(entry, tcp_flags, reply)
            entry.lifetime = node.now + CT_CLOSE_TIMEOUT
        return entry
    if (tcp_flags & TCP_SYN and (not tcp_flags & TCP_ACK or node.config.version == "1.18")
            and (entry.rx_closing or entry.tx_closing)):
        # ACTION_CREATE on a closing entry resets it: closing, both seen-flag bytes and
        # seen_non_syn cleared, this SYN recorded; CT_NEW tells the caller to create afresh
        # (if the caller gives up, the reset entry is what remains). v1.19+ takes a pure SYN
        # (v1.20 conntrack.h:133, 382-395); v1.18 any SYN (v1.18 conntrack.h:61, 316-329).
        entry.rx_closing = entry.tx_closing = False
        entry.rx_flags_seen = entry.tx_flags_seen = 0
        entry.seen_non_syn = False
        _update(node, entry, tcp_flags, service, reply)
        return None
    return entry


def ct_create(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, entry: CtEntry,
              tcp: bool, service: bool = False, *, size: int) -> bool:
    """ct_create4(): write a fresh entry; False maps to DROP_CT_CREATE_FAILED. A TCP entry is
    created as if a SYN had been seen (conntrack.h:1137): no seen_non_syn, the SYN timeout,
    TCP_FLAG_SYN in tx_flags_seen (every creation is CT_EGRESS or CT_SERVICE).
    With CT accounting the entry starts at one packet of this frame's size (conntrack.h:1159)."""
    if node.ct_accounting:
        entry.packets = 1
        entry.bytes = size + ETH_HLEN
    if tcp:
        entry.tx_flags_seen = TCP_SYN
    entry.lifetime = node.now + _timeout(entry, tcp, service)
    return ct.update(key, entry, BPF_ANY)


def ct_gc(node: Node, ct: LruHashMap[CtTuple, CtEntry]) -> int:
    """The agent's CT garbage collector: drop expired entries, return how many."""
    dead = [k for k, v in ct.items() if v.lifetime < node.now]
    for k in dead:
        ct.delete(k)
    return len(dead)


def nat_gc(cts: Iterable[LruHashMap[CtTuple, CtEntry]],
           nats: Iterable[LruHashMap[CtTuple, NatEntry]]) -> int:
    """PurgeOrphanNATEntries: NAT entries whose CT_EGRESS {b, c, c_port, b_port} is gone."""
    live = {(k.saddr, k.daddr, k.sport, k.dport, k.nexthdr)
            for ct in cts for k, _e in ct.items() if k.flags == TUPLE_F_OUT}
    n = 0
    for nat in nats:
        for k, e in nat.items():
            p = k.nexthdr
            if k.flags == TUPLE_F_IN:  # reverse {b, L, b_port, N} -> {c, c_port}
                ok = (k.saddr, e.to_addr, e.to_port, k.sport, p) in live
            else:  # forward {c, b, c_port, b_port}
                ok = ((k.daddr, k.saddr, k.sport, k.dport, p) in live
                      or (k.saddr, k.daddr, k.dport, k.sport, p) in live)
            if not ok:
                nat.delete(k)
                n += 1
    return n
