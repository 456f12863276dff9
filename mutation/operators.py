"""Source mutants by AST: each one a single textual splice, named file:line:col:operator.

A mutant is also anchored where line numbers cannot move it: `file::scope:operator#n`
(the enclosing function's qualified name, the n-th such edit in it) with a digest of the
mutated function alone, so an edit elsewhere in the file leaves its result and its class
valid (mutation/report.py, mutation/runner.py).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from pathlib import Path

import attrs

# One swap per operator, so each site yields one mutant and IDs stay short.
_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
    ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
}
_NEGATING = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
# Calls that write a map: in model/ they return the new map (so the mutant keeps the old
# one), in datapath/ they are statements (covered by stmt-del).
_WRITE_METHODS = frozenset({"put", "put_noexist", "delete", "touch", "update", "pop"})
# Seeded-fault switches are flags, not semantics: a mutant of `"x" in node.faults` would
# only re-enable a registered fault.
_FAULT_NAMES = frozenset({"faults", "fault"})


@attrs.frozen(kw_only=True)
class Mutant:
    """One edit of one file; `id` is stable for unchanged source."""

    id: str
    path: str
    line: int
    col: int
    operator: str
    start: int
    end: int
    replacement: str
    original: str
    anchor: str = ""  # file::scope:operator[#n], stable under edits outside the scope
    seg_start: int = 0  # the enclosing function (or top-level statement): what `local` hashes
    seg_end: int = 0
    site: str = ""  # the line's code, whitespace folded and any trailing comment cut

    def pin(self) -> str:
        """What a classification names so that it can tell if its anchor moved to another
        edit (a `#n` renumbered by an edit earlier in the function): line and edit."""
        return f"{self.site} :: {self.describe()}"

    def apply(self, source: bytes) -> bytes:
        """The file's bytes with this mutant's splice applied."""
        return source[: self.start] + self.replacement.encode() + source[self.end:]

    def digest(self, source: bytes) -> str:
        """Hash of the mutated file: a cached result is reused only for the same edit."""
        return hashlib.sha256(self.apply(source)).hexdigest()[:16]

    def local_digest(self, source: bytes) -> str:
        """Hash of the mutated enclosing function: reused across edits outside it."""
        seg = (source[self.seg_start:self.start] + self.replacement.encode()
               + source[self.end:self.seg_end])
        return hashlib.sha256(self.anchor.encode() + b"\0" + seg).hexdigest()[:16]

    def describe(self) -> str:
        """One line for the report: original -> replacement, whitespace folded."""
        old = " ".join(self.original.split())
        new = " ".join(self.replacement.split())
        if len(old) > 70:
            old = old[:67] + "..."
        if len(new) > 70:
            new = new[:67] + "..."
        return f"`{old}` -> `{new}`"


def _mentions_fault(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in _FAULT_NAMES:
            return True
        if isinstance(sub, ast.Name) and sub.id in _FAULT_NAMES:
            return True
    return False


def _is_docstring(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


_PAIRS = frozenset(frozenset(p) for p in (("lo", "hi"), ("start", "end"), ("src", "dst"),
                                           ("a", "b"), ("old", "new"), ("x", "y")))


def _similar_names(a: str, b: str) -> bool:
    """saddr/daddr, sport/dport, nat_min/nat_max: a shared stem of three or more characters."""
    if a == b:
        return False
    if frozenset((a, b)) in _PAIRS:
        return True
    prefix = len(next((a[:i] for i in range(min(len(a), len(b)), 0, -1)
                       if a[:i] == b[:i]), ""))
    suffix = len(next((a[-i:] for i in range(min(len(a), len(b)), 0, -1)
                       if a[-i:] == b[-i:]), ""))
    return max(prefix, suffix) >= 3


def _same_kind(a: ast.expr, b: ast.expr) -> bool:
    """Heuristic for 'same-typed' arguments (no types at hand): like constants, sibling
    attributes of one object (p.saddr, p.daddr), or names sharing a stem (sport, dport)."""
    if isinstance(a, ast.Constant) and isinstance(b, ast.Constant):
        return type(a.value) is type(b.value) and a.value != b.value
    if isinstance(a, ast.Attribute) and isinstance(b, ast.Attribute):
        return _norm(a.value) == _norm(b.value) and _similar_names(a.attr, b.attr)
    if isinstance(a, ast.Name) and isinstance(b, ast.Name):
        return _similar_names(a.id, b.id)
    return False


class _Collector(ast.NodeVisitor):
    """Walks one module and records (node, operator, replacement-node-or-text) sites."""

    def __init__(self, *, immutable_writes: bool) -> None:
        self.immutable_writes = immutable_writes
        self.sites: list[tuple[ast.AST, str, ast.AST | str]] = []
        self._returns_none: list[bool] = []

    # --- scopes that hold no behaviour -----------------------------------------------------
    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self._negate(node.test)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        ret = node.returns
        self._returns_none.append(isinstance(ret, ast.Constant) and ret.value is None)
        # Defaults may carry behaviour; annotations and decorators do not.
        for d in [*node.args.defaults, *node.args.kw_defaults]:
            if d is not None:
                self.visit(d)
        self._body(node.body)
        self._returns_none.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._body(node.body)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # messages, not semantics

    def visit_Assert(self, node: ast.Assert) -> None:
        return

    def _body(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if _is_docstring(stmt):
                continue
            self.visit(stmt)

    # --- statements ---------------------------------------------------------------------
    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt):
            self._stmt(node)
        super().generic_visit(node)

    def _stmt(self, node: ast.stmt) -> None:
        deletable = (
            (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
            or isinstance(node, ast.AugAssign | ast.Raise | ast.Continue | ast.Break)
            or (isinstance(node, ast.Assign)
                and all(isinstance(t, ast.Attribute | ast.Subscript) for t in node.targets))
        )
        if deletable and not _mentions_fault(node):
            self.sites.append((node, "stmt-del", "pass"))

    def visit_While(self, node: ast.While) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        none_fn = bool(self._returns_none) and self._returns_none[-1]
        if value is not None and not none_fn and not (
                isinstance(value, ast.Constant) and value.value is None):
            self.sites.append((value, "return-none", ast.Constant(None)))
        self.generic_visit(node)

    def _negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # not-drop covers it
        if isinstance(test, ast.Constant) or _mentions_fault(test):
            return
        if (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], _NEGATING)):
            return  # the cmp swap is this negation already
        self.sites.append((test, "negate", ast.UnaryOp(op=ast.Not(), operand=test)))

    # --- expressions --------------------------------------------------------------------
    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        for cond in node.ifs:
            self._negate(cond)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if not _mentions_fault(node):
            for i, op in enumerate(node.ops):
                new_op = _CMP_SWAP.get(type(op))
                if new_op is None:
                    continue
                ops = list(node.ops)
                ops[i] = new_op()
                name = f"cmp-{type(op).__name__}-{new_op.__name__}".lower()
                if len(node.ops) > 1:
                    name += f"-{i}"
                self.sites.append((node, name, ast.Compare(left=node.left, ops=ops,
                                                           comparators=node.comparators)))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        swapped: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        name = "boolop-and-or" if isinstance(node.op, ast.And) else "boolop-or-and"
        self.sites.append((node, name, ast.BoolOp(op=swapped, values=node.values)))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not) and not _mentions_fault(node):
            self.sites.append((node, "not-drop", node.operand))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        new_op = _BIN_SWAP.get(type(node.op))
        if new_op is not None:
            name = f"binop-{type(node.op).__name__}-{new_op.__name__}".lower()
            self.sites.append((node, name, ast.BinOp(left=node.left, op=new_op(),
                                                     right=node.right)))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, bool):
            self.sites.append((node, "bool-flip", ast.Constant(not v)))
        elif isinstance(v, int):
            self.sites.append((node, "const-inc", ast.Constant(v + 1)))
            if v != 0:
                self.sites.append((node, "const-dec", ast.Constant(v - 1)))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else (
            func.id if isinstance(func, ast.Name) else "")
        if fname == "evolve":
            for kw in node.keywords:
                if kw.arg is None:
                    continue
                kws = [k for k in node.keywords if k is not kw]
                self.sites.append((node, f"evolve-drop-{kw.arg}",
                                   ast.Call(func=func, args=node.args, keywords=kws)))
        if (self.immutable_writes and isinstance(func, ast.Attribute)
                and func.attr in _WRITE_METHODS
                and not getattr(node, "_mutation_is_stmt", False)):
            self.sites.append((node, f"write-skip-{func.attr}", func.value))
        positional = node.args
        for i in range(len(positional) - 1):
            a, b = positional[i], positional[i + 1]
            if isinstance(a, ast.Starred) or isinstance(b, ast.Starred):
                continue
            if _same_kind(a, b):
                args = list(positional)
                args[i], args[i + 1] = b, a
                self.sites.append((node, f"argswap-{i}-{i + 1}",
                                   ast.Call(func=func, args=args, keywords=node.keywords)))
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Call):
            node.value._mutation_is_stmt = True  # type: ignore[attr-defined]
        self.generic_visit(node)


def _line_starts(source: bytes) -> list[int]:
    starts = [0]
    for i, b in enumerate(source):
        if b == 0x0A:
            starts.append(i + 1)
    return starts


def _norm(tree: ast.AST) -> str:
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _stmt_name(st: ast.stmt) -> str:
    """A module- or class-level statement's name: what it assigns, else its kind."""
    target = (st.targets[0] if isinstance(st, ast.Assign) and st.targets
              else st.target if isinstance(st, ast.AnnAssign) else None)
    return target.id if isinstance(target, ast.Name) else f"<{type(st).__name__.lower()}>"


def _scopes(tree: ast.Module) -> list[tuple[int, int, int, int, str]]:
    """(line, col, end line, end col, qualname) of every function, and of every statement
    directly in a module or class body, innermost last when sorted by start."""
    out: list[tuple[int, int, int, int, str]] = []

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for st in body:
            pos = (st.lineno, st.col_offset, st.end_lineno or st.lineno, st.end_col_offset or 0)
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((*pos, prefix + st.name))
                walk(st.body, prefix + st.name + ".")
            elif isinstance(st, ast.ClassDef):
                walk(st.body, prefix + st.name + ".")
            elif not prefix or not any(prefix.startswith(q + ".") for *_, q in out):
                out.append((*pos, (prefix or "<module>.") + _stmt_name(st)))
    walk(tree.body, "")
    return out


def _enclosing(scopes: list[tuple[int, int, int, int, str]], line: int, col: int
               ) -> tuple[int, int, int, int, str] | None:
    best = None
    for sc in scopes:
        if ((sc[0], sc[1]) <= (line, col) <= (sc[2], sc[3])
                and (best is None or (sc[0], sc[1]) >= (best[0], best[1]))):
            best = sc
    return best


def mutants_of(path: Path, rel: str, *, immutable_writes: bool = False) -> list[Mutant]:
    """Every valid mutant of one file, sorted by position then operator; IDs are unique.

    `immutable_writes`: map writes return the new map (model/), so skipping one is a mutant.
    """
    source = path.read_bytes()
    tree = ast.parse(source, filename=rel)
    collector = _Collector(immutable_writes=immutable_writes)
    collector.visit(tree)
    starts = _line_starts(source)
    original_norm = _norm(tree)
    seen_code: set[str] = set()
    seen_ids: dict[str, int] = {}
    seen_anchors: dict[str, int] = {}
    scopes = _scopes(tree)
    out: list[Mutant] = []
    sites = sorted(collector.sites, key=lambda s: (
        s[0].lineno, s[0].col_offset, s[1]))  # type: ignore[attr-defined]
    for node, op, repl in sites:
        line, col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        end_line, end_col = node.end_lineno, node.end_col_offset  # type: ignore[attr-defined]
        start = starts[line - 1] + col
        end = starts[end_line - 1] + end_col
        text = repl if isinstance(repl, str) else f"({ast.unparse(repl)})"
        mutated = source[:start] + text.encode() + source[end:]
        try:
            norm = _norm(ast.parse(mutated))
        except SyntaxError:
            continue
        if norm == original_norm or norm in seen_code:
            continue  # no-op or a duplicate of an earlier mutant
        seen_code.add(norm)
        mid = f"{rel}:{line}:{col}:{op}"
        n = seen_ids.get(mid, 0)
        seen_ids[mid] = n + 1
        if n:
            mid += f"#{n}"
        sc = _enclosing(scopes, line, col)
        seg = (0, len(source)) if sc is None else (starts[sc[0] - 1] + sc[1],
                                                   starts[sc[2] - 1] + sc[3])
        anchor = f"{rel}::{'<module>' if sc is None else sc[4]}:{op}"
        k = seen_anchors.get(anchor, 0)
        seen_anchors[anchor] = k + 1
        out.append(Mutant(id=mid, path=rel, line=line, col=col, operator=op, start=start,
                          end=end, replacement=text,
                          original=source[start:end].decode(errors="replace"),
                          anchor=f"{anchor}#{k}" if k else anchor,
                          seg_start=seg[0], seg_end=seg[1], site=_site(source, starts, line)))
    return out


def _site(source: bytes, starts: list[int], line: int) -> str:
    """One source line as code: whitespace folded, a `  #` inline comment cut."""
    end = starts[line] if line < len(starts) else len(source)
    text = source[starts[line - 1]:end].decode(errors="replace")
    return " ".join(text.split("  #", 1)[0].split())


def operator_family(op: str) -> str:
    """The operator's family for the report's per-operator table (cmp, const, stmt-del...)."""
    for fam in ("cmp", "binop", "boolop", "evolve-drop", "write-skip", "argswap"):
        if op.startswith(fam):
            return fam
    return op


def iter_files(root: Path, files: list[str]) -> Iterator[tuple[Path, str]]:
    """Resolve repository-relative file names, in the given order."""
    for rel in files:
        yield root / rel, rel
