"""P-FRAG-01 fragments: proved where the first fragment comes first and the version tracks
the family, the expected drops (not found, no tracking, v1.18 IPv6), the seeded fault, and
the checker on a split datagram."""

from __future__ import annotations

from model.faults import ModelFault
from properties import decode
from properties.catalogue import BY_ID
from properties.configs import Config
from properties.pktchecks import frag01
from properties.prove import COUNTEREXAMPLE, PROVED, check

P = BY_ID["P-FRAG-01"]


def test_expected_results_per_configuration() -> None:
    got = {}
    for cfg in P.configs:
        r = check(P, cfg)
        assert r.ok, (cfg.label(), r.result, r.note)
        got[cfg.label()] = r.result
    assert got["snat/ipv4/remote/nodeport/udp/v1.20/frag-in-order"] == PROVED
    assert got["dsr/ipv6/remote/nodeport/udp/opt/v1.20/frag-first-last"] == PROVED
    assert got["snat/ipv4/remote/nodeport/udp/v1.20/frag-reversed"] == COUNTEREXAMPLE
    assert got["dsr/ipv6/remote/nodeport/udp/opt/frag-in-order"] == COUNTEREXAMPLE


def test_seeded_fault_is_killed() -> None:
    (fault, cfg), = P.mutants
    assert check(P, cfg, frozenset({fault})).result == COUNTEREXAMPLE


def _doc(cfg: Config, order: str) -> dict[str, object]:
    flows = (decode.FlowDoc(client=0, sport=40000, packets=2, backend=1, fragments=3,
                            fragment_order=order),)
    v = decode.ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"),
                              pods=("10.0.2.10", "10.0.2.11"), clients=("203.0.113.7",),
                              target_port=8080, node_port=30080, port=None, vip=None,
                              other_node_port=None, flows=flows)
    return decode.document(cfg, v, seed=1)


def test_checker_on_whole_and_broken_datagrams() -> None:
    """In order, both datagrams' three fragments reach web-1 from the node's address; the
    fault leaves the later fragments without ports (dropped), reversed order too."""
    cfg = Config(proto=P.configs[0].proto, version=P.configs[0].version, frag_order="in-order")
    rp = decode.run_document(cfg, _doc(cfg, "in-order"), frozenset(), "<t>")
    (tr,) = rp.traces
    assert tr.delivered and [len(d) for d in tr.datagrams] == [3, 3]
    assert {at for d in tr.datagrams for _, at in d} == {"web-1"}
    assert {p.src.addr for p in tr.backend_saw} == {rp.world.cluster.nodes[0].ip}
    assert frag01(rp) is None
    bad = decode.run_document(cfg, _doc(cfg, "in-order"),
                              frozenset({ModelFault.FRAG_FIRST_NOT_RECORDED}), "<t>")
    f = frag01(bad)
    assert f is not None and "DROP_FRAG_NOT_FOUND" in f.message
    rev = decode.run_document(cfg, _doc(cfg, "reversed"), frozenset(), "<t>")
    assert rev.traces[0].backend_saw == () and frag01(rev) is not None
