"""Concrete checkers: each property evaluated on what the model actually did (FlowTrace).

A counterexample from z3 is only accepted once its replay through model/ shows the
violation here; the checker also names the violating hop (an index into trace["hops"]).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from model.config import NODEPORT_PORT_MAX_NAT
from model.conntrack import (
    CT_CONNECTION_LIFETIME_NONTCP,
    CT_CONNECTION_LIFETIME_TCP,
    CT_CONNECTION_LIFETIME_TCP_V113,
    CT_SERVICE_LIFETIME_NONTCP,
    CT_SERVICE_LIFETIME_TCP,
    CT_SYN_TIMEOUT,
)
from model.drops import DropReason
from model.flows import FlowTrace
from model.hooks import Step
from model.maps import NatTuple, NodeState, TupleFlags
from model.network import (
    Action,
    AgentBackends,
    ClusterState,
    Hop,
    World,
    initial_state,
    reprogram,
)
from model.topology import SessionAffinity
from model.values import Endpoint, Proto
from properties.configs import Config


@attrs.frozen(kw_only=True)
class Finding:
    """A concrete violation: which flow, which hop (index into its hops), and why."""

    flow: int
    hop: int
    message: str


@attrs.frozen(kw_only=True)
class Replay:
    """What a decoded scenario did in the concrete model."""

    cfg: Config
    world: World
    traces: tuple[FlowTrace, ...]
    state: ClusterState

    def target_port(self, tr: FlowTrace) -> int:
        """The targetPort of the flow's service."""
        return next(s.target_port for s in self.world.cluster.services
                    if s.name == tr.spec.service)

    def backend_ips(self, tr: FlowTrace) -> set[object]:
        """Addresses of the flow's service backends."""
        svc = next(s for s in self.world.cluster.services if s.name == tr.spec.service)
        return {self.world.cluster.pod(b).ip for b in svc.backends}


Checker = Callable[[Replay], "Finding | None"]
SERVICE_STEPS = (Step.DNAT, Step.SNAT, Step.DSR, Step.REJECT)
REV_STEPS = (Step.REV_DNAT, Step.REV_SNAT)


def _segments(tr: FlowTrace) -> list[tuple[int, int, bool]]:
    """(start, end) hop index ranges of each leg, and whether it is a reply leg."""
    out = []
    start = 0
    for i, h in enumerate(tr.hops):
        if i and h.action in (Action.SEND, Action.REPLY):
            out.append((start, i, tr.hops[start].reply))
            start = i
    out.append((start, len(tr.hops), tr.hops[start].reply if tr.hops else False))
    return out


def _client_receives(tr: FlowTrace) -> list[tuple[int, Hop]]:
    return [(i, h) for i, h in enumerate(tr.hops)
            if h.action is Action.RECEIVE and h.at == tr.spec.client and h.reply
            and h.packet.proto is tr.spec.proto]


def _pod_receives(tr: FlowTrace) -> list[tuple[int, Hop]]:
    return [(i, h) for i, h in enumerate(tr.hops)
            if h.action is Action.RECEIVE and not h.reply]


def _each(rp: Replay, fn: Callable[[int, FlowTrace], Finding | None]) -> Finding | None:
    for n, tr in enumerate(rp.traces):
        f = fn(n, tr)
        if f is not None:
            return f
    return None


def lb01(rp: Replay) -> Finding | None:
    """P-LB-01 on the client's received packets."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in _client_receives(tr):
            if h.packet.src != tr.spec.frontend or h.packet.dst != tr.spec.source:
                return Finding(flow=n, hop=i, message=(
                    f"client received {h.packet.src} -> {h.packet.dst}, expected "
                    f"{tr.spec.frontend} -> {tr.spec.source}"))
        return None
    return _each(rp, one)


def lb02(rp: Replay) -> Finding | None:
    """P-LB-02 on delivered requests and on drops."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in _pod_receives(tr):
            ok = (h.packet.dst.addr in rp.backend_ips(tr)
                  and h.packet.dst.port == rp.target_port(tr))
            if not ok:
                return Finding(flow=n, hop=i, message=(
                    f"request delivered to {h.packet.dst}, not a backend at targetPort "
                    f"{rp.target_port(tr)}"))
        if tr.drop is not None and tr.drop[1].code is None:
            last = len(tr.hops) - 1
            if not tr.hops[last].reply:
                return Finding(flow=n, hop=last, message=(
                    f"request lost without a Cilium drop reason ({tr.drop[1].name})"))
        return None
    return _each(rp, one)


def nat01(rp: Replay) -> Finding | None:
    """P-NAT-01: one reverse translation per reply, restoring the original tuple."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for start, end, reply in _segments(tr):
            if not reply:
                continue
            legs = tr.hops[start:end]
            arrived = [k for k, h in enumerate(legs) if h.action is Action.RECEIVE
                       and h.at == tr.spec.client]
            if not arrived:
                continue
            revs = [k for k, h in enumerate(legs) if h.action in REV_STEPS]
            for k in revs:
                p = legs[k].packet
                if p.src != tr.spec.frontend or p.dst != tr.spec.source:
                    return Finding(flow=n, hop=start + k, message=(
                        f"reverse translation gave {p.src} -> {p.dst}, expected "
                        f"{tr.spec.frontend} -> {tr.spec.source}"))
            if len(revs) != 1:
                return Finding(flow=n, hop=start + arrived[0], message=(
                    f"reply reached the client after {len(revs)} reverse translations"))
        return None
    return _each(rp, one)


def nat03(rp: Replay) -> Finding | None:
    """P-NAT-03: SNAT source ports above the NodePort range; replies never hit a service."""
    lo = rp.world.cfg.nat_min

    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in enumerate(tr.hops):
            if h.action is Step.SNAT and not lo <= h.packet.src.port <= NODEPORT_PORT_MAX_NAT:
                return Finding(flow=n, hop=i, message=(
                    f"SNAT port {h.packet.src.port} outside {lo}-{NODEPORT_PORT_MAX_NAT}"))
            if h.reply and h.action in SERVICE_STEPS:
                return Finding(flow=n, hop=i, message=(
                    f"reply {h.packet.src} -> {h.packet.dst} treated as service traffic "
                    f"({h.action.value})"))
        return None
    return _each(rp, one)


def dsr01(rp: Replay) -> Finding | None:
    """P-DSR-01: the backend sees the client's tuple."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in _pod_receives(tr):
            if h.packet.src != tr.spec.source:
                return Finding(flow=n, hop=i, message=(
                    f"backend saw source {h.packet.src}, the client is {tr.spec.source}"))
        return None
    return _each(rp, one)


def dsr02(rp: Replay) -> Finding | None:
    """P-DSR-02: DSR replies avoid the receiving node; SNAT replies pass it."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for start, end, reply in _segments(tr):
            if not reply:
                continue
            legs = tr.hops[start:end]
            via = [k for k, h in enumerate(legs) if h.at == tr.spec.via and h.hook is not None
                   and k > 1]
            arrived = [k for k, h in enumerate(legs) if h.action is Action.RECEIVE
                       and h.at == tr.spec.client]
            if rp.cfg.uses_dsr and via:
                return Finding(flow=n, hop=start + via[0], message=(
                    f"DSR reply passed the receiving node {tr.spec.via}"))
            if not rp.cfg.uses_dsr and arrived and not via:
                return Finding(flow=n, hop=start + arrived[0], message=(
                    f"SNAT reply reached the client without passing {tr.spec.via}"))
        return None
    return _each(rp, one)


def dsr03(rp: Replay) -> Finding | None:
    """P-DSR-03: DSR metadata on SYN/UDP leaving the LB node; the reply is rev-DNATed."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        count = 0
        for i, h in enumerate(tr.hops):
            if h.action is Action.SEND:
                count += 1
            due = tr.spec.proto is not Proto.TCP or count == 1
            if (h.at == tr.spec.via and h.action is Step.DSR and due
                    and (h.packet.dsr is None or h.packet.dsr.frontend != tr.spec.frontend)):
                    return Finding(flow=n, hop=i, message=(
                        "DSR packet left the LB node without the frontend "
                        f"{tr.spec.frontend}"))
            if h.action is Action.REPLY and i + 1 < len(tr.hops):
                nxt = tr.hops[i + 1]
                if nxt.action is not Step.REV_DNAT or nxt.packet.src != tr.spec.frontend:
                    return Finding(flow=n, hop=i + 1, message=(
                        f"backend node's to-netdev did not restore {tr.spec.frontend} "
                        f"({nxt.action.value}, source {nxt.packet.src})"))
        return None
    return _each(rp, one)


def dsr04(rp: Replay) -> Finding | None:
    """P-DSR-04: under IPIP dispatch every request reaches a backend with the client's tuple
    as its source, and the client gets a reply from the frontend, as under opt dispatch."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        got = _pod_receives(tr)
        if not got:
            last = len(tr.hops) - 1
            return Finding(flow=n, hop=last, message=(
                f"no backend received the request (it ended at {tr.hops[last].at})"))
        for i, h in got:
            if h.packet.src != tr.spec.source:
                return Finding(flow=n, hop=i, message=(
                    f"backend saw source {h.packet.src}, the client is {tr.spec.source}"))
        replies = _client_receives(tr)
        if not replies:
            return Finding(flow=n, hop=len(tr.hops) - 1, message="the client got no reply")
        for i, h in replies:
            if h.packet.src != tr.spec.frontend:
                return Finding(flow=n, hop=i, message=(
                    f"client received a reply from {h.packet.src}, it called "
                    f"{tr.spec.frontend}"))
        return None
    return _each(rp, one)


def etp01(rp: Replay) -> Finding | None:
    """P-ETP-01: nothing leaves the receiving node for another node; no backend: NO_SERVICE."""
    local = {p.name for p in rp.world.cluster.pods}

    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in enumerate(tr.hops):
            if (not h.reply and h.at not in (tr.spec.via, tr.spec.client, "fabric")
                    and h.at not in local):
                return Finding(flow=n, hop=max(i - 1, 0), message=(
                    f"eTP=Local request forwarded from {tr.spec.via} to {h.at}"))
        has_local = any(p.node == tr.spec.via for p in rp.world.cluster.pods)
        if not has_local and (tr.drop is None
                              or tr.drop != (tr.spec.via, DropReason.DROP_NO_SERVICE)):
            return Finding(flow=n, hop=len(tr.hops) - 1, message=(
                f"no local backend, expected DROP_NO_SERVICE at {tr.spec.via}, got "
                f"{tr.drop[1].name if tr.drop else 'delivery'}"))
        return None
    return _each(rp, one)


def hyb01(rp: Replay) -> Finding | None:
    """P-HYB-01: TCP via DSR, UDP via SNAT at the LB node; replies from F."""
    want = Step.DSR if rp.cfg.proto is Proto.TCP else Step.SNAT

    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in enumerate(tr.hops):
            if (not h.reply and h.at == tr.spec.via and isinstance(h.action, Step)
                    and h.action in (Step.DSR, Step.SNAT) and h.action is not want):
                return Finding(flow=n, hop=i, message=(
                    f"hybrid sent {tr.spec.proto.name} the {h.action.value} way"))
        return None
    return _each(rp, one) or lb01(rp)


def env(rp: Replay) -> Finding | None:
    """P-ENV-01/02: no packet of the flow is lost in the fabric."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        for i, h in enumerate(tr.hops):
            if h.action is Action.FABRIC_DROP:
                why = tr.drop[1].name if tr.drop else "fabric"
                return Finding(flow=n, hop=i, message=(
                    f"{'reply' if h.reply else 'request'} {h.packet.src} -> {h.packet.dst} "
                    f"lost in the fabric ({why})"))
        return None
    return _each(rp, one)


def ct01(rp: Replay) -> Finding | None:
    """P-CT-01: one backend per flow."""
    def one(n: int, tr: FlowTrace) -> Finding | None:
        got = _pod_receives(tr)
        for i, h in got[1:]:
            if h.at != got[0][1].at:
                return Finding(flow=n, hop=i, message=(
                    f"packet of the flow reached {h.at}, earlier ones {got[0][1].at}"))
        return None
    return _each(rp, one)


def ct02(rp: Replay) -> Finding | None:
    """P-CT-02: no SYN reaches a terminating backend; an established connection whose
    backend is terminating (still in the backend map) keeps reaching it."""
    state = initial_state(rp.world)
    conns: list[tuple[tuple[str, Endpoint], str]] = []  # by ==: ports may be symbolic

    def last(key: tuple[str, Endpoint]) -> str | None:
        return next((at for k, at in reversed(conns) if k == key), None)

    for n, tr in enumerate(rp.traces):
        for service, members in tr.spec.set_backends:
            state = reprogram(rp.world, state, service, members, tr.spec.terminating)
        agent = state.agent or AgentBackends.of(rp.world.cluster)
        draining = {agent.table[b][0] for b in agent.terminating}
        key = (tr.spec.client, tr.spec.source)
        for i, h in _pod_receives(tr):
            before = last(key)
            if h.packet.is_syn and h.at in draining:
                return Finding(flow=n, hop=i, message=(
                    f"a new connection's SYN reached terminating backend {h.at}"))
            if not h.packet.is_syn and before in draining and h.at != before:
                return Finding(flow=n, hop=i, message=(
                    f"established connection left its terminating backend {before} "
                    f"for {h.at}"))
            conns.append((key, h.at))
    return None


# A silence shorter than every lifetime of an open entry keeps it live; one longer than
# every lifetime of any version leaves nothing of the flows before it.
LIVE_BELOW = min(CT_SYN_TIMEOUT, CT_CONNECTION_LIFETIME_NONTCP, CT_SERVICE_LIFETIME_NONTCP)
EXPIRED_ABOVE = max(CT_CONNECTION_LIFETIME_TCP, CT_CONNECTION_LIFETIME_TCP_V113,
                    CT_SERVICE_LIFETIME_TCP, CT_CONNECTION_LIFETIME_NONTCP)


def _gc_kept(n: int, tr: FlowTrace, before: FlowTrace) -> Finding | None:
    """A connection that GC ran inside of goes on exactly as before it."""
    then = _pod_receives(before)
    for i, h in _pod_receives(tr):
        if h.at != then[-1][1].at:
            return Finding(flow=n, hop=i, message=(
                f"after CT GC the connection reached {h.at}, before it {then[-1][1].at}"))
        if h.packet.src != then[-1][1].packet.src:
            return Finding(flow=n, hop=i, message=(
                f"after CT GC the backend saw source {h.packet.src}, before it "
                f"{then[-1][1].packet.src}"))
    for i, h in _client_receives(tr):
        if h.packet.src != tr.spec.frontend or h.packet.dst != tr.spec.source:
            return Finding(flow=n, hop=i, message=(
                f"after CT GC the client received {h.packet.src} -> {h.packet.dst}, expected "
                f"{tr.spec.frontend} -> {tr.spec.source}"))
    if _client_receives(before) and _pod_receives(tr) and not _client_receives(tr):
        last = len(tr.hops) - 1
        return Finding(flow=n, hop=last, message="after CT GC the reply never reached the client")
    return None


def _gc_left(rp: Replay, n: int) -> Finding | None:
    """After a silence past every lifetime, no CT or SNAT entry names an earlier client."""
    fresh = [t.spec.client for t in rp.traces[n:]]
    gone = {t.spec.source.addr for t in rp.traces[:n]
            if t.spec.client not in fresh}
    for node, st in sorted(rp.state.nodes.items()):
        for ckey in st.ct.entries:
            if ckey.saddr in gone or ckey.daddr in gone:
                return Finding(flow=n, hop=0, message=(
                    f"CT entry {ckey.saddr}:{ckey.sport} -> {ckey.daddr}:{ckey.dport} on {node} "
                    "outlived its lifetime"))
        for nkey, val in st.snat.entries.items():
            if nkey.saddr in gone or nkey.daddr in gone or val.to_addr in gone:
                return Finding(flow=n, hop=0, message=(
                    f"SNAT entry {nkey.saddr}:{nkey.sport} -> {nkey.daddr}:{nkey.dport} "
                    f"({val.to_addr}:{val.to_port}) on {node} outlived its flow's CT entries"))
    return None


def ct03(rp: Replay) -> Finding | None:
    """P-CT-03: CT GC keeps what live flows use and leaves nothing of expired ones."""
    for n, tr in enumerate(rp.traces):
        if 0 < tr.spec.idle < LIVE_BELOW:
            key = (tr.spec.client, tr.spec.source)
            before = next((t for t in reversed(rp.traces[:n])
                           if (t.spec.client, t.spec.source) == key), None)
            if before is not None and _pod_receives(before) and not before.spec.close:
                f = _gc_kept(n, tr, before)
                if f is not None:
                    return f
    last = max((n for n, tr in enumerate(rp.traces) if tr.spec.idle > EXPIRED_ABOVE),
               default=None)
    return None if last is None else _gc_left(rp, last)


def _nat_pairs(st: NodeState, node_ip: object) -> list[str]:
    """Bijection problems in one node's nodeport SNAT map (forward <-> reverse, injective)."""
    problems = []
    ents = st.snat.entries
    seen: list[tuple[object, int, object, int]] = []  # compared with ==, never hashed
    for key, val in ents.items():
        if key.flags is not TupleFlags.OUT or val.to_addr != node_ip:
            continue
        rev = ents.get(NatTuple(saddr=key.daddr, daddr=val.to_addr, sport=key.dport,
                                dport=val.to_port, nexthdr=key.nexthdr, flags=TupleFlags.IN))
        if rev is None or (rev.to_addr, rev.to_port) != (key.saddr, key.sport):
            problems.append(f"forward {key.saddr}:{key.sport} -> {val.to_addr}:{val.to_port} "
                            "has no matching reverse entry")
        tup = (key.daddr, key.dport, val.to_addr, val.to_port)
        if tup in seen:
            problems.append(f"two flows translate to {val.to_addr}:{val.to_port} -> "
                            f"{key.daddr}:{key.dport}")
        seen.append(tup)
    for key, val in ents.items():
        if key.flags is TupleFlags.IN and key.daddr == node_ip:
            fwd = ents.get(NatTuple(saddr=val.to_addr, daddr=key.saddr, sport=val.to_port,
                                    dport=key.sport, nexthdr=key.nexthdr, flags=TupleFlags.OUT))
            if fwd is None or (fwd.to_addr, fwd.to_port) != (key.daddr, key.dport):
                problems.append(f"reverse {key.daddr}:{key.dport} -> {val.to_addr}:"
                                f"{val.to_port} has no matching forward entry")
    return problems


def nat02(rp: Replay) -> Finding | None:
    """P-NAT-02 on the LB node's final SNAT map, reported at the last SNAT hop."""
    node = rp.traces[0].spec.via if rp.traces else None
    if node is None:
        return None
    st = rp.state.nodes[node]
    ip = rp.world.cluster.node(node).ip
    problems = _nat_pairs(st, ip)
    lo = rp.world.cfg.nat_min
    for key, val in st.snat.entries.items():
        if key.flags is TupleFlags.OUT and val.to_addr == ip and not (
                lo <= val.to_port <= NODEPORT_PORT_MAX_NAT):
            problems.append(f"allocated port {val.to_port} outside {lo}-65535")
    if not problems:
        return None
    last = len(rp.traces) - 1
    hops = rp.traces[last].hops
    idx = max((i for i, h in enumerate(hops) if h.action is Step.SNAT), default=0)
    return Finding(flow=last, hop=idx, message="; ".join(sorted(problems)))


def nat04(rp: Replay) -> Finding | None:
    """P-NAT-04 on every node's final SNAT map (masquerade and NodePort entries alike),
    reported at the last translating hop of the last flow."""
    problems = []
    for name, st in rp.state.nodes.items():
        n = rp.world.cluster.node(name)
        for ip in {n.ip, n.masq_ip or n.ip}:
            problems += _nat_pairs(st, ip)
            problems += [f"allocated port {v.to_port} outside the NAT range"
                         for k, v in st.snat.entries.items() if k.flags is TupleFlags.OUT
                         and v.to_addr == ip and not rp.world.cfg.nat_min <= v.to_port]
    if not problems:
        return None
    last = len(rp.traces) - 1
    hops = rp.traces[last].hops
    idx = max((i for i, h in enumerate(hops) if h.action in (Step.SNAT, Step.MASQ)),
              default=0)
    return Finding(flow=last, hop=idx, message="; ".join(sorted(set(problems))))


def _times(tr: FlowTrace, start: int) -> tuple[int, int, int]:
    """The model clock at a flow's first and last request and when it ended (run_flow:
    idle seconds, then one second per packet sent)."""
    sent = sum(1 for h in tr.hops if h.action is Action.SEND and not h.reply)
    first = start + tr.spec.idle + 1
    return first, first + max(sent - 1, 0), start + tr.spec.idle + sent


def aff01(rp: Replay) -> Finding | None:
    """P-AFF-01: a new connection of a client to an affinity service within the timeout of
    its previous one (no endpoint change between) reaches that one's backend."""
    timeout = {s.name: s.affinity_timeout for s in rp.world.cluster.services
               if s.affinity is SessionAffinity.CLIENT_IP}
    last: list[tuple[object, str, int, str]] = []  # (client address, service, time, pod)
    now = 0
    for n, tr in enumerate(rp.traces):
        if tr.spec.set_backends:
            last.clear()
        first, final, now = _times(tr, now)
        got = _pod_receives(tr)
        if tr.spec.service not in timeout or not got:
            continue
        key = (tr.spec.source.addr, tr.spec.service)
        before = next((x for x in reversed(last) if (x[0], x[1]) == key), None)
        if before is not None and first < before[2] + timeout[tr.spec.service]:
            i, h = got[0]
            if h.at != before[3]:
                return Finding(flow=n, hop=i, message=(
                    f"new connection from {tr.spec.source} via {tr.spec.via} reached {h.at}; "
                    f"the client's previous one ({before[2]} s, within the "
                    f"{timeout[tr.spec.service]} s timeout) reached {before[3]}"))
        last.append((key[0], key[1], final, got[-1][1].at))
    return None


def mag01(rp: Replay) -> Finding | None:
    """P-MAG-01: one flow (client address and port, service) reaches one backend whichever
    node it enters by (no endpoint change between); ports compared with ==, never hashed."""
    first: list[tuple[Endpoint, str, str, str]] = []  # (source, service, pod, node)
    for n, tr in enumerate(rp.traces):
        if tr.spec.set_backends:
            first.clear()
        got = _pod_receives(tr)
        if not got:
            continue
        i, h = got[0]
        src, via = tr.spec.source, str(tr.spec.via)
        before = next((x for x in first if x[0] == src and x[1] == tr.spec.service), None)
        if before is None:
            first.append((src, tr.spec.service, h.at, via))
        elif before[2] != h.at:
            return Finding(flow=n, hop=i, message=(
                f"flow from {src} entering by {via} reached {h.at}; the same flow "
                f"entering by {before[3]} reached {before[2]}"))
    return None
