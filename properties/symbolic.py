"""z3 encoding of the per-node hooks of model/nodeport.py and model/snat.py.

Addresses are 32/128-bit bit-vectors, ports 16-bit. Each node's CT map and SNAT map
(cilium_ct4_global, cilium_snat_v4_external) is a set of z3 Arrays from the packed key to
each entry field, so a proof covers every table content. Everything a configuration fixes
(mode, family, protocol, TCP flags of the n-th packet, faults) stays a Python value and
selects the code path, exactly as the compile-time defines select it in bpf/.
Nondeterminism (random backend choice, SNAT port retries) becomes oracle variables.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import z3

from model.config import NODEPORT_PORT_MAX_NAT, CiliumVersion
from model.drops import DropReason
from model.faults import ModelFault
from model.maps import TupleFlags
from model.nodeport import Hook, Step, Verdict
from model.values import DsrKind, Proto, TcpFlags
from properties.configs import Config

BV: TypeAlias = z3.BitVecRef
B: TypeAlias = z3.BoolRef

STEP = {s: i for i, s in enumerate(Step)}
VERDICT = {v: i for i, v in enumerate(Verdict)}
NO_REASON = 0


_DISTINCT: set[int] = set()
_RANGE: dict[int, tuple[int, int]] = {}
_MEMO: dict[tuple[int, int], Any] = {}


def set_distinct(terms: Sequence[z3.ExprRef]) -> None:
    """Declare host addresses pairwise distinct (as asserted with Distinct) for folding."""
    _DISTINCT.clear()
    _DISTINCT.update(t.get_id() for t in terms)
    _RANGE.clear()
    _MEMO.clear()


Facts = tuple[frozenset[int], dict[int, tuple[int, int]]]


def snapshot() -> Facts:
    """The folding facts of the world just built (to re-install for a cached encoding)."""
    return frozenset(_DISTINCT), dict(_RANGE)


def install(facts: Facts) -> None:
    """Re-install a world's folding facts before building formulas over its terms."""
    _DISTINCT.clear()
    _DISTINCT.update(facts[0])
    _RANGE.clear()
    _RANGE.update(facts[1])
    _MEMO.clear()


def set_range(t: BV, lo: int, hi: int) -> None:
    """Declare lo <= t <= hi (an assumption the caller also asserts) for folding."""
    _RANGE[t.get_id()] = (lo, hi)


def eq(a: BV, b: BV, depth: int = 3) -> B | bool:
    """a == b, folded when the answer follows from structure, distinctness or ranges."""
    if a.eq(b):
        return True
    ia, ib = a.get_id(), b.get_id()
    memo = _MEMO.get((ia, ib))
    if memo is not None:
        return memo
    out = _eq(a, b, depth)
    _MEMO[(ia, ib)] = out
    return out


def _eq(a: BV, b: BV, depth: int) -> B | bool:
    ia, ib = a.get_id(), b.get_id()
    if ia in _DISTINCT and ib in _DISTINCT:
        return False
    ra, rb = _RANGE.get(ia), _RANGE.get(ib)
    if z3.is_bv_value(a):
        ra = (a.as_long(), a.as_long())
    if z3.is_bv_value(b):
        rb = (b.as_long(), b.as_long())
    if ra is not None and rb is not None and (ra[1] < rb[0] or rb[1] < ra[0]):
        return False
    if z3.is_bv_value(a) and z3.is_bv_value(b):
        return bool(a.as_long() == b.as_long())
    if depth > 0:
        for x, y in ((a, b), (b, a)):
            if z3.is_app_of(x, z3.Z3_OP_ITE) and not z3.is_app_of(y, z3.Z3_OP_ITE):
                c, t, e = x.children()
                et = eq(t, y, depth - 1)
                if not isinstance(et, bool):
                    break
                ee = eq(e, y, depth - 1)
                if isinstance(ee, bool):
                    if et == ee:
                        return et
                    return c if et else z3.Not(c)
                break
    return a == b


def ne(a: BV, b: BV) -> B | bool:
    """a != b with the same folding."""
    return bnot(eq(a, b))


def bnot(c: B | bool) -> B | bool:
    """Not that keeps Python booleans."""
    if isinstance(c, bool):
        return not c
    if z3.is_true(c):
        return False
    if z3.is_false(c):
        return True
    return z3.Not(c)


def bv(v: int, bits: int) -> BV:
    """A bit-vector constant."""
    return z3.BitVecVal(v, bits)


def ite_bv(c: B | bool, a: BV, b: BV) -> BV:
    """If on bit-vectors that folds Python-constant conditions."""
    if c is True:
        return a
    if c is False:
        return b
    if a.eq(b):
        return a
    if z3.is_true(c):
        return a
    if z3.is_false(c):
        return b
    return z3.If(c, a, b)


def band(*xs: B | bool) -> B:
    """And that accepts Python booleans."""
    vals = [x for x in xs if x is not True and not (not isinstance(x, bool) and z3.is_true(x))]
    if any(x is False or (not isinstance(x, bool) and z3.is_false(x)) for x in vals):
        return z3.BoolVal(False)
    if not vals:
        return z3.BoolVal(True)
    return z3.And(*vals) if len(vals) > 1 else vals[0]


def bor(*xs: B | bool) -> B:
    """Or that accepts Python booleans."""
    vals = [x for x in xs if x is not False and not (not isinstance(x, bool) and z3.is_false(x))]
    if any(x is True or (not isinstance(x, bool) and z3.is_true(x)) for x in vals):
        return z3.BoolVal(True)
    if not vals:
        return z3.BoolVal(False)
    return z3.Or(*vals) if len(vals) > 1 else vals[0]


def ite_b(c: B | bool, a: B | bool, b: B | bool) -> B:
    """If on booleans."""
    if not isinstance(c, bool) and (z3.is_true(c) or z3.is_false(c)):
        c = z3.is_true(c)
    if isinstance(a, bool) and isinstance(b, bool) and a == b:
        return z3.BoolVal(a)
    if not isinstance(a, bool) and not isinstance(b, bool) and a.eq(b):
        return a
    if c is True:
        return z3.BoolVal(a) if isinstance(a, bool) else a
    if c is False:
        return z3.BoolVal(b) if isinstance(b, bool) else b
    return z3.If(c, a, b)


def ite_int(c: B | bool, a: z3.ArithRef | int, b: z3.ArithRef | int) -> z3.ArithRef:
    """If on small integer codes (verdicts, steps, reasons, positions)."""
    if not isinstance(c, bool) and (z3.is_true(c) or z3.is_false(c)):
        c = z3.is_true(c)
    if isinstance(a, int) and isinstance(b, int) and a == b:
        return z3.IntVal(a)
    if not isinstance(a, int) and not isinstance(b, int) and a.eq(b):
        return a
    if c is True:
        return z3.IntVal(a) if isinstance(a, int) else a
    if c is False:
        return z3.IntVal(b) if isinstance(b, int) else b
    return z3.If(c, a, b)


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
        cur = self.initial(k)
        for w in self.writes:
            c = band(w.guard, key_eq(w.key, k))
            if c is not False and not z3.is_false(c):
                cur = w.val.ite(c, cur)
        return cur

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
        cur = self.initial(k)
        for w in self.writes:
            c = band(w.guard, key_eq(w.key, k))
            if c is not False and not z3.is_false(c):
                cur = w.val.ite(c, cur)
        return cur

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


def ek(client: SEp, backend: SEp) -> tuple[BV, BV, BV, BV, int]:
    """model.nodeport.egress_key as CtMap.get/put arguments.

    {saddr=b, daddr=c, sport=c_port, dport=b_port, OUT}.
    """
    return (client.addr, backend.addr, backend.port, client.port, TupleFlags.OUT)


def in_range(p: BV, lo: int, hi: int) -> B:
    """lo <= p <= hi, unsigned."""
    return z3.And(z3.UGE(p, lo), z3.ULE(p, hi))


def clamp(ctx: SCtx, v: BV) -> BV:
    """__snat_clamp_port_range (model.snat.clamp_port) on a 16-bit random value."""
    start = ctx.nodeport_min if ctx.has(ModelFault.NAT_RANGE_OVERLAPS_NODEPORT) else ctx.nat_min
    end = NODEPORT_PORT_MAX_NAT
    wide = z3.ZeroExt(16, v)
    if ctx.cfg.version is CiliumVersion.V1_13:
        span = end - start
        return z3.Extract(15, 0, bv(start, 32) + z3.URem(wide, bv(span, 32)))
    span = end - start + 1
    return z3.Extract(15, 0, bv(start, 32) + z3.LShR(wide * bv(span, 32), 16))


def clamp_start(ctx: SCtx) -> int:
    """The lowest port the clamp can yield (fault-aware)."""
    return ctx.nodeport_min if ctx.has(ModelFault.NAT_RANGE_OVERLAPS_NODEPORT) else ctx.nat_min


def closes(pkt: SPkt) -> bool:
    """A TCP FIN or RST marks the entry closing (model.conntrack.on_packet)."""
    return pkt.proto is Proto.TCP and bool(pkt.flags & (TcpFlags.FIN | TcpFlags.RST))


def reopens(ctx: SCtx, e: SCt, pkt: SPkt) -> B | bool:
    """model.conntrack.reopens: a SYN on a closing entry (v1.19+: without ACK) starts afresh."""
    if not pkt.is_syn:
        return False
    if ctx.cfg.version is CiliumVersion.V1_20 and pkt.flags & TcpFlags.ACK:
        return False
    return e.closing


def touched(e: SCt, pkt: SPkt) -> SCt:
    """The entry after a hit (model.conntrack.on_packet) in the fields the encoding tracks."""
    return replace(e, closing=bor(e.closing, closes(pkt)))


def in_backends(ctx: SCtx, bid: BV, ids: Sequence[int]) -> B:
    """bid is one of ids."""
    return bor(*[eq(bid, bv(i, 16)) for i in ids])


def backend_ep(ctx: SCtx, bid: BV) -> SEp:
    """cilium_lb4_backends_v3[bid]."""
    ids = sorted(ctx.backends)
    out = ctx.backends[ids[-1]]
    for i in reversed(ids[:-1]):
        out = ctx.backends[i].ite(eq(bid, bv(i, 16)), out)
    return out


def key_of(pkt: SPkt) -> Key:
    """model.nodeport.ct_tuple(pkt, SERVICE) as CtMap arguments."""
    return (pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)


def lb_select(ctx: SCtx, st: SNode, svc: SSvc, pkt: SPkt) -> tuple[SNode, BV, B, B]:
    """lb4_local: CT_SERVICE hit keeps the backend, else a random slot (oracle pick)."""
    e = st.ct.get(pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)
    e = replace(e, valid=band(e.valid, bnot(reopens(ctx, e, pkt))))
    # a terminating backend (in the backend map, no longer in the slots) keeps non-SYNs
    hit = band(e.valid, not ctx.has(ModelFault.LB_IGNORES_CT_SERVICE), eq(e.rni, bv(svc.rni, 16)),
               in_backends(ctx, e.bid, list(ctx.backends)),
               bor(in_backends(ctx, e.bid, svc.slots), not pkt.is_syn))
    if not svc.slots:
        kept = st.ct.put(*key_of(pkt), touched(e, pkt)) if closes(pkt) else st.ct
        return SNode(ct=kept.ite(hit, st.ct), snat=st.snat), e.bid, hit, bnot(e.valid)
    pick = ctx.oracle.bv("pick", 16)
    ctx.oracle.picks.append(pick)
    ctx.oracle.constraints.append(in_backends(ctx, pick, svc.slots))
    new = SCt(valid=z3.BoolVal(True), bid=pick, rni=bv(svc.rni, 16),
              node_port=z3.BoolVal(False), dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False),
              nat_addr=bv(0, ctx.abits), nat_port=bv(0, 16), closing=z3.BoolVal(closes(pkt)))
    key = (pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)
    stored = st.ct.put(*key, new)
    kept = st.ct.put(*key, touched(e, pkt)) if closes(pkt) else st.ct
    st2 = SNode(ct=kept.ite(hit, stored), snat=st.snat)
    return st2, ite_bv(hit, e.bid, pick), True, bnot(e.valid)


def ct_egress(ctx: SCtx, st: SNode, svc: SSvc, client: SEp, backend: SEp, pkt: SPkt
              ) -> SNode:
    """The nodeport CT_EGRESS entry, recreated on a rev_nat_index mismatch (GH#10983)."""
    old = st.ct.get(*ek(client, backend))
    keep = band(old.valid, old.node_port, eq(old.rni, bv(svc.rni, 16)),
                bnot(reopens(ctx, old, pkt)))
    new = SCt(valid=z3.BoolVal(True), bid=bv(0, 16), rni=bv(svc.rni, 16),
              node_port=z3.BoolVal(True), dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False),
              nat_addr=bv(0, ctx.abits), nat_port=bv(0, 16))
    val = SCt(valid=z3.BoolVal(True), bid=ite_bv(keep, old.bid, new.bid),
              rni=ite_bv(keep, old.rni, new.rni), node_port=z3.BoolVal(True),
              dsr=ite_b(keep, old.dsr, False), nat_set=ite_b(keep, old.nat_set, False),
              nat_addr=ite_bv(keep, old.nat_addr, new.nat_addr),
              nat_port=ite_bv(keep, old.nat_port, new.nat_port),
              closing=bor(band(keep, old.closing), closes(pkt)))
    ct = st.ct.put(*ek(client, backend), val)
    return SNode(ct=ct, snat=st.snat)


def snat_nat(ctx: SCtx, snat: NatMap, client: SEp, backend: SEp, target: BV
             ) -> tuple[NatMap, SEp, B]:
    """snat_v4_nat_handle_mapping + snat_v4_new_mapping: (map, NAT endpoint, allocated)."""
    out_f, in_f = TupleFlags.OUT, TupleFlags.IN
    ex = snat.get(client.addr, backend.addr, client.port, backend.port, out_f)
    reuse = band(ex.valid, eq(ex.addr, target))
    # reuse path: restore a lost reverse entry
    rk = (backend.addr, target, backend.port, ex.port, in_f)
    rv = snat.get(*rk)
    healed = snat.put(*rk, SNat(valid=z3.BoolVal(True), addr=client.addr, port=client.port))
    reused_map = healed.ite(bnot(rv.valid), snat)
    # stale target: drop both, then allocate
    stale = band(ex.valid, ne(ex.addr, target))
    cleared = snat.delete(backend.addr, ex.addr, backend.port, ex.port, in_f).delete(
        client.addr, backend.addr, client.port, backend.port, out_f)
    base = cleared.ite(stale, snat)
    r0 = ctx.oracle.bv("rand", 16)
    p0 = ite_bv(in_range(client.port, ctx.nat_min, NODEPORT_PORT_MAX_NAT), client.port,
                clamp(ctx, r0))
    if ctx.has(ModelFault.SNAT_IGNORE_REVERSE_ENTRY):
        port: BV = p0
        ok: B = z3.BoolVal(True)
        alt = p0
        alt_ok = z3.BoolVal(True)
    else:
        free0 = bnot(base.get(backend.addr, target, backend.port, p0, in_f).valid)
        alt = ctx.oracle.bv("natport", 16)
        alt_ok = ctx.oracle.bool("natok")
        alt_free = bnot(base.get(backend.addr, target, backend.port, alt, in_f).valid)
        ctx.oracle.constraints.append(z3.Implies(
            alt_ok, z3.And(in_range(alt, clamp_start(ctx), NODEPORT_PORT_MAX_NAT), alt_free)))
        port = ite_bv(free0, p0, alt)
        ok = bor(free0, alt_ok)
        set_range(port, clamp_start(ctx), NODEPORT_PORT_MAX_NAT)
    ctx.oracle.nat_ports.append((r0, alt, alt_ok))
    alloc = base.put(backend.addr, target, backend.port, port, in_f,
                     SNat(valid=z3.BoolVal(True), addr=client.addr, port=client.port)).put(
        client.addr, backend.addr, client.port, backend.port, out_f,
        SNat(valid=z3.BoolVal(True), addr=target, port=port))
    alloc = alloc.ite(ok, base)
    final = reused_map.ite(reuse, alloc)
    nat = SEp(addr=target, port=ite_bv(reuse, ex.port, port))
    return final, nat, bor(reuse, ok)


def snat_rev_nat(ctx: SCtx, snat: NatMap, src: SEp, dst: SEp) -> tuple[NatMap, B, SEp]:
    """snat_v4_rev_nat: the original client for a reply to L:N, restoring a lost OUT entry."""
    e = snat.get(src.addr, dst.addr, src.port, dst.port, TupleFlags.IN)
    cport = dst.port if ctx.has(ModelFault.REVSNAT_WRONG_PORT) else e.port
    client = SEp(addr=e.addr, port=cport)
    fwd = snat.get(client.addr, src.addr, client.port, src.port, TupleFlags.OUT)
    restored = snat.put(client.addr, src.addr, client.port, src.port, TupleFlags.OUT,
                        SNat(valid=z3.BoolVal(True), addr=dst.addr, port=dst.port))
    snat2 = restored.ite(band(e.valid, bnot(fwd.valid)), snat)
    return snat2, e.valid, client


def carries_dsr(ctx: SCtx, pkt: SPkt, first: B) -> B:
    """_carries_dsr: TCP SYN (v1.13 IPv6: every packet), every UDP datagram."""
    if pkt.proto is not Proto.TCP:
        return bor(first, not ctx.has(ModelFault.DSR_UDP_FIRST_ONLY))
    if ctx.cfg.version is CiliumVersion.V1_13 and ctx.cfg.ipv6:
        return z3.BoolVal(True)
    return z3.BoolVal(pkt.is_syn and not ctx.has(ModelFault.DSR_NO_OPT_ON_SYN))


def dsr_forward(ctx: SCtx, st: SNode, pkt: SPkt, out: SPkt, first: B) -> SRes:
    """tail_nodeport_ipv4_dsr: attach the frontend and forward (Geneve: encapsulate)."""
    out = replace(out, dsr=carries_dsr(ctx, pkt, first), dsr_fe=pkt.dst)
    if ctx.cfg.dispatch.value == "geneve":
        found, tep = ctx.tep(out.dst.addr)
        out = replace(out, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep)
        return result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_NO_TUNNEL_ENDPOINT
                      ).ite(bnot(found), result(st, Verdict.FORWARD, Step.DSR, out))
    return result(st, Verdict.FORWARD, Step.DSR, out)


def nodeport_svc_lb(ctx: SCtx, st: SNode, svc: SSvc, pkt: SPkt) -> SRes:
    """nodeport_svc_lb4: lb4_local, DNAT, then local / DSR / SNAT forwarding."""
    if ctx.has(ModelFault.ETP_LOCAL_FORWARDS_REMOTE) and svc.etp_local:
        svc = replace(svc, slots=svc.all_backends)
    st, bid, found, first = lb_select(ctx, st, svc, pkt)
    if ctx.cfg.rejects:
        icmp = replace(pkt, src=SEp(addr=pkt.dst.addr, port=bv(0, 16)),
                       dst=SEp(addr=pkt.src.addr, port=bv(0, 16)), dsr=z3.BoolVal(False),
                       outer=z3.BoolVal(False))
        none = result(st, Verdict.REJECT, Step.REJECT, icmp, DropReason.DROP_NO_SERVICE, True)
    else:
        none = result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_NO_SERVICE)
    if not ctx.backends:
        return none
    backend = backend_ep(ctx, bid)
    client = pkt.src
    if ctx.has(ModelFault.DNAT_KEEPS_FRONTEND_PORT):
        backend = SEp(addr=backend.addr, port=pkt.dst.port)
    out = replace(pkt, dst=backend)
    local = ctx.is_local(backend.addr)
    st_eg = ct_egress(ctx, st, svc, client, backend, pkt)
    res_local = result(st_eg, Verdict.DELIVER, Step.DNAT, out)
    if svc.dsr or (ctx.has(ModelFault.HYBRID_UDP_AS_DSR) and pkt.proto is Proto.UDP):
        dout = out
        if ctx.has(ModelFault.DSR_ALSO_SNATS):
            dout = replace(out, src=SEp(addr=ctx.ip, port=client.port))
        remote = dsr_forward(ctx, st, pkt, dout, first)
    else:
        st2 = st_eg
        target = ctx.ip
        if ctx.cfg.tunneling and ctx.router is not None:
            found_r, _ = ctx.tep(backend.addr)
            target = ite_bv(found_r, ctx.router, ctx.ip)
        snat, nat, ok = snat_nat(ctx, st2.snat, client, backend, target)
        st2 = SNode(ct=st2.ct, snat=snat)
        sout = out if ctx.has(ModelFault.SNAT_SKIPPED) else replace(out, src=nat)
        fwd = result(st2, Verdict.FORWARD, Step.SNAT, sout)
        if ctx.cfg.tunneling:
            found_t, tep = ctx.tep(backend.addr)
            enc = replace(sout, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep)
            fwd = result(st2, Verdict.FORWARD, Step.SNAT, enc).ite(
                found_t, result(st2, Verdict.DROP, Step.DROP, pkt,
                                DropReason.DROP_NO_TUNNEL_ENDPOINT))
        remote = fwd.ite(ok, result(st2, Verdict.DROP, Step.DROP, pkt,
                                     DropReason.DROP_NAT_NO_MAPPING))
    if local is True or (not isinstance(local, bool) and z3.is_true(local)):
        return res_local.ite(found, none)
    return res_local.ite(local, remote).ite(found, none)


def dsr_extract(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> tuple[SNode, B, B, SEp]:
    """nodeport_extract_dsr_v4: (state, is DSR flow, frontend present, frontend)."""
    if pkt.proto is Proto.TCP and not pkt.is_syn:
        e = st.ct.get(*ek(pkt.src, pkt.dst))
        return st, band(e.valid, e.dsr), z3.BoolVal(False), ctx.zero_ep()
    kind = ctx.cfg.dsr_kind
    kind_ok = (kind is DsrKind.GENEVE_OPTION if hook is Hook.FROM_OVERLAY
               else kind is not DsrKind.GENEVE_OPTION)
    accepted = band(pkt.dsr, kind_ok)
    if pkt.is_syn:
        e = st.ct.get(*ek(pkt.src, pkt.dst))
        cleared = st.ct.put(*ek(pkt.src, pkt.dst), replace(e, dsr=z3.BoolVal(False)))
        st = SNode(ct=cleared.ite(band(bnot(accepted), e.valid, e.dsr), st.ct), snat=st.snat)
    return st, accepted, accepted, pkt.dsr_fe


def dsr_ingress(ctx: SCtx, st: SNode, pkt: SPkt, has_fe: B, fe: SEp) -> tuple[SNode, B]:
    """nodeport_dsr_ingress_ipv4: record the frontend; returns (state, DROP_INVALID)."""
    old = st.ct.get(*ek(pkt.src, pkt.dst))
    fresh = bor(bnot(old.valid), bnot(old.dsr))
    keep = band(bnot(fresh), bnot(band(pkt.is_syn, has_fe)))
    invalid = bor(bnot(has_fe), eq(fe.port, bv(0, 16)))
    if ctx.has(ModelFault.DSR_CT_NOT_RECORDED):
        return st, band(bnot(keep), invalid)
    in_ct = ctx.cfg.version is CiliumVersion.V1_20
    entry = SCt(valid=z3.BoolVal(True), bid=bv(0, 16), rni=bv(0, 16), closing=z3.BoolVal(
                closes(pkt)), node_port=z3.BoolVal(False), dsr=z3.BoolVal(True),
                nat_set=z3.BoolVal(in_ct), nat_addr=fe.addr if in_ct else bv(0, ctx.abits),
                nat_port=fe.port if in_ct else bv(0, 16))
    ct = st.ct.put(*ek(pkt.src, pkt.dst), entry)
    snat = st.snat
    if not in_ct:
        snat = snat.put(pkt.dst.addr, pkt.src.addr, pkt.dst.port, pkt.src.port, TupleFlags.OUT,
                        SNat(valid=z3.BoolVal(True), addr=fe.addr, port=fe.port))
    created = SNode(ct=ct, snat=snat)
    kept = st
    if closes(pkt):
        kept = SNode(ct=st.ct.put(*ek(pkt.src, pkt.dst), touched(old, pkt)), snat=st.snat)
    new_st = kept.ite(keep, st.ite(invalid, created))
    return new_st, band(bnot(keep), invalid)


def rev_dnat(ctx: SCtx, st: SNode, pkt: SPkt) -> tuple[SPkt, B]:
    """nodeport_rev_dnat_ipv4 / __lb4_rev_nat: source back to the frontend."""
    e = st.ct.get(*ek(pkt.dst, pkt.src))
    ok = band(e.valid, e.node_port, ne(e.rni, bv(0, 16)))
    src = pkt.src
    found: B = z3.BoolVal(False)
    for rni, fe in ctx.revnat.items():
        hit = band(ok, eq(e.rni, bv(rni, 16)))
        src = fe.ite(hit, src)
        found = bor(found, hit)
    return replace(pkt, src=src), found


def local_out(ctx: SCtx, st: SNode, pkt: SPkt, step: Step) -> SRes:
    """_local: pods get the packet, the node's own IP goes up the stack, else forward."""
    deliver = result(st, Verdict.DELIVER, step, pkt)
    stack = result(st, Verdict.TO_STACK, step, pkt, DropReason.PUNT_TO_STACK)
    fwd = result(st, Verdict.FORWARD, step, pkt)
    return deliver.ite(ctx.is_local(pkt.dst.addr), stack.ite(ctx.is_own(pkt.dst.addr), fwd))


def _is(c: B | bool, v: bool) -> bool:
    if isinstance(c, bool):
        return c is v
    return bool(z3.is_true(c)) if v else bool(z3.is_false(c))


def _no_service(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> SRes:
    """nodeport_lb4's branch for packets that match no service: DSR ingress, reverse SNAT."""
    def revsnat_or_local(st0: SNode) -> SRes:
        nat_case = band(in_range(pkt.dst.port, ctx.nat_min, NODEPORT_PORT_MAX_NAT),
                        ctx.is_own(pkt.dst.addr))
        plain = local_out(ctx, st0, pkt, Step.PASS)
        if _is(nat_case, False):
            return plain
        snat, found, client = snat_rev_nat(ctx, st0.snat, pkt.src, pkt.dst)
        st_n = SNode(ct=st0.ct, snat=snat)
        out, _ = rev_dnat(ctx, st_n, replace(pkt, dst=client))
        if closes(pkt):
            ce = st_n.ct.get(*ek(client, pkt.src))
            upd = st_n.ct.put(*ek(client, pkt.src), touched(ce, pkt))
            st_n = SNode(ct=upd.ite(band(found, ce.valid), st_n.ct), snat=st_n.snat)
        revsnat = result(st_n, Verdict.FORWARD, Step.REV_SNAT, out).ite(
            found, local_out(ctx, st_n, pkt, Step.PASS))
        return revsnat.ite(nat_case, plain)

    nosvc = revsnat_or_local(st)
    local = ctx.is_local(pkt.dst.addr)
    if ctx.cfg.mode.value != "snat" and not _is(local, False):
        st_d, is_dsr, has_fe, fe = dsr_extract(ctx, st, pkt, hook)
        st_i, invalid = dsr_ingress(ctx, st_d, pkt, has_fe, fe)
        ingress = result(st_i, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_INVALID).ite(
            invalid, result(st_i, Verdict.DELIVER, Step.DSR_INGRESS, pkt))
        dsr_path = ingress.ite(is_dsr, revsnat_or_local(st_d))
        nosvc = dsr_path.ite(local, nosvc)
    return nosvc


def nodeport_lb(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> SRes:
    """nodeport_lb4: service traffic to nodeport_svc_lb, the rest to DSR / reverse SNAT."""
    matches = []
    for svc in ctx.services:
        c = pkt.dst.eq(svc.fe)
        if _is(c, False):
            continue
        if _is(c, True):
            return nodeport_svc_lb(ctx, st, svc, pkt)
        matches.append((svc, c))
    res = _no_service(ctx, st, pkt, hook)
    for svc, c in reversed(matches):
        res = nodeport_svc_lb(ctx, st, svc, pkt).ite(c, res)
    return res


def from_netdev(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_from_netdev: encapsulated packets on the native device are not ours."""
    return result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_UNKNOWN_L4).ite(
        pkt.outer, nodeport_lb(ctx, st, pkt, Hook.FROM_NETDEV))


def from_overlay(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_from_overlay: the decapsulated inner packet."""
    inner = replace(pkt, outer=z3.BoolVal(False), osrc=bv(0, ctx.abits), odst=bv(0, ctx.abits))
    res = nodeport_lb(ctx, st, inner, Hook.FROM_OVERLAY)
    if ctx.cfg.dsr_kind is not DsrKind.GENEVE_OPTION:
        return res
    # the Geneve option lives in the tunnel header: decapsulation removes it
    off = z3.BoolVal(False)
    return replace(res, pkt=replace(res.pkt, dsr=off),
                   fwd=replace(res.fwd, dsr=off) if res.fwd is not None else None,
                   dlv=replace(res.dlv, dsr=off) if res.dlv is not None else None)


def to_netdev(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_to_netdev / nodeport_rev_dnat_fwd_ipv4: reverse DNAT for local and DSR backends."""
    e = st.ct.get(*ek(pkt.dst, pkt.src))
    from_ct = band(e.nat_set, ne(e.nat_port, bv(0, 16)))
    n = st.snat.get(pkt.src.addr, pkt.dst.addr, pkt.src.port, pkt.dst.port, TupleFlags.OUT)
    fe = SEp(addr=e.nat_addr, port=e.nat_port).ite(from_ct, SEp(addr=n.addr, port=n.port))
    have_fe = bor(from_ct, n.valid)
    dsr_hit = band(e.valid, e.dsr)
    dsr_xlate = band(dsr_hit, have_fe, not ctx.has(ModelFault.SKIP_REVNAT_DSR))
    rd_pkt, rd_changed = rev_dnat(ctx, st, pkt)
    local_xlate = band(bnot(dsr_hit), e.valid, not ctx.has(ModelFault.SKIP_REVNAT_LOCAL),
                       rd_changed)
    out = replace(pkt, src=fe).ite(dsr_xlate, replace(pkt, src=rd_pkt.src).ite(
        local_xlate, pkt))
    step = ite_int(bor(dsr_xlate, local_xlate), STEP[Step.REV_DNAT], STEP[Step.PASS])
    if closes(pkt):
        upd = st.ct.put(*ek(pkt.dst, pkt.src), touched(e, pkt))
        st = SNode(ct=upd.ite(e.valid, st.ct), snat=st.snat)
    if ctx.cfg.tunneling:
        found, tep = ctx.tep(out.dst.addr)
        enc = band(found, ne(tep, ctx.ip))
        out = replace(out, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep).ite(enc, out)
    return SRes(st=st, verdict=z3.IntVal(VERDICT[Verdict.FORWARD]), step=step,
                reason=z3.IntVal(NO_REASON), pkt=out, icmp=z3.BoolVal(False), fwd=out,
                dlv=None)


HookFn = Callable[[SCtx, SNode, SPkt], SRes]
