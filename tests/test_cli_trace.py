"""`nodeport trace` over every example: exit status, both output shapes, the outcomes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import EXAMPLES, run_cli

RUNNABLE = sorted(p.name for p in EXAMPLES.glob("*.yaml") if "misconfig" not in p.name)
MISCONFIG = sorted(p.name for p in EXAMPLES.glob("*.yaml") if "misconfig" in p.name)

# What each example is there to show: flow name -> (outcome, drop reason or None).
EXPECTED: dict[str, dict[str, tuple[str, str | None]]] = {
    "dsr-remote-backend.yaml": {"to-web": ("delivered", None)},
    "dsr-remote-backend-udp.yaml": {"udp-to-dns": ("delivered", None)},
    "snat-remote-backend.yaml": {"tcp-to-web": ("delivered", None),
                                 "udp-to-dns": ("delivered", None)},
    "hybrid-remote-backend.yaml": {"tcp-goes-dsr": ("delivered", None),
                                   "udp-goes-snat": ("delivered", None)},
    "etp-local.yaml": {"node-with-local-backend": ("delivered", None),
                       "node-without-local-backend": ("dropped", "DROP_NO_SERVICE")},
    "fabric-drops-ip-options.yaml": {"syn-lost": ("dropped", "FABRIC_DROPS_IP_OPTIONS")},
    "fabric-source-dest-check.yaml": {"tcp-dsr-dropped": ("dropped", "FABRIC_SOURCE_DEST_CHECK"),
                                      "udp-snat-delivered": ("delivered", None)},
    "snat-exhaustion.yaml": {"first": ("delivered", None), "second": ("delivered", None),
                             "third-exhausted": ("dropped", "DROP_NAT_NO_MAPPING")},
    "snat-port-collision.yaml": {"alice": ("delivered", None), "bob": ("delivered", None)},
    "pod-egress-masquerade.yaml": {f: ("delivered", None) for f in (
        "nodeport", "app0-egress", "app1-egress", "app0-udp")},
    "icmp-error-through-nat.yaml": {"snat-port-unreachable": ("delivered", None),
                                    "dsr-frag-needed": ("delivered", None),
                                    "local-port-unreachable": ("delivered", None)},
}


# Flows that show a known Cilium issue: the client hears from another frontend (or, for
# the ICMP errors, from the backend that sent the error: docs/icmp-errors.md).
KNOWN_ISSUE_FLOWS = {("known-issue-udp-dsr-port-reuse.yaml", "via-node1-same-port")} | {
    ("icmp-error-through-nat.yaml", f) for f in ("snat-port-unreachable", "dsr-frag-needed",
                                                 "local-port-unreachable")}


def test_known_issue_example_shows_the_wrong_frontend() -> None:
    """Reused client port, two NodePorts, one UDP DSR backend: replies keep node3's frontend."""
    flows = {f["name"]: f for f in _json("known-issue-udp-dsr-port-reuse.yaml")["flows"]}
    first, second = flows["via-node3"], flows["via-node1-same-port"]
    assert {p["src"] for p in first["client_saw"]} == {first["frontend"]}
    assert second["frontend"] == "192.168.2.3:30053"
    assert {p["src"] for p in second["client_saw"]} == {"192.168.2.5:30053"}


def test_session_affinity_example_sticks_then_moves() -> None:
    """Another source port sticks; past the timeout, and at another node, it need not."""
    got = {f["name"]: f["backend"] for f in _json("session-affinity.yaml")["flows"]}
    assert got["first"] == got["second-port"] == "web-0"
    assert got["after-timeout"] != got["first"]
    assert got["via-node2"] != got["after-timeout"]


def _json(name: str) -> dict[str, Any]:
    res = run_cli("trace", f"examples/{name}", "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_examples_exist() -> None:
    assert "dsr-remote-backend.yaml" in RUNNABLE
    assert len(RUNNABLE) >= 15
    assert MISCONFIG


@pytest.mark.parametrize("name", RUNNABLE)
def test_example_traces(name: str) -> None:
    doc = _json(name)
    assert doc["scenario"] == f"examples/{name}"
    assert doc["flows"]
    for flow in doc["flows"]:
        assert flow["outcome"] in ("delivered", "dropped")
        assert (flow["drop"] is None) == (flow["outcome"] == "delivered")
        if flow["outcome"] == "delivered":
            assert flow["backend_saw"] and flow["client_saw"]
            # The client only ever hears from the frontend it contacted (except where an
            # example reproduces Cilium's documented port-reuse issue on purpose).
            if (name, flow["name"]) not in KNOWN_ISSUE_FLOWS:
                assert {p["src"] for p in flow["client_saw"]} == {flow["frontend"]}
        for hop in flow["hops"]:
            assert hop["direction"] in ("request", "reply")
    for flow_name, (outcome, reason) in EXPECTED.get(name, {}).items():
        flow = next(f for f in doc["flows"] if f["name"] == flow_name)
        assert flow["outcome"] == outcome
        assert (flow["drop"] or {}).get("reason") == reason


@pytest.mark.parametrize("name", MISCONFIG)
def test_misconfig_examples_refused(name: str) -> None:
    res = run_cli("trace", f"examples/{name}")
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("nodeport: error: ")
    assert "configuration refused" in res.stderr and "Traceback" not in res.stderr


def test_human_output_marks_rewritten_fields() -> None:
    res = run_cli("trace", "examples/dsr-remote-backend.yaml")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0] == "# examples/dsr-remote-backend.yaml"
    assert lines[1].startswith("flow to-web: delivered (backend web-0)")
    dnat = next(line for line in lines if "dnat+dsr" in line)
    assert "*10.0.2.10:8080" in dnat and "*dsr=192.168.2.3:30080" in dnat
    revdnat = next(line for line in lines if "rev-dnat" in line)
    assert "*192.168.2.3:30080 -> 203.0.113.7:40000" in revdnat


def test_human_output_names_the_drop() -> None:
    res = run_cli("trace", "examples/snat-exhaustion.yaml")
    assert res.returncode == 0
    assert "flow third-exhausted: dropped" in res.stdout
    assert "DROP_NAT_NO_MAPPING" in res.stdout


def test_several_scenarios_in_one_json_document() -> None:
    res = run_cli("trace", "examples/dsr-remote-backend.yaml",
                  "examples/snat-remote-backend.yaml", "--json")
    assert res.returncode == 0
    doc = json.loads(res.stdout)
    assert [s["scenario"] for s in doc["scenarios"]] == [
        "examples/dsr-remote-backend.yaml", "examples/snat-remote-backend.yaml"]


def test_icmp_reject_shape_in_json() -> None:
    flow = next(f for f in _json("etp-local.yaml")["flows"]
                if f["name"] == "node-without-local-backend")
    assert flow["drop"] == {"at": "node1", "reason": "DROP_NO_SERVICE", "code": -158}
    assert flow["client_saw"] == [{"src": "192.168.2.3", "dst": "203.0.113.7", "proto": "ICMP",
                                   "icmp": "port-unreachable",
                                   "quote": {"src": "203.0.113.7:40001",
                                             "dst": "192.168.2.3:30080", "proto": "TCP"}}]
    assert flow["backend"] is None and flow["backend_saw"] == []


def test_geneve_outer_header_in_json() -> None:
    flow = _json("geneve-dsr-tunnel.yaml")["flows"][0]
    encap = [h for h in flow["hops"] if h["packet"]["outer"] is not None]
    assert encap, "the request must be encapsulated"
    for hop in encap:
        assert hop["direction"] == "request" and hop["at"] == "node1"
        assert hop["packet"]["outer"] == {"type": "geneve", "src": "192.168.2.3",
                                          "dst": "192.168.2.4", "vni": 2}
    syn = encap[0]["packet"]
    assert syn["flags"] == "S" and syn["dsr_kind"] == "geneve-option"
    assert all(h["packet"]["dsr"] is None for h in encap[1:])
    assert all(h["packet"]["outer"] is None for h in flow["hops"] if h["direction"] == "reply")


def test_missing_file_is_one_line() -> None:
    res = run_cli("trace", "examples/does-not-exist.yaml")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "does-not-exist.yaml" in res.stderr
    assert "cannot read" in res.stderr
