"""`nodeport bpf-tests --cilium-src DIR [PATTERN...]`: Cilium's own bpf/tests through our loader."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs: not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs: must be >= 1, got {n}")
    return n


def run(args: argparse.Namespace) -> int:
    """PASS/FAIL per test and a summary; 0 only when every test passed and every object ran."""
    from ciliumbpf.selftest import run_tests, test_sources
    from ciliumbpf.toolchain import cilium_tree, ensure_toolchain

    tree = cilium_tree(args.cilium_src)
    sources = test_sources(tree, args.patterns)
    ensure_toolchain()
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0, "ERROR": 0}
    broken = compile_s = run_s = 0.0
    t0 = time.monotonic()
    print(f"cilium {tree.version} at {tree.root}: {len(sources)} test objects")
    for res in run_tests(tree, sources, jobs=args.jobs):
        compile_s += res.compile_s
        run_s += res.run_s
        if res.error is not None:
            broken += 1
            print(f"{res.stage.upper()}-ERROR {res.source}: {res.error}", flush=True)
            continue
        for t in res.tests:
            counts[t.status] = counts.get(t.status, 0) + 1
            print(f"{t.status:<5} {res.source}:{t.name}", flush=True)
            if t.status != "PASS" and (args.verbose or t.status != "SKIP"):
                for line in t.detail:
                    print(f"      {line}")
    wall = time.monotonic() - t0
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped, "
          f"{counts['ERROR']} errors, {int(broken)} objects not run "
          f"({len(sources)} objects; compile {compile_s:.1f}s, load+run {run_s:.1f}s, "
          f"wall {wall:.1f}s, jobs {args.jobs})")
    ok = counts["FAIL"] == 0 and counts["ERROR"] == 0 and broken == 0 and counts["PASS"] > 0
    return 0 if ok else 1


def register(subparsers: Any) -> None:
    """Add the `bpf-tests` subcommand to the nodeport CLI."""
    p = subparsers.add_parser(
        "bpf-tests", help="build and run Cilium's own bpf/tests (the BPF loader's self-check)")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="glob on bpf/tests/*.c names, e.g. 'tc_nodeport*' (default: all)")
    p.add_argument("--cilium-src", default=None, metavar="DIR",
                   help="Cilium source tree (default: $NODEPORT_CILIUM_SRC)")
    p.add_argument("--jobs", "-j", type=_jobs, default=os.cpu_count() or 1,
                   help="objects compiled and run in parallel (default: all cores)")
    p.add_argument("--verbose", "-v", action="store_true", help="also show skipped tests' logs")
    p.set_defaults(func=run)
