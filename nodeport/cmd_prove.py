"""`nodeport prove`: z3 proofs of the catalogued NodePort invariants, counterexamples replayed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from model.errors import InputError
from properties.catalogue import BY_ID, HOLD, PROPERTIES
from properties.prove import COUNTEREXAMPLE, UNKNOWN, Job, Result, mutants, run_many, suite


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the prove subcommand."""
    p = sub.add_parser("prove", help="prove the NodePort properties with z3")
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
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="worker processes (default: 2 or the CPU count if fewer)")
    p.set_defaults(func=run)


def _legs(trace: dict[str, Any], hop: int | None) -> list[str]:
    """Numbered legs with role names, showing only the fields that changed."""
    lines = []
    for i, h in enumerate(trace["hops"], 1):
        pkt = h["packet"]
        arrow = "<-" if h["direction"] == "reply" else "->"
        shown = h["changed"] or ["src", "dst"]
        fields = []
        for f in ("src", "dst", "flags", "dsr", "outer"):
            if f in shown or (i == 1 and f in ("src", "dst")):
                v = pkt.get(f)
                if f == "outer" and v:
                    v = f"{v['src']}->{v['dst']}"
                fields.append(f"{f}={v}")
        mark = "  <== violation" if hop is not None and i - 1 == hop else ""
        lines.append(f"    {i:>2} {arrow} {h['at']:<8} {h['hook'] or '':<13} {h['action']:<12} "
                     f"{' '.join(fields)}{mark}")
    return lines


def _row(r: Result) -> str:
    flag = "" if r.ok else "   <-- UNEXPECTED"
    return (f"{r.prop:<9} {r.cfg.label():<46} {r.expected:<9} {r.result:<15} "
            f"{r.bound:<36} {r.seconds:7.3f}{flag}")


def _draw(results: list[Result], out: str) -> list[str]:
    notes = []
    from diagrams import draw_trace  # graphviz stays out of the proof path unless asked

    Path(out).mkdir(parents=True, exist_ok=True)
    for r in results:
        if r.counterexample is None:
            continue
        name = f"{r.prop}-{r.cfg.label().replace('/', '-')}"
        if r.faults:
            name += "-" + "-".join(sorted(f.name.lower() for f in r.faults))
        path = Path(out) / f"{name}.svg"
        draw_trace(r.counterexample, path, highlight=r.finding.hop if r.finding else None)
        notes.append(f"drew {path}")
    return notes


def _selected(args: argparse.Namespace) -> list[str] | None:
    ids = args.property
    if ids:
        for i in ids:
            if i not in BY_ID:
                raise InputError(f"--property: unknown property {i!r} (known: "
                                 f"{', '.join(p.id for p in PROPERTIES)})")
    return ids  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    """Prove the selected properties; exit 0 iff every result matches its expectation."""
    if args.jobs < 1:
        raise InputError("--jobs: must be at least 1")
    if args.timeout <= 0:
        raise InputError("--timeout: must be a positive number of seconds")
    ids = _selected(args)
    jobs: list[Job] = []
    if args.mutants:
        jobs = [(p.id, c, frozenset({f})) for p, c, f in mutants(ids)]
    else:
        jobs = [(p.id, c, frozenset()) for p, c in suite(ids)]
    jobs = [j for j in jobs if (not args.mode or j[1].mode.value == args.mode)
            and (not args.family or j[1].family == args.family)]
    if not jobs:
        raise InputError("no property/configuration matches the given filters")
    results = run_many(jobs, args.timeout, workers=args.jobs)
    notes = _draw(results, args.diagrams) if args.diagrams else []
    if args.json:
        print(json.dumps({"results": [r.as_json() for r in results]}, indent=2))
    elif args.mutants:
        _print_kills(results)
    else:
        _print_table(results)
    for n in notes:
        print(n, file=sys.stderr)
    return _status(results, args.mutants)


def _killed(r: Result) -> bool:
    return r.result == COUNTEREXAMPLE and r.counterexample is not None


def _status(results: list[Result], mutant_run: bool) -> int:
    if any(r.result == UNKNOWN for r in results):
        return 3
    if mutant_run:
        return 0 if all(_killed(r) for r in results) else 1
    return 0 if all(r.ok for r in results) else 1


def _print_table(results: list[Result]) -> None:
    print(f"{'property':<9} {'configuration':<46} {'expected':<9} {'result':<15} "
          f"{'method':<36} {'seconds':>7}")
    for r in results:
        print(_row(r))
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
    total = sum(r.seconds for r in results)
    print(f"\n{len(results)} results, {bad} unexpected, {total:.2f}s")


def _print_kills(results: list[Result]) -> None:
    print(f"{'fault':<28} {'property':<9} {'configuration':<46} {'killed':<7} {'seconds':>7}")
    for r in results:
        fault = ",".join(sorted(f.name for f in r.faults))
        print(f"{fault:<28} {r.prop:<9} {r.cfg.label():<46} "
              f"{'yes' if _killed(r) else 'NO (' + r.result + ')':<7} {r.seconds:7.3f}")
    for r in results:
        if _killed(r):
            assert r.counterexample is not None
            print(f"\n{','.join(f.name for f in r.faults)} x {r.prop} {r.cfg.label()}: "
                  f"{r.finding.message if r.finding else ''}")
            print("\n".join(_legs(r.counterexample, r.finding.hop if r.finding else None)))
    killed = sum(_killed(r) for r in results)
    print(f"\n{killed}/{len(results)} mutants killed")
