"""Endpoint changes (scale up, pod deletion, terminating pods) as the agent reprograms them."""

from __future__ import annotations

from typing import Any

import attrs

from model.flows import FlowSpec, request, run_flows
from model.network import EndKind, reprogram, walk
from model.scenario import parse
from model.values import Proto, TcpFlags


def _doc(**flow: Any) -> dict[str, Any]:
    return {
        "cilium": {"loadBalancer": {"mode": "snat"}, "seed": 3},
        "nodes": [{"name": "node1", "ip": "192.168.2.3"}, {"name": "node2", "ip": "192.168.2.4"}],
        "pods": [{"name": "web-0", "node": "node2", "ip": "10.0.2.10"},
                 {"name": "web-1", "node": "node2", "ip": "10.0.2.11"}],
        "services": [{"name": "web", "type": "NodePort", "port": 80, "targetPort": 8080,
                      "nodePort": 30080, "backends": ["web-0"]}],
        "clients": [{"name": "client", "ip": "203.0.113.7"}],
        "flows": [{"name": "f", "client": "client", "sourcePort": 40000,
                   "to": {"node": "node1", "service": "web"}, "packets": 2, **flow}],
    }


def _ack(spec: FlowSpec) -> Any:
    return attrs.evolve(request(spec, 1), flags=TcpFlags.ACK)


def test_scale_up_allocates_the_next_backend_id_and_keeps_old_ids() -> None:
    sc = parse(_doc())
    state, _ = run_flows(sc.world, sc.flows)
    before = dict(state.nodes["node1"].lb.backends)
    after = reprogram(sc.world, state, "web", ("web-0", "web-1"))
    lb = after.nodes["node1"].lb
    assert {k: v for k, v in lb.backends.items() if k in before} == before
    new = set(lb.backends) - set(before)
    assert new == {max(before) + 1}
    svc = next(iter(lb.services.values()))
    assert set(svc.backend_slots) == set(lb.backends)


def test_terminating_backend_drains_existing_flow_but_not_new_syns() -> None:
    sc = parse(_doc())
    state, traces = run_flows(sc.world, sc.flows)
    assert traces[0].backend_pod == "web-0"
    state = reprogram(sc.world, state, "web", ("web-1",), terminating=("web-0",))
    lb = state.nodes["node1"].lb
    assert any(ep.addr == sc.world.cluster.pod("web-0").ip for ep in lb.backends.values())
    spec = sc.flows[0]
    w = walk(sc.world, state, ("client", "client"), _ack(spec), reply=False, via="node1")
    assert w.end is EndKind.POD and w.at == "web-0"  # an established flow drains
    syn = request(spec, 0)
    w = walk(sc.world, w.state, ("client", "client"), syn, reply=False, via="node1")
    assert w.end is EndKind.POD and w.at == "web-1"  # a new SYN never picks it


def test_deleted_backend_is_gone_and_the_flow_moves() -> None:
    sc = parse(_doc())
    state, _ = run_flows(sc.world, sc.flows)
    state = reprogram(sc.world, state, "web", ("web-1",))
    lb = state.nodes["node1"].lb
    assert all(ep.addr != sc.world.cluster.pod("web-0").ip for ep in lb.backends.values())
    w = walk(sc.world, state, ("client", "client"), _ack(sc.flows[0]), reply=False,
             via="node1")
    assert w.end is EndKind.POD and w.at == "web-1"


def test_scenario_set_backends_and_terminating_keys() -> None:
    sc = parse(_doc(setBackends={"web": ["web-1"]}, terminating=["web-0"]))
    spec = sc.flows[0]
    assert spec.set_backends == (("web", ("web-1",)),) and spec.terminating == ("web-0",)
    _, traces = run_flows(sc.world, sc.flows)
    assert traces[0].backend_pod == "web-1" and traces[0].delivered
    assert spec.proto is Proto.TCP


def test_scenario_rejects_unknown_service_and_pod_in_set_backends() -> None:
    import pytest

    from model.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"flows\[0\]\.setBackends\.nope"):
        parse(_doc(setBackends={"nope": ["web-1"]}))
    with pytest.raises(ScenarioError, match=r"flows\[0\]\.setBackends\.web\[0\].*unknown pod"):
        parse(_doc(setBackends={"web": ["ghost"]}))
    with pytest.raises(ScenarioError, match=r"flows\[0\]\.backend"):
        parse(_doc(setBackends={"web": ["web-1"]}, backend="web-0"))


def test_resumed_connection_drains_to_its_terminating_backend() -> None:
    doc = _doc()
    doc["flows"].append({"name": "drain", "client": "client", "sourcePort": 40000,
                         "to": {"node": "node1", "service": "web"}, "packets": 2,
                         "resume": True, "setBackends": {"web": ["web-1"]},
                         "terminating": ["web-0"]})
    doc["flows"].append({"name": "new", "client": "client", "sourcePort": 40001,
                         "to": {"node": "node1", "service": "web"}, "packets": 1})
    sc = parse(doc)
    _, traces = run_flows(sc.world, sc.flows)
    drain, new = traces[1], traces[2]
    assert drain.delivered and drain.backend_pod == "web-0"
    assert [p.flags for p in drain.backend_saw] == [TcpFlags.ACK, TcpFlags.ACK]
    assert new.delivered and new.backend_pod == "web-1"
