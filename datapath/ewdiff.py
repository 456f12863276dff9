"""Difftest of a pod calling a service (east-west): model/eastwest.py against datapath/lxc.py.

A bridge module like difftest.py. Per request: the pod's node's from-container on both
sides (the model's `model.eastwest.from_container`, the reference's `cil_from_container`
on bytes), then a local delivery or the walk between nodes (`difftest.model_walk` /
`DatapathNet.walk`); per answer: the backend's from-container (same node) or the walk back,
then the client's to-container. Socket-LB has no counterpart on bytes (the reference has no
bpf_sock), so programs with pod service flows run with `cilium.socketLB.enabled: false`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from datapath.abstraction import bytes_of, packet_of
from datapath.drop import Verdict as DpVerdict
from model.drops import DropReason
from model.eastwest import from_container, service_loopback, to_container
from model.flows import FlowSpec, answer, request
from model.network import _ctx, _set
from model.nodeport import Verdict
from model.values import IPAddress, Packet

if TYPE_CHECKING:
    from datapath.difftest import DiffRun, Divergence, End, Obs

_V = {Verdict.FORWARD: "forward", Verdict.DELIVER: "deliver", Verdict.DROP: "drop",
      Verdict.REJECT: "reject", Verdict.TO_STACK: "to-stack"}


class SocketLBUnsupported(ValueError):
    """A pod's service flow under socket-LB: the reference has no bpf_sock to compare."""


def run_ew(d: DiffRun, spec: FlowSpec, pinned: IPAddress | None, pin_id: int | None
           ) -> Divergence | None:
    """The flow's packets and answers on both sides, compared step by step."""
    from datapath.difftest import pkt_str

    if d.world.cfg.socket_lb:
        raise SocketLBUnsupported(f"flow {spec.name}: a pod's service flow under socket-LB "
                                  "(the reference datapath has no bpf_sock)")
    node = d.world.cluster.pod(spec.client).node
    for i in range(spec.packets):
        d.state = attrs.evolve(d.state, now=d.state.now + 1)
        d.net.advance(1)
        pkt = request(spec, i)
        before = d.state.nodes
        d.net.touched.clear()
        mo, me = _model_request(d, spec, node, pkt, pinned)
        do, de, dbytes = _dp_request(d, spec, node, bytes_of(pkt), pin_id)
        div = d._compare(f"{spec.name}: request {i + 1} {pkt_str(pkt)}", mo, me, do, de,
                         spec.source.port, before)
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
        mo, me = _model_reply(d, spec, node, me.at, mans)
        do, de = _dp_reply(d, spec, node, de.at, bytes_of(dans))
        div = d._compare(f"{spec.name}: reply {i + 1} {pkt_str(mans)}", mo, me, do, de,
                         spec.source.port, before)
        if div is not None or me.kind != "pod":
            return div
    return None


def _model_request(d: DiffRun, spec: FlowSpec, node: str, pkt: Packet,
                   pinned: IPAddress | None) -> tuple[list[Obs], End]:
    from datapath.difftest import End, Obs, model_walk

    w = d.world
    st, res = from_container(_ctx(w, d.state, node, pinned), d.state.nodes[node], pkt,
                             per_packet=True)
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


def _dp_request(d: DiffRun, spec: FlowSpec, node: str, data: bytes, pin: int | None
                ) -> tuple[list[Obs], End, bytes | bytearray]:
    from datapath.difftest import End, Obs

    net = d.net
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


def _model_reply(d: DiffRun, spec: FlowSpec, node: str, at: str, ans: Packet
                 ) -> tuple[list[Obs], End]:
    from datapath.difftest import End, Obs, model_walk

    w = d.world
    if at == spec.client and ans.dst.addr == w.cluster.pod(spec.client).ip:
        return [], End(kind="pod", at=at, packet=ans, drop=None)  # on lo, no BPF
    obs: list[Obs] = []
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
    return obs, End(kind="pod", at=spec.client, packet=res.packet, drop=None)


def _dp_reply(d: DiffRun, spec: FlowSpec, node: str, at: str, data: bytes
              ) -> tuple[list[Obs], End]:
    from datapath.difftest import End, Obs

    net = d.net
    ans = packet_of(data)
    if at == spec.client and ans.dst.addr == d.world.cluster.pod(spec.client).ip:
        return [], End(kind="pod", at=at, packet=ans, drop=None)
    obs: list[Obs] = []
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
    out = packet_of(r.packet)
    verdict = "deliver" if (r.target or "").startswith("lxc") else "forward"
    obs.append(Obs(at=node, hook="to-container", verdict=verdict, packet=out))
    return obs, End(kind="pod", at=spec.client, packet=out, drop=None)
