"""A symbolic cluster and one client flow walked through it (model.network.walk, model.flows).

The cluster has a receiving node L (index 0), a second node R (index 1), `backends` pods
placed on L or R by the configuration, one external client, and the service under test
(NodePort, LoadBalancer VIP announced by L, or ExternalIP). Every address, port, the
maps' contents and the random choices are symbolic; the flow's packets are sent one after
another (request leg, then the backend's reply leg), each leg bounded by `hops` node hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import z3

from model.config import NODEPORT_MAX_DEFAULT, NODEPORT_MIN_DEFAULT
from model.drops import DropReason
from model.faults import ModelFault
from model.maps import TupleFlags
from model.nodeport import Step, Verdict
from model.topology import ServiceType, TrafficPolicy
from model.values import DsrKind, Proto, TcpFlags
from properties.configs import Config, Placement
from properties.symbolic import from_netdev, from_overlay, in_range, to_netdev
from properties.symstate import CtMap, KeyLog, NatMap, Oracle, SCtx, SEp, SNode, SPkt, SRes, SSvc
from properties.symworld import Bounds
from properties.terms import (
    BV,
    STEP,
    VERDICT,
    B,
    band,
    bor,
    bv,
    eq,
    ite_b,
    ite_bv,
    ite_int,
    set_distinct,
    set_range,
)

CLIENT, NODE, NOWHERE = 0, 1, 2  # receiver kinds
HOPS_PER_LEG = 2
END_OPEN, END_POD, END_CLIENT, END_DROP = 0, 1, 2, 3


@dataclass(frozen=True)
class SHop:
    """One node hook a packet passed (or the backend node's to-netdev on a reply)."""

    active: B
    node: z3.ArithRef
    step: z3.ArithRef
    verdict: z3.ArithRef
    pkt: SPkt
    reply: bool
    packet: int


@dataclass(frozen=True)
class Leg:
    """One packet's walk: how it ended, where, why, and the hooks it passed."""

    active: B
    end: z3.ArithRef
    at: z3.ArithRef  # pod index (END_POD), node index (END_DROP at a node), -1 otherwise
    reason: z3.ArithRef
    pkt: SPkt
    hops: tuple[SHop, ...]
    fabric_drop: B
    icmp_to_client: B
    pod_pkt: SPkt  # the packet as the pod receives it (meaningful when end == END_POD)
    client_pkt: SPkt  # as the client receives it (end == END_CLIENT)


@dataclass
class World:
    """The symbolic cluster of one configuration."""

    cfg: Config
    bounds: Bounds
    abits: int
    client: BV
    cport: BV
    ips: list[BV]
    routers: list[BV]
    pods: list[tuple[BV, int]]  # (address, node index)
    tport: BV
    np: BV | None
    np2: BV | None
    vip: BV | None
    sport: BV | None
    frontend: SEp
    ctxs: list[SCtx]
    init: list[SNode]
    oracle: Oracle
    log: KeyLog
    faults: frozenset[ModelFault]
    assumptions: list[B] = field(default_factory=list)

    def backend(self, i: int) -> SEp:
        """Backend i (id i+1) as written in cilium_lb4_backends_v3."""
        return SEp(addr=self.pods[i][0], port=self.tport)


def _fam_bits(cfg: Config) -> int:
    return 128 if cfg.ipv6 else 32


def build(cfg: Config, bounds: Bounds, faults: frozenset[ModelFault] = frozenset(),
          empty: bool = False, prefix: str = "") -> World:
    """Symbolic addresses, ports, services and maps for one configuration."""
    ab = _fam_bits(cfg)

    def a(n: str) -> BV:
        return z3.BitVec(f"{prefix}{n}", ab)

    def p(n: str) -> BV:
        return z3.BitVec(f"{prefix}{n}", 16)

    client, cport = a("client"), p("client.port")
    ips = [a("node1.ip"), a("node2.ip")]
    routers = [a("node1.router"), a("node2.router")]  # cilium_host (IPV4_GATEWAY)
    on = 0 if cfg.placement is Placement.LOCAL else 1
    pods = [(a(f"web-{i}.ip"), on) for i in range(bounds.backends)]
    tport = p("targetPort")
    has_np = cfg.svc_type is not ServiceType.EXTERNALIP
    np = p("nodePort") if has_np else None
    vip = a("vip") if cfg.svc_type is not ServiceType.NODEPORT else None
    sport = p("port") if vip is not None else None
    np2 = p("other.nodePort") if bounds.extra_service else None
    backends = {i + 1: SEp(addr=pods[i][0], port=tport) for i in range(bounds.backends)}
    etp = cfg.etp is TrafficPolicy.LOCAL
    # frontends in derive() order: NodePort per node, then the VIP; then the other service.
    fes: list[tuple[SEp, int | None, tuple[int, ...], bool]] = []
    rni = 0
    if np is not None:
        for j, ip in enumerate(ips):
            rni += 1
            fes.append((SEp(addr=ip, port=np), j, tuple(backends), True))
    if vip is not None and sport is not None:
        rni += 1
        fes.append((SEp(addr=vip, port=sport), None, tuple(backends), True))
    if np2 is not None:
        for j, ip in enumerate(ips):
            rni += 1
            fes.append((SEp(addr=ip, port=np2), j, (), False))
    frontend = fes[0][0] if cfg.svc_type is ServiceType.NODEPORT else SEp(addr=vip, port=sport)
    oracle = Oracle(prefix)
    log = KeyLog()
    ipcache = tuple([(ip, ip) for ip in ips] + [(r, ip) for r, ip in zip(routers, ips,
                                                                         strict=True)]
                    + [(pa, ips[n]) for pa, n in pods])
    ctxs = []
    for j, ip in enumerate(ips):
        services = []
        revnat = {}
        for idx, (fe, node, ids, web) in enumerate(fes):
            if node not in (None, j):
                continue
            slots = ids
            if etp and web:
                slots = tuple(b for b in ids if pods[b - 1][1] == j)
            services.append(SSvc(fe=fe, rni=idx + 1, slots=slots, all_backends=ids,
                                 dsr=cfg.uses_dsr, etp_local=etp and web))
            revnat[idx + 1] = fe
        ctxs.append(SCtx(cfg=cfg, index=j, ip=ip, services=tuple(services), revnat=revnat,
                         backends=backends,
                         local_eps=tuple(pa for pa, n in pods if n == j), ipcache=ipcache,
                         faults=faults, oracle=oracle, abits=ab,
                         nodeport_min=NODEPORT_MIN_DEFAULT, nodeport_max=NODEPORT_MAX_DEFAULT,
                         router=routers[j]))
    init = [SNode(ct=CtMap.fresh(f"{prefix}node{j + 1}", ab, log, empty),
                  snat=NatMap.fresh(f"{prefix}node{j + 1}", ab, log, empty))
            for j in range(len(ips))]
    w = World(cfg=cfg, bounds=bounds, abits=ab, client=client, cport=cport, ips=ips,
              routers=routers, pods=pods,
              tport=tport, np=np, np2=np2, vip=vip, sport=sport, frontend=frontend, ctxs=ctxs,
              init=init, oracle=oracle, log=log, faults=faults)
    hosts = [client, *ips, *routers, *(pa for pa, _ in pods)] + ([vip] if vip is not None
                                                                  else [])
    w.assumptions.append(z3.Distinct(*hosts))
    set_distinct(hosts)
    log.fresh_ct = lambda k: _fresh_ct(w, k) if not empty else False
    log.fresh_nat = lambda k: _fresh_nat(w, k) if not empty else False
    w.assumptions += [cport != 0, tport != 0]
    if np is not None:
        w.assumptions.append(in_range(np, NODEPORT_MIN_DEFAULT, NODEPORT_MAX_DEFAULT))
        set_range(np, NODEPORT_MIN_DEFAULT, NODEPORT_MAX_DEFAULT)
    if np2 is not None:
        set_range(np2, NODEPORT_MIN_DEFAULT, NODEPORT_MAX_DEFAULT)
        w.assumptions += [in_range(np2, NODEPORT_MIN_DEFAULT, NODEPORT_MAX_DEFAULT),
                          np2 != np if np is not None else z3.BoolVal(True)]
    if sport is not None:
        w.assumptions.append(sport != 0)
    return w


# ---------------------------------------------------------------- routing and the fabric

def _owner(w: World, addr: BV) -> tuple[z3.ArithRef, z3.ArithRef]:
    """model.topology.Cluster.owner_of, as (receiver kind, node index)."""
    kind: z3.ArithRef = z3.IntVal(NOWHERE)
    node: z3.ArithRef = z3.IntVal(-1)
    for pa, n in reversed(w.pods):
        c = eq(addr, pa)
        kind, node = ite_int(c, NODE, kind), ite_int(c, n, node)
    for j, ip in reversed(list(enumerate(w.ips))):
        c = bor(eq(addr, ip), eq(addr, w.routers[j]))
        kind, node = ite_int(c, NODE, kind), ite_int(c, j, node)
    # the client (checked after nodes and pods, as owner_of does)
    kind = ite_int(band(eq(addr, w.client), z3.simplify(kind == NOWHERE)), CLIENT, kind)
    return kind, node


def receiver(w: World, pkt: SPkt) -> tuple[z3.ArithRef, z3.ArithRef]:
    """model.network._receiver: outer destination, owner of the address, or the VIP's node."""
    ok, on = _owner(w, pkt.odst)
    ik, inn = _owner(w, pkt.dst.addr)
    if w.vip is not None:  # announced by node1 (the flow's `via`)
        isvip = band(z3.simplify(ik == NOWHERE), eq(pkt.dst.addr, w.vip))
        ik = ite_int(isvip, NODE, ik)
        inn = ite_int(isvip, 0, inn)
    return ite_int(pkt.outer, ok, ik), ite_int(pkt.outer, on, inn)


def fabric_loss(w: World, sender: z3.ArithRef, pkt: SPkt) -> tuple[B, z3.ArithRef]:
    """model.network._fabric_loss for a packet node `sender` puts on the wire."""
    src = ite_bv(pkt.outer, pkt.osrc, pkt.src.addr)
    owned = bor(*[band(z3.simplify(sender == j), bor(eq(src, ip), eq(src, w.routers[j])))
                  for j, ip in enumerate(w.ips)],
                *[band(z3.simplify(sender == n), eq(src, pa)) for pa, n in w.pods],
                *([band(z3.simplify(sender == 0), eq(src, w.vip))] if w.vip is not None
                  else []))
    sdc = band(w.cfg.source_dest_check, z3.Not(owned))
    opt_kind = w.cfg.dsr_kind in (DsrKind.IPV4_OPTION, DsrKind.IPV6_DSTOPT)
    opts = band(w.cfg.drops_ip_options, z3.Not(pkt.outer), pkt.dsr, opt_kind)
    reason = ite_int(sdc, DropReason.FABRIC_SOURCE_DEST_CHECK.value,
                     DropReason.FABRIC_DROPS_IP_OPTIONS.value)
    return bor(sdc, opts), reason


def pod_index(w: World, addr: BV) -> z3.ArithRef:
    """Which pod a DELIVER verdict hands the packet to."""
    out: z3.ArithRef = z3.IntVal(-1)
    for i, (pa, _) in reversed(list(enumerate(w.pods))):
        out = ite_int(eq(addr, pa), i, out)
    return out


def pod_node(w: World, idx: z3.ArithRef) -> z3.ArithRef:
    """The node a pod index lives on."""
    out: z3.ArithRef = z3.IntVal(-1)
    for i, (_, n) in reversed(list(enumerate(w.pods))):
        out = ite_int(idx == i, n, out)
    return out


# ---------------------------------------------------------------- walking

@dataclass
class _Walk:
    alive: B
    end: z3.ArithRef
    at: z3.ArithRef
    reason: z3.ArithRef
    pkt: SPkt
    fabric_drop: B
    icmp: B
    pod_pkt: SPkt | None = None
    client_pkt: SPkt | None = None

    def finish(self, cond: B, end: int, at: z3.ArithRef | int, reason: z3.ArithRef | int,
               pkt: SPkt) -> None:
        c = band(self.alive, cond)
        if z3.is_false(z3.simplify(c)):
            return
        if end == END_POD:
            self.pod_pkt = pkt if self.pod_pkt is None else pkt.ite(c, self.pod_pkt)
        if end == END_CLIENT:
            self.client_pkt = (pkt if self.client_pkt is None
                               else pkt.ite(c, self.client_pkt))
        self.end = ite_int(c, end, self.end)
        self.at = ite_int(c, at, self.at)
        self.reason = ite_int(c, reason, self.reason)
        self.pkt = pkt.ite(c, self.pkt)
        self.alive = band(self.alive, z3.Not(cond))


def _hook_at(w: World, states: list[SNode], node: z3.ArithRef, pkt: SPkt
             ) -> tuple[SRes, dict[int, SNode]]:
    res: SRes | None = None
    per: dict[int, SNode] = {}
    for j in reversed(_candidates(w, node)):
        ctx = w.ctxs[j]
        if z3.is_false(z3.simplify(pkt.outer)):
            r = from_netdev(ctx, states[j], pkt)
        elif z3.is_true(z3.simplify(pkt.outer)):
            r = from_overlay(ctx, states[j], pkt)
        else:
            r = from_overlay(ctx, states[j], pkt).ite(pkt.outer,
                                                       from_netdev(ctx, states[j], pkt))
        per[j] = r.st
        r = replace(r, st=states[0])
        res = r if res is None else r.ite(node == j, res)
    assert res is not None
    return res, per


def _candidates(w: World, node: z3.ArithRef) -> list[int]:
    """Nodes the position can be (syntactically); a dead walk still needs one."""
    out = [j for j in range(len(w.ctxs)) if not z3.is_false(z3.simplify(node == j))]
    return out or [0]


def _commit(w: World, states: list[SNode], cond: B, node: z3.ArithRef,
            per: dict[int, SNode]) -> list[SNode]:
    out = []
    for j, st in enumerate(states):
        c = z3.simplify(band(cond, node == j))
        out.append(st if z3.is_false(c) or j not in per else per[j].ite(c, st))
    return out


def walk(w: World, states: list[SNode], pkt: SPkt, sender: z3.ArithRef | None, active: B,
         reply: bool, index: int) -> tuple[list[SNode], Leg]:
    """Move a packet until a pod or the client receives it or it is lost (bounded)."""
    wk = _Walk(alive=active, end=z3.IntVal(END_OPEN), at=z3.IntVal(-1),
               reason=z3.IntVal(0), pkt=pkt, fabric_drop=z3.BoolVal(False),
               icmp=z3.BoolVal(False))
    hops: list[SHop] = []
    for _ in range(HOPS_PER_LEG):
        if sender is not None:
            lost, why = fabric_loss(w, sender, pkt)
            wk.fabric_drop = bor(wk.fabric_drop, band(wk.alive, lost))
            wk.finish(lost, END_DROP, -1, why, pkt)
        kind, node = receiver(w, pkt)
        wk.finish(kind == NOWHERE, END_DROP, -1, DropReason.FABRIC_NO_ROUTE.value, pkt)
        wk.finish(kind == CLIENT, END_CLIENT, -1, 0, pkt)
        res, per = _hook_at(w, states, node, pkt)
        states = _commit(w, states, wk.alive, node, per)
        hops.append(SHop(active=wk.alive, node=node, step=res.step, verdict=res.verdict,
                         pkt=res.fwd or res.pkt, reply=reply, packet=index))
        v = res.verdict
        wk.finish(v == VERDICT[Verdict.DROP], END_DROP, node, res.reason, res.pkt)
        wk.finish(v == VERDICT[Verdict.TO_STACK], END_DROP, node,
                  DropReason.PUNT_TO_STACK.value, res.pkt)
        dlv = res.dlv or res.pkt
        wk.finish(v == VERDICT[Verdict.DELIVER], END_POD, pod_index(w, dlv.dst.addr), 0, dlv)
        rej = band(wk.alive, v == VERDICT[Verdict.REJECT])
        lost_icmp, _ = fabric_loss(w, node, res.pkt)
        wk.icmp = bor(wk.icmp, band(rej, z3.Not(lost_icmp)))
        wk.finish(v == VERDICT[Verdict.REJECT], END_DROP, node, res.reason, res.pkt)
        if res.fwd is None:
            break
        pkt = res.fwd
        sender = node
    leg = Leg(active=active, end=wk.end, at=wk.at, reason=wk.reason, pkt=wk.pkt,
              hops=tuple(hops), fabric_drop=wk.fabric_drop, icmp_to_client=wk.icmp,
              pod_pkt=wk.pod_pkt or pkt, client_pkt=wk.client_pkt or pkt)
    return states, leg


def request_packet(w: World, index: int) -> SPkt:
    """model.flows.request: SYN first then ACKs (TCP), or datagrams."""
    flags = TcpFlags.NONE
    if w.cfg.proto is Proto.TCP:
        flags = TcpFlags.SYN if index == 0 else TcpFlags.ACK
    zero = SEp(addr=bv(0, w.abits), port=bv(0, 16))
    return SPkt(src=SEp(addr=w.client, port=w.cport), dst=w.frontend, proto=w.cfg.proto,
                flags=flags, dsr=z3.BoolVal(False), dsr_fe=zero, outer=z3.BoolVal(False),
                osrc=bv(0, w.abits), odst=bv(0, w.abits))


def reply_packet(w: World, got: SPkt) -> SPkt:
    """model.network.reply_to: swapped tuple, SYN answered by SYN-ACK, no DSR info."""
    flags = TcpFlags.NONE
    if got.proto is Proto.TCP:
        flags = TcpFlags.SYN | TcpFlags.ACK if got.is_syn else TcpFlags.ACK
    zero = SEp(addr=bv(0, w.abits), port=bv(0, 16))
    return SPkt(src=got.dst, dst=got.src, proto=got.proto, flags=flags, dsr=z3.BoolVal(False),
                dsr_fe=zero, outer=z3.BoolVal(False), osrc=bv(0, w.abits),
                odst=bv(0, w.abits))


@dataclass
class Exchange:
    """Packet n of the flow: its request leg, the reply leg, and the backend's reply hook."""

    request: Leg
    reply: Leg
    reply_hook: SHop
    sent: SPkt
    answered: SPkt


@dataclass
class Run:
    """A whole flow through the symbolic cluster, plus the states after each exchange."""

    world: World
    exchanges: list[Exchange]
    states: list[list[SNode]]


def run(w: World) -> Run:
    """Send bounds.packets packets of one flow; each delivered request is answered."""
    states = list(w.init)
    exchanges = []
    history = [states]
    active: B = z3.BoolVal(True)
    for i in range(w.bounds.packets):
        sent = request_packet(w, i)
        states, req = walk(w, states, sent, None, active, False, i)
        delivered = band(req.active, req.end == END_POD)
        answer = reply_packet(w, req.pod_pkt)
        node = pod_node(w, req.at)
        # the backend's node: to-netdev (v1.14+) reverse DNAT, then the wire
        res: SRes | None = None
        per: dict[int, SNode] = {}
        for j in reversed(_candidates(w, node)):
            ctx = w.ctxs[j]
            r = to_netdev(ctx, states[j], answer)
            per[j] = r.st
            r = replace(r, st=states[0])
            res = r if res is None else r.ite(node == j, res)
        assert res is not None
        states = _commit(w, states, delivered, node, per)
        rhook = SHop(active=delivered, node=node, step=res.step, verdict=res.verdict,
                     pkt=res.pkt, reply=True, packet=i)
        states, rep = walk(w, states, res.pkt, node, delivered, True, i)
        exchanges.append(Exchange(request=req, reply=rep, reply_hook=rhook, sent=sent,
                                  answered=answer))
        history.append(states)
        active = band(delivered, rep.end == END_CLIENT)
    return Run(world=w, exchanges=exchanges, states=history)


def init_invariant(w: World) -> list[B]:
    """The stated invariant on initial map contents, instantiated at every key the run reads.

    The flow is new: no CT_SERVICE entry for the client's port, no CT_EGRESS/DSR entry and
    no SNAT forward or DSR entry keyed to it on any node; CT entries with node_port or
    dsr_internal only name clients outside the cluster.
    """
    out: list[B] = []
    inside = [*w.ips, *w.routers, *(pa for pa, _ in w.pods)]
    for st in w.init:
        if st.ct.empty:
            continue
        for k in _unique(w.log.ct):
            daddr = k[0]
            e = st.ct.initial(k)
            if z3.is_false(e.valid):
                continue
            out.append(z3.Implies(_fresh_ct(w, k), z3.Not(e.valid)))
            if k[4] == TupleFlags.OUT:
                out.append(z3.Implies(band(e.valid, bor(e.node_port, e.dsr)),
                                      z3.And(*[daddr != x for x in inside])))
        for k in _unique(w.log.nat):
            e2 = st.snat.initial(k)
            if k[4] == TupleFlags.OUT and not z3.is_false(e2.valid):
                out.append(z3.Implies(_fresh_nat(w, k), z3.Not(e2.valid)))
    return out


def _fresh_ct(w: World, k: tuple[BV, BV, BV, BV, int]) -> B | bool:
    """The CT keys of this (new) flow: CT_SERVICE and OUT entries naming the client's port."""
    daddr, saddr, dport, sport, flags = k
    if flags == TupleFlags.SERVICE:
        return band(eq(saddr, w.client), eq(dport, w.cport))
    if flags == TupleFlags.OUT:
        return band(eq(daddr, w.client), eq(sport, w.cport))
    return False


def _fresh_nat(w: World, k: tuple[BV, BV, BV, BV, int]) -> B | bool:
    """The SNAT keys of this flow: its forward entry and a DSR entry keyed to the client."""
    saddr, daddr, sport, dport, flags = k
    if flags != TupleFlags.OUT:
        return False
    return bor(band(eq(saddr, w.client), eq(sport, w.cport)),
               band(eq(daddr, w.client), eq(dport, w.cport)))


def _unique(keys: list[tuple[BV, BV, BV, BV, int]]) -> list[tuple[BV, BV, BV, BV, int]]:
    seen: dict[tuple[int, ...], tuple[BV, BV, BV, BV, int]] = {}
    for k in keys:
        seen.setdefault((*(x.get_id() for x in k[:4]), k[4]), k)
    return list(seen.values())


def step_is(h: SHop, step: Step) -> B:
    """The hop's step is `step`."""
    return h.step == STEP[step]


def hop_on(h: SHop, node: int) -> B:
    """The hop is active and ran on node index `node`."""
    return band(h.active, h.node == node)


def same_pkt_fields(a: SPkt, b: SPkt) -> B:
    """Source and destination tuples equal."""
    return band(a.src.eq(b.src), a.dst.eq(b.dst))


__all__ = ["END_CLIENT", "END_DROP", "END_OPEN", "END_POD", "Bounds", "Exchange", "Leg",
           "Run", "SHop", "World", "build", "hop_on", "init_invariant", "ite_b", "replace",
           "run", "same_pkt_fields", "step_is"]
