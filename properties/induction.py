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

from model.config import NODEPORT_MAX_DEFAULT, NODEPORT_MIN_DEFAULT, NODEPORT_PORT_MAX_NAT
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
from properties.symbolic import in_range, snat_nat, snat_rev_nat
from properties.symstate import CtMap, KeyLog, NatMap, Oracle, SCt, SCtx, SEp
from properties.terms import BV, B, band, bnot, bv, eq, ite_bv, set_distinct

OUT, IN = TupleFlags.OUT, TupleFlags.IN
NAT_MIN = NODEPORT_MAX_DEFAULT + 1


def _ctx(cfg: Config, faults: frozenset[ModelFault], ip: BV, ab: int, oracle: Oracle) -> SCtx:
    return SCtx(cfg=cfg, index=0, ip=ip, services=(), revnat={}, backends={}, local_eps=(),
                ipcache=(), faults=faults, oracle=oracle, abits=ab,
                nodeport_min=NODEPORT_MIN_DEFAULT, nodeport_max=NODEPORT_MAX_DEFAULT)


# ----------------------------------------------------------------------------- P-NAT-02

def inv_fwd(m: NatMap, node: BV, c: BV, cp: BV, b: BV, bp: BV) -> B:
    """A forward entry maps into the NAT range and its reverse entry points back."""
    f = m.get(c, b, cp, bp, OUT)
    r = m.get(b, node, bp, f.port, IN)
    return z3.Implies(f.valid, band(eq(f.addr, node), in_range(f.port, NAT_MIN,
                                                                  NODEPORT_PORT_MAX_NAT),
                                    r.valid, eq(r.addr, c), eq(r.port, cp)))


def inv_rev(m: NatMap, node: BV, b: BV, bp: BV, n: BV) -> B:
    """A reverse entry sits in the NAT range and its forward entry points back."""
    r = m.get(b, node, bp, n, IN)
    f = m.get(r.addr, b, r.port, bp, OUT)
    return z3.Implies(r.valid, band(in_range(n, NAT_MIN, NODEPORT_PORT_MAX_NAT), f.valid,
                                    eq(f.addr, node), eq(f.port, n)))


def _nat_vars(pfx: str, ab: int) -> tuple[BV, BV, BV, BV]:
    return (z3.BitVec(f"{pfx}.c", ab), z3.BitVec(f"{pfx}.cp", 16), z3.BitVec(f"{pfx}.b", ab),
            z3.BitVec(f"{pfx}.bp", 16))


def _nat_instances(m: NatMap, node: BV, fwd: list[tuple[BV, BV, BV, BV]],
                   rev: list[tuple[BV, BV, BV]]) -> list[B]:
    out = [inv_fwd(m, node, *t) for t in fwd]
    out += [inv_rev(m, node, *t) for t in rev]
    return out


def nat02(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int) -> Result:
    """P-NAT-02: SNAT forward/reverse bijection inside the NAT range, by induction."""
    t0 = time.perf_counter()
    timer = Timer()
    ab = 128 if cfg.ipv6 else 32
    set_distinct([])
    node = z3.BitVec("L", ab)
    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "induction",
              "bound": "induction (unbounded; maps arbitrary)", "faults": faults}
    wf = _nat_vars("w", ab)
    wr = (z3.BitVec("w'.b", ab), z3.BitVec("w'.bp", 16), z3.BitVec("w'.n", 16))
    answers = []
    # initiation: the empty map satisfies Inv at every witness
    empty = NatMap.fresh("init", ab, KeyLog(), empty=True)
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(z3.Not(band(inv_fwd(empty, node, *wf), inv_rev(empty, node, *wr))))
    answers.append(("initiation", timer.check(s, "initiation")))
    # consecution, one query per transition kind
    for kind in ("alloc", "revnat", "delete"):
        log = KeyLog()
        m = NatMap.fresh("S", ab, log, empty=False)
        oracle = Oracle("o.")
        ctx = _ctx(cfg, faults, node, ab, oracle)
        c, cp, b, bp = _nat_vars("t", ab)
        n = z3.BitVec("t.n", 16)
        if kind == "alloc":
            m2, nat, _ = snat_nat(ctx, m, SEp(addr=c, port=cp), SEp(addr=b, port=bp), node)
            extra_rev = [(b, bp, nat.port), (b, bp, m.get(c, b, cp, bp, OUT).port)]
            extra_fwd = [(c, cp, b, bp)]
            pre: list[B] = []
        elif kind == "revnat":
            m2, _, _ = snat_rev_nat(ctx, m, SEp(addr=b, port=bp), SEp(addr=node, port=n))
            r = m.get(b, node, bp, n, IN)
            extra_rev = [(b, bp, n)]
            extra_fwd = [(r.addr, r.port, b, bp), (r.addr, n, b, bp)]
            pre = [in_range(n, NAT_MIN, NODEPORT_PORT_MAX_NAT)]
        else:
            f = m.get(c, b, cp, bp, OUT)
            m2 = m.delete(b, f.addr, bp, f.port, IN).delete(c, b, cp, bp, OUT)
            extra_rev = [(b, bp, f.port)]
            extra_fwd = [(c, cp, b, bp)]
            pre = [f.valid]
        rw = m.get(wr[0], node, wr[1], wr[2], IN)
        rw2 = m2.get(wr[0], node, wr[1], wr[2], IN)
        fw = m.get(wf[0], wf[2], wf[1], wf[3], OUT)
        fw2 = m2.get(wf[0], wf[2], wf[1], wf[3], OUT)
        fwd_t = [wf, *extra_fwd, (rw.addr, rw.port, wr[0], wr[1]),
                 (rw2.addr, rw2.port, wr[0], wr[1])]
        rev_t = [wr, *extra_rev, (wf[2], wf[3], fw.port), (wf[2], wf[3], fw2.port)]
        hyp = _nat_instances(m, node, fwd_t, rev_t)
        goal = band(inv_fwd(m2, node, *wf), inv_rev(m2, node, *wr))
        s = z3.Solver()
        s.set(timeout=ms)
        s.add(*hyp, *pre, *oracle.constraints, z3.Not(goal))
        answers.append((f"consecution-{kind}", timer.check(s, f"consecution-{kind}")))
    # Inv implies Safety: injective, outside the NodePort range
    m = NatMap.fresh("S", ab, KeyLog(), empty=False)
    c1, cp1, b, bp = _nat_vars("k1", ab)
    c2, cp2 = z3.BitVec("k2.c", ab), z3.BitVec("k2.cp", 16)
    f1, f2 = m.get(c1, b, cp1, bp, OUT), m.get(c2, b, cp2, bp, OUT)
    hyp = _nat_instances(m, node, [(c1, cp1, b, bp), (c2, cp2, b, bp)],
                         [(b, bp, f1.port), (b, bp, f2.port)])
    unsafe = z3.Or(
        band(f1.valid, f2.valid, z3.Or(c1 != c2, cp1 != cp2), eq(f1.addr, f2.addr),
             eq(f1.port, f2.port)),
        band(f1.valid, in_range(f1.port, NODEPORT_MIN_DEFAULT, NODEPORT_MAX_DEFAULT)))
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*hyp, unsafe)
    answers.append(("safety", timer.check(s, "safety")))
    # vacuity: a state with a live translation satisfies the invariant
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*hyp, f1.valid)
    vac = timer.check(s, "vacuity")
    verdict = _verdict(answers, vac, common, t0, timer)
    if isinstance(verdict, Result):
        return verdict
    failed = verdict
    note = f"induction failed ({', '.join(failed)}); "
    res, rep, msg = _nat02_reachable(prop, cfg, faults, timer, ms)
    return finish(common, res, rep, note + msg, t0, timer)


def _nat02_reachable(prop: Property, cfg: Config, faults: frozenset[ModelFault],
                     timer: Timer, ms: int) -> tuple[str, Replayed | None, str]:
    """Two flows from empty maps: SYN (allocation) then reply (reverse lookup) each."""
    ab = 128 if cfg.ipv6 else 32
    node, node2, b = z3.BitVec("cx.L", ab), z3.BitVec("cx.R", ab), z3.BitVec("cx.b", ab)
    bp = z3.BitVec("cx.bp", 16)
    clients = [(z3.BitVec(f"cx.c{i}", ab), z3.BitVec(f"cx.cp{i}", 16)) for i in range(2)]
    set_distinct([])
    m = NatMap.fresh("cx", ab, KeyLog(), empty=True)
    oracle = Oracle("cx.o.")
    ctx = _ctx(cfg, faults, node, ab, oracle)
    nats = []
    for c, cp in clients:
        m, nat, _ = snat_nat(ctx, m, SEp(addr=c, port=cp), SEp(addr=b, port=bp), node)
        nats.append(nat.port)
        m, _, _ = snat_rev_nat(ctx, m, SEp(addr=b, port=bp), SEp(addr=node, port=nat.port))
    fwd_t = [(c, cp, b, bp) for c, cp in clients] + [(c, n, b, bp) for (c, _), n in
                                                      zip(clients, nats, strict=True)]
    bad = z3.Not(band(*_nat_instances(m, node, fwd_t, [(b, bp, n) for n in nats])))
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*oracle.constraints, bad, bp != 0, *(cp != 0 for _, cp in clients),
          z3.Distinct(node, node2, b, clients[0][0]), z3.Distinct(node, node2, b, clients[1][0]),
          *(z3.UGE(cp, 1024) for _, cp in clients))
    s.push()
    s.add(nice(cfg, "node", node), nice(cfg, "node", node2), nice(cfg, "pod2", b),
          *(nice(cfg, "client", c) for c, _ in clients), bp == 8080,
          *(z3.UGE(cp, NAT_MIN) for _, cp in clients))
    ans = timer.check(s, "reachable")
    if ans != z3.sat:
        s.pop()
        ans = timer.check(s, "reachable-any")
    if ans == z3.unknown:
        return UNKNOWN, None, "timeout searching a reachable counterexample"
    if ans == z3.unsat:
        return UNKNOWN, None, "no reachable violation within 2 flows"
    mdl = s.model()
    ips: list[str] = []
    flows = []
    for c, cp in clients:
        ip = ip_text(cfg, mdl, c)
        if ip not in ips:
            ips.append(ip)
        flows.append(FlowDoc(client=ips.index(ip), sport=num(mdl, cp), packets=1, backend=0))
    vals = ScenarioValues(nodes=(ip_text(cfg, mdl, node), ip_text(cfg, mdl, node2)),
                          pods=(ip_text(cfg, mdl, b),), clients=tuple(ips),
                          target_port=num(mdl, bp), node_port=30080, port=None, vip=None,
                          other_node_port=None, flows=tuple(flows))
    rep = replay(prop.id, cfg, vals, faults)
    if rep is None:
        return DRIFT, None, "z3 found a violation the concrete model does not show"
    return COUNTEREXAMPLE, rep, rep.finding.message


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
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(z3.Not(inv(empty, wc, wcp)))
    answers.append(("initiation", timer.check(s, "initiation")))
    m = CtMap.fresh("S", ab, KeyLog(), empty=False)
    oracle = Oracle("o.")
    m2, chosen = step(m, tc, tcp, oracle)
    hyp = [inv(m, wc, wcp), inv(m, tc, tcp), *oracle.constraints]
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*hyp, z3.Not(inv(m2, wc, wcp)))
    answers.append(("consecution", timer.check(s, "consecution")))
    ew, ew2 = m.get(*key(wc, wcp)), m2.get(*key(wc, wcp))
    premise = band(ew.valid, eq(ew.rni, rni), live(ew.bid))
    same_flow = band(eq(tc, wc), eq(tcp, wcp))
    stick = band(ew2.valid, eq(ew2.bid, ew.bid),
                 z3.Implies(same_flow, chosen == ew.bid))
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*hyp, premise, z3.Not(stick))
    answers.append(("safety", timer.check(s, "safety")))
    s = z3.Solver()
    s.set(timeout=ms)
    s.add(*hyp, premise, same_flow)
    vac = timer.check(s, "vacuity")
    verdict = _verdict(answers, vac, common, t0, timer)
    if isinstance(verdict, Result):
        return verdict
    failed = verdict
    res, rep, msg = counterexample(prop, cfg, faults, timer, ms)
    return finish(common, res, rep, f"induction failed ({', '.join(failed)}); {msg}", t0,
                  timer)


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
    if prop.id == "P-NAT-02":
        return nat02(prop, cfg, faults, ms)
    if prop.id == "P-CT-01":
        return ct01(prop, cfg, faults, ms)
    raise ValueError(f"no induction encoding for {prop.id}")


__all__ = ["check_induction", "inv_fwd", "inv_rev"]
