"""P-MAG-01 and P-MAG-02: expected results per configuration, the seeded faults killed, the
symbolic lookup's premise, and the measured disruption bound."""

from __future__ import annotations

from model.faults import ModelFault
from properties.catalogue import BY_ID
from properties.coreprops import HOLD, VIOLATED
from properties.maglevtables import BOUND, worst_share
from properties.prove import COUNTEREXAMPLE, PROVED, check

MAG1, MAG2 = BY_ID["P-MAG-01"], BY_ID["P-MAG-02"]


def test_mag01_expected_results() -> None:
    got = {}
    for cfg in MAG1.configs:
        r = check(MAG1, cfg)
        assert r.ok, (cfg.label(), r.result, r.note)
        got[cfg.label()] = r.result
    assert got["snat/ipv4/remote/loadbalancer/tcp/ecmp/maglev"] == PROVED
    assert got["dsr/ipv6/remote/loadbalancer/udp/opt/v1.20/affinity/ecmp/maglev"] == PROVED
    assert got["snat/ipv4/remote/loadbalancer/tcp/ecmp"] == COUNTEREXAMPLE
    assert [MAG1.expect(c) for c in MAG1.configs] == [HOLD, HOLD, VIOLATED]


def test_mag01_proof_is_not_vacuous() -> None:
    """The proof's witnesses are concrete runs where the flow reached a backend twice."""
    r = check(MAG1, MAG1.configs[0])
    assert r.result == PROVED and "witnesses agree" in r.note


def test_mag01_node_seed_fault_killed() -> None:
    (fault, cfg), = MAG1.mutants
    assert fault is ModelFault.MAGLEV_NODE_SEED
    r = check(MAG1, cfg, frozenset({fault}))
    assert r.result == COUNTEREXAMPLE and r.scenario is not None
    assert r.finding is not None and "entering by" in r.finding.message


def test_mag02_holds_and_skip_fault_breaks_it() -> None:
    for cfg in MAG2.configs:
        r = check(MAG2, cfg)
        assert r.ok and r.result == PROVED, r.note
    (fault, cfg), = MAG2.mutants
    r = check(MAG2, cfg, frozenset({fault}))
    assert r.result == COUNTEREXAMPLE and r.counterexample is not None
    assert r.counterexample["maglev"]["share"] > 0.2


def test_mag02_measured_shares() -> None:
    share, _m, _n, _gone, compared = worst_share(False)
    assert 0.02 < share <= BOUND and compared > 100000
    v6 = worst_share(True)[0]
    assert 0.04 < v6 <= BOUND
    # below pkg/maglev's sizing advice the bound does not hold: the statement says so
    small = worst_share(False, sizes=(251,), counts=(9,), per_backend=1)
    assert small[0] > 0.10


def test_replay_seeds_vary_every_maglev_seed() -> None:
    """Each replay seed is another cluster-wide Maglev seed for both families (a fault's
    counterexample is concretised by trying seeds, as for prandom)."""
    from model.maglev import seeds
    from properties import decode
    from properties.symworld import cell

    cfg = MAG1.configs[0]
    vals = cell(cfg, MAG1.bounds).values({p.name: 40000 for p in cell(cfg, MAG1.bounds).ports},
                                          None)
    got = [seeds(decode.document(cfg, vals, s)["cilium"]["maglev"]["hashSeed"])
           for s in (1, 2, 3)]
    for part in range(3):
        assert len({g[part] for g in got}) == 3, got
