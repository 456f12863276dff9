"""Interval arithmetic over z3 integer terms: branches the inputs' domains already settle.

A condition like `port + 1 <= 65535` on a port in [1024, 65534] needs no solver call, and a
remainder of a term known to lie in [0, 2m) is a comparison, not an integer division for the
solver to case-split on. Terms are DAGs (a retry loop nests `port + 1` in itself), so
intervals are memoized by AST id, the memo keeping each term alive so its id stays its own.
"""

from __future__ import annotations

import z3

Interval = tuple[int, int]
Memo = dict[int, tuple[Interval | None, z3.ExprRef]]  # by AST id; the term keeps its id


def interval(e: z3.ExprRef, bounds: dict[int, Interval],
              memo: Memo | None = None) -> Interval | None:
    """Bounds of an integer term from its inputs' domains (None: unbounded or not linear).
    Terms are DAGs (a retry loop nests `port + 1` in itself): shared subterms are memoized."""
    memo = {} if memo is None else memo
    key = e.get_id()
    got = memo.get(key)
    if got is None:
        got = memo[key] = (_interval_of(e, bounds, memo), e)
    return got[0]


def _interval_of(e: z3.ExprRef, bounds: dict[int, Interval], memo: Memo) -> Interval | None:
    if z3.is_int_value(e):
        v = e.as_long()
        return v, v
    if z3.is_const(e) or e.get_id() in bounds:  # an input, or a bounded map field
        return bounds.get(e.get_id())
    k = e.decl().kind()
    if k == z3.Z3_OP_ITE:
        a, b = interval(e.arg(1), bounds, memo), interval(e.arg(2), bounds, memo)
        return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
    kids = [interval(c, bounds, memo) for c in e.children()]
    if any(x is None for x in kids):
        return None
    iv = [x for x in kids if x is not None]
    if k == z3.Z3_OP_ADD:
        return sum(x[0] for x in iv), sum(x[1] for x in iv)
    if k == z3.Z3_OP_SUB and len(iv) == 2:
        return iv[0][0] - iv[1][1], iv[0][1] - iv[1][0]
    if k == z3.Z3_OP_UMINUS:
        return -iv[0][1], -iv[0][0]
    if k == z3.Z3_OP_MUL and len(iv) == 2:
        prods = [a * b for a in iv[0] for b in iv[1]]
        return min(prods), max(prods)
    if k in (z3.Z3_OP_IDIV, z3.Z3_OP_DIV) and len(iv) == 2 and iv[1][0] == iv[1][1] > 0:
        d = iv[1][0]
        return iv[0][0] // d, iv[0][1] // d
    if k == z3.Z3_OP_MOD and len(iv) == 2 and iv[1][0] == iv[1][1] > 0:
        d = iv[1][0]
        if iv[0][0] >= 0 and iv[0][1] < d:
            return iv[0]
        return 0, d - 1
    return None


def truth(c: z3.ExprRef, bounds: dict[int, Interval],
           memo: Memo | None = None) -> bool | None:
    """Decide a condition by interval arithmetic alone (None when intervals cannot)."""
    if z3.is_true(c):
        return True
    if z3.is_false(c):
        return False
    k = c.decl().kind()
    if k == z3.Z3_OP_NOT:
        t = truth(c.arg(0), bounds, memo)
        return None if t is None else not t
    if k in (z3.Z3_OP_AND, z3.Z3_OP_OR):
        ts = [truth(x, bounds, memo) for x in c.children()]
        if k == z3.Z3_OP_AND:
            return False if False in ts else (True if all(t is True for t in ts) else None)
        return True if True in ts else (False if all(t is False for t in ts) else None)
    if c.num_args() != 2 or not z3.is_int(c.arg(0)):
        return None
    memo = {} if memo is None else memo
    a, b = interval(c.arg(0), bounds, memo), interval(c.arg(1), bounds, memo)
    if a is None or b is None:
        return None
    if k == z3.Z3_OP_LE:
        return True if a[1] <= b[0] else (False if a[0] > b[1] else None)
    if k == z3.Z3_OP_LT:
        return True if a[1] < b[0] else (False if a[0] >= b[1] else None)
    if k == z3.Z3_OP_GE:
        return True if a[0] >= b[1] else (False if a[1] < b[0] else None)
    if k == z3.Z3_OP_GT:
        return True if a[0] > b[1] else (False if a[1] <= b[0] else None)
    if k in (z3.Z3_OP_EQ, z3.Z3_OP_DISTINCT):
        is_eq = bool(k == z3.Z3_OP_EQ)
        if a[0] == a[1] == b[0] == b[1]:
            return is_eq
        if a[1] < b[0] or b[1] < a[0]:
            return not is_eq
    return None
