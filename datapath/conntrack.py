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


def ct_lookup(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, tcp_flags: int,
              tcp: bool, service: bool = False, reply: bool = False, *, size: int
              ) -> CtEntry | None:
    """__ct_lookup(): None means CT_NEW (including a SYN that reopens a closing entry).
    `size` is the IP packet's length; with CT accounting the entry counts the packet and
    its frame, Ethernet header included (ctx_full_len, conntrack.h:376-378).

    ACTION_CLOSE closes both directions for CT_SERVICE and for an RST before the
    connection is established; otherwise only the direction the packet travels
    (CT_INGRESS -> rx_closing for replies, CT_EGRESS -> tx_closing for requests).
    """
    entry = ct._d.get(key)  # LruHashMap.lookup, inlined for the per-packet path
    if entry is None:
        return None
    if ct.refresh:
        ct._d.move_to_end(key)
    if node.ct_accounting:
        entry.packets += 1
        entry.bytes += size + ETH_HLEN
    if tcp and entry.rx_closing and entry.tx_closing and not (
            tcp_flags & TCP_SYN and (not tcp_flags & TCP_ACK or node.config.version == "1.18")):
        # A dead entry is not refreshed (`if (ct_entry_alive(entry))`, conntrack.h:373);
        # ACTION_CLOSE re-arms its close timeout (conntrack.h:427).
        if tcp_flags & (TCP_FIN | TCP_RST):
            entry.lifetime = node.now + CT_CLOSE_TIMEOUT
        return entry
    if tcp:
        syn = tcp_flags & TCP_SYN
        if (entry.rx_closing or entry.tx_closing) and syn and (
                not tcp_flags & TCP_ACK or node.config.version == "1.18"):
            # A SYN on a closing entry resets it (ACTION_CREATE): the entry stays, reset to
            # SYN-timeout state, and CT_NEW tells the caller to create afresh (if the
            # caller gives up, the reset entry is what remains). v1.19+ takes a pure SYN
            # only (v1.20 conntrack.h:133); v1.18 any SYN (v1.18 conntrack.h:61).
            entry.rx_closing = entry.tx_closing = False
            entry.seen_non_syn = False
            entry.lifetime = node.now + _timeout(entry, tcp, service)
            return None
        was_established = entry.seen_non_syn
        if not syn:
            entry.seen_non_syn = True
        if tcp_flags & (TCP_FIN | TCP_RST):
            if service or (tcp_flags & TCP_RST and not was_established):
                entry.rx_closing = True
                entry.tx_closing = True
            elif reply:
                entry.rx_closing = True
            else:
                entry.tx_closing = True
    entry.lifetime = node.now + _timeout(entry, tcp, service)
    return entry


def ct_create(node: Node, ct: LruHashMap[CtTuple, CtEntry], key: CtTuple, entry: CtEntry,
              tcp: bool, service: bool = False, *, size: int) -> bool:
    """ct_create4(): write a fresh entry; False maps to DROP_CT_CREATE_FAILED. A TCP entry is
    created as if a SYN had been seen (conntrack.h:1137): no seen_non_syn, the SYN timeout.
    With CT accounting the entry starts at one packet of this frame's size (conntrack.h:1159)."""
    if node.ct_accounting:
        entry.packets = 1
        entry.bytes = size + ETH_HLEN
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
