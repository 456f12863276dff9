"""Run mutants: one repository copy per worker, checks in order, first kill wins."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import attrs

from mutation.covmap import CoverageError, CovMap, Span, argv_for, load_or_record, spans
from mutation.operators import Mutant, mutants_of
from mutation.targets import Check, Target

_COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".hypothesis",
                                      ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                      "*.egg-info", "build", "out")
# What the checks read: a result is fresh only for the tree it was measured on.
_TREE_DIRS = ("model", "properties", "datapath", "diagrams", "nodeport", "tests", "vectors",
              "examples")


class MutationError(Exception):
    """A set-up problem (a check failing on the unmutated tree, a bad selection): exit 2."""


@attrs.frozen(kw_only=True)
class CheckRun:
    """One check on one mutant: pass, fail (a kill) or timeout (a kill, counted apart)."""

    name: str
    status: str  # pass | fail | timeout | uncovered (no unit executes the mutant's lines)
    seconds: float
    detail: str


@attrs.frozen(kw_only=True)
class Result:
    """A mutant's outcome: the first check that killed it, or survived."""

    id: str
    digest: str
    tree: str
    outcome: str  # killed | timeout | survived
    killer: str | None
    checks: tuple[CheckRun, ...]
    seconds: float
    anchor: str = ""  # Mutant.anchor; empty in rows measured before anchors existed
    local: str = ""  # Mutant.local_digest of the source it was measured on

    @property
    def key(self) -> str:
        """Where the results file keeps it: the anchor, or the line ID for an old row."""
        return self.anchor or self.id

    def to_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return attrs.asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Result:
        """Inverse of to_json."""
        checks = tuple(CheckRun(**c) for c in d["checks"])
        return Result(id=d["id"], digest=d["digest"], tree=d["tree"], outcome=d["outcome"],
                      killer=d["killer"], checks=checks, seconds=d["seconds"],
                      anchor=d.get("anchor", ""), local=d.get("local", ""))


def result_for(m: Mutant, results: dict[str, Result], source: bytes) -> Result | None:
    """The stored result of this very edit: same mutated function (anchored rows), or
    same mutated file (rows from before anchors); None when the edit has changed."""
    r = results.get(m.anchor)
    if r is not None and r.local == m.local_digest(source):
        return r
    r = results.get(m.id)
    if r is not None and not r.anchor and r.digest == m.digest(source):
        return r
    return None


def all_mutants(root: Path, target: Target, files: list[str] | None = None) -> list[Mutant]:
    """Every mutant of the target's files (or the chosen subset), in a stable order."""
    chosen = list(target.files)
    if files:
        unknown = [f for f in files if f not in target.files]
        if unknown:
            raise MutationError(f"--files: {unknown[0]} is not one of {', '.join(target.files)}")
        chosen = [f for f in target.files if f in files]
    out: list[Mutant] = []
    for rel in chosen:
        out.extend(mutants_of(root / rel, rel, immutable_writes=target.immutable_writes))
    return out


def select(mutants: list[Mutant], *, sample: int | None, seed: int,
           shard: tuple[int, int] | None, ids: list[str] | None) -> list[Mutant]:
    """Deterministic subset: explicit IDs, else a seeded sample, then every N-th for a shard."""
    chosen = mutants
    if ids:
        by_id = {m.id: m for m in mutants}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise MutationError(f"--ids: no mutant {missing[0]}")
        chosen = [by_id[i] for i in ids]
    elif sample is not None and sample < len(mutants):
        chosen = _stratified(mutants, sample, seed)
    if shard is not None:
        index, count = shard
        chosen = [m for i, m in enumerate(chosen) if i % count == index - 1]
    return chosen


def _stratified(mutants: list[Mutant], sample: int, seed: int) -> list[Mutant]:
    """A seeded sample split over files in proportion to their mutants (largest remainder,
    at least one per file while K allows), interleaved file by file so that a run stopped
    part-way has still measured every file in proportion."""
    by_file: dict[str, list[Mutant]] = {}
    for m in mutants:
        by_file.setdefault(m.path, []).append(m)
    files = sorted(by_file)
    total = len(mutants)
    quota = {f: sample * len(by_file[f]) // total for f in files}
    if sample >= len(files):
        for f in files:
            quota[f] = max(quota[f], 1)
    rest = sorted(files, key=lambda f: (-(sample * len(by_file[f]) % total), f))
    for f in rest:
        if sum(quota.values()) >= sample:
            break
        quota[f] += 1
    while sum(quota.values()) > sample:
        quota[max(files, key=lambda f: (quota[f], f))] -= 1
    rng = random.Random(seed)
    picks: dict[str, list[Mutant]] = {}
    for f in files:
        idx = sorted(rng.sample(range(len(by_file[f])), min(quota[f], len(by_file[f]))))
        picks[f] = [by_file[f][i] for i in idx]
    out: list[Mutant] = []
    for k in range(max((len(v) for v in picks.values()), default=0)):
        for f in files:
            if k < len(picks[f]):
                out.append(picks[f][k])
    return out


def _selected_tests(target: Target) -> set[str]:
    """The test files the target's checks name (tests/x.py of tests/x.py::name)."""
    return {a.split("::")[0] for c in target.checks for a in c.shown.split()
            if a.startswith("tests/")}


def tree_fingerprint(root: Path, target: Target) -> str:
    """Hash of every file the checks read, plus the check commands themselves. Of tests/
    only the files the checks select count (and the shared conftest.py, __init__.py): a
    test added for the other target leaves this target's results and coverage map valid."""
    h = hashlib.sha256()
    chosen = _selected_tests(target) | {"tests/conftest.py", "tests/__init__.py"}
    for d in _TREE_DIRS:
        for p in sorted((root / d).rglob("*")):
            rel = p.relative_to(root).as_posix()
            if d == "tests" and rel not in chosen:
                continue
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(rel.encode())
                h.update(p.read_bytes())
    for c in target.checks:
        h.update(c.shown.encode())
    return h.hexdigest()[:16]


def load_results(path: Path) -> dict[str, Result]:
    """The results file as {Result.key: Result}; missing file means none yet."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    rows = (Result.from_json(r) for r in data["results"])
    return {r.key: r for r in rows}


def _store(path: Path, result: Result) -> None:
    """Merge one result into the file under a lock (shards may share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        results = load_results(path)
        results[result.key] = result
        rows = [results[k].to_json() for k in sorted(results)]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"results": rows}, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()


@contextlib.contextmanager
def workspace(root: Path) -> Iterator[Path]:
    """A throw-away copy of the repository; the worktree itself is never written."""
    tmp = Path(tempfile.mkdtemp(prefix="nodeport-mutation-"))
    try:
        ws = tmp / "repo"
        shutil.copytree(root, ws, ignore=_COPY_IGNORE, symlinks=True)
        shared = root.parent / "shared"
        if shared.is_dir():  # the Cilium trees beside the copy, as beside the clone
            (tmp / "shared").symlink_to(shared)
        yield ws
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _env(ws: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ws)  # ahead of the editable install of the worktree
    env["PYTHONHASHSEED"] = "0"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_check(ws: Path, check: Check, timeout: float,
              argv: list[str] | None = None) -> CheckRun:
    """Run one check (or the given argv for some of its units) in the workspace; kill its
    whole process group on timeout."""
    shutil.rmtree(ws / ".hypothesis", ignore_errors=True)  # no examples carried over
    start = time.monotonic()
    proc = subprocess.Popen(argv or check.argv(ws), cwd=ws, env=_env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return CheckRun(name=check.name, status="timeout",
                        seconds=round(time.monotonic() - start, 2),
                        detail=f"no verdict within {timeout:.0f} s")
    secs = round(time.monotonic() - start, 2)
    if proc.returncode == 0:
        return CheckRun(name=check.name, status="pass", seconds=secs, detail="")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    tail = lines[-1] if lines else ""
    return CheckRun(name=check.name, status="fail", seconds=secs,
                    detail=f"exit {proc.returncode}: {tail[:160]}")


def _forget_bytecode(path: Path) -> None:
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def verify_workspace(ws: Path, target: Target) -> None:
    """The checks must import the copy, not the installed worktree."""
    pkgs = sorted({f.split("/")[0] for f in target.files})
    code = ("import importlib, sys\n"
            "print(*(importlib.import_module(p).__file__ for p in sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, *pkgs], cwd=ws, env=_env(ws),
                         capture_output=True, text=True, check=False)
    paths = out.stdout.split()
    if out.returncode != 0 or not paths or not all(p.startswith(str(ws)) for p in paths):
        raise MutationError(f"workspace imports {paths or out.stderr.strip()} instead of {ws}")


def baseline(root: Path, target: Target, log: Callable[[str], None]) -> dict[str, float]:
    """Every check must pass on the unmutated tree; returns each check's seconds."""
    secs: dict[str, float] = {}
    with workspace(root) as ws:
        verify_workspace(ws, target)
        for check in target.checks:
            run = run_check(ws, check, timeout=3600)
            if run.status != "pass":
                raise MutationError(f"check {check.name} fails on the unmutated tree: "
                                    f"{run.detail}")
            secs[check.name] = run.seconds
            log(f"baseline {check.name}: {run.seconds:.1f} s")
    return secs


def cached_baseline(root: Path, target: Target, tree: str,
                    log: Callable[[str], None]) -> dict[str, float]:
    """The baseline's seconds per check for this tree (build/, next to the coverage map)."""
    path = root / "build" / "mutation" / f"baseline-{target.name}-{tree}.json"
    if path.exists():
        secs: dict[str, float] = json.loads(path.read_text())
        if set(secs) == {c.name for c in target.checks}:
            log(f"baseline: {', '.join(f'{k} {v:.1f} s' for k, v in secs.items())} (cached)")
            return secs
    secs = baseline(root, target, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(secs) + "\n")
    return secs


def run_mutant(ws: Path, mutant: Mutant, target: Target, timeouts: dict[str, float],
               tree: str, cov: CovMap | None = None, span: Span | None = None) -> Result:
    """Apply the mutant in the workspace, run checks until the first kill, restore. With a
    coverage map, each check runs only its units that execute the mutant's span (all of
    them for a module-level edit); a check none of whose units does is 'uncovered'."""
    path = ws / mutant.path
    original = path.read_bytes()
    start = time.monotonic()
    runs: list[CheckRun] = []
    outcome, killer = "survived", None
    try:
        path.write_bytes(mutant.apply(original))
        _forget_bytecode(path)
        for check in target.checks:
            argv = None
            note = ""
            if cov is not None:
                units = cov.select(check.name, span)
                if not units:
                    where = (f"lines {span.first}-{span.last}" if span is not None
                             else "module level")
                    runs.append(CheckRun(name=check.name, status="uncovered", seconds=0.0,
                                         detail=f"no unit executes {where}"))
                    continue
                every = cov.units[check.name]
                argv = argv_for(ws, check, units, every)
                note = f"{len(units)}/{len(every)} units"
            run = run_check(ws, check, timeouts[check.name], argv)
            if note:
                run = attrs.evolve(run, detail=f"{note}; {run.detail}".rstrip("; "))
            runs.append(run)
            if run.status != "pass":
                outcome = "killed" if run.status == "fail" else "timeout"
                killer = check.name
                break
    finally:
        path.write_bytes(original)
        _forget_bytecode(path)
    return Result(id=mutant.id, digest=mutant.digest(original), tree=tree, outcome=outcome,
                  killer=killer, checks=tuple(runs),
                  seconds=round(time.monotonic() - start, 2), anchor=mutant.anchor,
                  local=mutant.local_digest(original))


def coverage_map(root: Path, target: Target, tree: str,
                 log: Callable[[str], None]) -> CovMap:
    """The tree's coverage map (cached under build/), recorded in a throw-away copy."""
    with workspace(root) as ws:
        verify_workspace(ws, target)
        try:
            return load_or_record(root, ws, target, tree, _env(ws), log)
        except CoverageError as exc:
            raise MutationError(str(exc)) from None


def run(root: Path, target: Target, mutants: list[Mutant], *, jobs: int, results: Path,
        timeout_factor: float, timeout_min: float, fresh: bool,
        log: Callable[[str], None], use_coverage: bool = True,
        equivalent: frozenset[str] = frozenset()) -> list[Result]:
    """Run the mutants that have no result for this tree yet; store each as it finishes.
    With `use_coverage` (the default) checks are narrowed to the units that reach each
    mutant (mutation/covmap.py); without, every check runs whole after a baseline."""
    tree = tree_fingerprint(root, target)
    have = load_results(results)
    todo: list[Mutant] = []
    older = kept = 0
    sources = {p: (root / p).read_bytes() for p in {m.path for m in mutants}}
    for m in mutants:
        r = result_for(m, have, sources[m.path])
        if fresh or r is None:
            todo.append(m)
        elif r.tree != tree:
            # Tests and vectors are added, not weakened: a kill on an older tree stays a
            # kill; so does a survivor classified equivalent, since its edit (checked by
            # result_for) is unchanged and no test can tell it apart; any other survivor
            # is measured again (--fresh re-runs everything).
            if r.outcome != "survived":
                older += 1
            elif m.id in equivalent:
                kept += 1
            else:
                todo.append(m)
    log(f"{len(mutants)} selected, {len(mutants) - len(todo)} already measured on tree "
        f"{tree}{f' ({older} kills from older trees kept)' if older else ''}"
        f"{f' ({kept} equivalent survivors kept)' if kept else ''}, "
        f"{len(todo)} to run with {jobs} job(s)")
    if not todo:
        return []
    cov: CovMap | None = None
    where: dict[str, Span | None] = {}
    if use_coverage:
        cov = coverage_map(root, target, tree, log)
        base = cached_baseline(root, target, tree, log)
        for rel in sorted({m.path for m in todo}):
            where.update(spans((root / rel).read_bytes(), rel,
                               [m for m in todo if m.path == rel]))
    else:
        base = baseline(root, target, log)
    timeouts = {k: max(timeout_min, timeout_factor * v) for k, v in base.items()}
    queue: Queue[Mutant] = Queue()
    for m in todo:
        queue.put(m)
    done: list[Result] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with workspace(root) as ws:
                verify_workspace(ws, target)
                while True:
                    try:
                        m = queue.get_nowait()
                    except Empty:
                        return
                    res = run_mutant(ws, m, target, timeouts, tree, cov, where.get(m.id))
                    with lock:
                        _store(results, res)
                        done.append(res)
                        log(f"[{len(done)}/{len(todo)}] {res.id}: {res.outcome}"
                            f"{' by ' + res.killer if res.killer else ''} ({res.seconds:.1f} s)")
        except BaseException as exc:  # surfaced after join
            errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done
