"""`nodeport prove`: z3 proofs of the catalogued NodePort invariants, counterexamples replayed."""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from model.errors import InputError
from nodeport.term import Progress, colour_on, paint, plural
from properties.catalogue import BY_ID, PROPERTIES
from properties.coreprops import HOLD
from properties.prove import UNKNOWN, Job, Result, fresh_z3, mutants, run_many, suite

SCHEMA = "nodeport-prove/1"  # docs/prove-json.md; bump on any incompatible change


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the prove subcommand."""
    p = sub.add_parser("prove", help="prove the NodePort properties with z3",
                       description="Prove the catalogued properties with z3; counterexamples "
                       "are replayed through the model. Progress is shown on a terminal.")
    p.add_argument("--mode", choices=["snat", "dsr", "hybrid"], help="only this LB mode")
    p.add_argument("--family", choices=["ipv4", "ipv6"], help="only this address family")
    p.add_argument("--property", action="append", metavar="ID",
                   help="only this property (repeatable), e.g. P-LB-01")
    p.add_argument("--json", action="store_true", help="machine-readable results")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="per-query solver timeout in seconds (default 20)")
    p.add_argument("--mutants", action="store_true",
                   help="run the seeded faults and show which counterexample kills each")
    p.add_argument("--diagrams", metavar="DIR",
                   help="draw each counterexample as DIR/<id>-<config>.svg")
    p.add_argument("--save-counterexamples", metavar="DIR",
                   help="write each counterexample as DIR/<id>-<config>.yaml, a scenario "
                        "that `nodeport trace` replays")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="worker processes (default: 2 or the CPU count if fewer)")
    # Hidden: only the jobs of these configuration cells (labels as the table prints them);
    # the mutation check runs the cells whose coverage reaches a mutant (mutation/covmap.py).
    p.add_argument("--cell", action="append", metavar="LABEL", help=argparse.SUPPRESS)
    # Hidden: stop at the first configuration group with an unexpected result (the mutation
    # check needs only whether prove fails, not every failing row).
    p.add_argument("--fail-fast", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _legs(trace: dict[str, Any], hop: int | None) -> list[str]:
    """Numbered legs with role names, showing only the fields that changed."""
    lines = []
    for i, h in enumerate(trace["hops"], 1):
        pkt = h["packet"]
        arrow = "<-" if h["direction"] == "reply" else "->"
        shown = h["changed"] or ["src", "dst"]
        fields = []
        for f in ("src", "dst", "flags", "dsr", "outer", "quote"):
            if f == "quote" and "quote" in pkt and f not in shown:
                shown = [*shown, f]  # an ICMP error's quote is what the reader checks
            if f in shown or (i == 1 and f in ("src", "dst")):
                v = pkt.get(f)
                if v is None:
                    v = "none"
                if f == "outer" and isinstance(v, dict):
                    v = f"{v['src']}->{v['dst']}"
                if f == "quote" and isinstance(v, dict):
                    v = f"[{v['src']}->{v['dst']}]"
                fields.append(f"{f}={v}")
        if "mtu" in pkt:
            fields.append(f"mtu={pkt['mtu']}")
        mark = "  <== violation" if hop is not None and i - 1 == hop else ""
        lines.append(f"    {i:>2} {arrow} {h['at']:<8} {h['hook'] or '':<13} {h['action']:<12} "
                     f"{' '.join(fields)}{mark}")
    return lines


def _row(r: Result) -> str:
    flag = "" if r.ok else "   <-- UNEXPECTED"
    return (f"{r.prop:<9} {r.cfg.label():<46} {r.expected:<9} {r.result:<15} "
            f"{r.bound:<36} {r.seconds:7.3f}{flag}")


def _stem(r: Result) -> str:
    name = f"{r.prop}-{r.cfg.label().replace('/', '-')}"
    if r.faults:
        name += "-" + "-".join(sorted(f.name.lower() for f in r.faults))
    return name


def _out_dir(option: str, out: str) -> Path:
    """A directory to write into, made if missing; anything else is bad input."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {out}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {out}: cannot create the directory: "
                         f"{exc.strerror or exc}") from None
    if not os.access(p, os.W_OK):
        raise InputError(f"{option} {out}: directory is not writable")
    return p


def _draw(results: list[Result], out: Path) -> list[str]:
    notes = []
    from diagrams import draw_trace  # graphviz stays out of the proof path unless asked

    for r in results:
        if r.counterexample is None or not r.counterexample.get("hops"):
            continue  # P-MAG-02's counterexample is a table, not a trace
        path = out / f"{_stem(r)}.svg"
        draw_trace(r.counterexample, path, highlight=r.finding.hop if r.finding else None)
        notes.append(f"drew {path}")
    return notes


def _save(results: list[Result], out: Path) -> dict[int, str]:
    """Each replayed counterexample as a scenario file; returns result index -> path."""
    saved = {}
    for i, r in enumerate(results):
        if r.scenario is None:
            continue
        path = out / f"{_stem(r)}.yaml"
        head = [f"# {r.prop} {r.cfg.label()}: {r.result} "
                f"({'expected' if r.ok else 'UNEXPECTED'})"]
        if r.finding is not None:
            flow = r.scenario["flows"][r.finding.flow]["name"]
            head.append(f"# flow {flow!r}, leg {r.finding.hop + 1}: {r.finding.message}")
        if r.faults:
            names = ", ".join(sorted(f.name for f in r.faults))
            head.append(f"# needs the seeded model fault {names}: `nodeport trace` runs the "
                        "correct model, so it shows what the fault breaks")
        head.append(f"# replay: nodeport trace {path.name}")
        body = yaml.safe_dump(r.scenario, sort_keys=False, default_flow_style=None, width=100)
        path.write_text("\n".join(head) + "\n" + body)
        saved[i] = str(path)
    return saved


def _selected(args: argparse.Namespace) -> list[str] | None:
    ids = args.property
    if ids:
        for i in ids:
            if i not in BY_ID:
                raise InputError(f"--property: unknown property {i!r} (known: "
                                 f"{', '.join(p.id for p in PROPERTIES)})")
    return ids  # type: ignore[no-any-return]


def _group(jobs: list[Job], timeout: float) -> list[Result]:
    fresh_z3()
    return run_many(jobs, timeout, workers=1)


_WEIGHT = {"induction": 40, "tables": 8}  # against 1 for a bounded check (the --json times)


def execute(jobs: list[Job], timeout: float, workers: int,
            tick: Callable[[int], None] | None = None, fail_fast: bool = False
            ) -> list[Result]:
    """Run the jobs grouped by (configuration, faults) in worker processes, each group with
    a fresh z3 context (fresh_z3), so a counterexample does not depend on --jobs or on which
    group a worker ran before; results keep job order. (A fresh process per group did the
    same at twice the system time: every child copied the pages it touched.)
    `fail_fast` stops at the first group with an unexpected result (the rest are missing)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, cfg, faults) in enumerate(jobs):
        groups.setdefault((cfg, faults), []).append(i)
    # longest first, so no long group starts last and leaves the other workers idle: an
    # induction (a second or more) outweighs a whole group of bounded checks
    buckets = sorted(groups.values(), reverse=True,
                     key=lambda b: sum(_WEIGHT.get(BY_ID[jobs[i][0]].method, 1) for i in b))
    out: list[Result | None] = [None] * len(jobs)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(min(workers, len(buckets))) as pool:
        pending = [(b, pool.apply_async(_group, ([jobs[i] for i in b], timeout)))
                   for b in buckets]
        for b, handle in pending:
            got = handle.get()
            for i, r in zip(b, got, strict=True):
                out[i] = r
            if tick is not None:
                tick(len(b))
            if fail_fast and not all(r.ok for r in got):
                pool.terminate()
                break
    return [r for r in out if r is not None]


def run(args: argparse.Namespace) -> int:
    """Prove the selected properties; exit 0 iff every result matches its expectation."""
    if args.jobs < 1:
        raise InputError("--jobs: must be at least 1")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise InputError(f"--timeout: {args.timeout} is not a positive, finite number of "
                         "seconds")
    ids = _selected(args)
    diagrams = _out_dir("--diagrams", args.diagrams) if args.diagrams else None
    save = (_out_dir("--save-counterexamples", args.save_counterexamples)
            if args.save_counterexamples else None)
    jobs: list[Job] = []
    if args.mutants:
        jobs = [(p.id, c, frozenset({f})) for p, c, f in mutants(ids)]
    else:
        jobs = [(p.id, c, frozenset()) for p, c in suite(ids)]
    jobs = [j for j in jobs if (not args.mode or j[1].mode.value == args.mode)
            and (not args.family or j[1].family == args.family)]
    if args.cell:
        known = {j[1].label() for j in jobs}
        for label in args.cell:
            if label not in known:
                raise InputError(f"--cell: no configuration {label!r} in the selected suite")
        # in the order given: the mutation check passes its quickest cells first
        order = {label: i for i, label in enumerate(args.cell)}
        jobs = sorted((j for j in jobs if j[1].label() in order),
                      key=lambda j: order[j[1].label()])
    if not jobs:
        raise InputError("no property/configuration matches the given filters")
    progress = Progress(len(jobs), f"proving {plural(len(jobs), 'job')}")
    t0 = time.perf_counter()
    results = execute(jobs, args.timeout, args.jobs, progress.step, args.fail_fast)
    wall = time.perf_counter() - t0
    progress.close()
    notes = _draw(results, diagrams) if diagrams is not None else []
    saved = _save(results, save) if save is not None else {}
    notes += [f"saved {p}" for p in saved.values()]
    if args.json:
        print(json.dumps(as_json(results, wall, args, saved), indent=2))
    elif args.mutants:
        _print_kills(results, wall, args.jobs)
    else:
        _print_table(results, wall, args.jobs)
    for n in notes:
        print(n, file=sys.stderr)
    return _status(results, args.mutants)


def as_json(results: list[Result], wall: float, args: argparse.Namespace,
            saved: dict[int, str]) -> dict[str, Any]:
    """The `prove --json` document (docs/prove-json.md): schema, summary, one row per job."""
    rows = []
    for i, r in enumerate(results):
        row = r.as_json()
        hop = row.get("violating_hop")
        row["violating_hop"] = hop + 1 if isinstance(hop, int) else None  # legs count from 1
        row["scenario"] = r.scenario
        row["saved"] = saved.get(i)
        rows.append(row)
    counts = Counter(r.result for r in results)
    return {"schema": SCHEMA,
            "summary": {"ok": _status(results, args.mutants) == 0, "results": len(results),
                        "by_result": dict(sorted(counts.items())),
                        "unexpected": sum(not r.ok for r in results),
                        "mutants": bool(args.mutants),
                        "killed": sum(r.killed for r in results) if args.mutants else None,
                        "wall_seconds": round(wall, 3), "jobs": args.jobs,
                        "timeout_seconds": args.timeout},
            "results": rows}


def _status(results: list[Result], mutant_run: bool) -> int:
    if any(r.result == UNKNOWN for r in results):
        return 3
    if mutant_run:
        return 0 if all(r.killed for r in results) else 1
    return 0 if all(r.ok for r in results) else 1


def _print_table(results: list[Result], wall: float, workers: int) -> None:
    colour = colour_on(sys.stdout)
    print(f"{'property':<9} {'configuration':<46} {'expected':<9} {'result':<15} "
          f"{'method':<36} {'seconds':>7}")
    for r in results:
        print(_row(r) if r.ok else paint(_row(r), "red", colour))
    for r in results:
        if r.counterexample is None and not r.note:
            continue
        if r.result == "proved":
            continue
        print(f"\n{r.prop} {r.cfg.label()}: {r.result}"
              f"{' (expected)' if r.expected != HOLD and r.ok else ''}"
              f" — {r.finding.message if r.finding else r.note}")
        if r.counterexample is not None:
            print("\n".join(_legs(r.counterexample, r.finding.hop if r.finding else None)))
    bad = sum(not r.ok for r in results)
    print(f"\n{plural(len(results), 'result')}, {bad} unexpected; {_times(results, wall, workers)}")


def _times(results: list[Result], wall: float, workers: int) -> str:
    cpu = sum(r.seconds for r in results)
    return f"wall time {wall:.2f}s ({cpu:.2f}s of checking over {plural(workers, 'job')})"


def _print_kills(results: list[Result], wall: float, workers: int) -> None:
    print(f"{'fault':<28} {'property':<9} {'configuration':<46} {'killed':<7} {'seconds':>7}")
    for r in results:
        fault = ",".join(sorted(f.name for f in r.faults))
        print(f"{fault:<28} {r.prop:<9} {r.cfg.label():<46} "
              f"{'yes' if r.killed else 'NO (' + r.result + ')':<7} {r.seconds:7.3f}")
    for r in results:
        if r.killed and r.counterexample is not None:
            print(f"\n{','.join(f.name for f in r.faults)} x {r.prop} {r.cfg.label()}: "
                  f"{r.finding.message if r.finding else ''}")
            print("\n".join(_legs(r.counterexample, r.finding.hop if r.finding else None)))
        elif r.killed:  # a limit's fix: the expected counterexample is gone
            print(f"\n{','.join(f.name for f in r.faults)} x {r.prop} {r.cfg.label()}: "
                  f"proved where Cilium's counterexample is expected ({r.note})")
    killed = sum(r.killed for r in results)
    print(f"\n{killed}/{len(results)} mutants killed; {_times(results, wall, workers)}")
