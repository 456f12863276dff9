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
from typing import Generic, TypeVar

import attrs
import z3

from model.maglev import IPAddr, select
from properties.intervals import Interval, Memo, interval, truth
from properties.symvalues import _PATH, Input, SymbolicMisuse, SymInt, current
from properties.zterms import assert_in as add
from properties.zterms import conj, within

T = TypeVar("T")

class Status(enum.Enum):
    """How a path ended."""

    DONE = "done"  # the function returned
    RAISED = "raised"  # the model raised on a feasible input (a model bug)
    UNKNOWN = "unknown"  # the solver could not decide a branch on this path


class Infeasible(Exception):
    """The replayed prefix turned out unsatisfiable; the path is discarded."""


def scoped_check(solver: z3.Solver, *facts: z3.BoolRef) -> z3.CheckSatResult:
    """The solver's assertions and the facts, in a scope of their own, not as assumptions
    (z3 keeps a proxy of every non-literal assumption, and slows as they pile up)."""
    solver.push()
    try:
        for f in facts:
            add(solver, f)
        return solver.check()
    finally:
        solver.pop()


@attrs.frozen
class Decision:
    """One branch taken; `check` when the solver has not yet seen this side feasible."""

    taken: bool
    check: bool = False


class Shared:
    """What the paths of one exploration may share: a replayed prefix rebuilds the same
    (hash-consed) terms, so their domains, intervals and branch classification are
    computed once. Every bounded constant has one domain (a fresh input whose name was
    taken with another domain gets a new name), so an interval holds on every path."""

    def __init__(self) -> None:
        self.bounds: dict[int, Interval] = {}  # term id -> domain, for interval()
        self.imemo: Memo = {}  # intervals by term id (the memo keeps each term alive)
        # raw condition id -> decided by domains alone (bool), or (simplified, negation)
        self.conds: dict[int, tuple[z3.ExprRef, bool | tuple[z3.BoolRef, z3.BoolRef]]] = {}
        self.names: dict[str, Interval] = {}  # fresh constant name -> its domain
        self.domains: dict[int, z3.BoolRef] = {}  # term id -> lo <= term <= hi
        self.truths: dict[int, tuple[bool | None, z3.ExprRef]] = {}  # by condition id

    def truth(self, c: z3.ExprRef) -> bool | None:
        """truth() by the domains, once per condition (a domain is the same on every path)."""
        got = self.truths.get(c.get_id())
        if got is None:
            got = self.truths[c.get_id()] = (truth(c, self.bounds, self.imemo), c)
        return got[0]

    def domain(self, e: z3.ArithRef, lo: int, hi: int) -> z3.BoolRef:
        """The fact lo <= e <= hi, built once per term (a term has one domain)."""
        got = self.domains.get(e.get_id())
        if got is None:
            got = self.domains[e.get_id()] = within(e, lo, hi)
        return got


class Path:
    """One execution: replays a decision prefix, then decides new branches with the solver."""

    def __init__(self, solver: z3.Solver, prefix: tuple[Decision, ...], timeout_ms: int,
                 inputs: tuple[Input, ...] = (), abstract: int = 0,
                 shared: Shared | None = None) -> None:
        self.abstract = abstract  # deeper terms become fresh inputs over their interval
        self._depth: dict[int, int] = {}
        self.shared = Shared() if shared is None else shared
        self._imemo = self.shared.imemo
        self.bounds = self.shared.bounds
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
        self.draws: list[SymInt] = []  # get_prandom_u32() results in order (TwinRandom)
        self._memo: dict[int, bool] = {}  # by AST id; _alive keeps those ids from reuse
        self._alive: list[z3.ExprRef] = []
        self._asserted: set[int] = set()  # bounded terms whose domain this path asserted
        # a model of everything asserted so far, when one is at hand: the side of a branch
        # it satisfies is feasible without asking the solver (the concolic shortcut)
        self._model: z3.ModelRef | None = None
        solver.reset()
        solver.set(timeout=timeout_ms)
        for i in inputs:
            self.bounds[i.var.e.get_id()] = (i.lo, i.hi)
            self._asserted.add(i.var.e.get_id())
            self.assume(i.fact())

    def fresh(self, name: str, lo: int, hi: int) -> SymInt:
        """A new input in [lo, hi]; names repeat identically on every replay of a prefix."""
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        full = f"{name}#{n}" if n else name
        if self.shared.names.setdefault(full, (lo, hi)) != (lo, hi):
            full = f"{full}[{lo},{hi}]"  # another path's input of this name ranges otherwise
            self.shared.names[full] = (lo, hi)
        x = z3.Int(full)
        self.bounds[x.get_id()] = (lo, hi)
        self._asserted.add(x.get_id())
        self._alive.append(x)
        self.assume(self.shared.domain(x, lo, hi))
        return SymInt(x)

    def abstracted(self, e: z3.ArithRef, ops: tuple[z3.ArithRef, ...]) -> z3.ArithRef:
        """e (built from the terms ops), or past the depth limit a fresh input ranging over
        e's interval: an over-approximation (sound for proofs; a failure is then only a
        candidate)."""
        i = e.get_id()
        if i in self._depth:  # met before (an operand returned unchanged): as deep as then
            return e
        d = 1 if i in self._asserted else (  # a fresh input or bounded field: a leaf
            1 + max((self._depth.get(c.get_id(), 0) for c in ops), default=0))
        if d > self.abstract:
            iv = interval(e, self.bounds, self._imemo)
            if iv is not None:
                return self.fresh("abs", *iv).e
        self._depth[e.get_id()] = d
        self._alive.append(e)
        return e

    def bound_term(self, e: z3.ExprRef, lo: int, hi: int) -> None:
        """A term (an arbitrary map's field) known to lie in [lo, hi], like an input."""
        i = e.get_id()
        if i not in self._asserted:
            self._asserted.add(i)
            self.bounds.setdefault(i, (lo, hi))
            self._alive.append(e)
            self.assume(self.shared.domain(e, lo, hi))

    def assume(self, fact: z3.BoolRef) -> None:
        """A fact about the inputs (a domain), not a branch."""
        self.facts.append(fact)
        self._assert(fact)

    def _assert(self, f: z3.BoolRef) -> None:
        """Assert f; the path's model survives only if it satisfies f too."""
        add(self.solver, f)
        if self._model is not None and self._holds(f) is not True:
            self._model = None

    def _holds(self, f: z3.BoolRef) -> bool | None:
        """f's value in the path's current model (None: no model)."""
        if self._model is None:
            return None
        v = self._model.eval(f, model_completion=True)
        return True if z3.is_true(v) else False if z3.is_false(v) else None

    def require(self, fact: z3.BoolRef, why: str) -> None:
        """A precondition of an operation: it must follow from the path so far."""
        if not self._valid(fact):
            raise SymbolicMisuse(f"cannot show that the {why}")

    def _valid(self, fact: z3.BoolRef) -> bool:
        if self.shared.truth(fact) is True:
            return True
        f = z3.simplify(fact)
        if z3.is_true(f):
            return True
        r = self._sat(z3.Not(f))
        if r == z3.unknown:  # carry on, but this path can no longer prove anything
            self.unknown = True
            return True
        return bool(r == z3.unsat)

    def decide(self, cond: z3.BoolRef) -> bool:
        """The branch this path takes on `cond`; records the other side for later."""
        got = self.shared.conds.get(cond.get_id())
        if got is None:
            got = self.shared.conds[cond.get_id()] = (cond, self._classify(cond))
        kind = got[1]
        if isinstance(kind, bool):  # the domains alone decide it: no branch at all
            return kind
        c, neg = kind
        key = c.get_id()
        if key in self._memo:
            return self._memo[key]
        i = len(self.taken)
        if i < len(self.prefix):
            d = self.prefix[i]
            lit = c if d.taken else neg
            if d.check:
                r = self._sat(lit, keep_model=True)
                if r == z3.unsat:
                    raise Infeasible
                if r == z3.unknown:
                    self.unknown = True
            taken = d.taken
        else:
            taken = self._new_branch(c, neg)
            lit = c if taken else neg
        self.taken.append(Decision(taken))
        self.literals.append(lit)
        self._assert(lit)
        self._memo[key] = taken
        self._memo[neg.get_id()] = not taken
        return taken

    def _classify(self, cond: z3.BoolRef) -> bool | tuple[z3.BoolRef, z3.BoolRef]:
        """A condition's truth where domains or simplification decide it, else the
        simplified condition and its negation (kept alive by the shared cache)."""
        known = truth(cond, self.bounds, self._imemo)
        if known is not None:
            return known
        c = z3.simplify(cond)
        if z3.is_true(c) or z3.is_false(c):
            return bool(z3.is_true(c))
        return c, z3.simplify(z3.Not(c))

    def _new_branch(self, c: z3.BoolRef, neg: z3.BoolRef) -> bool:
        """Take the then side if feasible (then-first, as before: the first violation found
        stays the readable one) and record the else side for later if it is feasible too;
        where the path's model already shows one side feasible, one query instead of two."""
        by_model = self._holds(c)
        if by_model is not True:
            r = self._sat(c, keep_model=True)
            if r == z3.unknown:
                self.unknown = True
            if r == z3.unsat:
                return False  # the path is feasible, so its else side is
        if by_model is False:  # the old model satisfies the else side: feasible
            other = z3.sat
        else:
            other = self._sat(neg)  # checked while the solver is warm
            if other == z3.unknown:
                self.unknown = True
        if other != z3.unsat:  # explored later (re-checked only if undecided)
            self.alternatives.append((*self.taken, Decision(False, check=other == z3.unknown)))
        return True

    def _sat(self, f: z3.BoolRef, keep_model: bool = False) -> z3.CheckSatResult:
        """The path so far and f (keep_model: a model of both, if sat, becomes the path's)."""
        self.queries += 1
        if not keep_model:
            return scoped_check(self.solver, f)
        self.solver.push()
        try:
            add(self.solver, f)
            r = self.solver.check()
            if r == z3.sat:
                self._model = self.solver.model()
            return r
        finally:
            self.solver.pop()

    def parts(self) -> tuple[z3.BoolRef, ...]:
        """Everything this path assumed and decided (their conjunction is its condition)."""
        return (*self.facts, *self.literals)


@attrs.frozen(kw_only=True)
class Outcome(Generic[T]):
    """A finished path: its condition and what the function did."""

    status: Status
    value: T | None
    error: str | None
    parts: tuple[z3.BoolRef, ...]  # the path condition's conjuncts
    depth: int
    # the explorer's solver, holding this path's condition until the explorer resumes
    solver: z3.Solver = attrs.field(eq=False, repr=False)
    explorer: Explorer = attrs.field(eq=False, repr=False)

    @property
    def condition(self) -> z3.BoolRef:
        """Everything the path assumed and decided, as one formula (built on demand)."""
        return conj(self.parts)

    def check(self, *facts: z3.BoolRef) -> z3.CheckSatResult:
        """Satisfiability of the condition with the facts, on the path's warm solver (only
        before the explorer resumes: afterwards the solver holds another path)."""
        if self.explorer.yielded is not self:
            raise SymbolicMisuse("a path's solver was used after the explorer moved on")
        return scoped_check(self.solver, *facts)


@attrs.define
class Explorer:
    """Depth-first enumeration of every feasible path of one function."""

    timeout_ms: int = 5000
    max_paths: int = 20000
    abstract: int = 0  # term depth beyond which values are abstracted to their interval
    paths: int = 0
    infeasible: int = 0
    queries: int = 0
    truncated: bool = False
    yielded: object = attrs.field(default=None, repr=False)  # the outcome its solver holds

    def run(self, fn: Callable[[], T], inputs: tuple[Input, ...] = (),
            facts: tuple[z3.BoolRef, ...] = ()) -> Iterator[Outcome[T]]:
        """Yield one Outcome per feasible path of fn() over the inputs' domains and facts."""
        solver = z3.Solver()
        shared = Shared()
        stack: list[tuple[Decision, ...]] = [()]
        while stack:
            if self.paths >= self.max_paths:
                self.truncated = True
                return
            prefix = stack.pop()
            path = Path(solver, prefix, self.timeout_ms, inputs, self.abstract, shared)
            for f in facts:
                path.assume(f)
            value: T | None = None
            error = None
            status = Status.DONE
            token = _PATH.set(path)
            try:
                value = fn()
            except Infeasible:
                self.infeasible += 1
                self.queries += path.queries
                continue
            except SymbolicMisuse:
                raise
            except Exception as exc:  # the model itself failed on a feasible input
                status, error = Status.RAISED, f"{type(exc).__name__}: {exc}"
            finally:
                _PATH.reset(token)
            self.paths += 1
            self.queries += path.queries
            stack.extend(reversed(path.alternatives))
            if path.unknown:
                status = Status.UNKNOWN
            self.yielded = Outcome(status=status, value=value, error=error,
                                   parts=path.parts(), depth=len(path.taken), solver=solver,
                                   explorer=self)
            yield self.yielded
            self.yielded = None


def construct(fn: Callable[[], T], inputs: tuple[Input, ...]) -> T:
    """Build a structure holding symbolic inputs (validators may compare them) without
    branching: every condition met on the way must follow from the inputs' domains."""
    path = Path(z3.Solver(), (), 5000, inputs)
    token = _PATH.set(path)
    try:
        out = fn()
    finally:
        _PATH.reset(token)
    if path.alternatives or path.unknown:
        raise SymbolicMisuse("building the symbolic world branched on an input")
    return out


@attrs.frozen
class SymRandom:
    """get_prandom_u32() as an open choice: every draw a fresh input in [0, 2**32)."""

    def u32(self, *site: object) -> int:
        """A fresh 32-bit input of the running path, named after its call site's kind."""
        kind = str(site[0]) if site else "rand"
        path = current()
        x = path.fresh(f"rand.{kind}", 0, 0xFFFFFFFF)
        path.draws.append(x)
        r: int = x  # type: ignore[assignment]
        return r


@attrs.define
class TwinRandom:
    """A second run of the model on one path draws what the first one drew, in order
    (P-XDP-01's twin without acceleration); past those, fresh draws."""

    used: int = 0

    def u32(self, *site: object) -> int:
        """The path's next earlier draw."""
        path = current()
        if self.used < len(path.draws):
            r: int = path.draws[self.used]  # type: ignore[assignment]
            self.used += 1
            return r
        return SymRandom().u32(*site)


_TABLES: dict[tuple[int, ...], int] = {}


def reset() -> None:
    """Forget the Maglev table numbering (a new z3 context starts it afresh)."""
    _TABLES.clear()


@attrs.frozen
class SymPicker:
    """A Maglev lookup on symbolic ports as one uninterpreted function of the table and the
    hashed fields: equal fields on an equal table give the same backend on every node (what
    P-MAG-01 rests on), and nothing else about jhash is assumed; the result is one of the
    table's backend IDs. Concrete fields take the datapath's own hash."""

    def pick(self, table: tuple[int, ...], saddr: IPAddr, sport: int, dport: int,
             nexthdr: int, seed: int) -> int:
        """The table's entry for these fields."""
        if not table or not any(isinstance(x, SymInt) for x in (sport, dport)):
            return select(table, saddr, sport, dport, nexthdr, seed)
        tid = _TABLES.setdefault(table, len(_TABLES))
        fn = z3.Function("maglev.pick", *([z3.IntSort()] * 6), z3.IntSort())
        args = [z3.IntVal(tid), z3.IntVal(int(saddr)), *(
            x.e if isinstance(x, SymInt) else z3.IntVal(x) for x in (sport, dport)),
            z3.IntVal(nexthdr), z3.IntVal(seed)]
        got = fn(*args)
        ids = sorted(set(table))
        path = current()
        path.bound_term(got, ids[0], ids[-1])
        path.assume(z3.Or(*[got == b for b in ids]))
        r: int = SymInt(got)  # type: ignore[assignment]
        return r


def value_of(m: z3.ModelRef, x: object) -> object:
    """A symbolic int's value in a model; concrete values as they are."""
    if isinstance(x, SymInt):
        return m.eval(x.e, model_completion=True).as_long()
    return x
