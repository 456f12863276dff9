"""Symbolic packets, CT/SNAT map entries and node state: the z3 twins of model/maps.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import z3

from model.drops import DropReason
from model.faults import ModelFault
from model.nodeport import Step, Verdict
from model.values import Proto, TcpFlags
from properties.configs import Config
from properties.terms import (
    BV,
    NO_REASON,
    STEP,
    VERDICT,
    B,
    band,
    bnot,
    bor,
    bv,
    eq,
    ite_b,
    ite_bv,
    ite_int,
)


@dataclass(frozen=True)
class SEp:
    """A symbolic Endpoint (address, port)."""

    addr: BV
    port: BV

    def eq(self, o: SEp) -> B:
        """Both address and port equal."""
        return band(eq(self.addr, o.addr), eq(self.port, o.port))

    def ite(self, c: B | bool, o: SEp) -> SEp:
        """self if c else o."""
        return SEp(addr=ite_bv(c, self.addr, o.addr), port=ite_bv(c, self.port, o.port))


@dataclass(frozen=True)
class SPkt:
    """A symbolic Packet; proto and TCP flags are fixed by the packet's place in the flow."""

    src: SEp
    dst: SEp
    proto: Proto
    flags: TcpFlags
    dsr: B
    dsr_fe: SEp
    outer: B
    osrc: BV
    odst: BV

    @property
    def is_syn(self) -> bool:
        """TCP SYN (Cilium's DSR option trigger)."""
        return self.proto is Proto.TCP and bool(self.flags & TcpFlags.SYN)

    def ite(self, c: B | bool, o: SPkt) -> SPkt:
        """self if c else o (both must be the same packet of the flow)."""
        assert self.proto is o.proto and self.flags == o.flags
        return SPkt(src=self.src.ite(c, o.src), dst=self.dst.ite(c, o.dst), proto=self.proto,
                    flags=self.flags, dsr=ite_b(c, self.dsr, o.dsr),
                    dsr_fe=self.dsr_fe.ite(c, o.dsr_fe), outer=ite_b(c, self.outer, o.outer),
                    osrc=ite_bv(c, self.osrc, o.osrc), odst=ite_bv(c, self.odst, o.odst))


Key = tuple[BV, BV, BV, BV, int]


def key_eq(a: Key, b: Key) -> B | bool:
    """Field-wise key equality; keys with different flags never match (a Python fact)."""
    if a[4] != b[4]:
        return False
    parts = [eq(x, y) for x, y in zip(a[:4], b[:4], strict=True)]
    if any(x is False for x in parts):
        return False
    return band(*parts)


@dataclass(frozen=True)
class SCt:
    """A symbolic struct ct_entry (the fields the NodePort path reads)."""

    valid: B
    bid: BV
    rni: BV
    node_port: B
    dsr: B
    nat_set: B
    nat_addr: BV
    nat_port: BV
    closing: B = field(default_factory=lambda: z3.BoolVal(False))  # tx or rx closing

    def ite(self, c: B | bool, o: SCt) -> SCt:
        """self if c else o."""
        return SCt(closing=ite_b(c, self.closing, o.closing),
                   valid=ite_b(c, self.valid, o.valid), bid=ite_bv(c, self.bid, o.bid),
                   rni=ite_bv(c, self.rni, o.rni), node_port=ite_b(c, self.node_port,
                                                                   o.node_port),
                   dsr=ite_b(c, self.dsr, o.dsr), nat_set=ite_b(c, self.nat_set, o.nat_set),
                   nat_addr=ite_bv(c, self.nat_addr, o.nat_addr),
                   nat_port=ite_bv(c, self.nat_port, o.nat_port))


@dataclass(frozen=True)
class SNat:
    """A symbolic struct ipv4_nat_entry."""

    valid: B
    addr: BV
    port: BV

    def ite(self, c: B | bool, o: SNat) -> SNat:
        """self if c else o."""
        return SNat(valid=ite_b(c, self.valid, o.valid), addr=ite_bv(c, self.addr, o.addr),
                    port=ite_bv(c, self.port, o.port))


@dataclass
class KeyLog:
    """Every key a run looks up, so the initial-state invariants can be instantiated there."""

    ct: list[Key] = field(default_factory=list)
    nat: list[Key] = field(default_factory=list)
    # keys the stated invariant declares absent from the initial maps (the flow is new)
    fresh_ct: Callable[[Key], B | bool] | None = None
    fresh_nat: Callable[[Key], B | bool] | None = None


@dataclass(frozen=True)
class CtWrite:
    """One map_update_elem, taken only when its guard holds."""

    uid: int
    guard: B | bool
    key: Key
    val: SCt


@dataclass(frozen=True)
class NatWrite:
    """One SNAT map update, taken only when its guard holds."""

    uid: int
    guard: B | bool
    key: Key
    val: SNat


_UID = itertools.count(1)


def _merge(a: tuple[Any, ...], b: tuple[Any, ...], c: B | bool,
           make: Callable[[Any, B | bool], Any]) -> tuple[Any, ...]:
    """Writes of `a` where c holds and of `b` where it does not; a write both branches made
    (same uid) is kept once with its guard chosen by c, so merging stays linear."""
    ga = {w.uid: w for w in a}
    gb = {w.uid: w for w in b}
    out = []
    for uid in sorted(ga.keys() | gb.keys()):
        wa, wb = ga.get(uid), gb.get(uid)
        if wa is not None and wb is not None:
            g = wa.guard if wa is wb else ite_b(c, wa.guard, wb.guard)
            w = wa if wa is wb else make(wa, g)
        elif wa is not None:
            w = make(wa, band(c, wa.guard))
        else:
            assert wb is not None
            w = make(wb, band(bnot(c), wb.guard))
        if not (w.guard is False or (not isinstance(w.guard, bool) and z3.is_false(w.guard))):
            out.append(w)
    return tuple(out)


_Entry = TypeVar("_Entry", SCt, SNat)


def _read(writes: Sequence[Any], k: Key, cur: _Entry) -> _Entry:
    """The value at k after a log of guarded writes: later writes shadow earlier ones."""
    for w in writes:
        c = band(w.guard, key_eq(w.key, k))
        if c is not False and not z3.is_false(c):
            cur = w.val.ite(c, cur)
    return cur


@dataclass(frozen=True)
class CtMap:
    """cilium_ct{4,6}_global: arbitrary initial contents (uninterpreted functions of the
    CtTuple {daddr,saddr,dport,sport,flags}) plus the guarded writes of this run."""

    name: str
    abits: int
    empty: bool
    writes: tuple[CtWrite, ...]
    log: KeyLog

    @staticmethod
    def fresh(name: str, abits: int, log: KeyLog, empty: bool) -> CtMap:
        """An arbitrary (or, for replayable counterexamples, empty) CT map."""
        return CtMap(name=name, abits=abits, empty=empty, writes=(), log=log)

    def _fn(self, field_name: str, rng: z3.SortRef) -> z3.FuncDeclRef:
        a, p = z3.BitVecSort(self.abits), z3.BitVecSort(16)
        return z3.Function(f"{self.name}.ct.{field_name}", a, a, p, p, z3.BitVecSort(3), rng)

    def initial(self, k: Key) -> SCt:
        """The entry before this run touched the map."""
        fresh = self.log.fresh_ct(k) if self.log.fresh_ct is not None else False
        if self.empty or fresh is True:
            return SCt(valid=z3.BoolVal(False), bid=bv(0, 16), rni=bv(0, 16),
                       node_port=z3.BoolVal(False), dsr=z3.BoolVal(False),
                       nat_set=z3.BoolVal(False), nat_addr=bv(0, self.abits),
                       nat_port=bv(0, 16), closing=z3.BoolVal(False))
        args = (*k[:4], bv(k[4], 3))
        bs, p16, a = z3.BoolSort(), z3.BitVecSort(16), z3.BitVecSort(self.abits)
        return SCt(valid=self._fn("valid", bs)(*args), bid=self._fn("bid", p16)(*args),
                   rni=self._fn("rni", p16)(*args), node_port=self._fn("np", bs)(*args),
                   dsr=self._fn("dsr", bs)(*args), nat_set=self._fn("natset", bs)(*args),
                   nat_addr=self._fn("nataddr", a)(*args),
                   nat_port=self._fn("natport", p16)(*args),
                   closing=self._fn("closing", bs)(*args))

    def get(self, daddr: BV, saddr: BV, dport: BV, sport: BV, flags: int) -> SCt:
        """map_lookup_elem."""
        k = (daddr, saddr, dport, sport, int(flags))
        self.log.ct.append(k)
        return _read(self.writes, k, self.initial(k))

    def put(self, daddr: BV, saddr: BV, dport: BV, sport: BV, flags: int, e: SCt) -> CtMap:
        """map_update_elem(BPF_ANY); no LRU eviction (the map is assumed not full)."""
        k = (daddr, saddr, dport, sport, int(flags))
        w = CtWrite(uid=next(_UID), guard=True, key=k, val=e)
        return replace(self, writes=(*self.writes, w))

    def ite(self, c: B | bool, o: CtMap) -> CtMap:
        """self if c else o."""
        if c is True:
            return self
        if c is False:
            return o
        return replace(self, writes=_merge(self.writes, o.writes, c,
                                           lambda w, g: CtWrite(uid=w.uid, guard=g, key=w.key,
                                                                val=w.val)))


@dataclass(frozen=True)
class NatMap:
    """cilium_snat_v{4,6}_external: arbitrary initial contents over the NatTuple
    {saddr,daddr,sport,dport,dir} plus the guarded writes of this run."""

    name: str
    abits: int
    empty: bool
    writes: tuple[NatWrite, ...]
    log: KeyLog

    @staticmethod
    def fresh(name: str, abits: int, log: KeyLog, empty: bool) -> NatMap:
        """An arbitrary (or empty) SNAT map."""
        return NatMap(name=name, abits=abits, empty=empty, writes=(), log=log)

    def initial(self, k: Key) -> SNat:
        """The entry before this run touched the map."""
        fresh = self.log.fresh_nat(k) if self.log.fresh_nat is not None else False
        if self.empty or fresh is True:
            return SNat(valid=z3.BoolVal(False), addr=bv(0, self.abits), port=bv(0, 16))
        a, p = z3.BitVecSort(self.abits), z3.BitVecSort(16)
        args = (*k[:4], bv(k[4], 1))
        sig = (a, a, p, p, z3.BitVecSort(1))
        return SNat(valid=z3.Function(f"{self.name}.nat.valid", *sig, z3.BoolSort())(*args),
                    addr=z3.Function(f"{self.name}.nat.addr", *sig, a)(*args),
                    port=z3.Function(f"{self.name}.nat.port", *sig, p)(*args))

    def get(self, saddr: BV, daddr: BV, sport: BV, dport: BV, flags: int) -> SNat:
        """map_lookup_elem."""
        k = (saddr, daddr, sport, dport, int(flags))
        self.log.nat.append(k)
        return _read(self.writes, k, self.initial(k))

    def put(self, saddr: BV, daddr: BV, sport: BV, dport: BV, flags: int, e: SNat) -> NatMap:
        """map_update_elem(BPF_ANY)."""
        k = (saddr, daddr, sport, dport, int(flags))
        w = NatWrite(uid=next(_UID), guard=True, key=k, val=e)
        return replace(self, writes=(*self.writes, w))

    def delete(self, saddr: BV, daddr: BV, sport: BV, dport: BV, flags: int) -> NatMap:
        """map_delete_elem."""
        return self.put(saddr, daddr, sport, dport, flags,
                        SNat(valid=z3.BoolVal(False), addr=bv(0, self.abits), port=bv(0, 16)))

    def ite(self, c: B | bool, o: NatMap) -> NatMap:
        """self if c else o."""
        if c is True:
            return self
        if c is False:
            return o
        return replace(self, writes=_merge(self.writes, o.writes, c,
                                           lambda w, g: NatWrite(uid=w.uid, guard=g, key=w.key,
                                                                 val=w.val)))


@dataclass(frozen=True)
class SNode:
    """One node's datapath state between packets (model.maps.NodeState minus the static LB maps)."""

    ct: CtMap
    snat: NatMap

    def ite(self, c: B | bool, o: SNode) -> SNode:
        """self if c else o."""
        if self is o:
            return self
        return SNode(ct=self.ct.ite(c, o.ct), snat=self.snat.ite(c, o.snat))


@dataclass(frozen=True)
class SSvc:
    """A cilium_lb{4,6}_services_v2 master slot on one node (model.maps.ServiceEntry)."""

    fe: SEp
    rni: int
    slots: tuple[int, ...]
    all_backends: tuple[int, ...]
    dsr: bool
    etp_local: bool


def _opt_ite(c: B | bool, a: SPkt | None, b: SPkt | None) -> SPkt | None:
    if a is None:
        return b
    if b is None:
        return a
    return a.ite(c, b)


@dataclass(frozen=True)
class SRes:
    """A hook's outcome (model.nodeport.HookResult) plus the node state it leaves.

    fwd / dlv are the emitted packet on the FORWARD / DELIVER branches only (None when the
    hook can never forward / deliver), so a walk follows only packets that really move on.
    """

    st: SNode
    verdict: z3.ArithRef
    step: z3.ArithRef
    reason: z3.ArithRef
    pkt: SPkt
    icmp: B  # the emitted packet is the ICMP port-unreachable of tail_no_service
    fwd: SPkt | None
    dlv: SPkt | None

    def ite(self, c: B | bool, o: SRes) -> SRes:
        """self if c else o."""
        if not isinstance(c, bool) and (z3.is_true(c) or z3.is_false(c)):
            c = z3.is_true(c)
        if c is True:
            return self
        if c is False:
            return o
        return SRes(st=self.st.ite(c, o.st), verdict=ite_int(c, self.verdict, o.verdict),
                    step=ite_int(c, self.step, o.step), reason=ite_int(c, self.reason, o.reason),
                    pkt=self.pkt.ite(c, o.pkt), icmp=ite_b(c, self.icmp, o.icmp),
                    fwd=_opt_ite(c, self.fwd, o.fwd), dlv=_opt_ite(c, self.dlv, o.dlv))


def result(st: SNode, verdict: Verdict, step: Step, pkt: SPkt,
           reason: DropReason | None = None, icmp: bool = False) -> SRes:
    """A concrete-shaped hook result."""
    return SRes(st=st, verdict=z3.IntVal(VERDICT[verdict]), step=z3.IntVal(STEP[step]),
                reason=z3.IntVal(reason.value if reason else NO_REASON), pkt=pkt,
                icmp=z3.BoolVal(icmp), fwd=pkt if verdict is Verdict.FORWARD else None,
                dlv=pkt if verdict is Verdict.DELIVER else None)


class Oracle:
    """Fresh variables for nondeterministic choices, and the constraints they must meet."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.n = 0
        self.constraints: list[B] = []
        self.picks: list[BV] = []
        self.nat_ports: list[tuple[BV, BV, B]] = []  # (first random, retry port, retry ok)

    def bv(self, name: str, bits: int) -> BV:
        """A fresh oracle bit-vector."""
        self.n += 1
        return z3.BitVec(f"{self.prefix}{name}#{self.n}", bits)

    def bool(self, name: str) -> B:
        """A fresh oracle boolean."""
        self.n += 1
        return z3.Bool(f"{self.prefix}{name}#{self.n}")


@dataclass(frozen=True)
class SCtx:
    """What one node's programs know (model.nodeport.NodeCtx) in symbolic form."""

    cfg: Config
    index: int
    ip: BV
    services: tuple[SSvc, ...]
    revnat: dict[int, SEp]
    backends: dict[int, SEp]  # backend_id -> backend endpoint (cilium_lb4_backends_v3)
    local_eps: tuple[BV, ...]  # cilium_lxc: pod addresses on this node
    ipcache: tuple[tuple[BV, BV], ...]  # address -> tunnel endpoint (a node's IP)
    faults: frozenset[ModelFault]
    oracle: Oracle
    abits: int
    nodeport_min: int
    nodeport_max: int
    router: BV | None = None  # IPV4_GATEWAY (cilium_host), the tunnel-mode SNAT source
    terminating: tuple[int, ...] = ()  # backend IDs flagged BE_STATE_TERMINATING

    def has(self, f: ModelFault) -> bool:
        """A seeded fault is on."""
        return f in self.faults

    @property
    def nat_min(self) -> int:
        """NODEPORT_PORT_MIN_NAT."""
        return self.nodeport_max + 1

    def is_own(self, addr: BV) -> B | bool:
        """The node's own addresses: IPV4_DIRECT_ROUTING and cilium_host."""
        return bor(eq(addr, self.ip), *([eq(addr, self.router)] if self.router is not None
                                        else []))

    def is_local(self, addr: BV) -> B:
        """__lookup_ip4_endpoint: the address is a pod on this node."""
        return bor(*[eq(addr, a) for a in self.local_eps])

    def tep(self, addr: BV) -> tuple[B, BV]:
        """ipcache tunnel endpoint lookup: (found, endpoint)."""
        found: B = z3.BoolVal(False)
        out: BV = bv(0, self.abits)
        for a, t in reversed(self.ipcache):
            out = ite_bv(eq(addr, a), t, out)
            found = bor(eq(addr, a), found)
        return found, out

    def zero_ep(self) -> SEp:
        """The all-zero endpoint (unset fields)."""
        return SEp(addr=bv(0, self.abits), port=bv(0, 16))

