"""Unbounded properties by induction over the model's own code: initiation, consecution
(Inv and one step of model/ imply Inv'), and Inv implies Safety.

The step is the model's function itself (model.snat.snat_nat, snat_rev_nat,
model.lbselect.lb_select, ...) run by the explorer on an `OpenMap`: a map of arbitrary
contents. Each feasible path of the step ends in a write log; the invariant, a formula over
a map `View`, must hold after the log at a fresh witness key whenever it held before at
the witness, at every key the path read or wrote, and at those keys' partners (a finite
instantiation of the universally quantified hypothesis: weaker, so sound for proofs). A
satisfiable consecution query is a counterexample to induction (CTI), not a violation:
the property is then refuted only by a reachable run (prove.cross_checked explores the
model from empty maps and its counterexample wins), and otherwise reported unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import z3

from model.config import CiliumConfig
from model.faults import ModelFault
from model.maps import LruMap, NatEntry, NatTuple, TupleFlags
from model.snat import fwd_key, rev_key, snat_nat, snat_rev_nat
from model.values import Endpoint, Proto
from properties import zterms as zt
from properties.configs import Config
from properties.coreprops import Property
from properties.openmap import ADDR, ANY, BOOL, PORT, Family, OpenMap, Rest, Slot, View, written
from properties.results import PROVED, RAISED, UNKNOWN, VACUOUS, Query, Result
from properties.symexec import Explorer, Outcome, Status, SymRandom
from properties.symvalues import Input

OUT, IN = TupleFlags.OUT, TupleFlags.IN
NAT_SPEC = {"to_addr": ADDR, "to_port": PORT, "created": ANY, "needs_ct": BOOL}
CAPACITY = 1 << 16  # any: an open map never evicts
Keys = tuple[z3.ExprRef, ...]
# P-NAT-04's step: (config, map, pod, destination, address, protocol, faults) -> map after
MasqStep = Callable[[CiliumConfig, Any, Endpoint, Endpoint, Any, Proto,
                     frozenset[ModelFault]], Any]


class Timer:
    """Per-query timings of one property check."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    def check(self, name: str, *facts: Any, ms: int) -> z3.CheckSatResult:
        """A fresh solver on the facts, timed."""
        s = z3.Solver()
        s.set(timeout=ms)
        s.add(*facts)
        return self._timed(name, s.check)

    def under(self, name: str, o: Outcome[Any], *facts: z3.BoolRef) -> z3.CheckSatResult:
        """The path's condition with the facts, on the path's own (warm) solver, timed."""
        return self._timed(name, lambda: o.check(*facts))

    def _timed(self, name: str, query: Callable[[], z3.CheckSatResult]) -> z3.CheckSatResult:
        t0 = time.perf_counter()
        ans = query()
        self.queries.append(Query(name=name, seconds=time.perf_counter() - t0, answer=str(ans)))
        return ans


class Built:
    """Invariant instances built once per (tag, view, key): the view and the key's terms
    are kept alive, so the ids in the memo's key stay their own."""

    def __init__(self) -> None:
        self._got: dict[tuple[object, ...], tuple[z3.BoolRef, View, Keys]] = {}

    def get(self, tag: str, v: View, k: Keys, make: Callable[[], z3.BoolRef]) -> z3.BoolRef:
        """make(), or what it built for this tag, view and key before."""
        ident = (tag, id(v), *(t.get_id() for t in k))
        got = self._got.get(ident)
        if got is None:
            got = self._got[ident] = (make(), v, k)
        return got[0]


@attrs.frozen(kw_only=True)
class Step:
    """One transition of the induction: the model's code on an open map."""

    name: str
    inputs: tuple[Input, ...]
    run: Callable[[], tuple[OpenMap, bool]]  # the map after, and the safety claim held


@attrs.define
class Obligations:
    """The answers of one induction, and why it could not conclude if it could not."""

    failed: list[str] = attrs.Factory(list)
    unknown: list[str] = attrs.Factory(list)
    raised: str | None = None
    paths: int = 0


Invariant = Callable[[View], z3.BoolRef]  # the invariant at the witness keys
Instances = Callable[[View, View, Iterable[tuple[Family, Keys]]], list[z3.BoolRef]]


def consecution(step: Step, rest: Callable[[], Rest], goal: Invariant, hyp: Instances,
                timer: Timer, ms: int, ob: Obligations) -> None:
    """Every feasible path of the step keeps the invariant (or its name goes to `failed`)."""
    ex = Explorer(timeout_ms=ms, abstract=6)
    r = rest()  # shared by every path: its terms are built once
    pre = View(r)

    def run() -> tuple[OpenMap, bool]:
        r.reads.clear()
        return step.run()

    out: Iterable[Outcome[tuple[OpenMap, bool]]] = ex.run(run, step.inputs)
    for o in out:
        ob.paths += 1
        if o.status is Status.RAISED:
            ob.raised = f"{step.name}: the model raised {o.error}"
            return
        if o.status is Status.UNKNOWN or o.value is None:
            ob.unknown.append(step.name)
            return
        m, ok = o.value
        post = View(r, m.log)
        # the hypothesis at a key only read is already in the path condition (on_read)
        reads = [] if r.on_read is not None else r.reads
        keys = _unique([*reads, *((Family.of(k), Family.of(k).terms(k)) for k, _ in m.log)])
        h = hyp(pre, post, keys)
        ans = timer.under(f"consecution-{step.name}", o, *h, z3.Not(goal(post)))
        if ok is not True:  # the step broke the safety claim on this path: reachable?
            bad = timer.under(f"safety-{step.name}", o, *h)
            if bad != z3.unsat:
                (ob.unknown if bad == z3.unknown else ob.failed).append(f"safety-{step.name}")
                return
        if ans == z3.unknown:
            ob.unknown.append(step.name)
            return
        if ans == z3.sat:
            ob.failed.append(step.name)
            return
    if ex.truncated:
        ob.unknown.append(step.name)


def _unique(keys: list[tuple[Family, Keys]]) -> list[tuple[Family, Keys]]:
    seen: dict[tuple[Family, tuple[int, ...]], tuple[Family, Keys]] = {}
    for fam, k in keys:
        seen.setdefault((fam, tuple(t.get_id() for t in k)), (fam, k))
    return list(seen.values())


def verdict(ob: Obligations, safety: Any, vacuity: Any, common: dict[str, Any], t0: float,
            timer: Timer) -> Result:
    """Proved only when every obligation is unsat and the premise is reachable."""
    def res(result: str, note: str) -> Result:
        return Result(result=result, seconds=time.perf_counter() - t0, note=note,
                      queries=tuple(timer.queries), **common)
    if ob.raised:
        return res(RAISED, ob.raised)
    failed = ob.failed + (["safety"] if safety == z3.sat else [])
    if failed:
        return res(UNKNOWN, f"induction failed ({', '.join(failed)}): a counterexample to "
                            "induction")
    if ob.unknown or safety == z3.unknown or vacuity == z3.unknown:
        return res(UNKNOWN, f"solver timeout ({', '.join(ob.unknown) or 'safety/vacuity'})")
    if vacuity == z3.unsat:
        return res(VACUOUS, "no state with a live entry satisfies the invariant")
    return res(PROVED, f"{ob.paths} paths of the model's code")


# ----------------------------------------------------------------------------- P-NAT-02

def _nat_fams(proto: Proto) -> tuple[Family, Family]:
    return (Family(NatTuple, (("nexthdr", proto), ("flags", OUT))),
            Family(NatTuple, (("nexthdr", proto), ("flags", IN))))


@attrs.frozen
class NatInv:
    """P-NAT-02's invariant: forward and reverse entries of node L pair up in the NAT range."""

    node: z3.ExprRef
    lo: int
    hi: int
    out: Family
    inn: Family
    built: Built = attrs.field(factory=Built, eq=False)

    def in_range(self, p: z3.ExprRef) -> z3.BoolRef:
        """A port in the NAT range."""
        return zt.within(p, self.lo, self.hi)

    def fwd(self, v: View, k: Keys) -> z3.BoolRef:
        """A forward entry {c, b, c_port, b_port} maps to L:N and {b, L, b_port, N} to c."""
        return self.built.get("fwd", v, k, lambda: self._fwd(v, k))

    def rev(self, v: View, k: Keys) -> z3.BoolRef:
        """A reverse entry {b, L, b_port, N} lies in the NAT range and its forward maps back."""
        return self.built.get("rev", v, k, lambda: self._rev(v, k))

    def _fwd(self, v: View, k: Keys) -> z3.BoolRef:
        c, b, cp, bp = k
        f = v.get(self.out, k)
        r = v.get(self.inn, (b, self.node, bp, f.to_port))
        return zt.implies(f.present, zt.conj([zt.eq(f.to_addr, self.node),
                                              self.in_range(f.to_port), r.present,
                                              zt.eq(r.to_addr, c), zt.eq(r.to_port, cp)]))

    def _rev(self, v: View, k: Keys) -> z3.BoolRef:
        b, bp, n = k
        r = v.get(self.inn, (b, self.node, bp, n))
        f = v.get(self.out, (r.to_addr, b, r.to_port, bp))
        return zt.implies(r.present, zt.conj([self.in_range(n), f.present,
                                              zt.eq(f.to_addr, self.node),
                                              zt.eq(f.to_port, n)]))

    def fwd_partner(self, v: View, k: Keys) -> Keys:
        """The reverse key a forward entry names."""
        return (k[1], k[3], v.get(self.out, k).to_port)

    def rev_partner(self, v: View, k: Keys) -> Keys:
        """The forward key a reverse entry names."""
        r: Slot = v.get(self.inn, (k[0], self.node, k[1], k[2]))
        return (r.to_addr, k[0], r.to_port, k[1])

    def instances(self, pre: View, post: View, keys: Iterable[tuple[Family, Keys]]
                  ) -> list[z3.BoolRef]:
        """Inv before, at every given key and at its partners before and after."""
        out = []
        for fam, k in keys:
            if fam == self.out:
                out.append(self.fwd(pre, k))
                out += [self.rev(pre, self.fwd_partner(v, k)) for v in (pre, post)]
            elif fam == self.inn:
                rk = (k[0], k[2], k[3])
                out.append(self.rev(pre, rk))
                out += [self.fwd(pre, self.rev_partner(v, rk)) for v in (pre, post)]
        return out


def nat02(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int,
          masq: MasqStep | None = None) -> Result:
    """P-NAT-02 by induction over model.snat's allocation, reverse lookup and pair purge;
    P-NAT-04 adds a masquerade step (properties/masqcheck.py) to the same address."""
    t0 = time.perf_counter()
    timer = Timer()
    ccfg = cfg.cilium()
    bits = 128 if cfg.ipv6 else 32
    amax = (1 << bits) - 1
    proto = cfg.proto
    out_f, in_f = _nat_fams(proto)
    node = Input("L", 0, amax)
    inv = NatInv(node.var.e, ccfg.nat_min, ccfg.nat_max_port, out_f, in_f)
    c, b = Input("c", 0, amax), Input("b", 0, amax)
    cp, bp, n = Input("c.port", 0, 0xFFFF), Input("b.port", 0, 0xFFFF), Input("n", 0, 0xFFFF)
    state: list[Any] = []

    def rest() -> Rest:
        r = Rest("snat", NatEntry, NAT_SPEC, bits)
        pre = View(r)
        # the hypothesis at each key read is assumed on the spot: paths that only an
        # invariant-breaking state takes (a stale target address) end at once
        r.on_read = lambda fam, k: zt.conj(inv.instances(pre, pre, [(fam, k)]))
        state[:] = [LruMap(capacity=CAPACITY, entries=OpenMap(r))]
        return r

    def client() -> Endpoint:
        return Endpoint(addr=c.var, port=cp.var)  # type: ignore[arg-type]

    def backend() -> Endpoint:
        return Endpoint(addr=b.var, port=bp.var)  # type: ignore[arg-type]

    def alloc() -> tuple[OpenMap, bool]:
        res = snat_nat(ccfg, state[0], client(), backend(), proto, node.var,  # type: ignore[arg-type]
                       now=1, salt="node1", rand=SymRandom(), faults=faults)
        return written(res.snat), True

    def masq_alloc() -> tuple[OpenMap, bool]:
        assert masq is not None
        return written(masq(ccfg, state[0], client(), backend(), node.var, proto, faults)), True

    def reply() -> tuple[OpenMap, bool]:
        m, _ = snat_rev_nat(state[0], backend(),
                            Endpoint(addr=node.var, port=n.var),  # type: ignore[arg-type]
                            proto, faults, version=ccfg.version, now=1)
        return written(m), True

    def purge() -> tuple[OpenMap, bool]:
        """The CT GC's purge of a dead flow: both entries of its pair go."""
        m = state[0]
        okey = fwd_key(client(), backend(), proto)
        f = m.get(okey)
        if f is not None:
            nat = Endpoint(addr=f.to_addr, port=f.to_port)
            m = m.delete(rev_key(backend(), nat, proto)).delete(okey)
        return written(m), True

    wf: Keys = tuple(z3.Int(f"w.{x}") for x in ("c", "b", "cp", "bp"))
    wr: Keys = tuple(z3.Int(f"w'.{x}") for x in ("b", "bp", "n"))

    def goal(v: View) -> z3.BoolRef:
        return zt.conj([inv.fwd(v, wf), inv.rev(v, wr)])

    def hyp(pre: View, post: View, keys: Iterable[tuple[Family, Keys]]) -> list[z3.BoolRef]:
        base = [(out_f, wf), (in_f, (wr[0], node.var.e, wr[1], wr[2])), *keys]
        return inv.instances(pre, post, base)

    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "induction",
              "bound": "induction (unbounded; maps arbitrary, no LRU eviction)",
              "faults": faults}
    ob = Obligations()
    empty = View(Rest("snat0", NatEntry, NAT_SPEC, bits), empty=True)
    if timer.check("initiation", z3.Not(goal(empty)), ms=ms) != z3.unsat:
        ob.failed.append("initiation")
    ports = (cp, bp)
    # P-NAT-04 (masq): the NodePort allocation's step is P-NAT-02's, the masquerade's here
    first = Step(name="masq" if masq else "alloc", inputs=(node, c, b, *ports),
                 run=masq_alloc if masq else alloc)
    for step in (first, Step(name="reply", inputs=(node, b, bp, n), run=reply),
                 Step(name="purge", inputs=(node, c, b, *ports), run=purge)):
        consecution(step, rest, goal, hyp, timer, ms, ob)
        if ob.raised:
            break
    # Inv implies safety: injective, and never inside the NodePort range
    r = Rest("snat", NatEntry, NAT_SPEC, bits)
    v = View(r)
    k1 = tuple(z3.Int(f"k1.{x}") for x in ("c", "b", "cp", "bp"))
    k2 = (z3.Int("k2.c"), k1[1], z3.Int("k2.cp"), k1[3])
    f1, f2 = v.get(out_f, k1), v.get(out_f, k2)
    h = inv.instances(v, v, [(out_f, k1), (out_f, k2)])
    unsafe = z3.Or(z3.And(f1.present, f2.present, z3.Or(k1[0] != k2[0], k1[2] != k2[2]),
                          f1.to_addr == f2.to_addr, f1.to_port == f2.to_port),
                   z3.And(f1.present, f1.to_port >= ccfg.nodeport_min,
                          f1.to_port <= ccfg.nodeport_max))
    safety = timer.check("safety", *h, unsafe, ms=ms)
    vac = timer.check("vacuity", *h, f1.present, ms=ms)
    return verdict(ob, safety, vac, common, t0, timer)


def check_induction(prop: Property, cfg: Config, faults: frozenset[ModelFault],
                    ms: int) -> Result:
    """Dispatch an induction property."""
    if prop.id == "P-NAT-02":
        return nat02(prop, cfg, faults, ms)
    if prop.id == "P-NAT-04":
        from properties.masqcheck import nat04
        return nat04(prop, cfg, faults, ms)
    if prop.id in ("P-CT-01", "P-CT-02"):
        from properties.ctinduction import ct_steps  # it builds on this module
        return ct_steps(prop, cfg, faults, ms, draining=prop.id == "P-CT-02")
    raise ValueError(f"no induction for {prop.id}")
