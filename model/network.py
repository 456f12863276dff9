"""The cluster as a whole: hosts exchange packets over a fabric, nodes run their hooks."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from model.config import CiliumConfig, CiliumVersion, LBMode
from model.conntrack import gc
from model.drops import DropReason
from model.faults import ModelFault
from model.hooks import Hook, HookResult, NodeCtx, Step, Verdict
from model.maglev import DEFAULT_WEIGHT, FlowPicker, JhashPicker, hash_string, lookup_table
from model.maps import LbMaps, LruMap, NodeState, ServiceEntry, ServiceKey
from model.nodeport import from_netdev, from_overlay, reply_hook, to_netdev
from model.snat import RandomSource, SeededRandom
from model.topology import Cluster, Fabric, Service
from model.values import (
    DsrKind,
    Encap,
    Endpoint,
    IPAddress,
    Packet,
    Proto,
    TcpFlags,
    dsr_overhead,
)
from model.xdp import xdp

MAX_HOPS = 24


class Action(enum.Enum):
    """What happened at a hop that is not a node hook's own step."""

    SEND = "send"
    RECEIVE = "receive"
    REPLY = "reply"
    FABRIC_DROP = "fabric-drop"
    TO_STACK = "to-stack"


@attrs.frozen(kw_only=True)
class Hop:
    """One leg of a trace: the packet as it leaves (or dies at) a host or hook."""

    at: str
    hook: Hook | None
    action: Action | Step
    packet: Packet
    reply: bool  # on the reply path (backend towards client)


class EndKind(enum.Enum):
    """How a walk through the network ended."""

    POD = "pod"
    CLIENT = "client"
    DROP = "drop"


@attrs.frozen(kw_only=True)
class Walk:
    """The result of moving one packet until it is received or lost."""

    state: ClusterState
    hops: tuple[Hop, ...]
    end: EndKind
    at: str
    packet: Packet
    drop: tuple[str, DropReason] | None = None


@attrs.frozen(kw_only=True)
class World:
    """Everything static: the derived cluster, the agent config, who announces which VIP."""

    cluster: Cluster
    cfg: CiliumConfig
    announced: Mapping[IPAddress, frozenset[str]] = attrs.field(factory=dict)
    faults: frozenset[ModelFault] = frozenset()
    rand: RandomSource | None = None  # None: seeded by cfg.seed; a prover passes its own
    picker: FlowPicker | None = None  # None: the Maglev jhash; a prover passes its own

    _ipcache: Mapping[IPAddress, IPAddress] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        nodes = {n.name: n.ip for n in self.cluster.nodes}
        cache: dict[IPAddress, IPAddress] = {n.ip: n.ip for n in self.cluster.nodes}
        cache.update({n.router_ip: n.ip for n in self.cluster.nodes if n.router_ip})
        cache.update({n.masq_ip: n.ip for n in self.cluster.nodes if n.masq_ip})
        cache.update({p.ip: nodes[p.node] for p in self.cluster.pods})
        object.__setattr__(self, "_ipcache", MappingProxyType(cache))

    def ipcache(self) -> Mapping[IPAddress, IPAddress]:
        """cilium_ipcache's tunnel endpoints: pod, node and router IPs to their node's IP."""
        return self._ipcache

    def mtu(self, node: str) -> int:
        """The node's device MTU: its own, else the cluster's (cilium.mtu)."""
        own = self.cluster.node(node).mtu
        return own if own is not None else self.cfg.mtu

    def owns(self, node: str, addr: IPAddress) -> bool:
        """Whether the fabric lets `node` source this address (AWS source/dest check)."""
        n = self.cluster.node(node)
        if addr in (n.ip, n.router_ip, n.masq_ip):
            return True
        if any(p.ip == addr and p.node == node for p in self.cluster.pods):
            return True
        return node in self.announced.get(addr, frozenset())


@attrs.frozen(kw_only=True)
class ClusterState:
    """Per-node map state plus the model clock (seconds)."""

    nodes: Mapping[str, NodeState]
    now: int = 0
    agent: AgentBackends | None = None  # None: still as topology.derive() made them


def maglev_table(world: World, slots: tuple[int, ...], backends: Mapping[int, Endpoint],
                 proto: Proto) -> tuple[int, ...]:
    """The agent's Maglev table of a frontend's backends on one node (pkg/maglev
    GetLookupTable over the active backends, named by address, port and protocol)."""
    cfg = world.cfg
    if not cfg.maglev:
        return ()
    named = tuple((hash_string(backends[b].addr, backends[b].port, proto.name), b,
                   DEFAULT_WEIGHT) for b in slots)
    return lookup_table(named, cfg.maglev_table_size, cfg.maglev_seeds[0],
                        ModelFault.MAGLEV_SKIP_IGNORED in world.faults)


def uses_dsr(cfg: CiliumConfig, proto: Proto) -> bool:
    """SVC_FLAG_FWD_MODE_DSR per frontend: DSR mode, or hybrid for TCP."""
    return cfg.mode is LBMode.DSR or (cfg.mode is LBMode.HYBRID and proto is Proto.TCP)


def lb_maps(world: World, node: str) -> LbMaps:
    """What the agent writes into one node's LB maps."""
    c = world.cluster
    services: list[tuple[ServiceKey, ServiceEntry]] = []
    revnat = {}
    for fe in c.frontends_on(node):
        services.append(((fe.addr.addr, fe.addr.port, fe.proto), ServiceEntry(
            rev_nat_index=fe.rev_nat_index, backend_slots=fe.backends_for(node, c.backends),
            routable=fe.routable, etp_local=fe.etp_local, dsr=uses_dsr(world.cfg, fe.proto),
            source_ranges=fe.source_ranges, all_backends=fe.backend_ids,
            affinity_timeout=fe.affinity_timeout,
            maglev=maglev_table(world, fe.backends_for(node, c.backends),
                                {b: x.addr for b, x in c.backends.items()}, fe.proto))))
        revnat[fe.rev_nat_index] = fe.addr
    return LbMaps(services=services, revnat=revnat, affinity_match=affinity_match(services),
                  backends={bid: b.addr for bid, b in c.backends.items()},
                  local_endpoints=frozenset(p.ip for p in c.pods if p.node == node))


def affinity_match(services: Iterable[tuple[ServiceKey, ServiceEntry]]
                   ) -> tuple[tuple[int, int], ...]:
    """cilium_lb_affinity_match as the agent writes it: each affinity frontend's active
    backends (its slots on this node), keyed {rev_nat_id, backend_id}."""
    return tuple((e.rev_nat_index, b) for _k, e in services if e.affinity_timeout
                 for b in e.backend_slots)


@attrs.frozen(kw_only=True)
class AgentBackends:
    """The agent's endpoint bookkeeping behind the backend IDs (pkg/loadbalancer).

    A backend is one (pod, port, protocol); its ID stays while any service holds it or it
    drains; new backends take IDs from a counter that never hands a freed ID straight back.
    """

    table: Mapping[int, tuple[str, int, Proto]]  # backend ID -> (pod, port, protocol)
    live: Mapping[str, tuple[int, ...]]  # service -> backend IDs in slot order
    draining: Mapping[str, frozenset[int]] = attrs.field(factory=dict)  # terminating
    next_id: int = 1

    @classmethod
    def of(cls, cluster: Cluster) -> AgentBackends:
        """The bookkeeping topology.derive() started with."""
        table = {bid: (b.pod, b.addr.port, b.proto) for bid, b in cluster.backends.items()}
        live: dict[str, tuple[int, ...]] = {s.name: () for s in cluster.services}
        live.update({fe.service: fe.backend_ids for fe in cluster.frontends})
        return cls(table=table, live=live, next_id=max(table, default=0) + 1)

    @property
    def terminating(self) -> frozenset[int]:
        """Backend IDs flagged BE_STATE_TERMINATING."""
        return frozenset(b for ids in self.draining.values() for b in ids)

    def apply(self, svc: Service, pods: tuple[str, ...], terminating: tuple[str, ...]
              ) -> AgentBackends:
        """`svc` now has `pods`; dropped `terminating` pods drain, other dropped ones go."""
        table = dict(self.table)
        by_key = {k: bid for bid, k in table.items()}
        next_id = self.next_id
        ids = []
        for pod in pods:
            key = (pod, svc.target_port, svc.proto)
            if key not in by_key:
                by_key[key], next_id = next_id, next_id + 1
                table[by_key[key]] = key
            ids.append(by_key[key])
        live = dict(self.live)
        dropped = set(live[svc.name]) | set(self.draining.get(svc.name, frozenset()))
        live[svc.name] = tuple(ids)
        held = {b for v in live.values() for b in v}
        draining = {n: frozenset(v - held) for n, v in self.draining.items() if n != svc.name}
        draining[svc.name] = frozenset(b for b in dropped - held if table[b][0] in terminating)
        still = {b for v in draining.values() for b in v}
        for bid in dropped - held - still:
            del table[bid]
        return AgentBackends(table=table, live=live, draining=draining, next_id=next_id)


def reprogram(world: World, state: ClusterState, service: str, backends: tuple[str, ...],
              terminating: tuple[str, ...] = ()) -> ClusterState:
    """The agent's update when a service's endpoints change (scale, pod deletion).

    Backend IDs stay stable; a new (pod, port, protocol) takes the next ID. Pods listed in
    `terminating` leave the slots but stay in the backend map flagged BE_STATE_TERMINATING,
    so lb4_local keeps them for established flows (non-SYN) only; every other dropped
    backend is deleted unless another service still holds it.
    """
    c = world.cluster
    svc = next(x for x in c.services if x.name == service)
    agent = (state.agent or AgentBackends.of(c)).apply(svc, backends, terminating)
    pod_ip = {p.name: p.ip for p in c.pods}
    pod_node = {p.name: p.node for p in c.pods}
    table = {bid: Endpoint(addr=pod_ip[pod], port=port)
             for bid, (pod, port, _proto) in agent.table.items()}
    ids = agent.live[service]
    keys = {(fe.addr.addr, fe.addr.port, fe.proto) for fe in c.frontends if fe.service == service}
    nodes = {}
    for name, st in state.nodes.items():
        services = dict(st.lb.services)
        for key in keys & services.keys():
            entry = services[key]
            slots = tuple(b for b in ids
                          if not entry.etp_local or pod_node[agent.table[b][0]] == name)
            services[key] = attrs.evolve(entry, backend_slots=slots, all_backends=ids,
                                         maglev=maglev_table(world, slots, table, key[2]))
        lb = attrs.evolve(st.lb, services=services, backends=table,
                          terminating=agent.terminating,
                          affinity_match=affinity_match(services.items()))
        nodes[name] = attrs.evolve(st, lb=lb)
    return attrs.evolve(state, nodes=MappingProxyType(nodes), agent=agent)


def initial_state(world: World) -> ClusterState:
    """Empty CT and NAT maps, LB maps as the agent programs them."""
    return ClusterState(agent=AgentBackends.of(world.cluster), nodes=MappingProxyType({
        n.name: NodeState(lb=lb_maps(world, n.name), ct=LruMap(capacity=world.cfg.ct_max,
                                                  any_capacity=world.cfg.ct_any_max),
                          snat=LruMap(capacity=world.cfg.nat_max))
        for n in world.cluster.nodes}))


def _ctx(world: World, state: ClusterState, node: str, pinned: IPAddress | None) -> NodeCtx:
    n = world.cluster.node(node)
    rand = world.rand if world.rand is not None else SeededRandom(world.cfg.seed)
    return NodeCtx(cfg=world.cfg, name=node, ip=n.ip, router_ip=n.router_ip, masq_ip=n.masq_ip,
                   ipcache=world.ipcache(), now=state.now, pinned=pinned, faults=world.faults,
                   rand=rand, mtu=world.mtu(node), picker=world.picker or JhashPicker())


def _set(state: ClusterState, node: str, st: NodeState) -> ClusterState:
    nodes = dict(state.nodes)
    nodes[node] = st
    return attrs.evolve(state, nodes=MappingProxyType(nodes))


def gc_all(state: ClusterState, faults: frozenset[ModelFault] = frozenset()) -> ClusterState:
    """Run the agent's CT garbage collector on every node at the current time."""
    nodes = {name: gc(st, state.now, faults) for name, st in state.nodes.items()}
    return attrs.evolve(state, nodes=MappingProxyType(nodes))


def reply_to(pkt: Packet) -> Packet:
    """What a pod answers: swapped tuple, SYN answered by SYN-ACK, FIN by FIN-ACK."""
    flags = TcpFlags.NONE
    if pkt.proto is Proto.TCP:
        flags = TcpFlags.SYN | TcpFlags.ACK if pkt.is_syn else TcpFlags.ACK
        if pkt.flags & TcpFlags.FIN:
            flags = TcpFlags.FIN | TcpFlags.ACK
    return Packet(src=pkt.dst, dst=pkt.src, proto=pkt.proto, flags=flags)


def _fabric_loss(world: World, sender: str, pkt: Packet) -> DropReason | None:
    """Apply the fabric facts to a packet a node puts on the wire."""
    fabric = world.cluster.fabric
    src = pkt.outer.src if pkt.outer is not None else pkt.src.addr
    if Fabric.SOURCE_DEST_CHECK in fabric and not world.owns(sender, src):
        return DropReason.FABRIC_SOURCE_DEST_CHECK
    if (Fabric.DROPS_IP_OPTIONS in fabric and pkt.outer is None and pkt.dsr is not None
            and pkt.dsr.kind in (DsrKind.IPV4_OPTION, DsrKind.IPV6_DSTOPT)):
        return DropReason.FABRIC_DROPS_IP_OPTIONS
    if pkt.size is not None and wire_length(pkt) > world.mtu(sender):
        return DropReason.FABRIC_OVER_MTU
    return None


def wire_length(pkt: Packet) -> int:
    """The L3 length a node puts on the wire: the client's packet, its DSR option or
    extension header, and a Geneve encapsulation (outer IP, UDP, Geneve, inner Ethernet)."""
    assert pkt.size is not None
    kind = pkt.dsr.kind if pkt.dsr is not None else None
    n = pkt.size + dsr_overhead(kind, pkt.is_ipv6, False)
    if pkt.outer is not None:
        n += pkt.outer.length
        if kind is DsrKind.GENEVE_OPTION:
            n += 24 if pkt.is_ipv6 else 12
    return n


def _receiver(world: World, pkt: Packet, via: str | None) -> tuple[str, str] | None:
    """Which host the fabric hands this packet to: ('client'|'node'|'pod', name)."""
    if pkt.outer is not None:
        return world.cluster.owner_of(pkt.outer.dst)
    owner = world.cluster.owner_of(pkt.dst.addr)
    if owner is not None:
        return owner
    nodes = world.announced.get(pkt.dst.addr, frozenset())
    if via is not None and via in nodes:
        return ("node", via)
    if nodes:
        return ("node", sorted(nodes)[0])
    return None


def walk(world: World, state: ClusterState, sender: tuple[str, str], pkt: Packet, *,
         reply: bool, via: str | None = None, pinned: IPAddress | None = None) -> Walk:
    """Move a packet from its sender until a pod or client receives it or it is lost."""
    hops: list[Hop] = []
    drop: tuple[str, DropReason] | None = None
    backwards = [reply]  # an ICMP error answering a request travels back to the client

    def hop(at: str, hook: Hook | None, action: Action | Step, p: Packet) -> None:
        hops.append(Hop(at=at, hook=hook, action=action, packet=p, reply=backwards[0]))

    def end(kind: EndKind, at: str, p: Packet, why: tuple[str, DropReason] | None) -> Walk:
        return Walk(state=state, hops=tuple(hops), end=kind, at=at, packet=p, drop=why)

    kind, name = sender
    if kind == "pod":
        pod = world.cluster.pod(name)
        hook = reply_hook(world.cfg) if reply else Hook.TO_NETDEV  # masquerade: to-netdev
        st, res = to_netdev(_ctx(world, state, pod.node, None), state.nodes[pod.node], pkt)
        state = _set(state, pod.node, st)
        hop(pod.node, hook, res.step, res.packet)
        if res.verdict is Verdict.DROP:  # the masquerade found no free port
            assert res.reason is not None
            return end(EndKind.DROP, pod.node, res.packet, (pod.node, res.reason))
        kind, name, pkt = "node", pod.node, res.packet
    for _ in range(MAX_HOPS):
        if kind == "node":
            loss = _fabric_loss(world, name, pkt)
            if loss is not None:
                hop("fabric", None, Action.FABRIC_DROP, pkt)
                return end(EndKind.DROP, "fabric", pkt, drop or ("fabric", loss))
        target = _receiver(world, pkt, via)
        if target is None:
            hop("fabric", None, Action.FABRIC_DROP, pkt)
            return end(EndKind.DROP, "fabric", pkt,
                       drop or ("fabric", DropReason.FABRIC_NO_ROUTE))
        tkind, tname = target
        if tkind == "client":
            hop(tname, None, Action.RECEIVE, pkt)
            if drop is not None:
                return end(EndKind.DROP, tname, pkt, drop)
            return end(EndKind.CLIENT, tname, pkt, None)
        node = tname if tkind == "node" else world.cluster.pod(tname).node
        ctx = _ctx(world, state, node, pinned)
        tunnelled = pkt.outer is not None and pkt.outer.kind is Encap.GENEVE
        hookname = Hook.FROM_OVERLAY if tunnelled else Hook.FROM_NETDEV
        if pkt.outer is None and world.cfg.accelerated:
            # cil_xdp_entry on the native device first; a tunnelled packet is no service
            # and no NAT reply there, so XDP passes it unchanged (not drawn)
            st, xres = xdp(ctx, state.nodes[node], pkt)
            state = _set(state, node, st)
            if not xres.passed:
                hookname, res = Hook.XDP, xres.res
            else:
                hop(node, Hook.XDP, xres.res.step, xres.res.packet)
                st, res = from_netdev(ctx, st, xres.res.packet, skip_nodeport=xres.no_svc)
        else:
            # an IPIP packet: XDP finds no L4 in it and passes it with XFER_PKT_NO_SVC,
            # which v1.20's termination clears (bpf_host.c:1169-1174); tc does the work
            prog = from_overlay if tunnelled else from_netdev
            st, res = prog(ctx, state.nodes[node], pkt)
        state = _set(state, node, st)
        if res.step is Step.DSR_INGRESS and world.cfg.version is CiliumVersion.V1_13:
            hookname = Hook.TO_CONTAINER
        if res.verdict is Verdict.REJECT:
            assert res.reason is not None
            drop = (node, res.reason)
            backwards[0] = True
        hop(node, hookname, res.step, res.packet)
        outcome = _after_hook(world, node, res)
        if outcome is not None:
            ekind, at, why = outcome
            if ekind is EndKind.POD:
                hop(at, None, Action.RECEIVE, res.packet)
            return end(ekind, at, res.packet, drop or why)
        kind, name, pkt = "node", node, res.packet
    raise RuntimeError("forwarding loop in the model")  # pragma: no cover - a model bug


def _after_hook(world: World, node: str, res: HookResult
                ) -> tuple[EndKind, str, tuple[str, DropReason] | None] | None:
    """Classify a hook's verdict: delivered to a pod, lost, or still travelling (None)."""
    if res.verdict is Verdict.DROP:
        assert res.reason is not None
        return EndKind.DROP, node, (node, res.reason)
    if res.verdict is Verdict.TO_STACK:
        return EndKind.DROP, node, (node, DropReason.PUNT_TO_STACK)
    if res.verdict is Verdict.DELIVER:
        owner = world.cluster.owner_of(res.packet.dst.addr)
        assert owner is not None and owner[0] == "pod"
        return EndKind.POD, owner[1], None
    return None
