"""P-AFF-01 session affinity: proved on one node, the expected ECMP counterexample, the
seeded fault, and the concrete checker's timeout accounting."""

from __future__ import annotations

from model.faults import ModelFault
from properties import decode
from properties.catalogue import BY_ID
from properties.checks import aff01
from properties.configs import Config
from properties.prove import COUNTEREXAMPLE, PROVED, check

P = BY_ID["P-AFF-01"]
AFF = Config(affinity=True)


def test_expected_results_per_configuration() -> None:
    got = {}
    for cfg in P.configs:
        r = check(P, cfg)
        assert r.ok, (cfg.label(), r.result, r.note)
        got[cfg.label()] = r.result
    assert got["snat/ipv4/remote/nodeport/tcp/affinity"] == PROVED
    assert got["dsr/ipv6/remote/nodeport/udp/opt/affinity"] == PROVED
    assert got["snat/ipv4/remote/loadbalancer/tcp/affinity/ecmp"] == COUNTEREXAMPLE


def test_seeded_fault_is_killed() -> None:
    (fault, cfg), = P.mutants
    r = check(P, cfg, frozenset({fault}))
    assert r.result == COUNTEREXAMPLE


def _vals() -> decode.ScenarioValues:
    flows = (decode.FlowDoc(client=0, sport=40000, packets=2, backend=0),
             decode.FlowDoc(client=0, sport=40001, packets=1, backend=1))
    return decode.ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"),
                                 pods=("10.0.2.10", "10.0.2.11"), clients=("203.0.113.7",),
                                 target_port=8080, node_port=30080, port=None, vip=None,
                                 other_node_port=None, flows=flows)


def test_checker_flags_a_second_backend_within_the_timeout_only() -> None:
    """Without affinity two pinned connections reach two backends: a finding when the
    service claims affinity is checked within the timeout, none past it."""
    doc = decode.document(Config(), _vals(), seed=1)
    doc["services"][0]["sessionAffinity"] = "ClientIP"
    doc["services"][0]["sessionAffinityTimeoutSeconds"] = 5
    # the pin overrides nothing under affinity: the model keeps web-0 for the second flow
    rp = decode.run_document(AFF, doc, frozenset(), "<t>")
    assert {tr.backend_pod for tr in rp.traces} == {"web-0"}
    assert aff01(rp) is None
    broken = decode.run_document(AFF, doc, frozenset({ModelFault.AFFINITY_EXPIRY_INVERTED}),
                                 "<t>")
    assert [tr.backend_pod for tr in broken.traces] == ["web-0", "web-1"]
    f = aff01(broken)
    assert f is not None and f.flow == 1 and "web-0" in f.message
    doc["flows"][1]["idle"] = 4  # first packet at last_used + 5: the entry has expired
    late = decode.run_document(AFF, doc, frozenset(), "<t>")
    assert [tr.backend_pod for tr in late.traces] == ["web-0", "web-1"]  # the pin selects
    assert aff01(late) is None
