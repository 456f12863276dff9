"""Real BPF vs its peers in one run: packets/s and difftest observations/s.

    python -m ciliumbpf.bench --cilium-src DIR [--packets N] [--difftest-examples N]

Rows: the project's one-instruction tc program (the floor); Cilium's cil_from_netdev as its
own tc_nodeport_lb4_nat_lb.c builds it (unprogrammed NodePort SYN); the `cilium-bpf` adapter
(the harness around bpf_host.c, a programmed SNAT service, the whole Datapath.run per packet:
control map, test-run, capture read, result) next to the Python reference datapath on the
same NodeConfig and packet; then difftest observations/s, real BPF vs the reference.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

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


def service_case() -> tuple[Any, bytes]:
    """A node with one SNAT NodePort service and a remote backend, and a client's SYN to it
    (tc_nodeport_lb4_nat_lb.c's addresses)."""
    from datapath.build import ipv4, tcp_segment
    from datapath.config import BackendConfig, NodeConfig, ServiceConfig

    cfg = NodeConfig(ipv4="10.0.10.1",
                     services=(ServiceConfig(frontend="172.16.10.2", port=80,
                                             rev_nat_index=1, backends=(124,)),),
                     backends=(BackendConfig(id=124, address="192.168.0.2", port=8080),))
    c, f = bytes([110, 0, 11, 1]), bytes([172, 16, 10, 2])
    return cfg, ipv4(c, f, 6, tcp_segment(c, f, 111, 80))


def per_packet(run: Callable[[], object], packets: int) -> float:
    """Packets/s of one call per packet."""
    run()
    t0 = time.perf_counter()
    for _ in range(packets):
        run()
    return packets / (time.perf_counter() - t0)


def adapter_rows(tree: Any, packets: int) -> list[tuple[str, float, float]]:
    """The cilium-bpf adapter and the reference datapath on the same node and packet."""
    from ciliumbpf.node import CiliumBpfNode
    from datapath.host import Node

    cfg, pkt = service_case()
    node = CiliumBpfNode(cfg, tree)
    try:
        real = per_packet(lambda: node.run("from-netdev", pkt), packets)
        frame = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + pkt
        ns = float(node._progs["from-netdev"].test_run(
            frame, bytes(node.host.ctx_size), repeat=packets).duration_ns)
    finally:
        node.free()
    ref = Node(cfg)
    py = per_packet(lambda: ref.run("from-netdev", pkt), packets)
    return [("cilium-bpf adapter: bpf_host from-netdev (service)", real, ns),
            ("reference datapath (Python), same packet", py, float("nan"))]


def difftest_rows(tree: Any, examples: int) -> list[tuple[str, float, int]]:
    """difftest observations/s: the real datapath vs the reference, same programs."""
    from ciliumbpf.adapter import Factory
    from datapath.adapter import reference_factory
    from datapath.diffgen import difftest

    f = Factory(str(tree.root))
    real = difftest(examples, 0, f, shrink=False)
    f.free()
    ref = difftest(examples, 0, reference_factory, shrink=False)
    return [("difftest vs cilium-bpf", real.obs_per_s, real.observations),
            ("difftest vs reference datapath", ref.obs_per_s, ref.observations)]


def main(argv: list[str] | None = None) -> int:
    """Print one table; ratios are against the floor measured in the same run."""
    ap = argparse.ArgumentParser(prog="python -m ciliumbpf.bench")
    ap.add_argument("--cilium-src", default=None)
    ap.add_argument("--packets", type=int, default=5000)
    ap.add_argument("--difftest-examples", type=int, default=64)
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
            rows += adapter_rows(tree, args.packets)
        diff = difftest_rows(tree, args.difftest_examples)
    except BpfError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    base_pps, base_ns = rows[0][1], rows[0][2]
    print(f"cilium {tree.version}, {args.packets} packets each")
    print(f"{'program':<52} {'Python pkts/s':>14} {'x floor':>8} {'kernel ns/pkt':>14} "
          f"{'x floor':>8}")
    for label, pps, ns in rows:
        kern = f"{ns:>14,.0f} {ns / max(base_ns, 1.0):>8.1f}" if ns == ns else f"{'-':>14} {'-':>8}"
        print(f"{label:<52} {pps:>14,.0f} {pps / base_pps:>8.2f} {kern}")
    ref_obs = diff[1][1]
    print(f"{'difftest':<52} {'obs/s':>14} {'x ref':>8} {'observations':>14}")
    for label, rate, n in diff:
        print(f"{label:<52} {rate:>14,.0f} {rate / max(ref_obs, 1e-9):>8.2f} {n:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
