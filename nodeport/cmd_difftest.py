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
    planned,
    text_progress,
)


def run(args: argparse.Namespace) -> int:
    """0 when model and datapath agree (or every fault is killed), 1 otherwise."""
    factory = load_factory(args.datapath, args.cilium_src)
    spec = args.datapath or DEFAULT_FACTORY
    if args.examples < 1:
        raise SystemExit(_usage("--examples must be at least 1"))
    if args.mutants:
        def note(name: str) -> None:
            if not args.quiet:
                print(f"  fault {name}...", file=sys.stderr, flush=True)
        rows = kill_table(args.examples, args.seed, factory, progress=note)
        print(format_kill_table(rows))
        return 0 if all(d or v for _n, d, v in rows) else 1
    progress = None if args.quiet else text_progress(planned(args.examples))
    summary = difftest(args.examples, args.seed, factory, spec=spec,
                       progress=progress)
    if progress is not None:
        print(file=sys.stderr)
    if summary.failure is not None:
        print(format_failure(summary.failure))
    print(summary.line())
    return 1 if summary.failure is not None else 0


def _usage(msg: str) -> int:
    print(f"nodeport difftest: error: {msg}", file=sys.stderr)
    return 2


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
    p.add_argument("--mutants", action="store_true",
                   help="kill table: every seeded datapath fault vs difftest and vectors")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
