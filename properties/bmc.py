"""Bounded checks of round-trip properties by exploring every path of the model's own code.

Each path runs model/flows.py on the configuration cell's scenario with symbolic ports and
random draws, then runs the property's checker (properties/checks.py) on what the model
did. A path whose checker reports a finding is a counterexample: z3 gives its inputs, they
become a scenario file, and the concrete model must show the same violation when it replays
it. No violating path means the property holds within the bound; the proof is then
re-checked on several concrete witnesses of its premise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import z3

from model.faults import ModelFault
from model.values import IcmpKind
from properties.checks import LIVE_BELOW, Finding, Replay
from properties.configs import Config
from properties.coreprops import Property
from properties.decode import Replayed, ScenarioValues, document, replay, run_document
from properties.ewcells import answered, hairpinned
from properties.pktchecks import CHECKERS, xdp_ran
from properties.results import (
    COUNTEREXAMPLE,
    DRIFT,
    PROVED,
    RAISED,
    UNKNOWN,
    VACUOUS,
    Query,
    Result,
    counterexample_result,
)
from properties.symexec import Explorer, Outcome, Status
from properties.symworld import Bounds, Cell, Run, cell, run_cell

WITNESSES = 3  # concrete premise witnesses re-run per proved result

Premise = Callable[[Replay], bool]


def _delivered(rp: Replay) -> bool:
    return any(tr.backend_saw for tr in rp.traces)


def _reply_arrives(rp: Replay) -> bool:
    return any(tr.client_saw and tr.delivered for tr in rp.traces)


def _snat_on_lb_node(rp: Replay) -> bool:
    from model.hooks import Step
    return any(h.action is Step.SNAT for tr in rp.traces for h in tr.hops)


def _sent(rp: Replay) -> bool:
    return bool(rp.traces)


def _two_translations(rp: Replay) -> bool:
    from model.hooks import Step
    return sum(1 for tr in rp.traces for h in tr.hops if h.action is Step.SNAT) >= 2


def _repeat_delivery(rp: Replay) -> bool:
    return any(len(tr.backend_saw) > 1 for tr in rp.traces)


def _drained(rp: Replay) -> bool:
    """A connection reached a backend after an endpoint change left one terminating."""
    return any(tr.spec.terminating and tr.backend_saw for tr in rp.traces)


def _gc_continued(rp: Replay) -> bool:
    """A connection reached a backend again after CT GC ran while it was live."""
    return any(0 < tr.spec.idle < LIVE_BELOW and tr.backend_saw for tr in rp.traces)


def _moved(rp: Replay) -> bool:
    """One flow reached a backend through both nodes."""
    got = [(tr.spec.source, tr.spec.via) for tr in rp.traces if tr.backend_saw]
    return any(a[0] == b[0] and a[1] != b[1] for i, a in enumerate(got) for b in got[i + 1:])


def _reconnected(rp: Replay) -> bool:
    """One client's second connection reached a backend after its first one did."""
    got = [tr.spec.source.addr for tr in rp.traces if tr.backend_saw]
    return len(got) > len(set(got))
def _error_sent(rp: Replay) -> bool:
    """A backend answered a request with an ICMP error about it."""
    return any(h.packet.quote is not None and h.reply for tr in rp.traces for h in tr.hops)


def _frag_needed_received(rp: Replay) -> bool:
    """The client received a frag-needed / packet-too-big."""
    return any(h.packet.icmp is IcmpKind.FRAG_NEEDED and h.at == tr.spec.client
               for tr in rp.traces for h in tr.hops)


# What a path must reach for a property's check to say something (the vacuity test).
PREMISES: dict[str, Premise] = {
    "P-LB-01": _reply_arrives, "P-LB-02": _delivered, "P-NAT-01": _reply_arrives,
    "P-NAT-03": _snat_on_lb_node, "P-DSR-01": _delivered, "P-DSR-02": _reply_arrives,
    "P-DSR-03": _delivered, "P-ETP-01": _sent, "P-HYB-01": _reply_arrives, "P-ENV-01": _sent,
    "P-ENV-02": _sent, "P-CT-01": _repeat_delivery, "P-NAT-02": _two_translations,
    "P-CT-02": _drained, "P-CT-03": _gc_continued, "P-AFF-01": _reconnected,
    "P-ICMP-01": _error_sent, "P-ICMP-02": _error_sent, "P-MTU-01": _sent,
    "P-MTU-02": _frag_needed_received,
    "P-FRAG-01": _sent,
    "P-XDP-01": xdp_ran,
}
PREMISES["P-MAG-01"] = _moved
PREMISES.update({"P-EW-01": answered, "P-EW-02": hairpinned})
PREMISES["P-DSR-04"] = _sent

# Induction properties whose statement is also checked, within these bounds, by exploring
# the model's own code (properties/prove.py cross_checked).
CROSS_CHECK: dict[str, Bounds] = {
    "P-NAT-02": Bounds(packets=1, clients=2),
    "P-CT-01": Bounds(packets=2, backends=2),
    "P-CT-02": Bounds(packets=1, backends=2, drain=True),
}

# Readable counterexamples: preferred input values, dropped when the path cannot have them.
NICE: dict[str, Callable[[z3.ArithRef], z3.BoolRef]] = {
    "client.sourcePort": lambda x: z3.And(x >= 40000, x <= 60999),
    "client2.sourcePort": lambda x: z3.And(x >= 40000, x <= 60999),
    "service.targetPort": lambda x: x == 8080,
    "service.port": lambda x: x == 80,
    "service.nodePort": lambda x: x == 30080,
    "other.nodePort": lambda x: x == 30081,
}


@attrs.frozen(kw_only=True)
class PathValue:
    """What one explored path produced: the model's run and each property's verdict."""

    run: Run
    findings: tuple[Finding | None, ...]
    premises: tuple[bool, ...]


def _pick(o: Outcome[PathValue], c: Cell, prefer: bool = True,
          avoid: tuple[dict[str, int], ...] = ()) -> dict[str, int] | None:
    """Input values of a path: readable where the path allows, unlike `avoid`'s."""
    s = z3.Solver()
    s.add(o.condition)
    for old in avoid:
        s.add(z3.Or(*[i.var.e != old[i.name] for i in c.inputs]))
    if prefer:
        s.push()
        s.add(*[NICE[i.name](i.var.e) for i in c.inputs if i.name in NICE])
        if s.check() != z3.sat:
            s.pop()
    if s.check() != z3.sat:
        return None
    m = s.model()
    return {i.name: m.eval(i.var.e, model_completion=True).as_long() for i in c.inputs}


def _witnesses(outs: list[Outcome[PathValue]], c: Cell
               ) -> list[tuple[Outcome[PathValue], dict[str, int]]]:
    """WITNESSES diverse assignments: round-robin over premise paths, each unlike the last."""
    got: list[tuple[Outcome[PathValue], dict[str, int]]] = []
    for i in range(WITNESSES * 2):
        o = outs[i % len(outs)]
        seen = tuple(v for p, v in got if p is o)
        vals = _pick(o, c, prefer=not seen, avoid=seen)
        if vals is not None:
            got.append((o, vals))
        if len(got) == WITNESSES:
            break
    return got


def _backend(o: Outcome[PathValue], prop: Property) -> int | None:
    assert o.value is not None
    pod = o.value.run.traces[0].backend_pod if o.value.run.traces else None
    if not prop.pin_backend or pod is None:
        return None
    return int(pod.rsplit("-", 1)[1])


@attrs.define
class _Runs:
    """One cell's concrete witness runs and draws, shared by its properties (they often
    draw the same premise paths, and a run does not depend on the property checked)."""

    runs: dict[tuple[object, ...], Replay] = attrs.Factory(dict)
    drawn: dict[tuple[int, ...], list[tuple[Outcome[PathValue], dict[str, int]]]] = (
        attrs.Factory(dict))

    def witnesses(self, outs: list[Outcome[PathValue]], c: Cell
                  ) -> list[tuple[Outcome[PathValue], dict[str, int]]]:
        """_witnesses, once per list of premise paths (the outcomes outlive the cell)."""
        key = tuple(id(o) for o in outs)
        got = self.drawn.get(key)
        if got is None:
            got = self.drawn[key] = _witnesses(outs, c)
        return got

    def replay(self, c: Cell, vals: ScenarioValues, faults: frozenset[ModelFault]) -> Replay:
        """The concrete model's run of a witness's scenario."""
        key = (vals, faults)
        got = self.runs.get(key)
        if got is None:
            got = self.runs[key] = run_document(c.cfg, document(c.cfg, vals, seed=1), faults,
                                                "<witness>")
        return got


def _witness_ok(prop: Property, c: Cell, o: Outcome[PathValue], pick: dict[str, int],
                faults: frozenset[ModelFault], runs: _Runs) -> str | None:
    """Run a premise witness concretely; the checker must agree that nothing is violated."""
    vals = c.values(pick, _backend(o, prop))
    f = CHECKERS[prop.id](runs.replay(c, vals, faults))
    if f is not None:
        return f"proved, yet its witness {vals} violates it concretely: {f.message}"
    return None


@attrs.define
class _Tally:
    """One property's view of the exploration."""

    prop: Property
    violation: Outcome[PathValue] | None = None
    premise_paths: list[Outcome[PathValue]] = attrs.Factory(list)


def check_cell(props: list[Property], cfg: Config, faults: frozenset[ModelFault],
               timeout_ms: int) -> list[Result]:
    """Explore every path of one cell once; each property's checker runs on every path."""
    t0 = time.perf_counter()
    bounds = props[0].bounds
    assert all(p.bounds == bounds for p in props)
    c = cell(cfg, bounds)
    checkers = [CHECKERS[p.id] for p in props]
    premises = [PREMISES[p.id] for p in props]

    def one() -> PathValue:
        r = run_cell(c, faults)
        rp = Replay(cfg=cfg, world=r.world, traces=r.traces, state=r.state)
        found = tuple(chk(rp) for chk in checkers)
        return PathValue(run=r, findings=found, premises=tuple(
            f is not None or bool(pre(rp)) for f, pre in zip(found, premises, strict=True)))

    ex = Explorer(timeout_ms=timeout_ms)
    tallies = [_Tally(prop=p) for p in props]
    unknown = raised = None
    for o in ex.run(one, c.inputs, c.facts):
        if o.status is Status.RAISED:
            raised = o
            break
        if o.status is Status.UNKNOWN or o.value is None:  # nothing can be proved now
            unknown = o
            break
        for t, f, pre in zip(tallies, o.value.findings, o.value.premises, strict=True):
            if f is not None and t.violation is None:
                t.violation = o
            elif pre and len(t.premise_paths) < WITNESSES:
                t.premise_paths.append(o)
        if all(t.violation is not None for t in tallies):
            break
    share = (time.perf_counter() - t0) / len(props)
    runs = _Runs()
    return [_verdict(t, c, cfg, faults, ex, share, unknown, raised, runs) for t in tallies]


def _verdict(t: _Tally, c: Cell, cfg: Config, faults: frozenset[ModelFault], ex: Explorer,
             share: float, unknown: Outcome[PathValue] | None,
             raised: Outcome[PathValue] | None, runs: _Runs) -> Result:
    """One property's result from a shared exploration (its share of the time)."""
    t0 = time.perf_counter() - share
    prop = t.prop
    base = Result(prop=prop.id, cfg=cfg, expected=prop.expect(cfg), result=UNKNOWN,
                  method="bmc", bound=f"BMC {prop.bounds.describe()}, {ex.paths} paths",
                  seconds=share, faults=faults,
                  queries=(Query(name="explore", seconds=share,
                                 answer=f"{ex.paths} paths, {ex.queries} queries"),))
    if raised is not None:
        return attrs.evolve(base, result=RAISED,
                            note=f"the model raised on a feasible input: {raised.error}")
    if t.violation is not None:
        pick = _pick(t.violation, c)
        assert pick is not None  # the explorer found this path satisfiable
        rep: Replayed | None = replay(prop.id, cfg, c.values(pick, _backend(t.violation, prop)),
                                      faults)
        if rep is None:
            return attrs.evolve(base, result=DRIFT, seconds=time.perf_counter() - t0,
                                note="a violating path the concrete model does not replay")
        return counterexample_result(base, rep, t0, base.queries)
    if unknown is not None or ex.truncated:
        why = "path limit reached" if ex.truncated else "solver could not decide a branch"
        return attrs.evolve(base, note=why)
    if not t.premise_paths:
        return attrs.evolve(base, result=VACUOUS,
                            note="no path reaches the premise: the proof is vacuous")
    drawn = runs.witnesses(t.premise_paths, c)
    for w, pick in drawn:
        bad = _witness_ok(prop, c, w, pick, faults, runs)
        if bad is not None:
            return attrs.evolve(base, result=DRIFT, seconds=time.perf_counter() - t0, note=bad)
    return attrs.evolve(base, result=PROVED, seconds=time.perf_counter() - t0,
                        note=f"{len(drawn)} concrete witnesses agree")


def check_bmc(prop: Property, cfg: Config, faults: frozenset[ModelFault],
              timeout_ms: int) -> Result:
    """One property under one configuration."""
    return check_cell([prop], cfg, faults, timeout_ms)[0]


__all__ = ["COUNTEREXAMPLE", "PREMISES", "PROVED", "check_bmc", "check_cell"]
