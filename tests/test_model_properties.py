"""Model invariants over random clusters and flow sequences, and the LRU map itself."""

from __future__ import annotations

from collections import OrderedDict
from ipaddress import ip_address
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.faults import ModelFault
from model.flows import FlowTrace, run_flows, trace_json
from model.maps import LruMap, TupleFlags
from model.network import ClusterState, World
from model.scenario import parse
from model.snat import fwd_key, rev_key
from model.values import Endpoint, IcmpKind, IPAddress
from tests.conftest import build_doc

V4 = {"node": "192.168.2.{}", "pod": "10.0.{}.{}", "client": "203.0.113.{}",
      "vip": "172.16.10.{}", "ext": "198.51.100.{}"}
V6 = {"node": "2001:db8:2::{}", "pod": "2001:db8:10:{}::{}", "client": "2001:db8:ff00::{}",
      "vip": "2001:db8:16:10::{}", "ext": "2001:db8:51:100::{}"}


@st.composite
def clusters(draw: st.DrawFn, *, small_nat: bool = False) -> dict[str, Any]:
    """A random scenario: 1-3 nodes, 1-4 pods, 1-3 services, 1-3 clients, 1-6 flows."""
    fam = draw(st.sampled_from([V4, V6]))
    version = draw(st.sampled_from(["1.13", "1.18", "1.20"]))
    mode = draw(st.sampled_from(["snat", "dsr", "hybrid"]))
    cilium: dict[str, Any] = {"version": version, "seed": draw(st.integers(0, 2**32)),
                              "loadBalancer": {"mode": mode, "dsrDispatch": "opt"},
                              "serviceNoBackendResponse": draw(st.sampled_from(["reject",
                                                                                "drop"]))}
    if version != "1.13" and draw(st.booleans()):
        cilium.update(routingMode="tunnel", tunnelProtocol="geneve")
        cilium["loadBalancer"]["dsrDispatch"] = "geneve"
    if small_nat:
        cilium["nodePort"] = {"range": draw(st.sampled_from(["30000-65530", "30000-65533"]))}
    n_nodes = draw(st.integers(1, 3))
    nodes = [{"name": f"node{i + 1}", "ip": fam["node"].format(3 + i)} for i in range(n_nodes)]
    pods = [{"name": f"pod{i}", "node": f"node{draw(st.integers(1, n_nodes))}",
             "ip": fam["pod"].format(i + 1, 10 + i)} for i in range(draw(st.integers(1, 4)))]
    services = []
    for i in range(draw(st.integers(1, 3))):
        svc: dict[str, Any] = {
            "name": f"svc{i}", "type": draw(st.sampled_from(["NodePort", "LoadBalancer",
                                                              "ExternalIP"])),
            "protocol": draw(st.sampled_from(["TCP", "UDP"])), "port": 80 + i,
            "targetPort": draw(st.sampled_from([8080, 8081, 40000])),
            "backends": draw(st.lists(st.sampled_from([p["name"] for p in pods]),
                                      unique=True, max_size=3)),
            "externalTrafficPolicy": draw(st.sampled_from(["Cluster", "Cluster", "Local"]))}
        if svc["type"] != "ExternalIP":
            svc["nodePort"] = 30080 + i
        if svc["type"] == "LoadBalancer":
            svc["loadBalancerIP"] = fam["vip"].format(2 + i)
        if svc["type"] == "ExternalIP":
            svc["externalIPs"] = [fam["ext"].format(20 + i)]
        services.append(svc)
    clients = [{"name": f"c{i}", "ip": fam["client"].format(7 + i)}
               for i in range(draw(st.integers(1, 3)))]
    flows: list[dict[str, Any]] = []
    used: set[tuple[str, int]] = set()
    for i in range(draw(st.integers(1, 6))):
        svc = draw(st.sampled_from(services))
        via = f"node{draw(st.integers(1, n_nodes))}"
        if svc["type"] == "NodePort" or (svc["type"] == "LoadBalancer" and draw(st.booleans())):
            to: dict[str, Any] = {"node": via, "service": svc["name"]}
        else:
            addr = svc.get("loadBalancerIP") or svc["externalIPs"][0]
            to = {"address": addr, "port": svc["port"], "via": via}
        client = draw(st.sampled_from(clients))["name"]
        port = draw(st.sampled_from([40000, 40001, 1024, 65535, 33000]))
        if (client, port) in used:
            # One client reusing a source port towards several frontends is Cilium's known
            # CT-collision issue (test_known_issue_reused_client_port_udp_dsr); keep apart.
            port = 20000 + i
        used.add((client, port))
        flows.append({"name": f"f{i}", "client": client, "sourcePort": port, "to": to,
                      "packets": draw(st.integers(1, 3))})
    return {"cilium": cilium, "nodes": nodes, "pods": pods, "services": services,
            "clients": clients, "flows": flows}


def _run(doc: dict[str, Any], faults: frozenset[ModelFault] = frozenset()
         ) -> tuple[World, ClusterState, list[FlowTrace]]:
    sc = parse(doc, "random")
    world = attrs.evolve(sc.world, faults=faults)
    state, traces = run_flows(world, sc.flows)
    return world, state, traces


def client_view_violations(traces: list[FlowTrace]) -> list[str]:
    """Replies whose source is not the frontend the client contacted (or sent elsewhere)."""
    bad = []
    for tr in traces:
        for p in tr.client_saw:
            if p.icmp is IcmpKind.PORT_UNREACHABLE:
                ok = p.src.addr == tr.spec.frontend.addr and p.dst.addr == tr.spec.source.addr
            else:
                ok = p.src == tr.spec.frontend and p.dst == tr.spec.source
            if not ok:
                bad.append(f"{tr.spec.name}: client saw {p.src} -> {p.dst}")
    return bad


def nat_range_violations(world: World, state: ClusterState,
                         traces: list[FlowTrace]) -> list[str]:
    """NAT ports outside [NODEPORT_PORT_MIN_NAT, NODEPORT_PORT_MAX_NAT]."""
    cfg = world.cfg
    node_ips = {n.ip for n in world.cluster.nodes}
    bad = []
    for tr in traces:
        for p in tr.backend_saw:
            if p.src.addr in node_ips and not cfg.nat_min <= p.src.port <= cfg.nat_max_port:
                bad.append(f"{tr.spec.name}: backend saw NAT port {p.src.port}")
    for name, ns in state.nodes.items():
        for key in ns.snat:
            if key.flags is TupleFlags.IN and not cfg.nat_min <= key.dport <= cfg.nat_max_port:
                bad.append(f"{name}: reverse SNAT entry on port {key.dport}")
    return bad


def bijection_violations(world: World, state: ClusterState) -> list[str]:
    """Every forward SNAT entry has its reverse twin and vice versa, one to one."""
    clients: set[IPAddress] = {c.ip for c in world.cluster.clients}
    bad = []
    for name, ns in state.nodes.items():
        fwd = {k: v for k, v in ns.snat.entries.items()
               if k.flags is TupleFlags.OUT and k.saddr in clients}  # not the DSR entries
        rev = {k: v for k, v in ns.snat.entries.items() if k.flags is TupleFlags.IN}
        if len(fwd) != len(rev):
            bad.append(f"{name}: {len(fwd)} forward vs {len(rev)} reverse entries")
        for k, v in fwd.items():
            client = Endpoint(addr=k.saddr, port=k.sport)
            backend = Endpoint(addr=k.daddr, port=k.dport)
            r = rev.get(rev_key(backend, Endpoint(addr=v.to_addr, port=v.to_port), k.nexthdr))
            if r is None or (r.to_addr, r.to_port) != (client.addr, client.port):
                bad.append(f"{name}: forward {k} has no matching reverse entry")
        for k, v in rev.items():
            back = fwd.get(fwd_key(Endpoint(addr=v.to_addr, port=v.to_port),
                                   Endpoint(addr=k.saddr, port=k.sport), k.nexthdr))
            if back is None or (back.to_addr, back.to_port) != (k.daddr, k.dport):
                bad.append(f"{name}: reverse {k} has no matching forward entry")
    return bad


PROPS = settings(max_examples=60, deadline=None)


@PROPS
@given(doc=clusters())
def test_client_only_hears_from_its_frontend(doc: dict[str, Any]) -> None:
    _, _, traces = _run(doc)
    assert client_view_violations(traces) == []
    for tr in traces:
        if tr.delivered:
            assert len(tr.client_saw) == len(tr.backend_saw) == tr.spec.packets


@PROPS
@given(doc=clusters(small_nat=True))
def test_nat_ports_in_range_and_pairs_bijective(doc: dict[str, Any]) -> None:
    world, state, traces = _run(doc)
    assert nat_range_violations(world, state, traces) == []
    assert bijection_violations(world, state) == []


@settings(max_examples=25, deadline=None)
@given(doc=clusters())
def test_same_seed_same_trace(doc: dict[str, Any]) -> None:
    _, s1, t1 = _run(doc)
    _, s2, t2 = _run(doc)
    assert [trace_json(t) for t in t1] == [trace_json(t) for t in t2]
    assert s1 == s2


def _collision_doc(**kw: Any) -> dict[str, Any]:
    doc = build_doc(packets=2, **kw)
    base = doc["flows"][0]
    doc["flows"] = [dict(base, name="a"), dict(base, name="b", client="client2"),
                    dict(base, name="c", sourcePort=1024)]
    return doc


@pytest.mark.parametrize(("fault", "check"), [
    (ModelFault.SNAT_IGNORE_REVERSE_ENTRY, "bijection"),
    (ModelFault.NAT_RANGE_OVERLAPS_NODEPORT, "range"),
    (ModelFault.REVSNAT_WRONG_PORT, "client"),
    (ModelFault.SKIP_REVNAT_LOCAL, "client"),
    (ModelFault.SKIP_REVNAT_DSR, "client"),
])
def test_invariants_catch_seeded_faults(fault: ModelFault, check: str) -> None:
    """The invariants above can fail: each seeded fault breaks at least one of them."""
    kw: dict[str, Any] = {"placement": "local" if fault is ModelFault.SKIP_REVNAT_LOCAL
                          else "remote"}
    if fault is ModelFault.SKIP_REVNAT_DSR:
        kw["mode"] = "dsr"
    if fault is ModelFault.NAT_RANGE_OVERLAPS_NODEPORT:  # a wide NodePort range to stray into
        kw["cilium"] = {"nodePort": {"range": "1000-60000"}}
    doc = _collision_doc(**kw)
    world, state, traces = _run(doc)
    assert (client_view_violations(traces), nat_range_violations(world, state, traces),
            bijection_violations(world, state)) == ([], [], [])
    world, state, traces = _run(doc, frozenset({fault}))
    found = {"bijection": bijection_violations(world, state),
             "range": nat_range_violations(world, state, traces),
             "client": client_view_violations(traces)}[check]
    assert found


def test_seed_changes_random_choices() -> None:
    """Backend selection is random per seed (the determinism test is not vacuous)."""
    picks = set()
    for seed in range(12):
        doc = build_doc(seed=seed, packets=1)
        doc["pods"].append({"name": "web-3", "node": "node3", "ip": "10.0.3.10"})
        doc["services"][0]["backends"] = ["web-remote", "web-3", "web-local"]
        picks.add(_run(doc)[2][0].backend_pod)
    assert len(picks) >= 2


def test_ct_service_keeps_a_connection_on_one_backend() -> None:
    doc = build_doc(packets=6)
    doc["pods"].append({"name": "web-3", "node": "node3", "ip": "10.0.3.10"})
    doc["services"][0]["backends"] = ["web-remote", "web-3"]
    tr = _run(doc)[2][0]
    assert len({p.dst for p in tr.backend_saw}) == 1
    tr_f = _run(doc, frozenset({ModelFault.LB_IGNORES_CT_SERVICE}))[2][0]
    assert len({p.dst for p in tr_f.backend_saw}) > 1 or not tr_f.delivered


def test_known_issue_reused_client_port_udp_dsr() -> None:
    """Cilium's Known Issue: one client port to two frontends sharing a backend collides.

    nodeport_dsr_ingress_ipv4 does not refresh an established UDP DSR entry (a TODO in
    Cilium's source), so after talking to node3's NodePort the client's replies for node1's
    NodePort still carry node3's frontend. The model reproduces Cilium here on purpose.
    """
    doc = build_doc(mode="dsr", proto="UDP", packets=2)
    base = doc["flows"][0]
    doc["flows"] = [dict(base, name="via3", to={"node": "node3", "service": "web"}),
                    dict(base, name="via1")]
    _, _, (via3, via1) = _run(doc)
    assert via3.delivered and via1.delivered
    node3 = Endpoint(addr=ip_address("192.168.2.5"), port=30080)
    assert {p.src for p in via3.client_saw} == {node3}
    assert {p.src for p in via1.client_saw} == {node3}  # not node1's frontend
    assert client_view_violations([via1])
    # TCP re-records the frontend on each SYN, so the same reuse is harmless there.
    doc = build_doc(mode="dsr", proto="TCP", packets=2)
    doc["flows"] = [dict(doc["flows"][0], name="via3", to={"node": "node3", "service": "web"}),
                    dict(doc["flows"][0], name="via1")]
    assert client_view_violations(_run(doc)[2]) == []


# --- LruMap: BPF_MAP_TYPE_LRU_HASH behaviour ---------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["put", "noexist", "touch", "get", "delete"]),
                         st.integers(0, 7), st.integers(0, 100)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 5), ops=OPS)
def test_lru_map_matches_reference(capacity: int, ops: list[tuple[str, int, int]]) -> None:
    m: LruMap[int, int] = LruMap(capacity=capacity)
    ref: OrderedDict[int, int] = OrderedDict()
    for op, k, v in ops:
        if op == "put" or op == "noexist":
            if op == "noexist" and k in ref:
                assert m.put_noexist(k, v) is None
                continue
            ref.pop(k, None)
            if len(ref) >= capacity:
                ref.popitem(last=False)  # the least recently used goes
            ref[k] = v
            m = m.put(k, v) if op == "put" else m.put_noexist(k, v)  # type: ignore[assignment]
            assert m is not None
        elif op == "touch":
            if k in ref:
                ref.move_to_end(k)
            m = m.touch(k)
        elif op == "get":
            assert m.get(k) == ref.get(k)  # get does not refresh recency
        else:
            ref.pop(k, None)
            m = m.delete(k)
        assert len(m) <= capacity
        assert list(m) == list(ref)
        assert dict(m.entries) == dict(ref)


def test_lru_map_is_immutable() -> None:
    m: LruMap[str, int] = LruMap(capacity=2)
    m2 = m.put("a", 1)
    assert len(m) == 0 and len(m2) == 1
    with pytest.raises(TypeError):
        m2.entries["b"] = 2  # type: ignore[index]
    m3 = m2.put("b", 2).put("c", 3)
    assert list(m3) == ["b", "c"] and list(m2) == ["a"]


def test_ct_map_eviction_loses_a_dsr_connection() -> None:
    """A tiny CT map (bpf.ctTcpMax) on the backend node evicts the first DSR entry."""
    doc = build_doc(mode="dsr", packets=1, cilium={"bpf": {"ctTcpMax": 1}})
    base = doc["flows"][0]
    doc["flows"] = [dict(base, name="a"), dict(base, name="b", sourcePort=40001)]
    _, state, traces = _run(doc)
    assert all(t.delivered for t in traces)
    n2 = state.nodes["node2"].ct
    assert len(n2) == 1
    (key,) = list(n2)
    assert key.sport == 40001 and n2.get(key) is not None
    assert ip_address("10.0.2.10") == key.saddr


def test_ct_maps_split_by_protocol_evict_separately() -> None:
    """Cilium keeps TCP in cilium_ct4_global (CT_MAP_SIZE_TCP) and everything else in
    cilium_ct_any4_global (CT_MAP_SIZE_ANY) (conntrack_map.h, get_ct_map4): a UDP entry
    never evicts a TCP one. The difftest generator found the model's one shared map."""
    from model.maps import CtEntry, CtTuple
    from model.values import Proto

    def key(proto: Proto, port: int) -> CtTuple:
        return CtTuple(daddr=ip_address("10.0.0.1"), saddr=ip_address("10.0.0.2"),
                       dport=80, sport=port, nexthdr=proto, flags=TupleFlags.OUT)

    m: LruMap[CtTuple, CtEntry] = LruMap(capacity=1, any_capacity=2)
    m = m.put(key(Proto.TCP, 1), CtEntry()).put(key(Proto.UDP, 1), CtEntry())
    m = m.put(key(Proto.UDP, 2), CtEntry())
    assert set(m) == {key(Proto.TCP, 1), key(Proto.UDP, 1), key(Proto.UDP, 2)}
    m = m.put(key(Proto.UDP, 3), CtEntry())  # the oldest UDP entry goes, not the TCP one
    assert set(m) == {key(Proto.TCP, 1), key(Proto.UDP, 2), key(Proto.UDP, 3)}
    m = m.put(key(Proto.UDP, 2), CtEntry(backend_id=7))  # an update evicts nothing
    assert len(m) == 3 and m.get(key(Proto.UDP, 2)) == CtEntry(backend_id=7)
    m = m.put(key(Proto.TCP, 2), CtEntry())
    assert set(m) == {key(Proto.TCP, 2), key(Proto.UDP, 2), key(Proto.UDP, 3)}
    # bpf.ctAnyMax sizes the non-TCP map (Helm's default 262144 when absent)
    from model.network import initial_state

    assert parse(build_doc()).world.cfg.ct_any_max == 262144
    world = parse(build_doc(cilium={"bpf": {"ctTcpMax": 5, "ctAnyMax": 3}})).world
    ct = initial_state(world).nodes["node1"].ct
    assert (ct.capacity, ct.any_capacity) == (5, 3)


def test_connection_endings_and_lost_replies() -> None:
    """close: half | rst | backend-fin | backend-rst and lostReplies: what the client sees,
    and the frontend node's CT_EGRESS entry afterwards (closed one way, both, or not)."""
    def run(close: object = None, lost: bool = False, again: bool = False
            ) -> tuple[list[FlowTrace], Any]:
        doc = build_doc(packets=2)
        f = doc["flows"][0]
        if close is not None:
            f["close"] = close
        if lost:
            f["lostReplies"] = True
        if again:  # the same connection opened again with a SYN
            doc["flows"].append(dict(f, name="again", close=False, lostReplies=False))
        _, state, traces = _run(doc)
        (entry,) = [e for k, e in state.nodes["node1"].ct.entries.items()
                    if k.flags is TupleFlags.OUT]
        return traces, entry

    seen = {c: [p.flags.letters() for p in run(c)[0][0].client_saw]
            for c in (True, "half", "rst", "backend-fin", "backend-rst")}
    assert seen == {True: ["SA", "FA"], "half": ["SA", "A"], "rst": ["SA"],
                    "backend-fin": ["SA", "FA"], "backend-rst": ["SA", "R"]}
    _, half = run("half")
    assert half.tx_closing and not half.rx_closing  # the client's FIN only
    _, bfin = run("backend-fin")
    assert bfin.rx_closing and not bfin.tx_closing  # the backend's FIN only
    _, fin = run(True)
    assert fin.tx_closing and fin.rx_closing
    traces, reopened = run("half", again=True)  # a SYN on an entry closed one way
    assert traces[1].delivered and not (reopened.tx_closing or reopened.rx_closing)
    traces, lost = run(lost=True)
    assert traces[0].client_saw == () and traces[0].delivered
    assert not lost.rx_closing and lost.seen_non_syn  # the ACK, no reply seen
    assert lost.tx_syn_seen and not lost.rx_syn_seen  # no SYN-ACK reached the entry
    _, lost_rst = run("rst", lost=True)  # RST before both SYNs: closed both ways
    assert lost_rst.tx_closing and lost_rst.rx_closing
    with pytest.raises(Exception, match="close"):
        _run(dict(build_doc(), flows=[dict(build_doc()["flows"][0], close="maybe")]))
