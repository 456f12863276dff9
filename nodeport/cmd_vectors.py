"""`nodeport vectors FILE... [--datapath module:factory]`: run golden vectors."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from datapath.errors import VectorFileError
from datapath.vectors import DatapathFactory, run_vector_file


def _load_factory(spec: str) -> DatapathFactory:
    """Resolve module:factory; a bad spec is bad input (exit 2 via VectorFileError)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise VectorFileError("--datapath", "module:factory",
                              f"expected module:factory, got {spec!r}")
    try:
        obj: Any = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise VectorFileError("--datapath", spec, f"cannot load factory: {e}") from None
    if not callable(obj):
        raise VectorFileError("--datapath", spec, "factory is not callable")
    factory: DatapathFactory = obj
    return factory


def run(args: argparse.Namespace) -> int:
    """Run every file; 0 when all pass, 1 on any mismatch (bad input raises)."""
    factory = _load_factory(args.datapath) if args.datapath else None
    rc = 0
    for f in args.files:
        rep = run_vector_file(f, factory)
        print(rep.format())
        if not rep.ok:
            rc = 1
    return rc


def register(subparsers: Any) -> None:
    """Add the `vectors` subcommand to the nodeport CLI."""
    p = subparsers.add_parser("vectors", help="run golden datapath vector files")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML vector files")
    p.add_argument("--datapath", default=None, metavar="module:factory",
                   help="datapath factory (default: datapath.host:make_node)")
    p.set_defaults(func=run)
