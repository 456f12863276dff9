"""Typed outcomes of property checks: one Result per property x configuration x faults."""

from __future__ import annotations

import time
from typing import Any

import attrs

from model.faults import ModelFault
from model.flows import trace_json
from properties.checks import Finding
from properties.configs import Config
from properties.coreprops import HOLD
from properties.decode import Replayed

PROVED, COUNTEREXAMPLE, UNKNOWN, VACUOUS, DRIFT, RAISED = (
    "proved", "counterexample", "unknown", "vacuous", "drift", "model-error")


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

    @property
    def killed(self) -> bool:
        """A seeded fault's run left the catalogue's result: a counterexample where the
        property holds, or a proof where Cilium's limit is the expected counterexample (a
        fault that fixes the limit: the check would notice a datapath without it)."""
        if self.expected == HOLD:
            return self.result == COUNTEREXAMPLE and self.counterexample is not None
        return self.result == PROVED

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



def counterexample_result(base: Result, rep: Replayed, t0: float,
                          queries: tuple[Query, ...] = ()) -> Result:
    """A counterexample result carrying its replayed trace and scenario document."""
    return attrs.evolve(base, result=COUNTEREXAMPLE, seconds=time.perf_counter() - t0,
                        counterexample=trace_json(rep.replay.traces[rep.finding.flow]),
                        scenario=rep.doc, finding=rep.finding, note=rep.finding.message,
                        queries=queries)
