"""A pod's flow to a service, hop by hop: socket-LB or from-container, the network, to-container."""

from __future__ import annotations

import attrs

from model.drops import DropReason
from model.eastwest import (
    SockPeer,
    from_container,
    service_loopback,
    sock_connect,
    sock_rev,
    to_container,
)
from model.flows import FlowSpec, FlowTrace, answer, request
from model.hooks import Hook, Step, Verdict
from model.network import (
    Action,
    ClusterState,
    EndKind,
    Hop,
    World,
    _ctx,
    _set,
    gc_all,
    walk,
)
from model.values import IPAddress, Packet


@attrs.define
class _Run:
    """What one east-west flow has done so far."""

    state: ClusterState
    hops: list[Hop] = attrs.Factory(list)
    backend_saw: list[Packet] = attrs.Factory(list)
    client_saw: list[Packet] = attrs.Factory(list)
    pods: list[str] = attrs.Factory(list)
    drop: tuple[str, DropReason] | None = None

    def hop(self, at: str, hook: Hook | None, action: Action | Step, pkt: Packet,
            reply: bool) -> None:
        self.hops.append(Hop(at=at, hook=hook, action=action, packet=pkt, reply=reply))


def run_ew_flow(world: World, state: ClusterState, spec: FlowSpec
                ) -> tuple[ClusterState, FlowTrace]:
    """The pod sends the flow's packets through its own node first; each delivered request
    is answered by its backend, the answer reverse-translated on the client's node."""
    pinned = world.cluster.pod(spec.backend).ip if spec.backend is not None else None
    if spec.idle:
        state = gc_all(attrs.evolve(state, now=state.now + spec.idle), world.faults)
    run = _Run(state=state)
    node = world.cluster.pod(spec.client).node
    peer: SockPeer | None = None
    for i in range(spec.packets):
        run.state = attrs.evolve(run.state, now=run.state.now + 1)
        pkt = request(spec, i)
        run.hop(spec.client, None, Action.SEND, pkt, False)
        if world.cfg.socket_lb:
            ctx = _ctx(world, run.state, node, pinned)
            if i == 0:  # connect(): the socket's peer for the whole flow
                peer, err = sock_connect(ctx, run.state.nodes[node], pkt)
                if err is not None:
                    run.hop(node, Hook.SOCK_CONNECT, Step.DROP, pkt, False)
                    run.drop = (node, err)
                    break
            if peer is not None:
                pkt = attrs.evolve(pkt, dst=peer.backend)
                run.hop(node, Hook.SOCK_CONNECT, Step.SOCK_XLATE, pkt, False)
        got = _request(world, run, spec, node, pkt, pinned)
        if got is None:
            break
        at, delivered = got
        run.backend_saw.append(delivered)
        run.pods.append(at)
        ans = answer(spec, i, delivered)
        if ans is None:
            continue
        run.hop(at, None, Action.REPLY, ans, True)
        seen = _reply(world, run, spec, node, at, ans)
        if seen is None:
            break
        if peer is not None:
            ctx = _ctx(world, run.state, node, None)
            shown = sock_rev(ctx, run.state.nodes[node], peer, seen)
            run.hop(node, Hook.SOCK_RECVMSG, Step.SOCK_REV if shown != seen else Step.PASS,
                    shown, True)
            seen = shown
        run.hop(spec.client, None, Action.RECEIVE, seen, True)
        run.client_saw.append(seen)
    trace = FlowTrace(spec=spec, delivered=run.drop is None, drop=run.drop,
                      hops=tuple(run.hops), backend_saw=tuple(run.backend_saw),
                      client_saw=tuple(run.client_saw),
                      backend_pod=run.pods[0] if run.pods else None)
    return run.state, trace


def _request(world: World, run: _Run, spec: FlowSpec, node: str, pkt: Packet,
             pinned: IPAddress | None) -> tuple[str, Packet] | None:
    """The request from the client pod's from-container to the pod that gets it (None: lost).
    A packet to the pod's own address (socket-LB chose the pod itself) stays on lo."""
    if pkt.dst.addr == world.cluster.pod(spec.client).ip:
        run.hop(spec.client, None, Action.RECEIVE, pkt, False)
        return spec.client, pkt
    ctx = _ctx(world, run.state, node, pinned)
    st, res = from_container(ctx, run.state.nodes[node], pkt,
                             per_packet=not world.cfg.socket_lb)
    run.state = _set(run.state, node, st)
    run.hop(node, Hook.FROM_CONTAINER, res.step, res.packet, False)
    if res.verdict in (Verdict.DROP, Verdict.TO_STACK, Verdict.REJECT):
        assert res.reason is not None
        run.drop = (node, res.reason)
        if res.verdict is Verdict.REJECT:  # the ICMP error goes back into the pod
            run.hop(spec.client, None, Action.RECEIVE, res.packet, True)
            run.client_saw.append(res.packet)
        return None
    if res.verdict is Verdict.DELIVER:  # a pod on this node, the client itself included
        owner = world.cluster.owner_of(res.packet.dst.addr)
        assert owner is not None and owner[0] == "pod"
        run.hop(node, Hook.TO_CONTAINER, Step.PASS, res.packet, False)
        run.hop(owner[1], None, Action.RECEIVE, res.packet, False)
        return owner[1], res.packet
    w = walk(world, run.state, ("pod", spec.client), res.packet, reply=False, pinned=pinned)
    run.state = w.state
    run.hops.extend(w.hops)
    if w.end is not EndKind.POD or w.drop is not None:
        run.drop = w.drop or ("fabric", DropReason.FABRIC_NO_ROUTE)
        if w.end is EndKind.POD and w.at == spec.client:  # an ICMP error answered it
            run.client_saw.append(w.packet)
        return None
    return w.at, w.packet


def _reply(world: World, run: _Run, spec: FlowSpec, node: str, at: str, ans: Packet
           ) -> Packet | None:
    """The backend's answer to the client pod's to-container (None: lost). An answer to the
    pod's own address from itself never leaves its network namespace (lo)."""
    client = world.cluster.pod(spec.client)
    if at == spec.client and ans.dst.addr == client.ip:
        return ans  # an untranslated hairpin: the kernel loops it back, no BPF sees it
    local = world.cluster.pod(at).node == node and ans.dst.addr in (
        client.ip, service_loopback(client.ip))
    if local:  # the backend's from-container hands it to the client's to-container
        ctx = _ctx(world, run.state, node, None)
        st, res = from_container(ctx, run.state.nodes[node], ans,
                                 per_packet=not world.cfg.socket_lb)
        run.state = _set(run.state, node, st)
        run.hop(node, Hook.FROM_CONTAINER, res.step, res.packet, True)
        pkt = res.packet
    else:
        r = walk(world, run.state, ("pod", at), ans, reply=True)
        run.state = r.state
        if r.end is not EndKind.POD or r.at != spec.client:
            run.hops.extend(r.hops)
            run.drop = r.drop or (r.at, DropReason.FABRIC_NO_ROUTE)
            return None
        run.hops.extend(r.hops[:-1])  # its RECEIVE comes after the client's to-container
        pkt = r.packet
    ctx = _ctx(world, run.state, node, None)
    st, res = to_container(ctx, run.state.nodes[node], pkt)
    run.state = _set(run.state, node, st)
    run.hop(node, Hook.TO_CONTAINER, res.step, res.packet, True)
    return res.packet
