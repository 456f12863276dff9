"""Real-datapath mutants: known-bad source patches applied to a shadow copy of the user's tree.

Each `ciliumbpf/mutants/*.diff` is a zero-context unified diff (a `# ` line says what the
bug is) against a tree's `bpf/`. `shadow_tree` (ciliumbpf.toolchain) gives every mutant its
own copy under the build directory, symlinks to the user's files except the patched ones,
so the user's tree is never written and the compile cache keys (content of `bpf/`) keep
mutant and pristine objects apart. The kill table runs the same vectors and the same
difftest campaign on each: a mutant is killed when either fails on it. The unmutated tree
runs first as the control row: it must pass both, or no kill means anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import attrs

from ciliumbpf.errors import BpfInputError
from ciliumbpf.toolchain import CiliumTree, build_dir, cilium_tree, shadow_tree

MUTANTS_DIR = Path(__file__).resolve().parent / "mutants"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@attrs.frozen(kw_only=True)
class Hunk:
    """Lines `old` at 1-based `start` become `new`."""

    start: int
    old: tuple[str, ...]
    new: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Mutant:
    """One known-bad change: name, what it breaks, and its hunks per bpf/-relative file."""

    name: str
    description: str
    patches: dict[str, tuple[Hunk, ...]]


def parse_diff(text: str, where: str) -> tuple[str, dict[str, tuple[Hunk, ...]]]:
    """A unified diff (any context) into hunks per file; `# ` lines are the description."""
    desc: list[str] = []
    files: dict[str, list[Hunk]] = {}
    cur: str | None = None
    hunk: tuple[int, list[str], list[str]] | None = None

    def flush() -> None:
        if hunk is not None and cur is not None:
            files[cur].append(Hunk(start=hunk[0], old=tuple(hunk[1]), new=tuple(hunk[2])))

    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# ") and cur is None:
            desc.append(line[2:].strip())
        elif line.startswith("--- "):
            flush()
            hunk = None
        elif line.startswith("+++ "):
            path = line[4:].split("\t")[0].strip()
            path = path[2:] if path.startswith("b/") else path
            if not path.startswith("bpf/"):
                raise BpfInputError(f"{where}:{n}: patched file {path!r} is not under bpf/")
            cur = path.removeprefix("bpf/")
            files.setdefault(cur, [])
        elif (m := _HUNK.match(line)) is not None:
            flush()
            if cur is None:
                raise BpfInputError(f"{where}:{n}: hunk before a +++ file line")
            hunk = (int(m.group(1)), [], [])
        elif hunk is not None and line[:1] in ("-", "+", " "):
            if line[0] in ("-", " "):
                hunk[1].append(line[1:])
            if line[0] in ("+", " "):
                hunk[2].append(line[1:])
        elif line.strip():
            raise BpfInputError(f"{where}:{n}: not a unified diff line: {line[:40]!r}")
    flush()
    if not files or not any(files.values()):
        raise BpfInputError(f"{where}: no hunks")
    return " ".join(desc), {k: tuple(v) for k, v in files.items()}


def apply_hunks(text: str, hunks: tuple[Hunk, ...], where: str) -> str:
    """Apply hunks: at their line, or else where the old lines occur exactly once (another
    release of the file); anything else is an error, never a silent partial patch."""
    lines = text.split("\n")
    for h in sorted(hunks, key=lambda h: -h.start):
        n = len(h.old)
        at = h.start - 1
        if list(lines[at:at + n]) != list(h.old):
            hits = [i for i in range(len(lines) - n + 1) if lines[i:i + n] == list(h.old)]
            if len(hits) != 1:
                raise BpfInputError(
                    f"{where}: hunk at line {h.start} does not apply to this tree "
                    f"({'not found' if not hits else f'{len(hits)} places'})")
            at = hits[0]
        lines[at:at + n] = list(h.new)
    return "\n".join(lines)


def load_mutants(directory: Path = MUTANTS_DIR) -> list[Mutant]:
    """Every `*.diff` in the directory, by name."""
    out = []
    for f in sorted(Path(directory).glob("*.diff")):
        desc, patches = parse_diff(f.read_text(), str(f))
        out.append(Mutant(name=f.stem, description=desc, patches=patches))
    return out


def mutant_tree(tree: CiliumTree, mutant: Mutant) -> CiliumTree:
    """A shadow copy of `tree` with the mutant applied (under the build dir)."""
    patched = {rel: apply_hunks((tree.bpf / rel).read_text(), hunks, f"{mutant.name}: {rel}")
               for rel, hunks in mutant.patches.items()}
    dest = build_dir() / "shadow" / tree.version / f"mutant-{mutant.name}"
    return shadow_tree(tree, patched, dest)


@attrs.frozen(kw_only=True)
class KillRow:
    """One line of the kill table (`mutant` None: the unmutated control run)."""

    mutant: Mutant | None
    difftest: bool  # the campaign found a divergence
    vectors: tuple[str, ...]  # vector files that fail
    error: str = ""  # the patch did not apply, or a build failed

    @property
    def killed(self) -> bool:
        """A divergence or a failing vector."""
        return self.difftest or bool(self.vectors)


def kill_table(cilium_src: str | None, examples: int, seed: int,
               vector_files: list[Path],
               progress: Callable[[str], None] | None = None,
               mutants: list[Mutant] | None = None) -> list[KillRow]:
    """The control row, then one row per mutant: which of difftest and the vectors kill it."""
    from ciliumbpf.adapter import Factory
    from datapath.diffgen import difftest
    from datapath.vectors import run_vector_file

    tree = cilium_tree(cilium_src)
    rows = []
    for m in [None, *(mutants if mutants is not None else load_mutants())]:
        if progress is not None:
            progress(m.name if m is not None else "(unmutated)")
        try:
            t = mutant_tree(tree, m) if m is not None else tree
            factory = Factory(str(t.root))
            bad = []
            for f in vector_files:
                rep = run_vector_file(f, factory, version=factory.cilium_version)
                if not rep.ok:
                    bad.append(Path(f).name)
            s = difftest(examples, seed, factory, shrink=False)
            factory.free()
        except BpfInputError as e:
            rows.append(KillRow(mutant=m, difftest=False, vectors=(), error=str(e)))
            continue
        rows.append(KillRow(mutant=m, difftest=s.failure is not None, vectors=tuple(bad)))
    return rows


def format_kill_table(rows: list[KillRow]) -> str:
    """mutant | difftest | vectors, the control row first, then the survivors count."""
    out = [f"{'mutant':30s} {'difftest':9s} vectors"]
    for r in rows:
        name = r.mutant.name if r.mutant is not None else "(unmutated control)"
        if r.error:
            out.append(f"{name:30s} {'ERROR':9s} {r.error}")
            continue
        out.append(f"{name:30s} {'KILLED' if r.difftest else '-':9s} "
                   f"{', '.join(r.vectors) if r.vectors else '-'}")
    muts = [r for r in rows if r.mutant is not None]
    alive = [r.mutant.name for r in muts if r.mutant is not None and not r.killed]
    control = [r for r in rows if r.mutant is None]
    ok = bool(control) and not control[0].killed and not control[0].error
    out.append(f"{len(muts)} mutants: difftest kills {sum(r.difftest for r in muts)}, "
               f"vectors kill {sum(bool(r.vectors) for r in muts)}, survivors {len(alive)}"
               + (f" ({', '.join(alive)})" if alive else "")
               + ("" if ok else "; CONTROL FAILED: the unmutated tree does not pass"))
    return "\n".join(out)


def all_killed(rows: list[KillRow]) -> bool:
    """The control passes and every mutant is killed (errors count as not killed)."""
    control = [r for r in rows if r.mutant is None]
    return (bool(control) and not control[0].killed and not control[0].error
            and all(r.killed and not r.error for r in rows if r.mutant is not None))
