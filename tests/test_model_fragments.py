"""Fragments in the model: the frag map per version and switch (ipv4.h, ipv6.h), the SNAT
path's second entry, scenario keys and their errors, the trace JSON."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from model.drops import DropReason
from model.errors import ScenarioError
from model.flows import run_flows, trace_json
from model.maps import FragKey, FragPorts
from model.scenario import load, parse
from model.values import Proto


def _doc(**cilium: Any) -> dict[str, Any]:
    return {
        "cilium": {"version": "1.20", "loadBalancer": {"mode": "snat"}, "seed": 1, **cilium},
        "nodes": [{"name": "node1", "ip": "192.168.2.2"}, {"name": "node2", "ip": "192.168.2.3"}],
        "pods": [{"name": "dns-0", "node": "node2", "ip": "10.0.2.10"},
                 {"name": "dns-1", "node": "node2", "ip": "10.0.2.11"}],
        "services": [{"name": "dns", "type": "NodePort", "protocol": "UDP", "port": 53,
                      "targetPort": 5353, "nodePort": 30053, "backends": ["dns-0", "dns-1"]}],
        "clients": [{"name": "client", "ip": "203.0.113.7"}],
        "flows": [{"name": "f", "client": "client", "sourcePort": 40000,
                   "to": {"node": "node1", "service": "dns"}, "packets": 1, "fragments": 3}],
    }


def _run(doc: dict[str, Any]) -> tuple[Any, Any]:
    sc = parse(doc, "<t>")
    st, (tr,) = run_flows(sc.world, sc.flows)
    return st, tr


def test_in_order_fragments_share_backend_and_snat_source() -> None:
    st, tr = _run(_doc())
    assert tr.delivered and len(tr.backend_saw) == 3 and len(tr.client_saw) == 1
    assert len({at for _, at in tr.datagrams[0]}) == 1
    assert {str(p.src.addr) for p in tr.backend_saw} == {"192.168.2.2"}  # one SNAT source
    assert [p.src.port for p in tr.backend_saw[1:]] == [0, 0]  # no L4 header
    frag = st.nodes["node1"].frag
    key = FragKey(saddr=tr.spec.source.addr, daddr=tr.spec.frontend.addr, id=256,
                  proto=Proto.UDP)
    assert frag.get(key) == FragPorts(sport=40000, dport=30053)
    # the SNAT path records the DNATed datagram too (tail_nodeport_nat_egress_ipv4)
    backend = tr.backend_saw[0].dst
    assert frag.get(FragKey(saddr=tr.spec.source.addr, daddr=backend.addr, id=256,
                            proto=Proto.UDP)) == FragPorts(sport=40000, dport=backend.port)
    assert len(frag) == 2 and len(st.nodes["node2"].frag) == 1  # the backend node's own


@pytest.mark.parametrize(("order", "tracking", "version", "reason"), [
    ("reversed", True, "1.20", DropReason.DROP_FRAG_NOT_FOUND),
    ("in-order", False, "1.20", DropReason.DROP_FRAG_NOSUPPORT),
    ("in-order", False, "1.18", DropReason.DROP_FRAG_NOSUPPORT),
])
def test_later_fragment_without_ports(order: str, tracking: bool, version: str,
                                      reason: DropReason) -> None:
    doc = _doc(version=version, bpf={"fragmentTracking": tracking})
    doc["flows"][0]["fragmentOrder"] = order
    _, tr = _run(doc)
    assert tr.drop is not None and tr.drop[1] is reason


def test_v118_drops_every_ipv6_fragment_v120_tracks_them() -> None:
    doc = _doc(version="1.18")
    doc["nodes"] = [{"name": "node1", "ip": "fd00::2:2"}, {"name": "node2", "ip": "fd00::2:3"}]
    doc["pods"] = [{"name": "dns-0", "node": "node2", "ip": "fd00::10:2:0:a"},
                   {"name": "dns-1", "node": "node2", "ip": "fd00::10:2:0:b"}]
    doc["clients"] = [{"name": "client", "ip": "2001:db8::7"}]
    _, tr = _run(doc)
    assert tr.drop is not None and tr.drop[1] is DropReason.DROP_FRAG_NOSUPPORT
    assert tr.backend_saw == ()
    doc["cilium"]["version"] = "1.20"
    _, tr = _run(copy.deepcopy(doc))
    assert tr.delivered and len(tr.backend_saw) == 3


def test_trace_json_shows_fragments() -> None:
    _, tr = _run(_doc())
    hops = trace_json(tr)["hops"]
    assert hops[0]["packet"]["fragment"] == {"id": 256, "offset": 0, "more": True}
    later = [h for h in hops if h["packet"].get("fragment", {}).get("offset") == 6]
    assert later and later[0]["packet"]["src"] == "203.0.113.7"  # no port on the wire
    assert later[0]["packet"]["fragment"]["more"] is False


@pytest.mark.parametrize(("key", "value", "path"), [
    ("fragments", 1, "flows[0].fragments"),
    ("fragments", 65, "flows[0].fragments"),
    ("fragmentOrder", "sideways", "flows[0].fragmentOrder"),
])
def test_bad_fragment_keys(key: str, value: Any, path: str) -> None:
    doc = _doc()
    doc["flows"][0][key] = value
    with pytest.raises(ScenarioError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse(doc, "<t>")


def test_fragment_order_needs_fragments_and_tracking_is_boolean() -> None:
    doc = _doc()
    del doc["flows"][0]["fragments"]
    doc["flows"][0]["fragmentOrder"] = "reversed"
    with pytest.raises(ScenarioError, match="fragmentOrder"):
        parse(doc, "<t>")
    with pytest.raises(ScenarioError, match=r"cilium\.bpf\.fragmentTracking"):
        parse(_doc(bpf={"fragmentTracking": "yes"}), "<t>")


def test_example_scenario() -> None:
    sc = load("examples/fragments.yaml")
    _, traces = run_flows(sc.world, sc.flows)
    assert [t.delivered for t in traces] == [True, True, False]
    assert traces[2].drop is not None and traces[2].drop[1] is DropReason.DROP_FRAG_NOT_FOUND
