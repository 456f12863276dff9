"""The prover: proofs, expected counterexamples, replay, drift, vacuity, unknown, the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import attrs
import pytest
import z3

from model.config import LBMode
from model.faults import ModelFault
from model.network import Action
from properties import bmc, checks, decode, induction, pktchecks, symexec, symvalues
from properties.catalogue import BY_ID
from properties.configs import Config, Placement
from properties.prove import COUNTEREXAMPLE, DRIFT, PROVED, UNKNOWN, VACUOUS, check
from tests.conftest import NODEPORT, ROOT

SNAT_REMOTE = Config()
DSR_REMOTE = Config(mode=LBMode.DSR)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NODEPORT), *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)


def test_reply_source_is_proved_for_snat_and_dsr() -> None:
    for cfg in (SNAT_REMOTE, DSR_REMOTE, attrs.evolve(SNAT_REMOTE, family="ipv6")):
        r = check(BY_ID["P-LB-01"], cfg)
        assert r.result == PROVED, (cfg.label(), r.note)
        assert r.ok and r.method == "bmc" and "BMC" in r.bound and "paths" in r.bound
        assert [q.name for q in r.queries] == ["explore"]
        assert "3 concrete witnesses agree" in r.note


def test_client_ip_lost_under_snat_is_an_expected_replayed_counterexample() -> None:
    r = check(BY_ID["P-DSR-01"], SNAT_REMOTE)
    assert r.expected == "violated" and r.result == COUNTEREXAMPLE and r.ok
    assert r.counterexample is not None and r.finding is not None
    hop = r.counterexample["hops"][r.finding.hop]
    assert hop["action"] == "receive" and hop["direction"] == "request"
    assert hop["packet"]["src"] != r.counterexample["client"]
    # the decoded scenario parses and the replay is the model's own behaviour
    assert r.scenario is not None and r.scenario["cilium"]["loadBalancer"]["mode"] == "snat"


def test_seeded_fault_gives_replayed_counterexample() -> None:
    r = check(BY_ID["P-DSR-03"], DSR_REMOTE, frozenset({ModelFault.DSR_NO_OPT_ON_SYN}))
    assert r.result == COUNTEREXAMPLE and r.counterexample is not None
    assert r.finding is not None
    bad = r.counterexample["hops"][r.finding.hop]
    assert bad["action"] == "dnat+dsr" and bad["packet"]["dsr"] is None
    assert not r.ok  # expected hold, got a counterexample


def test_replay_that_shows_nothing_is_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bmc, "replay", lambda *a, **k: None)
    r = check(BY_ID["P-DSR-01"], SNAT_REMOTE)
    assert r.result == DRIFT and not r.ok and r.counterexample is None


def test_witness_that_disagrees_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proof whose concrete witness shows a violation is never reported as proved."""
    def only_concrete(rp: checks.Replay) -> checks.Finding | None:
        port = rp.traces[0].spec.source.port
        return checks.Finding(flow=0, hop=0, message="x") if isinstance(port, int) else None

    monkeypatch.setitem(pktchecks.CHECKERS, "P-LB-01", only_concrete)
    r = check(BY_ID["P-LB-01"], SNAT_REMOTE)
    assert r.result == DRIFT and not r.ok and "witness" in r.note


def test_unreachable_premise_is_vacuous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bmc.PREMISES, "P-LB-01", lambda rp: False)
    r = check(BY_ID["P-LB-01"], attrs.evolve(SNAT_REMOTE, placement=Placement.LOCAL))
    assert r.result == VACUOUS and not r.ok


def test_solver_unknown_is_never_success(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_on_branches(self: symexec.Path, f: z3.BoolRef,
                            keep_model: bool = False) -> z3.CheckSatResult:
        return z3.unknown

    monkeypatch.setattr(symexec.Path, "_sat", unknown_on_branches)
    r = check(BY_ID["P-LB-01"], SNAT_REMOTE)
    assert r.result == UNKNOWN and not r.ok
    monkeypatch.undo()
    monkeypatch.setattr(induction.Timer, "check", lambda self, name, *f, ms: z3.unknown)
    monkeypatch.setattr(induction.Timer, "under", lambda self, name, o, *f: z3.unknown)
    for pid in ("P-NAT-02", "P-CT-01", "P-CT-02"):
        r2 = check(BY_ID[pid], BY_ID[pid].configs[0])
        assert r2.result == UNKNOWN and not r2.ok, pid


def test_induction_proves_snat_bijection_and_refutes_the_fault() -> None:
    r = check(BY_ID["P-NAT-02"], SNAT_REMOTE)
    assert r.result == PROVED and r.method == "induction"
    assert {q.name for q in r.queries} >= {"initiation", "consecution-alloc", "safety",
                                           "vacuity"}
    bad = check(BY_ID["P-NAT-02"], SNAT_REMOTE,
                frozenset({ModelFault.SNAT_IGNORE_REVERSE_ENTRY}))
    assert bad.result == COUNTEREXAMPLE and bad.counterexample is not None
    assert "induction failed" in bad.note


def test_checker_flags_hops_on_real_traces() -> None:
    vals = decode.ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"), pods=("10.0.2.10",),
                                 clients=("203.0.113.7",), target_port=8080, node_port=30080,
                                 port=None, vip=None, other_node_port=None,
                                 flows=(decode.FlowDoc(client=0, sport=40000, packets=2,
                                                       backend=0),))
    rep = decode.replay("P-LB-01", SNAT_REMOTE, vals, frozenset({ModelFault.SKIP_REVNAT_LOCAL}))
    assert rep is None  # remote backend: the local reverse DNAT is not involved
    rep = decode.replay("P-DSR-02", SNAT_REMOTE, vals, frozenset({ModelFault.SNAT_SKIPPED}))
    assert rep is not None
    hop = rep.replay.traces[0].hops[rep.finding.hop]
    assert hop.action is Action.RECEIVE and hop.reply
    assert checks.lb01(rep.replay) is not None  # the reply also has the pod's source


def test_cli_table_json_and_exit_codes() -> None:
    res = _run("prove", "--property", "P-HYB-01", "--family", "ipv4", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    rows = doc["results"]
    assert rows and {r["id"] for r in rows} == {"P-HYB-01"}
    for r in rows:
        assert set(r) >= {"id", "mode", "family", "config", "expected", "result", "method",
                          "bound", "seconds", "counterexample"}
        assert r["family"] == "ipv4" and r["result"] == "proved"
    res = _run("prove", "--property", "P-DSR-01", "--mode", "snat", "--family", "ipv4")
    assert res.returncode == 0
    assert "counterexample (expected)" in res.stdout and "<== violation" in res.stdout
    assert _run("prove", "--property", "P-NOPE").returncode == 2
    assert "unknown property" in _run("prove", "--property", "P-NOPE").stderr
    assert _run("prove", "--timeout", "-1").returncode == 2


def test_mutants_are_all_killed() -> None:
    res = _run("prove", "--mutants", "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    rows = json.loads(res.stdout)["results"]
    assert {f for r in rows for f in r["faults"]} == {f.name for f in ModelFault}
    for r in rows:
        if r["expected"] == "violated":  # a fault that lifts one of Cilium's limits
            assert r["result"] == "proved", r
            continue
        assert r["result"] == "counterexample" and r["counterexample"] is not None, r
        if r["id"] == "P-MAG-02":  # its counterexample is a Maglev table, not a trace
            assert r["counterexample"]["maglev"]["share"] > 0.06, r
            continue
        assert 1 <= r["violating_hop"] <= len(r["counterexample"]["hops"])  # 1-based legs


def test_diagrams_drawn_for_counterexamples(tmp_path: Path) -> None:
    res = _run("prove", "--property", "P-DSR-01", "--mode", "snat", "--family", "ipv4",
               "--diagrams", str(tmp_path))
    assert res.returncode == 0, res.stderr
    svgs = list(tmp_path.glob("P-DSR-01-*.svg"))
    assert [p.name for p in svgs] == ["P-DSR-01-snat-ipv4-remote-nodeport-tcp.svg"]
    assert "<svg" in svgs[0].read_text()


def test_a_path_solver_is_refused_once_the_explorer_moved_on() -> None:
    """Outcome.check runs on the explorer's shared solver: after the explorer resumes it
    holds another path, so using it then is an error, not a wrong answer."""
    x = symvalues.Input(name="x", lo=0, hi=3)
    ex = symexec.Explorer()
    paths = ex.run(lambda: bool(x.var < 2), (x,))
    first = next(paths)
    assert first.check(x.var.e == 0) == (z3.sat if first.value else z3.unsat)
    second = next(paths)
    assert second.check() == z3.sat
    with pytest.raises(symvalues.SymbolicMisuse):
        first.check()
