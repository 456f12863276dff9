"""Difftest of a pod calling a service (east-west): model/eastwest.py against datapath/lxc.py.

A bridge module like difftest.py. Per request: the pod's node's from-container on both
sides (the model's `model.eastwest.from_container`, the reference's `cil_from_container`
on bytes), then a local delivery or the walk between nodes (`diffwalk.model_walk` /
`DatapathNet.walk`); per answer: the backend's from-container (same node) or the walk back,
then the client's to-container. Socket-LB: connect() and recvmsg on both sides, the
reference's being datapath.lxc.sock_connect / sock_rewrite (a harness stand-in for bpf_sock,
which Cilium's bpf/tests do not load).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from datapath import lxc
from datapath.abstraction import bytes_of, packet_of
from datapath.drop import Verdict as DpVerdict
from datapath.host import Node
from model.drops import DropReason
from model.eastwest import (
    SockPeer,
    from_container,
    service_loopback,
    sock_connect,
    sock_rev,
    to_container,
)
from model.flows import FlowSpec, answer, request
from model.hooks import Verdict
from model.network import _ctx, _set
from model.values import IPAddress, Packet

if TYPE_CHECKING:
    from datapath.difftest import DiffRun, Divergence
    from datapath.diffwalk import End, Obs

_V = {Verdict.FORWARD: "forward", Verdict.DELIVER: "deliver", Verdict.DROP: "drop",
      Verdict.REJECT: "reject", Verdict.TO_STACK: "to-stack"}


@attrs.define
class _Sockets:
    """The connected socket on both sides (socket-LB): the model's peer, the reference's."""

    model: SockPeer | None = None
    dp: lxc.SockPeer | None = None


def run_ew(d: DiffRun, spec: FlowSpec, pinned: IPAddress | None, pin_id: int | None
           ) -> Divergence | None:
    """The flow's packets and answers on both sides, compared step by step."""
    from datapath.diffwalk import pkt_str

    node = d.world.cluster.pod(spec.client).node
    socks = _Sockets()
    for i in range(spec.packets):
        d.state = attrs.evolve(d.state, now=d.state.now + 1)
        d.net.advance(1)
        pkt = request(spec, i)
        before = d.state.nodes
        d.net.touched.clear()
        got = _connect(d, spec, node, pkt, pinned, pin_id, socks, i == 0)
        if len(got) == 4:
            mo, me, do, de = got
            return d._compare(f"{spec.name}: connect() {pkt_str(pkt)}", mo, me, do, de,
                              spec.source.port, before)
        (mpre, mpkt), (dpre, dbytes) = got
        mo, me = _model_request(d, spec, node, mpkt, pinned)
        do, de, dbytes = _dp_request(d, spec, node, dbytes, pin_id)
        div = d._compare(f"{spec.name}: request {i + 1} {pkt_str(pkt)}", mpre + mo, me,
                         dpre + do, de, spec.source.port, before)
        if div is not None:
            return div
        if me.kind != "pod" or me.packet is None or me.drop is not None:
            return None  # lost, or an ICMP error answered it
        mans = answer(spec, i, me.packet)
        dans = answer(spec, i, packet_of(dbytes))
        if mans is None or dans is None:
            continue
        before = d.state.nodes
        d.net.touched.clear()
        mo, me = _model_reply(d, spec, node, me.at, mans, socks.model)
        do, de = _dp_reply(d, spec, node, de.at, bytes_of(dans), socks.dp)
        div = d._compare(f"{spec.name}: reply {i + 1} {pkt_str(mans)}", mo, me, do, de,
                         spec.source.port, before)
        if div is not None or me.kind != "pod":
            return div
    return None


def _ref(d: DiffRun, node: str) -> Node:
    """The node's reference datapath: only it has bpf_lxc and the bpf_sock stand-in."""
    dp = d.net.nodes[node]
    if not isinstance(dp, Node):
        raise TypeError("a pod's service flow runs on the reference datapath only")
    return dp


_Side = tuple[list["Obs"], Packet]
_DpSide = tuple[list["Obs"], bytes | bytearray]


def _connect(d: DiffRun, spec: FlowSpec, node: str, pkt: Packet, pinned: IPAddress | None,
             pin_id: int | None, socks: _Sockets, first: bool
             ) -> tuple[_Side, _DpSide] | tuple[list[Obs], End, list[Obs], End]:
    """Socket-LB: connect() on the first packet (model.eastwest.sock_connect against the
    reference's datapath.lxc.sock_connect), then every packet goes to the connected peer.
    Without socket-LB the packet as the pod addressed it. A failed connect() ends the flow:
    the comparison's four parts are returned instead."""
    from datapath.diffwalk import End, Obs

    data = bytes_of(pkt)
    if not d.world.cfg.socket_lb:
        return ([], pkt), ([], data)
    if first:
        socks.model, merr = sock_connect(_ctx(d.world, d.state, node, pinned),
                                         d.state.nodes[node], pkt)
        socks.dp, derr = lxc.sock_connect(_ref(d, node), data, pin_id)
        if merr is not None or derr is not None:
            m = (node, merr.name) if merr is not None else None
            dd = (node, derr.name) if derr is not None else None
            return ([Obs(at=node, hook="sock-connect", verdict="drop", packet=pkt)],
                    End(kind="drop", at=node, packet=pkt, drop=m),
                    [Obs(at=node, hook="sock-connect", verdict="drop", packet=pkt)],
                    End(kind="drop", at=node, packet=pkt, drop=dd))
    mpre: list[Obs] = []
    dpre: list[Obs] = []
    if socks.model is not None:
        pkt = attrs.evolve(pkt, dst=socks.model.backend)
        mpre.append(Obs(at=node, hook="sock-connect", verdict="forward", packet=pkt))
    if socks.dp is not None:
        data = lxc.sock_rewrite(_ref(d, node), data, socks.dp, forward=True)
        dpre.append(Obs(at=node, hook="sock-connect", verdict="forward",
                        packet=packet_of(data)))
    return (mpre, pkt), (dpre, data)


def _model_request(d: DiffRun, spec: FlowSpec, node: str, pkt: Packet,
                   pinned: IPAddress | None) -> tuple[list[Obs], End]:
    from datapath.diffwalk import End, Obs, model_walk

    w = d.world
    if pkt.dst.addr == w.cluster.pod(spec.client).ip:  # connected to itself: lo
        return [], End(kind="pod", at=spec.client, packet=pkt, drop=None)
    st, res = from_container(_ctx(w, d.state, node, pinned), d.state.nodes[node], pkt,
                             per_packet=not w.cfg.socket_lb)
    d.state = _set(d.state, node, st)
    o = Obs(at=node, hook="from-container", verdict=_V[res.verdict], packet=res.packet)
    if res.verdict in (Verdict.DROP, Verdict.TO_STACK, Verdict.REJECT):
        assert res.reason is not None
        return [o], End(kind="drop", at=node, packet=res.packet,
                        drop=(node, res.reason.name))
    if res.verdict is Verdict.DELIVER:
        owner = w.cluster.owner_of(res.packet.dst.addr)
        assert owner is not None
        return [o], End(kind="pod", at=owner[1], packet=res.packet, drop=None)
    d.state, mo, me = model_walk(w, d.state, ("pod", spec.client), res.packet, reply=False,
                                 via=None, pinned=pinned)
    return [o, *mo], me


def _dp_request(d: DiffRun, spec: FlowSpec, node: str, data: bytes | bytearray,
                pin: int | None
                ) -> tuple[list[Obs], End, bytes | bytearray]:
    from datapath.diffwalk import End, Obs

    net = d.net
    if packet_of(data).dst.addr == d.world.cluster.pod(spec.client).ip:  # lo
        return [], End(kind="pod", at=spec.client, packet=packet_of(data), drop=None), data
    net.touched.add(node)
    r = net.nodes[node].run("from-container", data, pin)
    out = packet_of(r.packet)
    if r.verdict == DpVerdict.CTX_ACT_DROP or r.drop_reason is not None:
        verdict = "drop" if r.verdict == DpVerdict.CTX_ACT_DROP else "reject"
        reason = r.drop_reason.name if r.drop_reason is not None else "DROP_UNKNOWN"
        return ([Obs(at=node, hook="from-container", verdict=verdict, packet=out)],
                End(kind="drop", at=node, packet=out, drop=(node, reason)), r.packet)
    target = r.target or ""
    if target.startswith("lxc"):
        owner = d.world.cluster.owner_of(out.dst.addr)
        at = owner[1] if owner is not None else "?"
        return ([Obs(at=node, hook="from-container", verdict="deliver", packet=out)],
                End(kind="pod", at=at, packet=out, drop=None), r.packet)
    if out.dst.addr in net.frontends[node]:  # v1.20's non-routable switch: up the stack
        return ([Obs(at=node, hook="from-container", verdict="to-stack", packet=out)],
                End(kind="drop", at=node, packet=out,
                    drop=(node, DropReason.PUNT_TO_STACK.name)), r.packet)
    o = Obs(at=node, hook="from-container", verdict="forward", packet=out)
    do, de, dbytes = net.walk(("pod", spec.client), r.packet, via=None, pin=pin)
    return [o, *do], de, dbytes


def _local(d: DiffRun, spec: FlowSpec, node: str, at: str, ans: Packet) -> bool:
    """The answer stays on the client's node: its backend is there and it is addressed to
    the client pod or to the service loopback address."""
    client = d.world.cluster.pod(spec.client)
    return d.world.cluster.pod(at).node == node and ans.dst.addr in (
        client.ip, service_loopback(client.ip))


def _model_reply(d: DiffRun, spec: FlowSpec, node: str, at: str, ans: Packet,
                 peer: SockPeer | None) -> tuple[list[Obs], End]:
    from datapath.diffwalk import Obs, model_walk

    w = d.world
    obs: list[Obs] = []
    if at == spec.client and ans.dst.addr == w.cluster.pod(spec.client).ip:
        return _model_recv(d, node, obs, ans, peer, spec.client)  # on lo, no tc program
    if _local(d, spec, node, at, ans):
        st, res = from_container(_ctx(w, d.state, node, None), d.state.nodes[node], ans,
                                 per_packet=True)
        d.state = _set(d.state, node, st)
        obs.append(Obs(at=node, hook="from-container", verdict=_V[res.verdict],
                       packet=res.packet))
        pkt = res.packet
    else:
        d.state, mo, me = model_walk(w, d.state, ("pod", at), ans, reply=True, via=None,
                                     pinned=None)
        if me.kind != "pod" or me.at != spec.client or me.packet is None:
            return mo, me
        obs, pkt = mo, me.packet
    st, res = to_container(_ctx(w, d.state, node, None), d.state.nodes[node], pkt)
    d.state = _set(d.state, node, st)
    obs.append(Obs(at=node, hook="to-container", verdict="deliver", packet=res.packet))
    return _model_recv(d, node, obs, res.packet, peer, spec.client)


def _model_recv(d: DiffRun, node: str, obs: list[Obs], pkt: Packet, peer: SockPeer | None,
                client: str) -> tuple[list[Obs], End]:
    """The pod's socket gets the answer: recvmsg's reverse translation under socket-LB."""
    from datapath.diffwalk import End, Obs

    if peer is not None:
        pkt = sock_rev(_ctx(d.world, d.state, node, None), d.state.nodes[node], peer, pkt)
        obs = [*obs, Obs(at=node, hook="sock-recvmsg", verdict="deliver", packet=pkt)]
    return obs, End(kind="pod", at=client, packet=pkt, drop=None)


def _dp_reply(d: DiffRun, spec: FlowSpec, node: str, at: str, data: bytes,
              peer: lxc.SockPeer | None) -> tuple[list[Obs], End]:
    from datapath.diffwalk import Obs

    net = d.net
    ans = packet_of(data)
    obs: list[Obs] = []
    if at == spec.client and ans.dst.addr == d.world.cluster.pod(spec.client).ip:
        return _dp_recv(d, node, obs, data, peer, spec.client)
    cur: bytes | bytearray = data
    if _local(d, spec, node, at, ans):
        net.touched.add(node)
        r = net.nodes[node].run("from-container", cur, None)
        verdict = "deliver" if (r.target or "").startswith("lxc") else "forward"
        obs.append(Obs(at=node, hook="from-container", verdict=verdict,
                       packet=packet_of(r.packet)))
        cur = r.packet
    else:
        do, de, cur = net.walk(("pod", at), cur, via=None, pin=None)
        if de.kind != "pod" or de.at != spec.client:
            return do, de
        obs = do
    net.touched.add(node)
    r = net.nodes[node].run("to-container", cur, None)
    verdict = "deliver" if (r.target or "").startswith("lxc") else "forward"
    obs.append(Obs(at=node, hook="to-container", verdict=verdict, packet=packet_of(r.packet)))
    return _dp_recv(d, node, obs, r.packet, peer, spec.client)


def _dp_recv(d: DiffRun, node: str, obs: list[Obs], data: bytes | bytearray,
             peer: lxc.SockPeer | None, client: str) -> tuple[list[Obs], End]:
    """The reference's recvmsg under socket-LB (datapath.lxc.sock_rewrite)."""
    from datapath.diffwalk import End, Obs

    if peer is not None:
        data = lxc.sock_rewrite(_ref(d, node), data, peer, forward=False)
        obs = [*obs, Obs(at=node, hook="sock-recvmsg", verdict="deliver",
                         packet=packet_of(data))]
    return obs, End(kind="pod", at=client, packet=packet_of(data), drop=None)
