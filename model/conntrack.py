"""Conntrack entry lifecycle (bpf/lib/conntrack.h): timeouts, closing on FIN/RST, GC."""

from __future__ import annotations

import enum

import attrs

from model.config import CiliumVersion
from model.faults import ModelFault
from model.maps import CtEntry, NatEntry, NatTuple, NodeState, TupleFlags
from model.values import Packet, Proto, TcpFlags

# CT lifetimes in seconds (Cilium's defaults; TCP was 21600 before v1.15).
CT_SYN_TIMEOUT = 60
CT_CONNECTION_LIFETIME_TCP = 8000
CT_CONNECTION_LIFETIME_TCP_V113 = 21600
CT_CONNECTION_LIFETIME_NONTCP = 60
CT_SERVICE_LIFETIME_TCP = 8000
CT_SERVICE_LIFETIME_NONTCP = 60
CT_CLOSE_TIMEOUT = 10


class CtState(enum.Enum):
    """The life of one CT entry as an operator sees it in `cilium bpf ct list`."""

    ABSENT = "absent"
    CREATED = "created"  # SYN seen, SYN timeout applies
    ESTABLISHED = "established"  # a non-SYN seen, connection lifetime applies
    CLOSING = "closing"  # FIN/RST seen in both directions: close timeout
    HALF_CLOSING = "half-closing"  # FIN seen in one direction
    EXPIRED = "expired"  # lifetime passed; GC removes it


class Direction(enum.Enum):
    """Which way a packet crosses an entry: the flow's original or its reply."""

    ORIGINAL = "original"
    REPLY = "reply"


def _lifetime(version: CiliumVersion, pkt: Packet, entry: CtEntry, service: bool,
              now: int) -> int:
    """ct_update_timeout: SYN timeout until a non-SYN is seen, then the connection lifetime."""
    if entry.tx_closing and entry.rx_closing:
        return now + CT_CLOSE_TIMEOUT
    if pkt.proto is not Proto.TCP:
        return now + (CT_SERVICE_LIFETIME_NONTCP if service else CT_CONNECTION_LIFETIME_NONTCP)
    if not entry.seen_non_syn:
        return now + CT_SYN_TIMEOUT
    if version is CiliumVersion.V1_13:
        return now + CT_CONNECTION_LIFETIME_TCP_V113
    return now + (CT_SERVICE_LIFETIME_TCP if service else CT_CONNECTION_LIFETIME_TCP)


def reopens(version: CiliumVersion, entry: CtEntry, pkt: Packet) -> bool:
    """ACTION_CREATE on a closing entry: ct_tcp_select_action takes FIN/RST first (ACTION_CLOSE),
    then a SYN (v1.20 conntrack.h:128-134: SYN without ACK; v1.18 conntrack.h:57-62: any SYN)."""
    if not (pkt.is_syn and (entry.tx_closing or entry.rx_closing)):
        return False
    if pkt.flags & (TcpFlags.FIN | TcpFlags.RST):
        return False
    if version is CiliumVersion.V1_20:
        return not pkt.flags & TcpFlags.ACK
    return True


def _seen(entry: CtEntry, pkt: Packet, direction: Direction) -> CtEntry:
    """__ct_update_timeout ORs the packet's TCP flags into rx_flags_seen for CT_INGRESS and
    tx_flags_seen otherwise (CT_EGRESS, CT_SERVICE; v1.20 conntrack.h:178-183, 218-225)."""
    if not pkt.is_syn:
        return entry
    if direction is Direction.REPLY:
        return attrs.evolve(entry, rx_syn_seen=True)
    return attrs.evolve(entry, tx_syn_seen=True)


def seen_both_syns(entry: CtEntry) -> bool:
    """ct_entry_seen_both_syns (conntrack.h:139-145) as Cilium compiles it: false for every
    entry. It masks the __u8 tx/rx_flags_seen with TCP_FLAG_SYN, a __be32 for the 32-bit
    `union tcp_flags` (include/linux/tcp.h:77), whose SYN bit is 0x200 on the little-endian
    BPF target (0x20000 on big-endian): outside a byte either way. So every RST closes both
    directions, whatever `entry.tx_syn_seen and entry.rx_syn_seen` (the stated intent) say;
    measured on both trees' compiled bpf_host (vectors/ct_seen_flags.yaml)."""
    del entry
    return False


def reset(version: CiliumVersion, entry: CtEntry, pkt: Packet, now: int,
          service: bool = True, direction: Direction = Direction.ORIGINAL) -> CtEntry:
    """ACTION_CREATE on a closing entry (v1.20 conntrack.h:382-395): closing flags, both
    directions' seen flags (ct_reset_seen_flags) and seen_non_syn cleared, then
    ct_update_timeout records this SYN in its direction and gives the SYN timeout."""
    fresh = attrs.evolve(entry, tx_closing=False, rx_closing=False, seen_non_syn=False,
                         tx_syn_seen=False, rx_syn_seen=False)
    fresh = _seen(fresh, pkt, direction)
    return attrs.evolve(fresh, lifetime=_lifetime(version, pkt, fresh, service, now))


def on_packet(version: CiliumVersion, entry: CtEntry, pkt: Packet, now: int, *,
              direction: Direction = Direction.ORIGINAL, service: bool = False) -> CtEntry:
    """__ct_lookup's per-hit update: seen flags, seen_non_syn, closing flags, lifetime.
    ORIGINAL is Cilium's CT_EGRESS (or CT_SERVICE, with service=True), REPLY its CT_INGRESS."""
    closes = pkt.proto is Proto.TCP and bool(pkt.flags & (TcpFlags.FIN | TcpFlags.RST))
    if entry.tx_closing and entry.rx_closing:
        # Only a live entry is refreshed (`if (ct_entry_alive(entry))`, conntrack.h:373);
        # a FIN/RST (ACTION_CLOSE) on a dead one re-arms the close timeout and records its
        # flags (__ct_update_timeout, conntrack.h:427-428).
        if not closes:
            return entry
        return attrs.evolve(_seen(entry, pkt, direction), lifetime=now + CT_CLOSE_TIMEOUT)
    # ct_update_timeout tracks seen_non_syn for TCP only; UDP entries keep it clear.
    seen = entry.seen_non_syn or (pkt.proto is Proto.TCP and not pkt.is_syn)
    new = attrs.evolve(_seen(entry, pkt, direction), seen_non_syn=seen)
    tx, rx = new.tx_closing, new.rx_closing
    if closes:
        # ACTION_CLOSE (conntrack.h:397-420): CT_SERVICE closes both; otherwise an RST
        # when not ct_entry_seen_both_syns (read after this packet's flags were recorded)
        # closes both; else only the packet's own direction.
        both = service or (pkt.flags & TcpFlags.RST and not seen_both_syns(new))
        if both:
            tx = rx = True
        elif direction is Direction.ORIGINAL:
            tx = True
        else:
            rx = True
    new = attrs.evolve(new, tx_closing=tx, rx_closing=rx)
    return attrs.evolve(new, lifetime=_lifetime(version, pkt, new, service, now))


def created(version: CiliumVersion, pkt: Packet, now: int, *, service: bool = False,
            **fields: object) -> CtEntry:
    """ct_create4: a fresh entry. A TCP entry is created as if a SYN had been seen, whatever
    the packet (`seen_flags.value |= is_tcp ? TCP_FLAG_SYN : 0`, conntrack.h:1137): no
    seen_non_syn, the SYN timeout until the next packet, and only that SYN in the creating
    direction's seen flags (every creation is CT_EGRESS or CT_SERVICE: tx_flags_seen).
    Closing is only ever applied by a lookup (ACTION_CLOSE), so a first FIN does not close it."""
    entry = CtEntry(**fields)  # type: ignore[arg-type]
    entry = attrs.evolve(entry, seen_non_syn=False, tx_syn_seen=pkt.proto is Proto.TCP,
                         rx_syn_seen=False)
    return attrs.evolve(entry, lifetime=_lifetime(version, pkt, entry, service, now))


def state_of(entry: CtEntry | None, now: int) -> CtState:
    """Classify an entry at a moment (what a CT dump would show)."""
    if entry is None:
        return CtState.ABSENT
    if entry.lifetime < now:
        return CtState.EXPIRED
    if entry.tx_closing and entry.rx_closing:
        return CtState.CLOSING
    if entry.tx_closing or entry.rx_closing:
        return CtState.HALF_CLOSING
    return CtState.ESTABLISHED if entry.seen_non_syn else CtState.CREATED


def gc(st: NodeState, now: int, faults: frozenset[ModelFault] = frozenset()) -> NodeState:
    """The agent's CT GC: expired entries go, and with them their flows' SNAT entries."""
    ct = st.ct
    for ckey in [k for k, e in ct.entries.items() if e.lifetime < now]:
        ct = ct.delete(ckey)
    if ModelFault.GC_KEEPS_ORPHAN_NAT in faults:
        return attrs.evolve(st, ct=ct)
    # a list searched with ==, never a set: ports may be symbolic during a proof
    live: list[tuple[object, ...]] = [(k.saddr, k.daddr, k.sport, k.dport, k.nexthdr)
                                      for k in ct.entries if k.flags is TupleFlags.OUT]
    snat = st.snat
    for nkey, entry in list(snat.entries.items()):
        if ModelFault.GC_PURGES_LIVE_NAT in faults or not nat_has_ct(nkey, entry, live):
            snat = snat.delete(nkey)
    return attrs.evolve(st, ct=ct, snat=snat)


def nat_has_ct(key: NatTuple, entry: NatEntry, live: list[tuple[object, ...]]) -> bool:
    """PurgeOrphanNATEntries' test against the CT_EGRESS {saddr=b, daddr=c, c_port, b_port}."""
    p = key.nexthdr
    if key.flags is TupleFlags.IN:  # reverse {b, L, b_port, N} -> {c, c_port}
        return (key.saddr, entry.to_addr, entry.to_port, key.sport, p) in live
    return ((key.daddr, key.saddr, key.sport, key.dport, p) in live  # forward {c, b, ...}
            or (key.saddr, key.daddr, key.dport, key.sport, p) in live)  # DSR {b, c, ...}
