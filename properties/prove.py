"""Run a property under a configuration: z3 proof, vacuity check, counterexample replay."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import attrs
import z3

from model.faults import ModelFault
from model.flows import trace_json
from properties.catalogue import BY_ID, HOLD, PROPERTIES, VIOLATED, Property
from properties.checks import Finding
from properties.configs import Config
from properties.decode import Replayed, ScenarioValues, FlowDoc, ip_text, nice, num, replay
from properties.formulas import FORMULAS
from properties.roundtrip import END_POD, Run, World, build, init_invariant, run
from properties.symbolic import B

PROVED, COUNTEREXAMPLE, UNKNOWN, VACUOUS, DRIFT = (
    "proved", "counterexample", "unknown", "vacuous", "drift")


@attrs.frozen(kw_only=True)
class Query:
    """One solver call and its wall time."""

    name: str
    seconds: float
    answer: str


@attrs.frozen(kw_only=True)
class Result:
    """The outcome of one property under one configuration (and seeded faults)."""

    prop: str
    cfg: Config
    expected: str
    result: str
    method: str
    bound: str
    seconds: float
    faults: frozenset[ModelFault] = frozenset()
    counterexample: dict[str, Any] | None = None
    scenario: dict[str, Any] | None = None
    finding: Finding | None = None
    note: str = ""
    queries: tuple[Query, ...] = ()

    @property
    def ok(self) -> bool:
        """The result matches the catalogue's expectation."""
        if self.expected == HOLD:
            return self.result == PROVED
        return self.result == COUNTEREXAMPLE and self.counterexample is not None

    def as_json(self) -> dict[str, Any]:
        """The `nodeport prove --json` row."""
        return {"id": self.prop, "mode": self.cfg.mode.value, "family": self.cfg.family,
                "config": self.cfg.label(), "config_detail": self.cfg.as_dict(),
                "expected": self.expected, "result": self.result, "method": self.method,
                "bound": self.bound, "seconds": round(self.seconds, 4),
                "faults": sorted(f.name for f in self.faults),
                "counterexample": self.counterexample,
                "violating_hop": self.finding.hop if self.finding else None,
                "message": self.finding.message if self.finding else self.note}


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


def encode(prop: Property, cfg: Config, faults: frozenset[ModelFault], empty: bool,
           prefix: str = "") -> tuple[World, Run, B, B]:
    """Build the symbolic cluster, walk the flow, and instantiate the property."""
    w = build(cfg, prop.bounds, faults, empty=empty, prefix=prefix)
    r = run(w)
    premise, safety = FORMULAS[prop.id](r)
    return w, r, premise, safety


def values(prop: Property, w: World, r: Run, m: z3.ModelRef) -> ScenarioValues:
    """Concrete scenario values from a z3 model of a round-trip counterexample."""
    cfg = w.cfg
    pin: int | None = None
    if prop.pin_backend and num(m, r.exchanges[0].request.end) == END_POD:
        pin = num(m, r.exchanges[0].request.at)
    return ScenarioValues(
        nodes=(ip_text(cfg, m, w.ips[0]), ip_text(cfg, m, w.ips[1])),
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
           nice(cfg, "node", w.ips[1])]
    out += [nice(cfg, "pod1" if n == 0 else "pod2", a) for a, n in w.pods]
    if w.vip is not None:
        out.append(nice(cfg, "vip", w.vip))
    return out


def counterexample(prop: Property, cfg: Config, faults: frozenset[ModelFault], timer: Timer,
                   timeout_ms: int) -> tuple[str, Replayed | None, str]:
    """Find a violation from empty maps (what a scenario starts with) and replay it."""
    w, r, _, safety = encode(prop, cfg, faults, empty=True, prefix="cex.")
    s = z3.Solver()
    s.set(timeout=timeout_ms)
    s.add(*assumptions(w), z3.Not(safety))
    s.push()
    s.add(*nice_constraints(w))
    ans = timer.check(s, "decode")
    if ans != z3.sat:
        s.pop()
        ans = timer.check(s, "decode-any")
    if ans == z3.unknown:
        return UNKNOWN, None, "timeout while decoding the counterexample"
    if ans == z3.unsat:
        return (COUNTEREXAMPLE, None,
                "violation needs map contents a fresh cluster cannot have (not replayable)")
    vals = values(prop, w, r, s.model())
    rep = replay(prop.id, cfg, vals, faults)
    if rep is None:
        return DRIFT, None, "z3 found a violation the concrete model does not show"
    return COUNTEREXAMPLE, rep, rep.finding.message


def check_bmc(prop: Property, cfg: Config, faults: frozenset[ModelFault],
              timeout_ms: int) -> Result:
    """Bounded model check of one round-trip property."""
    t0 = time.perf_counter()
    timer = Timer()
    w, _, premise, safety = encode(prop, cfg, faults, empty=False)
    s = z3.Solver()
    s.set(timeout=timeout_ms)
    s.add(*assumptions(w))
    bound = f"BMC {prop.bounds.describe()}"
    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "bmc",
              "bound": bound, "faults": faults}
    s.push()
    s.add(z3.Not(safety))
    ans = timer.check(s, "violation")
    s.pop()
    if ans == z3.unknown:
        return Result(result=UNKNOWN, seconds=time.perf_counter() - t0, note="solver timeout",
                      queries=tuple(timer.queries), **common)  # type: ignore[arg-type]
    if ans == z3.unsat:
        vac = timer.check(s, "vacuity", premise)
        res = PROVED if vac == z3.sat else VACUOUS if vac == z3.unsat else UNKNOWN
        note = "premise unreachable: the proof is vacuous" if res == VACUOUS else ""
        return Result(result=res, seconds=time.perf_counter() - t0, note=note,
                      queries=tuple(timer.queries), **common)  # type: ignore[arg-type]
    res, rep, note = counterexample(prop, cfg, faults, timer, timeout_ms)
    return finish(common, res, rep, note, t0, timer)


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
    if prop.method == "induction":
        from properties.induction import check_induction
        return check_induction(prop, cfg, faults, ms)
    return check_bmc(prop, cfg, faults, ms)


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


__all__ = ["BY_ID", "COUNTEREXAMPLE", "DRIFT", "PROVED", "UNKNOWN", "VACUOUS", "VIOLATED",
           "Result", "check", "mutants", "suite"]
