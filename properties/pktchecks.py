"""Packet-level checkers (ICMP errors, DSR's MTU, fragments, XDP) and CHECKERS, which sees all."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from model.config import Acceleration, DsrDispatch
from model.flows import FlowTrace, run_flows
from model.hooks import Hook
from model.network import Action, Hop
from model.values import Endpoint, FlowKey, IcmpKind, Packet, Proto
from properties.checks import (
    Checker,
    Finding,
    Replay,
    _each,
    _pod_receives,
    aff01,
    ct01,
    ct02,
    ct03,
    dsr01,
    dsr02,
    dsr03,
    dsr04,
    env,
    etp01,
    hyb01,
    lb01,
    lb02,
    mag01,
    nat01,
    nat02,
    nat03,
    nat04,
)
from properties.configs import Config, Placement
from properties.ewcells import ew01, ew02


def seen_sources(traces: Sequence[FlowTrace]) -> set[Endpoint]:
    """Sources the backends saw (diagnostics)."""
    return {p.src for tr in traces for p in tr.backend_saw}


def _errors_sent(tr: FlowTrace) -> list[int]:
    """Hops where the backend answered with an ICMP error about what it received."""
    return [i for i, h in enumerate(tr.hops)
            if h.action is Action.REPLY and h.packet.quote is not None]


def _errors_received(tr: FlowTrace) -> list[tuple[int, Hop]]:
    return [(i, h) for i, h in enumerate(tr.hops)
            if h.action is Action.RECEIVE and h.at == tr.spec.client and h.reply
            and h.packet.quote is not None]


def _icmp(rp: Replay, whole: bool) -> Finding | None:
    """Each backend ICMP error reaches the client, addressed to it, quoting the client's
    own address and port as source and (whole) the frontend as destination."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        sent = _errors_sent(tr)
        got = _errors_received(tr)
        if len(got) < len(sent):
            where = f" (lost at {tr.drop[0]}: {tr.drop[1].name})" if tr.drop else ""
            return Finding(flow=n, hop=len(tr.hops) - 1, message=(
                f"the backend's ICMP error never reached the client{where}"))
        want = FlowKey(src=tr.spec.source, dst=tr.spec.frontend, proto=tr.spec.proto)
        for i, h in got:
            q = h.packet.quote
            assert q is not None
            if h.packet.dst.addr != want.src.addr or q.src != want.src or q.proto != want.proto:
                return Finding(flow=n, hop=i, message=(
                    f"client received an ICMP error to {h.packet.dst.addr} quoting source "
                    f"{q.src}, expected {want.src}"))
            if whole and q.dst != want.dst:
                return Finding(flow=n, hop=i, message=(
                    f"client received an ICMP error quoting {q.src} -> {q.dst}, not the "
                    f"{want.src} -> {want.dst} it sent: its socket cannot match it"))
        return None
    return _each(rp, one)


def icmp01(rp: Replay) -> Finding | None:
    """P-ICMP-01: the error arrives and its quote is the tuple the client sent."""
    return _icmp(rp, whole=True)


def icmp02(rp: Replay) -> Finding | None:
    """P-ICMP-02: the error arrives addressed to the client, quoting the client's source."""
    return _icmp(rp, whole=False)


def _dsr_added(cfg: Config, first: bool) -> int:
    """What the DSR dispatch puts in front of a request (nodeport.h struct dsr_opt_v4 8,
    dsr_opt_v6 24; encap_geneve_dsr_opt4/6: outer IP (the v6 function counts 40), UDP 8,
    Geneve 8, inner Ethernet 14, TLV 12/24 on a SYN or datagram), written apart from
    model/values.py so that a wrong number there shows here. Opt dispatch checks only
    the packets that get the option."""
    if cfg.dispatch is DsrDispatch.GENEVE:
        return (40 if cfg.ipv6 else 20) + 30 + ((24 if cfg.ipv6 else 12) if first else 0)
    return (24 if cfg.ipv6 else 8) if first else 0


def _request_length(pkt: Packet) -> int:
    if pkt.size is not None:
        return pkt.size
    return (40 if pkt.is_ipv6 else 20) + pkt.ip_options + (
        20 if pkt.proto is Proto.TCP else 8) + 20


def _next_received(tr: FlowTrace, start: int) -> tuple[int, Hop] | None:
    for i in range(start + 1, len(tr.hops)):
        h = tr.hops[i]
        if h.action is Action.SEND:
            return None
        if h.action is Action.RECEIVE and h.at == tr.spec.client:
            return i, h
    return None


def mtu01(rp: Replay) -> Finding | None:
    """P-MTU-01: a DSR request too long for the LB node's device once the DSR metadata is
    added, or with no room for the IPv4 option, is answered to the client with
    frag-needed / packet-too-big quoting what it sent, its MTU the device's less that."""
    cfg = rp.cfg
    if not cfg.uses_dsr or cfg.placement is Placement.LOCAL:
        return None

    def one(n: int, tr: FlowTrace) -> Finding | None:
        mtu = rp.world.mtu(tr.spec.via) if tr.spec.via else rp.world.cfg.mtu
        for i, h in enumerate(tr.hops):
            p = h.packet
            if h.action is not Action.SEND:
                continue
            first = p.is_syn or p.proto is Proto.UDP
            added = _dsr_added(cfg, first)
            no_room = (not cfg.ipv6 and cfg.dispatch is DsrDispatch.OPT and first
                       and p.ip_options + 8 > 40)
            if not no_room and (added == 0 or _request_length(p) + added <= mtu):
                continue
            got = _next_received(tr, i)
            why = f" ({tr.drop[1].name} at {tr.drop[0]})" if tr.drop else ""
            if got is None or got[1].packet.icmp is not IcmpKind.FRAG_NEEDED:
                return Finding(flow=n, hop=len(tr.hops) - 1 if got is None else got[0],
                               message=(f"the client's {_request_length(p)}-byte request "
                                        f"cannot be forwarded with DSR{why}, and the client "
                                        "learns nothing of it"))
            j, e = got
            q = e.packet.quote
            if e.packet.dst.addr != p.src.addr or q != p.key():
                shown = f"{q.src} -> {q.dst}" if q is not None else "nothing"
                return Finding(flow=n, hop=j, message=(
                    f"the client got a frag-needed to {e.packet.dst.addr} quoting {shown}, "
                    f"not the {p.src} -> {p.dst} it sent: its socket cannot match it"))
            if not no_room and e.packet.mtu != mtu - added:
                return Finding(flow=n, hop=j, message=(
                    f"the client learns an MTU of {e.packet.mtu}; a request fits at "
                    f"{mtu - added} ({mtu} less {added} bytes of DSR metadata)"))
        return None
    return _each(rp, one)


def mtu02(rp: Replay) -> Finding | None:
    """P-MTU-02: a DSR frag-needed comes from the address the client contacted."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in enumerate(tr.hops):
            if (h.action is Action.RECEIVE and h.at == tr.spec.client
                    and h.packet.icmp is IcmpKind.FRAG_NEEDED
                    and h.packet.src.addr != tr.spec.frontend.addr):
                return Finding(flow=n, hop=i, message=(
                    f"the frag-needed comes from {h.packet.src.addr}, not from the frontend "
                    f"{tr.spec.frontend.addr} the client contacted"))
        return None
    return _each(rp, one)


def frag01(rp: Replay) -> Finding | None:
    """P-FRAG-01: every fragment of a datagram reaches one backend, from one source."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        if tr.spec.fragments < 2:
            return None
        if tr.drop is not None:
            at, why = tr.drop
            return Finding(flow=n, hop=len(tr.hops) - 1, message=(
                f"a fragment of {tr.spec.source}'s datagram was dropped at {at} ({why.name}): "
                "the backend never has the whole datagram"))
        seen: dict[int, list[tuple[int, Hop]]] = {}
        for i, h in _pod_receives(tr):
            if h.packet.frag is not None:
                seen.setdefault(h.packet.frag.id, []).append((i, h))
        for ident, got in seen.items():
            pods = sorted({h.at for _, h in got})
            srcs = sorted({str(h.packet.src.addr) for _, h in got})
            if len(pods) > 1 or len(srcs) > 1 or len(got) != tr.spec.fragments:
                return Finding(flow=n, hop=got[-1][0], message=(
                    f"datagram {ident}: {len(got)} of {tr.spec.fragments} fragments reached "
                    f"{', '.join(pods)} from {', '.join(srcs)}"))
        return None
    return _each(rp, one)


def _twin(rp: Replay) -> list[FlowTrace]:
    """The same flows with loadBalancer.acceleration disabled, drawing the same randoms
    (seeded draws repeat by call site; a proof's open draws repeat in order)."""
    from properties.symexec import SymRandom, TwinRandom
    rand = TwinRandom() if isinstance(rp.world.rand, SymRandom) else rp.world.rand
    cfg = attrs.evolve(rp.world.cfg, acceleration=Acceleration.DISABLED)
    _st, traces = run_flows(attrs.evolve(rp.world, cfg=cfg, rand=rand),
                            [tr.spec for tr in rp.traces])
    return traces


def _ending(tr: FlowTrace) -> str:
    return "delivered" if tr.drop is None else f"dropped at {tr.drop[0]}: {tr.drop[1].name}"


def xdp01(rp: Replay) -> Finding | None:
    """P-XDP-01: acceleration changes no flow's outcome, backend or seen packets."""
    if not rp.world.cfg.accelerated:
        return None
    for n, (tr, tc) in enumerate(zip(rp.traces, _twin(rp), strict=True)):
        last = len(tr.hops) - 1
        if tr.drop != tc.drop:
            return Finding(flow=n, hop=last, message=(
                f"with XDP the flow ended {_ending(tr)}, without {_ending(tc)}"))
        if tr.backend_pod != tc.backend_pod:
            return Finding(flow=n, hop=last, message=(
                f"with XDP the flow reached {tr.backend_pod}, without {tc.backend_pod}"))
        for what, got, want in (("backend", tr.backend_saw, tc.backend_saw),
                                ("client", tr.client_saw, tc.client_saw)):
            if len(got) != len(want):
                return Finding(flow=n, hop=last, message=(
                    f"with XDP the {what} saw {len(got)} packets, without {len(want)}"))
            for i, (a, b) in enumerate(zip(got, want, strict=True)):
                if a != b:
                    return Finding(flow=n, hop=last, message=(
                        f"with XDP the {what}'s packet {i + 1} is {a.src} -> {a.dst}, "
                        f"without {b.src} -> {b.dst}"))
    return None


def xdp_ran(rp: Replay) -> bool:
    """Some packet went through the xdp hook (P-XDP-01's premise)."""
    return any(h.hook is Hook.XDP for tr in rp.traces for h in tr.hops)


CHECKERS: dict[str, Checker] = {
    "P-LB-01": lb01, "P-LB-02": lb02, "P-NAT-01": nat01, "P-NAT-02": nat02,
    "P-NAT-04": nat04,
    "P-NAT-03": nat03, "P-DSR-01": dsr01, "P-DSR-02": dsr02, "P-DSR-03": dsr03,
    "P-ETP-01": etp01, "P-HYB-01": hyb01, "P-ENV-01": env, "P-ENV-02": env, "P-CT-01": ct01,
    "P-CT-02": ct02, "P-CT-03": ct03, "P-AFF-01": aff01, "P-ICMP-01": icmp01,
    "P-ICMP-02": icmp02, "P-MTU-01": mtu01, "P-MTU-02": mtu02, "P-FRAG-01": frag01,
    "P-XDP-01": xdp01,
}
CHECKERS["P-MAG-01"] = mag01
CHECKERS.update({"P-EW-01": ew01, "P-EW-02": ew02})
CHECKERS["P-DSR-04"] = dsr04
