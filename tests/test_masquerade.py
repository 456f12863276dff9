"""BPF masquerading of pod egress (bpf.masquerade): the model, its scenario form, the
reference datapath against it, and P-NAT-04's catalogue entry and fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from datapath.adapter import reference_factory
from datapath.difftest import DiffRun
from model.conntrack import gc
from model.faults import ModelFault
from model.flows import run_flows
from model.hooks import Step
from model.maps import TupleFlags
from model.scenario import load, parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pod-egress-masquerade.yaml"


def _doc(masquerade: bool = True, masq_ip: str | None = None) -> dict[str, Any]:
    node1: dict[str, Any] = {"name": "node1", "ip": "192.168.2.3"}
    if masq_ip:
        node1["masqueradeIP"] = masq_ip
    return {
        "cilium": {"version": "1.20", "bpf": {"masquerade": masquerade},
                   "nodePort": {"range": "30000-65531"}, "seed": 1},
        "nodes": [node1, {"name": "node2", "ip": "192.168.2.4"}],
        "pods": [{"name": "a", "node": "node1", "ip": "10.0.1.20"},
                 {"name": "b", "node": "node1", "ip": "10.0.1.21"}],
        "services": [], "clients": [{"name": "server", "ip": "198.51.100.10"}],
        "flows": [{"name": f"e{i}", "client": pod, "sourcePort": 65533, "packets": 2,
                   "to": {"address": "198.51.100.10", "port": 443}}
                  for i, pod in enumerate(("a", "b"))]}


def test_two_pods_on_one_port_get_two_nat_ports_and_their_own_replies() -> None:
    sc = parse(_doc())
    state, traces = run_flows(sc.world, sc.flows)
    masq = [h.packet.src for t in traces for h in t.hops if h.action is Step.MASQ]
    assert {str(e.addr) for e in masq} == {"192.168.2.3"}
    assert len({e.port for e in masq}) == 2 and all(e.port >= 65532 for e in masq)
    assert masq[0].port == 65533  # the first keeps its in-range port (__snat_try_keep_port)
    for t in traces:
        assert t.delivered and {p.dst for p in t.client_saw} == {t.spec.source}
    snat = state.nodes["node1"].snat.entries
    assert sum(1 for k in snat if k.flags is TupleFlags.IN) == 2


def test_masquerade_address_and_switch() -> None:
    sc = parse(_doc(masq_ip="192.168.2.100"))
    _, traces = run_flows(sc.world, sc.flows)
    assert {str(h.packet.src.addr) for t in traces for h in t.hops
            if h.action is Step.MASQ} == {"192.168.2.100"}
    assert all(t.delivered for t in traces)
    off = parse(_doc(masquerade=False))
    _, traces = run_flows(off.world, off.flows)
    assert not any(h.action is Step.MASQ for t in traces for h in t.hops)
    assert traces[0].backend_saw[0].src.addr == off.world.cluster.pod("a").ip


def test_gc_keeps_a_live_masquerade_pair_and_purges_it_after_expiry() -> None:
    """bpf_lxc's CT entry (the model's masquerade creates it) keeps the pair from the
    agent's orphan-NAT purge while the connection lives."""
    sc = parse(_doc())
    state, _ = run_flows(sc.world, sc.flows[:1])
    st = state.nodes["node1"]
    assert len(gc(st, state.now + 1).snat.entries) == 2
    assert not gc(st, state.now + 100000).snat.entries


def test_the_fault_overwrites_the_first_pods_reverse_entry() -> None:
    """With put for put_noexist the second pod takes the first one's reverse entry, and the
    first pod's next reply goes to the second pod."""
    doc = _doc()
    doc["flows"].append({"name": "a-again", "client": "a", "sourcePort": 65533, "packets": 1,
                         "resume": True, "to": {"address": "198.51.100.10", "port": 443}})
    sc = parse(doc)
    _, traces = run_flows(sc.world, sc.flows)
    assert traces[2].client_saw[0].dst == traces[2].spec.source
    world = attrs.evolve(sc.world, faults=frozenset({ModelFault.MASQ_IGNORES_REVERSE_ENTRY}))
    _, traces = run_flows(world, sc.flows)
    assert traces[2].client_saw[0].dst == traces[1].spec.source  # pod b gets a's reply


def test_example_agrees_with_the_reference_datapath() -> None:
    sc = load(EXAMPLE)
    assert DiffRun(sc.world, reference_factory).run(sc.flows) is None


def test_p_nat_04_in_the_catalogue() -> None:
    from properties.catalogue import BY_ID

    p = BY_ID["P-NAT-04"]
    assert p.method == "induction" and p.mutants
    assert all(c.masquerade for c in p.configs)
    assert [f for f, _ in p.mutants] == [ModelFault.MASQ_IGNORES_REVERSE_ENTRY]


def test_masquerade_exhaustion_drops_at_the_pods_node() -> None:
    """One SNAT port (nodePort.range 30000-65534): the pod's second connection to the same
    server finds it taken 32 times and is dropped at to-netdev (DROP_NAT_NO_MAPPING)."""
    doc = _doc()
    doc["cilium"]["nodePort"] = {"range": "30000-65534"}
    doc["flows"][1].update(client="a", sourcePort=40001)
    sc = parse(doc)
    _, traces = run_flows(sc.world, sc.flows)
    assert traces[0].delivered and not traces[1].delivered
    assert traces[1].drop is not None and traces[1].drop[0] == "node1"
    assert traces[1].drop[1].name == "DROP_NAT_NO_MAPPING"
    assert not traces[1].backend_saw
