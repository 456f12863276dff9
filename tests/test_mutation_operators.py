"""The AST mutator on a tiny module: expected edits, stable unique IDs, skipped regions."""

from __future__ import annotations

import ast
from pathlib import Path

from mutation.operators import Mutant, mutants_of

SAMPLE = '''"""A sample module."""

import attrs


def pick(a: int, b: int, faults: frozenset[str] = frozenset()) -> int | None:
    """Docstrings are not mutated."""
    if a == b and a > 0:
        return a + 1
    if "boom" in faults:
        return None
    msg = f"{a + 100}"
    return len(msg)


def store(m: dict[int, int], k: int, v: int) -> None:
    m.update({k: v})
    m[k] = v


def swap(saddr: bytes, daddr: bytes, st: object) -> object:
    first = sorted((saddr, daddr))
    return attrs.evolve(st, ct=first, snat=daddr) if not saddr else build(saddr, daddr)


def build(x: bytes, y: bytes) -> bytes:
    return x + y
'''


def _mutants(tmp_path: Path, text: str = SAMPLE, **kw: bool) -> dict[str, Mutant]:
    path = tmp_path / "mod.py"
    path.write_text(text)
    return {m.id: m for m in mutants_of(path, "pkg/mod.py", **kw)}


def _applied(m: Mutant) -> str:
    return m.apply(SAMPLE.encode()).decode()


def test_operators_produce_the_expected_edits(tmp_path: Path) -> None:
    ms = _mutants(tmp_path, immutable_writes=True)
    cmp = ms["pkg/mod.py:8:7:cmp-eq-noteq"]
    assert "if (a != b) and a > 0:" in _applied(cmp)
    assert "if (a == b or a > 0):" in _applied(ms["pkg/mod.py:8:7:boolop-and-or"])
    assert "a >= 0" in _applied(ms["pkg/mod.py:8:18:cmp-gt-gte"])
    assert "a > (1)" in _applied(ms["pkg/mod.py:8:22:const-inc"])
    assert "return (None)" in _applied(ms["pkg/mod.py:9:15:return-none"])
    assert "return (a - 1)" in _applied(ms["pkg/mod.py:9:15:binop-add-sub"])
    assert "    pass\n    m[k] = v" in _applied(ms["pkg/mod.py:17:4:stmt-del"])
    assert "m.update({k: v})\n    pass" in _applied(ms["pkg/mod.py:18:4:stmt-del"])
    assert "sorted((daddr, saddr))" not in "".join(_applied(m) for m in ms.values()), \
        "a tuple is not a call's argument list"
    evolve = _applied(ms["pkg/mod.py:23:11:evolve-drop-ct"])
    assert "(attrs.evolve(st, snat=daddr))" in evolve
    assert "(attrs.evolve(st, ct=first))" in _applied(ms["pkg/mod.py:23:11:evolve-drop-snat"])
    assert "if (not not saddr)" not in _applied(ms["pkg/mod.py:23:53:not-drop"])
    assert "if (saddr) else" in _applied(ms["pkg/mod.py:23:53:not-drop"])
    assert "build(daddr, saddr)" in _applied(ms["pkg/mod.py:23:68:argswap-0-1"])
    for m in ms.values():
        ast.parse(_applied(m))  # every mutant is valid Python


def test_ids_are_unique_and_stable(tmp_path: Path) -> None:
    first = _mutants(tmp_path)
    again = _mutants(tmp_path)
    assert list(first) == list(again)
    assert len(set(first)) == len(first)
    # Code appended below does not move the IDs above it.
    more = _mutants(tmp_path, SAMPLE + "\n\ndef extra(n: int) -> int:\n    return n - 1\n")
    assert set(first) <= set(more)
    assert any(i.startswith("pkg/mod.py:31:") for i in more)


def test_messages_docs_annotations_and_fault_switches_are_left_alone(tmp_path: Path) -> None:
    ms = _mutants(tmp_path)
    lines = {int(i.split(":")[1]) for i in ms}
    assert 1 not in lines and 7 not in lines  # docstrings
    assert 12 not in lines, "the f-string message is not behaviour"
    assert not any(i.startswith("pkg/mod.py:10:7:cmp") for i in ms), "fault switch"
    assert not any(i.startswith("pkg/mod.py:10:7:negate") for i in ms), "fault switch"
    assert not any(i.startswith("pkg/mod.py:6:") for i in ms), "annotations and defaults"
    # The negation of `a == b` is the cmp swap already: no duplicate 'negate' mutant.
    assert "pkg/mod.py:8:7:negate" in ms  # the whole `and` is negated once...
    assert not any(i.startswith("pkg/mod.py:8:7:negate#") for i in ms)


def test_write_skip_only_where_writes_return_a_new_map(tmp_path: Path) -> None:
    text = "def f(st, k, v):\n    return st.put(k, v)\n"
    imm = _mutants(tmp_path, text, immutable_writes=True)
    assert "pkg/mod.py:2:11:write-skip-put" in imm
    assert "return (st)" in imm["pkg/mod.py:2:11:write-skip-put"].apply(text.encode()).decode()
    assert "pkg/mod.py:2:11:write-skip-put" not in _mutants(tmp_path, text)


def test_anchors_and_local_digests_ignore_edits_elsewhere(tmp_path: Path) -> None:
    before = _mutants(tmp_path)
    shifted = "X = 1\n\n\n" + SAMPLE.replace("return x + y", "return y + x")
    after = _mutants(tmp_path, shifted)
    old = {m.anchor: m.local_digest(SAMPLE.encode()) for m in before.values()}
    new = {m.anchor: m.local_digest(shifted.encode()) for m in after.values()}
    for anchor in old:
        if anchor.startswith("pkg/mod.py::store:"):
            assert new[anchor] == old[anchor]  # same edit of an unchanged function
    # its function changed (a mutant that replaces the changed expression whole, like
    # return-none here, is the same program before and after, and keeps its digest)
    assert new["pkg/mod.py::build:binop-add-sub"] != old["pkg/mod.py::build:binop-add-sub"]
    assert "pkg/mod.py::store:stmt-del#1" in old  # the second of its kind in store()
    assert any(a.startswith("pkg/mod.py::<module>.X:") for a in new)
    assert {m.id for m in before.values()}.isdisjoint(
        {m.id for m in after.values() if m.anchor.startswith("pkg/mod.py::store:")})
