"""Symbolic execution of the model's own Python: z3-valued ints whose branches are enumerated.

The model (model/) is written for concrete values. Here the same functions run on `SymInt`
values (z3 integers with Python's int semantics); every `if` on a symbolic condition asks the
path for a decision. A path replays a prefix of decisions and explores new ones, checking
each against the z3 solver, so the explorer visits every feasible path of the code that
`nodeport trace` runs, and nothing else: there is no second copy of a hook to drift.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs
import z3

T = TypeVar("T")
Num = "int | SymInt"


class Status(enum.Enum):
    """How a path ended."""

    DONE = "done"  # the function returned
    RAISED = "raised"  # the model raised on a feasible input (a model bug)
    UNKNOWN = "unknown"  # the solver could not decide a branch on this path


class Infeasible(Exception):
    """The replayed prefix turned out unsatisfiable; the path is discarded."""


class SymbolicMisuse(TypeError):
    """A symbolic value reached a place that needs a concrete one (hash, index, int())."""


def _term(x: object) -> z3.ArithRef:
    if isinstance(x, SymInt):
        return x.e
    if isinstance(x, bool):
        return z3.IntVal(int(x))
    if isinstance(x, int):
        return z3.IntVal(x)
    raise SymbolicMisuse(f"cannot mix a symbolic int with {type(x).__name__}")


def _is_num(x: object) -> bool:
    return isinstance(x, (int, SymInt))


class SymBool:
    """A z3 condition; Python's `if`, `and`, `or` and `not` turn it into a decision."""

    __slots__ = ("e", "path")

    def __init__(self, e: z3.BoolRef, path: Path) -> None:
        self.e = e
        self.path = path

    def __bool__(self) -> bool:
        return self.path.decide(self.e)

    def __hash__(self) -> int:
        raise SymbolicMisuse("a symbolic condition cannot be hashed")

    def __repr__(self) -> str:
        return f"SymBool({self.e})"


class SymInt:
    """A z3 integer with Python int semantics for + - * // % & >> and comparisons."""

    __slots__ = ("e", "path")

    def __init__(self, e: z3.ArithRef, path: Path) -> None:
        self.e = e
        self.path = path

    def _new(self, e: z3.ArithRef) -> SymInt:
        return SymInt(e, self.path)

    def _cmp(self, e: z3.BoolRef) -> SymBool:
        return SymBool(e, self.path)

    def __add__(self, o: object) -> SymInt:
        return self._new(self.e + _term(o)) if _is_num(o) else NotImplemented

    __radd__ = __add__

    def __sub__(self, o: object) -> SymInt:
        return self._new(self.e - _term(o)) if _is_num(o) else NotImplemented

    def __rsub__(self, o: object) -> SymInt:
        return self._new(_term(o) - self.e) if _is_num(o) else NotImplemented

    def __mul__(self, o: object) -> SymInt:
        return self._new(self.e * _term(o)) if _is_num(o) else NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, o: object) -> SymInt:
        # z3's integer division floors for a positive divisor, like Python's
        return self._new(self.e / _positive(o)) if _is_num(o) else NotImplemented

    def __mod__(self, o: object) -> SymInt:
        return self._new(self.e % _positive(o)) if _is_num(o) else NotImplemented

    def __rshift__(self, o: object) -> SymInt:
        if not isinstance(o, int) or o < 0:
            raise SymbolicMisuse("shift by a symbolic or negative amount")
        return self._new(self.e / (1 << o))

    def __and__(self, o: object) -> SymInt:
        # a low-bit mask of a non-negative value (val & 0xFFFF) is a remainder
        if not isinstance(o, int) or o < 0 or (o + 1) & o:
            raise SymbolicMisuse("only masks of the form 2**k - 1 are supported")
        self.path.require(self.e >= 0, "masked value is non-negative")
        return self._new(self.e % (o + 1))

    __rand__ = __and__

    def __neg__(self) -> SymInt:
        return self._new(-self.e)

    def __eq__(self, o: object) -> Any:
        return self._cmp(self.e == _term(o)) if _is_num(o) else NotImplemented

    def __ne__(self, o: object) -> Any:
        return self._cmp(self.e != _term(o)) if _is_num(o) else NotImplemented

    def __lt__(self, o: object) -> Any:
        return self._cmp(self.e < _term(o)) if _is_num(o) else NotImplemented

    def __le__(self, o: object) -> Any:
        return self._cmp(self.e <= _term(o)) if _is_num(o) else NotImplemented

    def __gt__(self, o: object) -> Any:
        return self._cmp(self.e > _term(o)) if _is_num(o) else NotImplemented

    def __ge__(self, o: object) -> Any:
        return self._cmp(self.e >= _term(o)) if _is_num(o) else NotImplemented

    def __bool__(self) -> bool:
        return self.path.decide(self.e != 0)

    def __hash__(self) -> int:
        raise SymbolicMisuse(f"symbolic int {self.e} cannot be hashed")

    def __index__(self) -> int:
        raise SymbolicMisuse(f"symbolic int {self.e} used as an index")

    def __int__(self) -> int:
        raise SymbolicMisuse(f"symbolic int {self.e} converted to int")

    def __repr__(self) -> str:
        return f"<{self.e}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def _positive(o: object) -> z3.ArithRef:
    if isinstance(o, int) and o > 0:
        return z3.IntVal(o)
    raise SymbolicMisuse("division by a symbolic or non-positive amount")


@attrs.frozen
class Decision:
    """One branch taken; `check` when the solver has not yet seen this side feasible."""

    taken: bool
    check: bool = False


class Path:
    """One execution: replays a decision prefix, then decides new branches with the solver."""

    def __init__(self, solver: z3.Solver, prefix: tuple[Decision, ...], timeout_ms: int) -> None:
        self.solver = solver
        self.prefix = prefix
        self.timeout_ms = timeout_ms
        self.taken: list[Decision] = []
        self.literals: list[z3.BoolRef] = []
        self.facts: list[z3.BoolRef] = []
        self.alternatives: list[tuple[Decision, ...]] = []
        self.unknown = False
        self.queries = 0
        self._names: dict[str, int] = {}
        self._memo: dict[int, bool] = {}  # by AST id; _alive keeps those ids from reuse
        self._alive: list[z3.ExprRef] = []
        solver.reset()
        solver.set(timeout=timeout_ms)

    def fresh(self, name: str, lo: int, hi: int) -> SymInt:
        """A new input in [lo, hi]; names repeat identically on every replay of a prefix."""
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        x = z3.Int(f"{name}#{n}" if n else name)
        self.assume(z3.And(x >= lo, x <= hi))
        return SymInt(x, self)

    def assume(self, fact: z3.BoolRef) -> None:
        """A fact about the inputs (a domain), not a branch."""
        self.facts.append(fact)
        self.solver.add(fact)

    def require(self, fact: z3.BoolRef, why: str) -> None:
        """A precondition of an operation: it must follow from the path so far."""
        if not self._valid(fact):
            raise SymbolicMisuse(f"cannot show that the {why}")

    def _valid(self, fact: z3.BoolRef) -> bool:
        f = z3.simplify(fact)
        if z3.is_true(f):
            return True
        self.queries += 1
        r = self.solver.check(z3.Not(f))
        if r == z3.unknown:  # carry on, but this path can no longer prove anything
            self.unknown = True
            return True
        return bool(r == z3.unsat)

    def decide(self, cond: z3.BoolRef) -> bool:
        """The branch this path takes on `cond`; records the other side for later."""
        c = z3.simplify(cond)
        if z3.is_true(c):
            return True
        if z3.is_false(c):
            return False
        key = c.get_id()
        if key in self._memo:
            return self._memo[key]
        i = len(self.taken)
        if i < len(self.prefix):
            d = self.prefix[i]
            lit = c if d.taken else z3.Not(c)
            if d.check:
                self.queries += 1
                r = self.solver.check(lit)
                if r == z3.unsat:
                    raise Infeasible
                if r == z3.unknown:
                    self.unknown = True
            taken = d.taken
        else:
            self.queries += 1
            r = self.solver.check(c)
            if r == z3.unknown:
                self.unknown = True
            taken = r != z3.unsat
            if taken:  # the other side is explored later, checked then
                self.alternatives.append((*self.taken, Decision(False, check=True)))
            lit = c if taken else z3.Not(c)
        self.taken.append(Decision(taken))
        self.literals.append(lit)
        self.solver.add(lit)
        neg = z3.simplify(z3.Not(c))
        self._alive += [c, neg]
        self._memo[key] = taken
        self._memo[neg.get_id()] = not taken
        return taken

    def condition(self) -> z3.BoolRef:
        """Everything this path assumed and decided."""
        return z3.And(*self.facts, *self.literals)

    def model(self) -> z3.ModelRef | None:
        """A satisfying assignment of the path's inputs."""
        if self.solver.check() != z3.sat:
            return None
        return self.solver.model()


@attrs.frozen(kw_only=True)
class Outcome(Generic[T]):
    """A finished path: its condition, a witness assignment, and what the function did."""

    status: Status
    value: T | None
    error: str | None
    condition: z3.BoolRef
    model: z3.ModelRef | None
    depth: int


@attrs.define
class Explorer:
    """Depth-first enumeration of every feasible path of one function."""

    timeout_ms: int = 5000
    max_paths: int = 20000
    paths: int = 0
    infeasible: int = 0
    queries: int = 0
    truncated: bool = False

    def run(self, fn: Callable[[Path], T]) -> Iterator[Outcome[T]]:
        """Yield one Outcome per feasible path of fn(path)."""
        solver = z3.Solver()
        stack: list[tuple[Decision, ...]] = [()]
        while stack:
            if self.paths >= self.max_paths:
                self.truncated = True
                return
            prefix = stack.pop()
            path = Path(solver, prefix, self.timeout_ms)
            value: T | None = None
            error = None
            status = Status.DONE
            try:
                value = fn(path)
            except Infeasible:
                self.infeasible += 1
                self.queries += path.queries
                continue
            except SymbolicMisuse:
                raise
            except Exception as exc:  # the model itself failed on a feasible input
                status, error = Status.RAISED, f"{type(exc).__name__}: {exc}"
            self.paths += 1
            self.queries += path.queries
            stack.extend(reversed(path.alternatives))
            if path.unknown:
                status = Status.UNKNOWN
            yield Outcome(status=status, value=value, error=error,
                          condition=path.condition(), model=path.model(),
                          depth=len(path.taken))


@attrs.frozen
class SymRandom:
    """get_prandom_u32() as an open choice: every draw a fresh input in [0, 2**32)."""

    path: Path

    def u32(self, *site: object) -> int:
        """A fresh 32-bit input named after its call site's kind."""
        kind = str(site[0]) if site else "rand"
        r: int = self.path.fresh(f"rand.{kind}", 0, 0xFFFFFFFF)  # type: ignore[assignment]
        return r


def value_of(m: z3.ModelRef, x: object) -> object:
    """A symbolic int's value in a model; concrete values as they are."""
    if isinstance(x, SymInt):
        return m.eval(x.e, model_completion=True).as_long()
    return x
