"""`nodeport diagram`: draw a scenario's flow, the standard set, or CT/SNAT lifecycles.

  nodeport diagram SCENARIO [--flow NAME | --all] [--highlight N] -o FILE.svg|.png|.dot
  nodeport diagram SCENARIO --lifecycle -o FILE        (CT/SNAT entries of its flows)
  nodeport diagram --state snat|dsr|hybrid|local -o FILE
  nodeport diagram --standard -o DIR [--png]

A scenario with several flows and no --flow draws its first flow and says so on stderr;
--all writes one file per flow, named FILE's stem + "-" + flow name + FILE's suffix.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from model.errors import InputError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the diagram subcommand."""
    p = sub.add_parser("diagram", help="draw flow sequence diagrams and CT/SNAT lifecycles",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", help="scenario file, YAML or JSON")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.svg, .png, .dot); a directory with --standard")
    p.add_argument("--flow", help="name of the flow to draw (default: the first)")
    p.add_argument("--all", action="store_true", help="draw every flow, one file each")
    p.add_argument("--highlight", type=int, metavar="N",
                   help="leg number (as in `nodeport trace`) to draw as the violating leg")
    p.add_argument("--lifecycle", action="store_true",
                   help="draw the CT/SNAT entry lifecycle of the scenario's flows")
    p.add_argument("--state", metavar="MODE",
                   help="lifecycle of the built-in scenario for snat, dsr, hybrid or local")
    p.add_argument("--standard", action="store_true",
                   help="draw the standard set (SVG + DOT) into the -o directory")
    p.add_argument("--png", action="store_true", help="with --standard: also write PNGs")
    p.set_defaults(func=run)


def _check_combination(args: argparse.Namespace) -> None:
    chosen = [n for n in ("standard", "state") if getattr(args, n)]
    if len(chosen) > 1:
        raise InputError("--standard and --state exclude each other")
    if chosen and args.scenario:
        raise InputError(f"--{chosen[0]} takes no SCENARIO argument")
    if not chosen and not args.scenario:
        raise InputError("give a SCENARIO, --state MODE or --standard")
    if args.flow and args.all:
        raise InputError("--flow and --all exclude each other")
    if args.lifecycle and (args.flow or args.all or args.highlight is not None):
        raise InputError("--lifecycle draws all flows; drop --flow/--all/--highlight")
    if args.png and not args.standard:
        raise InputError("--png only applies to --standard (name the -o file .png instead)")


def _writable(out: Path, directory: bool = False) -> None:
    """Refuse an -o that cannot be written before any drawing work is done."""
    if directory:
        if out.exists() and not out.is_dir():
            raise InputError(f"-o {out}: --standard needs a directory")
        return
    if out.is_dir():
        raise InputError(f"-o {out}: is a directory; name a .svg, .png or .dot file")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"-o {out}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise InputError(f"-o {out}: directory {parent} is not writable")
            break


def _write(write: Any, dot: str, out: Path) -> None:
    try:
        write(dot, out)
    except OSError as exc:
        raise InputError(f"-o {out}: cannot write: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Draw what the arguments ask for; bad input raises InputError (exit 2)."""
    _check_combination(args)
    _writable(Path(args.output), directory=bool(args.standard))
    # Imported here: graphviz is only needed by this subcommand.
    from diagrams.catalogue import draw_standard, hosts_of
    from diagrams.lifecycle import scenario_lifecycle_dot, state_dot
    from diagrams.render import output_format, write
    from diagrams.sequence import trace_dot
    from model.flows import run_flows, trace_json
    from model.scenario import load

    if args.standard:
        out = Path(args.output)
        formats = ("svg", "dot", "png") if args.png else ("svg", "dot")
        try:
            written = draw_standard(out, formats)
        except OSError as exc:
            raise InputError(f"-o {out}: cannot write: {exc.strerror or exc}") from None
        print(f"wrote {len(written)} files to {out}")
        return 0
    output_format(args.output)
    if args.state:
        _write(write, state_dot(args.state), Path(args.output))
        return 0
    scenario = load(args.scenario)
    if not scenario.flows:
        raise InputError(f"{args.scenario}: flows: the scenario has no flows to draw")
    if args.lifecycle:
        _write(write, scenario_lifecycle_dot(
            scenario.world, scenario.flows,
            f"CT and SNAT entry lifecycle: {Path(args.scenario).name}", args.scenario),
            Path(args.output))
        return 0
    names = [f.name for f in scenario.flows]
    if args.flow is not None and args.flow not in names:
        raise InputError(f"{args.scenario}: no flow named {args.flow!r} "
                         f"(flows: {', '.join(names)})")
    _, traces = run_flows(scenario.world, scenario.flows)
    hosts = hosts_of(scenario.world)
    if args.all:
        out = Path(args.output)
        for t in traces:
            _write(write, trace_dot(trace_json(t), hosts=hosts),
                   out.with_name(f"{out.stem}-{t.spec.name}{out.suffix}"))
        return 0
    chosen = args.flow or names[0]
    if args.flow is None and len(names) > 1:
        print(f"nodeport: note: {args.scenario} has {len(names)} flows; drew {chosen!r} "
              "(use --flow NAME or --all)", file=sys.stderr)
    trace = trace_json(next(t for t in traces if t.spec.name == chosen))
    highlight = None
    if args.highlight is not None:
        if not 1 <= args.highlight <= len(trace["hops"]):
            raise InputError(f"--highlight {args.highlight}: flow {chosen!r} has legs "
                             f"1..{len(trace['hops'])}")
        highlight = args.highlight - 1
    _write(write, trace_dot(trace, highlight, hosts=hosts), Path(args.output))
    return 0
