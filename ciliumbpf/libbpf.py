"""ctypes over libbpf.so.1: open Cilium objects as Cilium's Go loader does; test-run; maps."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from ciliumbpf.btf import Btf, Layout
from ciliumbpf.elf import LegacyMap, patch_object
from ciliumbpf.errors import LoadError

# enum bpf_prog_type / bpf_attach_type / bpf_map_type values (include/uapi/linux/bpf.h)
PROG_SCHED_CLS, PROG_SCHED_ACT, PROG_XDP = 3, 4, 6
ATTACH_XDP = 37
MAP_PROG_ARRAY = 3
_PERCPU_MAPS = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
# HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH, LPM_TRIE: sizes that are only capacities
_SIZED_MAPS = frozenset({1, 5, 9, 10, 11})
_TEST_RUNNABLE = frozenset({PROG_SCHED_CLS, PROG_SCHED_ACT, PROG_XDP})
# Types one tail-call map's programs may come with: none (1.18's `2/N`, `mock-handle-policy`
# sections name no type) or an entry type; these all get the entry sections' type.
_ENTRY_FAMILY = frozenset({0, PROG_SCHED_CLS, PROG_SCHED_ACT, PROG_XDP})
# Section prefixes that fix a program type (cilium/ebpf's elf_reader section table).
_SECTION_TYPES = (("tc", PROG_SCHED_CLS), ("classifier", PROG_SCHED_CLS),
                  ("action", PROG_SCHED_ACT), ("xdp", PROG_XDP))
_TAIL_TAG = re.compile(r"^tail:([A-Za-z0-9_]+)/(\d+)$")
_LEGACY_TAIL_SEC = re.compile(r"^(\d+)/(\d+)$")

_lib: ctypes.CDLL | None = None
_log_lock = threading.Lock()
_log: list[str] = []
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p),
                ("data_out", ctypes.c_void_p), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


class _OpenOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("attach_prog_fd", ctypes.c_long), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p), ("kernel_log_buf", ctypes.c_char_p),
                ("kernel_log_size", ctypes.c_size_t), ("kernel_log_level", ctypes.c_uint32)]


def _vsnprintf() -> Callable[..., int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fn = libc.vsnprintf
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


def _print(level: int, fmt: bytes | None, args: int | None) -> int:
    if level >= _LIBBPF_DEBUG:  # thousands per load, never part of a reason
        return 0
    buf = ctypes.create_string_buffer(4096)
    _VSNPRINTF(buf, len(buf), fmt, args)
    _log.append(buf.value.decode(errors="replace"))
    return 0


_LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
_print_cb = _PRINT_FN(_print)


_VSNPRINTF = _vsnprintf()


def lib() -> ctypes.CDLL:
    """libbpf.so.1, with its messages captured (they become LoadError reasons)."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        so = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise LoadError(f"libbpf.so.1 not found ({exc}); run scripts/bootstrap-bpf.sh") from exc
    p, i, u, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs: dict[str, tuple[list[Any], Any]] = {
        "libbpf_set_print": ([p], p),
        "bpf_object__open_mem": ([p, sz, p], p),
        "bpf_object__load": ([p], i),
        "bpf_object__close": ([p], None),
        "bpf_object__next_program": ([p, p], p),
        "bpf_object__next_map": ([p, p], p),
        "bpf_program__name": ([p], ctypes.c_char_p),
        "bpf_program__section_name": ([p], ctypes.c_char_p),
        "bpf_program__fd": ([p], i),
        "bpf_program__type": ([p], i),
        "bpf_program__set_type": ([p, i], i),
        "bpf_program__set_expected_attach_type": ([p, i], i),
        "bpf_program__set_autoload": ([p, ctypes.c_bool], i),
        "bpf_program__autoload": ([p], ctypes.c_bool),
        "bpf_map__name": ([p], ctypes.c_char_p),
        "bpf_map__fd": ([p], i),
        "bpf_map__type": ([p], i),
        "bpf_map__key_size": ([p], u),
        "bpf_map__value_size": ([p], u),
        "bpf_map__max_entries": ([p], u),
        "bpf_map__btf_key_type_id": ([p], u),
        "bpf_map__btf_value_type_id": ([p], u),
        "bpf_map__set_pin_path": ([p, ctypes.c_char_p], i),
        "bpf_map__reuse_fd": ([p, i], i),
        "bpf_map__set_max_entries": ([p, u], i),
        "bpf_map_lookup_elem": ([i, p, p], i),
        "bpf_map_update_elem": ([i, p, p, ctypes.c_uint64], i),
        "bpf_map_delete_elem": ([i, p], i),
        "bpf_map_get_next_key": ([i, p, p], i),
        "bpf_prog_test_run_opts": ([i, p], i),
        "libbpf_num_possible_cpus": ([], i),
        "bpf_map_create": ([i, ctypes.c_char_p, u, u, u, p], i),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(so, name)
        fn.argtypes, fn.restype = args, res
    so.libbpf_set_print(ctypes.cast(_print_cb, ctypes.c_void_p))
    _lib = so
    return so


def _take_log() -> str:
    text = "".join(_log)
    _log.clear()
    return text


def _reason(log: str, fallback: str) -> str:
    """The most telling libbpf line: the first warning that is not a generic summary."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip().startswith("libbpf:")]
    generic = ("failed to load object", "loading object", "-- BEGIN", "-- END",
               "unrecognized ELF section name")
    telling = re.compile(r"bad|fail|unsupported|not supported|invalid|refuse|unknown|error|"
                         r"missing|unrecognized|permission", re.IGNORECASE)
    for ln in lines:  # the first specific complaint is the cause; later ones are fallout
        if telling.search(ln) and not any(g in ln for g in generic):
            return ln.removeprefix("libbpf: ")
    return fallback


@attrs.frozen(kw_only=True)
class TestRun:
    """One BPF_PROG_TEST_RUN: return code, packet and context after, kernel-side time."""

    __test__ = False
    retval: int
    data: bytes
    ctx: bytes | None
    duration_ns: int


class Program:
    """A loaded program: test-run with a packet and (tc) an __sk_buff context."""

    def __init__(self, ptr: int, obj: BpfObject) -> None:
        self._ptr, self._obj = ptr, obj
        self.name: str = (lib().bpf_program__name(ptr) or b"").decode()
        self.section: str = (lib().bpf_program__section_name(ptr) or b"").decode()

    @property
    def fd(self) -> int:
        """The program's file descriptor (-1 before load or when not loaded)."""
        return int(lib().bpf_program__fd(self._ptr))

    @property
    def type(self) -> int:
        """enum bpf_prog_type."""
        return int(lib().bpf_program__type(self._ptr))

    def test_run(self, data: bytes, ctx: bytes | None = None, repeat: int = 1,
                 data_size_out: int | None = None) -> TestRun:
        """BPF_PROG_TEST_RUN; data out sized as cilium/ebpf does (len + 256 + 2 headroom)."""
        fd = self.fd
        if fd < 0:
            raise LoadError(f"program {self.name}: not loaded")
        out_size = data_size_out if data_size_out is not None else (
            len(data) + 256 + 2 if data else 0)
        din = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
        dout = ctypes.create_string_buffer(max(out_size, 1))
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), repeat=repeat)
        opts.data_in, opts.data_size_in = ctypes.cast(din, ctypes.c_void_p), len(data)
        opts.data_out, opts.data_size_out = ctypes.cast(dout, ctypes.c_void_p), out_size
        cin = cout = None
        if ctx is not None:
            cin = ctypes.create_string_buffer(bytes(ctx), max(len(ctx), 1))
            cout = ctypes.create_string_buffer(max(len(ctx), 1))
            opts.ctx_in, opts.ctx_size_in = ctypes.cast(cin, ctypes.c_void_p), len(ctx)
            opts.ctx_out, opts.ctx_size_out = ctypes.cast(cout, ctypes.c_void_p), len(ctx)
        rc = lib().bpf_prog_test_run_opts(fd, ctypes.byref(opts))
        if rc < 0:
            raise OSError(-rc, f"BPF_PROG_TEST_RUN {self.name}: {os.strerror(-rc)}")
        return TestRun(retval=opts.retval, data=dout.raw[:opts.data_size_out],
                       ctx=cout.raw[:opts.ctx_size_out] if cout is not None else None,
                       duration_ns=opts.duration)


class Map:
    """A created map: raw bytes access plus dict pack/unpack from the object's BTF."""

    def __init__(self, ptr: int, obj: BpfObject, like: Map | None = None) -> None:
        so = lib()
        self._ptr, self._obj = ptr, obj
        self.name: str = (so.bpf_map__name(ptr) or b"").decode()
        self.type: int = int(so.bpf_map__type(ptr))
        self.key_size: int = int(so.bpf_map__key_size(ptr))
        self.value_size: int = int(so.bpf_map__value_size(ptr))
        self.max_entries: int = int(so.bpf_map__max_entries(ptr))
        self.key_type: Layout | None
        self.value_type: Layout | None
        if like is not None:  # a reused map: its BTF type ids are the owner's
            self.key_type, self.value_type = like.key_type, like.value_type
            return
        kid, vid = so.bpf_map__btf_key_type_id(ptr), so.bpf_map__btf_value_type_id(ptr)
        self.key_type = obj.btf.layout(kid) if kid else None
        self.value_type = obj.btf.layout(vid) if vid else None

    @property
    def fd(self) -> int:
        """The map's file descriptor (after load)."""
        return int(lib().bpf_map__fd(self._ptr))

    @property
    def percpu(self) -> bool:
        """Per-CPU map: lookup returns each possible CPU's value, 8-byte aligned, concatenated."""
        return self.type in _PERCPU_MAPS

    def _value_buf(self) -> ctypes.Array[ctypes.c_char]:
        size = self.value_size
        if self.percpu:
            size = (size + 7) // 8 * 8 * int(lib().libbpf_num_possible_cpus())
        return ctypes.create_string_buffer(size)

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, need {self.key_size}")
        return ctypes.create_string_buffer(bytes(key), self.key_size)

    def lookup(self, key: bytes) -> bytes | None:
        """The value under key, or None."""
        val = self._value_buf()
        rc = lib().bpf_map_lookup_elem(self.fd, self._key(key), val)
        if rc < 0:
            if -rc == errno.ENOENT:
                return None
            raise OSError(-rc, f"map {self.name}: lookup: {os.strerror(-rc)}")
        return val.raw

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        """Insert or replace (flags: BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2)."""
        val = self._value_buf()
        if len(value) != len(val.raw):
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, need {len(val.raw)}")
        val.raw = bytes(value)
        rc = lib().bpf_map_update_elem(self.fd, self._key(key), val, flags)
        if rc < 0:
            raise OSError(-rc, f"map {self.name}: update: {os.strerror(-rc)}")

    def delete(self, key: bytes) -> bool:
        """Remove key; False when it was absent."""
        rc = int(lib().bpf_map_delete_elem(self.fd, self._key(key)))
        if rc < 0 and -rc != errno.ENOENT:
            raise OSError(-rc, f"map {self.name}: delete: {os.strerror(-rc)}")
        return rc == 0

    def keys(self) -> Iterator[bytes]:
        """Every key, in the kernel's iteration order."""
        cur: ctypes.Array[ctypes.c_char] | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while lib().bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            yield nxt.raw
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs; entries deleted meanwhile are skipped."""
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def pack_key(self, key: Any) -> bytes:
        """A dict/int key to bytes by the map's BTF key type."""
        if self.key_type is None:
            raise LoadError(f"map {self.name}: no BTF key type")
        return self.key_type.pack(key)

    def pack_value(self, value: Any) -> bytes:
        """A dict/int value to bytes by the map's BTF value type."""
        if self.value_type is None:
            raise LoadError(f"map {self.name}: no BTF value type")
        return self.value_type.pack(value)

    def unpack_key(self, key: bytes) -> Any:
        """Key bytes to a dict/int by BTF."""
        if self.key_type is None:
            raise LoadError(f"map {self.name}: no BTF key type")
        return self.key_type.unpack(key)

    def unpack_value(self, value: bytes) -> Any:
        """Value bytes to a dict/int by BTF (the first CPU's value for per-CPU maps)."""
        if self.value_type is None:
            raise LoadError(f"map {self.name}: no BTF value type")
        return self.value_type.unpack(value)


class BpfObject:
    """One ELF object opened and loaded the way Cilium's loader would (see open())."""

    def __init__(self, ptr: int, name: str, btf: Btf, legacy: list[LegacyMap]) -> None:
        self._ptr: int | None = ptr
        self.name = name
        self.btf = btf
        self.legacy_maps = legacy
        self.tail_calls: dict[str, dict[int, str]] = {}
        self._progs: dict[str, Program] = {}
        self._maps: dict[str, Map] = {}
        self._reused: dict[str, Map] = {}
        self.loaded = False
        so = lib()
        cur = so.bpf_object__next_program(ptr, None)
        while cur:
            prog = Program(cur, self)
            self._progs[prog.name] = prog
            cur = so.bpf_object__next_program(ptr, cur)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        """Open with Cilium's fix-ups: static tail calls, PIN_REPLACE, legacy maps, one type."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise LoadError(f"{p}: {exc.strerror}") from exc
        data, btf, legacy = patch_object(raw)
        so = lib()
        with _log_lock:
            _take_log()
            buf = ctypes.create_string_buffer(data, len(data))
            name = ctypes.create_string_buffer(p.stem[:15].encode())
            opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), object_name=name.value)
            ptr = so.bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
            log = _take_log()
        err = ctypes.get_errno()
        if not ptr:
            raise LoadError(_reason(log, f"libbpf could not open {p.name}: "
                                         f"{os.strerror(err) if err else 'unknown error'}"), log)
        obj = cls(ptr, p.stem, btf, legacy)
        obj._buf = buf  # libbpf keeps pointers into the image until close
        obj._assign_types()
        obj._collect_tail_calls()
        return obj

    def _assign_types(self) -> None:
        """Program types as cilium/ebpf gives them: each `tc*`/`xdp*` section its own; a
        section naming no type (1.18's `2/N`, `mock-handle-policy`) the entry sections' one
        type, with one attach type, since programs sharing a tail-call map must match. A
        program whose section gives libbpf another type (`iter/udp`: tracing) keeps it;
        forcing tc/XDP onto it crashes libbpf 1.1's load."""
        so = lib()
        own: dict[str, int | None] = {}
        for prog in self._progs.values():
            head = prog.section.split("/")[0]
            own[prog.name] = next((t for prefix, t in _SECTION_TYPES if head == prefix), None)
        found = sorted({t for t in own.values() if t is not None})
        if not found:
            raise LoadError(f"{self.name}: no tc/xdp entry section, so no program type")
        for prog in self._progs.values():
            if prog.type not in _ENTRY_FAMILY:
                continue
            ptype = own[prog.name]
            if ptype is None:
                if len(found) != 1:
                    raise LoadError(f"{self.name}: section {prog.section!r} names no program "
                                    f"type and the entry sections give several {found}")
                ptype = found[0]
            so.bpf_program__set_type(prog._ptr, ptype)
            so.bpf_program__set_expected_attach_type(prog._ptr,
                                                     ATTACH_XDP if ptype == PROG_XDP else 0)

    def _collect_tail_calls(self) -> None:
        """cilium_calls slots: `tail:<map>/<N>` decl tags (1.20), `<map id>/<N>` sections (1.18)."""
        for func, tag in self.btf.decl_tags():
            m = _TAIL_TAG.match(tag)
            if m and func in self._progs:
                self._slot(m.group(1), int(m.group(2)), func)
        by_id = {lm.id: lm.name for lm in self.legacy_maps if lm.type == MAP_PROG_ARRAY}
        for prog in self._progs.values():
            m = _LEGACY_TAIL_SEC.match(prog.section)
            if m and int(m.group(1)) in by_id:
                self._slot(by_id[int(m.group(1))], int(m.group(2)), prog.name)

    def _slot(self, map_name: str, index: int, prog: str) -> None:
        slots = self.tail_calls.setdefault(map_name, {})
        if index in slots and slots[index] != prog:
            raise LoadError(
                f"{self.name}: {map_name}[{index}] claimed by {slots[index]} and {prog}")
        slots[index] = prog

    def load(self) -> None:
        """Create maps, verify programs, fill the tail-call maps."""
        if self._ptr is None:
            raise LoadError(f"{self.name}: closed")
        so = lib()
        with _log_lock:
            _take_log()
            rc = so.bpf_object__load(self._ptr)
            log = _take_log()
        if rc < 0:
            raise LoadError(_reason(log, f"{self.name}: load failed: {os.strerror(-rc)}"), log)
        self.loaded = True
        cur = so.bpf_object__next_map(self._ptr, None)
        while cur:
            name = (so.bpf_map__name(cur) or b"").decode()
            m = Map(cur, self, self._reused.get(name))
            self._maps[m.name] = m
            cur = so.bpf_object__next_map(self._ptr, cur)
        for map_name, slots in self.tail_calls.items():
            pmap = self.map(map_name)
            for index, prog in sorted(slots.items()):
                fd = self.program(prog).fd
                pmap.update(index.to_bytes(4, "little"), fd.to_bytes(4, "little"))

    def reuse_maps(self, other: BpfObject) -> list[str]:
        """Before load: share `other`'s (loaded) maps of the same name, as Cilium's programs
        share the pinned cilium_* maps of one node; tail-call arrays and the object's own
        .data/.rodata/.bss stay private. Returns the shared names."""
        if self._ptr is None or self.loaded:
            raise LoadError(f"{self.name}: maps can only be shared before load")
        so = lib()
        theirs = other.maps()
        shared = []
        cur = so.bpf_object__next_map(self._ptr, None)
        while cur:
            name = (so.bpf_map__name(cur) or b"").decode()
            src = theirs.get(name)
            if src is not None and "." not in name and src.type != MAP_PROG_ARRAY:
                mine = (int(so.bpf_map__type(cur)), int(so.bpf_map__key_size(cur)),
                        int(so.bpf_map__value_size(cur)))
                if mine != (src.type, src.key_size, src.value_size):
                    raise LoadError(f"{self.name}: map {name} differs from {other.name}'s "
                                    f"(type, key, value sizes {mine} vs "
                                    f"{(src.type, src.key_size, src.value_size)})")
                rc = so.bpf_map__reuse_fd(cur, src.fd)
                if rc < 0:
                    raise LoadError(f"{self.name}: map {name}: reuse_fd: {os.strerror(-rc)}")
                self._reused[name] = src
                shared.append(name)
            cur = so.bpf_object__next_map(self._ptr, cur)
        return shared

    def cap_maps(self, limit: int, types: frozenset[int] = _SIZED_MAPS) -> dict[str, int]:
        """Before load: shrink hash/LRU/LPM maps above `limit` entries, as the agent sizes
        them at load time (bpf-map-dynamic-size-ratio, bpf-nat-global-max...); arrays keep
        their size since their indexes mean something. Returns the changed maps' old sizes."""
        if self._ptr is None or self.loaded:
            raise LoadError(f"{self.name}: maps can only be sized before load")
        so = lib()
        changed = {}
        cur = so.bpf_object__next_map(self._ptr, None)
        while cur:
            n = int(so.bpf_map__max_entries(cur))
            if int(so.bpf_map__type(cur)) in types and n > limit:
                rc = so.bpf_map__set_max_entries(cur, limit)
                if rc < 0:
                    name = (so.bpf_map__name(cur) or b"").decode()
                    raise LoadError(f"{self.name}: map {name}: set_max_entries: "
                                    f"{os.strerror(-rc)}")
                changed[(so.bpf_map__name(cur) or b"").decode()] = n
            cur = so.bpf_object__next_map(self._ptr, cur)
        return changed

    def set_autoload(self, name: str, on: bool) -> None:
        """Include or skip one program at load (before load())."""
        lib().bpf_program__set_autoload(self.program(name)._ptr, on)

    def programs(self) -> dict[str, Program]:
        """Every program by (function) name."""
        return dict(self._progs)

    def program(self, name: str) -> Program:
        """One program by function name."""
        try:
            return self._progs[name]
        except KeyError:
            raise LoadError(f"{self.name}: no program {name!r}") from None

    def maps(self) -> dict[str, Map]:
        """Every map by name (after load)."""
        return dict(self._maps)

    def map(self, name: str) -> Map:
        """One map by name (after load)."""
        try:
            return self._maps[name]
        except KeyError:
            raise LoadError(f"{self.name}: no map {name!r}") from None

    def close(self) -> None:
        """Free the object, its maps and programs."""
        if self._ptr is not None:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        # Unclosed objects pin kernel memory (preallocated LRU maps): free them with the
        # last reference.
        if getattr(self, "_ptr", None) is not None:
            self.close()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    _buf: Any = None


def array_map(value: bytes) -> int:
    """A new one-entry BPF array holding `value` at index 0 (a map-in-map's inner map, as
    the agent creates one per Maglev service); the caller closes the returned fd."""
    so = lib()
    fd = int(so.bpf_map_create(2, None, 4, len(value), 1, None))  # BPF_MAP_TYPE_ARRAY
    if fd < 0:
        raise OSError(-fd, f"bpf_map_create: {os.strerror(-fd)}")
    buf = ctypes.create_string_buffer(bytes(value), len(value))
    rc = so.bpf_map_update_elem(fd, ctypes.create_string_buffer(b"\0" * 4, 4), buf, 0)
    if rc < 0:
        os.close(fd)
        raise OSError(-rc, f"inner map update: {os.strerror(-rc)}")
    return fd


def test_runnable(prog: Program) -> bool:
    """BPF_PROG_TEST_RUN supports this type (the Go runner keeps XDP, SchedCLS, SchedACT)."""
    return prog.type in _TEST_RUNNABLE


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns() -> Iterator[None]:
    """Run the body in a fresh network namespace (this thread), then return to the old one."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    old = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LoadError(f"unshare(CLONE_NEWNET): {os.strerror(err)} (needs root/CAP_SYS_ADMIN)")
        try:
            yield
        finally:
            if libc.setns(old, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the original netns: {os.strerror(err)}")
    finally:
        os.close(old)
