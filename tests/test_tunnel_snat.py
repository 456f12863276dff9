"""Tunnel routing with SNAT: the router IP as SNAT source towards a tunnelled backend, the
reply into the tunnel for a cluster client and out the native device for an external one."""

from __future__ import annotations

import attrs

from datapath.adapter import reference_factory
from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.difftest import DiffRun
from datapath.drop import Verdict as DpVerdict
from datapath.host import make_node
from datapath.spec import build_packet, describe
from model.flows import run_flows
from model.hooks import Hook, NodeCtx, Step, Verdict
from model.network import Action
from model.nodeport import from_overlay, nodeport_lb
from model.scenario import parse
from model.snat import SeededRandom
from model.values import REMOTE_NODE_ID, WORLD_ID, Outer, Packet, Proto
from tests.conftest import build_doc

DOC = build_doc(routing="tunnel", tunnel="geneve", svc_type="NodePort", proto="UDP")


def test_model_snat_source_is_router_ip_and_reply_leaves_natively() -> None:
    sc = parse(DOC)
    node1 = sc.world.cluster.node("node1")
    assert node1.router_ip is not None
    _state, traces = run_flows(sc.world, sc.flows)
    tr = traces[0]
    assert tr.delivered
    fwd = next(h for h in tr.hops if h.action is Step.SNAT)
    assert fwd.packet.src.addr == node1.router_ip
    assert fwd.packet.outer == Outer(src=node1.ip, dst=sc.world.cluster.node("node2").ip,
                                     vni=WORLD_ID)
    rev = [h for h in tr.hops if h.action is Step.REV_SNAT]
    assert rev and all(h.packet.outer is None for h in rev)  # an external client
    assert [h.action for h in tr.hops][-1] is Action.RECEIVE


def test_model_reply_to_a_cluster_client_goes_into_the_tunnel() -> None:
    """The same reply, with the client's address given a tunnel endpoint (node3); v1.20
    tags it REMOTE_NODE_ID (nodeport.h:2343)."""
    sc = parse(build_doc(routing="tunnel", tunnel="geneve", svc_type="NodePort", proto="UDP",
                         version="1.20"))
    state, traces = run_flows(sc.world, sc.flows)
    tr = traces[0]
    fwd = next(h for h in tr.hops if h.action is Step.SNAT).packet
    node1 = sc.world.cluster.node("node1")
    node3 = sc.world.cluster.node("node3")
    client = tr.hops[0].packet.src
    ipcache = {**sc.world.ipcache(), client.addr: node3.ip}
    ctx = NodeCtx(cfg=sc.world.cfg, name="node1", ip=node1.ip, router_ip=node1.router_ip,
                  ipcache=ipcache, now=state.now, rand=SeededRandom(0))
    reply = Packet(src=fwd.dst, dst=fwd.src, proto=Proto.UDP)
    _st, res = nodeport_lb(ctx, state.nodes["node1"], reply, Hook.FROM_OVERLAY)
    assert res.verdict is Verdict.FORWARD and res.step is Step.REV_SNAT
    assert res.packet.dst == client
    assert res.packet.outer == Outer(src=node1.ip, dst=node3.ip, vni=REMOTE_NODE_ID)
    # without the entry: native, as for any external client
    plain = attrs.evolve(ctx, ipcache=sc.world.ipcache())
    _st, res2 = from_overlay(plain, state.nodes["node1"], attrs.evolve(
        reply, outer=Outer(src=node1.ip, dst=node1.ip)))
    assert res2.packet.outer is None and res2.packet.dst == client


def test_model_v118_reply_identity_is_the_programs_seclabel() -> None:
    """v1.18 tags the tunnelled reply with the program's SECLABEL (v1.18 nodeport.h:2116):
    bpf_overlay's WORLD_ID; bpf_host's host identity becomes LOCAL_NODE_ID = 6 (encap.h:37)."""
    sc = parse(build_doc(routing="tunnel", tunnel="geneve", svc_type="NodePort", proto="UDP",
                         version="1.18"))
    state, traces = run_flows(sc.world, sc.flows)
    fwd = next(h for h in traces[0].hops if h.action is Step.SNAT).packet
    node1, node3 = sc.world.cluster.node("node1"), sc.world.cluster.node("node3")
    client = traces[0].hops[0].packet.src
    ctx = NodeCtx(cfg=sc.world.cfg, name="node1", ip=node1.ip, router_ip=node1.router_ip,
                  ipcache={**sc.world.ipcache(), client.addr: node3.ip}, now=state.now,
                  rand=SeededRandom(0))
    reply = Packet(src=fwd.dst, dst=fwd.src, proto=Proto.UDP)
    vnis = {}
    for hook in (Hook.FROM_OVERLAY, Hook.FROM_NETDEV):
        _st, res = nodeport_lb(ctx, state.nodes["node1"], reply, hook)
        assert res.packet.outer is not None and res.packet.dst == client
        vnis[hook] = res.packet.outer.vni
    assert vnis == {Hook.FROM_OVERLAY: WORLD_ID, Hook.FROM_NETDEV: REMOTE_NODE_ID}


def test_model_and_datapath_agree_in_tunnel_snat() -> None:
    sc = parse(DOC)
    run = DiffRun(sc.world, reference_factory)
    assert run.run(sc.flows) is None
    assert run.counters.observations > 0


def test_datapath_backend_without_tunnel_endpoint_goes_natively() -> None:
    """nodeport.h:2592-2604: no ipcache tunnel endpoint, no tunnel: SNAT to the node's
    address and the native device (formerly DROP_NO_TUNNEL_ENDPOINT)."""
    node = make_node(NodeConfig(ipv4="10.0.10.2", tunnel=True, router_ipv4="10.245.255.255",
                                services=(ServiceConfig(frontend="172.16.10.1", port=80,
                                                        rev_nat_index=1, backends=(1,)),),
                                backends=(BackendConfig(id=1, address="192.168.9.9",
                                                        port=8080),)))
    r = node.run("from-netdev", build_packet({"ip": {"src": "110.0.11.1",
                                                     "dst": "172.16.10.1"},
                                              "tcp": {"sport": 111, "dport": 80}}))
    d = describe(r.packet)
    assert (r.verdict, r.target) == (DpVerdict.CTX_ACT_REDIRECT, "netdev")
    assert d["ip.src"] == "10.0.10.2" and d["ip.dst"] == "192.168.9.9"
    assert d["ip.ttl"] == 63 and d["ip.csum_ok"] is True
    assert d["l4.dport"] == 8080 and d["l4.csum_ok"] is True
