"""Unbounded properties by induction: initiation, consecution (Inv, T => Inv'), Inv => Safety.

Maps are arbitrary (uninterpreted initial contents); the universally quantified invariants
are instantiated at the witness keys and at every key the transition touches, which is
sound for proofs (a weaker hypothesis). A failed consecution is only a counterexample to
induction: the property is then refuted solely by a reachable run from empty maps,
decoded into a scenario and replayed through model/.
"""

from __future__ import annotations

import time
from typing import Any

import z3

from model.config import NODEPORT_MAX_DEFAULT, NODEPORT_MIN_DEFAULT
from model.faults import ModelFault
from model.maps import TupleFlags
from properties.catalogue import Property
from properties.configs import Config
from properties.decode import FlowDoc, Replayed, ScenarioValues, ip_text, nice, num, replay
from properties.prove import (
    COUNTEREXAMPLE,
    DRIFT,
    PROVED,
    UNKNOWN,
    VACUOUS,
    Result,
    Timer,
    counterexample,
    finish,
)
from properties.symstate import CtMap, KeyLog, Oracle, SCt, SCtx, SEp
from properties.terms import BV, B, band, bnot, bor, bv, eq, ite_bv, set_distinct

OUT, IN = TupleFlags.OUT, TupleFlags.IN
NAT_MIN = NODEPORT_MAX_DEFAULT + 1


def _ctx(cfg: Config, faults: frozenset[ModelFault], ip: BV, ab: int, oracle: Oracle) -> SCtx:
    return SCtx(cfg=cfg, index=0, ip=ip, services=(), revnat={}, backends={}, local_eps=(),
                ipcache=(), faults=faults, oracle=oracle, abits=ab,
                nodeport_min=NODEPORT_MIN_DEFAULT, nodeport_max=NODEPORT_MAX_DEFAULT)


# ----------------------------------------------------------------------------- P-CT-01

def ct01(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int) -> Result:
    """P-CT-01: CT_SERVICE entries name live backends of their service and are followed."""
    t0 = time.perf_counter()
    timer = Timer()
    ab = 128 if cfg.ipv6 else 32
    set_distinct([])
    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "induction",
              "bound": "induction (unbounded; any backends, maps arbitrary)", "faults": faults}
    fe = SEp(addr=z3.BitVec("F", ab), port=z3.BitVec("F.port", 16))
    rni = bv(1, 16)
    slot = z3.Function("slot", z3.BitVecSort(16), z3.BoolSort())  # backend slot of F's service
    live = z3.Function("live", z3.BitVecSort(16), z3.BoolSort())  # in cilium_lb4_backends

    def key(c: BV, cp: BV) -> tuple[BV, BV, BV, BV, int]:
        return (fe.addr, c, cp, fe.port, TupleFlags.SERVICE)

    def inv(m: CtMap, c: BV, cp: BV) -> B:
        e = m.get(*key(c, cp))
        return z3.Implies(band(e.valid, eq(e.rni, rni)), band(slot(e.bid), live(e.bid)))

    def step(m: CtMap, c: BV, cp: BV, oracle: Oracle) -> tuple[CtMap, BV]:
        """lb4_local's CT_SERVICE part (model.nodeport.lb_select) for a packet of flow c:cp."""
        e = m.get(*key(c, cp))
        hit = band(e.valid, ModelFault.LB_IGNORES_CT_SERVICE not in faults, eq(e.rni, rni),
                   live(e.bid), slot(e.bid))
        pick = oracle.bv("pick", 16)
        oracle.constraints.append(band(slot(pick), live(pick)))
        new = SCt(valid=z3.BoolVal(True), bid=pick, rni=rni, node_port=z3.BoolVal(False),
                  dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False), nat_addr=bv(0, ab),
                  nat_port=bv(0, 16))
        return m.put(*key(c, cp), new).ite(bnot(hit), m), ite_bv(hit, e.bid, pick)

    wc, wcp = z3.BitVec("w.c", ab), z3.BitVec("w.cp", 16)
    tc, tcp = z3.BitVec("t.c", ab), z3.BitVec("t.cp", 16)
    answers = []
    empty = CtMap.fresh("init", ab, KeyLog(), empty=True)
    answers.append(("initiation", _query(timer, ms, "initiation", z3.Not(inv(empty, wc, wcp)))))
    m = CtMap.fresh("S", ab, KeyLog(), empty=False)
    oracle = Oracle("o.")
    m2, chosen = step(m, tc, tcp, oracle)
    hyp = [inv(m, wc, wcp), inv(m, tc, tcp), *oracle.constraints]
    answers.append(("consecution", _query(timer, ms, "consecution", *hyp,
                                          z3.Not(inv(m2, wc, wcp)))))
    ew, ew2 = m.get(*key(wc, wcp)), m2.get(*key(wc, wcp))
    premise = band(ew.valid, eq(ew.rni, rni), live(ew.bid))
    same_flow = band(eq(tc, wc), eq(tcp, wcp))
    stick = band(ew2.valid, eq(ew2.bid, ew.bid),
                 z3.Implies(same_flow, chosen == ew.bid))
    answers.append(("safety", _query(timer, ms, "safety", *hyp, premise, z3.Not(stick))))
    vac = _query(timer, ms, "vacuity", *hyp, premise, same_flow)
    verdict = _verdict(answers, vac, common, t0, timer)
    if isinstance(verdict, Result):
        return verdict
    failed = verdict
    res, rep, msg = counterexample(prop, cfg, faults, timer, ms)
    return finish(common, res, rep, f"induction failed ({', '.join(failed)}); {msg}", t0,
                  timer)


# ----------------------------------------------------------------------------- P-CT-02

Fn = Any  # a z3 function BitVec(16) -> Bool: a set of backend IDs


def _bset(name: str) -> Fn:
    return z3.Function(name, z3.BitVecSort(16), z3.BoolSort())


def ct02(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int) -> Result:
    """P-CT-02: SYNs never reach a terminating backend, established flows drain to it.

    State: one node's CT_SERVICE map (arbitrary) and the backend sets as arbitrary ID
    sets: F's slots, other services' slots, the backend map, terminating from F / from
    other services. Transitions: a packet (lb4_local) and an endpoint change of F
    (model.network.reprogram / AgentBackends.apply). The invariant is the agent's
    bookkeeping: slotted backends are live and not terminating, terminating ones live.
    """
    t0 = time.perf_counter()
    timer = Timer()
    ab = 128 if cfg.ipv6 else 32
    set_distinct([])
    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "induction",
              "bound": "induction (unbounded; any backends and endpoint changes, maps "
                       "arbitrary)", "faults": faults}
    fe = SEp(addr=z3.BitVec("F", ab), port=z3.BitVec("F.port", 16))
    rni = bv(1, 16)
    slot, oth, live = _bset("slot"), _bset("oth"), _bset("live")
    tus, toth = _bset("term.F"), _bset("term.other")

    def term(b: BV) -> B:
        return z3.Or(tus(b), toth(b))

    def inv(b: BV) -> B:
        return band(z3.Implies(z3.Or(slot(b), oth(b)), band(live(b), bnot(term(b)))),
                    z3.Implies(term(b), live(b)))

    def key(c: BV, cp: BV) -> tuple[BV, BV, BV, BV, int]:
        return (fe.addr, c, cp, fe.port, TupleFlags.SERVICE)

    def step(m: CtMap, c: BV, cp: BV, syn: B, reopen: B, oracle: Oracle
             ) -> tuple[CtMap, BV]:
        """lb4_local for one packet of flow c:cp (model.nodeport.lb_select)."""
        e = m.get(*key(c, cp))
        hit = band(e.valid, bnot(band(syn, reopen)),
                   ModelFault.LB_IGNORES_CT_SERVICE not in faults, eq(e.rni, rni),
                   live(e.bid),
                   bor(bnot(term(e.bid)), bnot(syn),
                       ModelFault.TERMINATING_BACKEND_TAKES_SYN in faults))
        pick = oracle.bv("pick", 16)
        oracle.constraints.append(slot(pick))
        new = SCt(valid=z3.BoolVal(True), bid=pick, rni=rni, node_port=z3.BoolVal(False),
                  dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False), nat_addr=bv(0, ab),
                  nat_port=bv(0, 16))
        return m.put(*key(c, cp), new).ite(bnot(hit), m), ite_bv(hit, e.bid, pick)

    # an endpoint change of F: new slots, the dropped pods listed as terminating
    slot2, listed, keep = _bset("slot'"), _bset("listed"), _bset("keep")

    def held2(b: BV) -> B:
        return z3.Or(slot2(b), oth(b))

    def tus2(b: BV) -> B:
        return band(bnot(held2(b)), z3.Or(slot(b), tus(b)), listed(b))

    def toth2(b: BV) -> B:
        return band(toth(b), bnot(held2(b)))

    def live2(b: BV) -> B:
        return bor(held2(b), tus2(b), toth2(b),
                   band(live(b), keep(b), bnot(slot(b)), bnot(tus(b))))

    def inv2(b: BV) -> B:
        return band(z3.Implies(held2(b), band(live2(b), bnot(z3.Or(tus2(b), toth2(b))))),
                    z3.Implies(z3.Or(tus2(b), toth2(b)), live2(b)))

    wb = z3.BitVec("w.b", 16)
    tc, tcp = z3.BitVec("t.c", ab), z3.BitVec("t.cp", 16)
    syn, reopen = z3.Bool("t.syn"), z3.Bool("t.reopen")
    answers = []
    # initiation: the agent's first programming (slots, nothing terminating) satisfies Inv
    answers.append(("initiation", _query(
        timer, ms, "initiation",
        z3.ForAll([wb], z3.And(z3.Not(tus(wb)), z3.Not(toth(wb)),
                               live(wb) == z3.Or(slot(wb), oth(wb)))),
        z3.Not(inv(wb)))))
    # consecution: a packet leaves the backend sets alone; an endpoint change keeps Inv
    answers.append(("consecution", _query(timer, ms, "consecution", inv(wb), z3.Not(inv2(wb)))))
    # safety, on one packet from any Inv state and any CT map
    m = CtMap.fresh("S", ab, KeyLog(), empty=False)
    oracle = Oracle("o.")
    m2, chosen = step(m, tc, tcp, syn, reopen, oracle)
    e, e2 = m.get(*key(tc, tcp)), m2.get(*key(tc, tcp))
    hyp = [inv(chosen), inv(e.bid), *oracle.constraints]
    drain = band(e.valid, eq(e.rni, rni), term(e.bid), bnot(syn))
    unsafe = z3.Or(band(syn, term(chosen)),
                   band(drain, z3.Or(chosen != e.bid, bnot(e2.valid), e2.bid != e.bid)))
    answers.append(("safety", _query(timer, ms, "safety", *hyp, unsafe)))
    # vacuity: a draining connection and a SYN beside a terminating backend both exist
    vac = _query(timer, ms, "vacuity", *hyp, drain)
    if vac == z3.sat:
        vac = _query(timer, ms, "vacuity-syn", *hyp, syn, e.valid, eq(e.rni, rni), term(e.bid))
    verdict = _verdict(answers, vac, common, t0, timer)
    if isinstance(verdict, Result):
        return verdict
    note = f"induction failed ({', '.join(verdict)}); "
    res, rep, msg = _ct02_reachable(prop, cfg, faults, timer, ms, step)
    return finish(common, res, rep, note + msg, t0, timer)


def _ct02_reachable(prop: Property, cfg: Config, faults: frozenset[ModelFault],
                    timer: Timer, ms: int, step: Any) -> tuple[str, Replayed | None, str]:
    """From empty maps: a connection opens (backends 1, 2), F's endpoints change so its
    backend turns terminating, then a SYN and an ACK of that connection follow."""
    ab = 128 if cfg.ipv6 else 32
    set_distinct([])
    node, node2 = z3.BitVec("cx.L", ab), z3.BitVec("cx.R", ab)
    pods = (z3.BitVec("cx.p0", ab), z3.BitVec("cx.p1", ab))
    c, cp, tp = z3.BitVec("cx.c", ab), z3.BitVec("cx.cp", 16), z3.BitVec("cx.tp", 16)
    oracle = Oracle("cx.o.")
    m = CtMap.fresh("cx", ab, KeyLog(), empty=True)
    m, first = step(m, c, cp, z3.BoolVal(True), z3.BoolVal(False), oracle)
    other = ite_bv(first == 1, bv(2, 16), bv(1, 16))
    # the endpoint change: the first backend turns terminating, only the other is slotted
    syn2 = z3.Bool("cx.syn2")
    _, chosen = step(m, c, cp, syn2, z3.BoolVal(False), oracle)
    terminating = chosen == first
    slot, tus = _bset("slot"), _bset("term.F")
    live, toth = _bset("live"), _bset("term.other")
    b = z3.BitVec("cx.b", 16)
    s = z3.Solver()
    s.set(timeout=ms)
    # both steps read the same backend sets, pinned here to the post-change view; the
    # first pick (oracle constraint 0, slot(pick)) is replaced by the pre-change slots 1, 2
    s.add(*oracle.constraints[1:], z3.Or(first == 1, first == 2),
          z3.ForAll([b], z3.And(slot(b) == (b == other), tus(b) == (b == first),
                                z3.Not(toth(b)), live(b) == z3.Or(b == 1, b == 2))),
          z3.Or(band(syn2, terminating), band(bnot(syn2), bnot(terminating))),
          z3.Distinct(node, node2, pods[0], pods[1], c), cp != 0, tp != 0)
    s.push()
    s.add(nice(cfg, "node", node), nice(cfg, "node", node2), nice(cfg, "pod2", pods[0]),
          nice(cfg, "pod2", pods[1]), nice(cfg, "client", c), tp == 8080, z3.UGE(cp, 1024))
    miss = _reachable(s, timer, "across one endpoint change")
    if miss is not None:
        return UNKNOWN, None, miss
    mdl = s.model()
    was = num(mdl, first) - 1
    sport = num(mdl, cp)
    flows = (FlowDoc(client=0, sport=sport, packets=1, backend=was),
             FlowDoc(client=0, sport=sport, packets=1, backend=None,
                     resume=not z3.is_true(mdl.eval(syn2, model_completion=True)),
                     set_backends=(1 - was,), terminating=(was,)))
    vals = ScenarioValues(nodes=(ip_text(cfg, mdl, node), ip_text(cfg, mdl, node2)),
                          pods=(ip_text(cfg, mdl, pods[0]), ip_text(cfg, mdl, pods[1])),
                          clients=(ip_text(cfg, mdl, c),), target_port=num(mdl, tp),
                          node_port=30080, port=None, vip=None, other_node_port=None,
                          flows=flows)
    rep = replay(prop.id, cfg, vals, faults)
    if rep is None:
        return DRIFT, None, "z3 found a violation the concrete model does not show"
    return COUNTEREXAMPLE, rep, rep.finding.message


def _query(timer: Timer, ms: int, name: str, *facts: Any) -> Any:
    """One proof obligation: a fresh solver with the timeout, the facts, a timed check."""
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*facts)
    return timer.check(s, name)


def _reachable(s: z3.Solver, timer: Timer, bound: str) -> str | None:
    """Search a concrete witness, first with readable values (the pushed frame), then any;
    None when one is found (s holds the model), else why not."""
    ans = timer.check(s, "reachable")
    if ans != z3.sat:
        s.pop()
        ans = timer.check(s, "reachable-any")
    if ans == z3.unknown:
        return "timeout searching a reachable counterexample"
    if ans == z3.unsat:
        return f"no reachable violation {bound}"
    return None


def _verdict(answers: list[tuple[str, Any]], vac: Any, common: dict[str, Any], t0: float,
             timer: Timer) -> Result | list[str]:
    """All obligations unsat and the premise reachable: proved (else vacuous); any unknown:
    unknown, never proved; otherwise the names of the failed obligations."""
    if any(a == z3.unknown for _, a in answers) or vac == z3.unknown:
        return Result(result=UNKNOWN, seconds=time.perf_counter() - t0, note="solver timeout",
                      queries=tuple(timer.queries), **common)
    failed = [name for name, a in answers if a == z3.sat]
    if not failed:
        res = PROVED if vac == z3.sat else VACUOUS
        return Result(result=res, seconds=time.perf_counter() - t0,
                      queries=tuple(timer.queries), **common)
    return failed


def check_induction(prop: Property, cfg: Config, faults: frozenset[ModelFault],
                    ms: int) -> Result:
    """Dispatch an induction property."""
    if prop.id == "P-NAT-02":  # over the model's own code (properties/stepinduction.py)
        from properties.stepinduction import nat02
        return nat02(prop, cfg, faults, ms)
    if prop.id == "P-CT-01":
        return ct01(prop, cfg, faults, ms)
    if prop.id == "P-CT-02":
        return ct02(prop, cfg, faults, ms)
    raise ValueError(f"no induction encoding for {prop.id}")


__all__ = ["check_induction"]
