"""Bad scenarios through the CLI: exit 2, one line naming file and key path, no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeport.cli import main
from tests.conftest import build_doc, clone, run_cli

Mutation = Callable[[dict[str, Any]], None]


def _set(path: list[str | int], value: Any) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return apply


def _del(path: list[str | int]) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return apply


# (case id, mutation of the valid base scenario, key path the message must name)
CASES: list[tuple[str, Mutation, str]] = [
    ("unknown-top-key", _set(["colour"], "blue"), "colour"),
    ("unknown-nested-key", _set(["cilium", "loadBalancer", "modee"], "dsr"),
     "cilium.loadBalancer.modee"),
    ("unknown-service-key", _set(["services", 0, "ipFamilyPolicy"], "SingleStack"),
     "services[0].ipFamilyPolicy"),
    ("nodes-not-a-list", _set(["nodes"], "node1"), "nodes"),
    ("port-is-a-string", _set(["services", 0, "port"], "80"), "services[0].port"),
    ("port-is-a-bool", _set(["services", 0, "targetPort"], True), "services[0].targetPort"),
    ("fabric-flag-not-bool", _set(["fabric", "dropsIPOptions"], "yes"), "fabric.dropsIPOptions"),
    ("mode-unknown", _set(["cilium", "loadBalancer", "mode"], "maglev"),
     "cilium.loadBalancer.mode"),
    ("version-unknown", _set(["cilium", "version"], "1.99"), "cilium.version"),
    ("unknown-pod", _set(["services", 0, "backends"], ["web-9"]), "services[0].backends[0]"),
    ("unknown-node-for-pod", _set(["pods", 0, "node"], "node7"), "pods[0].node"),
    ("unknown-service", _set(["flows", 0, "to", "service"], "api"), "flows[0].to.service"),
    ("unknown-node-in-flow", _set(["flows", 0, "to", "node"], "node9"), "flows[0].to.node"),
    ("unknown-client", _set(["flows", 0, "client"], "mallory"), "flows[0].client"),
    ("unknown-via", _set(["flows", 0, "to"], {"address": "172.16.10.2", "port": 80,
                                              "via": "node9"}), "flows[0].to"),
    ("mixed-families", _set(["pods", 1, "ip"], "2001:db8:10:2::10"), "pods[1].ip"),
    ("mixed-families-client", _set(["clients", 0, "ip"], "2001:db8:ff00::7"), "clients[0].ip"),
    ("bad-address", _set(["nodes", 0, "ip"], "192.168.2.300"), "nodes[0].ip"),
    ("bad-cidr", _set(["services", 0, "loadBalancerSourceRanges"], ["10.0.0.0/33"]),
     "services[0].loadBalancerSourceRanges[0]"),
    ("port-too-big", _set(["services", 0, "port"], 70000), "services[0].port"),
    ("port-zero", _set(["flows", 0, "sourcePort"], 0), "flows[0].sourcePort"),
    ("nodeport-outside-range", _set(["services", 0, "nodePort"], 40000),
     "services[0].nodePort"),
    ("bad-nodeport-range", _set(["cilium", "nodePort"], {"range": "30000-70000"}),
     "cilium.nodePort.range"),
    ("missing-target-port", _del(["services", 0, "targetPort"]), "services[0].targetPort"),
    ("missing-nodes", _del(["nodes"]), "nodes"),
    ("missing-flow-to", _del(["flows", 0, "to"]), "flows[0].to"),
    ("duplicate-node", _set(["nodes", 1, "name"], "node1"), "nodes[1].name"),
    ("duplicate-address", _set(["pods", 0, "ip"], "192.168.2.4"), "pods[0].ip"),
    ("lb-without-vip", _set(["services", 0, "type"], "LoadBalancer"),
     "services[0].loadBalancerIP"),
    ("no-frontend-at-address", _set(["flows", 0, "to"], {"address": "172.16.99.9", "port": 80,
                                                         "via": "node1"}), "flows[0].to"),
    ("packets-zero", _set(["flows", 0, "packets"], 0), "flows[0].packets"),
    ("root-empty", lambda d: d.clear(), "required key is missing"),
]


def _write(tmp: Path, doc: Any, name: str = "scenario.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _assert_one_line_error(res: Any, path: Path, key: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.endswith("\n"), res.stderr
    assert "\r" not in res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("nodeport: error: ")
    assert str(path) in lines[0]
    assert key in lines[0], lines[0]


def test_base_scenario_is_valid(tmp_path: Path) -> None:
    res = run_cli("trace", str(_write(tmp_path, build_doc())))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("mutate", "key"), [(m, k) for _, m, k in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_scenario_one_line(tmp_path: Path, mutate: Mutation, key: str) -> None:
    doc = build_doc()
    mutate(doc)
    path = _write(tmp_path, doc)
    _assert_one_line_error(run_cli("trace", str(path)), path, key)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("nodes: [\n  {name: node1, ip: 192.168.2.3}\nservices: {\n")
    res = run_cli("trace", str(path))
    _assert_one_line_error(res, path, "not valid YAML")
    assert "line " in res.stderr


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": [}')
    _assert_one_line_error(run_cli("trace", str(path)), path, "not valid JSON")


def test_json_scenario_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(build_doc(mode="dsr")))
    res = run_cli("trace", str(path), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["flows"][0]["outcome"] == "delivered"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    _assert_one_line_error(run_cli("trace", str(path)), path, "cannot read")


def test_key_with_newline_still_one_line(tmp_path: Path) -> None:
    doc = build_doc()
    doc["bad\nkey"] = 1
    path = tmp_path / "newline.json"
    path.write_text(json.dumps(doc))
    res = run_cli("trace", str(path))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr


NAME_REFS = [["pods", 0, "node"], ["flows", 0, "client"], ["flows", 0, "to", "service"],
             ["flows", 0, "to", "node"]]


@pytest.mark.parametrize("path", [*NAME_REFS, ["flows", 0, "to", "via"]],
                         ids=lambda p: ".".join(map(str, p)))
def test_unhashable_name_reference(tmp_path: Path, path: list[str | int]) -> None:
    doc = build_doc()
    if path[-1] == "via":
        doc["flows"][0]["to"] = {"address": "192.168.2.3", "port": 30080, "via": "node1"}
    _set(path, ["node1"])(doc)
    out = _write(tmp_path, doc)
    _assert_one_line_error(run_cli("trace", str(out)), out, ".".join(
        f"[{x}]" if isinstance(x, int) else x for x in path).replace(".[", "["))


def test_directory_instead_of_file(tmp_path: Path) -> None:
    _assert_one_line_error(run_cli("trace", str(tmp_path)), tmp_path, "cannot read")


# Configuration refusals: (version, cilium overrides, reason fragment from the agent).
REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("1.13", {"loadBalancer": {"mode": "dsr"}, "routingMode": "tunnel",
              "tunnelProtocol": "vxlan"}, "cannot be used with tunneling"),
    ("1.13", {"loadBalancer": {"mode": "dsr"}, "routingMode": "tunnel",
              "tunnelProtocol": "geneve"}, "cannot be used with tunneling"),
    ("1.13", {"loadBalancer": {"mode": "hybrid"}, "routingMode": "tunnel",
              "tunnelProtocol": "geneve"}, "cannot be used with tunneling"),
    ("1.13", {"loadBalancer": {"mode": "dsr", "dsrDispatch": "geneve"},
              "tunnelProtocol": "geneve"}, "geneve"),
    ("1.18", {"loadBalancer": {"mode": "dsr"}, "routingMode": "tunnel",
              "tunnelProtocol": "vxlan"}, "cannot be used with vxlan tunneling"),
    ("1.20", {"loadBalancer": {"mode": "hybrid"}, "routingMode": "tunnel",
              "tunnelProtocol": "vxlan"}, "cannot be used with vxlan tunneling"),
    ("1.18", {"loadBalancer": {"mode": "dsr", "dsrDispatch": "opt"}, "routingMode": "tunnel",
              "tunnelProtocol": "geneve"}, "requires geneve dispatch"),
    ("1.20", {"loadBalancer": {"mode": "hybrid", "dsrDispatch": "opt"},
              "routingMode": "tunnel", "tunnelProtocol": "geneve"},
     "requires geneve dispatch"),
    ("1.18", {"loadBalancer": {"mode": "dsr", "dsrDispatch": "geneve"},
              "routingMode": "native", "tunnelProtocol": "vxlan"},
     "dispatch requires geneve tunnel protocol"),
    ("1.20", {"loadBalancer": {"mode": "dsr", "dsrDispatch": "geneve"},
              "routingMode": "native", "tunnelProtocol": "vxlan"},
     "dispatch requires geneve tunnel protocol"),
]


@pytest.mark.parametrize(("version", "overrides", "reason"), REFUSALS,
                         ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(REFUSALS)])
def test_configuration_refused(tmp_path: Path, version: str, overrides: dict[str, Any],
                               reason: str) -> None:
    path = _write(tmp_path, build_doc(version=version, cilium=overrides))
    res = run_cli("trace", str(path))
    _assert_one_line_error(res, path, reason)
    assert "configuration refused by the agent" in res.stderr


@pytest.mark.parametrize(("version", "overrides"), [
    ("1.13", {"loadBalancer": {"mode": "snat"}, "routingMode": "tunnel",
              "tunnelProtocol": "vxlan"}),
    ("1.18", {"loadBalancer": {"mode": "snat"}, "routingMode": "tunnel",
              "tunnelProtocol": "vxlan"}),
    ("1.18", {"loadBalancer": {"mode": "dsr", "dsrDispatch": "geneve"},
              "routingMode": "tunnel", "tunnelProtocol": "geneve"}),
    ("1.20", {"loadBalancer": {"mode": "hybrid", "dsrDispatch": "geneve"},
              "routingMode": "tunnel", "tunnelProtocol": "geneve"}),
    ("1.13", {"loadBalancer": {"mode": "hybrid", "dsrDispatch": "opt"},
              "routingMode": "native"}),
])
def test_configuration_accepted(tmp_path: Path, version: str,
                                overrides: dict[str, Any]) -> None:
    res = run_cli("trace", str(_write(tmp_path, build_doc(version=version, cilium=overrides))))
    assert res.returncode == 0, res.stderr


# --- hypothesis: mutate a valid scenario anywhere, the CLI never tracebacks ---------------

def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


# Keys without line breaks: a key holding one is the known bug in test_key_with_newline.
KEYS = st.text(st.characters(blacklist_categories=("Cc", "Zl", "Zp")), min_size=1, max_size=8)
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=True), st.text(max_size=12),
                 st.lists(st.integers(0, 70000), max_size=3),
                 st.dictionaries(KEYS, st.integers(), max_size=2),
                 st.sampled_from(["2001:db8::1", "10.0.0.1", "30000-32767", "dsr", "node1",
                                  "web-remote", "TCP", "1.13", "Local", "::", "0.0.0.0/0"]))
BASES = [build_doc(), build_doc(mode="dsr", family="ipv6"),
         build_doc(mode="hybrid", svc_type="LoadBalancer", proto="UDP"),
         build_doc(mode="dsr", svc_type="ExternalIP", dispatch="geneve", routing="tunnel",
                   tunnel="geneve", version="1.20")]


def _run_in_process(doc: Any) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated.json"
        path.write_text(json.dumps(doc))
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["trace", str(path), "--json"])
        return code, err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_scenarios_never_traceback(data: st.DataObject) -> None:
    doc = clone(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        op = data.draw(st.sampled_from(["drop", "retype", "insert"]))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if not path:
            if op == "retype":
                doc = data.draw(JUNK)
            continue
        if op == "drop":
            del parent[path[-1]]
        elif op == "retype":
            parent[path[-1]] = data.draw(JUNK)
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[data.draw(KEYS)] = data.draw(JUNK)
            elif isinstance(target, list):
                target.append(data.draw(JUNK))
    # Unexpected exceptions propagate out of main() and fail the test with their traceback.
    code, err = _run_in_process(doc)
    assert code in (0, 2)
    if code == 2:
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert err.startswith("nodeport: error: ")
        assert "mutated.json" in err
    else:
        assert err == ""
