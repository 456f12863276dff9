"""In-memory ELF64 edits that let libbpf 1.1 open Cilium objects the way Cilium's Go loader does."""

from __future__ import annotations

import struct

import attrs

from ciliumbpf.btf import ARRAY, DATASEC, FWD, INT, PTR, STRUCT, VAR, Btf, BtfType
from ciliumbpf.errors import LoadError

SHT_PROGBITS, SHT_SYMTAB, SHT_REL = 1, 2, 9
SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK = 0x2, 0x4, 0x40
STB_LOCAL, STB_GLOBAL = 0, 1
STT_OBJECT, STT_FUNC, STT_SECTION = 1, 2, 3
_SHDR = struct.Struct("<IIQQQQIIQQ")  # name type flags addr offset size link info addralign entsize
_SYM = struct.Struct("<IBBHQQ")       # name info other shndx value size
# struct bpf_elf_map (bpf/include/bpf/loader.h): the iproute2-era map definition.
_ELF_MAP = struct.Struct("<IIIIIIIII")


@attrs.define(kw_only=True)
class Section:
    """A section header, with its index and resolved name."""

    index: int
    name: str
    name_off: int
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


@attrs.frozen(kw_only=True)
class LegacyMap:
    """A `maps`-section map definition moved into `.maps` (1.18's cilium_calls)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    id: int


class Elf:
    """A mutable ELF64 little-endian relocatable object (as clang --target=bpf writes it)."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise LoadError("not a 64-bit little-endian ELF object")
        self.buf = bytearray(data)
        self.shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if shentsize != _SHDR.size:
            raise LoadError(f"ELF: section header size {shentsize}, expected {_SHDR.size}")
        self.shstrndx = shstrndx
        raw = [_SHDR.unpack_from(data, self.shoff + i * _SHDR.size) for i in range(shnum)]
        strtab = raw[shstrndx]
        self.sections: list[Section] = []
        for i, h in enumerate(raw):
            name = self._cstr(strtab[4] + h[0])
            self.sections.append(Section(index=i, name=name, name_off=h[0], type=h[1],
                                         flags=h[2], offset=h[4], size=h[5], link=h[6],
                                         info=h[7], align=h[8], entsize=h[9]))

    def _cstr(self, off: int) -> str:
        end = self.buf.index(b"\0", off)
        return self.buf[off:end].decode(errors="replace")

    def section(self, name: str) -> Section | None:
        """The first section of that name."""
        return next((s for s in self.sections if s.name == name), None)

    def data(self, sec: Section) -> bytes:
        """A section's contents."""
        return bytes(self.buf[sec.offset:sec.offset + sec.size])

    def _write_shdr(self, sec: Section) -> None:
        _SHDR.pack_into(self.buf, self.shoff + sec.index * _SHDR.size, sec.name_off, sec.type,
                        sec.flags, 0, sec.offset, sec.size, sec.link, sec.info, sec.align,
                        sec.entsize)

    def _align(self) -> None:
        while len(self.buf) % 8:
            self.buf.append(0)

    def add_section(self, name: str, *, type: int, flags: int, link: int = 0, info: int = 0,
                    entsize: int = 0) -> Section:
        """A new empty section (8-byte aligned); the header table moves to the file's end."""
        shstr = self.sections[self.shstrndx]
        name_off = shstr.size
        self.replace_data(shstr, self.data(shstr) + name.encode() + b"\0")
        sec = Section(index=len(self.sections), name=name, name_off=name_off, type=type,
                      flags=flags, offset=0, size=0, link=link, info=info, align=8,
                      entsize=entsize)
        self.sections.append(sec)
        self._align()
        self.shoff = len(self.buf)
        self.buf += bytes(_SHDR.size * len(self.sections))
        struct.pack_into("<Q", self.buf, 0x28, self.shoff)
        struct.pack_into("<H", self.buf, 0x3C, len(self.sections))
        for s in self.sections:
            self._write_shdr(s)
        return sec

    def replace_data(self, sec: Section, data: bytes) -> None:
        """Give a section new contents, appended at the end of the file."""
        self._align()
        sec.offset, sec.size = len(self.buf), len(data)
        self.buf += data
        self._write_shdr(sec)

    def rename(self, sec: Section, name_off: int) -> None:
        """Point a section's name at another existing string."""
        sec.name_off = name_off
        sec.name = self._cstr(self.sections[self.shstrndx].offset + name_off)
        self._write_shdr(sec)

    # -- symbols ---------------------------------------------------------------------------

    def _symtab(self) -> tuple[Section, Section]:
        symtab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if symtab is None:
            raise LoadError("ELF: no symbol table")
        return symtab, self.sections[symtab.link]

    def symbols(self) -> list[tuple[int, str, int, int, int, int]]:
        """(file offset, name, info, shndx, value, size) of every symbol."""
        symtab, strs = self._symtab()
        out = []
        for pos in range(symtab.offset, symtab.offset + symtab.size, _SYM.size):
            name, info, _other, shndx, value, size = _SYM.unpack_from(self.buf, pos)
            out.append((pos, self._cstr(strs.offset + name), info, shndx, value, size))
        return out

    def symbol_at(self, index: int) -> tuple[int, str, int, int, int, int]:
        """One symbol by its index in the symbol table (as relocations name it)."""
        symtab, strs = self._symtab()
        pos = symtab.offset + index * _SYM.size
        if not 0 <= index < symtab.size // _SYM.size:
            raise LoadError(f"ELF: relocation against symbol {index}, past the symbol table")
        name, info, _other, shndx, value, size = _SYM.unpack_from(self.buf, pos)
        return pos, self._cstr(strs.offset + name), info, shndx, value, size

    def add_symbols(self, syms: list[tuple[str, int, int, int, int]]) -> int:
        """Append (name, info, shndx, value, size) symbols (global ones: after the locals);
        returns the first new symbol's index."""
        symtab, strs = self._symtab()
        first = symtab.size // _SYM.size
        names, table = bytearray(self.data(strs)), bytearray(self.data(symtab))
        for name, info, shndx, value, size in syms:
            if info >> 4 == STB_LOCAL:
                raise LoadError(f"ELF: local symbol {name} cannot follow the global ones")
            table += _SYM.pack(len(names), info, 0, shndx, value, size)
            names += name.encode() + b"\0"
        self.replace_data(strs, bytes(names))
        self.replace_data(symtab, bytes(table))
        return first

    def set_symbol(self, pos: int, *, info: int, shndx: int, value: int) -> None:
        """Rewrite one symbol's binding/type, section and value in place."""
        name, _info, other, _shndx, _value, size = _SYM.unpack_from(self.buf, pos)
        _SYM.pack_into(self.buf, pos, name, info, other, shndx, value, size)

    def globalize_static_programs(self) -> list[str]:
        """Static functions in program sections become global, as cilium/ebpf accepts them."""
        changed = []
        for pos, name, info, shndx, value, _size in self.symbols():
            if info & 0xF != STT_FUNC or info >> 4 != STB_LOCAL:
                continue
            if not 0 < shndx < len(self.sections):
                continue
            sec = self.sections[shndx]
            if sec.flags & SHF_EXECINSTR and sec.name != ".text":
                self.set_symbol(pos, info=(STB_GLOBAL << 4) | STT_FUNC, shndx=shndx, value=value)
                changed.append(name)
        return changed


def _int_id(btf: Btf) -> int:
    tid = btf.find(INT, "int")
    if tid is None:
        tid = btf.add(BtfType(name_off=btf.add_string("int"), kind=INT, vlen=0, kflag=False,
                              size_type=4, extra=[((1 << 24) | 32,)]))
    return tid


def _uint_member(btf: Btf, name: str, value: int) -> tuple[int, int]:
    """BTF for `__uint(name, value)`: int (*name)[value]; returns (name_off, type id)."""
    i = _int_id(btf)
    arr = btf.add(BtfType(name_off=0, kind=ARRAY, vlen=0, kflag=False, size_type=0,
                          extra=[(i, i, value)]))
    ptr = btf.add(BtfType(name_off=0, kind=PTR, vlen=0, kflag=False, size_type=arr, extra=[]))
    return btf.add_string(name), ptr


def clear_pinning(btf: Btf) -> list[str]:
    """`.maps` definitions get pinning NONE: no bpffs pins, as Cilium's test runner (PinNone)."""
    sec_id = btf.find(DATASEC, ".maps")
    cleared: list[str] = []
    if sec_id is None:
        return cleared
    for var_id, _off, _size in btf.type(sec_id).extra:
        var = btf.type(var_id)
        st = btf.type(btf.skip_mods(var.size_type))
        for k, (m_name, m_type, m_off) in enumerate(st.extra):
            if btf.name(m_name) != "pinning":
                continue
            ptr = btf.type(btf.skip_mods(m_type))
            arr = btf.type(ptr.size_type)
            if arr.kind == ARRAY and arr.extra[0][2] != 0:
                _, new_ptr = _uint_member(btf, "pinning", 0)
                st.extra[k] = (m_name, new_ptr, m_off)
                cleared.append(btf.name(var.name_off))
    return cleared


def convert_legacy_maps(elf: Elf, btf: Btf) -> list[LegacyMap]:
    """Move `struct bpf_elf_map` definitions from `maps` into `.maps` with BTF map types."""
    legacy = elf.section("maps")
    if legacy is None:
        return []
    dot_maps = elf.section(".maps")
    if dot_maps is None:
        raise LoadError("legacy 'maps' section without a BTF '.maps' section is not supported")
    old_sec_id = btf.find(DATASEC, "maps")
    new_sec_id = btf.find(DATASEC, ".maps")
    if new_sec_id is None:
        raise LoadError("BTF: no DATASEC '.maps' for the BTF-defined maps")
    content = bytearray(elf.data(dot_maps))
    out: list[LegacyMap] = []
    new_vars = list(btf.type(new_sec_id).extra)
    for pos, name, info, shndx, value, size in elf.symbols():
        if shndx != legacy.index or info & 0xF != STT_OBJECT:
            continue
        if size < _ELF_MAP.size - 8:
            raise LoadError(f"maps: {name}: {size} bytes is not a struct bpf_elf_map")
        raw = elf.data(legacy)[value:value + _ELF_MAP.size].ljust(_ELF_MAP.size, b"\0")
        mtype, ksz, vsz, maxe, flags, mid, _pin, _iid, _iidx = _ELF_MAP.unpack(raw)
        members = [_uint_member(btf, "type", mtype), _uint_member(btf, "key_size", ksz),
                   _uint_member(btf, "value_size", vsz), _uint_member(btf, "max_entries", maxe)]
        if flags:
            members.append(_uint_member(btf, "map_flags", flags))
        st = btf.add(BtfType(name_off=0, kind=STRUCT, vlen=len(members), kflag=False,
                             size_type=8 * len(members),
                             extra=[(n, t, 64 * k) for k, (n, t) in enumerate(members)]))
        var_id = btf.find(VAR, name)
        if var_id is None:
            var_id = btf.add(BtfType(name_off=btf.add_string(name), kind=VAR, vlen=0,
                                     kflag=False, size_type=st, extra=[(1,)]))
        else:
            btf.type(var_id).size_type = st
        while len(content) % 8:
            content.append(0)
        new_off = len(content)
        content += bytes(8 * len(members))
        new_vars.append((var_id, new_off, 8 * len(members)))
        elf.set_symbol(pos, info=info, shndx=dot_maps.index, value=new_off)
        out.append(LegacyMap(name=name, type=mtype, key_size=ksz, value_size=vsz,
                             max_entries=maxe, flags=flags, id=mid))
    sec = btf.type(new_sec_id)
    # clang leaves DATASEC size/offsets zero; libbpf then fills them from the ELF (keep it so)
    sec.extra, sec.vlen = new_vars, len(new_vars)
    if sec.size_type:
        sec.size_type = len(content)
    if old_sec_id is not None:
        old = btf.type(old_sec_id)  # keep type ids stable: the old DATASEC becomes a forward decl
        old.kind, old.vlen, old.kflag, old.size_type, old.extra = FWD, 0, False, 0, []
    elf.replace_data(dot_maps, bytes(content))
    elf.rename(legacy, 0)  # an empty name: libbpf skips it as an unrecognized section
    return out


def patch_object(data: bytes) -> tuple[bytes, Btf, list[LegacyMap]]:
    """The fix-ups Cilium's loader makes before libbpf can open an object; returns patched ELF."""
    elf = Elf(data)
    btf_sec = elf.section(".BTF")
    if btf_sec is None:
        raise LoadError("no .BTF section (compile with -g)")
    btf = Btf(elf.data(btf_sec))
    elf.globalize_static_programs()
    from ciliumbpf.link import link_cross_section_calls  # link builds on this module
    link_cross_section_calls(elf, btf)
    legacy = convert_legacy_maps(elf, btf)
    clear_pinning(btf)
    elf.replace_data(btf_sec, btf.encode())
    return bytes(elf.buf), btf, legacy
