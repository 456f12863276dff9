"""Client flows driven through the cluster, and the traces they leave (trace JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from model.drops import DropReason
from model.fragments import fragments, ordered
from model.network import (
    Action,
    ClusterState,
    EndKind,
    Hop,
    World,
    gc_all,
    initial_state,
    reply_to,
    reprogram,
    walk,
)
from model.values import Encap, Endpoint, IcmpKind, IPAddress, Packet, Proto, TcpFlags


@attrs.frozen(kw_only=True)
class FlowSpec:
    """A client opening one connection (TCP) or datagram stream (UDP) to a frontend."""

    name: str
    client: str
    source: Endpoint
    frontend: Endpoint
    proto: Proto
    via: str | None
    packets: int
    service: str
    backend: str | None = None  # pod name pinned by the scenario
    idle: int = 0  # seconds of silence before the flow starts (CT GC runs then)
    close: bool = False  # TCP: end with FIN from the client, answered by the backend
    # Endpoint changes applied before the flow: (service, new backends), and the dropped
    # pods that stay as terminating backends (existing connections drain).
    set_backends: tuple[tuple[str, tuple[str, ...]], ...] = ()
    terminating: tuple[str, ...] = ()
    resume: bool = False  # TCP: continue an established connection (no SYN first)
    # How a closing TCP flow ends (with close=True), on its last packet: "fin" the client
    # sends FIN-ACK, answered by FIN-ACK; "half" FIN-ACK answered by a plain ACK (closed one
    # way); "rst" the client sends RST, unanswered; "backend-fin" / "backend-rst" the
    # backend answers the last ACK with FIN-ACK / RST.
    ending: str = "fin"
    lost_replies: bool = False  # the backend's answers never reach its node
    # The backend answers every request with this ICMP error about it instead of a reply
    # (a closed UDP port, a too-big packet: the model has no routers, so an error from a
    # router on the backend leg is drawn as the backend's; only the outer source differs).
    backend_error: IcmpKind | None = None
    # The client is a pod and `frontend` an address outside the cluster (a `clients:` host,
    # which answers): pod egress, masqueraded under bpf.masquerade (model/masq.py).
    egress: bool = False
    # The client is a pod calling a service (ClusterIP, or a NodePort with `via` its node):
    # east-west, translated on the pod's own node (model/ewflows.py)
    east_west: bool = False
    size: int | None = None  # each request's L3 length (None: the model's short packet)
    ip_options: int = 0  # bytes of IPv4 options in each request's header
    # Each datagram leaves the client as this many IP fragments (0: unfragmented), reaching
    # the node in fragment_order (model.fragments.ORDERS); datagram i has IP id
    # fragment_id + i. The backend answers once it has every fragment.
    fragments: int = 0
    fragment_order: str = "in-order"
    fragment_id: int = 256


ENDINGS = ("fin", "half", "rst", "backend-fin", "backend-rst")


@attrs.frozen(kw_only=True)
class FlowTrace:
    """Everything one flow did: legs in order, what the backend and the client saw."""

    spec: FlowSpec
    delivered: bool
    drop: tuple[str, DropReason] | None
    hops: tuple[Hop, ...]
    backend_saw: tuple[Packet, ...]
    client_saw: tuple[Packet, ...]
    backend_pod: str | None
    # A fragmented flow's datagrams: per fragment in arrival order, (offset, pod that got it
    # or None); the fragments' pods must agree for the backend to reassemble the datagram.
    datagrams: tuple[tuple[tuple[int, str | None], ...], ...] = ()


def _ends_here(spec: FlowSpec, index: int) -> bool:
    """The index-th packet is the closing one (never the SYN that opens the flow)."""
    return (spec.close and spec.proto is Proto.TCP and index == spec.packets - 1
            and (index > 0 or spec.resume))


def request(spec: FlowSpec, index: int) -> Packet:
    """The index-th packet a client sends: SYN first, then ACKs, FIN (or RST) last if
    closing."""
    flags = TcpFlags.NONE
    if spec.proto is Proto.TCP:
        flags = TcpFlags.SYN if index == 0 and not spec.resume else TcpFlags.ACK
        if _ends_here(spec, index) and spec.ending in ("fin", "half"):
            flags = TcpFlags.FIN | TcpFlags.ACK
        elif _ends_here(spec, index) and spec.ending == "rst":
            flags = TcpFlags.RST
    return Packet(src=spec.source, dst=spec.frontend, proto=spec.proto, flags=flags,
                  size=spec.size, ip_options=spec.ip_options)


def answer(spec: FlowSpec, index: int, delivered: Packet) -> Packet | None:
    """What the backend answers the index-th request with (reply_to, or the flow's ending);
    None when nothing reaches its node (an RST is not answered; lost replies)."""
    if spec.lost_replies:
        return None
    if spec.backend_error is not None:
        return icmp_error(delivered, spec.backend_error)
    ans = reply_to(delivered)
    if not _ends_here(spec, index) or spec.ending == "fin":
        return ans
    flags = {"half": TcpFlags.ACK, "backend-fin": TcpFlags.FIN | TcpFlags.ACK,
             "backend-rst": TcpFlags.RST}.get(spec.ending)
    return None if flags is None else attrs.evolve(ans, flags=flags)


def icmp_error(about: Packet, kind: IcmpKind) -> Packet:
    """The ICMP error a host sends about a packet it received: to that packet's source,
    quoting its header (RFC 792 / RFC 4443); ICMP has no ports, so they are 0."""
    return Packet(src=Endpoint(addr=about.dst.addr, port=0),
                  dst=Endpoint(addr=about.src.addr, port=0),
                  proto=Proto.ICMPV6 if about.is_ipv6 else Proto.ICMP, icmp=kind,
                  quote=about.key())


def run_flow(world: World, state: ClusterState, spec: FlowSpec
             ) -> tuple[ClusterState, FlowTrace]:
    """Send the flow's packets one by one; each delivered request is answered by its pod."""
    if spec.east_west:
        from model.ewflows import run_ew_flow  # it builds on this module

        return run_ew_flow(world, state, spec)
    hops: list[Hop] = []
    backend_saw: list[Packet] = []
    client_saw: list[Packet] = []
    drop: tuple[str, DropReason] | None = None
    pods: list[str] = []
    pinned: IPAddress | None = None
    if spec.backend is not None:
        pinned = world.cluster.pod(spec.backend).ip
    for service, members in spec.set_backends:
        state = reprogram(world, state, service, members, spec.terminating)
    if spec.idle:
        state = gc_all(attrs.evolve(state, now=state.now + spec.idle), world.faults)
    datagrams: list[tuple[tuple[int, str | None], ...]] = []
    for i in range(spec.packets):
        state = attrs.evolve(state, now=state.now + 1)
        pkt = request(spec, i)
        sent: tuple[Packet, ...] = (pkt,)
        if spec.fragments > 1:
            sent = ordered(fragments(pkt, spec.fragments, spec.fragment_id + i),
                           spec.fragment_order)
        sender, served, answered = ("client", EndKind.POD, EndKind.CLIENT)
        if spec.egress:  # a pod to an outside host, which answers back to the pod
            sender, served, answered = ("pod", EndKind.CLIENT, EndKind.POD)
        got: list[tuple[int, str | None]] = []
        first: Packet | None = None
        for piece in sent:
            hops.append(Hop(at=spec.client, hook=None, action=Action.SEND, packet=piece,
                            reply=False))
            w = walk(world, state, (sender, spec.client), piece, reply=False, via=spec.via,
                     pinned=pinned)
            state = w.state
            hops.extend(w.hops)
            if w.end is EndKind.CLIENT and not spec.egress:  # a reply generated on the way
                client_saw.append(w.packet)
            if w.end is not served:
                if w.end is EndKind.DROP and w.at == spec.client:
                    client_saw.append(w.packet)  # the ICMP error the node answered with
                drop = w.drop
                break
            got.append((piece.frag.offset if piece.frag is not None else 0, w.at))
            backend_saw.append(w.packet)
            pods.append(w.at)
            if piece.frag is None or piece.frag.first:
                first = w.packet
        if spec.fragments > 1:
            datagrams.append(tuple(got))
        if drop is not None:
            break
        assert first is not None
        if len({at for _, at in got}) > 1:
            continue  # the fragments went apart: no pod has the whole datagram to answer
        ans = answer(spec, i, attrs.evolve(first, frag=None))
        if ans is None:
            continue
        hops.append(Hop(at=pods[-1], hook=None, action=Action.REPLY, packet=ans, reply=True))
        r = walk(world, state, ("client" if spec.egress else "pod", pods[-1]), ans, reply=True)
        state = r.state
        hops.extend(r.hops)
        if r.end is not answered:
            drop = r.drop
            break
        client_saw.append(r.packet)
    trace = FlowTrace(spec=spec, delivered=drop is None, drop=drop, hops=tuple(hops),
                      backend_saw=tuple(backend_saw), client_saw=tuple(client_saw),
                      backend_pod=pods[0] if pods else None, datagrams=tuple(datagrams))
    return state, trace


def run_flows(world: World, flows: Sequence[FlowSpec],
              state: ClusterState | None = None) -> tuple[ClusterState, list[FlowTrace]]:
    """Run flows in order on shared node state (conntrack and SNAT persist between them)."""
    st = initial_state(world) if state is None else state
    traces = []
    for spec in flows:
        st, tr = run_flow(world, st, spec)
        traces.append(tr)
    return st, traces


def _outer_json(pkt: Packet) -> dict[str, Any] | None:
    """The outer header: Geneve with its VNI, IPIP (no identity on the wire) without."""
    o = pkt.outer
    if o is None:
        return None
    out: dict[str, Any] = {"type": o.kind.value, "src": str(o.src), "dst": str(o.dst)}
    if o.kind is Encap.GENEVE:
        out["vni"] = o.vni
    return out


def packet_json(pkt: Packet) -> dict[str, Any]:
    """A packet in the trace JSON shape."""
    # ICMP and a later fragment have no ports on the wire: addresses only
    bare = pkt.proto in (Proto.ICMP, Proto.ICMPV6) or (pkt.frag is not None
                                                       and not pkt.frag.first)
    out: dict[str, Any] = {
        "src": str(pkt.src.addr) if bare else str(pkt.src),
        "dst": str(pkt.dst.addr) if bare else str(pkt.dst),
        "proto": pkt.proto.name,
        "flags": pkt.flags.letters() if pkt.proto is Proto.TCP else None,
        "dsr": str(pkt.dsr.frontend) if pkt.dsr is not None else None,
        "outer": _outer_json(pkt),
    }
    if pkt.dsr is not None:
        out["dsr_kind"] = pkt.dsr.kind.value
    if pkt.icmp is not None:
        out["icmp"] = pkt.icmp.value
    if pkt.quote is not None:
        out["quote"] = {"src": str(pkt.quote.src), "dst": str(pkt.quote.dst),
                        "proto": pkt.quote.proto.name}
    if pkt.mtu is not None:
        out["mtu"] = pkt.mtu
    if pkt.size is not None:
        out["size"] = pkt.size
    if pkt.ip_options:
        out["ip_options"] = pkt.ip_options
    if pkt.frag is not None:
        out["fragment"] = {"id": pkt.frag.id, "offset": pkt.frag.offset,
                           "more": pkt.frag.more}
    return out


def _seen(pkt: Packet) -> dict[str, Any]:
    full = packet_json(pkt)
    seen = {"src": full["src"], "dst": full["dst"], "proto": full["proto"]}
    if pkt.proto is Proto.TCP:
        seen["flags"] = full["flags"]
    if pkt.icmp is not None:
        seen["icmp"] = full["icmp"]
    if pkt.quote is not None:
        seen["quote"] = full["quote"]
    if pkt.mtu is not None:
        seen["mtu"] = pkt.mtu
    if pkt.frag is not None:
        seen["fragment"] = full["fragment"]
    return seen


def _changed(prev: Packet | None, cur: Packet) -> list[str]:
    if prev is None:
        return []
    return [f for f in ("src", "dst", "proto", "flags", "dsr", "outer", "quote")
            if getattr(prev, f) != getattr(cur, f)]


def trace_json(tr: FlowTrace) -> dict[str, Any]:
    """One flow in the `nodeport trace --json` shape."""
    hops = []
    prev: Packet | None = None
    for h in tr.hops:
        hops.append({"at": h.at, "hook": h.hook.value if h.hook else None,
                     "action": h.action.value, "direction": "reply" if h.reply else "request",
                     "changed": [] if h.action in (Action.SEND, Action.REPLY)
                     else _changed(prev, h.packet),
                     "packet": packet_json(h.packet)})
        prev = h.packet
    return {
        "name": tr.spec.name,
        "outcome": "delivered" if tr.delivered else "dropped",
        "drop": ({"at": tr.drop[0], "reason": tr.drop[1].name, "code": tr.drop[1].code}
                 if tr.drop else None),
        "client": str(tr.spec.source),
        "frontend": str(tr.spec.frontend),
        "backend": tr.backend_pod,
        "hops": hops,
        "backend_saw": [_seen(p) for p in tr.backend_saw],
        "client_saw": [_seen(p) for p in tr.client_saw],
    }
