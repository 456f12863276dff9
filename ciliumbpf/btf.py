"""BTF read/write: map layouts from the object's own types, and the loader's BTF fix-ups."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import attrs

from ciliumbpf.errors import LoadError

MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


@attrs.define(kw_only=True)
class BtfType:
    """One BTF record: header words plus its kind-specific trailer, decoded to ints."""

    name_off: int
    kind: int
    vlen: int
    kflag: bool
    size_type: int
    extra: list[tuple[int, ...]]  # one tuple per trailer item (members, params, var info...)


def _extra_shape(kind: int, vlen: int) -> tuple[int, str]:
    """(count, struct format of one item) of a kind's trailer."""
    if kind in (INT, VAR, DECL_TAG):
        return 1, "<i" if kind == DECL_TAG else "<I"
    if kind == ARRAY:
        return 1, "<III"
    if kind in (STRUCT, UNION, DATASEC):
        return vlen, "<III"
    if kind == ENUM:
        return vlen, "<Ii"
    if kind == FUNC_PROTO:
        return vlen, "<II"
    if kind == ENUM64:
        return vlen, "<III"
    return 0, "<"


class Btf:
    """A parsed .BTF section; types are 1-based as in the kernel (0 is void)."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) < 24:
            raise LoadError(".BTF: shorter than its header")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", raw, 0)
        if magic != MAGIC:
            raise LoadError(f".BTF: bad magic {magic:#x} (only little-endian objects)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", raw, 8)
        self.header = raw[:hdr_len]
        self.strings = bytearray(raw[hdr_len + str_off: hdr_len + str_off + str_len])
        self.types: list[BtfType] = []
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_type = struct.unpack_from("<III", raw, pos)
            pos += 12
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            count, fmt = _extra_shape(kind, vlen)
            step = struct.calcsize(fmt)
            extra = [struct.unpack_from(fmt, raw, pos + i * step) for i in range(count)]
            pos += count * step
            self.types.append(BtfType(name_off=name_off, kind=kind, vlen=vlen,
                                      kflag=bool(info >> 31), size_type=size_type, extra=extra))

    def type(self, tid: int) -> BtfType:
        """The record of a type id (1-based)."""
        return self.types[tid - 1]

    def name(self, off: int) -> str:
        """A string from the string section."""
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode()

    def add_string(self, s: str) -> int:
        """Append a string; returns its offset."""
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def add(self, t: BtfType) -> int:
        """Append a type; returns its id."""
        self.types.append(t)
        return len(self.types)

    def find(self, kind: int, name: str) -> int | None:
        """The first type id of this kind and name."""
        for i, t in enumerate(self.types, 1):
            if t.kind == kind and self.name(t.name_off) == name:
                return i
        return None

    def skip_mods(self, tid: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
        while tid and self.type(tid).kind in _MODIFIERS:
            tid = self.type(tid).size_type
        return tid

    def decl_tags(self) -> list[tuple[str, str]]:
        """(tagged type's name, tag) for every decl tag on a whole declaration."""
        out = []
        for t in self.types:
            if t.kind == DECL_TAG and t.extra[0][0] == -1:
                out.append((self.name(self.type(t.size_type).name_off), self.name(t.name_off)))
        return out

    def encode(self) -> bytes:
        """Serialize back to a .BTF section."""
        body = bytearray()
        for t in self.types:
            info = (int(t.kflag) << 31) | (t.kind << 24) | t.vlen
            body += struct.pack("<III", t.name_off, info, t.size_type)
            _, fmt = _extra_shape(t.kind, t.vlen)
            for item in t.extra:
                body += struct.pack(fmt, *item)
        hdr = bytearray(self.header)
        struct.pack_into("<IIII", hdr, 8, 0, len(body), len(body), len(self.strings))
        return bytes(hdr) + bytes(body) + bytes(self.strings)

    # -- layouts ---------------------------------------------------------------------------

    def layout(self, tid: int) -> Layout:
        """The memory layout of a type, as packed/unpacked by Map."""
        return _layout(self, tid, 0)


@attrs.frozen(kw_only=True)
class Field:
    """A struct/union member: byte offset, and bit position for bitfields."""

    name: str
    offset: int
    type: Layout
    bit_offset: int = 0
    bit_size: int = 0

    @property
    def size(self) -> int:
        """Bytes the member spans (its type's size)."""
        return self.type.size

    @property
    def kind(self) -> str:
        """The member's kind: int, struct, union, array, enum, ptr, float."""
        return self.type.kind


@attrs.frozen(kw_only=True)
class Layout:
    """A resolved C type: kind, size, and members or element; `name` keeps the typedef name."""

    name: str
    kind: str
    size: int
    signed: bool = False
    big_endian: bool = False  # __be16/__be32/__be64: values are shown in host order
    fields: tuple[Field, ...] = ()
    elem: Layout | None = None
    nelems: int = 0

    def unpack(self, data: bytes) -> Any:
        """bytes -> int / dict / list (u8 arrays -> bytes)."""
        if len(data) < self.size:
            raise ValueError(f"{self.name or self.kind}: {len(data)} bytes, need {self.size}")
        return _unpack(self, bytes(data[:self.size]))

    def pack(self, value: Any) -> bytes:
        """int / dict / list / bytes -> exactly `size` bytes; missing struct fields are zero."""
        buf = bytearray(self.size)
        _pack_into(self, buf, 0, value, self.name or self.kind)
        return bytes(buf)


_KIND_NAMES = {STRUCT: "struct", UNION: "union", ENUM: "enum", ENUM64: "enum", PTR: "ptr",
               FLOAT: "float", INT: "int", ARRAY: "array"}


def _layout(btf: Btf, tid: int, depth: int) -> Layout:
    if depth > 32:
        raise LoadError("BTF: type nesting deeper than 32")
    name = ""
    while tid and btf.type(tid).kind in _MODIFIERS:
        t = btf.type(tid)
        if t.kind == TYPEDEF and not name:
            name = btf.name(t.name_off)
        tid = t.size_type
    if tid == 0:
        return Layout(name=name or "void", kind="void", size=0)
    t = btf.type(tid)
    name = name or btf.name(t.name_off)
    big = name.startswith("__be")
    if t.kind == INT:
        enc = t.extra[0][0]
        return Layout(name=name, kind="int", size=t.size_type, signed=bool((enc >> 24) & 1),
                      big_endian=big)
    if t.kind in (ENUM, ENUM64):
        return Layout(name=name, kind="enum", size=t.size_type, signed=t.kflag)
    if t.kind in (PTR, FLOAT):
        return Layout(name=name, kind=_KIND_NAMES[t.kind], size=8 if t.kind == PTR else t.size_type)
    if t.kind == ARRAY:
        elem_id, _idx, n = t.extra[0]
        elem = _layout(btf, elem_id, depth + 1)
        return Layout(name=name, kind="array", size=elem.size * n, elem=elem, nelems=n)
    if t.kind in (STRUCT, UNION):
        fields = []
        for m_name, m_type, m_off in t.extra:
            bit_off, bit_size = (m_off & 0xFFFFFF, m_off >> 24) if t.kflag else (m_off, 0)
            sub = _layout(btf, m_type, depth + 1)
            if sub.kind == "int" and bit_size == 0 and bit_off % 8:
                raise LoadError(f"BTF: {name}.{btf.name(m_name)}: unaligned member")
            byte_off = (bit_off // 8) if bit_size == 0 else (bit_off // 8) // sub.size * sub.size
            fields.append(Field(name=btf.name(m_name), offset=byte_off, type=sub,
                                bit_offset=bit_off - byte_off * 8 if bit_size else 0,
                                bit_size=bit_size))
        return Layout(name=name, kind=_KIND_NAMES[t.kind], size=t.size_type, fields=tuple(fields))
    if t.kind == DATASEC:  # global data (.rodata, .rodata.config): one field per variable
        dfields = tuple(Field(name=btf.name(btf.type(v).name_off), offset=off,
                             type=_layout(btf, btf.type(v).size_type, depth + 1))
                       for v, off, _sz in t.extra)
        return Layout(name=name, kind="struct", size=t.size_type, fields=dfields)
    raise LoadError(f"BTF: type {tid} ({name}): kind {t.kind} has no memory layout")


def _unpack(lay: Layout, data: bytes) -> Any:
    if lay.kind in ("int", "enum", "ptr"):
        return int.from_bytes(data, "big" if lay.big_endian else "little", signed=lay.signed)
    if lay.kind == "float":
        return struct.unpack("<f" if lay.size == 4 else "<d", data)[0]
    if lay.kind == "array":
        assert lay.elem is not None
        if lay.elem.kind == "int" and lay.elem.size == 1:
            return data
        es = lay.elem.size
        return [_unpack(lay.elem, data[i * es:(i + 1) * es]) for i in range(lay.nelems)]
    out: dict[str, Any] = {}
    for f in lay.fields:
        raw = data[f.offset:f.offset + f.size]
        if f.bit_size:
            word = int.from_bytes(raw, "little")
            val: Any = (word >> f.bit_offset) & ((1 << f.bit_size) - 1)
        else:
            val = _unpack(f.type, raw)
        if not f.name and isinstance(val, dict):
            out.update(val)  # anonymous struct/union: members read as the parent's, like C
        else:
            out[f.name] = val
    return out


def _names(lay: Layout) -> set[str]:
    out: set[str] = set()
    for f in lay.fields:
        out |= _names(f.type) if not f.name else {f.name}
    return out


def _pack_into(lay: Layout, buf: bytearray, off: int, value: Any, path: str) -> None:
    if lay.kind in ("int", "enum", "ptr"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        lo = -(1 << (lay.size * 8 - 1)) if lay.signed else 0
        hi = (1 << (lay.size * 8 - (1 if lay.signed else 0))) - 1
        if not lo <= value <= hi:
            raise ValueError(f"{path}: {value} out of range for {lay.size}-byte {lay.name}")
        buf[off:off + lay.size] = value.to_bytes(
            lay.size, "big" if lay.big_endian else "little", signed=lay.signed)
        return
    if lay.kind == "array":
        assert lay.elem is not None
        if isinstance(value, bytes | bytearray):
            if len(value) != lay.size:
                raise ValueError(f"{path}: {len(value)} bytes, need {lay.size}")
            buf[off:off + lay.size] = value
            return
        if not isinstance(value, list | tuple) or len(value) > lay.nelems:
            raise ValueError(f"{path}: expected at most {lay.nelems} elements")
        for i, v in enumerate(value):
            _pack_into(lay.elem, buf, off + i * lay.elem.size, v, f"{path}[{i}]")
        return
    if lay.kind not in ("struct", "union") or not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected a mapping for {lay.kind} {lay.name}")
    unknown = set(value) - _names(lay)
    if unknown:
        raise ValueError(f"{path}: unknown field {sorted(unknown)[0]!r}")
    for f in lay.fields:
        if not f.name:
            sub = {k: v for k, v in value.items() if k in _names(f.type)}
            if sub:
                _pack_into(f.type, buf, off + f.offset, sub, path)
            continue
        if f.name not in value:
            continue
        if f.bit_size:
            v = value[f.name]
            if not isinstance(v, int) or not 0 <= v < (1 << f.bit_size):
                raise ValueError(f"{path}.{f.name}: {v!r} does not fit {f.bit_size} bits")
            start = off + f.offset
            word = int.from_bytes(buf[start:start + f.size], "little")
            mask = ((1 << f.bit_size) - 1) << f.bit_offset
            word = (word & ~mask) | (v << f.bit_offset)
            buf[start:start + f.size] = word.to_bytes(f.size, "little")
        else:
            _pack_into(f.type, buf, off + f.offset, value[f.name], f"{path}.{f.name}")
