"""z3 terms built straight through the C API: the explorer builds the same arithmetic on
every replayed path, and z3's Python operators spend most of their time coercing operands.

Each builder makes exactly the term z3's own operator makes (`x + 5` is Z3_mk_add of two
arguments, `x != y` is Z3_mk_distinct), so hash-consing gives the same AST ids either way
and every memo keyed by those ids keeps working.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import z3

Arith: TypeAlias = z3.ArithRef


@functools.lru_cache(maxsize=1 << 16)
def const(n: int) -> Arith:
    """The integer literal n (built once: z3.IntVal parses a decimal string every call)."""
    return z3.IntVal(n)


def _pair(a: z3.ExprRef, b: z3.ExprRef) -> Any:
    return (z3.Ast * 2)(a.as_ast(), b.as_ast())


def _nary(mk: Callable[..., z3.Ast]) -> Callable[[Arith, Arith], Arith]:
    def build(a: Arith, b: Arith) -> Arith:
        ctx = a.ctx
        return z3.ArithRef(mk(ctx.ref(), 2, _pair(a, b)), ctx)
    return build


def _binary(mk: Callable[..., z3.Ast]) -> Callable[[Arith, Arith], Arith]:
    def build(a: Arith, b: Arith) -> Arith:
        ctx = a.ctx
        return z3.ArithRef(mk(ctx.ref(), a.as_ast(), b.as_ast()), ctx)
    return build


def _rel(mk: Callable[..., z3.Ast]) -> Callable[[Arith, Arith], z3.BoolRef]:
    def build(a: Arith, b: Arith) -> z3.BoolRef:
        ctx = a.ctx
        return z3.BoolRef(mk(ctx.ref(), a.as_ast(), b.as_ast()), ctx)
    return build


add = _nary(z3.Z3_mk_add)
sub = _nary(z3.Z3_mk_sub)
mul = _nary(z3.Z3_mk_mul)
div = _binary(z3.Z3_mk_div)  # integer division (floor for a positive divisor)
mod = _binary(z3.Z3_mk_mod)
le = _rel(z3.Z3_mk_le)
lt = _rel(z3.Z3_mk_lt)
ge = _rel(z3.Z3_mk_ge)
gt = _rel(z3.Z3_mk_gt)


def eq(a: z3.ExprRef, b: z3.ExprRef) -> z3.BoolRef:
    """a == b for two terms of one sort (integers or Booleans), as z3's operator builds it."""
    ctx = a.ctx
    return z3.BoolRef(z3.Z3_mk_eq(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


def ne(a: Arith, b: Arith) -> z3.BoolRef:
    """a != b, as z3's operator builds it (distinct of two)."""
    ctx = a.ctx
    return z3.BoolRef(z3.Z3_mk_distinct(ctx.ref(), 2, _pair(a, b)), ctx)


def neg(a: Arith) -> Arith:
    """-a."""
    ctx = a.ctx
    return z3.ArithRef(z3.Z3_mk_unary_minus(ctx.ref(), a.as_ast()), ctx)


def ite(c: z3.BoolRef, a: Arith, b: Arith) -> Arith:
    """If(c, a, b) for two integer terms."""
    ctx = c.ctx
    return z3.ArithRef(z3.Z3_mk_ite(ctx.ref(), c.as_ast(), a.as_ast(), b.as_ast()), ctx)


def negate(c: z3.BoolRef) -> z3.BoolRef:
    """Not(c)."""
    ctx = c.ctx
    return z3.BoolRef(z3.Z3_mk_not(ctx.ref(), c.as_ast()), ctx)


def assert_in(solver: z3.Solver, f: z3.BoolRef) -> None:
    """solver.add(f) for one z3 condition, without the Python layer's argument handling."""
    z3.Z3_solver_assert(solver.ctx.ref(), solver.solver, f.as_ast())


def _junction(mk: Callable[..., z3.Ast], parts: Sequence[z3.BoolRef], unit: bool
              ) -> z3.BoolRef:
    if not parts:
        return z3.BoolVal(unit)
    if len(parts) == 1:
        return parts[0]
    ctx = parts[0].ctx
    arr = (z3.Ast * len(parts))(*(p.as_ast() for p in parts))
    return z3.BoolRef(mk(ctx.ref(), len(parts), arr), ctx)


def conj(parts: Sequence[z3.BoolRef]) -> z3.BoolRef:
    """And of z3 conditions without z3.And's per-argument coercion."""
    return _junction(z3.Z3_mk_and, parts, True)


def app(f: z3.FuncDeclRef, args: Sequence[z3.ExprRef]) -> z3.ExprRef:
    """f(args) for arguments already of f's domain sorts (no coercion)."""
    ctx = f.ctx
    arr = (z3.Ast * len(args))(*(a.as_ast() for a in args))
    return z3.z3._to_expr_ref(z3.Z3_mk_app(ctx.ref(), f.ast, len(args), arr), ctx)


def disj(parts: Sequence[z3.BoolRef]) -> z3.BoolRef:
    """Or of z3 conditions without z3.Or's per-argument coercion."""
    return _junction(z3.Z3_mk_or, parts, False)


def implies(a: z3.BoolRef, b: z3.BoolRef) -> z3.BoolRef:
    """Implies(a, b)."""
    ctx = a.ctx
    return z3.BoolRef(z3.Z3_mk_implies(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


def choose(c: z3.BoolRef, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
    """If(c, a, b) for two terms of one sort, Boolean or integer."""
    ctx = c.ctx
    return z3.z3._to_expr_ref(
        z3.Z3_mk_ite(ctx.ref(), c.as_ast(), a.as_ast(), b.as_ast()), ctx)


def within(e: Arith, lo: int, hi: int) -> z3.BoolRef:
    """lo <= e <= hi, as z3.And(e >= lo, e <= hi) builds it."""
    return conj((ge(e, const(lo)), le(e, const(hi))))


TRUE, FALSE = z3.BoolVal(True), z3.BoolVal(False)
INT, BOOL = z3.IntSort(), z3.BoolSort()


def reset() -> None:
    """Rebuild the cached terms in z3's current main context (after a new one is made)."""
    global TRUE, FALSE, INT, BOOL
    const.cache_clear()
    TRUE, FALSE = z3.BoolVal(True), z3.BoolVal(False)
    INT, BOOL = z3.IntSort(), z3.BoolSort()
