"""Session affinity in the model: sticky across source ports, the sliding timeout with
Cilium's `<=` boundary, the match map after an endpoint change, per node."""

from __future__ import annotations

from typing import Any

import attrs

from model.faults import ModelFault
from model.flows import FlowTrace, run_flows
from model.maps import AffinityKey
from model.scenario import parse


def _doc(flows: list[dict[str, Any]], affinity: str = "ClientIP", timeout: int = 60,
         seed: int = 3) -> dict[str, Any]:
    svc: dict[str, Any] = {"name": "web", "type": "NodePort", "port": 80, "targetPort": 8080,
                           "nodePort": 30080, "sessionAffinity": affinity,
                           "backends": ["web-0", "web-1", "web-2"]}
    if affinity == "ClientIP":
        svc["sessionAffinityTimeoutSeconds"] = timeout
    return {
        "cilium": {"version": "1.18", "loadBalancer": {"mode": "snat"}, "seed": seed},
        "nodes": [{"name": "node1", "ip": "192.168.2.2"}, {"name": "node2", "ip": "192.168.2.3"}],
        "pods": [{"name": f"web-{i}", "node": "node2", "ip": f"10.0.2.{10 + i}"}
                 for i in range(3)],
        "services": [svc],
        "clients": [{"name": "client", "ip": "203.0.113.7"}],
        "flows": [{"name": f"f{i}", "client": "client", "sourcePort": 40000 + i,
                   "to": {"node": "node1", "service": "web"}, "packets": 1, **f}
                  for i, f in enumerate(flows)],
    }


def _run(doc: dict[str, Any], faults: frozenset[ModelFault] = frozenset()
         ) -> list[FlowTrace]:
    sc = parse(doc)
    _, traces = run_flows(attrs.evolve(sc.world, faults=faults), sc.flows)
    return traces


def test_new_connections_from_one_client_stick_on_every_seed() -> None:
    for seed in range(1, 9):
        pods = {t.backend_pod for t in _run(_doc([{}] * 5, seed=seed))}
        assert len(pods) == 1, (seed, pods)


def test_without_affinity_connections_spread() -> None:
    pods = {t.backend_pod for seed in range(1, 5)
            for t in _run(_doc([{}] * 6, affinity="None", seed=seed))}
    assert len(pods) > 1


def test_timeout_boundary_is_cilium_le() -> None:
    """Sticky for [last_used, last_used + timeout): the second flow's one packet comes at
    last_used + idle + 1; at last_used + 59 it sticks on every seed, at last_used + 60 the
    entry is deleted and some seed selects another backend."""
    for seed in range(1, 12):
        assert len({t.backend_pod for t in _run(_doc([{}, {"idle": 58}], seed=seed))}) == 1
    moved = [seed for seed in range(1, 12)
             if len({t.backend_pod for t in _run(_doc([{}, {"idle": 59}], seed=seed))}) > 1]
    assert moved


def test_backend_leaving_voids_the_entry() -> None:
    for seed in range(1, 6):
        first = _run(_doc([{}], seed=seed))[0].backend_pod
        assert first is not None
        rest = [p for p in ("web-0", "web-1", "web-2") if p != first]
        traces = _run(_doc([{}, {"setBackends": {"web": rest}}], seed=seed))
        assert traces[1].backend_pod in rest


def test_affinity_is_per_node() -> None:
    sc = parse(_doc([{}, {"to": {"node": "node2", "service": "web"}}]))
    state, _ = run_flows(sc.world, sc.flows)
    n1 = state.nodes["node1"].affinity.entries
    n2 = state.nodes["node2"].affinity.entries
    assert len(n1) == 1 and len(n2) == 1
    assert next(iter(n1)) != next(iter(n2))  # rev_nat_id of each node's own frontend


def test_expiry_fault_breaks_stickiness() -> None:
    broken = [seed for seed in range(1, 12)
              if len({t.backend_pod for t in _run(
                  _doc([{}] * 4, seed=seed),
                  frozenset({ModelFault.AFFINITY_EXPIRY_INVERTED}))}) > 1]
    assert broken


def test_key_is_client_address_and_frontend() -> None:
    sc = parse(_doc([{}]))
    state, traces = run_flows(sc.world, sc.flows)
    key = AffinityKey(client=sc.world.cluster.clients[0].ip, rev_nat_id=1)
    val = state.nodes["node1"].affinity.get(key)
    assert val is not None
    pod = sc.world.cluster.pod(traces[0].backend_pod or "")
    assert state.nodes["node1"].lb.backends[val.backend_id].addr == pod.ip


def test_reselection_of_an_existing_entry_ignores_the_affinity_map() -> None:
    """lb4_local's CT_REPLY branch (lb.h:2263-2276) reselects with lb4_select_backend_id
    when a live entry's backend is gone; only CT_NEW consults the affinity map (lb.h:2219).
    Two connections share backend X; X leaves; the first connection's next SYN reselects and
    rewrites the client's affinity entry, and the second's reselection must still be a fresh
    draw (on some seed it lands elsewhere), not the first one's choice read back."""
    split = []
    for seed in range(1, 16):
        first = _run(_doc([{}], seed=seed))[0].backend_pod
        assert first is not None
        rest = [p for p in ("web-0", "web-1", "web-2") if p != first]
        traces = _run(_doc([{}, {}, {"sourcePort": 40000, "setBackends": {"web": rest}},
                            {"sourcePort": 40001}], seed=seed))
        assert traces[2].backend_pod in rest and traces[3].backend_pod in rest
        if traces[2].backend_pod != traces[3].backend_pod:
            split.append(seed)
    assert split
