"""DSR and the MTU: PMTU discovery's frag-needed / packet-too-big, the oversized request
without it, the IPv4 option with no room, on the model, bytes, P-MTU-01/02 and difftest."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs
import pytest

from datapath.programs import COMBOS
from model.drops import DropReason
from model.errors import InputError
from model.faults import ModelFault
from model.flows import FlowTrace, run_flows, trace_json
from model.scenario import parse
from model.values import Endpoint, FlowKey, IcmpKind, Proto
from properties.bmc import check_cell
from properties.catalogue import BY_ID
from properties.coreprops import HOLD, VIOLATED
from properties.prove import COUNTEREXAMPLE, PROVED
from tests.conftest import ADDRS, NODE_PORT, TARGET_PORT, build_doc


def _doc(pmtu: bool = True, size: int | None = 1500, **kw: Any) -> dict[str, Any]:
    kw.setdefault("mode", "dsr")
    doc = build_doc(packets=1, **kw)
    if pmtu:
        doc["cilium"]["pmtuDiscovery"] = {"enabled": True}
    if size is not None:
        doc["flows"][0]["size"] = size
    return doc


def _run(doc: dict[str, Any], faults: frozenset[ModelFault] = frozenset()) -> FlowTrace:
    sc = parse(doc, "<mtu>")
    _, traces = run_flows(attrs.evolve(sc.world, faults=faults), sc.flows)
    return traces[0]


def _client_got(tr: FlowTrace) -> list[Any]:
    return [h.packet for h in tr.hops if h.at == "client" and h.reply]


@pytest.mark.parametrize(("family", "proto", "dispatch", "routing", "tunnel", "mtu"), [
    ("ipv4", "TCP", "opt", "native", "vxlan", 1492),
    ("ipv4", "UDP", "opt", "native", "vxlan", 1492),
    ("ipv6", "TCP", "opt", "native", "vxlan", 1476),
    ("ipv4", "TCP", "geneve", "tunnel", "geneve", 1438),
    ("ipv6", "UDP", "geneve", "tunnel", "geneve", 1406),
])
def test_pmtu_on_answers_with_the_mtu_less_the_overhead(
        family: str, proto: str, dispatch: str, routing: str, tunnel: str, mtu: int) -> None:
    tr = _run(_doc(family=family, proto=proto, dispatch=dispatch, routing=routing,
                   tunnel=tunnel))
    assert tr.drop == ("node1", DropReason.DROP_FRAG_NEEDED)
    [err] = _client_got(tr)
    a = ADDRS[family]
    assert (err.icmp, err.mtu) == (IcmpKind.FRAG_NEEDED, mtu)
    assert err.proto is (Proto.ICMPV6 if family == "ipv6" else Proto.ICMP)
    assert err.dst.addr == ip_address(a["client"])
    assert err.src.addr == ip_address(a["remote"])  # the backend's: nodeport.h:2009 / :622
    assert err.quote == FlowKey(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                                dst=Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT),
                                proto=Proto[proto])
    assert tr.backend_saw == ()
    assert trace_json(tr)["client_saw"][0]["mtu"] == mtu


def test_the_request_that_just_fits_is_delivered() -> None:
    tr = _run(_doc(size=1492))
    assert tr.delivered and tr.backend_saw[0].size == 1492
    assert tr.backend_saw[0].dsr is not None


def test_pmtu_off_sends_it_oversized_and_the_fabric_loses_it() -> None:
    tr = _run(_doc(pmtu=False))
    assert tr.drop == ("fabric", DropReason.FABRIC_OVER_MTU)
    assert _client_got(tr) == []
    forwarded = [h.packet for h in tr.hops if h.at == "node1"]
    assert forwarded[0].dsr is not None and forwarded[0].size == 1500


def test_non_syn_tcp_gets_no_option_so_no_check_with_opt_dispatch() -> None:
    doc = _doc()
    doc["flows"][0]["resume"] = True  # ACKs only: no DSR option (nodeport.h:1778)
    doc["flows"][0]["packets"] = 1
    tr = _run(doc)
    assert tr.drop is None or tr.drop[1] is not DropReason.DROP_FRAG_NEEDED
    assert not any(p.icmp for p in _client_got(tr))


def test_geneve_checks_non_syn_tcp_too() -> None:
    doc = _doc(dispatch="geneve", routing="tunnel", tunnel="geneve", size=1451)
    doc["flows"][0]["resume"] = True
    [err] = _client_got(_run(doc))
    assert err.mtu == 1450  # 20 + 8 + 8 + 14 without the TLV


def test_ip_options_without_room_for_the_dsr_option_are_dropped_either_way() -> None:
    for pmtu in (True, False):
        doc = _doc(pmtu=pmtu, size=None)
        doc["flows"][0]["ipOptions"] = 36
        tr = _run(doc)
        assert tr.drop == ("node1", DropReason.DROP_CT_INVALID_HDR)
        assert _client_got(tr) == []
    doc = _doc(size=None)
    doc["flows"][0]["ipOptions"] = 32  # 32 + 8 = 40 still fits
    assert _run(doc).delivered


def test_ip_options_leave_the_backend_port_in_the_quote() -> None:
    doc = _doc()
    doc["flows"][0]["ipOptions"] = 4
    [err] = _client_got(_run(doc))
    assert err.quote is not None and err.mtu == 1492
    assert err.quote.dst == Endpoint(addr=ip_address(ADDRS["ipv4"]["node1"]), port=TARGET_PORT)


def test_a_node_mtu_overrides_the_cluster_one() -> None:
    doc = _doc(size=1400)
    doc["cilium"]["mtu"] = 9000
    doc["nodes"][0]["mtu"] = 1400
    [err] = _client_got(_run(doc))
    assert err.mtu == 1392


def test_snat_mode_ignores_the_switch() -> None:
    tr = _run(_doc(mode="snat"))
    assert tr.delivered and not any(p.icmp for p in _client_got(tr))


def test_fault_reports_the_device_mtu() -> None:
    [err] = _client_got(_run(_doc(), frozenset({ModelFault.DSR_MTU_KEEPS_OVERHEAD})))
    assert err.mtu == 1500


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d["flows"][0].update(size=1501), "flows[0].size"),
    (lambda d: d["flows"][0].update(ipOptions=4), "flows[0].ipOptions"),  # IPv6 doc
    (lambda d: d["cilium"].update(mtu=1279), "cilium.mtu"),
    (lambda d: d["cilium"].update(pmtuDiscovery={"enabled": 1}),
     "cilium.pmtuDiscovery.enabled"),
])
def test_bad_input_names_the_key(change: Any, path: str) -> None:
    doc = _doc(family="ipv6", size=None)
    change(doc)
    with pytest.raises(InputError) as e:
        parse(doc, "<bad>")
    assert path in str(e.value)


def test_abstraction_round_trips_size_options_and_mtu() -> None:
    from datapath.abstraction import bytes_of, packet_of
    for family in ("ipv4", "ipv6"):
        err = _client_got(_run(_doc(family=family)))[0]
        assert packet_of(bytes_of(err)) == err
    doc = _doc(size=1000)
    doc["flows"][0]["ipOptions"] = 8
    tr = _run(doc)
    for h in tr.hops:
        assert packet_of(bytes_of(h.packet)) == h.packet
    wire = bytes_of(tr.backend_saw[0])
    assert len(wire) == 1000 + 8 and (wire[0] & 0xF) == 5 + 4  # 8 option + 8 DSR bytes


@pytest.mark.parametrize("prop", ["P-MTU-01", "P-MTU-02"])
def test_expected_results_per_configuration(prop: str) -> None:
    p = BY_ID[prop]
    results = {c: check_cell([p], c, frozenset(), 20000)[0] for c in p.configs}
    for c, r in results.items():
        assert r.result == (PROVED if p.expect(c) == HOLD else COUNTEREXAMPLE), c.label()
    assert {p.expect(c) for c in p.configs} == ({HOLD, VIOLATED} if prop == "P-MTU-01"
                                                else {VIOLATED})


def test_seeded_fault_is_killed() -> None:
    p = BY_ID["P-MTU-01"]
    for fault, cfg in p.mutants:
        [r] = check_cell([p], cfg, frozenset({fault}), 20000)
        assert r.result == COUNTEREXAMPLE
        assert r.finding is not None and "learns an MTU of 1500" in r.finding.message


@pytest.mark.parametrize("combo", [c for c in COMBOS if c[1] != "snat"][:4])
def test_difftest_mtu_programs_agree_and_kill_the_datapath_fault(
        combo: tuple[str, str, str, str]) -> None:
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import mtu_off_program, mtu_program
    for make in (mtu_program, mtu_off_program):
        c = Counters()
        assert run_program(make(combo), reference_factory, frozenset(), c) is None
        assert c.observations > 4
    killed = run_program(mtu_program(combo), reference_factory,
                         frozenset({"dsr_mtu_keeps_overhead"}), Counters())
    assert killed is not None


def test_generator_draws_oversized_dsr_requests_with_the_switch_on_and_off() -> None:
    from datapath.diffgen import draw_programs
    seen = set()
    for doc in draw_programs(48, 0):
        if doc["cilium"]["loadBalancer"]["mode"] == "snat":
            continue
        pmtu = doc["cilium"].get("pmtuDiscovery", {}).get("enabled", False)
        for f in doc["flows"]:
            if f.get("size") == 1500:
                seen.add(pmtu)
    assert seen == {True, False}


def test_datapath_vectors_pass_and_kill_the_fault() -> None:
    from datapath.faults import faults_killed
    from datapath.vectors import run_vector_file
    from tests.conftest import ROOT
    files = [ROOT / "vectors" / f for f in ("dsr_pmtu.yaml", "dsr_pmtu6.yaml",
                                             "dsr_pmtu_geneve.yaml", "dsr_pmtu_off.yaml")]
    for f in files:
        assert run_vector_file(f).ok, f
    assert len(faults_killed(files)["dsr_mtu_keeps_overhead"]) == 3


def test_target_port_is_the_backend_one_in_the_delivered_request() -> None:
    tr = _run(_doc(size=1200))
    assert tr.backend_saw[0].dst.port == TARGET_PORT
