"""Coverage-directed selection on a tiny repository: spans, per-unit maps, selected units."""

from __future__ import annotations

import sys
from pathlib import Path

from mutation.covmap import CovMap, Span, cache_path, spans
from mutation.runner import all_mutants, coverage_map, run, select, tree_fingerprint
from mutation.targets import Check, Target

MOD = '''LIMIT = 3


def double(x: int) -> int:
    return x * 2


def triple(x: int,
           k: int = 3) -> int:
    if x > LIMIT:
        return x * k
    return 0


def unused() -> int:
    return 5
'''
# one "unit" per function: a stand-in for prove cells / difftest units / vector files
UNITS = {"d": "import pkg.mod as m; assert m.double(2) == 4",
         "t": "import pkg.mod as m; assert m.triple(4) == 12"}


def _repo(tmp_path: Path) -> tuple[Path, Target]:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text(MOD)
    code = "; ".join(UNITS.values())
    check = Check(
        name="unit", argv=lambda ws: [sys.executable, "-c", code], shown="python -c ...",
        why="test", units=lambda ws: [sys.executable, "-c", "print('d'); print('t')"],
        run_units=lambda ws, us: [sys.executable, "-c", "; ".join(UNITS[u] for u in us)])
    target = Target(name="tiny", files=("pkg/mod.py",), checks=(check,),
                    immutable_writes=False, report="docs/tiny.md",
                    results="mutation/results/tiny.json",
                    classifications="mutation/classifications.yaml")
    return root, target


def test_spans_are_statements_and_module_level_is_none(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    ms = {m.id: m for m in all_mutants(root, target)}
    sp = spans(MOD.encode(), "pkg/mod.py", ms.values())
    assert sp["pkg/mod.py:1:8:const-inc"] is None  # LIMIT: runs at import
    assert sp["pkg/mod.py:9:20:const-inc"] is None  # a default: evaluated at import
    assert sp["pkg/mod.py:5:11:binop-mult-floordiv"] == Span(path="pkg/mod.py", first=5,
                                                              last=5)
    # an if's test: the header only, not the body
    assert sp["pkg/mod.py:10:7:cmp-gt-gte"] == Span(path="pkg/mod.py", first=10, last=10)


def test_each_mutant_runs_only_the_units_that_reach_it(tmp_path: Path) -> None:
    root, target = _repo(tmp_path)
    tree = tree_fingerprint(root, target)
    cm = coverage_map(root, target, tree, log=lambda s: None)
    assert cm.units == {"unit": ["d", "t"]}
    assert cache_path(root, target, tree).exists()
    assert cm.select("unit", Span(path="pkg/mod.py", first=5, last=5)) == ["d"]
    assert cm.select("unit", Span(path="pkg/mod.py", first=11, last=11)) == ["t"]
    assert cm.select("unit", Span(path="pkg/mod.py", first=16, last=16)) == []
    assert sorted(cm.select("unit", None)) == ["d", "t"]
    assert len(cm.unit_seconds["unit"]) == 2 and min(cm.unit_seconds["unit"]) > 0

    ids = ["pkg/mod.py:5:11:binop-mult-floordiv", "pkg/mod.py:11:15:binop-mult-floordiv",
           "pkg/mod.py:16:11:const-inc", "pkg/mod.py:1:8:const-inc"]
    mutants = select(all_mutants(root, target), sample=None, seed=0, shard=None, ids=ids)
    done = {r.id: r for r in run(root, target, mutants, jobs=1, results=root / target.results,
                                 timeout_factor=4.0, timeout_min=10.0, fresh=False,
                                 log=lambda s: None)}
    first = done[ids[0]].checks[0]
    assert done[ids[0]].killer == "unit" and first.detail.startswith("1/2 units")
    assert done[ids[1]].killer == "unit" and done[ids[1]].checks[0].detail.startswith("1/2")
    assert [c.status for c in done[ids[2]].checks] == ["uncovered"]
    # LIMIT + 1 = 4: triple(4) now returns 0, and only the whole check (all units) sees it
    assert done[ids[3]].killer == "unit" and done[ids[3]].checks[0].detail.startswith("2/2")


def test_units_run_quickest_first_and_tests_stay_grouped_by_file() -> None:
    """A check stops at its first failing unit: the quickest chosen units go first; pytest
    ids keep their file together (module fixtures set up once), files by their total."""
    cm = CovMap(tree="t", seconds={}, lines={"p": {"m.py": {3: [0, 1, 2]}},
                                            "t": {"m.py": {3: [0, 1, 2, 3]}}},
                units={"p": ["slow", "mid", "fast"],
                       "t": ["a.py::x", "a.py::y", "b.py::z", "a.py::w"]},
                unit_seconds={"p": [9.0, 2.0, 0.5], "t": [4.0, 0.1, 3.0, 1.0]})
    assert cm.select("p", Span(path="m.py", first=3, last=3)) == ["fast", "mid", "slow"]
    assert cm.select("p", None) == ["fast", "mid", "slow"]
    # b.py's chosen tests take 3.0 s, a.py's 5.1 s
    assert cm.select("t", Span(path="m.py", first=3, last=3)) == [
        "b.py::z", "a.py::y", "a.py::w", "a.py::x"]
    old = CovMap.from_json({k: v for k, v in cm.to_json().items() if k != "unit_seconds"})
    assert old.select("p", None) == ["slow", "mid", "fast"]  # a map without timings


def test_an_equivalent_survivor_is_not_measured_again_on_a_new_tree(tmp_path: Path) -> None:
    """A new tree re-runs survivors (a new test may kill them) but keeps kills and the
    survivors classified equivalent (no test can tell their unchanged edit apart)."""
    root, target = _repo(tmp_path)
    survivor, killed = "pkg/mod.py:16:11:const-inc", "pkg/mod.py:5:11:binop-mult-floordiv"
    mutants = select(all_mutants(root, target), sample=None, seed=0, shard=None,
                     ids=[survivor, killed])
    res = root / target.results

    def measured(equivalent: frozenset[str] = frozenset()) -> list[str]:
        return sorted(r.id for r in run(root, target, mutants, jobs=1, results=res,
                                         timeout_factor=4.0, timeout_min=10.0, fresh=False,
                                         log=lambda s: None, equivalent=equivalent))
    assert measured() == sorted([survivor, killed])
    assert measured() == []  # the same tree: nothing to do
    for n, want in ((1, []), (2, [survivor])):
        (root / "model").mkdir(exist_ok=True)
        (root / "model" / "x.py").write_text(f"X = {n}\n")  # a file the checks read
        assert measured(frozenset({survivor}) if n == 1 else frozenset()) == want
