"""East-west: pods calling a ClusterIP or a NodePort, socket-LB on and off, hairpin; the
scenario contract's refusals, the traces' hooks and what backend and client saw, P-EW-01/02."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from model.errors import ScenarioError
from model.faults import ModelFault
from model.flows import FlowTrace, run_flows, trace_json
from model.hooks import Hook, Step
from model.scenario import parse
from nodeport.cli import main
from properties.catalogue import BY_ID
from properties.prove import COUNTEREXAMPLE, PROVED, check

DOC: dict[str, Any] = {
    "cilium": {"version": "1.18", "socketLB": {"enabled": False}},
    "nodes": [{"name": "node1", "ip": "192.168.2.3"}, {"name": "node2", "ip": "192.168.2.4"}],
    "pods": [{"name": "cli", "node": "node1", "ip": "10.0.1.5"},
             {"name": "web-0", "node": "node2", "ip": "10.0.2.10"},
             {"name": "web-1", "node": "node1", "ip": "10.0.1.10"}],
    "services": [
        {"name": "web", "type": "NodePort", "port": 80, "targetPort": 8080, "nodePort": 30080,
         "clusterIP": "10.96.0.10", "backends": ["web-0", "web-1"]},
        {"name": "self", "type": "ClusterIP", "port": 81, "targetPort": 8081,
         "clusterIP": "10.96.0.11", "backends": ["web-1"]}],
    "flows": [{"name": "f", "client": "cli", "sourcePort": 40000, "to": {"service": "web"},
               "backend": "web-0", "packets": 2}],
}


def _doc(flow: dict[str, Any] | None = None, socket_lb: bool = False, version: str = "1.18",
         **top: Any) -> dict[str, Any]:
    d = copy.deepcopy(DOC)
    d["cilium"] = {"version": version, "socketLB": {"enabled": socket_lb}}
    if flow is not None:
        d["flows"] = [{"name": "f", "sourcePort": 40000, "packets": 2, **flow}]
    d.update(top)
    return d


def _run(doc: dict[str, Any], faults: frozenset[ModelFault] = frozenset()) -> FlowTrace:
    sc = parse(doc, "<ew>")
    _, traces = run_flows(attrs.evolve(sc.world, faults=faults), sc.flows)
    return traces[0]


def _hooks(tr: FlowTrace) -> list[tuple[str | None, str]]:
    return [(h.hook.value if h.hook else None, h.action.value) for h in tr.hops]


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda d: d["flows"][0]["to"].update(service="nope"), "flows[0].to.service"),
    (lambda d: d["flows"][0]["to"].update(node="node9"), "flows[0].to.node"),
    (lambda d: d["flows"][0].update(size=100), "flows[0].size"),
    (lambda d: d["flows"][0]["to"].update(protocol="UDP"), "flows[0].to.protocol"),
    (lambda d: d["flows"][0].update(backend="cli"), "flows[0].backend"),
    (lambda d: d["flows"][0].update(to={"service": "web", "port": 80}), "flows[0].to.port"),
    (lambda d: d["services"][0].pop("clusterIP"), "flows[0].to.service"),
    (lambda d: d["services"][1].pop("clusterIP"), "services[1].clusterIP"),
    (lambda d: d["services"][1].update(nodePort=30081), "services[1].nodePort"),
    (lambda d: d["cilium"].update(socketLB={"enabled": "yes"}), "cilium.socketLB.enabled"),
    (lambda d: d["cilium"].update(socketLB={"on": True}), "cilium.socketLB.on"),
])
def test_bad_input_names_the_key(mutate: Any, path: str) -> None:
    d = copy.deepcopy(DOC)
    mutate(d)
    with pytest.raises(ScenarioError) as e:
        parse(d, "<ew>")
    assert f": {path}:" in str(e.value), str(e.value)


def test_bad_input_exits_2_in_one_line(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    d = copy.deepcopy(DOC)
    d["flows"][0]["to"] = {"service": "self", "node": "node1"}  # a ClusterIP-only service
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    assert main(["trace", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flows[0].to.service" in err, err


def test_per_packet_clusterip_remote_backend() -> None:
    tr = _run(_doc({"client": "cli", "to": {"service": "web"}, "backend": "web-0"}))
    assert tr.delivered and tr.backend_pod == "web-0"
    assert (Hook.FROM_CONTAINER.value, Step.DNAT.value) in _hooks(tr)
    assert (Hook.TO_CONTAINER.value, Step.REV_DNAT.value) in _hooks(tr)
    assert all(h.hook is not Hook.SOCK_CONNECT for h in tr.hops)
    # the backend sees the pod itself; the pod hears from the ClusterIP
    assert {str(p.src) for p in tr.backend_saw} == {"10.0.1.5:40000"}
    assert {str(p.dst) for p in tr.backend_saw} == {"10.0.2.10:8080"}
    assert {str(p.src) for p in tr.client_saw} == {"10.96.0.10:80"}
    assert len(tr.client_saw) == 2


def test_socket_lb_translates_at_connect_and_recvmsg() -> None:
    tr = _run(_doc({"client": "cli", "to": {"service": "web"}, "backend": "web-0"},
                   socket_lb=True))
    hooks = _hooks(tr)
    assert (Hook.SOCK_CONNECT.value, Step.SOCK_XLATE.value) in hooks
    assert (Hook.SOCK_RECVMSG.value, Step.SOCK_REV.value) in hooks
    assert (Hook.FROM_CONTAINER.value, Step.DNAT.value) not in hooks
    # on the wire the pod's packets already carry the backend's address ...
    wire = [h.packet for h in tr.hops if h.hook is Hook.FROM_CONTAINER and not h.reply]
    assert wire and all(str(p.dst) == "10.0.2.10:8080" for p in wire)
    # ... and its socket reports the ClusterIP
    assert {str(p.src) for p in tr.client_saw} == {"10.96.0.10:80"}


def test_hairpin_per_packet_uses_the_service_loopback_address() -> None:
    tr = _run(_doc({"client": "web-1", "to": {"service": "self"}}))
    assert tr.backend_pod == "web-1"
    assert {str(p.src.addr) for p in tr.backend_saw} == {"169.254.42.1"}
    assert {str(p.src) for p in tr.client_saw} == {"10.96.0.11:81"}
    assert {str(p.dst) for p in tr.client_saw} == {"10.0.1.10:40000"}


def test_hairpin_socket_lb_stays_on_lo() -> None:
    tr = _run(_doc({"client": "web-1", "to": {"service": "self"}}, socket_lb=True))
    assert not any(h.hook in (Hook.FROM_CONTAINER, Hook.TO_CONTAINER) for h in tr.hops)
    assert {str(p.src) for p in tr.backend_saw} == {"10.0.1.10:40000"}
    assert {str(p.src) for p in tr.client_saw} == {"10.96.0.11:81"}


def test_ipv6_hairpin_without_loopback_before_1_20() -> None:
    d = _doc({"client": "w", "to": {"service": "s"}},
             nodes=[{"name": "node1", "ip": "fd00::2:3"}],
             pods=[{"name": "w", "node": "node1", "ip": "fd00::10:1:0:a"}],
             services=[{"name": "s", "type": "ClusterIP", "port": 80, "targetPort": 8080,
                        "clusterIP": "fd00::96:a", "backends": ["w"]}])
    old = _run(d)
    assert {str(p.src) for p in old.client_saw} == {"[fd00::10:1:0:a]:8080"}
    d["cilium"]["version"] = "1.20"
    new = _run(d)
    assert {str(p.src) for p in new.client_saw} == {"[fd00::96:a]:80"}


def test_another_nodes_nodeport_per_version() -> None:
    flow = {"client": "cli", "to": {"node": "node2", "service": "web"}, "backend": "web-1"}
    old = _run(_doc(flow))  # v1.18: exact lookup, node2's nodeport_lb4 serves it
    assert (Hook.FROM_NETDEV.value, Step.SNAT.value) in _hooks(old)
    assert (Hook.FROM_NETDEV.value, Step.REV_SNAT.value) in _hooks(old)
    assert {str(p.src.addr) for p in old.backend_saw} == {"192.168.2.4"}
    new = _run(_doc(flow, version="1.20"))  # wildcard surrogate at from-container
    assert (Hook.FROM_CONTAINER.value, Step.DNAT.value) in _hooks(new)
    assert all(h.hook is not Hook.FROM_NETDEV for h in new.hops)
    assert {str(p.src.addr) for p in new.backend_saw} == {"10.0.1.5"}
    for tr in (old, new):
        assert {str(p.src) for p in tr.client_saw} == {"192.168.2.4:30080"}


def test_no_backend_at_the_pods_node() -> None:
    d = _doc({"client": "cli", "to": {"service": "self"}})
    d["services"][1]["backends"] = []
    tr = _run(d)  # per packet: tail_no_service_ipv4 answers the pod (reject, the default)
    assert not tr.delivered and tr.drop is not None and tr.drop[1].name == "DROP_NO_SERVICE"
    assert (tr.hops[-2].hook, tr.hops[-2].action) == (Hook.FROM_CONTAINER, Step.REJECT)
    assert [p.icmp.value if p.icmp else None for p in tr.client_saw] == ["port-unreachable"]
    d["cilium"]["socketLB"]["enabled"] = True  # connect() fails
    tr = _run(d)
    assert tr.drop is not None and tr.drop[1].name == "DROP_NO_SERVICE"
    assert tr.hops[-1].hook is Hook.SOCK_CONNECT and not tr.client_saw


@pytest.mark.parametrize(("fault", "socket_lb"), [
    (ModelFault.EW_REVNAT_SKIPPED, False), (ModelFault.EW_SOCK_REV_SKIPPED, True)])
def test_faults_show_the_backend_to_the_pod(fault: ModelFault, socket_lb: bool) -> None:
    d = _doc({"client": "cli", "to": {"service": "web"}, "backend": "web-0"},
             socket_lb=socket_lb)
    assert {str(p.src) for p in _run(d).client_saw} == {"10.96.0.10:80"}
    assert {str(p.src) for p in _run(d, frozenset({fault})).client_saw} == {"10.0.2.10:8080"}


def test_trace_json_names_the_new_hooks() -> None:
    d = _doc({"client": "cli", "to": {"service": "web"}, "backend": "web-1"}, socket_lb=True)
    out = trace_json(_run(d))
    hooks = {h["hook"] for h in out["hops"]}
    assert {"sock-connect", "sock-recvmsg", "from-container", "to-container"} <= hooks
    assert out["client_saw"][0]["src"] == "10.96.0.10:80"
    assert out["backend_saw"][0]["dst"] == "10.0.1.10:8080"
    out = trace_json(_run(_doc({"client": "cli", "to": {"service": "web"}})))
    assert {"from-container", "to-container"} <= {h["hook"] for h in out["hops"]}


@pytest.mark.parametrize("prop", ["P-EW-01", "P-EW-02"])
def test_expected_results_and_killed_faults(prop: str) -> None:
    p = BY_ID[prop]
    for cfg in p.configs:
        r = check(p, cfg)
        assert r.ok, (cfg.label(), r.result, r.note)
        assert r.result == (PROVED if p.expect(cfg) == "hold" else COUNTEREXAMPLE)
    for fault, cfg in p.mutants:
        assert check(p, cfg, frozenset({fault})).result == COUNTEREXAMPLE, fault


def test_existing_egress_flows_still_refuse_node_and_via() -> None:
    d = _doc({"client": "cli", "to": {"address": "203.0.113.7", "port": 80, "via": "node1"}},
             clients=[{"name": "ext", "ip": "203.0.113.7"}])
    with pytest.raises(ScenarioError, match=r"flows\[0\]\.to\.via"):
        parse(d, "<ew>")


def test_difftest_generator_reaches_pod_calls() -> None:
    """The drawn programs hold pod calls to ClusterIPs and NodePorts and hairpins, and the
    model's runs of them translate at from-container, reverse at to-container, loop back."""
    from datapath.diffgen import draw_programs
    from model.eastwest import LOOPBACK_V4, LOOPBACK_V6

    seen: set[str] = set()
    for doc in draw_programs(200, 1):
        pods = {p["name"] for p in doc["pods"]}
        calls = [f for f in doc["flows"] if f["client"] in pods and "service" in f["to"]]
        if not calls:
            continue
        seen.add(f"socket-lb-{doc['cilium']['socketLB']['enabled']}")
        seen.update("nodeport" if "node" in f["to"] else "clusterip" for f in calls)
        sc = parse(doc)
        _, traces = run_flows(sc.world, sc.flows)
        for tr in traces:
            if not tr.spec.east_west:
                continue
            for h in tr.hops:
                if h.hook is not None:
                    seen.add(f"{h.hook.value}:{h.action.value}")
                if h.packet.src.addr in (LOOPBACK_V4, LOOPBACK_V6):
                    seen.add("loopback-source")
            if tr.backend_pod == tr.spec.client and tr.client_saw:
                seen.add("hairpin-answered")
    want = {"clusterip", "nodeport", "from-container:dnat", "to-container:rev-dnat",
            "loopback-source", "hairpin-answered", "socket-lb-True", "socket-lb-False",
            "sock-connect:sock-xlate", "sock-recvmsg:sock-rev"}
    assert want <= seen, sorted(want - seen)


def test_other_nodes_nodeport_without_backends_answers_the_pod() -> None:
    """v1.18: node2's nodeport_lb4 rejects; the ICMP error reaches the calling pod, which is
    neither a backend nor answered (a shrunk difftest program)."""
    d = _doc({"client": "cli", "to": {"node": "node2", "service": "web"}})
    d["services"][0]["backends"] = []
    tr = _run(d)
    assert not tr.delivered and tr.backend_pod is None and not tr.backend_saw
    assert tr.drop is not None and tr.drop[0] == "node2"
    assert [p.icmp.value if p.icmp else None for p in tr.client_saw] == ["port-unreachable"]


@pytest.mark.parametrize("fault", ["ew_revnat_skipped", "hairpin_no_loopback",
                                   "ew_sock_rev_skipped"])
def test_difftest_kills_the_datapath_faults(fault: str) -> None:
    """Pod calls with socket-LB on and off agree between model and reference, and each
    east-west datapath fault makes them disagree."""
    from datapath.difftest import DiffRun
    from datapath.host import make_node

    flows: list[dict[str, Any]] = [
        {"client": "cli", "to": {"service": "web"}, "backend": "web-0"},
        {"client": "web-1", "to": {"service": "self"}, "sourcePort": 40001}]
    for sock in (False, True):
        d = _doc(socket_lb=sock, version="1.20")
        d["flows"] = [{"name": f"f{i}", "sourcePort": 40000, "packets": 2, **f}
                      for i, f in enumerate(flows)]
        sc = parse(d, "<ew>")
        assert DiffRun(sc.world, make_node).run(sc.flows) is None
        div = DiffRun(sc.world, make_node, faults=frozenset({fault})).run(sc.flows)
        # a fault of the other translation point changes nothing: socket-LB translates at
        # connect()/recvmsg, per-packet LB at from-container/to-container
        shows = sock if fault == "ew_sock_rev_skipped" else not sock
        assert (div is not None) == shows, (fault, sock, div)


def _node_of(doc: dict[str, Any], node: str = "node1") -> tuple[Any, Any]:
    """The node's context and state once the scenario is programmed (no flow run)."""
    from model.network import _ctx

    sc = parse(doc, "<ew>")
    state, _ = run_flows(sc.world, [])
    return _ctx(sc.world, state, node, None), state.nodes[node]


def test_recvmsg_shows_the_backend_once_the_service_is_stale() -> None:
    """__sock4_xlate_rev (v1.20 bpf_sock.c:613-621): the frontend is given back only while the
    service exists with the rev_nat_index recorded at connect() and has backends; a reply
    from any other address is not the connected peer's and is left alone."""
    from ipaddress import ip_address

    from model.eastwest import sock_connect, sock_rev
    from model.values import Endpoint, Packet, Proto

    ctx, st = _node_of(_doc(socket_lb=True))
    pod = Endpoint(addr=ip_address("10.0.1.5"), port=40000)
    vip = Endpoint(addr=ip_address("10.96.0.10"), port=80)
    peer, err = sock_connect(ctx, st, Packet(src=pod, dst=vip, proto=Proto.TCP))
    assert err is None and peer is not None and peer.frontend == vip
    reply = Packet(src=peer.backend, dst=pod, proto=Proto.TCP)
    assert sock_rev(ctx, st, peer, reply).src == vip
    other = attrs.evolve(reply, src=attrs.evolve(peer.backend, port=9))
    assert sock_rev(ctx, st, peer, other) == other
    key = (vip.addr, vip.port, Proto.TCP)
    svc = st.lb.services[key]
    stale = {
        "deleted": {k: v for k, v in st.lb.services.items() if k != key},
        "no backends": {**st.lb.services, key: attrs.evolve(svc, backend_slots=())},
        "new rev_nat_index": {**st.lb.services,
                              key: attrs.evolve(svc, rev_nat_index=svc.rev_nat_index + 1)},
    }
    for why, services in stale.items():
        now = attrs.evolve(st, lb=attrs.evolve(st.lb, services=services))
        assert sock_rev(ctx, now, peer, reply) == reply, why


def test_a_connection_from_before_the_wildcard_keeps_its_path() -> None:
    """v1.20 looks up the 0.0.0.0:nodePort surrogate only for a new connection: a CT_EGRESS
    entry for the packet's own tuple (a flow established on the legacy path) skips it
    (bpf_lxc.c:190-198), so the packet leaves untranslated for that node's NodePort."""
    from ipaddress import ip_address

    from model.conntrack import created
    from model.eastwest import from_container
    from model.hooks import Verdict, egress_key
    from model.values import Endpoint, Packet, Proto, TcpFlags

    ctx, st = _node_of(_doc(version="1.20"))
    pod = Endpoint(addr=ip_address("10.0.1.5"), port=40000)
    other_np = Endpoint(addr=ip_address("192.168.2.4"), port=30080)
    pkt = Packet(src=pod, dst=other_np, proto=Proto.TCP, flags=TcpFlags.SYN)
    _, new = from_container(ctx, st, pkt, per_packet=True)
    assert new.step is Step.DNAT and new.packet.dst != other_np
    entry = created(ctx.cfg.version, pkt, ctx.now, rev_nat_index=0)
    old = attrs.evolve(st, ct=st.ct.put(egress_key(pod, other_np, Proto.TCP), entry))
    _, kept = from_container(ctx, old, pkt, per_packet=True)
    assert kept.step is Step.PASS and kept.packet == pkt and kept.verdict is Verdict.FORWARD


def test_a_packet_to_the_loopback_address_without_a_hairpin_entry_is_forwarded() -> None:
    """Only a CT entry flagged loopback turns a packet to the service loopback address back
    into the pod (hairpin_flow, v1.20 bpf_lxc.c:1189, :1242); without one it is forwarded."""
    from ipaddress import ip_address

    from model.eastwest import LOOPBACK_V4, from_container
    from model.hooks import Verdict
    from model.values import Endpoint, Packet, Proto

    ctx, st = _node_of(_doc())
    pkt = Packet(src=Endpoint(addr=ip_address("10.0.1.10"), port=8081),
                 dst=Endpoint(addr=LOOPBACK_V4, port=40000), proto=Proto.TCP)
    assert from_container(ctx, st, pkt, per_packet=True)[1].verdict is Verdict.FORWARD
