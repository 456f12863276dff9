"""Debian's clang-19/libbpf set-up, the user's Cilium tree, cached compiles with Cilium's flags."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ciliumbpf.errors import BpfInputError, ToolchainError

REPO = Path(__file__).resolve().parent.parent
CLANG = "clang-19"
LIBBPF_SONAME = "libbpf.so.1"
# Debian packages: Cilium pins LLVM 19 (images/builder), libbpf 1.1 is bookworm's.
APT_PACKAGES = ("clang-19", "llvm-19", "libbpf1", "libbpf-dev")

# The flags of Cilium's bpf/tests/Makefile: CLANG_FLAGS as printed by
# pkg/datapath/loader/tools/clang_cflags.go, plus -g and -mcpu=v3 (GetBPFCPU()).
CILIUM_TEST_CFLAGS: tuple[str, ...] = (
    "-g", "-O2", "--target=bpf", "-std=gnu99", "-nostdinc",
    "-ftrap-function=__undefined_trap",
    "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wno-address-of-packed-member",
    "-Wno-unknown-warning-option", "-Wno-gnu-variable-sized-type-not-at-end",
    "-Wimplicit-int-conversion", "-Wenum-conversion", "-Wimplicit-fallthrough",
    "-mcpu=v3",
)


@attrs.frozen(kw_only=True)
class CiliumTree:
    """A user's Cilium checkout: compiled from, never written to."""

    root: Path
    version: str

    @property
    def bpf(self) -> Path:
        """The tree's bpf/ directory."""
        return self.root / "bpf"

    @property
    def tests(self) -> Path:
        """The tree's bpf/tests directory (Cilium's own unit tests)."""
        return self.root / "bpf" / "tests"

    @property
    def version_tuple(self) -> tuple[int, int]:
        """(major, minor) of VERSION, e.g. (1, 18) for 1.18.0-dev."""
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


def cilium_tree(path: str | os.PathLike[str] | None) -> CiliumTree:
    """The tree at --cilium-src (or $NODEPORT_CILIUM_SRC), validated: bpf/ and VERSION present."""
    raw = os.fspath(path) if path is not None else os.environ.get("NODEPORT_CILIUM_SRC")
    if not raw:
        raise BpfInputError("--cilium-src: no Cilium tree given (or set NODEPORT_CILIUM_SRC)")
    root = Path(raw).expanduser().resolve()
    if not (root / "bpf").is_dir():
        raise BpfInputError(f"--cilium-src: {raw}: no bpf/ directory (not a Cilium tree)")
    vfile = root / "VERSION"
    if not vfile.is_file():
        raise BpfInputError(f"--cilium-src: {raw}: no VERSION file")
    version = vfile.read_text().strip()
    parts = version.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise BpfInputError(f"--cilium-src: {vfile}: not a version: {version!r}")
    return CiliumTree(root=root, version=version)


def build_dir() -> Path:
    """The project-owned cache ($NODEPORT_BUILD_DIR or <repo>/build/bpf); never inside the tree."""
    raw = os.environ.get("NODEPORT_BUILD_DIR")
    d = Path(raw).expanduser().resolve() if raw else REPO / "build" / "bpf"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _have_toolchain() -> bool:
    if shutil.which(CLANG) is None:
        return False
    try:
        ctypes.CDLL(LIBBPF_SONAME)
    except OSError:
        return False
    return True


def ensure_toolchain() -> None:
    """Install Debian's clang-19/llvm-19/libbpf on first use; ToolchainError if impossible."""
    if _have_toolchain():
        return
    script = REPO / "scripts" / "bootstrap-bpf.sh"
    res = subprocess.run(["bash", str(script), "--toolchain-only"], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0 or not _have_toolchain():
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolchainError(f"cannot install {' '.join(APT_PACKAGES)}: {last}")


def cflags(tree: CiliumTree) -> tuple[str, ...]:
    """Cilium's test flags for this tree (__NR_CPUS__ as the Makefile's `nproc --all`)."""
    return (*CILIUM_TEST_CFLAGS, f"-D__NR_CPUS__={os.cpu_count() or 1}")


_DIR_DIGESTS: dict[Path, str] = {}
_CACHE_SCHEMA = "2"  # bump when the compile command changes in ways the key cannot see


def dir_digest(path: Path) -> str:
    """Content hash of every file under a directory (symlinks followed); memoized per process."""
    path = Path(path).absolute()
    if path not in _DIR_DIGESTS:
        h = hashlib.sha256()
        for f in sorted(path.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
        _DIR_DIGESTS[path] = h.hexdigest()
    return _DIR_DIGESTS[path]


def _digest(tree: CiliumTree, source: Path, defines: Mapping[str, str],
            include_dirs: Sequence[Path], cwd: Path) -> str:
    """Cache key: every byte the compile can read (tree's bpf/, include dirs, source), flags."""
    h = hashlib.sha256()
    for part in (_CACHE_SCHEMA, tree.version, dir_digest(tree.bpf), str(source),
                 str(cwd.absolute()),
                 *cflags(tree), *sorted(f"{k}={v}" for k, v in defines.items()),
                 *(dir_digest(Path(d)) for d in include_dirs)):
        h.update(part.encode() + b"\0")
    h.update(source.read_bytes())
    return h.hexdigest()[:20]


def shadow_tree(tree: CiliumTree, patches: Mapping[str, str], dest: Path) -> CiliumTree:
    """Symlinks to `tree` under dest, with the files in `patches` (bpf/-relative) replaced.

    The user's tree stays untouched; relative includes resolve exactly as in the original.
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    targets = {Path("bpf") / rel for rel in patches}
    for rel in targets:
        if not (tree.root / rel).is_file():
            raise BpfInputError(f"patch: {rel}: no such file in {tree.root}")
    dest.mkdir(parents=True)
    (dest / "VERSION").symlink_to(tree.root / "VERSION")

    def mirror(rel: Path) -> None:
        (dest / rel).mkdir(exist_ok=True)
        for entry in sorted((tree.root / rel).iterdir()):
            sub = rel / entry.name
            if any(t == sub for t in targets):
                (dest / sub).write_text(patches[str(sub.relative_to("bpf"))])
            elif any(sub in t.parents for t in targets):
                mirror(sub)
            else:
                (dest / sub).symlink_to(entry)

    mirror(Path("bpf"))
    return CiliumTree(root=dest.absolute(), version=tree.version)


def compile_object(tree: CiliumTree, source: Path, *, defines: Mapping[str, str] | None = None,
                   include_dirs: Sequence[Path] = (), cwd: Path | None = None) -> Path:
    """Compile one C file against the tree; cached in build_dir()/obj by inputs' hash."""
    defines = dict(defines or {})
    source = Path(source).absolute()
    if not source.is_file():
        raise BpfInputError(f"{source}: no such C source")
    workdir = Path(cwd) if cwd is not None else source.parent
    key = _digest(tree, source, defines, include_dirs, workdir)
    out_dir = build_dir() / "obj" / tree.version
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{source.stem}-{key}.o"
    if out.exists():
        return out
    cmd = [CLANG, *(f"-I{Path(d).absolute()}" for d in include_dirs),
           f"-I{tree.bpf}", f"-I{tree.bpf / 'include'}", *cflags(tree),
           *(f"-D{k}={v}" if v != "" else f"-D{k}" for k, v in sorted(defines.items())),
           "-c", _as_given(source, workdir)]
    # Write to a temp name and rename: parallel jobs never see half an object.
    fd, tmp = tempfile.mkstemp(suffix=".o", dir=out_dir)
    os.close(fd)
    try:
        res = subprocess.run([*cmd, "-o", tmp], cwd=workdir, capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise CompileError(source, res.stderr)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _as_given(source: Path, cwd: Path) -> str:
    """The source relative to cwd when inside it, as `make` passes it: __FILE__ stays short.

    (bpf/tests' result encoder writes string lengths as one byte; a long absolute __FILE__ in
    a test_log message would corrupt suite_result_map.)
    """
    try:
        return str(source.relative_to(cwd.absolute()))
    except ValueError:
        return str(source)


class CompileError(ToolchainError):
    """clang rejected a source; the first error line is the message, the rest kept."""

    def __init__(self, source: Path, stderr: str) -> None:
        errs = [ln for ln in stderr.splitlines() if "error:" in ln]
        super().__init__(f"{source.name}: compile failed: {(errs or [stderr.strip()])[0]}")
        self.stderr = stderr
