"""Entry point: subcommands are registered by their own modules, errors exit 2 in one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from model.errors import InputError
from nodeport.term import colour_on, paint

# Each module defines register(subparsers); the parser sets args.func(args) -> int.
COMMANDS = ("trace", "prove", "diagram", "vectors", "difftest", "bench", "bpf_tests")
PREFIX = "nodeport: error: "

# Exit statuses, shown in every --help; a command adds its own meaning of 1 (and 3).
EXIT_CODES = {
    "trace": "1  -",
    "prove": "1  a result differs from the catalogue (or a mutant survived)\n"
             "  3  a solver timeout left a result unknown",
    "diagram": "1  -",
    "vectors": "1  a vector failed (the datapath disagrees with a golden vector)",
    "difftest": "1  model and datapath disagree (or a seeded fault survived)",
    "bench": "1  -",
    "bpf-tests": "1  a Cilium test failed, or an object could not be opened or loaded",
}


def _epilog(one: str | None) -> str:
    lines = ["exit status:", "  0  success"]
    if one and one != "1  -":
        lines.append(f"  {one}")
    lines.append("  2  bad input: one line on stderr starting 'nodeport: error:', naming the "
                 "file and key path or the option")
    return "\n".join(lines)


def _version() -> str:
    try:
        return metadata.version("nodeport-model")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown (not installed)"


def _one_line(message: str) -> str:
    """Any message as a single line (a newline in a key or a value cannot split it)."""
    return " ".join(message.split("\n")).replace("\r", " ")


def fail(message: str) -> None:
    """Print the one error line for bad input."""
    prefix = paint(PREFIX.rstrip(), "red", colour_on(sys.stderr)) + " "
    print(prefix + _one_line(message), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog.removeprefix("nodeport").strip()
        fail(f"{sub}: {message}" if sub else message)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = _Parser(
        prog="nodeport", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Formal model of Cilium's eBPF NodePort datapath: trace, prove, draw, "
                    "validate.", epilog=_epilog(None) + "\n\n'nodeport COMMAND --help' "
                                                         "describes each command.")
    parser.add_argument("--version", action="version", version=f"nodeport {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nodeport.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nodeport.cmd_{name}":
                raise
            continue
        module.register(sub)
    for name, p in sub.choices.items():
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        extra = _epilog(EXIT_CODES.get(name))
        p.epilog = f"{p.epilog}\n\n{extra}" if p.epilog else extra
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
    except _user_error_types() as exc:
        fail(str(exc))
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
