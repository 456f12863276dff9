"""`nodeport vectors FILE... [--datapath module:factory]`: run golden vectors."""

from __future__ import annotations

import argparse
from typing import Any

from datapath.adapter import load_factory
from datapath.vectors import DatapathFactory, run_vector_file


def run(args: argparse.Namespace) -> int:
    """Run every file; 0 when all pass, 1 on any mismatch (bad input raises)."""
    factory: DatapathFactory | None = (
        load_factory(args.datapath, args.cilium_src) if args.datapath else None)
    rc = 0
    for f in args.files:
        rep = run_vector_file(f, factory, version=getattr(factory, "cilium_version", None))
        print(rep.format())
        if not rep.ok:
            rc = 1
    return rc


def register(subparsers: Any) -> None:
    """Add the `vectors` subcommand to the nodeport CLI."""
    p = subparsers.add_parser("vectors", help="run golden datapath vector files")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML vector files")
    p.add_argument("--cilium-src", default=None, metavar="DIR",
                   help="Cilium tree for --datapath cilium-bpf (default: $NODEPORT_CILIUM_SRC)")
    p.add_argument("--datapath", default=None, metavar="module:factory",
                   help="datapath factory (default: datapath.host:make_node)")
    p.set_defaults(func=run)
