"""Differential testing engine: the model and a byte-level datapath run the same program.

A program is a scenario (model.scenario's format: cluster, services, flows).  Both sides
run it flow by flow, packet by packet, exactly as model.flows.run_flow does (clock +1 per
packet, `idle` then CT GC, SYN/ACK.../FIN requests, pods answer by swapping):

* model side: model.network.walk over model.nodeport's hooks and immutable NodeState;
* datapath side: `DatapathNet`, a network of `Datapath` instances (one per node) fed with
  bytes: the fabric delivers by (outer) destination to the owning node's from-netdev or,
  for Geneve, from-overlay; a pod's reply enters its node's to-netdev; a redirect to an
  lxc device is delivery to the pod; CTX_ACT_OK towards the node's own address is a punt
  to the stack; anything else is forwarded onto the fabric again.

What is compared (every walk = one step):
  1. every hook execution in order: node, hook, verdict (forward/deliver/to-stack/drop/
     reject) and the packet it emits, abstracted by datapath.abstraction.packet_of
     (addresses, ports, protocol, TCP flags, DSR metadata and kind, Geneve outer src/dst/
     VNI, ICMP kind);
  2. how the walk ends: delivered to which pod / received by which client / dropped, where
     and with which drop reason (PUNT_TO_STACK for CTX_ACT_OK to the node itself);
  3. after the step, every node's CT map and SNAT map (all fields, lifetimes included),
     abstracted from `Datapath.dump()`; the LB maps once after programming.
Randomness is removed honestly: every flow pins its backend in both implementations
(FlowSpec.backend / NodeCtx.pinned vs Datapath.run(backend=id)), and NAT ports the two
allocate at random are compared up to a bijection learned on first sight per
(node address, backend, backend port, protocol) and enforced afterwards; a port either
side kept from the client must be kept by both.
Receivers check what a host stack checks: a packet with a bad IPv4 header or L4 checksum
reaching a pod or client is a drop there (the model has no checksums: it always delivers).
Not compared: byte-exact TTLs/payloads/option placement (the golden vectors do that), the
recency order inside an LRU map (which entries it holds is compared, so an eviction that
differs shows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from datapath.abstraction import AgentView, bytes_of, node_config, packet_of
from datapath.adapter import DatapathFactory
from datapath.diffwalk import DatapathNet, End, Obs, model_walk, obs_str, pkt_str
from model.config import CiliumVersion
from model.flows import FlowSpec, answer, request
from model.fragments import fragments, ordered
from model.maps import NatEntry, NatTuple, NodeState, TupleFlags
from model.network import World, gc_all, initial_state, reprogram
from model.values import Endpoint, IcmpKind, IPAddress, Packet, Proto


@attrs.frozen(kw_only=True)
class Declared:
    """A difference a datapath declares up front, with the source line that explains it:
    `match(model, datapath)` recognises exactly that difference in one hook observation.
    Each use is counted and printed with the run's summary; nothing else is forgiven."""

    name: str
    cite: str
    match: Callable[[Obs, Obs], bool] = attrs.field(default=lambda _m, _d: False)
    # a map row: (map kind "ct"/"snat", key, model value, datapath value) -> declared?
    row: Callable[[str, Any, Any, Any], bool] = attrs.field(
        default=lambda _w, _k, _m, _d: False)
    end: Callable[[End, End], bool] = attrs.field(default=lambda _m, _d: False)


def _ptb6(p: Packet | None) -> bool:
    return p is not None and p.is_ipv6 and p.icmp is IcmpKind.FRAG_NEEDED and p.quote is not None


def _same_inner(m: Packet | None, d: Packet | None) -> bool:
    """The model's punted packet is the inner one; a drop reports what the hook got."""
    return m is not None and d is not None and m == attrs.evolve(d, outer=m.outer)


# What the model cannot say, whatever the datapath: v1.18 misreads a packet-too-big's
# quote (v1.18 nat.h:1754-1755, from the MTU field on), and whether the misread
# extension-header walk then fails (a drop) or ends on an unknown protocol (a punt)
# depends on quote bytes the model does not carry. The model says punt; a drop with one
# of the walk's reasons at the same hook is that same misreading.
_MISREAD = ("DROP_INVALID", "DROP_INVALID_EXTHDR", "DROP_FRAG_NOSUPPORT")
V118_PTB6_MISREAD = Declared(
    name="v1.18 packet-too-big quote misread: walk fails",
    cite="v1.18 bpf/lib/nat.h:1754-1755; vectors/icmp6_snat_pmtu.yaml",
    match=lambda m, d: (m.at == d.at and m.hook == d.hook and m.verdict == "to-stack"
                        and d.verdict == "drop" and _ptb6(m.packet)
                        and _same_inner(m.packet, d.packet)),
    end=lambda m, d: (m.kind == d.kind == "drop" and m.at == d.at and _ptb6(m.packet)
                      and m.drop is not None and m.drop[1] == "PUNT_TO_STACK"
                      and d.drop is not None and d.drop[1] in _MISREAD
                      and _same_inner(m.packet, d.packet)))


@attrs.frozen(kw_only=True)
class Divergence:
    """The first disagreement: which step, what differs, and both traces so far."""

    step: str
    what: tuple[str, ...]
    model_trace: tuple[str, ...]
    dp_trace: tuple[str, ...]


# -- NAT port renaming ---------------------------------------------------------------------
RenKey = tuple[IPAddress, IPAddress, int, Proto]


class PortRenaming:
    """A bijection datapath NAT port -> model NAT port per (node addr, backend, bport, proto)."""

    def __init__(self, node_ips: Iterable[IPAddress], nat_min: int, nat_max: int) -> None:
        self.node_ips = frozenset(node_ips)
        self.lo, self.hi = nat_min, nat_max
        self.fwd: dict[RenKey, dict[int, int]] = {}
        self.inv: dict[RenKey, dict[int, int]] = {}

    def get(self, key: RenKey, port: int) -> int:
        """The model's name for a datapath port (itself when never learned)."""
        return self.fwd.get(key, {}).get(port, port)

    def _nat_side(self, p: Packet) -> tuple[str, RenKey] | None:
        if p.icmp is not None:
            return None
        if p.src.addr in self.node_ips and self.lo <= p.src.port <= self.hi:
            return "src", (p.src.addr, p.dst.addr, p.dst.port, p.proto)
        if p.dst.addr in self.node_ips and self.lo <= p.dst.port <= self.hi:
            return "dst", (p.dst.addr, p.src.addr, p.src.port, p.proto)
        return None

    def apply(self, d: Packet | None, m: Packet | None, client_port: int) -> Packet | None:
        """Rename d's NAT port, learning the pair from m on first sight."""
        if d is None:
            return d
        side = self._nat_side(d)
        if side is None:
            return d
        where, key = side
        dport = d.src.port if where == "src" else d.dst.port
        if dport not in self.fwd.get(key, {}) and m is not None:
            ms = self._nat_side(m)
            if ms is not None and ms[0] == where and ms[1] == key:
                mport = m.src.port if where == "src" else m.dst.port
                kept = client_port in (mport, dport)
                if mport not in self.inv.get(key, {}) and (not kept or mport == dport):
                    self.fwd.setdefault(key, {})[dport] = mport
                    self.inv.setdefault(key, {})[mport] = dport
        new = self.get(key, dport)
        if where == "src":
            return attrs.evolve(d, src=Endpoint(addr=d.src.addr, port=new))
        return attrs.evolve(d, dst=Endpoint(addr=d.dst.addr, port=new))

    def nat_state(self, st: NodeState) -> NodeState:
        """Rename the NAT ports in a datapath-derived SNAT map (and fragment map)."""
        if not self.fwd:
            return st
        out: dict[NatTuple, NatEntry] = {}
        for k, v in st.snat.entries.items():
            if k.flags is TupleFlags.OUT:
                nv = attrs.evolve(v, to_port=self.get((v.to_addr, k.daddr, k.dport, k.nexthdr),
                                                      v.to_port))
                out[k] = nv
            else:
                nk = attrs.evolve(k, dport=self.get((k.daddr, k.saddr, k.sport, k.nexthdr),
                                                    k.dport))
                out[nk] = v
        # a SNATed datagram's fragment entry on the backend's node holds the NAT port
        frag = {k: attrs.evolve(v, sport=self.get((k.saddr, k.daddr, v.dport, k.proto),
                                                  v.sport))
                if k.saddr in self.node_ips else v for k, v in st.frag.entries.items()}
        return attrs.evolve(st, snat=attrs.evolve(st.snat, entries=out),
                            frag=attrs.evolve(st.frag, entries=frag))


# -- comparison ----------------------------------------------------------------------------
def _diff_maps(node: str, what: str, m: Mapping[Any, Any], d: Mapping[Any, Any],
               declared: tuple[Declared, ...] = (), seen: dict[str, int] | None = None
               ) -> list[str]:
    if m == d:  # the common case: nothing to sort or report
        return []
    out = []
    for k in sorted(set(m) | set(d), key=repr):
        if m.get(k) != d.get(k):
            w = next((w for w in declared if w.row(what, k, m.get(k), d.get(k))), None)
            if w is not None and seen is not None:
                seen[w.name] = seen.get(w.name, 0) + 1
                continue
            out.append(f"{node} {what} {k}: model={m.get(k)} datapath={d.get(k)}")
    return out


def diff_states(model: Mapping[str, NodeState], dp: Mapping[str, NodeState],
                ren: PortRenaming, lb: bool = False, declared: tuple[Declared, ...] = (),
                seen: dict[str, int] | None = None) -> list[str]:
    """Field-by-field differences between the model's and the abstracted datapath state
    of the nodes in `model` (rows a declared divergence recognises are counted in `seen`
    instead)."""
    out: list[str] = []
    for node in sorted(model):
        m, d = model[node], ren.nat_state(dp[node])
        out += _diff_maps(node, "ct", m.ct.entries, d.ct.entries, declared, seen)
        out += _diff_maps(node, "snat", m.snat.entries, d.snat.entries, declared, seen)
        out += _diff_maps(node, "affinity", m.affinity.entries, d.affinity.entries, declared, seen)
        out += _diff_maps(node, "frag", m.frag.entries, d.frag.entries, declared, seen)
        mt, dt = (b.tokens if b is not None else None for b in (m.icmp6_bucket,
                                                                 d.icmp6_bucket))
        if mt != dt:  # tokens only: a real datapath's bucket runs on its own clock
            out.append(f"{node} icmp6 rate-limit tokens: model={mt} datapath={dt}")
        if lb and m.lb != d.lb:
            out += _diff_maps(node, "lb.services", m.lb.services, d.lb.services)
            out += _diff_maps(node, "lb.backends", m.lb.backends, d.lb.backends)
            out += _diff_maps(node, "lb.revnat", m.lb.revnat, d.lb.revnat)
            out += _diff_maps(node, "lb.affinity_match", dict.fromkeys(m.lb.affinity_match, 0),
                              dict.fromkeys(d.lb.affinity_match, 0))
            if m.lb.local_endpoints != d.lb.local_endpoints:
                out.append(f"{node} lxc: model={sorted(map(str, m.lb.local_endpoints))} "
                           f"datapath={sorted(map(str, d.lb.local_endpoints))}")
    return out


@attrs.define
class Counters:
    """What a run compared: steps (walks), packet observations (hooks + walk ends), and
    how many observations differed only as a declared divergence (by name)."""

    steps: int = 0
    observations: int = 0
    declared: dict[str, int] = attrs.field(factory=dict)


class DiffRun:
    """Runs one program on both sides, stopping at the first divergence."""

    def __init__(self, world: World, factory: DatapathFactory,
                 faults: frozenset[str] = frozenset(), spec: str = "datapath",
                 counters: Counters | None = None) -> None:
        self.world = world
        self.declared: tuple[Declared, ...] = tuple(getattr(factory, "declared", ()))
        if world.cfg.version is CiliumVersion.V1_18:
            self.declared += (V118_PTB6_MISREAD,)
        self.state = initial_state(world)
        self.net = DatapathNet(world, factory, faults, spec)
        cfg = world.cfg
        self.ren = PortRenaming([a for n in world.cluster.nodes
                                 for a in (n.ip, n.router_ip, n.masq_ip) if a is not None],
                                cfg.nat_min, cfg.nat_max_port)
        self.agent = AgentView(world)
        # Trace lines are rendered only when read (a failure, a test): most runs agree.
        self._mtrace: list[str | Obs | End] = []
        self._dtrace: list[str | Obs | End] = []
        self.counters = counters or Counters()

    @property
    def mtrace(self) -> list[str]:
        """The model's trace so far, one line per step header, hook and walk end."""
        return [x if isinstance(x, str) else obs_str(x) for x in self._mtrace]

    @property
    def dtrace(self) -> list[str]:
        """The datapath's trace so far (NAT ports renamed, declared differences noted)."""
        return [x if isinstance(x, str) else obs_str(x) for x in self._dtrace]

    def _fail(self, step: str, what: list[str]) -> Divergence:
        return Divergence(step=step, what=tuple(what), model_trace=tuple(self.mtrace),
                          dp_trace=tuple(self.dtrace))

    def model_states(self) -> dict[str, NodeState]:
        """The model's node states, as they are."""
        return dict(self.state.nodes)

    def _state_diffs(self, lb: bool = False, nodes: Iterable[str] | None = None
                     ) -> list[str]:
        model = self.model_states()
        if nodes is not None:
            model = {n: model[n] for n in nodes}
        return diff_states(model, self.net.states(self.state.nodes, lb, model), self.ren,
                           lb=lb, declared=self.declared, seen=self.counters.declared)

    def check_programming(self) -> Divergence | None:
        """LB maps as programmed must abstract to the model's LbMaps."""
        diffs = self._state_diffs(lb=True)
        return self._fail("programming", diffs) if diffs else None

    def _compare(self, step: str, mo: list[Obs], me: End, do: list[Obs], de: End,
                 client_port: int, before: Mapping[str, NodeState]) -> Divergence | None:
        self._mtrace.append(f"-- {step}")
        self._dtrace.append(f"-- {step}")
        self._mtrace += [*mo, me]
        what: list[str] = []
        renamed: list[Obs] = []
        for i in range(max(len(mo), len(do))):
            m = mo[i] if i < len(mo) else None
            d = do[i] if i < len(do) else None
            if d is not None:
                packet = self.ren.apply(d.packet, m.packet if m is not None else None,
                                        client_port)
                if packet is not d.packet:
                    d = attrs.evolve(d, packet=packet)
                renamed.append(d)
            if m != d and m is not None and d is not None:
                w = next((w for w in self.declared if w.match(m, d)), None)
                if w is not None:
                    self.counters.declared[w.name] = self.counters.declared.get(w.name, 0) + 1
                    renamed[-1] = attrs.evolve(d, note=f"{d.note} (declared: {w.name})")
                    continue
            if m != d:
                what.append(f"hook #{i + 1}: model {obs_str(m) if m else '(none)'} | "
                            f"datapath {obs_str(d) if d else '(none)'}")
        packet = self.ren.apply(de.packet, me.packet, client_port)
        if packet is not de.packet:
            de = attrs.evolve(de, packet=packet)
        self._dtrace += [*renamed, de]
        if me != de:
            w = next((w for w in self.declared if w.end(me, de)), None)
            if w is not None:
                self.counters.declared[w.name] = self.counters.declared.get(w.name, 0) + 1
            else:
                what.append(f"end: model {obs_str(me)} | datapath {obs_str(de)}")
        self.counters.steps += 1
        self.counters.observations += len(mo) + 1
        if what:
            return self._fail(step, what)
        diffs = self._state_diffs(nodes=self._touched(before))
        return self._fail(step, diffs) if diffs else None

    def _touched(self, before: Mapping[str, NodeState]) -> list[str]:
        """The nodes a step may have changed: the model wrote their state, or a datapath
        hook ran there (a node neither side touched keeps the maps compared last)."""
        return sorted(n for n, st in self.state.nodes.items()
                      if st is not before[n] or n in self.net.touched)

    def run_flow(self, spec: FlowSpec) -> Divergence | None:
        """model.flows.run_flow, step by step on both sides."""
        c = self.world.cluster
        if spec.set_backends:
            div = self.change_endpoints(spec)
            if div is not None:
                return div
        pinned = c.pod(spec.backend).ip if spec.backend is not None else None
        pin_id = None if spec.backend is None else self.agent.backend_id(spec.service,
                                                                         spec.backend)
        if spec.idle:
            self.state = gc_all(attrs.evolve(self.state, now=self.state.now + spec.idle))
            self.net.advance(spec.idle)
            self.net.gc()
            diffs = self._state_diffs()
            if diffs:
                return self._fail(f"{spec.name}: idle {spec.idle}s + CT GC", diffs)
        if spec.east_west:  # a pod calling a service: bpf_lxc on the pod's node
            from datapath.ewdiff import run_ew  # it builds on this module

            return run_ew(self, spec, pinned, pin_id)
        for i in range(spec.packets):
            self.state = attrs.evolve(self.state, now=self.state.now + 1)
            self.net.advance(1)
            pkt = request(spec, i)
            sent: tuple[Packet, ...] = (pkt,)
            if spec.fragments > 1:  # model.flows.run_flow's fragments, in arrival order
                sent = ordered(fragments(pkt, spec.fragments, spec.fragment_id + i),
                               spec.fragment_order)
            # pod egress (spec.egress): the pod sends, the outside host answers
            sender, served, answered = (("pod", "client", "pod") if spec.egress
                                        else ("client", "pod", "client"))
            got: set[str] = set()
            first: tuple[Packet, Packet] | None = None
            for piece in sent:
                before = self.state.nodes
                self.net.touched.clear()
                self.state, mo, me = model_walk(self.world, self.state, (sender, spec.client),
                                                piece, reply=False, via=spec.via,
                                                pinned=pinned)
                do, de, dbytes = self.net.walk((sender, spec.client), bytes_of(piece),
                                               via=spec.via, pin=pin_id)
                div = self._compare(f"{spec.name}: request {i + 1} {pkt_str(piece)}", mo, me,
                                    do, de, spec.source.port, before)
                if div is not None:
                    return div
                if me.kind != served or me.packet is None:
                    return None
                got.add(me.at)
                if piece.frag is None or piece.frag.first:
                    first = (attrs.evolve(me.packet, frag=None),
                             attrs.evolve(packet_of(dbytes), frag=None))
            if first is None or len(got) > 1:
                continue  # no pod has the whole datagram to answer
            mans = answer(spec, i, first[0])
            dans = answer(spec, i, first[1])
            if mans is None or dans is None:
                continue
            before = self.state.nodes
            self.net.touched.clear()
            self.state, mo, me = model_walk(self.world, self.state, (served, me.at), mans,
                                            reply=True, via=None, pinned=None)
            do, de, _ = self.net.walk((served, de.at), bytes_of(dans), via=None, pin=None)
            div = self._compare(f"{spec.name}: reply {i + 1} {pkt_str(mans)}", mo, me, do, de,
                                spec.source.port, before)
            if div is not None:
                return div
            if me.kind != answered:
                return None
        return None

    def change_endpoints(self, spec: FlowSpec) -> Divergence | None:
        """The flow's endpoint changes: model.network.reprogram on the model side, the
        agent's new NodeConfig through Datapath.reprogram on every node; then the LB maps
        (backend IDs, slots, deleted and draining backends) and CT/NAT must still agree."""
        for service, pods in spec.set_backends:
            self.state = reprogram(self.world, self.state, service, pods, spec.terminating)
            self.agent.apply(service, pods, spec.terminating)
        for name, dp in self.net.nodes.items():
            dp.reprogram(node_config(self.world, name, agent=self.agent))
        changes = "; ".join(f"{s}={list(p)}" for s, p in spec.set_backends)
        step = f"{spec.name}: setBackends {changes} terminating={list(spec.terminating)}"
        self._mtrace.append(f"-- {step}")
        self._dtrace.append(f"-- {step}")
        diffs = self._state_diffs(lb=True)
        return self._fail(step, diffs) if diffs else None

    def run(self, flows: Iterable[FlowSpec],
            between: Callable[[int], None] | None = None) -> Divergence | None:
        """The whole program: programming check, then every flow in order."""
        div = self.check_programming()
        if div is not None:
            return div
        for n, spec in enumerate(flows):
            if between is not None:
                between(n)
            div = self.run_flow(spec)
            if div is not None:
                return div
        diffs = self._state_diffs(lb=True)  # hooks must never have written the LB maps
        return self._fail("end of program", diffs) if diffs else None


def backend_id(world: World, spec: FlowSpec) -> int | None:
    """The backend id the pinned pod has in this flow's service (what the datapath pins)."""
    if spec.backend is None:
        return None
    for fe in world.cluster.frontends:
        if fe.service == spec.service:
            for bid in fe.backend_ids:
                if world.cluster.backends[bid].pod == spec.backend:
                    return bid
    return None
