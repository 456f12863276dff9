"""Differential testing: the reference datapath agrees with the model; faults are caught."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import yaml

from datapath.adapter import Datapath, reference_factory
from datapath.config import NodeConfig
from datapath.diffgen import (
    difftest,
    drain_program,
    format_failure,
    format_kill_table,
    kill_table,
    run_program,
)
from datapath.difftest import Counters, Declared, DiffRun, PortRenaming
from datapath.diffwalk import Obs
from model.config import CiliumVersion
from model.scenario import load, parse
from model.values import Endpoint, Packet, Proto, TcpFlags
from tests.conftest import EXAMPLES

EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if "misconfig" not in p.name)


def test_short_run_agrees() -> None:
    s = difftest(32, 0, reference_factory)
    assert s.failure is None, format_failure(s.failure)
    assert s.programs >= 32
    assert s.steps > 0 and s.observations > s.steps
    assert "model and datapath agree" in s.line()


def test_the_progress_total_counts_the_explicit_programs() -> None:
    """The progress bar's total is what an agreeing run executes: the generated budget
    plus each configuration's explicit programs (drain, exhaustion, eviction), so nothing
    beyond it is mislabelled as shrinking."""
    from datapath.diffgen import planned

    s = difftest(32, 0, reference_factory, shrink=False)
    assert s.failure is None
    assert s.programs == planned(32, factory=reference_factory)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_examples_agree(path: Path) -> None:
    sc = load(path)
    world = sc.world  # 1.18 and 1.20 as written; the reference datapath has no 1.13 rules
    if world.cfg.version is CiliumVersion.V1_13:
        world = attrs.evolve(world, cfg=attrs.evolve(world.cfg, version=CiliumVersion.V1_20))
    run = DiffRun(world, reference_factory)
    assert run.run(sc.flows) is None
    assert run.counters.observations > 0


def test_seeded_fault_is_found_and_shrunk() -> None:
    s = difftest(48, 1, reference_factory, frozenset({"snat_keep_port_out_of_range"}))
    assert s.failure is not None
    text = format_failure(s.failure)
    assert "minimal failing scenario" in text and "first divergence" in text
    assert "| " in text  # side by side
    doc = yaml.safe_load(text.split("# --- first divergence")[0])
    assert doc == s.failure.doc
    parse(doc)  # a loadable scenario
    assert len(doc["flows"]) == 1 and doc["flows"][0]["packets"] == 1  # shrunk
    assert run_program(doc, reference_factory, frozenset({"snat_keep_port_out_of_range"}),
                       Counters()) is not None
    assert run_program(doc, reference_factory, frozenset(), Counters()) is None


def test_every_fault_killed_by_difftest_or_vectors() -> None:
    rows = kill_table(64, 0, reference_factory)
    assert len(rows) >= 15
    table = format_kill_table(rows)
    assert [n for n, d, v in rows if not d and not v] == [], table
    assert sum(1 for _n, d, _v in rows if d) >= 15, table


def _pkt(src: Endpoint, dst: Endpoint) -> Packet:
    return Packet(src=src, dst=dst, proto=Proto.TCP, flags=TcpFlags.SYN)


def test_port_renaming_is_a_bijection() -> None:
    from ipaddress import ip_address
    node, b, c = ip_address("192.168.2.3"), ip_address("10.0.2.10"), ip_address("203.0.113.7")
    ren = PortRenaming([node], 32768, 65535)
    be = Endpoint(addr=b, port=8080)
    # random allocations (client port 1024 not kept): learned on first sight
    d = ren.apply(_pkt(Endpoint(addr=node, port=40001), be),
                  _pkt(Endpoint(addr=node, port=50000), be), client_port=1024)
    assert d is not None and d.src.port == 50000
    # enforced afterwards, both ways
    d = ren.apply(_pkt(be, Endpoint(addr=node, port=40001)), None, client_port=1024)
    assert d is not None and d.dst.port == 50000
    d = ren.apply(_pkt(Endpoint(addr=node, port=40002), be),
                  _pkt(Endpoint(addr=node, port=50000), be), client_port=1024)
    assert d is not None and d.src.port == 40002  # 50000 is taken: no second preimage
    # a kept client port must be kept by both
    d = ren.apply(_pkt(Endpoint(addr=node, port=45000), be),
                  _pkt(Endpoint(addr=node, port=40000), be), client_port=40000)
    assert d is not None and d.src.port == 45000
    # other addresses are never renamed
    d = ren.apply(_pkt(Endpoint(addr=c, port=40003), be),
                  _pkt(Endpoint(addr=c, port=50001), be), client_port=1)
    assert d is not None and d.src.port == 40003


def test_program_with_backend_changes_agrees_and_reprograms_both_sides() -> None:
    from datapath.diffgen import COMBOS, drain_program

    for combo in (COMBOS[0], COMBOS[-1]):
        doc = drain_program(combo)
        sc = parse(doc)
        run = DiffRun(sc.world, reference_factory)
        assert run.run(sc.flows) is None, combo
        assert any("setBackends" in line for line in run.dtrace)
        # pod0 drained, then came back under its old, stable ID
        assert run.agent.backend_id("web", "pod0") == 1
        assert set(run.state.nodes["node1"].lb.backends) == {1, 2}


def test_fault_only_visible_after_a_backend_change_is_caught() -> None:
    from datapath.diffgen import COMBOS, drain_program

    doc = drain_program(COMBOS[0])
    fault = frozenset({"terminating_backend_kept_for_syn"})
    div = run_program(doc, reference_factory, fault, Counters())
    assert div is not None and div.step.startswith("reopen: request 1")
    static = dict(doc, flows=[dict(f, sourcePort=40000 + i) for i, f in enumerate(
        [x for x in doc["flows"] if "setBackends" not in x])])
    assert run_program(static, reference_factory, fault, Counters()) is None


def test_shards_partition_the_campaign() -> None:
    """--shard I/N: deterministic units; the N shards together are the unsharded run, and
    --jobs runs the same units in worker processes with the same totals."""
    from datapath.diffgen import parse_shard, plan

    whole = difftest(40, 3, reference_factory)
    parts = [difftest(40, 3, reference_factory, shard=(i, 3)) for i in range(3)]
    assert sorted(u for p in parts for u in p.units) == list(whole.units)
    assert len(whole.units) == len(plan(40, 3))
    assert sum(p.programs for p in parts) == whole.programs
    assert sum(p.steps for p in parts) == whole.steps
    assert sum(p.observations for p in parts) == whole.observations
    par = difftest(40, 3, reference_factory, jobs=2)
    assert (par.programs, par.steps, par.observations) == (
        whole.programs, whole.steps, whole.observations)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def _vni_zero(m: Obs, d: Obs) -> bool:
    """The datapath's Geneve header says VNI 0 where the model's says WORLD_ID; nothing else."""
    mp, dp = m.packet, d.packet
    if mp is None or dp is None or mp.outer is None or dp.outer is None or dp.outer.vni:
        return False
    same = attrs.evolve(dp, outer=attrs.evolve(dp.outer, vni=mp.outer.vni))
    return attrs.evolve(d, packet=same) == m


def test_a_declared_difference_is_counted_and_nothing_else_is_forgiven() -> None:
    """A datapath may declare a difference with its source line (`declared` on the factory):
    the campaign counts it and goes on; undeclared, the same program diverges."""
    doc = drain_program(("ipv4", "dsr", "geneve", "native"))
    fault = frozenset({"geneve_wrong_vni"})
    assert run_program(doc, reference_factory, fault, Counters()) is not None

    class Declaring:
        declared = (Declared(name="vni-zero", cite="test: geneve_wrong_vni", match=_vni_zero),)

        def __call__(self, config: NodeConfig, faults: frozenset[str]) -> Datapath:
            return reference_factory(config, faults)

    c = Counters()
    assert run_program(doc, Declaring(), fault, c) is None
    assert c.declared.get("vni-zero", 0) > 0
    other = frozenset({"geneve_wrong_vni", "geneve_opt_every_tcp"})
    assert run_program(doc, Declaring(), other, Counters()) is not None


def test_programs_follow_the_datapaths_release() -> None:
    """A 1.18 tree's factory gets 1.18 programs (the model follows 1.18); anything else 1.20."""
    from datapath.diffgen import program_version

    class Tree:
        def __init__(self, v: str) -> None:
            self.cilium_version = v

    assert program_version(Tree("1.18.0-dev")) == "1.18"
    assert program_version(Tree("1.20.0-dev")) == "1.20"
    assert program_version(Tree("1.13.4")) == "1.20"  # no generator profile: the reference's
    assert program_version(reference_factory) == "1.20"
    doc = drain_program(("ipv4", "snat", "opt", "native"), "1.18")
    assert doc["cilium"]["version"] == "1.18"
    assert parse(doc, "<t>").world.cfg.version is CiliumVersion.V1_18
    from datapath.diffgen import COMBOS, combos, plan

    assert combos("1.18") and all(c[0] == "ipv4" for c in combos("1.18"))
    assert combos("1.20")[:len(COMBOS)] == COMBOS  # then the IPIP ones (docs/ipip.md)
    assert {u.combo for u in plan(16, 0, "1.18")} == set(range(len(combos("1.18"))))
