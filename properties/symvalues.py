"""Symbolic values with Python's int semantics: the model's own arithmetic and comparisons
run on z3 terms, and every `if` on one is decided by the path under exploration."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import attrs
import z3

from properties import zterms as zt
from properties.intervals import interval

if TYPE_CHECKING:
    from properties.symexec import Path

# The path being explored: a symbolic value's `if` is decided by whichever path runs it.
_PATH: contextvars.ContextVar[Path] = contextvars.ContextVar("nodeport_symexec_path")


def current() -> Path:
    """The path under exploration (symbolic values are only ever used inside one)."""
    try:
        return _PATH.get()
    except LookupError:
        raise SymbolicMisuse("a symbolic value was used outside an exploration") from None


class SymbolicMisuse(TypeError):
    """A symbolic value reached a place that needs a concrete one (hash, index, int())."""

    def __init__(self, message: str, term: object = None) -> None:
        super().__init__(message)
        self.term = term  # printed only when shown: the model's maps try hash() per lookup

    def __str__(self) -> str:
        return str(self.args[0]) if self.term is None else f"{self.args[0]}: {self.term}"


def _term(x: object) -> z3.ArithRef:
    if isinstance(x, SymInt):
        return x.e
    if isinstance(x, bool):
        return zt.const(int(x))
    if isinstance(x, int):
        return zt.const(x)
    raise SymbolicMisuse(f"cannot mix a symbolic int with {type(x).__name__}")


def _is_num(x: object) -> bool:
    return isinstance(x, (int, SymInt))


class SymBool:
    """A z3 condition; Python's `if`, `and`, `or` and `not` turn it into a decision."""

    __slots__ = ("e",)

    def __init__(self, e: z3.BoolRef) -> None:
        self.e = e

    def __bool__(self) -> bool:
        return current().decide(self.e)

    def __hash__(self) -> int:
        raise SymbolicMisuse("a symbolic condition cannot be hashed")

    def __repr__(self) -> str:
        return f"SymBool({self.e})"


class SymInt:
    """A z3 integer with Python int semantics for + - * // % & >> and comparisons."""

    __slots__ = ("e",)

    def __init__(self, e: z3.ArithRef) -> None:
        self.e = e

    def _new(self, e: z3.ArithRef, *ops: z3.ArithRef) -> SymInt:
        """A result e of operands ops (self's term when none are named)."""
        path = _PATH.get(None)
        if path is not None and path.abstract:
            return SymInt(path.abstracted(e, ops or (self.e,)))
        return SymInt(e)

    def _cmp(self, e: z3.BoolRef) -> SymBool:
        return SymBool(e)

    def __add__(self, o: object) -> SymInt:
        return self._new(zt.add(self.e, t := _term(o)), self.e, t) if _is_num(o) else NotImplemented

    __radd__ = __add__

    def __sub__(self, o: object) -> SymInt:
        return self._new(zt.sub(self.e, t := _term(o)), self.e, t) if _is_num(o) else NotImplemented

    def __rsub__(self, o: object) -> SymInt:
        return self._new(zt.sub(t := _term(o), self.e), self.e, t) if _is_num(o) else NotImplemented

    def __mul__(self, o: object) -> SymInt:
        return self._new(zt.mul(self.e, t := _term(o)), self.e, t) if _is_num(o) else NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, o: object) -> SymInt:
        # z3's integer division floors for a positive divisor, like Python's
        return self._new(zt.div(self.e, _positive(o))) if _is_num(o) else NotImplemented

    def __mod__(self, o: object) -> SymInt:
        if not _is_num(o):
            return NotImplemented
        if isinstance(o, int) and o > 0:
            return self._new(_mod(self.e, o))
        return self._new(zt.mod(self.e, _positive(o)))

    def __rshift__(self, o: object) -> SymInt:
        if not isinstance(o, int) or o < 0:
            raise SymbolicMisuse("shift by a symbolic or negative amount")
        e, sh = self.e, o
        # (x * 2**a) >> b is x >> (b - a) exactly: keep the solver's integer divisions few
        if z3.is_mul(e) and e.num_args() == 2 and z3.is_int_value(e.arg(1)):
            k = e.arg(1).as_long()
            if k > 0 and not k & (k - 1) and k.bit_length() - 1 <= sh:
                e, sh = e.arg(0), sh - (k.bit_length() - 1)
        path = _PATH.get(None)
        if sh and path is not None and path.abstract:  # abstracting: any value in range
            iv = interval(e, path.bounds, path._imemo)
            if iv is not None and iv[0] >= 0:
                return SymInt(path.fresh("shr", iv[0] >> sh, iv[1] >> sh).e)
        return self._new(zt.div(e, zt.const(1 << sh)) if sh else e, e)

    def __and__(self, o: object) -> SymInt:
        # a low-bit mask of a non-negative value (val & 0xFFFF) is a remainder
        if not isinstance(o, int) or o < 0 or (o + 1) & o:
            raise SymbolicMisuse("only masks of the form 2**k - 1 are supported")
        current().require(zt.ge(self.e, zt.const(0)), "masked value is non-negative")
        return self._new(_mod(self.e, o + 1))

    __rand__ = __and__

    def __neg__(self) -> SymInt:
        return self._new(zt.neg(self.e))

    def __eq__(self, o: object) -> Any:
        return self._cmp(zt.eq(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __ne__(self, o: object) -> Any:
        return self._cmp(zt.ne(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __lt__(self, o: object) -> Any:
        return self._cmp(zt.lt(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __le__(self, o: object) -> Any:
        return self._cmp(zt.le(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __gt__(self, o: object) -> Any:
        return self._cmp(zt.gt(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __ge__(self, o: object) -> Any:
        return self._cmp(zt.ge(self.e, _term(o))) if _is_num(o) else NotImplemented

    def __bool__(self) -> bool:
        return current().decide(zt.ne(self.e, zt.const(0)))

    def __hash__(self) -> int:
        raise SymbolicMisuse("a symbolic int cannot be hashed", self.e)

    def __index__(self) -> int:
        raise SymbolicMisuse("a symbolic int used as an index", self.e)

    def __int__(self) -> int:
        raise SymbolicMisuse("a symbolic int converted to int", self.e)

    def __repr__(self) -> str:
        return f"<{self.e}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def _mod(e: z3.ArithRef, m: int) -> z3.ArithRef:
    """e % m; where the path's domains put e in [0, 2m) a comparison replaces the remainder
    (the same value, but no integer division for the solver to case-split on)."""
    path = _PATH.get(None)
    iv = interval(e, path.bounds, path._imemo) if path is not None else None
    if path is not None and iv is not None and iv[0] >= 0 and iv[1] < 2 * m:
        if iv[1] < m:
            return e
        r = zt.ite(zt.ge(e, zt.const(m)), zt.sub(e, zt.const(m)), e)
        path.bound_term(r, 0, m - 1)
        return r
    if path is not None and path.abstract:  # abstracting: any value of the remainder's range
        return path.fresh("mod", 0, m - 1).e
    return zt.mod(e, zt.const(m))


def _positive(o: object) -> z3.ArithRef:
    if isinstance(o, int) and o > 0:
        return zt.const(o)
    raise SymbolicMisuse("division by a symbolic or non-positive amount")


@attrs.frozen
class Input:
    """A named open value of an exploration with its domain [lo, hi]."""

    name: str
    lo: int
    hi: int
    var: SymInt = attrs.field(init=False, eq=False)
    _fact: z3.BoolRef = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        v = z3.Int(self.name)
        object.__setattr__(self, "var", SymInt(v))
        object.__setattr__(self, "_fact", zt.within(v, self.lo, self.hi))

    def fact(self) -> z3.BoolRef:
        """lo <= var <= hi."""
        return self._fact
