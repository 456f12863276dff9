"""Run a property under a configuration: z3 proof, vacuity check, counterexample replay."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import attrs
import z3

from model.faults import ModelFault
from properties.catalogue import BY_ID, PROPERTIES
from properties.configs import Config
from properties.coreprops import VIOLATED, Property
from properties.results import (
    COUNTEREXAMPLE,
    DRIFT,
    PROVED,
    RAISED,
    UNKNOWN,
    VACUOUS,
    Result,
)


def fresh_z3() -> None:
    """z3 as a new process has it, for the next group of jobs: a new main context (the AST
    ids, and so the solver's choices and its counterexamples, then do not depend on what
    ran before in this process), and the caches of terms made in the old one emptied."""
    from properties import symexec, symworld
    from properties import zterms as zt
    z3.z3._main_ctx = None  # main_ctx() makes the next one; old terms keep theirs alive
    zt.reset()
    symexec.reset()
    symworld.cell.cache_clear()


def check(prop: Property, cfg: Config, faults: frozenset[ModelFault] = frozenset(),
          timeout_s: float = 20.0) -> Result:
    """Prove (or refute) one property under one configuration."""
    ms = max(1, int(timeout_s * 1000))
    from properties.bmc import CROSS_CHECK
    from properties.bmc import check_bmc as explore
    if prop.method == "tables":
        from properties.maglevtables import check_tables
        return check_tables(prop, cfg, faults)
    if prop.method == "induction":
        from properties.induction import check_induction
        proof = check_induction(prop, cfg, faults, ms)
        if prop.id not in CROSS_CHECK:
            return proof
        # the induction shows no step of the model breaks the invariant; a failed step is
        # a candidate only: a bounded run of the model from empty maps must reach it
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
    processes; bounded jobs sharing a configuration form one task to share its exploration,
    and tasks go, inductions and larger groups first, to whichever worker is free (a static
    split by job count left one worker with the expensive configurations)."""
    if workers <= 1 or len(jobs) < 8:
        return _run_jobs(jobs, timeout_s)
    groups: dict[tuple[str, Config, frozenset[ModelFault]], list[int]] = {}
    for i, (pid, cfg, faults) in enumerate(jobs):
        # bounded properties of one configuration share an exploration; an induction
        # shares nothing, so each is a task of its own (the largest tasks, spread first)
        alone = BY_ID[pid].method != "bmc"
        groups.setdefault((pid if alone else "", cfg, faults), []).append(i)
    buckets = sorted(groups.values(),
                     key=lambda b: (BY_ID[jobs[b[0]][0]].method == "bmc", -len(b)))
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
           "Result", "check", "fresh_z3", "mutants", "run_many", "suite"]
