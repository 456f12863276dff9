"""Run a property under a configuration: z3 proof, vacuity check, counterexample replay."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import attrs
import z3

from model.faults import ModelFault
from model.flows import trace_json
from properties.catalogue import BY_ID, PROPERTIES, VIOLATED, Property
from properties.configs import Config
from properties.decode import FlowDoc, Replayed, ScenarioValues, ip_text, nice, num, replay
from properties.formulas import FORMULAS
from properties.results import (
    COUNTEREXAMPLE,
    DRIFT,
    PROVED,
    RAISED,
    UNKNOWN,
    VACUOUS,
    Query,
    Result,
)
from properties.roundtrip import END_OPEN, END_POD, Bounds, Run, World, build, init_invariant, run
from properties.terms import B, Facts, install, snapshot


class Timer:
    """Collects per-query timings."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    def check(self, s: z3.Solver, name: str, *extra: B) -> z3.CheckSatResult:
        """s.check(extra) with its time recorded."""
        t0 = time.perf_counter()
        ans = s.check(*extra)
        self.queries.append(Query(name=name, seconds=time.perf_counter() - t0, answer=str(ans)))
        return ans


def assumptions(w: World) -> list[B]:
    """Everything a proof assumes: distinct hosts, port ranges, oracle rules, map invariants."""
    return [*w.assumptions, *w.oracle.constraints, *init_invariant(w)]


@attrs.frozen(kw_only=True, eq=False)
class Encoding:
    """A configuration's symbolic run with its assumptions loaded into a solver (shared by
    every property checked under that configuration)."""

    world: World
    run: Run
    solver: z3.Solver
    facts: Facts
    seconds: float


_CACHE: dict[tuple[Config, Bounds, frozenset[ModelFault], bool], Encoding] = {}


def encoding(cfg: Config, bounds: Bounds, faults: frozenset[ModelFault], empty: bool,
             timeout_ms: int) -> Encoding:
    """Build (or reuse) the symbolic cluster and walk the flow through it."""
    key = (cfg, bounds, faults, empty)
    enc = _CACHE.get(key)
    if enc is None:
        t0 = time.perf_counter()
        w = build(cfg, bounds, faults, empty=empty, prefix="cex." if empty else "")
        r = run(w)
        s = z3.Solver()
        s.add(*assumptions(w))
        enc = Encoding(world=w, run=r, solver=s, facts=snapshot(),
                       seconds=time.perf_counter() - t0)
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = enc
    install(enc.facts)
    enc.solver.set(timeout=timeout_ms)
    return enc


def encode(prop: Property, cfg: Config, faults: frozenset[ModelFault], empty: bool,
           timeout_ms: int = 20000) -> tuple[Encoding, B, B]:
    """The configuration's encoding and the property instantiated over it."""
    enc = encoding(cfg, prop.bounds, faults, empty, timeout_ms)
    premise, safety = FORMULAS[prop.id](enc.run)
    # the bound must cover whole round trips: a leg still travelling at the bound is a
    # violation of every property (so a too-small bound can never make a proof pass)
    closed = [z3.Implies(leg.active, leg.end != END_OPEN) for x in enc.run.exchanges
              for leg in (x.request, x.reply)]
    return enc, premise, z3.And(safety, *closed)


def values(prop: Property, w: World, r: Run, m: z3.ModelRef) -> ScenarioValues:
    """Concrete scenario values from a z3 model of a round-trip counterexample."""
    cfg = w.cfg
    pin: int | None = None
    if prop.pin_backend and num(m, r.exchanges[0].request.end) == END_POD:
        pin = num(m, r.exchanges[0].request.at)
    return ScenarioValues(
        nodes=(ip_text(cfg, m, w.ips[0]), ip_text(cfg, m, w.ips[1])),
        routers=(ip_text(cfg, m, w.routers[0]), ip_text(cfg, m, w.routers[1])),
        pods=tuple(ip_text(cfg, m, a) for a, _ in w.pods),
        clients=(ip_text(cfg, m, w.client),), target_port=num(m, w.tport),
        node_port=num(m, w.np) if w.np is not None else None,
        port=num(m, w.sport) if w.sport is not None else None,
        vip=ip_text(cfg, m, w.vip) if w.vip is not None else None,
        other_node_port=num(m, w.np2) if w.np2 is not None else None,
        flows=(FlowDoc(client=0, sport=num(m, w.cport), packets=prop.bounds.packets,
                       backend=pin),))


def nice_constraints(w: World) -> list[B]:
    """Readable addresses for decoded counterexamples."""
    cfg = w.cfg
    out = [nice(cfg, "client", w.client), nice(cfg, "node", w.ips[0]),
           nice(cfg, "node", w.ips[1]), nice(cfg, "pod1", w.routers[0]),
           nice(cfg, "pod2", w.routers[1])]
    out += [nice(cfg, "pod1" if n == 0 else "pod2", a) for a, n in w.pods]
    if w.vip is not None:
        out.append(nice(cfg, "vip", w.vip))
    out += [z3.UGE(w.cport, 1024), w.tport == 8080]
    return out


def counterexample(prop: Property, cfg: Config, faults: frozenset[ModelFault], timer: Timer,
                   timeout_ms: int) -> tuple[str, Replayed | None, str]:
    """Find a violation from empty maps (what a scenario starts with) and replay it."""
    enc, _, safety = encode(prop, cfg, faults, True, timeout_ms)
    w, r, s = enc.world, enc.run, enc.solver
    s.push()
    try:
        s.add(z3.Not(safety))
        s.push()
        s.add(*nice_constraints(w))
        ans = timer.check(s, "decode")
        if ans != z3.sat:
            s.pop()
            s.push()
            ans = timer.check(s, "decode-any")
        if ans == z3.unknown:
            return UNKNOWN, None, "timeout while decoding the counterexample"
        if ans == z3.unsat:
            return (COUNTEREXAMPLE, None,
                    "violation needs map contents a fresh cluster cannot have (not replayable)")
        vals = values(prop, w, r, s.model())
        s.pop()
    finally:
        s.pop()
    rep = replay(prop.id, cfg, vals, faults)
    if rep is None:
        return DRIFT, None, "z3 found a violation the concrete model does not show"
    return COUNTEREXAMPLE, rep, rep.finding.message


def finish(common: dict[str, Any], res: str, rep: Replayed | None, note: str, t0: float,
           timer: Timer) -> Result:
    """Attach the replayed trace to a counterexample result."""
    trace = scenario = finding = None
    if rep is not None:
        trace = trace_json(rep.replay.traces[rep.finding.flow])
        scenario = rep.doc
        finding = rep.finding
    return Result(result=res, seconds=time.perf_counter() - t0, counterexample=trace,
                  scenario=scenario, finding=finding, note=note,
                  queries=tuple(timer.queries), **common)


def check(prop: Property, cfg: Config, faults: frozenset[ModelFault] = frozenset(),
          timeout_s: float = 20.0) -> Result:
    """Prove (or refute) one property under one configuration."""
    ms = max(1, int(timeout_s * 1000))
    from properties.bmc import CROSS_CHECK
    from properties.bmc import check_bmc as explore
    if prop.method == "induction":
        from properties.induction import check_induction
        proof = check_induction(prop, cfg, faults, ms)
        if prop.id not in CROSS_CHECK:
            return proof
        # the induction is over properties/symbolic.py's encoding of the hooks; the model's
        # own code is explored too (bounded), and its counterexample wins
        bounded = explore(attrs.evolve(prop, bounds=CROSS_CHECK[prop.id]), cfg, faults, ms)
        return cross_checked(proof, bounded)
    return explore(prop, cfg, faults, ms)


def cross_checked(proof: Result, bounded: Result) -> Result:
    """An induction result checked against a bounded exploration of the model's own code."""
    queries = proof.queries + bounded.queries
    seconds = proof.seconds + bounded.seconds
    if bounded.result in (COUNTEREXAMPLE, RAISED, DRIFT) and proof.result != COUNTEREXAMPLE:
        return attrs.evolve(bounded, method=proof.method, queries=queries, seconds=seconds,
                            note=f"{proof.note}; the model's own code refutes it "
                                 f"({bounded.bound}): {bounded.note}".lstrip("; "))
    if proof.result == PROVED and bounded.result != PROVED:
        return attrs.evolve(proof, result=bounded.result, queries=queries, seconds=seconds,
                            note=f"induction proved it, the bounded exploration of the model "
                                 f"did not: {bounded.note}")
    note = proof.note
    if proof.result == PROVED:
        note = f"{note}; model explored: {bounded.bound}, {bounded.note}".lstrip("; ")
    return attrs.evolve(proof, queries=queries, seconds=seconds, note=note)


def suite(ids: list[str] | None = None) -> Iterator[tuple[Property, Config]]:
    """The default suite: every catalogued property under each of its configurations."""
    for p in PROPERTIES:
        if ids and p.id not in ids:
            continue
        for c in p.configs:
            yield p, c


def mutants(ids: list[str] | None = None) -> Iterator[tuple[Property, Config, ModelFault]]:
    """Every (property, configuration, seeded fault) the kill table runs."""
    for p in PROPERTIES:
        if ids and p.id not in ids:
            continue
        for f, c in p.mutants:
            yield p, c, f


Job = tuple[str, Config, frozenset[ModelFault]]


def _run_jobs(jobs: list[Job], timeout_s: float) -> list[Result]:
    """Jobs in order; round-trip properties of one cell share a single exploration."""
    from properties.bmc import check_cell
    ms = max(1, int(timeout_s * 1000))
    cells: dict[tuple[Config, object, frozenset[ModelFault]], list[int]] = {}
    out: dict[int, Result] = {}
    for i, (pid, cfg, faults) in enumerate(jobs):
        prop = BY_ID[pid]
        if prop.method == "bmc":
            cells.setdefault((cfg, prop.bounds, faults), []).append(i)
        else:
            out[i] = check(prop, cfg, faults, timeout_s)
    for (cfg, _, faults), idx in cells.items():
        for i, r in zip(idx, check_cell([BY_ID[jobs[i][0]] for i in idx], cfg, faults, ms),
                        strict=True):
            out[i] = r
    return [out[i] for i in range(len(jobs))]


def run_many(jobs: list[Job], timeout_s: float = 20.0, workers: int = 1) -> list[Result]:
    """Check many (property, configuration, faults) in order, optionally in parallel worker
    processes; jobs sharing a configuration form one task to share its encoding, and tasks
    go, largest first, to whichever worker is free (a static split by job count left one
    worker with the expensive configurations)."""
    if workers <= 1 or len(jobs) < 8:
        return _run_jobs(jobs, timeout_s)
    groups: dict[tuple[Config, frozenset[ModelFault]], list[int]] = {}
    for i, (_, cfg, faults) in enumerate(jobs):
        groups.setdefault((cfg, faults), []).append(i)
    buckets = sorted(groups.values(), key=len, reverse=True)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        parts = pool.starmap(_run_jobs, [([jobs[i] for i in b], timeout_s) for b in buckets],
                             chunksize=1)
    out: list[Result | None] = [None] * len(jobs)
    for b, rs in zip(buckets, parts, strict=True):
        for i, r in zip(b, rs, strict=True):
            out[i] = r
    return [r for r in out if r is not None]


__all__ = ["BY_ID", "COUNTEREXAMPLE", "DRIFT", "PROVED", "RAISED", "UNKNOWN", "VACUOUS",
           "VIOLATED",
           "Result", "check", "mutants", "run_many", "suite"]
