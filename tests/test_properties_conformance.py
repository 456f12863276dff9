"""Conformance: the z3 transition admits exactly the concrete hook's step (model.nodeport).

Hypothesis draws a configuration, prior flows (which fill the CT and SNAT maps with real
contents) and one packet a hook saw; the concrete hook runs on the final maps, the
symbolic hook runs on the same maps and packet as constants. The concrete output must
satisfy the symbolic relation, and with the oracle's choices fixed no other output may.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import attrs
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import nodeport as npm
from model.config import DsrDispatch, LBMode
from model.flows import run_flows
from model.maps import NodeState
from model.network import World
from model.scenario import parse
from model.snat import SeededRandom
from model.topology import ServiceType, TrafficPolicy
from model.values import Endpoint, IPAddress, Packet, Proto
from properties import symbolic as sy
from properties import symstate as ss
from properties import terms as tm
from properties.configs import Config, Placement
from properties.decode import FlowDoc, ScenarioValues, document

V4 = ("192.168.2.3", "192.168.2.4", ("10.0.1.10", "10.0.1.11"), ("10.0.2.10", "10.0.2.11"),
      "203.0.113.7", "172.16.10.2")
V6 = ("fd00::2:3", "fd00::2:4", ("fd00:10:1::10", "fd00:10:1::11"),
      ("fd00:10:2::10", "fd00:10:2::11"), "2001:db8::7", "fd00:172::2")
PORTS = (1024, 2000, 31000, 32767, 32768, 40000, 50000, 65535)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Config, World, NodeState, str, str, Packet]:
    mode = draw(st.sampled_from(list(LBMode)))
    cfg = Config(mode=mode, family=draw(st.sampled_from(["ipv4", "ipv6"])),
                 placement=draw(st.sampled_from(list(Placement))),
                 svc_type=draw(st.sampled_from([ServiceType.NODEPORT,
                                                ServiceType.LOADBALANCER])),
                 dispatch=draw(st.sampled_from(list(DsrDispatch))),
                 proto=draw(st.sampled_from([Proto.TCP, Proto.UDP])),
                 etp=draw(st.sampled_from(list(TrafficPolicy))), reject=draw(st.booleans()))
    n1, n2, local, remote, client, vip = V6 if cfg.ipv6 else V4
    pods = local if cfg.placement is Placement.LOCAL else remote
    flows = tuple(FlowDoc(client=0, sport=p, packets=draw(st.integers(1, 4)), backend=None,
                          close=cfg.proto is Proto.TCP and draw(st.booleans()))
                  for p in draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3)))
    vals = ScenarioValues(nodes=(n1, n2), pods=pods, clients=(client,),
                          target_port=draw(st.sampled_from([80, 8080, 40000])),
                          node_port=30080, port=80,
                          vip=vip if cfg.svc_type is ServiceType.LOADBALANCER else None,
                          other_node_port=None, flows=flows)
    doc = document(cfg, vals, draw(st.integers(0, 50)))
    sc = parse(doc)
    state, traces = run_flows(sc.world, sc.flows)
    steps: list[tuple[str, str, Packet]] = []
    for tr in traces:
        for i, h in enumerate(tr.hops):
            if h.hook in (npm.Hook.FROM_NETDEV, npm.Hook.FROM_OVERLAY, npm.Hook.TO_NETDEV):
                steps.append((h.at, h.hook.value, tr.hops[i - 1].packet))
    fresh = Packet(src=Endpoint(addr=sc.flows[0].source.addr, port=draw(st.sampled_from(PORTS))),
                   dst=sc.flows[0].frontend, proto=cfg.proto)
    steps.append(("node1", npm.Hook.FROM_NETDEV.value, fresh))
    node, hook, pkt = draw(st.sampled_from(steps))
    return cfg, sc.world, state.nodes[node], node, hook, pkt


def _a(addr: IPAddress) -> z3.BitVecRef:
    return z3.BitVecVal(int(addr), 128 if isinstance(addr, IPv6Address) else 32)


def _p(port: int) -> z3.BitVecRef:
    return z3.BitVecVal(port, 16)


def _ep(e: Endpoint) -> ss.SEp:
    return ss.SEp(addr=_a(e.addr), port=_p(e.port))


def _zero(ab: int) -> ss.SEp:
    return ss.SEp(addr=z3.BitVecVal(0, ab), port=_p(0))


def _pkt(p: Packet, ab: int) -> ss.SPkt:
    return ss.SPkt(src=_ep(p.src), dst=_ep(p.dst), proto=p.proto, flags=p.flags,
                   dsr=z3.BoolVal(p.dsr is not None),
                   dsr_fe=_ep(p.dsr.frontend) if p.dsr is not None else _zero(ab),
                   outer=z3.BoolVal(p.outer is not None),
                   osrc=_a(p.outer.src) if p.outer else z3.BitVecVal(0, ab),
                   odst=_a(p.outer.dst) if p.outer else z3.BitVecVal(0, ab))


def _node(st: NodeState, ab: int) -> ss.SNode:
    ct = ss.CtMap.fresh("c", ab, ss.KeyLog(), empty=True)
    for k, e in st.ct.entries.items():
        ct = ct.put(_a(k.daddr), _a(k.saddr), _p(k.dport), _p(k.sport), k.flags, ss.SCt(
            valid=z3.BoolVal(True), bid=_p(e.backend_id), rni=_p(e.rev_nat_index),
            node_port=z3.BoolVal(e.node_port), dsr=z3.BoolVal(e.dsr_internal),
            nat_set=z3.BoolVal(e.nat_addr is not None),
            nat_addr=_a(e.nat_addr) if e.nat_addr is not None else z3.BitVecVal(0, ab),
            nat_port=_p(e.nat_port), closing=z3.BoolVal(e.tx_closing or e.rx_closing)))
    nat = ss.NatMap.fresh("n", ab, ss.KeyLog(), empty=True)
    for nk, ne in st.snat.entries.items():
        nat = nat.put(_a(nk.saddr), _a(nk.daddr), _p(nk.sport), _p(nk.dport), nk.flags,
                      ss.SNat(valid=z3.BoolVal(True), addr=_a(ne.to_addr), port=_p(ne.to_port)))
    return ss.SNode(ct=ct, snat=nat)


def _sctx(cfg: Config, world: World, st: NodeState, node: str, oracle: ss.Oracle) -> ss.SCtx:
    ab = 128 if cfg.ipv6 else 32
    lb = st.lb
    router = world.cluster.node(node).router_ip
    services = tuple(ss.SSvc(fe=ss.SEp(addr=_a(a), port=_p(p)), rni=e.rev_nat_index,
                             slots=e.backend_slots, all_backends=e.all_backends, dsr=e.dsr,
                             etp_local=e.etp_local)
                     for (a, p, _), e in lb.services.items())
    return ss.SCtx(cfg=cfg, index=0, ip=_a(world.cluster.node(node).ip), services=services,
                   revnat={i: _ep(e) for i, e in lb.revnat.items()},
                   backends={i: _ep(e) for i, e in lb.backends.items()},
                   terminating=tuple(sorted(lb.terminating)),
                   local_eps=tuple(_a(x) for x in lb.local_endpoints),
                   ipcache=tuple((_a(k), _a(v)) for k, v in world.ipcache().items()),
                   faults=frozenset(), oracle=oracle, abits=ab,
                   nodeport_min=world.cfg.nodeport_min, nodeport_max=world.cfg.nodeport_max,
                   router=_a(router) if router is not None else None)


def _same(s: ss.SRes, res: npm.HookResult, after: NodeState, before: NodeState,
          ab: int) -> z3.BoolRef:
    p = res.packet
    parts: list[Any] = [
        s.verdict == tm.VERDICT[res.verdict], s.step == tm.STEP[res.step],
        s.reason == (res.reason.value if res.reason else tm.NO_REASON),
        s.pkt.src.addr == _a(p.src.addr), s.pkt.src.port == p.src.port,
        s.pkt.dst.addr == _a(p.dst.addr), s.pkt.dst.port == p.dst.port,
        s.icmp == (p.icmp is not None)]
    if res.verdict in (npm.Verdict.FORWARD, npm.Verdict.DELIVER):
        parts += [s.pkt.dsr == (p.dsr is not None), s.pkt.outer == (p.outer is not None)]
        if p.dsr is not None:
            parts.append(tm.band(s.pkt.dsr_fe.addr == _a(p.dsr.frontend.addr),
                                 s.pkt.dsr_fe.port == p.dsr.frontend.port))
        if p.outer is not None:
            parts += [s.pkt.osrc == _a(p.outer.src), s.pkt.odst == _a(p.outer.dst)]
    for k in set(after.ct.entries) | set(before.ct.entries):
        e = s.st.ct.get(_a(k.daddr), _a(k.saddr), _p(k.dport), _p(k.sport), k.flags)
        want = after.ct.get(k)
        if want is None:
            parts.append(z3.Not(e.valid))
            continue
        parts += [e.valid, e.bid == want.backend_id, e.rni == want.rev_nat_index,
                  e.node_port == want.node_port, e.dsr == want.dsr_internal,
                  e.nat_set == (want.nat_addr is not None), e.nat_port == want.nat_port,
                  e.closing == (want.tx_closing or want.rx_closing)]
        if want.nat_addr is not None:
            parts.append(e.nat_addr == _a(want.nat_addr))
    for nk in set(after.snat.entries) | set(before.snat.entries):
        n = s.st.snat.get(_a(nk.saddr), _a(nk.daddr), _p(nk.sport), _p(nk.dport), nk.flags)
        nwant = after.snat.get(nk)
        if nwant is None:
            parts.append(z3.Not(n.valid))
        else:
            parts += [n.valid, n.addr == _a(nwant.to_addr), n.port == nwant.to_port]
    return z3.And(*parts)


HOOKS: dict[str, tuple[Callable[..., tuple[NodeState, npm.HookResult]],
                       Callable[..., ss.SRes]]] = {
    "from-netdev": (npm.from_netdev, sy.from_netdev),
    "from-overlay": (npm.from_overlay, sy.from_overlay),
    "to-netdev": (npm.to_netdev, sy.to_netdev),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_symbolic_hook_admits_exactly_the_concrete_step(
        case: tuple[Config, World, NodeState, str, str, Packet]) -> None:
    cfg, world, st, node, hook, pkt = case
    ab = 128 if cfg.ipv6 else 32
    concrete, symbolic = HOOKS[hook]
    ctx = npm.NodeCtx(cfg=world.cfg, name=node, ip=world.cluster.node(node).ip,
                      router_ip=world.cluster.node(node).router_ip,
                      ipcache=world.ipcache(), now=1000,
                      rand=SeededRandom(world.cfg.seed))
    after, res = concrete(ctx, st, pkt)
    tm.set_distinct([])
    oracle = ss.Oracle("conf.")
    sres = symbolic(_sctx(cfg, world, st, node, oracle), _node(st, ab), _pkt(pkt, ab))
    same = _same(sres, res, after, st, ab)
    s = z3.Solver()
    s.add(*oracle.constraints)
    assert s.check(same) == z3.sat, (hook, node, pkt, res)
    m = s.model()
    choices = [*oracle.picks, *(v for t in oracle.nat_ports for v in t)]
    pinned = [c == m.eval(c, model_completion=True) for c in choices]
    s.add(*pinned, z3.Not(same))
    assert s.check() == z3.unsat, (hook, node, pkt, res)


def test_conformance_notices_a_different_step() -> None:
    """The harness itself can fail: a concrete step under a fault is not the symbolic one."""
    from model.faults import ModelFault
    from properties.decode import document as doc_of
    cfg = Config()
    vals = ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"), pods=("10.0.2.10",),
                          clients=("203.0.113.7",), target_port=8080, node_port=30080,
                          port=None, vip=None, other_node_port=None,
                          flows=(FlowDoc(client=0, sport=40000, packets=1, backend=None),))
    sc = parse(doc_of(cfg, vals, 1))
    state, _ = run_flows(sc.world, sc.flows)
    st = state.nodes["node1"]
    pkt = Packet(src=Endpoint(addr=sc.flows[0].source.addr, port=40000),
                 dst=sc.flows[0].frontend, proto=Proto.TCP)
    ctx = npm.NodeCtx(cfg=sc.world.cfg, name="node1", ip=sc.world.cluster.node("node1").ip,
                      ipcache=sc.world.ipcache(), now=1000,
                      faults=frozenset({ModelFault.SNAT_SKIPPED}),
                      rand=SeededRandom(sc.world.cfg.seed))
    after, res = npm.from_netdev(ctx, st, pkt)
    tm.set_distinct([])
    oracle = ss.Oracle("neg.")
    sres = sy.from_netdev(_sctx(cfg, attrs.evolve(sc.world), st, "node1", oracle),
                          _node(st, 32), _pkt(pkt, 32))
    s = z3.Solver()
    s.add(*oracle.constraints)
    assert s.check(_same(sres, res, after, st, 32)) == z3.unsat
