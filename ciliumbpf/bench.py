"""Packets/s of Cilium's cil_from_netdev under BPF_PROG_TEST_RUN vs a minimal tc program (floor).

    python -m ciliumbpf.bench --cilium-src DIR [--packets N]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

from ciliumbpf.errors import BpfError
from ciliumbpf.libbpf import BpfObject, Program, in_netns
from ciliumbpf.selftest import CTX_SIZE, compile_test
from ciliumbpf.toolchain import build_dir, cilium_tree, compile_object, ensure_toolchain

# The floor: the project's own one-instruction tc program, built against the tree's headers.
FLOOR_C = """\
#include <bpf/ctx/skb.h>
#include <bpf/api.h>
__section_entry int floor_pass(struct __ctx_buff *ctx __maybe_unused) { return 0; }
BPF_LICENSE("Dual BSD/GPL");
"""
# Cilium's host program as its own NodePort tests build it (bpf_host.c + the test's config).
REAL_TEST = "tc_nodeport_lb4_nat_lb.c"
REAL_PROG = "cil_from_netdev"


def syn_packet() -> bytes:
    """Ethernet + IPv4 + TCP SYN, client 10.0.0.1:40000 -> 192.168.1.1:30080 (no service set)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 30080, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([192, 168, 1, 1]))
    csum = sum(struct.unpack("!10H", ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip[12:]
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + tcp


def measure(prog: Program, packets: int) -> tuple[float, float]:
    """(packets/s through Python's ctypes loop, kernel ns/packet with test-run's repeat)."""
    data, ctx = syn_packet(), bytes(CTX_SIZE)
    prog.test_run(data, ctx)  # warm-up
    t0 = time.perf_counter()
    for _ in range(packets):
        prog.test_run(data, ctx)
    py_pps = packets / (time.perf_counter() - t0)
    kernel_ns = prog.test_run(data, ctx, repeat=packets).duration_ns
    return py_pps, float(kernel_ns)


def main(argv: list[str] | None = None) -> int:
    """Print one table; ratios are against the floor measured in the same run."""
    ap = argparse.ArgumentParser(prog="python -m ciliumbpf.bench")
    ap.add_argument("--cilium-src", default=None)
    ap.add_argument("--packets", type=int, default=5000)
    args = ap.parse_args(argv)
    try:
        tree = cilium_tree(args.cilium_src)
        ensure_toolchain()
        src = build_dir() / "bench" / "floor.c"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(FLOOR_C)
        floor_o = compile_object(tree, src, cwd=src.parent)
        real_o = compile_test(tree, tree.tests / REAL_TEST)
        rows = []
        with in_netns():
            for label, path, name in (("minimal tc program (floor)", floor_o, "floor_pass"),
                                      (f"{REAL_PROG} ({REAL_TEST})", real_o, REAL_PROG)):
                with BpfObject.open(path) as obj:
                    obj.load()
                    rows.append((label, *measure(obj.program(name), args.packets)))
    except BpfError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    base_pps, base_ns = rows[0][1], rows[0][2]
    print(f"cilium {tree.version}, {args.packets} packets each")
    print(f"{'program':<44} {'Python pkts/s':>14} {'x floor':>8} {'kernel ns/pkt':>14} "
          f"{'x floor':>8}")
    for label, pps, ns in rows:
        print(f"{label:<44} {pps:>14,.0f} {pps / base_pps:>8.2f} {ns:>14,.0f} "
              f"{ns / max(base_ns, 1.0):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
