"""Real BPF: Cilium's own tests through the loader, a flipped expectation failing, maps via BTF.

Runs whenever ../shared/cilium exists (installing clang-19/libbpf if missing); otherwise skips
with one line. CI runs a representative subset (see docs/validating-a-datapath.md for timings);
`nodeport bpf-tests` runs any set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ciliumbpf.errors import LoadError
from ciliumbpf.libbpf import BpfObject, in_netns
from ciliumbpf.selftest import compile_test, run_object, run_tests
from ciliumbpf.selftest import test_sources as find_sources
from ciliumbpf.toolchain import CiliumTree, build_dir, cilium_tree, compile_object, shadow_tree
from tests.test_bpf_unit import cross_section_object

ROOT = Path(__file__).resolve().parent.parent
TREES = ROOT.parent / "shared" / "cilium"
VERSIONS = ("v1.18.0-dev", "v1.20.0-dev")
# The CI subset: NAT LB, DSR backend, and (1.20) the SNAT port-conflict test, per tree.
SUBSET = ("tc_nodeport_lb4_dsr_backend", "tc_nodeport_lb4_nat_lb")  # sorted, as run
FLIP_SOURCE = "tc_nodeport_lb4_nat_lb.c"
FLIP_LINE = "if (l4->dest != BACKEND_PORT)"
FLIPPED = "if (l4->dest != BACKEND_PORT + 1)"  # expects a port the NAT never writes


def _skip_reason() -> str | None:
    if not TREES.is_dir():
        return f"real-BPF checks skipped: no Cilium trees at {TREES}"
    if os.geteuid() != 0:
        return "real-BPF checks skipped: BPF_PROG_TEST_RUN and netns need root"
    from ciliumbpf.probe import wedged
    why = wedged()
    if why is not None:
        return f"real-BPF checks skipped: {why}"
    return None


_SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


@pytest.fixture(scope="module", autouse=True)
def _toolchain() -> None:
    from ciliumbpf.toolchain import ensure_toolchain
    ensure_toolchain()


def _tree(version: str) -> CiliumTree:
    return cilium_tree(TREES / version)


@pytest.mark.parametrize("version", VERSIONS)
def test_cilium_nodeport_tests_pass_through_our_loader(version: str) -> None:
    tree = _tree(version)
    results = list(run_tests(tree, find_sources(tree, list(SUBSET)), jobs=2))
    assert [r.source for r in results] == [f"{s}.c" for s in SUBSET]
    for r in results:
        assert r.error is None, f"{r.source}: {r.stage}: {r.error}"
        assert r.tests, f"{r.source}: no tests found"
        bad = [(t.name, t.status, t.detail) for t in r.tests if t.status != "PASS"]
        assert bad == [], f"{r.source}: {bad}"


def test_a_test_calling_another_tests_pktgen_runs() -> None:
    """1.20's reply pktgen calls the request's pktgen, in another section: linked, it passes."""
    tree = _tree("v1.20.0-dev")
    (res,) = run_tests(tree, find_sources(tree, ["tc_nodeport_lb_no_backend"]), jobs=1)
    assert res.error is None, f"{res.stage}: {res.error}"
    status = {t.name: t.status for t in res.tests}
    assert status["tc_nodeport_no_backend4_2_reply"] == "PASS", status
    assert set(status.values()) == {"PASS"} and len(status) == 4, status


def test_a_cross_section_call_runs_the_callee(tmp_path: Path) -> None:
    obj_path = cross_section_object(tmp_path)
    with in_netns(), BpfObject.open(obj_path) as obj:
        obj.load()
        pkt = bytes(20)  # ctx->len is 20: helper triples it
        assert obj.program("callee").test_run(pkt).retval == 1060
        assert obj.program("caller").test_run(pkt).retval == 21060
        assert obj.program("caller").test_run(bytes(30)).retval == 21090


def _enclosing_check(text: str, line: str) -> str:
    head = text[:text.index(line)]
    return str(re.findall(r'CHECK\("[a-z]+", "([^"]+)"\)', head)[-1])


@pytest.mark.parametrize("version", VERSIONS)
def test_a_flipped_expectation_fails(version: str) -> None:
    """A copy of one Cilium test expecting a wrong port in one check must FAIL just that test."""
    tree = _tree(version)
    text = (tree.tests / FLIP_SOURCE).read_text()
    assert FLIP_LINE in text, f"{FLIP_SOURCE} changed: {FLIP_LINE!r} not found"
    victim = _enclosing_check(text, FLIP_LINE)
    patched = text.replace(FLIP_LINE, FLIPPED, 1)
    shadow = shadow_tree(tree, {f"tests/{FLIP_SOURCE}": patched},
                         build_dir() / "shadow" / f"flip-{version}")
    (res,) = run_tests(shadow, [shadow.tests / FLIP_SOURCE], jobs=1)
    assert res.error is None, res.error
    status = {t.name: t.status for t in res.tests}
    assert status[victim] == "FAIL"
    assert all(s == "PASS" for n, s in status.items() if n != victim), status


def test_loader_fills_tail_calls_and_reads_maps_by_btf() -> None:
    tree = _tree("v1.20.0-dev")
    obj_path = compile_test(tree, tree.tests / FLIP_SOURCE)
    with in_netns(), BpfObject.open(obj_path) as obj:
        # bpf_host.c's tails are static, tagged tail:cilium_calls/N (CILIUM_CALL_* indices)
        slots = obj.tail_calls["cilium_calls"]
        assert slots[7] == "tail_handle_ipv4_from_netdev"  # CILIUM_CALL_IPV4_FROM_NETDEV
        obj.load()
        calls = obj.map("cilium_calls")
        assert {int.from_bytes(k, "little") for k, _ in calls.items()} == set(slots)
        svc = next(m for n, m in obj.maps().items() if n.startswith("cilium_lb4_services"))
        assert svc.key_type is not None and svc.value_type is not None
        names = {f.name for f in svc.key_type.fields}
        assert {"address", "dport", "backend_slot", "proto"} <= names
        key = svc.pack_key({"address": 0x0302A8C0, "dport": 30080, "proto": 6})
        assert len(key) == svc.key_size
        val = svc.pack_value({"count": 2, "rev_nat_index": 5})
        svc.update(key, val)
        got = svc.lookup(key)
        assert got is not None and svc.unpack_value(got)["rev_nat_index"] == 5
        assert svc.unpack_key(next(k for k, _ in svc.items()))["dport"] == 30080
        assert svc.delete(key) and svc.lookup(key) is None


def test_1_18_legacy_calls_map_is_converted() -> None:
    tree = _tree("v1.18.0-dev")
    obj_path = compile_test(tree, tree.tests / FLIP_SOURCE)
    with in_netns(), BpfObject.open(obj_path) as obj:
        (legacy,) = obj.legacy_maps
        assert legacy.type == 3 and legacy.id == 2  # PROG_ARRAY, CILIUM_MAP_CALLS
        assert obj.tail_calls[legacy.name][7] == "tail_handle_ipv4_from_netdev"
        obj.load()
        assert obj.map(legacy.name).max_entries == legacy.max_entries


BROKEN_C = """\
#include <bpf/ctx/skb.h>
#include <bpf/api.h>
struct {
	__uint(type, 4242);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} not_a_map_type __section_maps_btf;

__section_entry int probe(struct __ctx_buff *ctx __maybe_unused)
{
	__u32 k = 0;
	return map_lookup_elem(&not_a_map_type, &k) ? 1 : 0;
}
BPF_LICENSE("Dual BSD/GPL");
"""


def test_objects_libbpf_refuses_are_reported_with_the_reason(tmp_path: Path) -> None:
    tree = _tree("v1.20.0-dev")
    src = tmp_path / "broken.c"
    src.write_text(BROKEN_C)
    obj = compile_object(tree, src, cwd=tmp_path)
    stage, err, tests, _ = run_object(obj)
    assert stage == "load" and tests == []
    assert err is not None and "not_a_map_type" in err
    with pytest.raises(LoadError):
        BpfObject.open(tmp_path / "missing.o")
