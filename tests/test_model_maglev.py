"""Maglev in the model: the hash against Cilium's own test picks, the agent's table (balance,
weights, order independence, seeds), selection per version, the same backend on every node,
the seeded faults, and the scenario keys' one-line refusals."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from model.faults import ModelFault
from model.flows import FlowTrace, run_flows
from model.maglev import (
    DEFAULT_HASH_SEED,
    flow_hash,
    hash_string,
    lookup_table,
    murmur3_128,
    seeds,
    select,
)
from model.scenario import load, parse
from tests.conftest import build_doc, run_cli
from tests.test_scenario_validation import _assert_one_line_error, _write

ROOT = Path(__file__).resolve().parent.parent
A = ipaddress.ip_address


def test_hash_picks_cilium_test_backends() -> None:
    """session_affinity_maglev_test.c (v1.20): LUT of 20 entries holding IDs 1..20, seed
    0xcafe, affinity zeroes the client port: client 110.0.11.1 -> 13, 130.0.13.3 -> 14."""
    table = tuple(range(1, 21))
    for client, want in (("110.0.11.1", 13), ("130.0.13.3", 14)):
        assert select(table, A(client), 0, 80, 6, 0xCAFE) == want
    # the client port matters once it is hashed
    picks = {select(table, A("110.0.11.1"), p, 80, 6, 0xCAFE) for p in range(1, 40)}
    assert len(picks) > 5


def test_murmur3_reference_vector_and_seeds() -> None:
    assert murmur3_128(b"hello", 0) == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
    assert murmur3_128(b"", 0) == (0, 0)
    assert seeds(DEFAULT_HASH_SEED) == (0x24B7EF82, 0x71DCDA46, 0x92505688)


def test_flow_hash_ignores_nothing_it_takes() -> None:
    base = flow_hash(A("203.0.113.7"), 40000, 80, 6, 1)
    assert flow_hash(A("203.0.113.8"), 40000, 80, 6, 1) != base
    assert flow_hash(A("203.0.113.7"), 40001, 80, 6, 1) != base
    assert flow_hash(A("203.0.113.7"), 40000, 81, 6, 1) != base
    assert flow_hash(A("203.0.113.7"), 40000, 80, 17, 1) != base
    assert flow_hash(A("203.0.113.7"), 40000, 80, 6, 2) != base
    assert flow_hash(A("2001:db8::7"), 40000, 80, 6, 1) != flow_hash(A("2001:db8::8"), 40000,
                                                                     80, 6, 1)


def _bes(n: int, weights: tuple[int, ...] | None = None) -> tuple[tuple[str, int, int], ...]:
    w = weights or (100,) * n
    return tuple((hash_string(A(f"10.0.2.{10 + i}"), 8080, "TCP"), i + 1, w[i])
                 for i in range(n))


def test_table_is_full_balanced_and_order_free() -> None:
    murmur = seeds(DEFAULT_HASH_SEED)[0]
    t = lookup_table(_bes(3), 1021, murmur)
    assert len(t) == 1021 and -1 not in t
    c = Counter(t)
    assert set(c) == {1, 2, 3} and max(c.values()) - min(c.values()) <= 1
    assert lookup_table(tuple(reversed(_bes(3))), 1021, murmur) == t
    assert lookup_table(_bes(3), 1021, murmur ^ 1) != t  # the murmur seed moves entries


def test_weights_share_the_table() -> None:
    murmur = seeds(DEFAULT_HASH_SEED)[0]
    c = Counter(lookup_table(_bes(2, (300, 100)), 2039, murmur))
    assert 2.8 < c[1] / c[2] < 3.2, c


def test_backend_names_as_the_agent_writes_them() -> None:
    assert hash_string(A("10.0.2.10"), 8080, "TCP") == "[10.0.2.10:8080/TCP,State:active]"
    assert hash_string(A("fd00::1"), 53, "UDP") == "[[fd00::1]:53/UDP,State:active]"


def _doc(version: str = "1.18", **svc: Any) -> dict[str, Any]:
    return {
        "cilium": {"version": version, "loadBalancer": {"mode": "snat", "algorithm": "maglev"},
                   "maglev": {"tableSize": 251}},
        "nodes": [{"name": f"node{i}", "ip": f"192.168.2.{i + 1}"} for i in (1, 2, 3)],
        "pods": [{"name": f"web-{i}", "node": "node3", "ip": f"10.0.3.{10 + i}"}
                 for i in range(4)],
        "services": [{"name": "web", "type": "LoadBalancer", "port": 80, "targetPort": 8080,
                      "nodePort": 30080, "loadBalancerIP": "172.16.10.2",
                      "backends": [f"web-{i}" for i in range(4)], **svc}],
        "clients": [{"name": "client", "ip": "203.0.113.7"}],
        "flows": [{"name": f"p{p}-n{n}", "client": "client", "sourcePort": p,
                   "to": {"address": "172.16.10.2", "port": 80, "via": f"node{n}"}}
                  for p in range(40000, 40012) for n in (1, 2)],
    }


def _run(doc: dict[str, Any], faults: frozenset[ModelFault] = frozenset()
         ) -> list[FlowTrace]:
    sc = parse(doc)
    _, traces = run_flows(attrs.evolve(sc.world, faults=faults), sc.flows)
    return traces


def _pairs(traces: list[FlowTrace]) -> list[tuple[str | None, str | None]]:
    return [(a.backend_pod, b.backend_pod) for a, b in zip(traces[::2], traces[1::2],
                                                           strict=True)]


@pytest.mark.parametrize("version", ["1.18", "1.20"])
def test_every_node_picks_the_same_backend(version: str) -> None:
    pairs = _pairs(_run(_doc(version)))
    assert all(a == b and a is not None for a, b in pairs), pairs
    assert len({a for a, _ in pairs}) > 1  # and the flows spread over the backends


def test_node_seed_fault_moves_some_flows() -> None:
    pairs = _pairs(_run(_doc(), frozenset({ModelFault.MAGLEV_NODE_SEED})))
    assert any(a != b for a, b in pairs), pairs


def test_affinity_zero_port_on_v120_only() -> None:
    """v1.20 hashes a zero client port on affinity frontends (lb.h:1937): every port of one
    client lands on one backend even without an affinity entry (each flow via its own
    first node); v1.18 hashes the port."""
    aff = {"sessionAffinity": "ClientIP"}
    v20 = {t.backend_pod for t in _run(_doc("1.20", **aff))}
    v18 = {t.backend_pod for t in _run(_doc("1.18", **aff))}
    assert len(v20) == 1
    assert len(v18) >= 1
    plain = {t.backend_pod for t in _run(_doc("1.20"))}
    assert len(plain) > 1


def test_example_keeps_the_moved_flow() -> None:
    sc = load(ROOT / "examples" / "maglev.yaml")
    _, traces = run_flows(sc.world, sc.flows)
    assert traces[0].backend_pod == traces[1].backend_pod
    assert sc.world.cfg.maglev_table_size == 1021


@pytest.mark.parametrize(("value", "key"), [
    ({"loadBalancer": {"mode": "snat", "algorithm": "ring"}}, "cilium.loadBalancer.algorithm"),
    ({"maglev": {"tableSize": 1000}}, "cilium.maglev.tableSize"),
    ({"maglev": {"tableSize": "16381"}}, "cilium.maglev.tableSize"),
    ({"maglev": {"hashSeed": "abc"}}, "cilium.maglev.hashSeed"),
    ({"maglev": {"hashSeed": "QUJD"}}, "cilium.maglev.hashSeed"),
    ({"maglev": {"hashSeed": 12}}, "cilium.maglev.hashSeed"),
    ({"maglev": {"size": 251}}, "cilium.maglev.size"),
    ({"maglev": [251]}, "cilium.maglev"),
])
def test_bad_maglev_keys_one_line(tmp_path: Path, value: dict[str, Any], key: str) -> None:
    doc = build_doc()
    doc.setdefault("cilium", {}).update(value)
    path = _write(tmp_path, doc)
    _assert_one_line_error(run_cli("trace", str(path)), path, key)


def test_cilium_go_test_weighted_counts_and_removal() -> None:
    """pkg/maglev/maglev_test.go TestWeightedBackendWithRemoval (default seed, M = 1021):
    weights 2, 13, 111, 10 take exactly 16, 98, 832 and 75 entries; removing the first
    changes fewer than 1% of the table's entries of the others (TestBackendRemoval: the
    same for three backends of weight 1)."""
    murmur = seeds(DEFAULT_HASH_SEED)[0]
    bes = (("one", 0, 2), ("three", 1, 13), ("two", 2, 111), ("tzwe", 3, 10))
    before = lookup_table(bes, 1021, murmur)
    assert Counter(before) == {0: 16, 1: 98, 2: 832, 3: 75}
    after = lookup_table(bes[1:], 1021, murmur)
    assert 0 not in after
    moved = sum(1 for i in range(1021) if before[i] != 0 and after[i] != before[i])
    assert moved / 1021 < 0.01
    three = (("one", 0, 1), ("three", 1, 1), ("two", 2, 1))
    b3, a3 = lookup_table(three, 1021, murmur), lookup_table(three[:2], 1021, murmur)
    assert sum(1 for i in range(1021) if b3[i] != 2 and a3[i] != b3[i]) / 1021 < 0.01
