"""The runner and report on a tiny repository: kills, survivors, timeouts, classes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mutation.report import (
    Classification,
    expand,
    load_classifications,
    measured_results,
    render,
    summarise,
)
from mutation.runner import MutationError, all_mutants, load_results, run, select
from mutation.targets import TARGETS, Check, Target

MOD = '''def inc(x: int) -> int:
    return x + 1


def unused() -> int:
    return 5


def spin(n: int) -> int:
    while n > 0:
        n -= 1
    return n
'''
CHECK = "import pkg.mod as m; assert m.inc(1) == 2; assert m.spin(3) == 0"
KILLED, SURVIVOR, HANG = ("pkg/mod.py:2:11:binop-add-sub", "pkg/mod.py:6:11:const-inc",
                          "pkg/mod.py:11:8:stmt-del")


def _repo(tmp_path: Path) -> tuple[Path, Target]:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text(MOD)
    check = Check(name="trivial", argv=lambda ws: [sys.executable, "-c", CHECK],
                  shown="python -c ...", why="test")
    target = Target(name="tiny", files=("pkg/mod.py",), checks=(check,),
                    immutable_writes=False, report="docs/tiny.md",
                    results="mutation/results/tiny.json",
                    classifications="mutation/classifications.yaml")
    return root, target


def test_killed_survived_and_timeout_reported(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    mutants = select(all_mutants(root, target), sample=None, seed=0, shard=None,
                     ids=[KILLED, SURVIVOR, HANG])
    results_file = root / target.results
    done = run(root, target, mutants, jobs=2, results=results_file, timeout_factor=1.0,
               timeout_min=3.0, fresh=False, log=lambda s: None)
    by_id = {r.id: r for r in done}
    assert by_id[KILLED].outcome == "killed" and by_id[KILLED].killer == "trivial"
    assert "AssertionError" in by_id[KILLED].checks[0].detail
    assert by_id[SURVIVOR].outcome == "survived" and by_id[SURVIVOR].killer is None
    # unused() never runs: the coverage map says so and nothing was run for it
    assert [c.status for c in by_id[SURVIVOR].checks] == ["uncovered"]
    assert by_id[HANG].outcome == "timeout" and by_id[HANG].killer == "trivial"
    # The worktree was never mutated; results were stored; a re-run skips them.
    assert (root / "pkg" / "mod.py").read_text() == MOD
    assert {r.id for r in load_results(results_file).values()} == {KILLED, SURVIVOR, HANG}
    assert run(root, target, mutants, jobs=1, results=results_file, timeout_factor=1.0,
               timeout_min=3.0, fresh=False, log=lambda s: None) == []

    everything = all_mutants(root, target)
    stored = measured_results(everything, load_results(results_file),
                              {"pkg/mod.py": MOD.encode()})
    unclassified = render(target, everything, stored, {}, tree=stored[KILLED].tree)
    assert f"| `{SURVIVOR}` | `5` -> `(6)` | not covered | **UNCLASSIFIED** |" in unclassified
    assert "Kill rate of **trivial alone**: 66.7% (1 + 1 timeouts of 3)" in unclassified
    assert "## Killed by timeout" in unclassified
    classes = {SURVIVOR: Classification(kind="gap", why="nothing calls unused()")}
    classified = render(target, everything, stored, classes, tree=stored[KILLED].tree)
    assert (f"| `{SURVIVOR}` | `5` -> `(6)` | not covered | gap | nothing calls unused() |"
            in classified)
    s = summarise(target, everything, stored, classes, tree=stored[KILLED].tree)
    assert s.survived == [SURVIVOR] and s.unclassified == []


def test_a_check_failing_on_the_original_is_refused(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    (root / "pkg" / "mod.py").write_text(MOD.replace("x + 1", "x + 2"))
    mutants = all_mutants(root, target)[:1]
    with pytest.raises(MutationError, match="fails on the unmutated tree"):
        run(root, target, mutants, jobs=1, results=root / target.results,
            timeout_factor=1.0, timeout_min=3.0, fresh=False, log=lambda s: None)


def test_selection_is_deterministic(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    ms = all_mutants(root, target)
    a = select(ms, sample=4, seed=7, shard=None, ids=None)
    assert a == select(ms, sample=4, seed=7, shard=None, ids=None) and len(a) == 4
    shards = [select(ms, sample=None, seed=0, shard=(i, 3), ids=None) for i in (1, 2, 3)]
    assert sorted(m.id for s in shards for m in s) == sorted(m.id for m in ms)


def test_sample_is_stratified_by_file() -> None:
    root = Path(__file__).resolve().parents[1]
    ms = all_mutants(root, TARGETS["model"])
    picked = select(ms, sample=40, seed=1, shard=None, ids=None)
    per_file = {f: sum(m.path == f for m in picked) for f in TARGETS["model"].files}
    assert len(picked) == 40 and len({m.id for m in picked}) == 40
    for f, n in per_file.items():
        share = 40 * sum(m.path == f for m in ms) / len(ms)
        assert n >= 1 and abs(n - share) < 1.5, (f, n, share)
    # interleaved: the first five picks are five different files
    assert len({m.path for m in picked[:5]}) == 5


@pytest.mark.parametrize(("text", "key"), [
    ("a:1:2:op: {class: maybe, why: x}", "a:1:2:op.class"),
    ("a:1:2:op: {class: gap}", "a:1:2:op.why"),
    ("a:1:2:op: {class: gap, why: x, extra: 1}", "a:1:2:op.extra"),
    ("a:1:2:op: [gap]", "a:1:2:op"),
])
def test_bad_classification_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(MutationError, match=key.replace(".", r"\.")):
        load_classifications(path)


def test_committed_classifications_load() -> None:
    root = Path(__file__).resolve().parent.parent
    classes = load_classifications(root / "mutation" / "classifications.yaml")
    assert classes
    assert all(len(k.split(":")) in (2, 3, 4) for k in classes), "file::scope[:operator]"
    assert all("::" in k for k in classes), "committed classes are anchored, not by line"


def test_line_and_range_keys_class_every_mutant_there(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    ms = all_mutants(root, target)
    exact = Classification(kind="gap", why="exact")
    line = Classification(kind="equivalent", why="line")
    col = Classification(kind="equivalent", why="col")
    got = expand({"pkg/mod.py:6": line, "pkg/mod.py:10-11": line, SURVIVOR: exact,
                  "pkg/mod.py:11:8": col}, ms)
    assert got[SURVIVOR] is exact  # an exact key wins over its line's
    assert {k for k, v in got.items() if v is line} == {
        m.id for m in ms if m.line in (6, 10, 11) and m.id != SURVIVOR
        and (m.line, m.col) != (11, 8)}
    assert got[HANG] is col  # a column key wins over a line range
    odd = "pkg/mod.py:2:11:evolve-drop-rev_nat_index"  # operator names may hold underscores
    assert expand({odd: exact}, ms) == {odd: exact}
    with pytest.raises(MutationError, match="file:first-last"):
        expand({"pkg/mod.py": line}, ms)


def test_results_and_classes_follow_a_function_when_lines_move(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    results_file = root / target.results
    ms = select(all_mutants(root, target), sample=None, seed=0, shard=None,
                ids=[KILLED, SURVIVOR])
    run(root, target, ms, jobs=1, results=results_file, timeout_factor=1.0, timeout_min=3.0,
        fresh=False, log=lambda s: None)
    # a function added above, and unused() itself changed: lines move for everything
    moved = "def added() -> int:\n    return 0\n\n\n" + MOD.replace("return 5", "return 7")
    (root / "pkg" / "mod.py").write_text(moved)
    now = all_mutants(root, target)
    got = measured_results(now, load_results(results_file), {"pkg/mod.py": moved.encode()})
    inc_add = next(m for m in now if m.anchor == "pkg/mod.py::inc:binop-add-sub")
    assert inc_add.id != KILLED and got[inc_add.id].outcome == "killed"  # same edit, moved
    assert not any(m.anchor.startswith("pkg/mod.py::unused:") and m.id in got for m in now)
    unused_inc = next(m for m in now if m.anchor == "pkg/mod.py::unused:const-inc")
    log: list[str] = []
    again = run(root, target, [inc_add, unused_inc], jobs=1, results=results_file,
                timeout_factor=1.0, timeout_min=3.0, fresh=False, log=log.append)
    assert "2 selected, 1 already measured" in log[0] and "1 to run" in log[0]
    assert [r.anchor for r in again] == [unused_inc.anchor]  # only the changed function
    why = Classification(kind="equivalent", why="scope")
    one = Classification(kind="gap", why="one")
    unused = [m for m in now if m.anchor.startswith("pkg/mod.py::unused:")]
    classes = expand({"pkg/mod.py::unused": why, unused[0].anchor: one}, now)
    assert classes[unused[0].id] is one  # an exact anchor wins over its function's
    assert {k for k, v in classes.items() if v is why} == {m.id for m in unused[1:]}


def test_a_pinned_class_follows_its_edit_when_the_anchor_is_renumbered(tmp_path: Path) -> None:
    """An entry names its anchor and pins the edit it was written for: when an edit earlier
    in the function renumbers `#n`, the class follows the edit; when the edit is gone, the
    entry classes nothing and is reported stale (the survivor shows as unclassified)."""
    root, target = _repo(tmp_path)
    mod = root / "pkg" / "mod.py"
    mod.write_text(MOD.replace("return 5", "a = 1\n    return 5"))
    before = {m.anchor: m for m in all_mutants(root, target)}
    five = next(m for m in before.values() if m.anchor.startswith("pkg/mod.py::unused:const-inc")
                and m.original == "5")
    why = Classification(kind="equivalent", why="five", pin=five.pin())
    mod.write_text(MOD.replace("return 5", "a = 1\n    b = 2\n    return 5"))  # renumbers
    now = all_mutants(root, target)
    moved = next(m for m in now if m.pin() == five.pin())
    assert moved.anchor != five.anchor  # the same edit under another #n
    stale: list[str] = []
    got = expand({five.anchor: why}, now, stale)
    assert got.get(moved.id) is why and not stale
    assert all(got.get(m.id) is not why for m in now if m is not moved)
    mod.write_text(MOD.replace("return 5", "a = 1\n    return 6"))  # the edit is gone
    gone: list[str] = []
    assert not expand({five.anchor: why}, all_mutants(root, target), gone)
    assert gone == [five.anchor]


def test_committed_exact_classes_pin_their_edit() -> None:
    """Every committed one-mutant entry carries the edit it classes, so a renumbered anchor
    cannot silently lend its reason to another mutant."""
    root = Path(__file__).resolve().parent.parent
    classes = load_classifications(root / "mutation" / "classifications.yaml")
    unpinned = [k for k, c in classes.items() if k.count(":") == 3 and c.pin is None]
    assert not unpinned, unpinned[:5]


def test_the_report_lists_a_stale_class_and_check_counts_it(tmp_path: Path) -> None:
    """A pinned entry whose edit is gone is listed in the report and counted with the
    unclassified (so `report --check` fails); an entry of another target's file is not."""
    from mutation.__main__ import write_report
    root, target = _repo(tmp_path)
    five = next(m for m in all_mutants(root, target) if m.id == SURVIVOR)
    (root / "mutation").mkdir()
    (root / target.classifications).write_text(
        f"{five.anchor}:\n  class: equivalent\n  pin: \"{five.pin()}\"\n  why: five\n"
        "other/file.py::f:const-inc:\n  class: equivalent\n  pin: \"x :: y\"\n  why: not ours\n")
    text, unclassified = write_report(root, target)
    assert "Stale classifications" not in text and unclassified == []
    (root / "pkg" / "mod.py").write_text(MOD.replace("return 5", "return 6"))
    text, unclassified = write_report(root, target)
    assert f"- `{five.anchor}`" in text and "other/file.py" not in text
    assert unclassified == [f"{five.anchor} (stale classification)"]
