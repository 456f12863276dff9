"""Cilium's own bpf/tests without Go: the loader's self-check (bpf/tests/bpftest/bpf_test.go)."""

from __future__ import annotations

import concurrent.futures
import fnmatch
import hashlib
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from ciliumbpf.errors import BpfError, BpfInputError, LoadError
from ciliumbpf.libbpf import PROG_SCHED_CLS, BpfObject, Program, in_netns, test_runnable
from ciliumbpf.toolchain import CiliumTree, build_dir, compile_object

# bpf_test.go: checkProgRegex, the result/mock maps, and the packet buffer it hands to pktgen.
CHECK_PROG = re.compile(r"^[^/]+/test/([^/]+)/(check|setup|pktgen)$")
SUITE_RESULT_MAP = "suite_result_map"
MOCK_SKB_META_MAP = "mock_skb_meta_map"
DATA_SIZE = 4096 - 256 - 320
CTX_SIZE = 256
SETUP_CHECKED = "_setup_status_checked"  # pseudo status code: the tree's runner checks setup


@attrs.frozen(kw_only=True)
class TestResult:
    """One test of one object: PASS / FAIL / SKIP / ERROR, with its failing sub-tests' logs."""

    __test__ = False
    name: str
    status: str
    detail: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ObjectResult:
    """One bpf/tests/*.c: compiled, opened, loaded and run, or the reason it was not."""

    source: str
    error: str | None
    stage: str  # "compile", "open", "load", "run", "crash" (where it stopped), or "done"
    tests: tuple[TestResult, ...]
    compile_s: float
    run_s: float


def test_sources(tree: CiliumTree, patterns: Sequence[str]) -> list[Path]:
    """bpf/tests/*.c whose stem matches any pattern (fnmatch; all when none)."""
    files = sorted(tree.tests.glob("*.c"))
    pats = [p.removesuffix(".c").removesuffix(".o") for p in patterns] or ["*"]
    chosen = [f for f in files if any(fnmatch.fnmatchcase(f.stem, p) for p in pats)]
    if not chosen:
        raise BpfInputError(f"PATTERN: {' '.join(patterns)}: no test in {tree.tests}")
    return chosen


def status_codes(tree: CiliumTree) -> dict[str, int]:
    """TestStatus values from the tree's trf.proto (1.18: PASS=1; 1.20: PASS=101)."""
    proto = tree.tests / "bpftest" / "trf.proto"
    try:
        text = proto.read_text()
    except OSError as exc:
        raise BpfInputError(f"{proto}: {exc.strerror}") from exc
    m = re.search(r"enum\s+TestStatus\s*{([^}]*)}", text)
    codes = dict(re.findall(r"(\w+)\s*=\s*(\d+)\s*;", m.group(1))) if m else {}
    need = {"ERROR", "PASS", "FAIL", "SKIP"}
    if not need <= codes.keys():
        raise BpfInputError(f"{proto}: TestStatus lacks {sorted(need - codes.keys())}")
    out = {k: int(v) for k, v in codes.items()}
    # 1.20's runner fails a test whose pktgen/setup returns ERROR or FAIL (testSetUpError);
    # 1.18's ignores those statuses (its tc setups return TC_ACT_* verdicts, 2 = FAIL there).
    go = tree.tests / "bpftest" / "bpf_test.go"
    out[SETUP_CHECKED] = int(go.is_file() and "testSetUpError" in go.read_text())
    return out


def scapy_include_dir(tree: CiliumTree) -> Path | None:
    """Build-dir root holding output/scapy_bytes.h (bpf/tests/scapy/scapy_header_gen.py)."""
    gen = tree.tests / "scapy" / "scapy_header_gen.py"
    if not gen.is_file():
        return None
    h = hashlib.sha256()
    for f in sorted((tree.tests / "scapy").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    root = build_dir() / "scapy" / h.hexdigest()[:16]
    out = root / "output" / "scapy_bytes.h"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        res = subprocess.run([sys.executable, str(gen), str(tmp)], cwd=gen.parent, env=env,
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["?"])
            raise BpfError(f"scapy_header_gen.py failed: {last[-1]}")
        os.replace(tmp, out)
    return root


def test_include_dirs(tree: CiliumTree, extra: Sequence[Path] = ()) -> list[Path]:
    """-I dirs for bpf/tests objects: extra, then the generated scapy header's root if any."""
    scapy = scapy_include_dir(tree)
    return [*extra, *([scapy] if scapy is not None else [])]


def compile_test(tree: CiliumTree, source: Path) -> Path:
    """One bpf/tests object, compiled (or cached) exactly as run_tests compiles it."""
    return compile_object(tree, source, include_dirs=test_include_dirs(tree), cwd=tree.tests)


# -- trf.proto decoding (protobuf wire format, just what SuiteResult needs) ---------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    val = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) until the end or a zero tag (the map's zero padding)."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag == 0:
            return
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
            yield num, wt, v
        elif wt == 1:
            yield num, wt, buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > len(buf):
                raise ValueError("truncated length-delimited field")
            yield num, wt, buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            yield num, wt, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wt}")


def _log(buf: bytes) -> str:
    fmt, args = "", []
    for num, wt, v in _fields(buf):
        if num == 1 and isinstance(v, bytes):
            fmt = v.decode(errors="replace").rstrip("\0")
        elif num == 2 and isinstance(v, bytes):
            step = 8
            args += [struct.unpack_from("<Q", v, i)[0] for i in range(0, len(v) - step + 1, step)]
            _ = wt
    return format_log(fmt, args)


def format_log(fmt: str, args: list[int]) -> str:
    """bpf_test.go's Log.FmtString: printk verbs, %u 16-bit, %lu 32-bit, %llu 64-bit."""
    widths = {"": 16, "l": 32, "ll": 64}

    def one(m: re.Match[str]) -> str:
        size, verb = m.group(1), m.group(2)
        if not args:
            return f"%!{size}{verb}(MISSING)"
        bits = widths[size]
        raw = args.pop(0) & ((1 << bits) - 1)
        if verb == "x":
            return raw.to_bytes(bits // 8, "big").hex()
        if verb in "dis" and raw >> (bits - 1):
            raw -= 1 << bits
        return str(raw)

    return re.sub(r"%(ll|l|)([diuxs])", one, fmt)


def _prefix(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """Top-level fields up to the first that does not parse, as bpf_test.go's ConsumeField loop."""
    out: list[tuple[int, int, bytes | int]] = []
    it = _fields(buf)
    while True:
        try:
            out.append(next(it))
        except (StopIteration, ValueError):
            return out


def decode_suite(value: bytes, codes: dict[str, int]) -> tuple[list[tuple[str, str, list[str]]],
                                                            list[str]]:
    """suite_result_map[0] -> ([(name, status, logs)], suite logs)."""
    names = {v: k for k, v in codes.items()}
    results, suite_logs = [], []
    for num, _wt, v in _prefix(value):
        if num == 1 and isinstance(v, bytes):
            name, status, logs = "", codes.get("UNKNOWN", -1), []
            for n2, _w2, v2 in _fields(v):
                if n2 == 1 and isinstance(v2, bytes):
                    name = v2.decode(errors="replace").rstrip("\0")
                elif n2 == 2 and isinstance(v2, int):
                    status = v2
                elif n2 == 3 and isinstance(v2, bytes):
                    logs.append(_log(v2))
            results.append((name, names.get(status, f"status {status}"), logs))
        elif num == 2 and isinstance(v, bytes):
            suite_logs.append(_log(v))
    return results, suite_logs


# -- running one object -------------------------------------------------------------------

def _run(prog: Program, data: bytes, ctx: bytes | None) -> tuple[int, bytes, bytes | None]:
    res = prog.test_run(data, ctx)
    return res.retval, res.data, res.ctx


def _clear(obj: BpfObject, name: str) -> None:
    m = obj.maps().get(name)
    if m is not None:
        m.update(bytes(m.key_size), bytes(len(m.lookup(bytes(m.key_size)) or b"")))


def _one_test(obj: BpfObject, name: str, progs: dict[str, Program],
              codes: dict[str, int]) -> TestResult:
    """pktgen -> setup -> check as subTest() does, then the suite result of check."""
    check = progs["check"]
    data, ctx = bytes(DATA_SIZE), (bytes(CTX_SIZE) if check.type == PROG_SCHED_CLS else None)
    bad = {codes["ERROR"], codes["FAIL"]} if codes.get(SETUP_CHECKED) else set()
    try:
        status = codes["PASS"]
        for stage in ("pktgen", "setup"):
            if stage in progs:
                status, data, ctx = _run(progs[stage], data, ctx)
                if status in bad:
                    return TestResult(name=name, status="ERROR",
                                      detail=(f"{stage} returned status {status}",))
        if "setup" in progs:
            data = struct.pack("=I", status) + data
        status, data, ctx = _run(check, data, ctx)
        value = obj.map(SUITE_RESULT_MAP).lookup(bytes(4)) or b""
    except OSError as exc:
        return TestResult(name=name, status="ERROR", detail=(str(exc),))
    finally:
        for m in (SUITE_RESULT_MAP, MOCK_SKB_META_MAP):
            _clear(obj, m)
    try:
        results, suite_logs = decode_suite(value, codes)
        undecodable = ""
    except ValueError as exc:  # the Go runner fails the test (t.Fatal) here too
        results, suite_logs, undecodable = [], [], f"suite_result_map not decodable: {exc}"
    detail = [f"{sub}: {st}" + "".join(f"\n      {ln}" for ln in logs)
              for sub, st, logs in results if st not in ("PASS", "SKIP")]
    overall = {v: k for k, v in codes.items()}.get(status, f"status {status}")
    if overall not in ("PASS", "SKIP") or detail:
        detail += [f"  {ln}" for ln in suite_logs]
    if overall == "PASS" and any(st not in ("PASS", "SKIP") for _, st, _ in results):
        overall = "FAIL"
    if undecodable:
        detail.insert(0, undecodable)
        overall = "FAIL" if overall == "FAIL" else "ERROR"
    if overall not in ("PASS", "FAIL", "SKIP"):
        detail.insert(0, f"check returned {overall}")
        overall = "ERROR" if overall != "FAIL" else overall
    return TestResult(name=name, status=overall, detail=tuple(detail))


def run_object(path: Path) -> tuple[str, str | None, list[TestResult], list[str]]:
    """Open, load and run one compiled test object in its own netns: (stage, error, tests, _)."""
    codes = _CODES
    with in_netns():
        try:
            obj = BpfObject.open(path)
        except LoadError as exc:
            return "open", str(exc), [], []
        with obj:
            skipped = [p.name for p in obj.programs().values() if not test_runnable(p)]
            for name in skipped:
                obj.set_autoload(name, False)
            try:
                obj.load()
            except LoadError as exc:
                return "load", str(exc), [], skipped
            sets: dict[str, dict[str, Program]] = {}
            for prog in obj.programs().values():
                m = CHECK_PROG.match(prog.section)
                if m is None or prog.name in skipped:
                    continue
                progs = sets.setdefault(m.group(1), {})
                if m.group(2) in progs:
                    return "run", f"duplicate {m.group(2)} programs for {m.group(1)}", [], skipped
                progs[m.group(2)] = prog
            missing = sorted(n for n, ps in sets.items() if "check" not in ps)
            if missing:
                return "run", f"no check program for {missing[0]}", [], skipped
            tests = [_one_test(obj, n, sets[n], codes) for n in sorted(sets)]
    return "done", None, tests, skipped


Outcome = tuple[str, str | None, list[TestResult], list[str]]


def run_isolated(path: Path, run: Callable[[Path], Outcome] | None = None) -> Outcome:
    """run_object in a forked child: libbpf is C, and an object it mishandles can crash it;
    that is then this object's error (stage "crash"), not the end of the whole run."""
    run = run if run is not None else run_object
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send the outcome, leave without Python's clean-up
        code = 0
        try:
            os.close(rd)
            try:
                outcome: Outcome = run(path)
            except Exception as exc:  # reported as this object's error
                outcome = ("crash", f"the loader raised {exc!r}", [], [])
            with os.fdopen(wr, "wb") as out:
                out.write(pickle.dumps(outcome))
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as inp:
        data = inp.read()
    _pid, status = os.waitpid(pid, 0)
    if data and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        result: Outcome = pickle.loads(data)
        return result
    if os.WIFSIGNALED(status):
        why = f"the loader died with {signal.Signals(os.WTERMSIG(status)).name} (in libbpf)"
    else:
        why = f"the loader's child exited with status {os.WEXITSTATUS(status)}, no result"
    return "crash", why, [], []


_CODES: dict[str, int] = {}


def _job(tree: CiliumTree, source: Path, include_dirs: tuple[Path, ...],
         codes: dict[str, int]) -> ObjectResult:
    global _CODES
    _CODES = codes
    t0 = time.monotonic()
    try:
        obj = compile_object(tree, source, include_dirs=include_dirs, cwd=tree.tests)
    except BpfError as exc:
        return ObjectResult(source=source.name, error=str(exc), stage="compile", tests=(),
                            compile_s=time.monotonic() - t0, run_s=0.0)
    t1 = time.monotonic()
    stage, err, tests, _ = run_isolated(obj)
    return ObjectResult(source=source.name, error=err, stage=stage, tests=tuple(tests),
                        compile_s=t1 - t0, run_s=time.monotonic() - t1)


def run_tests(tree: CiliumTree, sources: Sequence[Path], *, jobs: int = 1,
              include_dirs: Sequence[Path] = ()) -> Iterator[ObjectResult]:
    """Compile and run each source (jobs in parallel, each object in a fresh netns), in order."""
    codes = status_codes(tree)
    incs = test_include_dirs(tree, include_dirs)
    if jobs <= 1:
        for s in sources:
            yield _job(tree, s, tuple(incs), codes)
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(_job, tree, s, tuple(incs), codes) for s in sources]
        for f in futs:
            yield f.result()
