"""z3 term helpers that fold what structure already decides (distinct hosts, ranges)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import z3

from model.nodeport import Step, Verdict

BV: TypeAlias = z3.BitVecRef
B: TypeAlias = z3.BoolRef

STEP = {s: i for i, s in enumerate(Step)}
VERDICT = {v: i for i, v in enumerate(Verdict)}
NO_REASON = 0


_DISTINCT: set[int] = set()
_RANGE: dict[int, tuple[int, int]] = {}
_MEMO: dict[tuple[int, int], Any] = {}


def set_distinct(terms: Sequence[z3.ExprRef]) -> None:
    """Declare host addresses pairwise distinct (as asserted with Distinct) for folding."""
    _DISTINCT.clear()
    _DISTINCT.update(t.get_id() for t in terms)
    _RANGE.clear()
    _MEMO.clear()


Facts = tuple[frozenset[int], dict[int, tuple[int, int]]]


def snapshot() -> Facts:
    """The folding facts of the world just built (to re-install for a cached encoding)."""
    return frozenset(_DISTINCT), dict(_RANGE)


def install(facts: Facts) -> None:
    """Re-install a world's folding facts before building formulas over its terms."""
    _DISTINCT.clear()
    _DISTINCT.update(facts[0])
    _RANGE.clear()
    _RANGE.update(facts[1])
    _MEMO.clear()


def set_range(t: BV, lo: int, hi: int) -> None:
    """Declare lo <= t <= hi (an assumption the caller also asserts) for folding."""
    _RANGE[t.get_id()] = (lo, hi)


def eq(a: BV, b: BV, depth: int = 3) -> B | bool:
    """a == b, folded when the answer follows from structure, distinctness or ranges."""
    if a.eq(b):
        return True
    ia, ib = a.get_id(), b.get_id()
    memo = _MEMO.get((ia, ib))
    if memo is not None:
        return memo
    out = _eq(a, b, depth)
    _MEMO[(ia, ib)] = out
    return out


def _eq(a: BV, b: BV, depth: int) -> B | bool:
    ia, ib = a.get_id(), b.get_id()
    if ia in _DISTINCT and ib in _DISTINCT:
        return False
    ra, rb = _RANGE.get(ia), _RANGE.get(ib)
    if z3.is_bv_value(a):
        ra = (a.as_long(), a.as_long())
    if z3.is_bv_value(b):
        rb = (b.as_long(), b.as_long())
    if ra is not None and rb is not None and (ra[1] < rb[0] or rb[1] < ra[0]):
        return False
    if z3.is_bv_value(a) and z3.is_bv_value(b):
        return bool(a.as_long() == b.as_long())
    if depth > 0:
        for x, y in ((a, b), (b, a)):
            if z3.is_app_of(x, z3.Z3_OP_ITE) and not z3.is_app_of(y, z3.Z3_OP_ITE):
                c, t, e = x.children()
                et = eq(t, y, depth - 1)
                if not isinstance(et, bool):
                    break
                ee = eq(e, y, depth - 1)
                if isinstance(ee, bool):
                    if et == ee:
                        return et
                    return c if et else z3.Not(c)
                break
    return a == b


def ne(a: BV, b: BV) -> B | bool:
    """a != b with the same folding."""
    return bnot(eq(a, b))


def bnot(c: B | bool) -> B | bool:
    """Not that keeps Python booleans."""
    if isinstance(c, bool):
        return not c
    if z3.is_true(c):
        return False
    if z3.is_false(c):
        return True
    return z3.Not(c)


def bv(v: int, bits: int) -> BV:
    """A bit-vector constant."""
    return z3.BitVecVal(v, bits)


def ite_bv(c: B | bool, a: BV, b: BV) -> BV:
    """If on bit-vectors that folds Python-constant conditions."""
    if c is True:
        return a
    if c is False:
        return b
    if a.eq(b):
        return a
    if z3.is_true(c):
        return a
    if z3.is_false(c):
        return b
    return z3.If(c, a, b)


def band(*xs: B | bool) -> B:
    """And that accepts Python booleans."""
    vals = [x for x in xs if x is not True and not (not isinstance(x, bool) and z3.is_true(x))]
    if any(x is False or (not isinstance(x, bool) and z3.is_false(x)) for x in vals):
        return z3.BoolVal(False)
    if not vals:
        return z3.BoolVal(True)
    return z3.And(*vals) if len(vals) > 1 else vals[0]


def bor(*xs: B | bool) -> B:
    """Or that accepts Python booleans."""
    vals = [x for x in xs if x is not False and not (not isinstance(x, bool) and z3.is_false(x))]
    if any(x is True or (not isinstance(x, bool) and z3.is_true(x)) for x in vals):
        return z3.BoolVal(True)
    if not vals:
        return z3.BoolVal(False)
    return z3.Or(*vals) if len(vals) > 1 else vals[0]


def ite_b(c: B | bool, a: B | bool, b: B | bool) -> B:
    """If on booleans."""
    if not isinstance(c, bool) and (z3.is_true(c) or z3.is_false(c)):
        c = z3.is_true(c)
    if isinstance(a, bool) and isinstance(b, bool) and a == b:
        return z3.BoolVal(a)
    if not isinstance(a, bool) and not isinstance(b, bool) and a.eq(b):
        return a
    if c is True:
        return z3.BoolVal(a) if isinstance(a, bool) else a
    if c is False:
        return z3.BoolVal(b) if isinstance(b, bool) else b
    return z3.If(c, a, b)


def ite_int(c: B | bool, a: z3.ArithRef | int, b: z3.ArithRef | int) -> z3.ArithRef:
    """If on small integer codes (verdicts, steps, reasons, positions)."""
    if not isinstance(c, bool) and (z3.is_true(c) or z3.is_false(c)):
        c = z3.is_true(c)
    if isinstance(a, int) and isinstance(b, int) and a == b:
        return z3.IntVal(a)
    if not isinstance(a, int) and not isinstance(b, int) and a.eq(b):
        return a
    if c is True:
        return z3.IntVal(a) if isinstance(a, int) else a
    if c is False:
        return z3.IntVal(b) if isinstance(b, int) else b
    return z3.If(c, a, b)

