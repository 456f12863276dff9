"""The markdown report: kill tables, rates, and every survivor with its classification."""

from __future__ import annotations

import functools
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import attrs
import yaml

from mutation.operators import Mutant, operator_family
from mutation.runner import MutationError, Result, result_for
from mutation.targets import Target

CLASSES = ("equivalent", "gap")


@attrs.frozen(kw_only=True)
class Classification:
    """A survivor's class: equivalent (why) or gap (the missing property/test)."""

    kind: str
    why: str
    pin: str | None = None  # the edit it was written for (Mutant.pin): followed if renumbered


def load_classifications(path: Path) -> dict[str, Classification]:
    """The checked-in YAML keyed by mutant ID; malformed entries are one-line errors."""
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MutationError(f"{path}: not YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(doc, dict):
        raise MutationError(f"{path}: expected a mapping of mutant ID to classification")
    out: dict[str, Classification] = {}
    for key, entry in doc.items():
        where = f"{path}: {key}"
        if not isinstance(entry, dict):
            raise MutationError(f"{where}: expected a mapping with 'class' and 'why'")
        extra = set(entry) - {"class", "why", "pin"}
        if extra:
            raise MutationError(f"{where}.{sorted(extra)[0]}: unknown key")
        kind, why = entry.get("class"), entry.get("why")
        if kind not in CLASSES:
            raise MutationError(f"{where}.class: expected one of {', '.join(CLASSES)}")
        if not isinstance(why, str) or not why.strip():
            raise MutationError(f"{where}.why: a reason is required")
        pin = entry.get("pin")
        if pin is not None and not isinstance(pin, str):
            raise MutationError(f"{where}.pin: expected the edit as one string")
        out[str(key)] = Classification(kind=kind, why=" ".join(why.split()), pin=pin)
    return out


def _pinned(key: str, c: Classification, by_anchor: dict[str, Mutant],
            by_pin: dict[tuple[str, str], list[Mutant]]) -> str | None:
    """The ID of the mutant an anchored entry classes, or None."""
    m = by_anchor.get(key)
    if c.pin is None or (m is not None and m.pin() == c.pin):
        return m.id if m is not None else None
    same = by_pin.get((key.rsplit(":", 1)[0], c.pin), [])
    return same[0].id if len(same) == 1 else None


_KEY = re.compile(r"^(?P<file>[^:]+\.py):(?P<first>\d+)"
                  r"(?:-(?P<last>\d+)|:(?P<col>\d+)(?::[-a-z0-9_#]+)?)?$")
_ANCHOR = re.compile(r"^(?P<file>[^:]+\.py)::(?P<scope>[\w.<>]+)(?::[-a-z0-9_]+(?:#\d+)?)?$")


def _in_scope(scope: str, mu: Mutant) -> bool:
    return mu.anchor.startswith((scope + ":", scope + "."))


def _at_lines(path: str, first: int, last: int, col: int | None, mu: Mutant) -> bool:
    return mu.path == path and first <= mu.line <= last and (col is None or mu.col == col)


def expand(classes: dict[str, Classification], mutants: list[Mutant],
           stale: list[str] | None = None) -> dict[str, Classification]:
    """Class keys to mutant IDs. Anchored keys survive edits elsewhere in the file:
    `file::scope:operator[#n]` is one mutant, `file::scope` every mutant of a function (one
    reason for it all, e.g. a branch only a seeded fault reaches). Line keys (`file:line`,
    `file:first-last`, `file:line:col`, `file:line:col:operator`) still work until the
    lines move. A narrower key wins over a wider one, an exact one over all. An anchor with
    a pin classes the mutant of its function with that very edit: its own if it still has
    it, else the one it was renumbered to; none (appended to `stale`) if it is gone. The
    classifications file is shared by the targets: keys of files other than the mutants'
    are not theirs to class, nor stale."""
    out: dict[str, Classification] = {}
    exact: dict[str, Classification] = {}
    by_anchor = {m.anchor: m for m in mutants}
    files = {m.path for m in mutants}
    by_pin: dict[tuple[str, str], list[Mutant]] = {}
    for mu in mutants:
        by_pin.setdefault((mu.anchor.rsplit(":", 1)[0], mu.pin()), []).append(mu)
    ranked: list[tuple[int, int, Classification, Callable[[Mutant], bool]]] = []
    for key, c in classes.items():
        a = _ANCHOR.match(key)
        if a is not None:
            if key.count(":") == 3:
                found = _pinned(key, c, by_anchor, by_pin)
                if found is not None:
                    exact[found] = c
                elif stale is not None and a["file"] in files:
                    stale.append(key)
                continue
            ranked.append((2, 0, c, functools.partial(_in_scope, f"{a['file']}::{a['scope']}")))
            continue
        m = _KEY.match(key)
        if m is None:
            raise MutationError(f"{key}: expected file::scope[:operator[#n]], "
                                "file:line:col:operator, file:line:col, file:line or "
                                "file:first-last")
        if key.count(":") == 3:
            exact[key] = c
            continue
        first = int(m["first"])
        last = int(m["last"] or first)
        col = int(m["col"]) if m["col"] is not None else None
        ranked.append((0 if col is not None else 1, last - first, c,
                       functools.partial(_at_lines, m["file"], first, last, col)))
    for _w, _n, c, hit in sorted(ranked, key=lambda r: r[:2]):
        for mu in mutants:
            if hit(mu):
                out.setdefault(mu.id, c)
    out.update(exact)
    return out


@attrs.frozen(kw_only=True)
class Summary:
    """Counts the report and --check are built from."""

    total: int
    measured: int
    by_killer: dict[str, int]
    timeouts: dict[str, int]
    survived: list[str]
    unclassified: list[str]
    stale: int


def load_speed(path: Path, target: str) -> str | None:
    """The before/after timing note of a target from mutation/speed.yaml, if recorded."""
    if not path.exists():
        return None
    doc = yaml.safe_load(path.read_text()) or {}
    entry = doc.get(target) if isinstance(doc, dict) else None
    if not isinstance(entry, dict):
        return None
    try:
        return (f"Seconds per mutant, same seeded sample (`--sample {entry['sample']} --seed "
                f"{entry['seed']}`), one job: median **{entry['before_median']} s** (mean "
                f"{entry['before_mean']} s) running every check whole, median **"
                f"{entry['after_median']} s** (mean {entry['after_mean']} s) with "
                f"coverage-directed selection. {entry.get('note', '')}").rstrip()
    except KeyError as exc:
        raise MutationError(f"{path}: {target}.{exc.args[0]}: missing") from None


def uncovered(r: Result) -> bool:
    """Survived without running: no unit of any check executes the mutant's lines."""
    return r.outcome == "survived" and bool(r.checks) and all(
        c.status == "uncovered" for c in r.checks)


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f}%" if d else "n/a"


def summarise(target: Target, mutants: list[Mutant], results: dict[str, Result],
              classes: dict[str, Classification], tree: str) -> Summary:
    """Counts over the mutants that have a result for their current edit."""
    by_killer: Counter[str] = Counter()
    timeouts: Counter[str] = Counter()
    survived: list[str] = []
    measured = stale = 0
    for m in mutants:
        r = results.get(m.id)
        if r is None:
            continue
        measured += 1
        stale += r.tree != tree
        if r.outcome == "killed" and r.killer:
            by_killer[r.killer] += 1
        elif r.outcome == "timeout" and r.killer:
            timeouts[r.killer] += 1
        else:
            survived.append(m.id)
    return Summary(total=len(mutants), measured=measured, by_killer=dict(by_killer),
                   timeouts=dict(timeouts), survived=survived,
                   unclassified=[s for s in survived if s not in classes], stale=stale)


def measured_results(mutants: list[Mutant], results: dict[str, Result],
                     sources: dict[str, bytes]) -> dict[str, Result]:
    """Results whose recorded edit is the mutant's current edit, keyed by the mutant's
    current ID (lines may have moved)."""
    out: dict[str, Result] = {}
    for m in mutants:
        r = result_for(m, results, sources[m.path])
        if r is not None:
            out[m.id] = r
    return out


def render(target: Target, mutants: list[Mutant], results: dict[str, Result],
           classes: dict[str, Classification], tree: str, speed: str | None = None) -> str:
    """The whole markdown document."""
    s = summarise(target, mutants, results, classes, tree)
    names = [c.name for c in target.checks]
    first = names[0]
    killed = sum(s.by_killer.values())
    hung = sum(s.timeouts.values())
    lines = [
        f"# Mutation check: `{target.name}`",
        "",
        f"Real source mutations of {', '.join(f'`{f}`' for f in target.files)}, each run in a",
        "temporary copy of the repository against the checks below, in order, stopping at the",
        "first check that kills it. Regenerate with `bash scripts/mutation.sh "
        f"{target.name}` (see [mutation.md](mutation.md));",
        f"survivor classes live in `{target.classifications}`.",
        "",
        "Each check runs only its units (prove: configuration cells; difftest: campaign",
        "units; vectors: files; tests: pytest node ids) that execute the mutant's lines on",
        "the unmutated tree, as recorded once per tree by coverage.py",
        "(`mutation/covmap.py`); an edit outside any function body runs every unit. A",
        "check none of whose units reaches the mutant cannot kill it and is skipped; a",
        "mutant no check reaches survives as *not covered* without running anything.",
        "",
        *([speed, ""] if speed else []),
        "## Checks",
        "",
        "| # | check | command | why |",
        "|---|---|---|---|",
    ]
    for i, c in enumerate(target.checks, 1):
        lines.append(f"| {i} | {c.name} | `{c.shown}` | {c.why} |")
    lines += [
        "",
        "## Rates",
        "",
        f"- Mutants generated: **{s.total}**; measured: **{s.measured}**"
        + (f" (the rest not run yet: `python -m mutation run {target.name} --jobs 1` "
           "resumes, skipping what is measured)" if s.measured < s.total else "")
        + (f"; {s.stale} measured on an older tree" if s.stale else "") + ".",
    ]
    for n in names:
        lines.append(f"- Killed first by **{n}**: {s.by_killer.get(n, 0)}"
                     + (f", plus {s.timeouts[n]} by timeout in it" if s.timeouts.get(n) else ""))
    ran = {n: sum(1 for m in mutants if (r := results.get(m.id)) is not None
                  and any(c.name == n and c.status != "uncovered" for c in r.checks))
           for n in names}
    dark = sum(1 for m in mutants if (r := results.get(m.id)) is not None and uncovered(r))
    lines += [
        f"- Survived: **{len(s.survived)}** ({dark} not covered by any check; "
        f"{len(s.unclassified)} unclassified).",
        f"- {first} ran on {ran[first]} of {s.measured} mutants (the others' lines it never "
        "executes: it cannot kill them); "
        + ", ".join(f"{n} on {ran[n]}" for n in names[1:]) + " (after earlier kills).",
        f"- Kill rate of **{first} alone**: "
        f"{_pct(s.by_killer.get(first, 0) + s.timeouts.get(first, 0), s.measured)}"
        f" ({s.by_killer.get(first, 0)} + {s.timeouts.get(first, 0)} timeouts of {s.measured}).",
        f"- Kill rate of **{' + '.join(names)}**: {_pct(killed + hung, s.measured)}"
        f" ({killed} + {hung} timeouts of {s.measured}).",
    ]
    gaps = sum(1 for x in s.survived if x in classes and classes[x].kind == "gap")
    equiv = sum(1 for x in s.survived if x in classes and classes[x].kind == "equivalent")
    if s.measured:
        lines.append(f"- Survivors: {equiv} equivalent, {gaps} gaps, "
                     f"{len(s.unclassified)} UNCLASSIFIED. Score without equivalents: "
                     f"{_pct(killed + hung, s.measured - equiv)}.")
    secs = [r.seconds for m in mutants if (r := results.get(m.id)) is not None]
    if secs:
        lines.append(f"- Time per mutant (wall, all checks it reached): median "
                     f"{statistics.median(secs):.1f} s, mean {statistics.mean(secs):.1f} s, "
                     f"sum {sum(secs) / 60:.1f} min over all workers.")
    lines += ["", "## Per file", "", _table(target, mutants, results, lambda m: m.path), "",
              "## Per operator", "",
              _table(target, mutants, results, lambda m: operator_family(m.operator)), ""]
    lines += _survivors(mutants, results, classes)
    lines += _timeouts(mutants, results)
    lines += _kills(mutants, results)
    return "\n".join(lines).rstrip() + "\n"


def _table(target: Target, mutants: list[Mutant], results: dict[str, Result],
           key: object) -> str:
    names = [c.name for c in target.checks]
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for m in mutants:
        k = key(m)  # type: ignore[operator]
        rows[k]["mutants"] += 1
        r = results.get(m.id)
        if r is None:
            continue
        rows[k]["measured"] += 1
        col = r.killer if r.outcome == "killed" else (
            "timeout" if r.outcome == "timeout" else "survived")
        rows[k][col or "survived"] += 1
    head = ["", "mutants", "measured", *names, "timeout", "survived", "killed %"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in sorted(rows):
        c = rows[k]
        dead = sum(c[n] for n in names) + c["timeout"]
        out.append("| " + " | ".join([f"`{k}`", str(c["mutants"]), str(c["measured"]),
                                      *(str(c[n]) for n in names), str(c["timeout"]),
                                      str(c["survived"]), _pct(dead, c["measured"])]) + " |")
    return "\n".join(out)


def _survivors(mutants: list[Mutant], results: dict[str, Result],
               classes: dict[str, Classification]) -> list[str]:
    out = ["## Survivors", "",
           "Each survivor passed every check. `equivalent`: no input can tell it from the",
           "original (the reason says why); `gap`: a behaviour no check pins (the reason says",
           "which property or test is missing); UNCLASSIFIED makes `--check` fail.", ""]
    rows = [(m, classes.get(m.id)) for m in mutants
            if (r := results.get(m.id)) is not None and r.outcome == "survived"]
    if not rows:
        return [*out, "None.", ""]
    out += ["| mutant | edit | reached | class | why |", "|---|---|---|---|---|"]
    for m, c in rows:
        kind = c.kind if c else "**UNCLASSIFIED**"
        why = (c.why if c else "").replace("|", "\\|")
        reached = "not covered" if uncovered(results[m.id]) else "covered"
        out.append(f"| `{m.id}` | {m.describe().replace('|', chr(92) + '|')} | {reached} | "
                   f"{kind} | {why} |")
    return [*out, ""]


def _timeouts(mutants: list[Mutant], results: dict[str, Result]) -> list[str]:
    rows = [(m, r) for m in mutants
            if (r := results.get(m.id)) is not None and r.outcome == "timeout"]
    if not rows:
        return []
    out = ["## Killed by timeout", "", "| mutant | edit | check |", "|---|---|---|"]
    out += [f"| `{m.id}` | {m.describe().replace('|', chr(92) + '|')} | {r.killer} |"
            for m, r in rows]
    return [*out, ""]


def _kills(mutants: list[Mutant], results: dict[str, Result]) -> list[str]:
    rows = [(m, r) for m in mutants
            if (r := results.get(m.id)) is not None and r.outcome == "killed"]
    if not rows:
        return []
    out = ["## Kill table", "", "<details><summary>Every killed mutant and the check that "
           f"killed it ({len(rows)})</summary>", "", "| mutant | killed by | first line |",
           "|---|---|---|"]
    for m, r in rows:
        detail = r.checks[-1].detail.replace("|", "\\|").replace("`", "'")
        out.append(f"| `{m.id}` | {r.killer} | {detail[:90]} |")
    return [*out, "", "</details>", ""]
