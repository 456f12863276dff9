"""The two walks difftest compares, as observations: the model's hops, a byte-level network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from datapath.abstraction import AbstractionError, node_config, packet_of, wire_fault
from datapath.adapter import Datapath, DatapathFactory, check_datapath
from datapath.drop import Verdict as DpVerdict
from datapath.drop import XdpVerdict
from datapath.mapstate import CT_MAPS, NAT_MAPS, node_state
from model.drops import DropReason
from model.hooks import Hook, Step
from model.maps import NodeState
from model.network import MAX_HOPS, ClusterState, EndKind, World, walk
from model.topology import Fabric
from model.values import Encap, IPAddress, Packet, Proto


@attrs.frozen(kw_only=True)
class Obs:
    """One hook execution as seen from outside: where, which hook, verdict, emitted packet."""

    at: str
    hook: str
    verdict: str
    packet: Packet | None
    note: str = ""


@attrs.frozen(kw_only=True)
class End:
    """How one walk ended: ('pod'|'client'|'drop', where, last packet, drop site/reason)."""

    kind: str
    at: str
    packet: Packet | None
    drop: tuple[str, str] | None


def _ipip_in(data: bytes | bytearray) -> bool:
    """The bytes a hook got were IPIP-encapsulated (DSR dispatch ipip)."""
    try:
        o = packet_of(data).outer
    except AbstractionError:
        return False
    return o is not None and o.kind is Encap.IPIP


def pkt_str(p: Packet | None) -> str:
    """Compact one-line packet rendering for traces."""
    if p is None:
        return "-"
    if p.icmp is not None:
        s = f"{p.proto.name} {p.src.addr} -> {p.dst.addr} {p.icmp.value}"
    else:
        fl = f" [{p.flags.letters()}]" if p.proto is Proto.TCP else ""
        s = f"{p.proto.name} {p.src} -> {p.dst}{fl}"
    if p.dsr is not None:
        s += f" dsr={p.dsr.frontend}({p.dsr.kind.value})"
    if p.outer is not None and p.outer.kind is Encap.IPIP:
        s += f" outer=ipip {p.outer.src}->{p.outer.dst}"
    elif p.outer is not None:
        s += f" outer={p.outer.src}->{p.outer.dst}/vni={p.outer.vni}"
    return s


def obs_str(o: Obs | End) -> str:
    """One trace line."""
    if isinstance(o, End):
        d = f" drop={o.drop[1]}@{o.drop[0]}" if o.drop else ""
        return f"end {o.kind} at {o.at}{d}: {pkt_str(o.packet)}"
    return f"{o.at} {o.hook} {o.verdict}: {pkt_str(o.packet)}{o.note}"


# -- the model side ------------------------------------------------------------------------
def model_walk(world: World, state: ClusterState, sender: tuple[str, str], pkt: Packet, *,
               reply: bool, via: str | None, pinned: IPAddress | None
               ) -> tuple[ClusterState, list[Obs], End]:
    """model.network.walk, with its hops turned into observations."""
    w = walk(world, state, sender, pkt, reply=reply, via=via, pinned=pinned)
    hooks = [h for h in w.hops if h.hook is not None]
    obs = []
    for i, h in enumerate(hooks):
        assert h.hook is not None
        last = i == len(hooks) - 1
        if h.action is Step.REJECT:
            v = "reject"
        elif h.hook is Hook.XDP and not last and hooks[i + 1].at == h.at:
            v = "pass"  # XDP_PASS: the node's from-netdev comes next
        elif not last:
            v = "forward"
        elif w.end is EndKind.POD:
            v = "deliver"
        elif w.end is EndKind.DROP and w.drop is not None and w.drop[0] == h.at == w.at:
            v = "to-stack" if w.drop[1] is DropReason.PUNT_TO_STACK else "drop"
        else:
            v = "forward"
        obs.append(Obs(at=h.at, hook=h.hook.value, verdict=v, packet=h.packet))
    drop = (w.drop[0], w.drop[1].name) if w.drop is not None else None
    return w.state, obs, End(kind=w.end.value, at=w.at, packet=w.packet, drop=drop)


# -- the datapath side ---------------------------------------------------------------------
class DatapathNet:
    """A cluster of Datapath instances joined by a byte-level fabric (the test harness)."""

    def __init__(self, world: World, factory: DatapathFactory, faults: frozenset[str],
                 spec: str = "datapath") -> None:
        self.world = world
        self.nodes: dict[str, Datapath] = {
            n.name: check_datapath(factory(node_config(world, n.name), faults), spec)
            for n in world.cluster.nodes}
        self.node_ips = {n.name: (n.ip, n.router_ip) for n in world.cluster.nodes}
        # Frontends a node serves: a packet for one that the node passes up its stack (a
        # backend-less service with enable-no-service-endpoints-routable=false) ends there.
        self.frontends = {n.name: frozenset(fe.addr.addr for fe in
                                            world.cluster.frontends_on(n.name))
                          for n in world.cluster.nodes}
        self.touched: set[str] = set()  # nodes a hook ran on since the caller cleared it
        self.xfer = 0  # the XFER flags of the last XDP_PASS

    def close(self) -> None:
        """Free every node that holds resources (a `close()` method: real BPF objects)."""
        for dp in self.nodes.values():
            fn = getattr(dp, "close", None)
            if callable(fn):
                fn()

    def advance(self, seconds: int) -> None:
        """Every node's clock moves together."""
        for dp in self.nodes.values():
            dp.advance(seconds)

    def gc(self) -> None:
        """The agent's CT GC (and orphan NAT purge) on every node."""
        for dp in self.nodes.values():
            dp.gc()

    def _receiver(self, p: Packet, via: str | None) -> tuple[str, str] | None:
        c = self.world.cluster
        if p.outer is not None:
            return c.owner_of(p.outer.dst)
        owner = c.owner_of(p.dst.addr)
        if owner is not None:
            return owner
        nodes = self.world.announced.get(p.dst.addr, frozenset())
        if via is not None and via in nodes:
            return ("node", via)
        return ("node", sorted(nodes)[0]) if nodes else None

    def _fabric_loss(self, sender: str, p: Packet, data: bytes | bytearray) -> str | None:
        """The fabric facts, judged on the bytes a node puts on the wire."""
        fabric = self.world.cluster.fabric
        src = p.outer.src if p.outer is not None else p.src.addr
        if Fabric.SOURCE_DEST_CHECK in fabric and not self.world.owns(sender, src):
            return DropReason.FABRIC_SOURCE_DEST_CHECK.name
        if Fabric.DROPS_IP_OPTIONS in fabric and p.outer is None and (
                (data[0] >> 4 == 4 and data[0] & 0xF > 5)
                or (data[0] >> 4 == 6 and data[6] in (0, 43, 60))):
            return DropReason.FABRIC_DROPS_IP_OPTIONS.name
        if len(data) > self.world.mtu(sender):
            return DropReason.FABRIC_OVER_MTU.name
        return None

    def _hook(self, node: str, hook: str, data: bytes | bytearray, pin: int | None,
              xfer: int = 0) -> tuple[Obs, bytes | bytearray, str, tuple[str, str] | None]:
        """Run one hook; returns the observation, the bytes, and 'go'|'pod'|'stop', or
        'pass' with the XFER flags in self.xfer (XDP_PASS: from-netdev next)."""
        self.touched.add(node)
        r = self.nodes[node].run(hook, data, pin, xfer=xfer) if xfer else \
            self.nodes[node].run(hook, data, pin)
        try:
            out = packet_of(r.packet)
        except AbstractionError as e:
            o = Obs(at=node, hook=hook, verdict="garbage", packet=None, note=f" ({e})")
            return o, r.packet, "stop", (node, "UNPARSEABLE_OUTPUT")
        if isinstance(r.verdict, XdpVerdict):
            if r.verdict is XdpVerdict.XDP_PASS:
                self.xfer = r.xfer
                return Obs(at=node, hook=hook, verdict="pass", packet=out), r.packet, \
                    "pass", None
            if r.verdict is not XdpVerdict.XDP_TX:
                reason = r.drop_reason.name if r.drop_reason is not None else "DROP_UNKNOWN"
                return Obs(at=node, hook=hook, verdict="drop", packet=out), r.packet, \
                    "stop", (node, reason)
            if r.drop_reason is not None:  # the ICMP reject, sent back out at XDP
                return Obs(at=node, hook=hook, verdict="reject", packet=out), r.packet, \
                    "go", (node, r.drop_reason.name)
            return Obs(at=node, hook=hook, verdict="forward", packet=out), r.packet, "go", None
        if r.verdict == DpVerdict.CTX_ACT_DROP:
            reason = r.drop_reason.name if r.drop_reason is not None else "DROP_UNKNOWN"
            return Obs(at=node, hook=hook, verdict="drop", packet=out), r.packet, "stop", \
                (node, reason)
        target = r.target or ""
        if r.verdict == DpVerdict.CTX_ACT_REDIRECT and target.startswith("lxc") and \
                out.outer is not None:  # still IPIP: the pod's stack has no handler for it
            return Obs(at=node, hook=hook, verdict="drop", packet=out), r.packet, "stop", \
                (node, DropReason.ENDPOINT_NO_IPIP.name)
        if r.verdict == DpVerdict.CTX_ACT_REDIRECT and target.startswith("lxc"):
            return Obs(at=node, hook=hook, verdict="deliver", packet=out), r.packet, "pod", None
        if r.drop_reason is not None:  # tail_no_service_*: ICMP answered, request dropped
            return Obs(at=node, hook=hook, verdict="reject", packet=out), r.packet, "go", \
                (node, r.drop_reason.name)
        if r.verdict == DpVerdict.CTX_ACT_OK and target == "stack":
            if out.outer is None and (out.dst.addr in self.node_ips[node]
                                      or out.dst.addr in self.frontends[node]
                                      or _ipip_in(data)):
                return Obs(at=node, hook=hook, verdict="to-stack", packet=out), r.packet, \
                    "stop", (node, DropReason.PUNT_TO_STACK.name)
            owner = self.world.cluster.owner_of(out.dst.addr)
            if owner is not None and owner[0] == "pod" and \
                    self.world.cluster.pod(owner[1]).node == node:
                return Obs(at=node, hook=hook, verdict="deliver", packet=out), r.packet, \
                    "pod", None
        return Obs(at=node, hook=hook, verdict="forward", packet=out), r.packet, "go", None

    def walk(self, sender: tuple[str, str], data: bytes | bytearray, *, via: str | None,
             pin: int | None) -> tuple[list[Obs], End, bytes | bytearray]:
        """Move bytes from a client or pod until a pod or client gets them or they die."""
        obs: list[Obs] = []
        drop: tuple[str, str] | None = None
        kind, name = sender
        if kind == "pod":
            node = self.world.cluster.pod(name).node
            o, data, go, why = self._hook(node, "to-netdev", data, None)
            obs.append(o)
            if go == "stop":
                return obs, End(kind="drop", at=node, packet=o.packet, drop=why), data
        sender_node = self.world.cluster.pod(name).node if kind == "pod" else None
        for _ in range(MAX_HOPS):
            p = packet_of(data)
            if sender_node is not None:
                loss = self._fabric_loss(sender_node, p, data)
                if loss is not None:
                    return obs, End(kind="drop", at="fabric", packet=p,
                                    drop=drop or ("fabric", loss)), data
            target = self._receiver(p, via)
            if target is None:
                return obs, End(kind="drop", at="fabric", packet=p,
                                drop=drop or ("fabric", DropReason.FABRIC_NO_ROUTE.name)), data
            tkind, tname = target
            if tkind == "client":
                bad = wire_fault(data)
                if drop is not None or bad is not None:
                    return obs, End(kind="drop", at=tname, packet=p,
                                    drop=drop or (tname, bad or "")), data
                return obs, End(kind="client", at=tname, packet=p, drop=None), data
            node = tname if tkind == "node" else self.world.cluster.pod(tname).node
            tunnelled = p.outer is not None and p.outer.kind is Encap.GENEVE
            hook = "from-overlay" if tunnelled else "from-netdev"
            go, xfer = "", 0
            if p.outer is None and self.world.cfg.accelerated:
                # an IPIP packet passes XDP untouched (no L4: XFER_PKT_NO_SVC), which
                # v1.20's termination clears; the model draws no XDP hop for it
                o, data, go, why = self._hook(node, "xdp", data, pin)
                obs.append(o)
                xfer = self.xfer
            if go != "pass" and go:
                pass  # XDP_TX or XDP_DROP: tc never sees the packet
            else:
                o, data, go, why = self._hook(node, hook, data, pin, xfer)
                obs.append(o)
            if go == "pod":
                assert o.packet is not None
                owner = self.world.cluster.owner_of(o.packet.dst.addr)
                at = owner[1] if owner is not None else "?"
                bad = wire_fault(data)
                if bad is not None:  # the pod's stack discards it
                    return obs, End(kind="drop", at=at, packet=o.packet, drop=(at, bad)), data
                return obs, End(kind="pod", at=at, packet=o.packet, drop=drop), data
            if go == "stop":
                return obs, End(kind="drop", at=node, packet=o.packet, drop=drop or why), data
            if why is not None:
                drop = why
            sender_node = node
        return obs, End(kind="drop", at="fabric", packet=None, drop=("fabric", "LOOP")), data

    def states(self, ref: Mapping[str, NodeState], lb: bool = False,
               nodes: Iterable[str] | None = None) -> dict[str, NodeState]:
        """Every node's (or the named nodes') maps through the abstraction function
        (CT/NAT only unless lb)."""
        names = None if lb else (*CT_MAPS, *NAT_MAPS, "cilium_ratelimit")
        return {n: node_state(self.nodes[n].dump(names), ref[n], lb)
                for n in (self.nodes if nodes is None else nodes)}
