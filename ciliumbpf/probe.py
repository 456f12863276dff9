"""Does the kernel still answer BPF_PROG_LOAD? A wedged loader must skip, not hang, the tests.

A BPF_PROG_LOAD that blocks in the kernel (seen here: kworkers stuck in bpf_prog_pack_free
after thousands of Cilium programs were loaded and freed) leaves its caller in
uninterruptible sleep, where no timeout or signal reaches it. The probe loads a
two-instruction program in a detached child and never waits for it past the deadline.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# __NR_bpf per architecture; elsewhere the probe is not run (the loader's own errors apply).
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}

_CHILD = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
insns = ctypes.create_string_buffer(struct.pack("<BBhiBBhi", 0xb7, 0, 0, 0, 0x95, 0, 0, 0))
lic = ctypes.create_string_buffer(b"GPL")
attr = ctypes.create_string_buffer(struct.pack(
    "<IIQQIIQI", 1, 2, ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0
).ljust(128, b"\\0"), 128)
fd = libc.syscall(int(sys.argv[1]), 5, attr, 128)
print("answered", fd, ctypes.get_errno(), flush=True)
"""


@functools.lru_cache(maxsize=1)
def wedged(deadline_s: float = 20.0) -> str | None:
    """None when the kernel answers a trivial BPF_PROG_LOAD in time, else why not."""
    nr = BPF_SYSCALL.get(platform.machine())
    if nr is None:
        return None
    out = Path(tempfile.mkstemp(prefix="nodeport-bpf-probe-")[1])
    with out.open("w") as sink:
        subprocess.Popen([sys.executable, "-c", _CHILD, str(nr)], stdout=sink,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if "answered" in out.read_text():
            out.unlink(missing_ok=True)
            return None
        time.sleep(0.1)
    return (f"the kernel did not answer a 2-instruction BPF_PROG_LOAD within {deadline_s:.0f} s "
            "(its BPF program loader is wedged; a reboot clears it)")
