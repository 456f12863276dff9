"""The scenario's flows: section (targets, sizes, fragments, backend changes) as FlowSpecs."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv6Address
from typing import Any

from model.config import CiliumConfig
from model.flows import ENDINGS, FlowSpec
from model.fragments import ORDERS
from model.podflows import egress_flow
from model.reader import _named, _pod_list, _port, _Reader, _shown
from model.topology import Cluster, Node, Service
from model.values import MAX_IPOPTLEN, Endpoint, IcmpKind, IPAddress, Proto, short_size


def _target(r: _Reader, value: Any, path: str, cluster: Cluster,
            services: Mapping[str, Service], nodes: Mapping[str, Node]
            ) -> tuple[Service, Endpoint, str, IPAddress | None, Proto]:
    """A flow's `to`: the service, its frontend, the entry node, the VIP if addressed, and
    the protocol sent (a NodePort may be sent the protocol it does not serve)."""
    to = r.mapping(value, path, {"node", "service", "address", "port", "via", "protocol"})
    if "service" in to:
        r.mapping(to, path, {"node", "service", "protocol"}, {"node", "service"})
        if r.string(to["service"], f"{path}.service") not in services:
            raise r.fail(f"{path}.service", f"unknown service {to['service']!r}")
        if r.string(to["node"], f"{path}.node") not in nodes:
            raise r.fail(f"{path}.node", f"unknown node {to['node']!r}")
        svc = services[to["service"]]
        if svc.node_port is None:
            raise r.fail(f"{path}.service", f"service {svc.name!r} has no nodePort")
        proto = svc.proto
        if "protocol" in to:
            if to["protocol"] not in ("TCP", "UDP"):
                raise r.fail(f"{path}.protocol", f"{to['protocol']!r} is not one of TCP, UDP")
            proto = Proto[to["protocol"]]
            other = next((f.service for f in cluster.frontends if f.proto is proto
                          and f.addr.port == svc.node_port and f.service != svc.name
                          and f.addr.addr == nodes[to["node"]].ip), None)
            if other is not None:
                raise r.fail(f"{path}.protocol", f"{proto.name} to this NodePort is service "
                             f"{other!r}; name that service instead")
        return (svc, Endpoint(addr=nodes[to["node"]].ip, port=svc.node_port), to["node"], None,
                proto)
    r.mapping(to, path, {"address", "port", "via", "protocol"}, {"address", "port", "via"})
    addr = r.addr(to["address"], f"{path}.address")
    frontend = Endpoint(addr=addr, port=_port(r)(to["port"], f"{path}.port"))
    if r.string(to["via"], f"{path}.via") not in nodes:
        raise r.fail(f"{path}.via", f"unknown node {to['via']!r}")
    via: str = to["via"]
    matches = [f for f in cluster.frontends if f.addr == frontend]
    if "protocol" in to:
        if to["protocol"] not in ("TCP", "UDP"):
            raise r.fail(f"{path}.protocol", f"{to['protocol']!r} is not one of TCP, UDP")
        matches = [f for f in matches if f.proto is Proto[to["protocol"]]]
    if not matches:
        raise r.fail(path, f"no service frontend at {frontend}"
                     + (f"/{to['protocol']}" if "protocol" in to else ""))
    if len({f.proto for f in matches}) > 1:
        raise r.fail(f"{path}.protocol", f"{frontend} serves both TCP and UDP; say which")
    owner = cluster.owner_of(addr)
    if owner is not None and owner[0] == "node" and owner[1] != via:
        raise r.fail(f"{path}.via", f"{addr} is {owner[1]}'s address; a packet to it "
                     f"arrives at {owner[1]}, not {via}")
    return services[matches[0].service], frontend, via, addr, matches[0].proto


def _flows(r: _Reader, top: Mapping[str, Any], cluster: Cluster, cfg: CiliumConfig
           ) -> tuple[tuple[FlowSpec, ...], dict[IPAddress, frozenset[str]]]:
    clients = {c.name: c for c in cluster.clients}
    services = {s.name: s for s in cluster.services}
    nodes = {n.name: n for n in cluster.nodes}
    announced: dict[IPAddress, set[str]] = {}
    live: dict[str, tuple[str, ...]] = {}  # each service's backends after earlier changes
    pod_names = {pd.name for pd in cluster.pods}
    draining: dict[str, set[str]] = {}  # each service's terminating pods after changes
    flows: list[FlowSpec] = []
    for p, m in _named(r, top, "flows",
                       {"name", "client", "sourcePort", "to", "packets", "backend", "idle",
                        "close", "setBackends", "terminating", "resume", "lostReplies",
                        "backendError", "size", "ipOptions", "fragments",
                        "fragmentOrder"},
                       {"name", "client", "sourcePort", "to"}):
        if r.string(m["client"], f"{p}.client") in pod_names - set(clients):
            flows.append(egress_flow(r, p, m, cluster, live))  # pod flows (model/podflows.py)
            continue
        if m["client"] not in clients:
            raise r.fail(f"{p}.client", f"unknown client or pod {m['client']!r}")
        client = clients[m["client"]]
        svc, frontend, via, addr, proto = _target(r, m["to"], f"{p}.to", cluster, services,
                                                  nodes)
        if type(frontend.addr) is not type(client.ip):
            raise r.fail(f"{p}.to", "mixed address families between client and frontend")
        if addr is not None and cluster.owner_of(addr) is None:
            announced.setdefault(addr, set()).add(via)
        set_backends = []
        changes = r.mapping(m.get("setBackends", {}), f"{p}.setBackends", set(services))
        dropped: set[str] = set()
        for sname, pods in changes.items():
            new = _pod_list(r, pods, f"{p}.setBackends.{sname}", pod_names)
            before = set(live.get(sname, services[sname].backends)) | draining.get(sname, set())
            dropped |= before - set(new)
            set_backends.append((sname, new))
        terminating = _pod_list(r, m.get("terminating", []), f"{p}.terminating", pod_names)
        for i, pod in enumerate(terminating):
            if pod not in dropped:
                raise r.fail(f"{p}.terminating[{i}]", f"{pod!r} is not dropped from a service "
                             "by this flow's setBackends, so it cannot be terminating")
        for sname, new in set_backends:
            before = set(live.get(sname, services[sname].backends)) | draining.get(sname, set())
            draining[sname] = {x for x in before - set(new) if x in terminating}
        backend = r.opt(m, "backend", p, r.string, None)
        live.update(dict(set_backends))
        if backend is not None and backend not in live.get(svc.name, svc.backends):
            raise r.fail(f"{p}.backend", f"{backend!r} is not a backend of {svc.name!r}")
        if backend is not None and proto is not svc.proto:
            raise r.fail(f"{p}.backend", f"the flow sends {proto.name} to the {svc.proto.name} "
                         f"NodePort of {svc.name!r}: no backend serves it")
        ending = m.get("close", False)
        if ending is not True and ending is not False and ending not in ENDINGS:
            raise r.fail(f"{p}.close", f"{_shown(ending)} is not true, false or one of "
                         f"{', '.join(ENDINGS)}")
        close = ending is not False
        resume = r.opt(m, "resume", p, r.boolean, False)
        for key, on in (("close", close), ("resume", resume)):
            if on and proto is not Proto.TCP:
                raise r.fail(f"{p}.{key}", f"only for TCP flows; this flow sends "
                             f"{proto.name} (UDP has no connection to close or resume)")
        size, opts = _size(r, p, m, proto, isinstance(client.ip, IPv6Address),
                           nodes[via].mtu or cfg.mtu)
        flows.append(FlowSpec(
            name=m["name"], client=client.name, service=svc.name, via=via, backend=backend,
            source=Endpoint(addr=client.ip, port=_port(r)(m["sourcePort"], f"{p}.sourcePort")),
            frontend=frontend, proto=proto,
            packets=r.opt(m, "packets", p, lambda v, q: r.integer(v, q, 1, 1000), 3),
            idle=r.opt(m, "idle", p, lambda v, q: r.integer(v, q, 0, 10**9), 0),
            close=close, set_backends=tuple(set_backends), terminating=terminating,
            resume=resume, ending=ending if isinstance(ending, str) else "fin",
            lost_replies=r.opt(m, "lostReplies", p, r.boolean, False),
            backend_error=r.opt(m, "backendError", p,
                                lambda v, q: r.enum(v, q, IcmpKind), None),
            size=size, ip_options=opts, **_fragmented(r, m, p, len(flows))))
    return tuple(flows), {a: frozenset(n) for a, n in announced.items()}


def _size(r: _Reader, p: str, m: Mapping[str, Any], proto: Proto, v6: bool, mtu: int
          ) -> tuple[int | None, int]:
    """A flow's packet size (L3 length, at most the entry node's MTU: the client shares its
    link) and IPv4 options (NOPs, whole 32-bit words, at most 40 bytes)."""
    opts = r.opt(m, "ipOptions", p, lambda v, q: r.integer(v, q, 0, MAX_IPOPTLEN), 0)
    if opts and v6:
        raise r.fail(f"{p}.ipOptions", "IPv4 only (an IPv6 header has no options)")
    if opts % 4:
        raise r.fail(f"{p}.ipOptions", f"{opts} is not a multiple of 4 (the IHL counts words)")
    least = short_size(v6, proto, opts)
    size = r.opt(m, "size", p, lambda v, q: r.integer(v, q, least, mtu), None)
    return (None if size == least else size), opts


def _fragmented(r: _Reader, m: Mapping[str, Any], p: str, index: int) -> dict[str, Any]:
    """fragments (0 or 2..64) and fragmentOrder (only with fragments); the flow's IP ids."""
    count = r.opt(m, "fragments", p, lambda v, q: r.integer(v, q, 0, 64), 0)
    if count == 1:
        raise r.fail(f"{p}.fragments", "1 fragment is an unfragmented datagram: use 0 or "
                     "at least 2")
    order = r.opt(m, "fragmentOrder", p, r.string, "in-order")
    if order not in ORDERS:
        raise r.fail(f"{p}.fragmentOrder", f"{_shown(order)} is not one of {', '.join(ORDERS)}")
    if count and "size" in m:
        raise r.fail(f"{p}.size", "not with fragments (a fragmented datagram is the model's "
                     "short one, split; size is an unfragmented request's length)")
    if "fragmentOrder" in m and not count:
        raise r.fail(f"{p}.fragmentOrder", "needs fragments (2 or more)")
    return {"fragments": count, "fragment_order": order, "fragment_id": 256 + 1000 * index}
