"""A configuration cell as a scenario the model itself runs, with its ports and draws left open.

The cell becomes an ordinary scenario document (the one `decode.document` writes for
counterexamples), parsed by model/scenario.py like any user file. Its ports are marker values;
on each explored path they are replaced by symbolic inputs with their legal domains, and
get_prandom_u32() becomes an open choice. Addresses stay concrete: the model only compares
addresses for equality (and source-range prefixes, which these cells do not use), so one
assignment of distinct addresses stands for every other (data independence).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs
import z3

from model.config import NODEPORT_MAX_DEFAULT, NODEPORT_MIN_DEFAULT, NODEPORT_PORT_MAX_NAT
from model.conntrack import CT_CONNECTION_LIFETIME_TCP_V113, CT_SYN_TIMEOUT
from model.faults import ModelFault
from model.flows import FlowSpec, FlowTrace, run_flows
from model.network import ClusterState, World
from model.scenario import parse
from model.topology import ServiceType
from model.values import IcmpKind, Proto
from properties.configs import Config, Placement
from properties.decode import FlowDoc, ScenarioValues, document
from properties.symexec import SymPicker, SymRandom, construct
from properties.symvalues import Input, SymInt

V4_HOSTS = {"node1": "192.168.2.2", "node2": "192.168.2.3", "router1": "10.0.1.1",
            "router2": "10.0.2.1", "client": "203.0.113.7", "client2": "203.0.113.8",
            "vip": "172.16.10.10"}
V6_HOSTS = {"node1": "fd00::2:2", "node2": "fd00::2:3", "router1": "fd00::10:1:0:1",
            "router2": "fd00::10:2:0:1", "client": "2001:db8::7", "client2": "2001:db8::8",
            "vip": "fd00::ac10:a0a"}

# The gc bound's silences: one inside every CT lifetime of an open connection (the SYN
# timeout, the non-TCP lifetime), one past every lifetime of any version.
GC_LIVE_IDLE = CT_SYN_TIMEOUT // 2
GC_EXPIRED_IDLE = 5 * CT_CONNECTION_LIFETIME_TCP_V113


@attrs.frozen(kw_only=True)
class Port:
    """One open port of the cell: its marker in the document and its legal domain."""

    name: str
    marker: int
    lo: int
    hi: int


# Marker values are unusual enough that no other port-like field of a cell carries them.
SPORT = Port(name="client.sourcePort", marker=40404, lo=1, hi=NODEPORT_PORT_MAX_NAT)
NODE_PORT = Port(name="service.nodePort", marker=31313, lo=NODEPORT_MIN_DEFAULT,
                  hi=NODEPORT_MAX_DEFAULT)
TARGET_PORT = Port(name="service.targetPort", marker=18181, lo=1, hi=NODEPORT_PORT_MAX_NAT)
SVC_PORT = Port(name="service.port", marker=8484, lo=1, hi=NODEPORT_PORT_MAX_NAT)
SPORT2 = Port(name="client2.sourcePort", marker=40405, lo=1, hi=NODEPORT_PORT_MAX_NAT)
OTHER_NODE_PORT = Port(name="other.nodePort", marker=31414, lo=NODEPORT_MIN_DEFAULT,
                        hi=NODEPORT_MAX_DEFAULT)
ALL_PORTS = (SPORT, TARGET_PORT, NODE_PORT, SVC_PORT, OTHER_NODE_PORT, SPORT2)
PORT_FIELDS = frozenset({"port", "target_port", "node_port"})


@attrs.frozen(kw_only=True)
class Bounds:
    """The bound of a cell: packets per flow, backends, an extra service on the node."""

    packets: int = 2
    backends: int = 1
    extra_service: bool = False
    clients: int = 1  # one flow per client, in order, on shared node state
    # the first client's connection, then its first backend turns terminating (the service
    # keeps the second): the connection goes on, then a new one (a SYN) on the same tuple
    drain: bool = False
    # the first client's connection; silence shorter than any CT lifetime, the agent's GC,
    # the connection goes on; then silence past every lifetime, GC, the second client's flow
    gc: bool = False
    # the first client opens a second connection from another source port (SPORT2), through
    # the same node, or through the other node when the cell is an ECMP one
    reconnect: bool = False
    # ECMP moves the first client's connection: the same flow (SPORT) then enters by node2
    moved: bool = False
    # the backend answers each request with this ICMP error (flows[].backendError)
    backend_error: IcmpKind | None = None
    # each request's L3 length (flows[].size; None: short) and IPv4 options (ipOptions)
    size: int | None = None
    fragments: int = 0  # each datagram leaves as this many fragments (Config.frag_order)

    def describe(self) -> str:
        """Human form of the bound for the results table."""
        flows = f", {self.clients} flows" if self.clients > 1 else ""
        drain = ", a backend drains" if self.drain else ""
        gc = ", CT GC while live and after expiry" if self.gc else ""
        again = ", a second connection" if self.reconnect else ""
        err = (f", the backend answers {self.backend_error.value}"
               if self.backend_error is not None else "")
        big = f", {self.size}-byte requests" if self.size is not None else ""
        frag = f", {self.fragments} fragments each" if self.fragments else ""
        moved = ", the flow moves to node2" if self.moved else ""
        return (f"{self.packets} pkts, {self.backends} backends{flows}{drain}{gc}{again}"
                f"{err}{big}{frag}{moved}")


@attrs.frozen(kw_only=True)
class Cell:
    """A parsed cell: the world and flows the model runs, and the inputs left open."""

    cfg: Config
    bounds: Bounds
    world: World  # ports already symbolic, get_prandom_u32 an open choice
    flows: tuple[FlowSpec, ...]
    ports: tuple[Port, ...]
    inputs: tuple[Input, ...]
    facts: tuple[z3.BoolRef, ...]

    def values(self, pick: Mapping[str, int], backend: int | None) -> ScenarioValues:
        """The document values for chosen inputs (a counterexample or a witness)."""
        fixed = {p.marker: p.marker for p in ALL_PORTS}  # ports the cell keeps concrete
        return cell_values(self.cfg, self.bounds,
                           fixed | {p.marker: pick[p.name] for p in self.ports}, backend)


def _hosts(cfg: Config) -> dict[str, str]:
    return V6_HOSTS if cfg.ipv6 else V4_HOSTS


def _pod_ip(cfg: Config, i: int) -> str:
    node = 1 if cfg.placement is Placement.LOCAL else 2
    return f"fd00::10:{node}:0:{i + 10:x}" if cfg.ipv6 else f"10.0.{node}.{i + 10}"


def _has_node_port(cfg: Config) -> bool:
    """NodePort and LoadBalancer services carry a nodePort; ExternalIP ones may not."""
    return cfg.svc_type in (ServiceType.NODEPORT, ServiceType.LOADBALANCER)


def cell_values(cfg: Config, bounds: Bounds, ports: Mapping[int, int], backend: int | None
                ) -> ScenarioValues:
    """The cell's scenario values with its ports given by marker -> value."""
    h = _hosts(cfg)
    nodeport = cfg.svc_type is ServiceType.NODEPORT
    return ScenarioValues(
        nodes=(h["node1"], h["node2"]), routers=(h["router1"], h["router2"]),
        pods=tuple(_pod_ip(cfg, i) for i in range(bounds.backends)),
        clients=(h["client"], h["client2"])[:2 if bounds.gc else bounds.clients],
        target_port=ports[TARGET_PORT.marker],
        node_port=ports[NODE_PORT.marker] if _has_node_port(cfg) else None,
        port=None if nodeport else ports[SVC_PORT.marker],
        vip=None if nodeport else h["vip"],
        other_node_port=ports[OTHER_NODE_PORT.marker] if bounds.extra_service else None,
        flows=tuple(FlowDoc(client=i, sport=ports[p.marker], packets=bounds.packets,
                            backend=backend if i == 0 else None,
                            backend_error=(bounds.backend_error.value
                                           if bounds.backend_error is not None else None),
                            size=bounds.size, ip_options=cfg.ip_options,
                            fragments=bounds.fragments if cfg.frag_order else 0,
                            fragment_order=cfg.frag_order if bounds.fragments else None)
                    for i, p in enumerate((SPORT, SPORT2)[:bounds.clients])) + (
            (FlowDoc(client=0, sport=ports[SPORT.marker], packets=bounds.packets,
                     backend=None, resume=True, set_backends=(1,), terminating=(0,)),
             FlowDoc(client=0, sport=ports[SPORT.marker], packets=1, backend=None))
            if bounds.drain else ()) + (
            (FlowDoc(client=0, sport=ports[SPORT.marker], packets=1, backend=None,
                     resume=cfg.proto is Proto.TCP, idle=GC_LIVE_IDLE),
             FlowDoc(client=1, sport=ports[SPORT2.marker], packets=1, backend=None,
                     idle=GC_EXPIRED_IDLE))
            if bounds.gc else ()) + (
            (FlowDoc(client=0, sport=ports[SPORT2.marker], packets=bounds.packets,
                     backend=None, node=1 if cfg.ecmp else 0),)
            if bounds.reconnect else ()) + (
            (FlowDoc(client=0, sport=ports[SPORT.marker], packets=bounds.packets,
                     backend=None, node=1),)
            if bounds.moved else ()))


@functools.lru_cache(maxsize=256)
def cell(cfg: Config, bounds: Bounds) -> Cell:
    """Parse the cell's document once and make its ports symbolic inputs."""
    ports = [SPORT]
    # reprogramming (a drain) keys the agent's tables by frontend and backend ports: those
    # stay concrete then, the client's source port stays open
    if not bounds.drain:
        ports.append(TARGET_PORT)
        if _has_node_port(cfg):
            ports.append(NODE_PORT)
        if cfg.svc_type is not ServiceType.NODEPORT:
            ports.append(SVC_PORT)
    if bounds.extra_service:
        ports.append(OTHER_NODE_PORT)
    if bounds.clients > 1 or bounds.gc or bounds.reconnect:
        ports.append(SPORT2)
    markers = {p.marker: p.marker for p in ALL_PORTS}
    sc = parse(document(cfg, cell_values(cfg, bounds, markers, None), seed=1),
               f"<cell {cfg.label()}>")
    inputs = {p.name: Input(name=p.name, lo=p.lo, hi=p.hi) for p in ports}
    facts = []
    if NODE_PORT.name in inputs and OTHER_NODE_PORT.name in inputs:
        # the agent refuses two services on one nodePort (pkg/loadbalancer)
        facts.append(inputs[NODE_PORT.name].var.e != inputs[OTHER_NODE_PORT.name].var.e)
    syms = {p.marker: inputs[p.name].var for p in ports}
    ins = tuple(inputs.values())
    world = construct(lambda: attrs.evolve(_subst(sc.world, syms), rand=SymRandom(),
                                               picker=SymPicker()), ins)
    flows = construct(lambda: tuple(_subst(f, syms) for f in sc.flows), ins)
    return Cell(cfg=cfg, bounds=bounds, world=world, flows=flows, ports=tuple(ports),
                inputs=ins, facts=tuple(facts))


def _subst(obj: Any, ports: Mapping[int, SymInt], field: str | None = None) -> Any:
    """obj with every marker port replaced by its symbolic input."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        return ports.get(obj, obj) if field in PORT_FIELDS else obj
    if isinstance(obj, tuple):
        return tuple(_subst(x, ports, field) for x in obj)
    if isinstance(obj, Mapping):
        return type(obj)({k: _subst(v, ports, field) for k, v in obj.items()}) \
            if isinstance(obj, dict) else _remap(obj, ports, field)
    if attrs.has(type(obj)):
        changes = {}
        for a in attrs.fields(type(obj)):
            if not a.init:
                continue
            old = getattr(obj, a.name)
            new = _subst(old, ports, a.name)
            if new is not old:
                changes[a.alias] = new
        return attrs.evolve(obj, **changes) if changes else obj
    return obj


def _remap(m: Mapping[Any, Any], ports: Mapping[int, SymInt], field: str | None) -> Any:
    from model.maps import EqMap
    items = [(k, _subst(v, ports, field)) for k, v in m.items()]
    if all(v is m[k] for k, v in items):
        return m
    return EqMap(items)


@attrs.frozen(kw_only=True)
class Run:
    """What the model did on one path: the world it ran, its traces and final state."""

    world: World
    traces: tuple[FlowTrace, ...]
    state: ClusterState


def run_cell(c: Cell, faults: frozenset[ModelFault]) -> Run:
    """Run the cell's flows through the model on the path being explored."""
    world = attrs.evolve(c.world, faults=faults) if faults else c.world
    state, traces = run_flows(world, c.flows)
    return Run(world=world, traces=tuple(traces), state=state)
