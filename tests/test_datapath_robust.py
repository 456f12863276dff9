"""No exception ever escapes a hook; malformed packets are dropped with a reason."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from datapath.bench import bench_config, fuzz, workload
from datapath.drop import DropReason, Verdict, XdpVerdict
from datapath.host import HOOKS, Node

BASE = [p for _h, p in workload(64, seed=3)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(HOOKS), st.sampled_from(["snat", "dsr"]))
def test_random_bytes_never_raise(data: bytes, hook: str, mode: str) -> None:
    node = Node(bench_config(mode))
    r = node.run(hook, data)
    assert node.internal_errors == 0
    assert isinstance(r.verdict, XdpVerdict if hook == "xdp" else Verdict)
    if r.verdict in (Verdict.CTX_ACT_DROP, XdpVerdict.XDP_DROP):
        assert isinstance(r.drop_reason, DropReason)
        assert r.packet == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BASE), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                        max_size=4), st.integers(0, 200))
def test_mutated_packets_never_raise(base: bytes, flips: list[tuple[int, int]],
                                     cut: int) -> None:
    b = bytearray(base)
    for i, v in flips:
        if i < len(b):
            b[i] = v
    del b[cut if cut < len(b) else len(b):]
    node = Node(bench_config("hybrid"))
    for hook in HOOKS:
        node.run(hook, bytes(b))
    assert node.internal_errors == 0


def test_short_fuzz_run_reports() -> None:
    rep = fuzz(3000, seed=9)
    assert rep.exceptions == 0
    assert rep.packets == 3000
    assert sum(rep.verdicts.values()) == 3000
    assert rep.drops.get("DROP_INVALID", 0) > 0


def test_truncations_of_valid_packet_are_invalid() -> None:
    node = Node(bench_config("snat"))
    pkt = BASE[0]
    for n in range(len(pkt)):
        r = node.run("from-netdev", pkt[:n])
        assert r.verdict == Verdict.CTX_ACT_DROP
        assert r.drop_reason in (DropReason.DROP_INVALID, DropReason.DROP_CT_INVALID_HDR)
