"""`python -m mutation`: list, run and report source mutants of model/ or datapath/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mutation.operators import Mutant
from mutation.report import (
    expand,
    load_classifications,
    load_speed,
    measured_results,
    render,
    summarise,
)
from mutation.runner import MutationError, all_mutants, load_results, run, select, tree_fingerprint
from mutation.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parent.parent


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected 1 <= I <= N, got {text!r}")
    return i, n


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """Sub-commands list, run and report; selection flags shared by list and run."""
    p = argparse.ArgumentParser(prog="python -m mutation", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("list", "run", "report"):
        sp = sub.add_parser(name)
        sp.add_argument("target", choices=sorted(TARGETS))
        sp.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
        if name == "report":
            sp.add_argument("--check", action="store_true",
                            help="exit 1 on an UNCLASSIFIED survivor or an out-of-date report")
            continue
        sp.add_argument("--files", nargs="+", metavar="FILE", help="only these files")
        sp.add_argument("--sample", type=_positive, metavar="K",
                        help="a seeded random sample of K mutants")
        sp.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
        sp.add_argument("--shard", type=_shard, metavar="I/N", help="every N-th, from the I-th")
        sp.add_argument("--ids", nargs="+", metavar="ID", help="exactly these mutants")
        sp.add_argument("--survivors", action="store_true",
                        help="only mutants whose stored result is 'survived' (after adding "
                             "a test or vector: kills stay kills, survivors are re-run)")
        if name == "run":
            sp.add_argument("--jobs", type=_positive, default=2, help="workers (default 2)")
            sp.add_argument("--timeout-factor", type=float, default=4.0,
                            help="a check times out after this many times its baseline")
            sp.add_argument("--timeout-min", type=float, default=30.0,
                            help="but never sooner than this many seconds")
            sp.add_argument("--fresh", action="store_true",
                            help="re-run mutants that already have a result for this tree")
    return p


def _selected(args: argparse.Namespace, target: Target) -> list[Mutant]:
    mutants = all_mutants(args.root, target, args.files)
    if args.survivors:
        stored = load_results(args.root / target.results)
        mutants = [m for m in mutants
                   if (r := stored.get(m.anchor) or stored.get(m.id)) is not None
                   and r.outcome == "survived"]
    return select(mutants, sample=args.sample, seed=args.seed, shard=args.shard, ids=args.ids)


def write_report(root: Path, target: Target) -> tuple[str, list[str]]:
    """Render the report from the stored results; returns (text, unclassified IDs)."""
    mutants = all_mutants(root, target)
    sources = {f: (root / f).read_bytes() for f in target.files}
    results = measured_results(mutants, load_results(root / target.results), sources)
    stale: list[str] = []
    classes = expand(load_classifications(root / target.classifications), mutants, stale)
    tree = tree_fingerprint(root, target)
    speed = load_speed(root / "mutation" / "speed.yaml", target.name)
    text = render(target, mutants, results, classes, tree, speed)
    if stale:  # entries whose edit is gone: their survivors, if any, show as unclassified
        text += ("\n## Stale classifications\n\nThese entries name an edit the code no longer "
                 "has; delete or rewrite them:\n\n" + "".join(f"- `{k}`\n" for k in stale))
    return text, summarise(target, mutants, results, classes, tree).unclassified + [
        f"{k} (stale classification)" for k in stale]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; set-up errors are one line and exit 2."""
    args = build_parser().parse_args(argv)
    target = TARGETS[args.target]
    root: Path = args.root
    try:
        if args.cmd == "list":
            for m in _selected(args, target):
                print(f"{m.id}\t{m.anchor}\t{m.describe()}")
            return 0
        if args.cmd == "run":
            chosen = _selected(args, target)
            classes = expand(load_classifications(root / target.classifications),
                             all_mutants(root, target))
            run(root, target, chosen, jobs=args.jobs,
                results=root / target.results, timeout_factor=args.timeout_factor,
                timeout_min=args.timeout_min, fresh=args.fresh or args.survivors,
                log=lambda s: print(s, file=sys.stderr, flush=True),
                equivalent=frozenset(k for k, c in classes.items() if c.kind == "equivalent"))
        text, unclassified = write_report(root, target)
        out = root / target.report
        if args.cmd == "report" and args.check:
            stale = not out.exists() or out.read_text() != text
            if stale:
                print(f"mutation: {target.report} is out of date; run "
                      f"`python -m mutation report {target.name}`", file=sys.stderr)
            if unclassified:
                print(f"mutation: {len(unclassified)} UNCLASSIFIED survivor(s) in "
                      f"{target.report}:", file=sys.stderr)
                for mid in unclassified:
                    print(f"  {mid}", file=sys.stderr)
            return 1 if stale or unclassified else 0
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {target.report} ({len(unclassified)} unclassified survivors)")
        return 0
    except MutationError as exc:
        print(f"mutation: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
