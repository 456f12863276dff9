"""Scenario flows whose client is a pod: egress to an outside host, or a call to a service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from model.flows import ENDINGS, FlowSpec
from model.topology import Cluster
from model.values import Endpoint, Proto

if TYPE_CHECKING:
    from model.reader import _Reader

EGRESS_KEYS = {"name", "client", "sourcePort", "to", "packets", "idle", "close", "resume",
               "lostReplies"}
SERVICE_KEYS = EGRESS_KEYS | {"backend"}


def egress_flow(r: _Reader, p: str, m: Mapping[str, Any], cluster: Cluster,
                live: Mapping[str, tuple[str, ...]] | None = None) -> FlowSpec:
    """`client: <pod>` with `to: {address, port[, protocol]}`: the pod opens a connection to
    an outside host declared under `clients:`, which answers it. Pods as clients of
    services (`to: {service, node}`) are issue 11's form and refused here for now."""
    pod = cluster.pod(m["client"])
    if isinstance(m.get("to"), Mapping) and "service" in m["to"]:
        return service_flow(r, p, m, cluster, live or {})
    for key in m:
        if key not in EGRESS_KEYS:
            raise r.fail(f"{p}.{key}", "only for flows from a client to a service (this "
                         f"flow's client {pod.name!r} is a pod)")
    to = r.mapping(m["to"], f"{p}.to", {"address", "port", "protocol", "node", "via"})
    for key in ("node", "via"):
        if key in to:
            raise r.fail(f"{p}.to.{key}", "a pod's flow goes to an outside host by address "
                         "and port, or to a service (to: {service[, node]})")
    r.mapping(to, f"{p}.to", {"address", "port", "protocol"}, {"address", "port"})
    addr = r.host(to["address"], f"{p}.to.address")
    owner = cluster.owner_of(addr)
    if owner is None or owner[0] != "client":
        what = f"{owner[0]} {owner[1]!r}'s address" if owner else "no host's address"
        raise r.fail(f"{p}.to.address", f"{addr} is {what}; a pod's flow goes to a host "
                     "outside the cluster declared under clients (cluster destinations are "
                     "never masqueraded: native-routing CIDR, remote nodes)")
    if type(addr) is not type(pod.ip):
        raise r.fail(f"{p}.to.address", "mixed address families between pod and destination")
    proto_name = to.get("protocol", "TCP")
    if proto_name not in ("TCP", "UDP"):
        raise r.fail(f"{p}.to.protocol", f"{proto_name!r} is not one of TCP, UDP")
    proto = Proto[proto_name]
    port = r.integer(to["port"], f"{p}.to.port", 1, 65535)
    return FlowSpec(
        name=m["name"], client=pod.name, service="", via=None, egress=True, proto=proto,
        source=Endpoint(addr=pod.ip, port=r.integer(m["sourcePort"], f"{p}.sourcePort", 1,
                                                    65535)),
        frontend=Endpoint(addr=addr, port=port), **_ending(r, p, m, proto))


def _ending(r: _Reader, p: str, m: Mapping[str, Any], proto: Proto) -> dict[str, Any]:
    """close / resume (TCP only) and lostReplies, as every flow spells them."""
    ending = m.get("close", False)
    if ending is not True and ending is not False and ending not in ENDINGS:
        raise r.fail(f"{p}.close", f"{ending!r} is not true, false or one of "
                     f"{', '.join(ENDINGS)}")
    resume = r.opt(m, "resume", p, r.boolean, False)
    for key, on in (("close", ending is not False), ("resume", resume)):
        if on and proto is not Proto.TCP:
            raise r.fail(f"{p}.{key}", f"only for TCP flows; this flow sends {proto.name}")
    return {"close": ending is not False, "resume": resume,
            "ending": ending if isinstance(ending, str) else "fin",
            "lost_replies": r.opt(m, "lostReplies", p, r.boolean, False),
            "packets": r.opt(m, "packets", p, lambda v, q: r.integer(v, q, 1, 1000), 3),
            "idle": r.opt(m, "idle", p, lambda v, q: r.integer(v, q, 0, 10**9), 0)}


def service_flow(r: _Reader, p: str, m: Mapping[str, Any], cluster: Cluster,
                 live: Mapping[str, tuple[str, ...]]) -> FlowSpec:
    """`client: <pod>` with `to: {service: S}` (S's ClusterIP) or `to: {node: N, service: S}`
    (S's NodePort on N, the pod's own node or another): east-west (model/eastwest.py).
    `live`: each service's backends after earlier flows' endpoint changes."""
    pod = cluster.pod(m["client"])
    for key in m:
        if key not in SERVICE_KEYS:
            raise r.fail(f"{p}.{key}", "not for a pod's flow to a service (allowed: "
                         f"{', '.join(sorted(SERVICE_KEYS))})")
    to = r.mapping(m["to"], f"{p}.to", {"service", "node", "protocol"}, {"service"})
    services = {s.name: s for s in cluster.services}
    name = r.string(to["service"], f"{p}.to.service")
    if name not in services:
        raise r.fail(f"{p}.to.service", f"unknown service {name!r}")
    svc = services[name]
    via = None
    if "node" in to:
        nodes = {n.name: n for n in cluster.nodes}
        via = r.string(to["node"], f"{p}.to.node")
        if via not in nodes:
            raise r.fail(f"{p}.to.node", f"unknown node {via!r}")
        if svc.node_port is None:
            raise r.fail(f"{p}.to.service", f"service {name!r} has no nodePort")
        frontend = Endpoint(addr=nodes[via].ip, port=svc.node_port)
    else:
        if svc.cluster_ip is None:
            raise r.fail(f"{p}.to.service", f"service {name!r} has no clusterIP (name a "
                         "node to call its NodePort)")
        frontend = Endpoint(addr=svc.cluster_ip, port=svc.port)
    if "protocol" in to and to["protocol"] != svc.proto.name:
        raise r.fail(f"{p}.to.protocol", f"{to['protocol']!r}: service {name!r} serves "
                     f"{svc.proto.name}")
    if type(frontend.addr) is not type(pod.ip):
        raise r.fail(f"{p}.to", "mixed address families between pod and frontend")
    backend = r.opt(m, "backend", p, r.string, None)
    if backend is not None and backend not in live.get(name, svc.backends):
        raise r.fail(f"{p}.backend", f"{backend!r} is not a backend of {name!r}")
    return FlowSpec(
        name=m["name"], client=pod.name, service=name, via=via, east_west=True,
        proto=svc.proto, backend=backend, frontend=frontend,
        source=Endpoint(addr=pod.ip, port=r.integer(m["sourcePort"], f"{p}.sourcePort", 1,
                                                    65535)),
        **_ending(r, p, m, svc.proto))
