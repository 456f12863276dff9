"""Maps of arbitrary content for induction: the model's own LruMap over an unknown rest.

An induction step starts from *any* state that satisfies the invariant, so a map's contents
cannot be listed. `OpenMap` is an `EqMap` (the store under model.maps.LruMap) whose entries
are a log of the writes the model made on this path over an uninterpreted *rest*: for each
key family (the key class with its concrete enum fields, e.g. NatTuple/TCP/OUT) one z3
function says whether a key is present and one per value field says what it holds. The
model's own code reads and writes it through LruMap as usual; a read of an unwritten key
branches on the rest's presence function and returns an entry built from its field
functions. `View` gives the same contents as z3 terms, before (the rest alone) or after
(the write log over the rest), for the invariants, which are formulas over a view.

Scope: an open map never evicts (LRU eviction is outside the induction's scope) and cannot be
enumerated; model code that iterates a map (CT GC) raises SymbolicMisuse here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import attrs
import z3

from model.maps import EqMap
from properties import zterms as zt
from properties.symvalues import SymbolicMisuse, SymBool, SymInt, current

PORT = (0, 0xFFFF)
U16 = (0, 0xFFFF)
ANY = None  # an integer with no domain (timestamps)
BOOL = "bool"
OPT_ADDR = "opt-addr"  # an address or None
ADDR = "addr"


def term(x: object) -> z3.ExprRef:
    """A model value (SymInt, SymBool, int, bool, address, enum) as a z3 term."""
    if isinstance(x, (SymInt, SymBool)):
        return x.e
    if isinstance(x, bool):
        return z3.BoolVal(x)
    if isinstance(x, enum.Enum):
        return z3.IntVal(int(x.value))
    if isinstance(x, (int, IPv4Address, IPv6Address)):
        return zt.const(int(x))
    raise SymbolicMisuse(f"no z3 term for a {type(x).__name__}")


@attrs.frozen
class Family:
    """A key class with its concrete (enum) fields fixed; the others are z3 integers."""

    cls: type
    fixed: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, key: object) -> Family:
        """The family a model key belongs to."""
        fixed = tuple((f.name, getattr(key, f.name)) for f in attrs.fields(type(key))  # type: ignore[arg-type]
                      if isinstance(getattr(key, f.name), enum.Enum))
        return cls(type(key), fixed)

    @property
    def name(self) -> str:
        """Readable: NatTuple.TCP.IN."""
        vals = ".".join(v.name if isinstance(v, enum.Enum) else str(v) for _, v in self.fixed)
        return f"{self.cls.__name__}.{vals}"

    def open_fields(self) -> tuple[str, ...]:
        """The key fields that are z3 integers."""
        fixed = {n for n, _ in self.fixed}
        return tuple(f.name for f in attrs.fields(self.cls) if f.name not in fixed)

    def terms(self, key: object) -> tuple[z3.ExprRef, ...]:
        """The open fields of a key of this family as z3 terms."""
        return tuple(term(getattr(key, n)) for n in self.open_fields())


Spec = dict[str, Any]  # value field -> (lo, hi) | ANY | BOOL | ADDR | OPT_ADDR


class Rest:
    """The uninterpreted part of one map: presence and field functions per key family."""

    def __init__(self, name: str, value_cls: type, spec: Spec, addr_bits: int) -> None:
        missing = {f.name for f in attrs.fields(value_cls)} ^ set(spec)
        if missing:  # the model's entry grew or lost a field: the encoding must follow
            raise SymbolicMisuse(f"{name}: value fields not encoded: {sorted(missing)}")
        self.name, self.value_cls, self.spec = name, value_cls, spec
        self.addr = (0, (1 << addr_bits) - 1)
        self.reads: list[tuple[Family, tuple[z3.ExprRef, ...]]] = []
        # facts the path may assume about a key it reads (an induction's hypothesis there)
        self.on_read: Any = None
        self._fns: dict[tuple[Family, str], z3.FuncDeclRef] = {}
        self._apps: dict[tuple[Family, str, tuple[int, ...]], Any] = {}
        self._keep: list[object] = []  # keeps the ids in _apps from reuse

    def fn(self, fam: Family, field: str, sort: z3.SortRef) -> z3.FuncDeclRef:
        """The z3 function of one family's field (or presence)."""
        got = self._fns.get((fam, field))
        if got is None:
            ints = [zt.INT] * len(fam.open_fields())
            got = z3.Function(f"{self.name}.{fam.name}.{field}", *ints, sort)
            self._fns[(fam, field)] = got
        return got

    def apply(self, fam: Family, field: str, sort: z3.SortRef,
              keys: tuple[z3.ExprRef, ...], ids: tuple[int, ...] | None = None) -> Any:
        """fn(keys), built once per key (z3's Python layer is the cost here); ids: the
        keys' AST ids when the caller has them already."""
        ident = (fam, field, tuple(k.get_id() for k in keys) if ids is None else ids)
        got = self._apps.get(ident)
        if got is None:
            got = self._apps[ident] = zt.app(self.fn(fam, field, sort), keys)
            self._keep.append(keys)
        return got

    def present(self, fam: Family, keys: tuple[z3.ExprRef, ...]) -> z3.BoolRef:
        """Whether the arbitrary initial map holds this key."""
        return self.apply(fam, "present", zt.BOOL, keys)

    def field(self, fam: Family, name: str, keys: tuple[z3.ExprRef, ...],
              ids: tuple[int, ...] | None = None) -> z3.ExprRef:
        """One field of the entry at this key (meaningful when present)."""
        kind = self.spec[name]
        if kind == BOOL:
            return self.apply(fam, name, zt.BOOL, keys, ids)
        if kind == OPT_ADDR:
            return self.apply(fam, f"{name}.set", zt.BOOL, keys, ids)
        return self.apply(fam, name, zt.INT, keys, ids)

    def addr_field(self, fam: Family, name: str, keys: tuple[z3.ExprRef, ...],
                   ids: tuple[int, ...] | None = None) -> z3.ExprRef:
        """The address half of an optional-address field."""
        return self.apply(fam, name, zt.INT, keys, ids)

    def entry(self, fam: Family, keys: tuple[z3.ExprRef, ...]) -> object:
        """The model's value object at a present key, its fields symbolic."""
        path = current()
        fields: dict[str, object] = {}
        ids = tuple(k.get_id() for k in keys)
        for name, kind in self.spec.items():
            t = self.field(fam, name, keys, ids)
            if kind == BOOL:
                fields[name] = SymBool(t)
            elif kind == OPT_ADDR:
                a = self.addr_field(fam, name, keys, ids)
                path.bound_term(a, *self.addr)
                fields[name] = SymInt(a) if SymBool(t) else None
            else:
                if kind != ANY:
                    path.bound_term(t, *(self.addr if kind == ADDR else kind))
                fields[name] = SymInt(t)
        return self.value_cls(**fields)


class OpenMap(EqMap[Any, Any]):
    """An EqMap holding a write log over an arbitrary rest; None in the log is a delete."""

    __slots__ = ("_log", "_rest")

    def __init__(self, rest: Rest, log: tuple[tuple[Any, Any], ...] = ()) -> None:
        super().__init__()
        self._rest, self._log = rest, log

    @property
    def rest(self) -> Rest:
        """The uninterpreted initial contents."""
        return self._rest

    @property
    def log(self) -> tuple[tuple[Any, Any], ...]:
        """The writes made on this path, oldest first (value None: deleted)."""
        return self._log

    def __getitem__(self, key: Any) -> Any:
        fam = Family.of(key)
        for k, v in reversed(self._log):
            # keys of another family (flags, protocol) never match: no field comparisons
            if Family.of(k) == fam and k == key:
                if v is None:
                    raise KeyError(key)
                return v
        keys = fam.terms(key)
        self._rest.reads.append((fam, keys))
        if self._rest.on_read is not None:
            current().assume(self._rest.on_read(fam, keys))
        if not SymBool(self._rest.present(fam, keys)):
            raise KeyError(key)
        return self._rest.entry(fam, keys)

    def __iter__(self) -> Iterator[Any]:
        raise SymbolicMisuse("an arbitrary map cannot be enumerated")

    def __len__(self) -> int:
        raise SymbolicMisuse("an arbitrary map has no known size")

    def __repr__(self) -> str:
        return f"OpenMap({self._rest.name}, {len(self._log)} writes)"

    def without(self, key: Any) -> OpenMap:
        """Deleted from here on."""
        return OpenMap(self._rest, (*self._log, (key, None)))

    def with_item(self, key: Any, value: Any, capacity: int | None = None) -> OpenMap:
        """Written from here on; never evicts (eviction is outside the proof's scope)."""
        return OpenMap(self._rest, (*self._log, (key, value)))


class Slot:
    """A key's contents as z3 terms: presence, and each value field on first use."""

    def __init__(self, view: View, fam: Family, keys: tuple[z3.ExprRef, ...]) -> None:
        self._view, self._fam, self._keys = view, fam, keys
        self._hits = view.hits(fam, keys)
        present: z3.ExprRef = zt.FALSE if view.empty else view.rest.present(fam, keys)
        for hit, v in self._hits:
            present = zt.choose(hit, zt.FALSE if v is None else zt.TRUE, present)
        self.present = present

    def __getattr__(self, name: str) -> z3.ExprRef:
        if name.startswith("_"):
            raise AttributeError(name)
        rest = self._view.rest
        base, _, part = name.partition(".")
        kind = rest.spec.get(base)
        if kind is None:
            raise AttributeError(name)
        addr = kind == OPT_ADDR and part == "addr"
        val = (rest.addr_field(self._fam, base, self._keys) if addr
               else rest.field(self._fam, base, self._keys))
        for hit, v in self._hits:
            if v is None:
                continue
            x = getattr(v, base)
            if kind == OPT_ADDR:
                if addr and x is None:
                    continue
                val = zt.choose(hit, term(x) if addr else zt.FALSE if x is None else zt.TRUE, val)
            else:
                val = zt.choose(hit, term(x), val)
        setattr(self, name, val)
        return val


class View:
    """A map's contents as formulas: the rest, overlaid by a write log (empty: before)."""

    def __init__(self, rest: Rest, log: tuple[tuple[Any, Any], ...] = (),
                 empty: bool = False) -> None:
        self.rest, self.log, self.empty = rest, log, empty
        self._keyed = [(Family.of(k), Family.of(k).terms(k), v) for k, v in log]
        self._slots: dict[tuple[Family, tuple[int, ...]], Slot] = {}

    def hits(self, fam: Family, keys: tuple[z3.ExprRef, ...]
             ) -> list[tuple[z3.BoolRef, Any]]:
        """The writes to this family, oldest first, each with `key equals keys`."""
        return [(zt.conj([zt.eq(a, b) for a, b in zip(t, keys, strict=True)]), v)
                for f, t, v in self._keyed if f == fam]

    def get(self, fam: Family, keys: tuple[z3.ExprRef, ...]) -> Slot:
        """The slot at a key: the latest write to an equal key, else the rest."""
        ident = (fam, tuple(k.get_id() for k in keys))
        got = self._slots.get(ident)
        if got is None:
            got = self._slots[ident] = Slot(self, fam, keys)
            self._alive = getattr(self, "_alive", [])
            self._alive.append(keys)
        return got


def written(m: Any) -> OpenMap:
    """The OpenMap under a model LruMap after a step."""
    entries = m.entries
    if not isinstance(entries, OpenMap):
        raise SymbolicMisuse("the step replaced the open map")
    return entries
