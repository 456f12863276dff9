"""The catalogue is complete and docs/properties.md matches it."""

from __future__ import annotations

import re

from model.faults import ModelFault
from properties.catalogue import PROPERTIES
from properties.coreprops import HOLD, VIOLATED
from tests.conftest import ROOT

REQUIRED = {"P-LB-01", "P-LB-02", "P-NAT-01", "P-NAT-02", "P-NAT-03", "P-DSR-01", "P-DSR-02",
            "P-DSR-03", "P-ETP-01", "P-HYB-01", "P-ENV-01", "P-ENV-02", "P-CT-01",
            "P-CT-02", "P-AFF-01", "P-MAG-01", "P-MAG-02"}


def test_required_properties_present_with_unique_ids() -> None:
    ids = [p.id for p in PROPERTIES]
    assert len(ids) == len(set(ids))
    assert set(ids) >= REQUIRED


def test_every_property_has_configs_expectations_and_a_fault() -> None:
    for p in PROPERTIES:
        assert p.configs, p.id
        # a fault is caught where a property holds by a counterexample; one expected to
        # fail everywhere (P-ICMP-01, P-MTU-02: limits of Cilium's) by a fault that lifts
        # the limit, so that the proof appears where the counterexample was expected
        assert p.mutants, f"{p.id}: no seeded fault"
        for _f, c in p.mutants:
            assert c in p.configs, (p.id, c.label())
        for c in p.configs:
            assert p.expect(c) in (HOLD, VIOLATED)
        assert p.method in ("bmc", "induction", "tables")


def test_every_seeded_fault_is_caught_by_some_property() -> None:
    used = {f for p in PROPERTIES for f, _ in p.mutants}
    assert used == set(ModelFault)


def test_expected_violations_are_where_the_brief_says() -> None:
    by = {p.id: p for p in PROPERTIES}
    dsr01 = {c.label(): by["P-DSR-01"].expect(c) for c in by["P-DSR-01"].configs}
    assert dsr01["snat/ipv4/remote/nodeport/tcp"] == VIOLATED
    assert dsr01["dsr/ipv4/remote/nodeport/tcp/opt"] == HOLD
    assert dsr01["snat/ipv4/local/nodeport/tcp"] == HOLD
    env1 = {c.label(): by["P-ENV-01"].expect(c) for c in by["P-ENV-01"].configs}
    assert env1["dsr/ipv4/remote/nodeport/tcp/opt/drops-ipopts"] == VIOLATED
    assert env1["dsr/ipv4/remote/nodeport/tcp/geneve/drops-ipopts"] == HOLD
    assert env1["snat/ipv4/remote/nodeport/tcp/drops-ipopts"] == HOLD
    env2 = {c.label(): by["P-ENV-02"].expect(c) for c in by["P-ENV-02"].configs}
    assert env2["dsr/ipv4/remote/nodeport/tcp/geneve/src-dst-check"] == VIOLATED
    assert env2["snat/ipv4/remote/nodeport/tcp/src-dst-check"] == HOLD
    aff = {c.label(): by["P-AFF-01"].expect(c) for c in by["P-AFF-01"].configs}
    assert aff["snat/ipv4/remote/nodeport/tcp/affinity"] == HOLD
    assert aff["snat/ipv4/remote/loadbalancer/tcp/affinity/ecmp"] == VIOLATED


def test_docs_match_the_catalogue() -> None:
    text = (ROOT / "docs" / "properties.md").read_text()
    heads = re.findall(r"^## (P-[A-Z]+-\d+) — (.+)$", text, re.M)
    assert [h[0] for h in heads] == [p.id for p in PROPERTIES]
    assert [h[1] for h in heads] == [p.title for p in PROPERTIES]
    statements = re.findall(r"^\*\*Statement\.\*\* (.+)$", text, re.M)
    assert statements == [p.statement for p in PROPERTIES]
    for p in PROPERTIES:
        for c in p.configs:
            assert f"`{c.label()}` | {p.expect(c)} |" in text, (p.id, c.label())
