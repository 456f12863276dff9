"""LRU map semantics and map dumps used by the later abstraction function."""

from __future__ import annotations

from datapath.bench import bench_config, workload
from datapath.host import Node
from datapath.maps import BPF_NOEXIST, HashMap, LruHashMap
from datapath.nat import snat_clamp_port_range


def test_lru_evicts_least_recently_used_and_lookup_refreshes() -> None:
    m: LruHashMap[int, str] = LruHashMap("t", 2)
    assert m.update(1, "a") and m.update(2, "b")
    assert m.lookup(1) == "a"
    assert m.update(3, "c")
    assert 2 not in m and 1 in m and 3 in m


def test_hash_map_full_and_noexist() -> None:
    m: HashMap[int, int] = HashMap("h", 1)
    assert m.update(1, 1)
    assert not m.update(2, 2)
    assert not m.update(1, 5, BPF_NOEXIST)
    assert m.lookup(1) == 1


def test_clamp_formula() -> None:
    assert snat_clamp_port_range(32768, 65535, 0) == 32768
    assert snat_clamp_port_range(32768, 65535, 0xFFFF) == 65535
    assert snat_clamp_port_range(32768, 65535, 0x8000) == 49152
    assert snat_clamp_port_range(100, 200, 7, modulo=True) == 107


def test_dump_is_plain_data() -> None:
    node = Node(bench_config("snat"))
    for hook, p in workload(50, seed=2):
        node.run(hook, p)
    d = node.maps.dump()
    assert d["cilium_lb4_services_v2"]
    rows = d["cilium_ct4_global"]
    assert rows
    key, val = rows[0]
    assert isinstance(key["daddr"], str) and "lifetime" in val
    assert any(k["flags"] == 1 for k, _ in d["cilium_snat_v4_external"])
