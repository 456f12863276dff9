"""Calls from one program's section into another's, linked into .text as cilium/ebpf links them.

A Cilium test may call another test's entry function (`tc_nodeport_lb_no_backend.c`: a reply
pktgen builds its packet with the request's pktgen). cilium/ebpf resolves a call against every
function of the object, whatever its section, and copies the callee into the caller as a
sub-program. libbpf 1.1 only links calls into `.text` ("bad call relo against ... in section
..."). So, before libbpf opens the object, each called section is copied to the end of `.text`
(with its relocations and its `.BTF.ext` function, line and CO-RE records), its functions get
`.text` symbols, and the call relocations point at those. The original section stays as it is:
it is still a program of its own.
"""

from __future__ import annotations

import struct

import attrs

from ciliumbpf.btf import Btf
from ciliumbpf.elf import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_INFO_LINK,
    SHT_PROGBITS,
    SHT_REL,
    STB_GLOBAL,
    STT_FUNC,
    STT_SECTION,
    Elf,
    Section,
)
from ciliumbpf.errors import LoadError

_REL = struct.Struct("<QQ")  # r_offset, r_info = symbol << 32 | type
_INSN = 8
_CALL = 0x85  # BPF_JMP | BPF_CALL
_PSEUDO_CALL = 1
_EXT_HDR = struct.Struct("<HBBI")  # magic, version, flags, hdr_len
KINDS = ("func_info", "line_info", "core_relo")
LINKED_SUFFIX = "__linked"


@attrs.define(kw_only=True)
class ExtBlock:
    """One section's records in a .BTF.ext info table (records as raw bytes)."""

    name_off: int
    records: list[bytes]


@attrs.define(kw_only=True)
class BtfExt:
    """A parsed .BTF.ext: per kind, the record size and the per-section blocks."""

    header: bytes
    tables: dict[str, tuple[int, list[ExtBlock]]]

    @classmethod
    def parse(cls, raw: bytes) -> BtfExt:
        """Decode the header and the func/line/CO-RE tables (offsets after the header)."""
        magic, _ver, _flags, hdr_len = _EXT_HDR.unpack_from(raw, 0)
        if magic != 0xEB9F:
            raise LoadError(f".BTF.ext: bad magic {magic:#x}")
        words = (hdr_len - _EXT_HDR.size) // 4
        offs = struct.unpack_from(f"<{words}I", raw, _EXT_HDR.size)
        tables: dict[str, tuple[int, list[ExtBlock]]] = {}
        for k, kind in enumerate(KINDS):
            if 2 * k + 1 >= len(offs) or not offs[2 * k + 1]:
                continue
            start, length = hdr_len + offs[2 * k], offs[2 * k + 1]
            rec_size, = struct.unpack_from("<I", raw, start)
            pos, end, blocks = start + 4, start + length, []
            while pos < end:
                name_off, num = struct.unpack_from("<II", raw, pos)
                pos += 8
                recs = [raw[pos + i * rec_size: pos + (i + 1) * rec_size] for i in range(num)]
                pos += num * rec_size
                blocks.append(ExtBlock(name_off=name_off, records=recs))
            tables[kind] = (rec_size, blocks)
        return cls(header=raw[:hdr_len], tables=tables)

    def encode(self) -> bytes:
        """Serialize back: the same header length, the tables one after another."""
        body, offs = bytearray(), []
        for kind in KINDS:
            if kind not in self.tables:
                offs += [len(body), 0]
                continue
            rec_size, blocks = self.tables[kind]
            start = len(body)
            body += struct.pack("<I", rec_size)
            for b in blocks:
                body += struct.pack("<II", b.name_off, len(b.records)) + b"".join(b.records)
            offs += [start, len(body) - start]
        hdr = bytearray(self.header)
        words = (len(hdr) - _EXT_HDR.size) // 4
        struct.pack_into(f"<{words}I", hdr, _EXT_HDR.size, *offs[:words])
        return bytes(hdr + body)


def _shifted(rec: bytes, delta: int) -> bytes:
    """A record with its leading insn_off (bytes into the section) moved by delta."""
    off, = struct.unpack_from("<I", rec, 0)
    return struct.pack("<I", off + delta) + rec[4:]


class _Linker:
    """The state of one object's linking: the .text copy of every called section."""

    def __init__(self, elf: Elf, btf: Btf, ext: BtfExt | None) -> None:
        self.elf, self.btf, self.ext = elf, btf, ext
        self._text = elf.section(".text")
        self.bases: dict[int, int] = {}         # called section index -> its offset in .text
        self.linked: dict[tuple[int, int], int] = {}  # (section, offset) -> .text symbol index

    @property
    def text(self) -> Section:
        """.text, made (empty) when an object without one needs it."""
        if self._text is None:
            self._text = self.elf.add_section(".text", type=SHT_PROGBITS,
                                              flags=SHF_ALLOC | SHF_EXECINSTR)
        return self._text

    def _is_other_code(self, shndx: int) -> bool:
        if not 0 < shndx < len(self.elf.sections) or self.elf.sections[shndx].name == ".text":
            return False
        return bool(self.elf.sections[shndx].flags & SHF_EXECINSTR)

    def _rel_of(self, target: Section) -> Section | None:
        return next((s for s in self.elf.sections if s.type == SHT_REL and s.info == target.index),
                    None)

    def _text_rel(self) -> Section:
        rel = self._rel_of(self.text)
        if rel is None:
            symtab = self.elf._symtab()[0]
            rel = self.elf.add_section(".rel.text", type=SHT_REL, flags=SHF_INFO_LINK,
                                       link=symtab.index, info=self.text.index,
                                       entsize=_REL.size)
        return rel

    def copy(self, shndx: int) -> int:
        """Append section shndx to .text (code, relocations, BTF.ext records, symbols)."""
        if shndx in self.bases:
            return self.bases[shndx]
        elf, sec = self.elf, self.elf.sections[shndx]
        code = elf.data(self.text)
        code += bytes(-len(code) % _INSN)
        base = len(code)
        elf.replace_data(self.text, code + elf.data(sec))
        self.bases[shndx] = base
        rel = self._rel_of(sec)
        if rel is not None:
            moved, entries = bytearray(), elf.data(rel)
            for pos in range(0, len(entries), _REL.size):
                off, info = _REL.unpack_from(entries, pos)
                moved += _REL.pack(off + base, info)
            text_rel = self._text_rel()
            elf.replace_data(text_rel, elf.data(text_rel) + bytes(moved))
        self._copy_ext(sec.name, base)
        funcs = sorted((value, name, size) for _p, name, info, sx, value, size in elf.symbols()
                       if sx == shndx and info & 0xF == STT_FUNC)
        if not funcs:
            raise LoadError(f"ELF: called section {sec.name} has no function symbol")
        first = elf.add_symbols([(name + LINKED_SUFFIX, (STB_GLOBAL << 4) | STT_FUNC,
                                  self.text.index, base + value, size)
                                 for value, name, size in funcs])
        for k, (value, _name, _size) in enumerate(funcs):
            self.linked[(shndx, value)] = first + k
        return base

    def _copy_ext(self, sec_name: str, base: int) -> None:
        if self.ext is None:
            return
        text_name: int | None = None
        for _size, blocks in self.ext.tables.values():
            src = next((b for b in blocks if self.btf.name(b.name_off) == sec_name), None)
            if src is None:
                continue
            dst = next((b for b in blocks if self.btf.name(b.name_off) == ".text"), None)
            if dst is None:  # libbpf reads only the first block named like the section
                if text_name is None:
                    text_name = self.btf.add_string(".text")
                dst = ExtBlock(name_off=text_name, records=[])
                blocks.append(dst)
            dst.records += [_shifted(r, base) for r in src.records]

    def pass_once(self) -> int:
        """Point every call into another code section at its .text copy; returns how many."""
        elf = self.elf
        calls: dict[int, list[tuple[int, int, int, int]]] = {}  # rel -> (pos, off, info, sym)
        for rel in [s for s in elf.sections if s.type == SHT_REL]:
            if not 0 < rel.info < len(elf.sections):
                continue
            target = elf.sections[rel.info]
            if not target.flags & SHF_EXECINSTR:
                continue
            entries, code = elf.data(rel), elf.data(target)
            for pos in range(0, len(entries), _REL.size):
                off, info = _REL.unpack_from(entries, pos)
                _p, name, sinfo, shndx, value, _size = elf.symbol_at(info >> 32)
                if not self._is_other_code(shndx) or sinfo & 0xF not in (STT_FUNC, STT_SECTION):
                    continue
                if code[off] != _CALL or code[off + 1] >> 4 != _PSEUDO_CALL:
                    continue  # a function address (ld_imm64): left to libbpf, which says why
                imm, = struct.unpack_from("<i", code, off + 4)
                callee = value + (imm + 1) * _INSN
                self.copy(shndx)  # appends to .text and .rel.text only: positions hold
                if (shndx, callee) not in self.linked:
                    raise LoadError(f"ELF: call into {elf.sections[shndx].name}+{callee} "
                                    f"({name}) is not a function start")
                calls.setdefault(rel.index, []).append(
                    (pos, off, info, self.linked[(shndx, callee)]))
        for rel_index, items in calls.items():
            rel = elf.sections[rel_index]
            target = elf.sections[rel.info]
            new_rel, new_code = bytearray(elf.data(rel)), bytearray(elf.data(target))
            for pos, off, info, sym in items:
                _REL.pack_into(new_rel, pos, off, (sym << 32) | (info & 0xFFFFFFFF))
                struct.pack_into("<i", new_code, off + 4, -1)  # the callee is the symbol itself
            elf.replace_data(rel, bytes(new_rel))
            elf.replace_data(target, bytes(new_code))
        return sum(len(v) for v in calls.values())


def link_cross_section_calls(elf: Elf, btf: Btf) -> list[str]:
    """Copy every section that another section calls into .text; returns their names.

    The BTF string table may gain ".text" (the caller re-encodes the BTF afterwards)."""
    ext_sec = elf.section(".BTF.ext")
    ext = BtfExt.parse(elf.data(ext_sec)) if ext_sec is not None else None
    linker = _Linker(elf, btf, ext)
    while linker.pass_once():
        pass  # a copied section may itself call another one
    if ext_sec is not None and ext is not None and linker.bases:
        elf.replace_data(ext_sec, ext.encode())
    return [elf.sections[i].name for i in sorted(linker.bases)]
