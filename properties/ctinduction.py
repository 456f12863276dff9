"""P-CT-01/02 by induction: lb_select's CT entries keep their backend while it lives or drains."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from ipaddress import ip_address

import attrs
import z3

from model.config import CiliumVersion
from model.conntrack import reopens
from model.faults import ModelFault
from model.hooks import NodeCtx, ct_tuple
from model.lbselect import lb_select
from model.maps import CtEntry, CtTuple, LbMaps, LruMap, NodeState, ServiceEntry, TupleFlags
from model.network import AgentBackends
from model.topology import Service, ServiceType
from model.values import Endpoint, Packet, Proto, TcpFlags
from properties import zterms as zt
from properties.configs import Config
from properties.coreprops import Property
from properties.decode import FlowDoc, Replayed, ScenarioValues, replay
from properties.induction import (
    CAPACITY,
    Built,
    Keys,
    Obligations,
    Step,
    Timer,
    consecution,
    verdict,
)
from properties.openmap import ANY, BOOL, OPT_ADDR, PORT, U16, Family, OpenMap, Rest, View, written
from properties.results import Query, Result, counterexample_result
from properties.symexec import SymRandom
from properties.symvalues import Input

CT_SPEC = {"backend_id": U16, "rev_nat_index": U16, "node_port": BOOL, "dsr_internal": BOOL,
           "nat_addr": OPT_ADDR, "nat_port": PORT, "loopback": BOOL, "seen_non_syn": BOOL,
           "tx_syn_seen": BOOL, "rx_syn_seen": BOOL, "tx_closing": BOOL, "rx_closing": BOOL,
           "lifetime": ANY}
RNI = 1
SLOTS = (1, 2)  # the frontend's backends
OTHER = 3  # live, held by another service only
DRAINING = 4  # BE_STATE_TERMINATING: live, in no slot (P-CT-02)
TCP_KINDS = {"syn": TcpFlags.SYN, "syn-ack": TcpFlags.SYN | TcpFlags.ACK, "ack": TcpFlags.ACK,
             "fin": TcpFlags.FIN | TcpFlags.ACK, "rst": TcpFlags.RST}


def _lb(cfg: Config, draining: bool) -> LbMaps:
    """The LB maps a packet step reads: two slots, another service's backend, and for
    P-CT-02 a terminating one. Backends are compared only by ID, so larger sets add no
    behaviour to one packet's step (the random slot choice is already open)."""
    ids = (*SLOTS, OTHER, *((DRAINING,) if draining else ()))
    base = "fd00::a00:" if cfg.ipv6 else "10.0.2."
    return LbMaps(services=(), revnat={},
                  backends={i: Endpoint(addr=ip_address(f"{base}{10 + i}"), port=8080)
                            for i in ids},
                  terminating=(DRAINING,) if draining else ())


def ct_steps(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int,
             draining: bool) -> Result:
    """P-CT-01 / P-CT-02: model.lbselect.lb_select on one packet of any flow to frontend F,
    from any CT map (CT-01: any map whose F entries name F's slots, the invariant)."""
    t0 = time.perf_counter()
    timer = Timer()
    ccfg = cfg.cilium()
    bits = 128 if cfg.ipv6 else 32
    amax = (1 << bits) - 1
    lb = _lb(cfg, draining)
    svc = ServiceEntry(rev_nat_index=RNI, backend_slots=SLOTS, routable=True, etp_local=False,
                       dsr=False, all_backends=SLOTS)
    ctx = NodeCtx(cfg=ccfg, name="node1", ip=ip_address("fd00::2:2" if cfg.ipv6 else
                                                        "192.168.2.2"),
                  ipcache={}, now=100, faults=faults, rand=SymRandom())
    fe, fport = Input("F", 0, amax), Input("F.port", 0, 0xFFFF)
    c, cp = Input("c", 0, amax), Input("c.port", 0, 0xFFFF)
    fam = Family(CtTuple, (("nexthdr", cfg.proto), ("flags", TupleFlags.SERVICE)))
    state: list[NodeState] = []

    built = Built()

    def inv(v: View, k: Keys) -> z3.BoolRef:
        """The invariant at one key of one view, built once."""
        return built.get("inv", v, k, lambda: inv_at(v, k))

    def inv_at(v: View, k: Keys) -> z3.BoolRef:
        """F's entries with F's rev_nat_index name one of F's slots."""
        e = v.get(fam, k)
        mine = zt.conj([e.present, zt.eq(e.rev_nat_index, zt.const(RNI)),
                        zt.eq(k[0], fe.var.e), zt.eq(k[2], fport.var.e)])
        return zt.implies(mine, zt.disj([zt.eq(e.backend_id, zt.const(b)) for b in SLOTS]))

    def rest() -> Rest:
        r = Rest("ct", CtEntry, CT_SPEC, bits)
        pre = View(r)
        if not draining:
            r.on_read = lambda f, k: inv(pre, k) if f == fam else zt.TRUE
        state[:] = [NodeState(lb=lb, ct=LruMap(capacity=CAPACITY, entries=OpenMap(r)),
                              snat=LruMap(capacity=CAPACITY))]
        return r

    def step(flags: TcpFlags) -> Callable[[], tuple[OpenMap, bool]]:
        def run() -> tuple[OpenMap, bool]:
            pkt = Packet(src=Endpoint(addr=c.var, port=cp.var),  # type: ignore[arg-type]
                         dst=Endpoint(addr=fe.var, port=fport.var),  # type: ignore[arg-type]
                         proto=cfg.proto, flags=flags)
            st = state[0]
            key = ct_tuple(pkt, TupleFlags.SERVICE)
            before = st.ct.get(key)
            st2, bid, _ = lb_select(ctx, st, svc, pkt)
            return written(st2.ct), _sticks(ccfg.version, draining, pkt, before,
                                            st2.ct.get(key), bid)
        return run

    wk: Keys = tuple(z3.Int(f"w.{x}") for x in ("daddr", "saddr", "dport", "sport"))

    def goal(v: View) -> z3.BoolRef:
        return z3.BoolVal(True) if draining else inv(v, wk)

    def hyp(pre: View, post: View, keys: Iterable[tuple[Family, Keys]]) -> list[z3.BoolRef]:
        return [] if draining else [inv(pre, k) for f, k in [(fam, wk), *keys] if f == fam]

    kinds = TCP_KINDS if cfg.proto is Proto.TCP else {"datagram": TcpFlags.NONE}
    ob = Obligations()
    empty = View(Rest("ct0", CtEntry, CT_SPEC, bits), empty=True)
    if timer.check("initiation", z3.Not(goal(empty)), ms=ms) != z3.unsat:
        ob.failed.append("initiation")
    for name, flags in kinds.items():
        consecution(Step(name=name, inputs=(fe, fport, c, cp), run=step(flags)), rest, goal,
                    hyp, timer, ms, ob)
        if ob.raised:
            break
    common = {"prop": prop.id, "cfg": cfg, "expected": prop.expect(cfg), "method": "induction",
              "bound": "induction (unbounded; CT map arbitrary, any packet of any flow)",
              "faults": faults}
    # vacuity: a live entry of F (the premise of stickiness) is consistent with the invariant
    v = View(Rest("ct", CtEntry, CT_SPEC, bits))
    e = v.get(fam, wk)
    live = (DRAINING,) if draining else SLOTS
    vac = timer.check("vacuity", *hyp(v, v, []), e.present, e.rev_nat_index == RNI,
                      wk[0] == fe.var.e, wk[2] == fport.var.e,
                      z3.Or(*(e.backend_id == b for b in live)), ms=ms)
    if draining:  # the views above are the ones the agent's bookkeeping can produce
        t = time.perf_counter()
        bad = agent_counterexample(cfg.proto)
        timer.queries.append(Query(name="agent-endpoint-changes",
                                   seconds=time.perf_counter() - t,
                                   answer="sat" if bad else "unsat"))
        if bad:
            ob.failed.append(f"endpoint-change ({bad})")
    res = verdict(ob, z3.unsat, vac, common, t0, timer)
    if draining and ob.failed:
        rep = _drain_run(prop, cfg, faults)
        if rep is not None:
            cx = counterexample_result(res, rep, t0, res.queries)
            return attrs.evolve(cx, note=f"{res.note}; reachable: {cx.note}")
    return res


AGENT_PODS = ("web-0", "web-1", "web-2")


def agent_counterexample(proto: Proto) -> str | None:
    """Every endpoint change the agent can make (model.network.AgentBackends.apply) over three
    pods and two services sharing them, explored to a fixpoint up to the renaming of backend
    IDs: slotted backends are never terminating, and every slotted or terminating backend is
    in the backend map. Returns a violation, or None."""
    svcs = [Service(name=n, type=ServiceType.NODEPORT, proto=proto, port=80, target_port=8080,
                    node_port=30080 + i) for i, n in enumerate(("web", "other"))]
    start = AgentBackends(table={}, live={s.name: () for s in svcs}, draining={}, next_id=1)
    subsets = [c for r in range(len(AGENT_PODS) + 1)
               for c in itertools.combinations(AGENT_PODS, r)]

    def canon(a: AgentBackends) -> object:
        return (frozenset(a.table.values()),
                tuple((n, tuple(a.table[b] for b in ids)) for n, ids in sorted(a.live.items())),
                tuple((n, frozenset(a.table[b] for b in ids))
                      for n, ids in sorted(a.draining.items())))

    seen, todo = {canon(start)}, [start]
    while todo:
        a = todo.pop()
        for svc in svcs:
            members = {a.table[b][0] for b in a.live[svc.name]}
            for pods in subsets:
                dropped = sorted(members - set(pods))
                for term in (c for r in range(len(dropped) + 1)
                             for c in itertools.combinations(dropped, r)):
                    b = a.apply(svc, pods, term)
                    held = {x for ids in b.live.values() for x in ids}
                    if held & b.terminating:
                        return f"{svc.name} -> {pods}: slotted and terminating"
                    if not (held | b.terminating) <= b.table.keys():
                        return f"{svc.name} -> {pods}: a backend left the backend map"
                    k = canon(b)
                    if k not in seen:
                        seen.add(k)
                        todo.append(b)
    return None


def _drain_run(prop: Property, cfg: Config, faults: frozenset[ModelFault]
               ) -> Replayed | None:
    """A reachable run for a failed P-CT-02 step, on the model from a fresh cluster: a
    connection opens, its backend turns terminating, then the flow sends a SYN (or an ACK)."""
    six = cfg.ipv6
    for was in (0, 1):
        for resume in (False, True):
            flows = (FlowDoc(client=0, sport=40000, packets=1, backend=was),
                     FlowDoc(client=0, sport=40000, packets=1, backend=None, resume=resume,
                             set_backends=(1 - was,), terminating=(was,)))
            vals = ScenarioValues(
                nodes=("fd00::2:2", "fd00::2:3") if six else ("192.168.2.2", "192.168.2.3"),
                pods=("fd00::a00:a", "fd00::a00:b") if six else ("10.0.2.10", "10.0.2.11"),
                clients=("2001:db8::7",) if six else ("203.0.113.7",), target_port=8080,
                node_port=30080, port=None, vip=None, other_node_port=None, flows=flows)
            rep = replay(prop.id, cfg, vals, faults)
            if rep is not None:
                return rep
    return None


def _one_of(x: object, ids: tuple[int, ...]) -> bool:
    """Membership by the claim's own comparisons, not through model.maps (a fault in
    EqMap's search would otherwise change the model and the claim alike)."""
    return any(x == i for i in ids)


def _sticks(version: CiliumVersion, draining: bool, pkt: Packet, before: CtEntry | None,
            after: CtEntry | None, bid: int | None) -> bool:
    """The safety claim of one packet: a SYN never lands on a terminating backend, and a
    flow whose entry names a live backend of F keeps it (unless a SYN reopens a closed
    entry or, being a SYN, must leave a terminating backend)."""
    term = (DRAINING,) if draining else ()
    live = (*SLOTS, OTHER, *term)
    if bid is not None and pkt.is_syn and _one_of(bid, term):
        return False
    if (before is None or before.rev_nat_index != RNI or not _one_of(before.backend_id, live)
            or reopens(version, before, pkt)
            or (pkt.is_syn and _one_of(before.backend_id, term))):
        return True
    return bool(after is not None and after.backend_id == before.backend_id
                and bid == before.backend_id)
