"""Coverage-directed check selection: which units of each check execute which lines of the
mutated files, recorded once per tree, so that a mutant runs only the units that reach it."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from mutation.operators import Mutant
from mutation.targets import Check, Target

ALL = "*"  # the one unit of a check that cannot be split
DURATIONS_ENV = "NODEPORT_MUTATION_DURATIONS"  # where covplugin writes each test's seconds
# Context prefixes the pytest plugin (mutation/covplugin.py) switches to.
COLLECT, SETUP, CALL, TEARDOWN = "collect|", "setup|", "call|", "teardown|"
_RC = """[run]
parallel = True
include =
{include}
patch =
    fork
    subprocess
    _exit
sigterm = True
"""


SKIPPED: list[str] = []  # unreadable data files seen while reading (reported in the log)


class CoverageError(Exception):
    """A unit failed on the unmutated tree while being recorded."""


@attrs.frozen(kw_only=True)
class CovMap:
    """Per check: its units in order, the lines of each target file they execute, and the
    seconds the whole check took while recorded (a generous timeout base)."""

    tree: str
    units: dict[str, list[str]]
    lines: dict[str, dict[str, dict[int, list[int]]]]  # check -> file -> line -> unit indices
    seconds: dict[str, float]
    # check -> each unit's seconds while recorded (under coverage: slower, same ranking)
    unit_seconds: dict[str, list[float]] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the cache file."""
        return {"tree": self.tree, "units": self.units, "seconds": self.seconds,
                "unit_seconds": self.unit_seconds,
                "lines": {c: {f: {str(k): v for k, v in sorted(ls.items())}
                              for f, ls in fs.items()} for c, fs in self.lines.items()}}

    @staticmethod
    def from_json(d: dict[str, Any]) -> CovMap:
        """Inverse of to_json."""
        return CovMap(tree=d["tree"], units=d["units"], seconds=d["seconds"],
                      unit_seconds=d.get("unit_seconds", {}),
                      lines={c: {f: {int(k): v for k, v in ls.items()} for f, ls in fs.items()}
                             for c, fs in d["lines"].items()})

    def select(self, check: str, span: Span | None) -> list[str]:
        """The units of `check` that execute any line of the span (all of them for a
        module-level span, which runs at import), quickest first."""
        units = self.units[check]
        if span is None:
            hit: set[int] = set(range(len(units)))
        else:
            by_line = self.lines[check].get(span.path, {})
            hit = set()
            for line in range(span.first, span.last + 1):
                hit.update(by_line.get(line, ()))
        return [units[i] for i in self.quickest_first(check, sorted(hit))]

    def quickest_first(self, check: str, chosen: list[int]) -> list[int]:
        """Why: every check stops at its first failing unit, so a kill costs the units run
        before it. Quickest units first; pytest ids stay grouped by file (a module's
        fixtures are set up once), files by the time of their chosen tests."""
        secs = self.unit_seconds.get(check)
        units = self.units[check]
        if not chosen or not secs or len(secs) != len(units):
            return chosen
        if "::" not in units[chosen[0]]:
            return sorted(chosen, key=lambda i: (secs[i], i))
        files: dict[str, list[int]] = {}
        for i in chosen:
            files.setdefault(units[i].split("::")[0], []).append(i)
        groups = sorted(files.values(), key=lambda ix: (sum(secs[i] for i in ix), ix[0]))
        return [i for ix in groups for i in sorted(ix, key=lambda i: (secs[i], i))]


@attrs.frozen(kw_only=True)
class Span:
    """The lines whose execution a mutant needs: its statement (a compound statement's
    header up to the edit)."""

    path: str
    first: int
    last: int


def spans(source: bytes, rel: str, mutants: Iterable[Mutant]) -> dict[str, Span | None]:
    """Each mutant's span; None where the edit is not inside a function body (module and
    class bodies, decorators, defaults of module-level functions run at import time)."""
    tree = ast.parse(source)
    stmts: list[tuple[ast.stmt, bool]] = []  # (statement, inside a function body)

    def walk(body: list[ast.stmt], in_fn: bool) -> None:
        for s in body:
            stmts.append((s, in_fn))
            inner = in_fn or isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
            for field in ("body", "orelse", "finalbody"):
                walk(getattr(s, field, []) or [], inner)
            for h in getattr(s, "handlers", []) or []:
                walk(h.body, inner)
            for c in getattr(s, "cases", []) or []:
                walk(c.body, inner)

    walk(tree.body, False)
    starts = [0]
    starts += [i + 1 for i, b in enumerate(source) if b == 0x0A]
    out: dict[str, Span | None] = {}
    for m in mutants:
        end_line = max(i for i, s in enumerate(starts, 1) if s <= max(m.end - 1, m.start))
        pos, end = (m.line, m.col), (end_line, m.end - starts[end_line - 1])
        best: tuple[ast.stmt, bool] | None = None
        for s, in_fn in stmts:
            lo = min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", []))])
            hi = (s.end_lineno or s.lineno, s.end_col_offset or 0)
            if (lo, 0) <= pos and end <= hi and (
                    best is None or (s.lineno, s.col_offset) >= (best[0].lineno,
                                                                 best[0].col_offset)):
                best = (s, in_fn)
        if best is None or not best[1]:
            out[m.id] = None
            continue
        s = best[0]
        lo = min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", []))])
        compound = any(getattr(s, f, None) for f in ("body", "orelse", "handlers", "cases"))
        last = end_line if compound else (s.end_lineno or s.lineno)
        out[m.id] = Span(path=rel, first=lo, last=max(last, end_line))
    return out


def cache_path(root: Path, target: Target, tree: str) -> Path:
    """Where the map of one tree is kept (build/ is not committed)."""
    return root / "build" / "mutation" / f"coverage-{target.name}-{tree}.json"


def load_or_record(root: Path, ws: Path, target: Target, tree: str, env: dict[str, str],
                   log: Callable[[str], None]) -> CovMap:
    """The cached map of this tree, or record it in the workspace `ws` and cache it."""
    path = cache_path(root, target, tree)
    if path.exists():
        cm = CovMap.from_json(json.loads(path.read_text()))
        if cm.tree == tree and set(cm.units) == {c.name for c in target.checks}:
            log(f"coverage map: {path.relative_to(root)} (cached)")
            return cm
    cm = record(ws, target, tree, env, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cm.to_json(), separators=(",", ":")) + "\n")
    tmp.replace(path)
    log(f"coverage map: wrote {path.relative_to(root)}")
    return cm


def list_units(ws: Path, check: Check, env: dict[str, str]) -> list[str]:
    """The check's units on this tree (one line each from its lister), or the one ALL."""
    if check.units is None:
        return [ALL]
    out = subprocess.run(check.units(ws), cwd=ws, env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise CoverageError(f"listing the units of {check.name} failed: "
                            f"{(out.stdout + out.stderr).strip().splitlines()[-1:]}")
    names = [ln.strip() for ln in out.stdout.splitlines()]
    names = [n for n in names if "::" in n] if check.pytest else [n for n in names if n]
    if not names:
        raise CoverageError(f"{check.name} has no units")
    return names


def argv_for(ws: Path, check: Check, units: list[str], all_units: list[str]) -> list[str]:
    """The command that runs just these units (the check itself when they are all)."""
    if check.run_units is None or units == all_units:
        return check.argv(ws)
    return check.run_units(ws, units)


def record(ws: Path, target: Target, tree: str, env: dict[str, str],
           log: Callable[[str], None]) -> CovMap:
    """Run every unit of every check under coverage.py in the (unmutated) workspace."""
    base = ws.parent / "coverage"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    rc = base / "rc"
    rc.write_text(_RC.format(include="\n".join(f"    {ws / f}" for f in target.files)))
    units: dict[str, list[str]] = {}
    lines: dict[str, dict[str, dict[int, list[int]]]] = {}
    seconds: dict[str, float] = {}
    unit_seconds: dict[str, list[float]] = {}
    for check in target.checks:
        names = list_units(ws, check, env)
        units[check.name] = names
        t0 = time.monotonic()
        acc: dict[str, dict[int, set[int]]] = {}
        if check.pytest:
            unit_seconds[check.name] = _record_pytest(ws, check, names, base / check.name, rc,
                                                      env, acc)
        else:
            took = unit_seconds.setdefault(check.name, [])
            for i, name in enumerate(names):
                d = base / check.name / str(i)
                argv = (check.record_unit(ws, [name]) if check.record_unit is not None
                        else argv_for(ws, check, [name], names if name == ALL else []))
                t1 = time.monotonic()
                _run(ws, argv, d, rc, env, f"{check.name} unit {name}")
                took.append(round(time.monotonic() - t1, 2))
                for rel, ls in _read(d, ws).items():
                    for ln in ls:
                        acc.setdefault(rel, {}).setdefault(ln, set()).add(i)
        seconds[check.name] = round(time.monotonic() - t0, 1)
        lines[check.name] = {f: {ln: sorted(ix) for ln, ix in ls.items()}
                             for f, ls in acc.items()}
        log(f"coverage {check.name}: {len(names)} unit(s), "
            f"{sum(len(v) for v in acc.values())} lines, {seconds[check.name]:.0f} s"
            + (f"; {len(SKIPPED)} unreadable data file(s) skipped" if SKIPPED else ""))
        SKIPPED.clear()
    shutil.rmtree(base, ignore_errors=True)
    return CovMap(tree=tree, units=units, lines=lines, seconds=seconds,
                  unit_seconds=unit_seconds)


def _run(ws: Path, argv: list[str], data: Path, rc: Path, env: dict[str, str],
         what: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    e = dict(env, COVERAGE_PROCESS_START=str(rc), COVERAGE_FILE=str(data / ".coverage"))
    e.pop("COVERAGE_PROCESS_CONFIG", None)
    shutil.rmtree(ws / ".hypothesis", ignore_errors=True)
    out = subprocess.run(argv, cwd=ws, env=e, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-1:]
        raise CoverageError(f"{what} fails on the unmutated tree under coverage: {tail}")


def _read(d: Path, ws: Path, contexts: bool = False) -> dict[str, dict[int, set[str]]]:
    """Lines (with their contexts when asked) of every data file under d, by relative path."""
    from coverage import CoverageData
    from coverage.exceptions import CoverageException

    out: dict[str, dict[int, set[str]]] = {}
    for f in sorted(d.glob(".coverage*")):
        data = CoverageData(basename=str(f))
        try:
            data.read()
        except CoverageException:
            # A process killed while it started measuring (an idle pool worker terminated
            # at the pool's exit) leaves a file without data; prove cells, whose pool
            # workers do the work, are recorded in-process (Check.record_unit) for this.
            SKIPPED.append(str(f))
            continue
        for mf in data.measured_files():
            rel = os.path.relpath(mf, ws)
            by_line = out.setdefault(rel, {})
            if contexts:
                for ln, ctxs in data.contexts_by_lineno(mf).items():
                    by_line.setdefault(ln, set()).update(ctxs)
            else:
                for ln in data.lines(mf) or ():
                    by_line.setdefault(ln, set())
    return out


def _record_pytest(ws: Path, check: Check, names: list[str], d: Path, rc: Path,
                   env: dict[str, str], acc: dict[str, dict[int, set[int]]]) -> list[float]:
    """One pytest run with the plugin: a context per test phase (processes a test forks or
    starts carry it too); returns each test's seconds (set-up, call, tear-down)."""
    argv = [*check.argv(ws), "-p", "mutation.covplugin"]
    times = d / "durations.json"
    _run(ws, argv, d, rc, dict(env, **{DURATIONS_ENV: str(times)}), f"{check.name}")
    took: dict[str, float] = json.loads(times.read_text()) if times.exists() else {}
    index = {n: i for i, n in enumerate(names)}
    by_file: dict[str, list[int]] = {}
    for n, i in index.items():
        by_file.setdefault(n.split("::")[0], []).append(i)

    def owners(ctx: str) -> Iterable[int]:
        if ctx.startswith(CALL):
            i = index.get(ctx[len(CALL):])
            return [i] if i is not None else range(len(names))
        for prefix in (SETUP, TEARDOWN):  # fixtures may be shared by the module's tests
            if ctx.startswith(prefix):
                return by_file.get(ctx[len(prefix):].split("::")[0], range(len(names)))
        if ctx.startswith(COLLECT):
            return by_file.get(ctx[len(COLLECT):], range(len(names)))
        return range(len(names))  # start-up, conftest: every test needs it

    for rel, ls in _read(d, ws, contexts=True).items():
        for ln, ctxs in ls.items():
            for ctx in ctxs:
                acc.setdefault(rel, {}).setdefault(ln, set()).update(owners(ctx))
    return [round(took.get(n, 0.0), 2) for n in names]
