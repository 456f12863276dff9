"""The loader's pure parts: BTF layouts, trf.proto decoding, printk format, shadow trees, CLI."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ciliumbpf.btf import INT, STRUCT, TYPEDEF, Btf, BtfType
from ciliumbpf.elf import SHT_REL, Elf, patch_object
from ciliumbpf.link import LINKED_SUFFIX, BtfExt
from ciliumbpf.selftest import decode_suite, format_log, status_codes
from ciliumbpf.toolchain import cilium_tree, shadow_tree

ROOT = Path(__file__).resolve().parent.parent
TREES = ROOT.parent / "shared" / "cilium"


def _btf(types: list[BtfType], strings: bytes) -> Btf:
    empty = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1) + b"\0"
    btf = Btf(empty)
    btf.strings = bytearray(strings)
    btf.types = types
    return Btf(btf.encode())  # through the encoder and back


def _lb4_key_btf() -> tuple[Btf, int]:
    strs = b"\0__u32\0__be16\0__u16\0lb4_key\0address\0dport\0backend_slot\0proto\0scope\0"
    off = {s: strs.index(s.encode() + b"\0") for s in
           ("__u32", "__be16", "__u16", "lb4_key", "address", "dport", "backend_slot",
            "proto", "scope")}
    u8 = BtfType(name_off=0, kind=INT, vlen=0, kflag=False, size_type=1, extra=[(8,)])
    types = [
        BtfType(name_off=off["__u32"], kind=INT, vlen=0, kflag=False, size_type=4,
                extra=[(32,)]),                                              # 1
        BtfType(name_off=off["__u16"], kind=INT, vlen=0, kflag=False, size_type=2,
                extra=[(16,)]),                                              # 2
        BtfType(name_off=off["__be16"], kind=TYPEDEF, vlen=0, kflag=False, size_type=2,
                extra=[]),                                                   # 3
        u8,                                                                  # 4
        BtfType(name_off=off["lb4_key"], kind=STRUCT, vlen=5, kflag=False, size_type=12,
                extra=[(off["address"], 1, 0), (off["dport"], 3, 32),
                       (off["backend_slot"], 2, 48), (off["proto"], 4, 64),
                       (off["scope"], 4, 72)]),                              # 5
    ]
    return _btf(types, strs), 5


def test_btf_layout_packs_like_the_c_struct() -> None:
    btf, tid = _lb4_key_btf()
    lay = btf.layout(tid)
    assert [(f.name, f.offset, f.size, f.kind) for f in lay.fields] == [
        ("address", 0, 4, "int"), ("dport", 4, 2, "int"), ("backend_slot", 6, 2, "int"),
        ("proto", 8, 1, "int"), ("scope", 9, 1, "int")]
    raw = lay.pack({"address": 0x0100000A, "dport": 30080, "proto": 6})
    # __be16 is stored in network order, everything else little-endian (host order on BPF/x86)
    assert raw == bytes([0x0A, 0, 0, 1]) + (30080).to_bytes(2, "big") + bytes([0, 0, 6]) + bytes(3)
    assert lay.unpack(raw) == {"address": 0x0100000A, "dport": 30080, "backend_slot": 0,
                               "proto": 6, "scope": 0}


def test_btf_pack_names_the_bad_field() -> None:
    btf, tid = _lb4_key_btf()
    with pytest.raises(ValueError, match="unknown field 'port'"):
        btf.layout(tid).pack({"port": 1})
    with pytest.raises(ValueError, match=r"lb4_key\.proto: 256 out of range"):
        btf.layout(tid).pack({"proto": 256})


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _pb_varint(num << 3) + _pb_varint(payload)
    return _pb_varint(num << 3 | 2) + _pb_varint(len(payload)) + payload


def test_suite_result_decoding_reads_names_statuses_and_logs() -> None:
    codes = {"UNKNOWN": 0, "ERROR": 100, "PASS": 101, "FAIL": 102, "SKIP": 103}
    log = _pb(1, b"want %u got %lx\0") + _pb(2, struct.pack("<QQ", 80, 0x0A000001))
    suite = (_pb(1, _pb(1, b"one\0") + _pb(2, 101)) +
             _pb(1, _pb(1, b"two\0") + _pb(2, 102) + _pb(3, log)) +
             _pb(2, _pb(1, b"suite\0")))
    results, suite_logs = decode_suite(suite + bytes(64), codes)  # the map's zero tail
    assert results == [("one", "PASS", []), ("two", "FAIL", ["want 80 got 0a000001"])]
    assert suite_logs == ["suite"]


def test_format_log_follows_the_go_runner() -> None:
    assert format_log("%d %lu %llx %x", [0xFFFF, 7, 255, 0x1234]) == \
        "-1 7 00000000000000ff 1234"
    assert format_log("a %u", []) == "a %!u(MISSING)"


@pytest.mark.skipif(not TREES.is_dir(), reason="no ../shared/cilium trees")
def test_status_codes_follow_each_trees_trf_proto() -> None:
    old = status_codes(cilium_tree(TREES / "v1.18.0-dev"))
    assert old["PASS"] == 1 and old["_setup_status_checked"] == 0
    assert status_codes(cilium_tree(TREES / "v1.20.0-dev"))["PASS"] == 101


def test_shadow_tree_patches_a_copy_and_leaves_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "cilium"
    (src / "bpf" / "tests").mkdir(parents=True)
    (src / "VERSION").write_text("1.20.0-dev\n")
    (src / "bpf" / "a.h").write_text("orig\n")
    (src / "bpf" / "tests" / "t.c").write_text("test\n")
    tree = cilium_tree(src)
    shadow = shadow_tree(tree, {"tests/t.c": "patched\n"}, tmp_path / "shadow")
    assert (shadow.tests / "t.c").read_text() == "patched\n"
    assert (shadow.bpf / "a.h").is_symlink() and (shadow.bpf / "a.h").read_text() == "orig\n"
    assert (src / "bpf" / "tests" / "t.c").read_text() == "test\n"
    assert shadow.version == "1.20.0-dev"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodeport.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("args", "needle"), [
    (["bpf-tests", "--cilium-src", "/nonexistent"], "--cilium-src: /nonexistent: no bpf/"),
    (["bpf-tests", "--cilium-src", str(ROOT)], "no bpf/ directory"),
    (["bpf-tests", "--jobs", "0", "--cilium-src", "x"], "--jobs: must be >= 1"),
])
def test_bad_cli_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    res = _cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1


# One program calls another program's entry function, in another section, as
# tc_nodeport_lb_no_backend.c's reply pktgen calls the request's pktgen.
CROSS_SECTION_C = """\
#define SEC(n) __attribute__((section(n), used))
struct __sk_buff { unsigned int len; };
static __attribute__((noinline)) int helper(unsigned int x) { return (int)(x * 3); }
SEC("tc/callee") __attribute__((noinline)) int callee(struct __sk_buff *ctx)
{ return helper(ctx->len) + 1000; }
SEC("tc/caller") int caller(struct __sk_buff *ctx) { return callee(ctx) + 20000; }
char _license[] SEC("license") = "GPL";
"""


def cross_section_object(tmp_path: Path) -> Path:
    """CROSS_SECTION_C compiled with Debian's clang-19 (as the loader's toolchain)."""
    src, obj = tmp_path / "cross.c", tmp_path / "cross.o"
    src.write_text(CROSS_SECTION_C)
    subprocess.run(["clang-19", "--target=bpf", "-O2", "-g", "-mcpu=v3", "-c", str(src),
                    "-o", str(obj)], check=True)
    return obj


@pytest.mark.skipif(shutil.which("clang-19") is None, reason="no clang-19 (bootstrap-bpf.sh)")
def test_a_call_into_another_section_is_linked_into_text(tmp_path: Path) -> None:
    raw = cross_section_object(tmp_path).read_bytes()
    before = Elf(raw)
    rels = {s.name: s for s in before.sections if s.type == SHT_REL}
    assert ".reltc/caller" in rels  # clang's call relocation, which libbpf 1.1 refuses
    data, btf, _ = patch_object(raw)
    elf = Elf(data)
    text = elf.section(".text")
    assert text is not None
    syms = {name: (shndx, value, size) for _p, name, _i, shndx, value, size in elf.symbols()}
    shndx, value, size = syms["callee" + LINKED_SUFFIX]
    assert shndx == text.index and size == syms["callee"][2]
    callee_sec = elf.section("tc/callee")
    assert callee_sec is not None
    assert elf.data(text)[value:value + size] == elf.data(callee_sec)  # the code, copied
    text_rel = next(s for s in elf.sections if s.type == SHT_REL and s.info == text.index)
    moved_off, _info = struct.unpack_from("<QQ", elf.data(text_rel), 0)  # callee -> helper
    assert value <= moved_off < value + size
    rel = next(s for s in elf.sections if s.type == SHT_REL and s.name == ".reltc/caller")
    off, info = struct.unpack_from("<QQ", elf.data(rel), 0)
    assert elf.symbol_at(info >> 32)[1] == "callee" + LINKED_SUFFIX
    caller_sec = elf.section("tc/caller")
    assert caller_sec is not None
    assert struct.unpack_from("<i", elf.data(caller_sec), off + 4)[0] == -1
    ext_sec = elf.section(".BTF.ext")
    assert ext_sec is not None
    ext = BtfExt.parse(elf.data(ext_sec))
    for kind in ("func_info", "line_info"):
        blocks = {btf.name(b.name_off): b.records for b in ext.tables[kind][1]}
        orig = blocks["tc/callee"]
        tail = blocks[".text"][-len(orig):]  # after the helper's own records
        assert [struct.unpack_from("<I", r)[0] for r in tail] == [
            value + struct.unpack_from("<I", r)[0] for r in orig], kind
        assert [r[4:] for r in tail] == [r[4:] for r in orig]
    assert BtfExt.parse(ext.encode()) == ext  # the encoder round-trips


def test_a_loader_crash_is_that_objects_error(tmp_path: Path) -> None:
    """libbpf is C: an object that crashes it (as tc/XDP types forced onto iter/ programs
    did) is reported as that object's CRASH, and the run goes on."""
    import faulthandler
    import os
    import signal

    from ciliumbpf.selftest import TestResult, run_isolated

    def segv(_path: Path) -> tuple[str, str | None, list[TestResult], list[str]]:
        faulthandler.disable()  # the child's deliberate crash: no traceback dump in the log
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("not reached")

    def fine(path: Path) -> tuple[str, str | None, list[TestResult], list[str]]:
        return "done", None, [TestResult(name=path.name, status="PASS")], []

    def raises(_path: Path) -> tuple[str, str | None, list[TestResult], list[str]]:
        raise OSError(5, "boom")

    stage, err, tests, _ = run_isolated(tmp_path / "x.o", segv)
    assert stage == "crash" and err is not None and "SIGSEGV" in err and tests == []
    assert run_isolated(tmp_path / "y.o", fine) == (
        "done", None, [TestResult(name="y.o", status="PASS")], [])
    stage, err, _, _ = run_isolated(tmp_path / "z.o", raises)
    assert stage == "crash" and err is not None and "boom" in err


ITER_C = """\\
#define SEC(n) __attribute__((section(n), used))
SEC("iter/udp") int sock_iter(void *ctx) { return ctx != 0; }
SEC("xdp/test/t/check") int t_check(void *ctx) { return ctx != 0; }
SEC("tc/test/u/check") int u_check(void *ctx) { return ctx != 0; }
char _license[] SEC("license") = "GPL";
"""


@pytest.mark.skipif(shutil.which("clang-19") is None, reason="no clang-19 (bootstrap-bpf.sh)")
def test_a_program_with_its_own_type_keeps_it(tmp_path: Path) -> None:
    """destroy_sock_socket_lb.c: iter/ programs next to an xdp test keep libbpf's tracing
    type (not test-runnable, so not loaded); ipv6_test.c: xdp and tc tests in one object
    each get their own section's type."""
    from ciliumbpf.libbpf import PROG_SCHED_CLS, PROG_XDP, BpfObject, test_runnable

    src, obj = tmp_path / "iter.c", tmp_path / "iter.o"
    src.write_text(ITER_C)
    subprocess.run(["clang-19", "--target=bpf", "-O2", "-g", "-c", str(src), "-o", str(obj)],
                   check=True)
    with BpfObject.open(obj) as o:
        it, chk = o.program("sock_iter"), o.program("t_check")
        assert chk.type == PROG_XDP and test_runnable(chk)
        assert o.program("u_check").type == PROG_SCHED_CLS
        assert it.type == 26 and not test_runnable(it)  # BPF_PROG_TYPE_TRACING
