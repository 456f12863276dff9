"""Counterexamples into scenario documents, replayed through the concrete model (model/).

z3's model gives addresses, ports and the backend it picked; the scenario pins that backend
(`flows[].backend`) where the property allows. Random choices z3 left open (prandom's SNAT
ports, per-packet picks under faults) are concretised by trying scenario seeds: a seed
only changes prandom, so the replay shows a violation of the model itself or none at all.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import attrs

from model.faults import ModelFault
from model.flows import run_flows
from model.scenario import parse
from model.topology import ServiceType
from properties.checks import Finding, Replay
from properties.configs import Config, Placement
from properties.pktchecks import CHECKERS

SEED_TRIES = 48

@attrs.frozen(kw_only=True)
class FlowDoc:
    """One decoded flow: which client, its source port, packets, pinned pod."""

    client: int
    sport: int
    packets: int
    backend: int | None
    close: bool = False  # TCP: the last packet is the client's FIN
    resume: bool = False  # TCP: an established connection continues (no SYN first)
    # endpoint change before the flow: the service's new pods, and dropped pods that drain
    set_backends: tuple[int, ...] | None = None
    terminating: tuple[int, ...] = ()
    idle: int = 0  # seconds of silence first (the agent's CT GC runs then)
    node: int = 0  # the node the flow enters by (0: node1, 1: node2)
    backend_error: str | None = None  # the backend answers with this ICMP error
    size: int | None = None  # each request's L3 length (None: short)
    ip_options: int = 0  # bytes of IPv4 options in each request
    fragments: int = 0  # each datagram leaves as this many fragments
    fragment_order: str | None = None


@attrs.frozen(kw_only=True)
class ScenarioValues:
    """Concrete values for the decoded cluster."""

    nodes: tuple[str, str]
    pods: tuple[str, ...]
    routers: tuple[str, str] | None = None
    clients: tuple[str, ...]
    target_port: int
    node_port: int | None
    port: int | None
    vip: str | None
    other_node_port: int | None
    flows: tuple[FlowDoc, ...]


def document(cfg: Config, v: ScenarioValues, seed: int) -> dict[str, Any]:
    """The scenario YAML/JSON shape (model.scenario.parse) for these values; a pod as the
    client in east-west cells (properties/ewcells.py)."""
    doc = _document(cfg, v, seed)
    if cfg.east_west:
        from properties.ewcells import ew_document  # it imports this module

        return ew_document(cfg, doc)
    return doc


def _document(cfg: Config, v: ScenarioValues, seed: int) -> dict[str, Any]:
    """The document of an external client's cell."""
    on = "node1" if cfg.placement is Placement.LOCAL else "node2"
    c = cfg.cilium()
    svc: dict[str, Any] = {"name": "web", "type": cfg.svc_type.value,
                           "protocol": cfg.proto.name, "port": v.port or 80,
                           "targetPort": v.target_port,
                           "externalTrafficPolicy": cfg.etp.value,
                           "backends": [f"web-{i}" for i in range(len(v.pods))]}
    if v.node_port is not None:
        svc["nodePort"] = v.node_port
    if cfg.affinity:
        svc["sessionAffinity"] = "ClientIP"
    if cfg.svc_type is ServiceType.LOADBALANCER:
        svc["loadBalancerIP"] = v.vip
    if cfg.svc_type is ServiceType.EXTERNALIP:
        svc["externalIPs"] = [v.vip]
    services = [svc]
    if v.other_node_port is not None:
        services.append({"name": "other", "type": "NodePort", "protocol": cfg.proto.name,
                         "port": 81, "targetPort": 81, "nodePort": v.other_node_port,
                         "backends": []})
    flows = []
    for i, f in enumerate(v.flows):
        via = f"node{f.node + 1}"
        to: dict[str, Any] = ({"node": via, "service": "web"}
                              if cfg.svc_type is ServiceType.NODEPORT
                              else {"address": v.vip, "port": v.port, "via": via})
        flow: dict[str, Any] = {"name": f"flow{i + 1}" if len(v.flows) > 1 else "flow",
                                "client": f"client{f.client + 1}" if len(v.clients) > 1
                                else "client", "sourcePort": f.sport, "to": to,
                                "packets": f.packets}
        if f.backend is not None:
            flow["backend"] = f"web-{f.backend}"
        if f.close:
            flow["close"] = True
        if f.resume:
            flow["resume"] = True
        if f.idle:
            flow["idle"] = f.idle
        if f.set_backends is not None:
            flow["setBackends"] = {"web": [f"web-{i}" for i in f.set_backends]}
        if f.terminating:
            flow["terminating"] = [f"web-{i}" for i in f.terminating]
        if f.backend_error is not None:
            flow["backendError"] = f.backend_error
        if f.size is not None:
            flow["size"] = f.size
        if f.ip_options:
            flow["ipOptions"] = f.ip_options
        if f.fragments:
            flow["fragments"] = f.fragments
        if f.fragment_order is not None:
            flow["fragmentOrder"] = f.fragment_order
        flows.append(flow)
    return {
        "cilium": {"version": c.version.value,
                   "loadBalancer": {"mode": c.mode.value, "dsrDispatch": c.dispatch.value,
                                    **({"acceleration": c.acceleration.value}
                                       if cfg.xdp else {}),
                                    **({"algorithm": "maglev"} if c.maglev else {})},
                   "routingMode": c.routing.value, "tunnelProtocol": c.tunnel.value,
                   "seed": seed, "serviceNoBackendResponse": c.no_backend_response.value,
                   **_bpf(c.masquerade, c.fragment_tracking),
                   **({"pmtuDiscovery": {"enabled": True}} if c.pmtu_discovery else {}),
                   **({"enableIPIPTermination": True} if c.ipip_termination else {}),
                   # each replay seed a cluster-wide Maglev seed too: 12 bytes (base64),
                   # the murmur, IPv4 and IPv6 seeds each the replay seed
                   **({"maglev": {"hashSeed": base64.b64encode(
                       (seed & 0xFFFFFFFF).to_bytes(4, "big") * 3).decode()}}
                      if c.maglev else {})},
        "fabric": {"dropsIPOptions": cfg.drops_ip_options,
                   "sourceDestCheck": cfg.source_dest_check},
        "nodes": [{"name": f"node{i + 1}", "ip": v.nodes[i],
                   **({"routerIP": v.routers[i]} if v.routers else {})} for i in range(2)],
        "pods": [{"name": f"web-{i}", "node": on, "ip": ip} for i, ip in enumerate(v.pods)],
        "services": services,
        "clients": [{"name": "client" if len(v.clients) == 1 else f"client{i + 1}", "ip": ip}
                    for i, ip in enumerate(v.clients)],
        "flows": flows,
    }


def _bpf(masquerade: bool, tracking: bool) -> dict[str, Any]:
    """cilium.bpf, only the keys that differ from the defaults."""
    bpf = ({"masquerade": True} if masquerade else {}) | (
        {} if tracking else {"fragmentTracking": False})
    return {"bpf": bpf} if bpf else {}


@attrs.frozen(kw_only=True)
class Replayed:
    """A scenario that showed the violation in the concrete model."""

    doc: dict[str, Any]
    replay: Replay
    finding: Finding


def run_document(cfg: Config, doc: dict[str, Any], faults: frozenset[ModelFault],
                 source: str) -> Replay:
    """A scenario document run through the concrete model, with the faults switched on."""
    sc = parse(doc, source)
    world = attrs.evolve(sc.world, faults=faults)
    state, traces = run_flows(world, sc.flows)
    return Replay(cfg=cfg, world=world, traces=tuple(traces), state=state)


def replay(prop_id: str, cfg: Config, v: ScenarioValues, faults: frozenset[ModelFault],
           seeds: Sequence[int] = tuple(range(1, SEED_TRIES + 1))) -> Replayed | None:
    """Run the decoded scenario (trying seeds) until the concrete checker sees a violation."""
    check = CHECKERS[prop_id]
    for seed in seeds:
        doc = document(cfg, v, seed)
        rp = run_document(cfg, doc, faults, f"<{prop_id} counterexample>")
        finding = check(rp)
        if finding is not None:
            return Replayed(doc=doc, replay=rp, finding=finding)
    return None
