"""P-CT-02 graceful termination: the induction, its seeded fault, and the concrete checker."""

from __future__ import annotations

import attrs
import pytest

from model.config import LBMode
from model.faults import ModelFault
from model.network import Action, AgentBackends
from model.topology import Service
from model.values import Proto
from properties import decode
from properties.catalogue import BY_ID
from properties.configs import Config
from properties.ctinduction import agent_counterexample
from properties.prove import COUNTEREXAMPLE, PROVED, check

SNAT = Config()
FAULT = frozenset({ModelFault.TERMINATING_BACKEND_TAKES_SYN})


def _vals(resume: bool, packets: int) -> decode.ScenarioValues:
    """A connection opens on web-0; then web-0 is dropped as terminating for web-1."""
    opened = decode.FlowDoc(client=0, sport=40000, packets=1, backend=0)
    later = decode.FlowDoc(client=0, sport=40000, packets=packets, backend=None,
                           resume=resume, set_backends=(1,), terminating=(0,))
    return decode.ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"),
                                 pods=("10.0.2.10", "10.0.2.11"), clients=("203.0.113.7",),
                                 target_port=8080, node_port=30080, port=None, vip=None,
                                 other_node_port=None, flows=(opened, later))


def test_graceful_termination_is_proved_by_induction_with_vacuity_checks() -> None:
    p = BY_ID["P-CT-02"]
    assert {c.mode for c in p.configs} >= {LBMode.SNAT, LBMode.DSR}
    assert {c.family for c in p.configs} == {"ipv4", "ipv6"}
    for cfg in p.configs:
        r = check(p, cfg)
        assert r.result == PROVED and r.ok and r.method == "induction", (cfg.label(), r.note)
        names = {q.name for q in r.queries}
        assert {"initiation", "vacuity", "agent-endpoint-changes"} <= names
        # every TCP packet kind ran through model.lbselect.lb_select
        assert {f"consecution-{k}" for k in ("syn", "syn-ack", "ack", "fin", "rst")} <= names


def test_agent_bookkeeping_check_sees_a_broken_endpoint_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = AgentBackends.apply

    def keeps_terminating_in_slots(self: AgentBackends, svc: Service, pods: tuple[str, ...],
                                   terminating: tuple[str, ...]) -> AgentBackends:
        out = real(self, svc, pods, terminating)
        held = {b for ids in out.live.values() for b in ids}
        if not held:
            return out
        return attrs.evolve(out, draining={**out.draining, svc.name: frozenset(held)})

    assert agent_counterexample(Proto.TCP) is None
    monkeypatch.setattr(AgentBackends, "apply", keeps_terminating_in_slots)
    assert "slotted and terminating" in (agent_counterexample(Proto.TCP) or "")


def test_fault_is_refuted_with_a_replayed_endpoint_change() -> None:
    for cfg in (SNAT, Config(mode=LBMode.DSR, family="ipv6")):
        r = check(BY_ID["P-CT-02"], cfg, FAULT)
        assert r.result == COUNTEREXAMPLE and not r.ok and "induction failed" in r.note
        assert r.scenario is not None and r.counterexample is not None
        assert r.finding is not None and "SYN reached terminating" in r.finding.message
        first, second = r.scenario["flows"]
        assert "backend" in first and "setBackends" not in first
        assert second["terminating"] == [first["backend"]]
        assert first["backend"] not in second["setBackends"]["web"]
        hop = r.counterexample["hops"][r.finding.hop]
        assert hop["action"] == "receive" and hop["direction"] == "request"


def test_checker_sees_drain_and_new_connections_on_concrete_traces() -> None:
    # the fault-free model: the resumed connection drains, the SYN moves to web-1
    assert decode.replay("P-CT-02", SNAT, _vals(True, 2), frozenset()) is None
    assert decode.replay("P-CT-02", SNAT, _vals(False, 1), frozenset()) is None
    # a SYN kept on the terminating backend
    rep = decode.replay("P-CT-02", SNAT, _vals(False, 1), FAULT)
    assert rep is not None and rep.finding.flow == 1
    assert rep.replay.traces[1].backend_pod == "web-0"
    # a resumed connection that reselects (CT_SERVICE ignored) leaves its draining backend
    rep = decode.replay("P-CT-02", SNAT, _vals(True, 2),
                        frozenset({ModelFault.LB_IGNORES_CT_SERVICE}))
    assert rep is not None and "left its terminating backend web-0" in rep.finding.message
    assert rep.replay.traces[1].hops[rep.finding.hop].action is Action.RECEIVE
    # the decoded document carries the endpoint change in scenario-format keys
    doc = decode.document(attrs.evolve(SNAT), _vals(True, 2), 1)
    assert doc["flows"][1]["resume"] is True
    assert doc["flows"][1]["setBackends"] == {"web": ["web-1"]}
    assert doc["flows"][1]["terminating"] == ["web-0"]
