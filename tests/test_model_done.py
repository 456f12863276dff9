"""The foundation issue's "done when": the article's DSR and SNAT flows through the CLI."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import run_cli

CLIENT = "203.0.113.7:40000"
FRONTEND = "192.168.2.3:30080"
NODES = {"node1", "node2", "node3"}


def _trace(example: str) -> dict[str, Any]:
    res = run_cli("trace", f"examples/{example}", "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _flow(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in doc["flows"] if f["name"] == name)


def _receiving_node(flow: dict[str, Any]) -> str:
    """The first node whose hook handled the request: the node the client contacted."""
    at: str = next(h["at"] for h in flow["hops"]
                   if h["direction"] == "request" and h["hook"] is not None)
    return at


def _reply_nodes(flow: dict[str, Any]) -> list[str]:
    return [h["at"] for h in flow["hops"] if h["direction"] == "reply" and h["at"] in NODES]


def test_dsr_pod_sees_client_and_client_sees_frontend_only() -> None:
    flow = _flow(_trace("dsr-remote-backend.yaml"), "to-web")
    assert flow["outcome"] == "delivered" and flow["drop"] is None
    assert flow["client"] == CLIENT and flow["frontend"] == FRONTEND
    assert len(flow["backend_saw"]) == 3
    assert {p["src"] for p in flow["backend_saw"]} == {CLIENT}
    assert {p["dst"] for p in flow["backend_saw"]} == {"10.0.2.10:8080"}
    assert len(flow["client_saw"]) == 3
    assert {p["src"] for p in flow["client_saw"]} == {FRONTEND}
    assert [p["flags"] for p in flow["client_saw"]] == ["SA", "A", "A"]


def test_dsr_reply_never_passes_the_receiving_node() -> None:
    flow = _flow(_trace("dsr-remote-backend.yaml"), "to-web")
    receiver = _receiving_node(flow)
    assert receiver == "node1"
    replies = _reply_nodes(flow)
    assert replies and set(replies) == {"node2"}
    assert receiver not in replies
    # The request, on the other hand, goes through node1 and then node2.
    requests = [h["at"] for h in flow["hops"] if h["direction"] == "request" and h["at"] in NODES]
    assert requests[:2] == ["node1", "node2"]


def test_snat_pod_sees_receiving_node_with_nat_port() -> None:
    flow = _flow(_trace("snat-remote-backend.yaml"), "tcp-to-web")
    assert flow["outcome"] == "delivered"
    assert len(flow["backend_saw"]) == 3
    for pkt in flow["backend_saw"]:
        addr, port = pkt["src"].rsplit(":", 1)
        assert addr == "192.168.2.3"
        assert 32768 <= int(port) <= 65535
    # One connection keeps one NAT port for all its packets.
    assert len({p["src"] for p in flow["backend_saw"]}) == 1


def test_snat_replies_return_through_receiving_node() -> None:
    for name in ("tcp-to-web", "udp-to-dns"):
        flow = _flow(_trace("snat-remote-backend.yaml"), name)
        receiver = _receiving_node(flow)
        replies = _reply_nodes(flow)
        assert receiver == "node1"
        # Each reply leaves the backend's node and is reverse-translated on node1.
        assert replies.count("node1") == len(flow["client_saw"]) > 0
        rev = [h for h in flow["hops"] if h["direction"] == "reply" and h["at"] == "node1"]
        assert {h["action"] for h in rev} == {"rev-snat"}
        assert {p["src"] for p in flow["client_saw"]} == {flow["frontend"]}
        assert {p["dst"] for p in flow["client_saw"]} == {flow["client"]}


def test_misconfiguration_refused_with_reason() -> None:
    res = run_cli("trace", "examples/misconfig-dsr-vxlan.yaml")
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "misconfig-dsr-vxlan.yaml" in lines[0]
    assert "cannot be used with vxlan tunneling" in lines[0]
