"""P-XDP-01 XDP acceleration: proved in every catalogued cell, the seeded fault killed, the
twin run repeats the first run's random draws, and the concrete checker sees a difference."""

from __future__ import annotations

import attrs

from model.faults import ModelFault
from model.hooks import Hook
from properties import decode
from properties.catalogue import BY_ID, XDP_CONFIGS
from properties.configs import Config, Placement
from properties.pktchecks import xdp01, xdp_ran
from properties.prove import COUNTEREXAMPLE, PROVED, check
from properties.symworld import Bounds

P = BY_ID["P-XDP-01"]


def test_expected_results_per_configuration() -> None:
    for cfg in P.configs:
        r = check(P, cfg)
        assert r.ok and r.result == PROVED, (cfg.label(), r.result, r.note)


def test_seeded_fault_is_killed() -> None:
    (fault, cfg), = P.mutants
    assert fault is ModelFault.XDP_ETP_LOCAL_SKIPS_TC
    assert check(P, cfg, frozenset({fault})).result == COUNTEREXAMPLE


def test_twin_repeats_the_draws_with_two_backends() -> None:
    """Two backends: the backend is a random draw; the run without XDP must draw the same
    one on each path, or the proof would find a different backend."""
    prop = attrs.evolve(P, bounds=Bounds(packets=1, backends=2), pin_backend=False)
    r = check(prop, XDP_CONFIGS[0])
    assert r.result == PROVED, r.note


def _vals(local: bool) -> decode.ScenarioValues:
    pod = "10.0.1.10" if local else "10.0.2.10"
    return decode.ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"), pods=(pod,),
                                 clients=("203.0.113.7",), target_port=8080, node_port=30080,
                                 port=None, vip=None, other_node_port=None,
                                 flows=(decode.FlowDoc(client=0, sport=40000, packets=2,
                                                       backend=0),))


def test_concrete_checker_on_the_punt() -> None:
    cfg = XDP_CONFIGS[4]
    assert cfg.placement is Placement.LOCAL
    doc = decode.document(cfg, _vals(True), seed=1)
    assert doc["cilium"]["loadBalancer"]["acceleration"] == "native"
    rp = decode.run_document(cfg, doc, frozenset(), "<t>")
    hooks = [h.hook for h in rp.traces[0].hops]
    assert hooks[:3] == [None, Hook.XDP, Hook.FROM_NETDEV] and xdp_ran(rp)
    assert xdp01(rp) is None and rp.traces[0].delivered
    bad = decode.run_document(cfg, doc, frozenset({ModelFault.XDP_ETP_LOCAL_SKIPS_TC}), "<t>")
    f = xdp01(bad)
    assert f is not None and "PUNT_TO_STACK" in f.message and "without delivered" in f.message


def test_checker_is_silent_without_acceleration() -> None:
    doc = decode.document(Config(), _vals(False), seed=1)
    rp = decode.run_document(Config(), doc, frozenset(), "<t>")
    assert not xdp_ran(rp) and xdp01(rp) is None
