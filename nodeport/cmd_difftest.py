"""`nodeport difftest`: the model and a datapath run the same generated programs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from datapath.adapter import DEFAULT_FACTORY, load_factory
from datapath.diffgen import (
    difftest,
    format_failure,
    format_kill_table,
    kill_table,
    parse_shard,
    plan,
    planned,
    program_version,
    text_progress,
)
from model.errors import InputError


def run(args: argparse.Namespace) -> int:
    """0 when model and datapath agree (or every fault is killed), 1 otherwise."""
    if args.examples < 1:
        raise InputError(f"--examples: {args.examples} is not at least 1")
    factory = load_factory(args.datapath, args.cilium_src)
    spec = args.datapath or DEFAULT_FACTORY
    if args.mutants and args.datapath == "cilium-bpf":
        return _bpf_mutants(args)
    if args.mutants:
        def note(name: str) -> None:
            if not args.quiet:
                print(f"  fault {name}...", file=sys.stderr, flush=True)
        rows = kill_table(args.examples, args.seed, factory, progress=note)
        print(format_kill_table(rows))
        return 0 if all(d or v for _n, d, v in rows) else 1
    try:
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise SystemExit(_usage(str(e))) from None
    if args.jobs < 1:
        raise SystemExit(_usage("--jobs must be at least 1"))
    only = _units(args.units, len(plan(args.examples, args.seed, program_version(factory))))
    progress = None if args.quiet else text_progress(
        planned(args.examples, shard, program_version(factory), factory))
    summary = difftest(args.examples, args.seed, factory, spec=spec,
                       progress=progress, jobs=args.jobs, shard=shard, only=only,
                       shrink=not args.no_shrink)
    if progress is not None:
        print(file=sys.stderr)
    if summary.failure is not None:
        print(format_failure(summary.failure))
    if shard != (0, 1):
        print(f"shard {shard[0]}/{shard[1]}: units {','.join(map(str, summary.units))}")
    print(summary.line())
    return 1 if summary.failure is not None else 0


def _units(text: str | None, count: int) -> frozenset[int] | None:
    """--units I,J,...: unit indices below the campaign's unit count."""
    if text is None:
        return None
    try:
        out = frozenset(int(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(_usage(f"--units: expected I,J,... got {text!r}")) from None
    bad = [i for i in out if not 0 <= i < count]
    if bad:
        raise SystemExit(_usage(f"--units: {bad[0]} is not a unit of this campaign "
                                f"(0..{count - 1})"))
    return out


def _usage(msg: str) -> int:
    print(f"nodeport: error: difftest: {msg}", file=sys.stderr)
    return 2


def _bpf_mutants(args: argparse.Namespace) -> int:
    """The real datapath's kill table: ciliumbpf/mutants/*.diff on shadow copies of the tree."""
    from pathlib import Path

    from ciliumbpf.mutate import all_killed, format_kill_table, kill_table

    vectors = sorted((Path(__file__).resolve().parent.parent / "vectors").glob("*.yaml"))

    def note(name: str) -> None:
        if not args.quiet:
            print(f"  mutant {name}...", file=sys.stderr, flush=True)
    rows = kill_table(args.cilium_src, args.examples, args.seed, vectors, progress=note)
    print(format_kill_table(rows))
    return 0 if all_killed(rows) else 1


def register(subparsers: Any) -> None:
    """Add the `difftest` subcommand to the nodeport CLI."""
    p = subparsers.add_parser(
        "difftest", help="differential testing: model vs datapath on generated programs")
    p.add_argument("--cilium-src", default=None, metavar="DIR",
                   help="Cilium tree for --datapath cilium-bpf (default: $NODEPORT_CILIUM_SRC)")
    p.add_argument("--datapath", default=None, metavar="module:factory",
                   help=f"datapath factory (default: {DEFAULT_FACTORY})")
    p.add_argument("--examples", type=int, default=200, metavar="N",
                   help="generated programs (split over every configuration; default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="generator seed")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run the campaign's units in N processes (default 1)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only units I, I+N, I+2N... (deterministic seeds: the N shards "
                        "together are the unsharded run)")
    # Hidden: only these campaign units (indices of datapath.diffgen.plan); the mutation
    # check runs the units whose coverage reaches a mutant (mutation/covmap.py).
    p.add_argument("--units", default=None, metavar="I,J", help=argparse.SUPPRESS)
    # Hidden: report the first divergence unshrunk (a mutant's kill needs no minimal case).
    p.add_argument("--no-shrink", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mutants", action="store_true",
                   help="kill table: every seeded datapath fault vs difftest and vectors "
                        "(cilium-bpf: the source patches in ciliumbpf/mutants/)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
