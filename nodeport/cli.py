"""Entry point: subcommands are registered by their own modules, errors exit 2 in one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from model.errors import InputError

# Each module defines register(subparsers); the parser sets args.func(args) -> int.
COMMANDS = ("trace", "prove", "diagram", "vectors", "difftest", "bench", "bpf_tests")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = _Parser(prog="nodeport", description=(
        "Formal model of Cilium's eBPF NodePort datapath: trace, prove, draw, validate."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nodeport.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nodeport.cmd_{name}":
                raise
            continue
        module.register(sub)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [InputError]
    try:
        from datapath.errors import VectorFileError
        types.append(VectorFileError)
    except ImportError:
        pass
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except _user_error_types() as exc:
        print(f"nodeport: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
