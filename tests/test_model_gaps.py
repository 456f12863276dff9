"""Behaviours of the model that the mutation check found no property, program or test
pinning (docs/mutation-model.md): one test each."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs

from model.config import CiliumConfig
from model.conntrack import CtState, state_of
from model.drops import DropReason
from model.flows import run_flows
from model.hooks import Hook, NodeCtx, Step, Verdict
from model.maps import LruMap, NatEntry, TupleFlags
from model.nodeport import nodeport_lb
from model.scenario import parse
from model.snat import SeededRandom, fwd_key, rev_key, snat_nat
from model.values import DsrKind, DsrMeta, Endpoint, Packet, Proto, TcpFlags
from tests.conftest import ADDRS, NODE_PORT, TARGET_PORT, build_doc


def _ctx(sc: Any, node: str, now: int) -> NodeCtx:
    n = sc.world.cluster.node(node)
    return NodeCtx(cfg=sc.world.cfg, name=node, ip=n.ip, router_ip=n.router_ip,
                   ipcache=sc.world.ipcache(), now=now, rand=SeededRandom(0))


def test_icmp6_reject_is_rate_limited_through_nodeport() -> None:
    """Reject mode on IPv6 (icmp6.h, ratelimit.h): once the node's bucket is empty within
    one second, a request to a backend-less service is DROP_RATE_LIMITED, not answered."""
    sc = parse(build_doc(family="ipv6", placement="none", version="1.20",
                         cilium={"serviceNoBackendResponse": "reject"}))
    state, _traces = run_flows(sc.world, [])
    st = state.nodes["node1"]
    a = ADDRS["ipv6"]
    pkt = Packet(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                 dst=Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT), proto=Proto.TCP,
                 flags=TcpFlags.SYN)
    reasons = []
    for _ in range(200):
        st, res = nodeport_lb(_ctx(sc, "node1", 10), st, pkt, Hook.FROM_NETDEV)
        reasons.append(res.reason)
    assert reasons[0] is not DropReason.DROP_RATE_LIMITED
    assert DropReason.DROP_RATE_LIMITED in reasons


def test_dsr_info_with_port_zero_is_invalid() -> None:
    """nodeport_dsr_ingress: DSR info naming port 0 is DROP_INVALID (the datapath's
    twin: tests/test_datapath_gaps.py test_dsr_info_with_port_zero_is_dropped_invalid)."""
    sc = parse(build_doc(mode="dsr", placement="remote"))
    state, _traces = run_flows(sc.world, [])
    a = ADDRS["ipv4"]
    for port, dropped in ((NODE_PORT, False), (0, True)):
        meta = DsrMeta(kind=DsrKind.IPV4_OPTION,
                       frontend=Endpoint(addr=ip_address(a["node1"]), port=port))
        pkt = Packet(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                     dst=Endpoint(addr=ip_address(a["remote"]), port=TARGET_PORT),
                     proto=Proto.TCP, flags=TcpFlags.SYN, dsr=meta)
        _st, res = nodeport_lb(_ctx(sc, "node2", 5), state.nodes["node2"], pkt,
                               Hook.FROM_NETDEV)
        assert (res.verdict is Verdict.DROP) is dropped
        assert (res.reason is DropReason.DROP_INVALID) is dropped


C = Endpoint(addr=ip_address("203.0.113.7"), port=40000)
B = Endpoint(addr=ip_address("10.0.2.10"), port=8080)
NODE, OTHER = ip_address("192.168.2.3"), ip_address("192.168.2.9")


def _snat(snat: LruMap[Any, Any], target: Any) -> Any:
    return snat_nat(CiliumConfig(), snat, C, B, Proto.TCP, target, 5, "t", SeededRandom(1))


def test_snat_restores_a_missing_reverse_entry() -> None:
    """snat_v4_nat_handle_mapping (v1.17+): a forward entry whose reverse entry is gone gets
    it back, with the same NAT port."""
    first = _snat(LruMap(capacity=16), NODE)
    assert first.nat is not None
    rkey = rev_key(B, first.nat, Proto.TCP)
    healed = _snat(first.snat.delete(rkey), NODE)
    assert healed.nat == first.nat
    assert healed.snat.get(rkey) == NatEntry(to_addr=C.addr, to_port=C.port, created=5)


def test_snat_entry_with_a_stale_target_is_replaced() -> None:
    """A forward entry translating to another address (the node's old one) is dropped with
    its reverse entry and allocated afresh for the current address."""
    stale = _snat(LruMap(capacity=16), OTHER)
    assert stale.nat is not None and stale.nat.addr == OTHER
    fresh = _snat(stale.snat, NODE)
    assert fresh.nat is not None and fresh.nat.addr == NODE
    assert fresh.snat.get(rev_key(B, stale.nat, Proto.TCP)) is None
    fwd = fresh.snat.get(fwd_key(C, B, Proto.TCP))
    assert fwd is not None and fwd.to_addr == NODE
    assert len(fresh.snat) == 2


def test_state_of_no_entry_is_absent() -> None:
    assert state_of(None, 0) is CtState.ABSENT


def test_stale_snat_entry_is_gone_even_when_the_fresh_allocation_fails() -> None:
    """The stale forward entry and its reverse are deleted before allocating; when every
    try collides (a one-port NAT range whose port another flow holds) the packet gets no
    mapping and the stale entry stays deleted."""
    cfg = attrs.evolve(CiliumConfig(), nodeport_max=65534)  # NAT range: 65535 only
    assert cfg.nat_min == cfg.nat_max_port == 65535
    snat: LruMap[Any, Any] = LruMap(capacity=16)
    stale = snat_nat(cfg, snat, C, B, Proto.TCP, OTHER, 5, "t", SeededRandom(1))
    assert stale.nat is not None
    held = rev_key(B, Endpoint(addr=NODE, port=65535), Proto.TCP)
    taken = stale.snat.put(held, NatEntry(to_addr=ip_address("203.0.113.99"), to_port=1))
    fresh = snat_nat(cfg, taken, C, B, Proto.TCP, NODE, 6, "t", SeededRandom(1))
    assert fresh.nat is None
    assert fresh.snat.get(fwd_key(C, B, Proto.TCP)) is None


def test_reopening_syn_to_a_service_without_backends_leaves_the_reset_entry() -> None:
    """lb4_local: a SYN on a closing CT_SERVICE entry resets it in place (ACTION_CREATE);
    with no backend left nothing is created over it, so the reset entry is what remains
    (the reference datapath's lb_local does the same)."""
    doc = build_doc(placement="remote", packets=3)
    doc["flows"][0]["close"] = True
    again = dict(doc["flows"][0], name="again", packets=1, close=False,
                 setBackends={"web": []})
    doc["flows"].append(again)
    sc = parse(doc)
    state, traces = run_flows(sc.world, sc.flows)
    assert traces[0].delivered and not traces[1].delivered
    st = state.nodes["node1"]
    service = [k for k in st.ct if k.flags is TupleFlags.SERVICE]
    assert len(service) == 1
    e = st.ct.get(service[0])
    assert e is not None
    assert not e.tx_closing and not e.rx_closing and e.tx_syn_seen and not e.seen_non_syn


def test_native_routing_reply_to_a_client_with_a_tunnel_endpoint_is_not_encapsulated() -> None:
    """_reply_route: only tunnel routing puts a reverse-SNATed reply into the tunnel; with
    native routing it leaves natively even when the client's address has an ipcache tunnel
    endpoint (the tunnel twin: tests/test_tunnel_snat.py)."""
    sc = parse(build_doc(routing="native", svc_type="NodePort", proto="UDP"))
    state, traces = run_flows(sc.world, sc.flows)
    fwd = next(h for h in traces[0].hops if h.action is Step.SNAT).packet
    client = traces[0].hops[0].packet.src
    node1, node3 = sc.world.cluster.node("node1"), sc.world.cluster.node("node3")
    ctx = NodeCtx(cfg=sc.world.cfg, name="node1", ip=node1.ip, router_ip=node1.router_ip,
                  ipcache={**sc.world.ipcache(), client.addr: node3.ip}, now=state.now,
                  rand=SeededRandom(0))
    reply = Packet(src=fwd.dst, dst=fwd.src, proto=Proto.UDP)
    _st, res = nodeport_lb(ctx, state.nodes["node1"], reply, Hook.FROM_NETDEV)
    assert res.step is Step.REV_SNAT and res.packet.dst == client
    assert res.packet.outer is None
