"""Connection tracking as bpf/lib/conntrack.h does it: lookups, TCP flag tracking, creation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datapath.maps import BPF_ANY, CtEntry, CtTuple, LruHashMap
from datapath.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

if TYPE_CHECKING:
    from datapath.host import Node

CT_LIFETIME_TCP = 8000
CT_LIFETIME_NONTCP = 60
CT_SERVICE_LIFETIME_TCP = 8000
CT_SERVICE_LIFETIME_NONTCP = 60
CT_SYN_TIMEOUT = 60
CT_CLOSE_TIMEOUT = 10

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


def ct_lookup(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, tcp_flags: int,
              tcp: bool, service: bool = False) -> CtEntry | None:
    """__ct_lookup(): None means CT_NEW (including a SYN that reopens a closing entry)."""
    entry = ct.lookup(key)
    if entry is None:
        return None
    if tcp:
        syn = tcp_flags & TCP_SYN
        if (entry.rx_closing or entry.tx_closing) and syn and not tcp_flags & TCP_ACK:
            # v1.19+: only a pure SYN on a closing entry resets it (ACTION_CREATE).
            ct.delete(key)
            return None
        if not syn:
            entry.seen_non_syn = True
        if tcp_flags & (TCP_FIN | TCP_RST):
            entry.rx_closing = True
            entry.tx_closing = True
    entry.lifetime = node.now + _timeout(entry, tcp, service)
    return entry


def ct_create(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, entry: CtEntry,
              tcp_flags: int, tcp: bool, service: bool = False) -> bool:
    """ct_create4(): write a fresh entry; False maps to DROP_CT_CREATE_FAILED."""
    if tcp and not tcp_flags & TCP_SYN:
        entry.seen_non_syn = True
    entry.lifetime = node.now + _timeout(entry, tcp, service)
    return ct.update(key, entry, BPF_ANY)


def ct_gc(node: Node, ct: LruHashMap[CtTuple, CtEntry]) -> int:
    """The agent's CT garbage collector: drop expired entries, return how many."""
    dead = [k for k, v in ct.items() if v.lifetime < node.now]
    for k in dead:
        ct.delete(k)
    return len(dead)
