"""Every mode x family x placement x service type x protocol x version: path, views, maps."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.flows import FlowTrace, run_flows
from model.hooks import Step, dsr_snat_key, egress_key
from model.maps import CtTuple, NatEntry, NodeState, TupleFlags
from model.network import ClusterState, Hop
from model.scenario import Scenario, parse
from model.snat import fwd_key, rev_key
from model.values import DsrKind, Endpoint, Proto
from tests.conftest import ADDRS, NODE_PORT, SVC_PORT, TARGET_PORT, build_doc, legs

MODES = ("snat", "dsr", "hybrid")
FAMILIES = ("ipv4", "ipv6")
PLACEMENTS = ("local", "remote")
TYPES = ("NodePort", "LoadBalancer", "ExternalIP")
PROTOS = ("TCP", "UDP")
VERSIONS = ("1.18", "1.20")
NODES = ("node1", "node2", "node3")


@attrs.frozen(kw_only=True)
class Case:
    """One point of the matrix and what Cilium does with it."""

    mode: str
    family: str
    placement: str
    svc_type: str
    proto: str
    version: str = "1.18"
    source_port: int = 40000
    packets: int = 3

    @property
    def path(self) -> str:
        """'local', 'dsr' or 'snat': which of the brief's §1.2-§1.4 paths applies."""
        if self.placement == "local":
            return "local"
        if self.mode == "dsr" or (self.mode == "hybrid" and self.proto == "TCP"):
            return "dsr"
        return "snat"

    def doc(self) -> dict[str, Any]:
        return build_doc(mode=self.mode, family=self.family, placement=self.placement,
                         svc_type=self.svc_type, proto=self.proto, version=self.version,
                         source_port=self.source_port, packets=self.packets)


def _ep(family: str, host: str, port: int) -> Endpoint:
    return Endpoint(addr=ip_address(ADDRS[family][host]), port=port)


def frontend_of(case: Case) -> Endpoint:
    host, port = {"NodePort": ("node1", NODE_PORT), "LoadBalancer": ("vip", SVC_PORT),
                  "ExternalIP": ("ext", SVC_PORT)}[case.svc_type]
    return _ep(case.family, host, port)


def run_case(case: Case) -> tuple[Scenario, ClusterState, FlowTrace]:
    sc = parse(case.doc(), "matrix")
    state, traces = run_flows(sc.world, sc.flows)
    return sc, state, traces[0]




def _nodes(hops: list[Hop], reply: bool) -> list[str]:
    return [h.at for h in hops if h.reply is reply and h.at in NODES]


def check_case(case: Case) -> None:
    """Assert the whole expected behaviour of one matrix point."""
    sc, state, tr = run_case(case)
    world = sc.world
    proto = Proto[case.proto]
    client = _ep(case.family, "client", case.source_port)
    fe = frontend_of(case)
    backend = _ep(case.family, "local" if case.placement == "local" else "remote", TARGET_PORT)
    node1 = ip_address(ADDRS[case.family]["node1"])
    path = case.path

    # Delivered, one reply per request, and the client only hears from the frontend.
    assert tr.delivered, tr.drop
    assert len(tr.backend_saw) == len(tr.client_saw) == case.packets
    assert all(p.src == fe and p.dst == client for p in tr.client_saw)
    assert all(p.dst == backend for p in tr.backend_saw)

    # What the backend saw as source.
    if path == "snat":
        nat_ports = {p.src.port for p in tr.backend_saw}
        assert {p.src.addr for p in tr.backend_saw} == {node1}
        assert len(nat_ports) == 1
        nat_port = nat_ports.pop()
        assert world.cfg.nat_min <= nat_port <= world.cfg.nat_max_port
        if world.cfg.nat_min <= client.port:
            assert nat_port == client.port  # an in-range client port is kept
    else:
        assert all(p.src == client for p in tr.backend_saw)

    # Which nodes each request and each reply traverse.
    want_req = {"local": ["node1"], "dsr": ["node1", "node2"], "snat": ["node1", "node2"]}[path]
    want_rep = {"local": ["node1"], "dsr": ["node2"], "snat": ["node2", "node1"]}[path]
    packet_legs = legs(tr)
    assert len(packet_legs) == case.packets
    for leg in packet_legs:
        assert _nodes(leg, reply=False) == want_req
        assert _nodes(leg, reply=True) == want_rep

    # DSR metadata: on TCP SYNs and on every UDP datagram, only on the DSR path.
    for i, leg in enumerate(packet_legs):
        out_of_node1 = next(h for h in leg if h.at == "node1" and not h.reply)
        carries = path == "dsr" and (proto is Proto.UDP or i == 0)
        assert (out_of_node1.packet.dsr is not None) is carries
        if carries:
            assert out_of_node1.action is Step.DSR
            assert out_of_node1.packet.dsr is not None
            assert out_of_node1.packet.dsr.frontend == fe
            kind = DsrKind.IPV6_DSTOPT if case.family == "ipv6" else DsrKind.IPV4_OPTION
            assert out_of_node1.packet.dsr.kind is kind
        assert out_of_node1.packet.outer is None  # native routing: never encapsulated

    check_maps(case, sc, state, client, fe, backend, tr)


def check_maps(case: Case, sc: Scenario, state: ClusterState, client: Endpoint,
               fe: Endpoint, backend: Endpoint, tr: FlowTrace) -> None:
    """Cilium's map entries after the flow, with the keys of the brief's §0.3 table."""
    world = sc.world
    proto = Proto[case.proto]
    path = case.path
    n1, n2, n3 = (state.nodes[n] for n in NODES)
    rev_nat = next(f.rev_nat_index for f in world.cluster.frontends
                   if f.addr == fe and f.proto is proto)
    pod = "web-local" if case.placement == "local" else "web-remote"
    bid = next(b.backend_id for b in world.cluster.backends.values() if b.pod == pod)

    svc_key = CtTuple(saddr=client.addr, daddr=fe.addr, sport=fe.port, dport=client.port,
                      nexthdr=proto, flags=TupleFlags.SERVICE)
    svc_entry = n1.ct.get(svc_key)
    assert svc_entry is not None
    assert (svc_entry.backend_id, svc_entry.rev_nat_index) == (bid, rev_nat)
    egress = CtTuple(saddr=backend.addr, daddr=client.addr, sport=client.port,
                     dport=backend.port, nexthdr=proto, flags=TupleFlags.OUT)
    assert egress == egress_key(client, backend, proto)

    node1_ct = {svc_key} | ({egress} if path in ("local", "snat") else set())
    assert set(n1.ct) == node1_ct
    if path != "dsr":
        np_entry = n1.ct.get(egress)
        assert np_entry is not None
        assert np_entry.node_port and not np_entry.dsr_internal
        assert np_entry.rev_nat_index == rev_nat

    if path == "snat":
        nat = tr.backend_saw[0].src
        fwd = fwd_key(client, backend, proto)
        rev = rev_key(backend, nat, proto)
        assert (fwd.saddr, fwd.daddr, fwd.sport, fwd.dport, fwd.flags) == (
            client.addr, backend.addr, client.port, backend.port, TupleFlags.OUT)
        assert (rev.saddr, rev.daddr, rev.sport, rev.dport, rev.flags) == (
            backend.addr, nat.addr, backend.port, nat.port, TupleFlags.IN)
        assert set(n1.snat) == {fwd, rev}
        assert _nat(n1, fwd) == (nat.addr, nat.port)
        assert _nat(n1, rev) == (client.addr, client.port)
    else:
        assert len(n1.snat) == 0

    if path == "dsr":
        assert set(n2.ct) == {egress}
        entry = n2.ct.get(egress)
        assert entry is not None and entry.dsr_internal and not entry.node_port
        if case.version == "1.20":  # v1.19+: the frontend lives in the CT entry
            assert (entry.nat_addr, entry.nat_port) == (fe.addr, fe.port)
            assert len(n2.snat) == 0
        else:  # v1.14-v1.18: snat_v4_create_dsr keeps it in the SNAT map
            assert (entry.nat_addr, entry.nat_port) == (None, 0)
            key = dsr_snat_key(client, backend, proto)
            assert (key.saddr, key.daddr, key.sport, key.dport, key.flags) == (
                backend.addr, client.addr, backend.port, client.port, TupleFlags.OUT)
            assert set(n2.snat) == {key}
            assert _nat(n2, key) == (fe.addr, fe.port)
    else:
        assert len(n2.ct) == 0 and len(n2.snat) == 0
    assert len(n3.ct) == 0 and len(n3.snat) == 0


def _nat(st: Any, key: Any) -> tuple[Any, int]:
    node: NodeState = st
    entry: NatEntry | None = node.snat.get(key)
    assert entry is not None
    return entry.to_addr, entry.to_port


MATRIX = [Case(mode=m, family=f, placement=p, svc_type=t, proto=pr, version=v)
          for m in MODES for f in FAMILIES for p in PLACEMENTS for t in TYPES
          for pr in PROTOS for v in VERSIONS]


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: "-".join(
    (c.mode, c.family, c.placement, c.svc_type, c.proto, c.version)))
def test_matrix(case: Case) -> None:
    check_case(case)


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(MODES), family=st.sampled_from(FAMILIES),
       placement=st.sampled_from(PLACEMENTS), svc_type=st.sampled_from(TYPES),
       proto=st.sampled_from(PROTOS), version=st.sampled_from(VERSIONS),
       source_port=st.integers(1, 65535), packets=st.integers(1, 5))
def test_matrix_any_source_port(mode: str, family: str, placement: str, svc_type: str,
                                proto: str, version: str, source_port: int,
                                packets: int) -> None:
    """The same expectations hold for any client port and any number of packets."""
    check_case(Case(mode=mode, family=family, placement=placement, svc_type=svc_type,
                    proto=proto, version=version, source_port=source_port, packets=packets))


def test_hybrid_is_dsr_for_tcp_and_snat_for_udp() -> None:
    """A guard on the matrix's own oracle: the case table really distinguishes the paths."""
    paths = {(c.mode, c.proto, c.placement): c.path for c in MATRIX}
    assert paths[("hybrid", "TCP", "remote")] == "dsr"
    assert paths[("hybrid", "UDP", "remote")] == "snat"
    assert paths[("dsr", "UDP", "remote")] == "dsr"
    assert {paths[(m, p, "local")] for m in MODES for p in PROTOS} == {"local"}

