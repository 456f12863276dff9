"""DSR dispatch encodings and versions: Geneve in tunnel mode, tunnel SNAT, v1.13 rules."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs
import pytest

from model.flows import FlowTrace, run_flows
from model.hooks import Hook, Step, egress_key
from model.network import ClusterState, EndKind, reply_to, walk
from model.scenario import parse
from model.values import WORLD_ID, DsrKind, Endpoint, Proto, TcpFlags
from tests.conftest import ADDRS, NODE_PORT, TARGET_PORT, build_doc, legs

NODES = ("node1", "node2", "node3")


def _run(**kw: Any) -> tuple[ClusterState, FlowTrace]:
    sc = parse(build_doc(**kw), "dispatch")
    state, traces = run_flows(sc.world, sc.flows)
    return state, traces[0]




@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
@pytest.mark.parametrize("version", ["1.18", "1.20"])
def test_geneve_dispatch_in_tunnel_mode(family: str, proto: str, version: str) -> None:
    state, tr = _run(mode="dsr", family=family, proto=proto, version=version,
                     dispatch="geneve", routing="tunnel", tunnel="geneve", packets=3)
    a = ADDRS[family]
    fe = Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT)
    client = Endpoint(addr=ip_address(a["client"]), port=40000)
    assert tr.delivered, tr.drop
    assert all(p.src == client for p in tr.backend_saw)
    assert all(p.src == fe and p.outer is None for p in tr.client_saw)
    for i, leg in enumerate(legs(tr)):
        hops = [h for h in leg if h.at in NODES]
        pkt = next(h for h in hops if h.at == "node1" and not h.reply).packet
        assert pkt.outer is not None
        assert (pkt.outer.src, pkt.outer.dst) == (ip_address(a["node1"]), ip_address(a["node2"]))
        if family == "ipv4":
            assert pkt.outer.vni == WORLD_ID
        want_opt = proto == "UDP" or i == 0
        assert (pkt.dsr is not None) is want_opt
        if pkt.dsr is not None:
            assert pkt.dsr.kind is DsrKind.GENEVE_OPTION and pkt.dsr.frontend == fe
        in2 = next(h for h in hops if h.at == "node2" and not h.reply)
        assert in2.hook is Hook.FROM_OVERLAY and in2.action is Step.DSR_INGRESS
        assert in2.packet.outer is None
        assert [h.at for h in hops if h.reply] == ["node2"]
    backend = Endpoint(addr=ip_address(a["remote"]), port=TARGET_PORT)
    entry = state.nodes["node2"].ct.get(egress_key(client, backend, Proto[proto]))
    assert entry is not None and entry.dsr_internal


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_hybrid_udp_is_snat_over_the_geneve_tunnel(family: str) -> None:
    _, tr = _run(mode="hybrid", family=family, proto="UDP", dispatch="geneve",
                 routing="tunnel", tunnel="geneve", packets=2)
    a = ADDRS[family]
    n1, n2 = ip_address(a["node1"]), ip_address(a["node2"])
    assert tr.delivered
    req = [h for h in tr.hops if h.at == "node1" and not h.reply]
    rep = [h for h in tr.hops if h.at == "node2" and h.reply]
    assert req and all(h.action is Step.SNAT and h.packet.dsr is None for h in req)
    assert all(h.packet.outer is not None and (h.packet.outer.src, h.packet.outer.dst)
               == (n1, n2) for h in req)
    # The reply is encapsulated back to node1, which reverse-translates it off the overlay.
    assert all(h.packet.outer is not None and (h.packet.outer.src, h.packet.outer.dst)
               == (n2, n1) for h in rep)
    back = [h for h in tr.hops if h.at == "node1" and h.reply]
    assert back and all(h.hook is Hook.FROM_OVERLAY and h.action is Step.REV_SNAT
                        for h in back)
    assert all(p.outer is None for p in tr.client_saw)


def test_tunnel_snat_source_is_the_gateway_address() -> None:
    _, tr = _run(mode="snat", routing="tunnel", tunnel="vxlan", packets=1)
    assert tr.delivered
    # tail_nodeport_nat_egress_ipv4: target.addr = IPV4_GATEWAY when the backend has a
    # tunnel endpoint, so the pod does not see node1's direct-routing address.
    assert tr.backend_saw[0].src.addr != ip_address(ADDRS["ipv4"]["node1"])


@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_v113_ipv6_dsr_header_on_every_packet(proto: str) -> None:
    _, tr = _run(mode="dsr", family="ipv6", proto=proto, version="1.13", packets=4)
    assert tr.delivered
    sent = [h for h in tr.hops if h.at == "node1" and not h.reply]
    assert len(sent) == 4
    assert all(h.packet.dsr is not None and h.packet.dsr.kind is DsrKind.IPV6_DSTOPT
               for h in sent)
    # v1.13 did the backend side in bpf_lxc: to-container and from-container.
    assert {h.hook for h in tr.hops if h.at == "node2" and not h.reply} == {Hook.TO_CONTAINER}
    assert {h.hook for h in tr.hops if h.at == "node2" and h.reply} == {Hook.FROM_CONTAINER}


@pytest.mark.parametrize("version", ["1.13", "1.18", "1.20"])
def test_ipv4_tcp_dsr_option_on_syn_only(version: str) -> None:
    _, tr = _run(mode="dsr", family="ipv4", proto="TCP", version=version, packets=4)
    sent = [h for h in tr.hops if h.at == "node1" and not h.reply]
    assert [h.packet.dsr is not None for h in sent] == [True, False, False, False]
    assert [h.packet.flags.letters() for h in sent] == ["S", "A", "A", "A"]


def test_v118_ipv6_tcp_dsr_header_on_syn_only() -> None:
    _, tr = _run(mode="dsr", family="ipv6", proto="TCP", version="1.18", packets=3)
    sent = [h for h in tr.hops if h.at == "node1" and not h.reply]
    assert [h.packet.dsr is not None for h in sent] == [True, False, False]


def test_dsr_ct_entry_lost_leaks_backend_address() -> None:
    """Brief §2.7: with the backend's DSR CT entry gone, non-SYNs are not reverse-DNATed."""
    sc = parse(build_doc(mode="dsr", packets=1), "lost")
    world = sc.world
    state, traces = run_flows(world, sc.flows)
    assert traces[0].delivered
    a = ADDRS["ipv4"]
    client = Endpoint(addr=ip_address(a["client"]), port=40000)
    backend = Endpoint(addr=ip_address(a["remote"]), port=TARGET_PORT)
    key = egress_key(client, backend, Proto.TCP)
    n2 = state.nodes["node2"]
    assert key in n2.ct.entries
    nodes = dict(state.nodes)
    nodes["node2"] = attrs.evolve(n2, ct=n2.ct.delete(key))  # GC or LRU eviction
    state = attrs.evolve(state, nodes=nodes, now=state.now + 1)
    syn = traces[0].hops[0].packet
    ack = attrs.evolve(syn, flags=TcpFlags.ACK)
    w = walk(world, state, ("client", "client"), ack, reply=False, via="node1")
    assert w.end is EndKind.POD and w.at == "web-remote"
    assert w.packet.src == client and w.packet.dsr is None
    assert [h.action for h in w.hops if h.at == "node2"] == [Step.PASS]
    assert key not in w.state.nodes["node2"].ct.entries
    r = walk(world, w.state, ("pod", "web-remote"), reply_to(w.packet), reply=True)
    assert r.end is EndKind.CLIENT
    assert r.packet.src == backend  # the client sees the pod, not the frontend
