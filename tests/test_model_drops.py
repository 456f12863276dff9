"""Drop paths: no backend, ClusterIP from outside, source ranges, exhaustion, fabric, punt."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs
import pytest

from model.drops import DropReason
from model.flows import FlowTrace, request, run_flows
from model.network import EndKind, initial_state, reply_to, walk
from model.scenario import parse
from model.snat import rev_key
from model.values import Endpoint, IcmpKind, Proto
from tests.conftest import ADDRS, NODE_PORT, SVC_PORT, TARGET_PORT, build_doc


def _traces(doc: dict[str, Any]) -> list[FlowTrace]:
    sc = parse(doc, "drops")
    return run_flows(sc.world, sc.flows)[1]


def _one(**kw: Any) -> FlowTrace:
    return _traces(build_doc(**kw))[0]


def _frontend_addr(family: str, svc_type: str) -> str:
    return ADDRS[family][{"NodePort": "node1", "LoadBalancer": "vip", "ExternalIP": "ext"}[
        svc_type]]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("svc_type", ["NodePort", "LoadBalancer", "ExternalIP"])
@pytest.mark.parametrize("mode", ["snat", "dsr"])
def test_no_backend_reject_answers_icmp_from_frontend(family: str, svc_type: str,
                                                     mode: str) -> None:
    tr = _one(family=family, svc_type=svc_type, mode=mode, placement="none",
              cilium={"serviceNoBackendResponse": "reject"})
    assert not tr.delivered
    assert tr.drop == ("node1", DropReason.DROP_NO_SERVICE)
    assert DropReason.DROP_NO_SERVICE.code == -158
    assert tr.backend_saw == () and tr.backend_pod is None
    assert len(tr.client_saw) == 1
    icmp = tr.client_saw[0]
    assert icmp.icmp is IcmpKind.PORT_UNREACHABLE
    assert icmp.proto is (Proto.ICMPV6 if family == "ipv6" else Proto.ICMP)
    assert icmp.src.addr == ip_address(_frontend_addr(family, svc_type))
    assert icmp.dst.addr == ip_address(ADDRS[family]["client"])


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_no_backend_drop_is_silent(family: str) -> None:
    tr = _one(family=family, placement="none", cilium={"serviceNoBackendResponse": "drop"})
    assert tr.drop == ("node1", DropReason.DROP_NO_SERVICE)
    assert tr.client_saw == ()


def test_v113_never_rejects() -> None:
    """serviceNoBackendResponse came with v1.15; v1.13 dropped without an ICMP error."""
    tr = _one(version="1.13", placement="none", cilium={"serviceNoBackendResponse": "reject"})
    assert tr.drop == ("node1", DropReason.DROP_NO_SERVICE)
    assert tr.client_saw == ()


@pytest.mark.parametrize("response", ["reject", "drop"])
@pytest.mark.parametrize("mode", ["snat", "dsr", "hybrid"])
def test_etp_local_without_local_backend(response: str, mode: str) -> None:
    tr = _one(mode=mode, placement="remote", service={"externalTrafficPolicy": "Local"},
              cilium={"serviceNoBackendResponse": response})
    assert tr.drop == ("node1", DropReason.DROP_NO_SERVICE)
    assert tr.backend_saw == ()
    if response == "reject":
        assert [p.icmp for p in tr.client_saw] == [IcmpKind.PORT_UNREACHABLE]
        assert tr.client_saw[0].src.addr == ip_address(ADDRS["ipv4"]["node1"])
    else:
        assert tr.client_saw == ()


@pytest.mark.parametrize("mode", ["snat", "dsr", "hybrid"])
def test_etp_local_with_local_backend_keeps_client_address(mode: str) -> None:
    tr = _one(mode=mode, placement="local", service={"externalTrafficPolicy": "Local"})
    client = Endpoint(addr=ip_address(ADDRS["ipv4"]["client"]), port=40000)
    assert tr.delivered and tr.backend_pod == "web-local"
    assert all(p.src == client for p in tr.backend_saw)


def test_etp_local_agent_writes_only_local_slots() -> None:
    sc = parse(build_doc(placement="remote", service={"externalTrafficPolicy": "Local"}), "x")
    st = initial_state(sc.world)
    key_n1 = (ip_address(ADDRS["ipv4"]["node1"]), NODE_PORT, Proto.TCP)
    key_n2 = (ip_address(ADDRS["ipv4"]["node2"]), NODE_PORT, Proto.TCP)
    assert st.nodes["node1"].lb.services[key_n1].count == 0
    assert st.nodes["node2"].lb.services[key_n2].count == 1
    # Cluster policy: every node holds every backend.
    sc2 = parse(build_doc(placement="remote"), "x")
    assert initial_state(sc2.world).nodes["node1"].lb.services[key_n1].count == 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_cluster_ip_from_outside_is_dropped(family: str) -> None:
    cip = ADDRS[family]["cluster"]
    doc = build_doc(family=family, service={"clusterIP": cip})
    doc["flows"][0]["to"] = {"address": cip, "port": SVC_PORT, "via": "node1"}
    tr = _traces(doc)[0]
    assert tr.drop == ("node1", DropReason.DROP_IS_CLUSTER_IP)
    assert tr.client_saw == () and tr.backend_saw == ()


def test_cluster_ip_does_not_stop_the_nodeport() -> None:
    tr = _one(service={"clusterIP": ADDRS["ipv4"]["cluster"]})
    assert tr.delivered


@pytest.mark.parametrize(("ranges", "allowed"), [
    (["198.18.0.0/15"], False),
    (["203.0.113.0/24"], True),
    (["198.18.0.0/15", "203.0.113.7/32"], True),
])
def test_load_balancer_source_ranges(ranges: list[str], allowed: bool) -> None:
    tr = _one(svc_type="LoadBalancer", service={"loadBalancerSourceRanges": ranges})
    if allowed:
        assert tr.delivered
    else:
        assert tr.drop == ("node1", DropReason.DROP_NOT_IN_SRC_RANGE)
        assert DropReason.DROP_NOT_IN_SRC_RANGE.code == -177
        assert tr.client_saw == () and tr.backend_saw == ()


def test_source_ranges_ipv6() -> None:
    tr = _one(family="ipv6", svc_type="LoadBalancer",
              service={"loadBalancerSourceRanges": ["2001:db8:aaaa::/48"]})
    assert tr.drop == ("node1", DropReason.DROP_NOT_IN_SRC_RANGE)


def test_source_ranges_do_not_guard_the_nodeport() -> None:
    doc = build_doc(svc_type="LoadBalancer",
                    service={"loadBalancerSourceRanges": ["198.18.0.0/15"]})
    doc["flows"][0]["to"] = {"node": "node1", "service": "web"}
    assert _traces(doc)[0].delivered


def _exhaustion_doc(flows: int, proto: str = "TCP") -> dict[str, Any]:
    doc = build_doc(proto=proto, packets=1, cilium={"nodePort": {"range": "30000-65533"}})
    base = doc["flows"][0]
    doc["flows"] = [dict(base, name=f"f{i}", sourcePort=40000 + i) for i in range(flows)]
    return doc


@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_snat_exhaustion_drops_nat_no_mapping(proto: str) -> None:
    traces = _traces(_exhaustion_doc(4, proto))
    assert [t.delivered for t in traces] == [True, True, False, False]
    ports = sorted(t.backend_saw[0].src.port for t in traces[:2])
    assert ports == [65534, 65535]
    for t in traces[2:]:
        assert t.drop == ("node1", DropReason.DROP_NAT_NO_MAPPING)
        assert t.backend_saw == () and t.client_saw == ()


def test_v113_clamp_never_yields_the_range_end() -> None:
    """v1.13's clamp is start + v % (end - start): port 65535 is unreachable (brief §4.2)."""
    doc = _exhaustion_doc(3)
    doc["cilium"]["version"] = "1.13"
    traces = _traces(doc)
    assert [t.delivered for t in traces] == [True, False, False]
    assert traces[0].backend_saw[0].src.port == 65534
    assert traces[1].drop == ("node1", DropReason.DROP_NAT_NO_MAPPING)
    # A client port already inside the range is kept, so 65535 is still usable that way.
    doc = _exhaustion_doc(1)
    doc["cilium"]["version"] = "1.13"
    doc["flows"][0]["sourcePort"] = 65535
    assert _traces(doc)[0].backend_saw[0].src.port == 65535


def test_snat_port_collision_picks_another_port() -> None:
    doc = build_doc(packets=2)
    doc["flows"].append(dict(doc["flows"][0], name="second", client="client2"))
    first, second = _traces(doc)
    assert first.delivered and second.delivered
    assert first.backend_saw[0].src.port == 40000
    p2 = second.backend_saw[0].src.port
    assert p2 != 40000 and 32768 <= p2 <= 65535
    assert {p.dst for p in second.client_saw} == {
        Endpoint(addr=ip_address(ADDRS["ipv4"]["client2"]), port=40000)}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_fabric_drops_ip_options(family: str, proto: str) -> None:
    tr = _one(mode="dsr", family=family, proto=proto, fabric={"dropsIPOptions": True})
    assert tr.drop == ("fabric", DropReason.FABRIC_DROPS_IP_OPTIONS)
    assert DropReason.FABRIC_DROPS_IP_OPTIONS.code is None
    assert tr.backend_saw == ()


@pytest.mark.parametrize("kw", [
    {"mode": "snat"},
    {"mode": "hybrid", "proto": "UDP"},
    {"mode": "dsr", "placement": "local"},
    {"mode": "dsr", "dispatch": "geneve", "routing": "tunnel", "tunnel": "geneve"},
], ids=["snat", "hybrid-udp", "dsr-local", "dsr-geneve"])
def test_fabric_drops_ip_options_spares_other_paths(kw: dict[str, Any]) -> None:
    assert _one(fabric={"dropsIPOptions": True}, **kw).delivered


@pytest.mark.parametrize("svc_type", ["NodePort", "LoadBalancer", "ExternalIP"])
def test_fabric_source_dest_check_breaks_dsr(svc_type: str) -> None:
    tr = _one(mode="dsr", svc_type=svc_type, fabric={"sourceDestCheck": True})
    assert tr.drop == ("fabric", DropReason.FABRIC_SOURCE_DEST_CHECK)
    assert tr.backend_saw == ()


@pytest.mark.parametrize("kw", [
    {"mode": "snat"},
    {"mode": "snat", "svc_type": "LoadBalancer"},
    {"mode": "hybrid", "proto": "UDP"},
    {"mode": "dsr", "placement": "local"},
], ids=["snat", "snat-vip", "hybrid-udp", "dsr-local"])
def test_fabric_source_dest_check_spares_snat_and_local(kw: dict[str, Any]) -> None:
    assert _one(fabric={"sourceDestCheck": True}, **kw).delivered


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_reply_punted_to_stack_when_reverse_snat_entry_lost(family: str) -> None:
    sc = parse(build_doc(family=family, packets=1), "punt")
    world = sc.world
    spec = sc.flows[0]
    state = attrs.evolve(initial_state(world), now=1)
    w = walk(world, state, ("client", "client"), request(spec, 0), reply=False, via="node1")
    assert w.end is EndKind.POD
    nat = w.packet.src
    backend = Endpoint(addr=ip_address(ADDRS[family]["remote"]), port=TARGET_PORT)
    key = rev_key(backend, nat, Proto.TCP)
    n1 = w.state.nodes["node1"]
    assert key in n1.snat.entries
    nodes = dict(w.state.nodes)
    nodes["node1"] = attrs.evolve(n1, snat=n1.snat.delete(key))
    r = walk(world, attrs.evolve(w.state, nodes=nodes), ("pod", w.at), reply_to(w.packet),
             reply=True)
    assert r.end is EndKind.DROP
    assert r.drop == ("node1", DropReason.PUNT_TO_STACK)
    assert r.packet.dst == nat  # untranslated: still addressed to node1's NAT port
    # With the entry in place the same reply reaches the client from the frontend.
    ok = walk(world, w.state, ("pod", w.at), reply_to(w.packet), reply=True)
    assert ok.end is EndKind.CLIENT
    assert ok.packet.src == Endpoint(addr=ip_address(ADDRS[family]["node1"]), port=NODE_PORT)
