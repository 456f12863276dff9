"""Scenario files (YAML or JSON, Helm-style keys) into a World and flows, with strict checks."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Any

import attrs

import safeyaml
from model.config import (
    MTU_DEFAULT,
    Acceleration,
    CiliumConfig,
    CiliumVersion,
    DsrDispatch,
    LBAlgorithm,
    LBMode,
    NoBackendResponse,
    RoutingMode,
    TunnelProtocol,
    validate,
)
from model.errors import ConfigRefused, InputError, ScenarioError
from model.flows import FlowSpec
from model.maglev import DEFAULT_HASH_SEED, DEFAULT_TABLE_SIZE, TABLE_SIZES, seeds
from model.network import World
from model.reader import _named, _pod_list, _port, _Reader, _shown
from model.scenflows import _flows
from model.topology import (
    AFFINITY_TIMEOUT_DEFAULT,
    AFFINITY_TIMEOUT_MAX,
    Client,
    Cluster,
    Fabric,
    Node,
    Pod,
    Service,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from model.topology import derive as derive_cluster
from model.values import IPAddress, Proto

MTU_MIN, MTU_MAX = 1280, 65535  # IPv6's minimum link MTU; an IPv4 total length's limit


@attrs.frozen(kw_only=True)
class Scenario:
    """A loaded scenario: the static world and the flows to drive through it."""

    source: str
    world: World
    flows: tuple[FlowSpec, ...]


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; every problem is a one-line ScenarioError."""
    p = Path(path)
    try:
        doc = safeyaml.load_path(p)
    except safeyaml.DocumentError as exc:
        where = exc.path if not exc.line else (
            f"{exc.path} (line {exc.line})" if exc.path else f"line {exc.line}")
        raise ScenarioError(str(p), where, exc.message) from None
    return parse(doc, str(p))


def _cilium(r: _Reader, doc: Mapping[str, Any]) -> CiliumConfig:
    c = r.mapping(doc.get("cilium", {}), "cilium",
                  {"version", "loadBalancer", "routingMode", "tunnelProtocol", "nodePort",
                   "seed", "serviceNoBackendResponse", "enableNoServiceEndpointsRoutable",
                   "bpf", "mtu", "pmtuDiscovery", "maglev", "socketLB",
                   "enableIPIPTermination"})
    sock = r.mapping(c.get("socketLB", {}), "cilium.socketLB", {"enabled"})
    pmtu = r.mapping(c.get("pmtuDiscovery", {}), "cilium.pmtuDiscovery", {"enabled"})
    lb = r.mapping(c.get("loadBalancer", {}), "cilium.loadBalancer",
                   {"mode", "dsrDispatch", "acceleration", "algorithm"})
    np = r.mapping(c.get("nodePort", {}), "cilium.nodePort", {"range"})
    bpf = r.mapping(c.get("bpf", {}), "cilium.bpf", {"ctTcpMax", "ctAnyMax", "natMax",
                                                             "masquerade", "fragmentTracking"})
    lo, hi = 30000, 32767
    if "range" in np:
        text = str(np["range"]).replace(",", "-")
        parts = text.split("-")
        if len(parts) != 2 or not all(x.strip().isascii() and x.strip().isdigit()
                                      for x in parts):
            raise r.fail("cilium.nodePort.range", f"{np['range']!r} is not 'MIN-MAX'")
        lo, hi = (int(x) for x in parts)
        if not 1 <= lo <= hi <= 65534:
            raise r.fail("cilium.nodePort.range", f"{np['range']!r} must satisfy "
                         "1 <= MIN <= MAX <= 65534")
    version = c.get("version", "1.18")
    if isinstance(version, float):
        raise r.fail("cilium.version", f"{version!r} is a number, so YAML dropped its digits; "
                     'quote it ("1.20")')
    routable = r.opt(c, "enableNoServiceEndpointsRoutable", "cilium",
                     lambda v, p: r.boolean(v, p), True)
    ver = r.enum(str(version), "cilium.version", CiliumVersion)
    if not routable and ver is not CiliumVersion.V1_20:
        raise r.fail("cilium.enableNoServiceEndpointsRoutable", "false needs version 1.20 "
                     f"(the {ver.value} datapath has no such switch)")
    ipip_term = r.opt(c, "enableIPIPTermination", "cilium", lambda v, p: r.boolean(v, p), False)
    if ipip_term and ver is not CiliumVersion.V1_20:
        raise r.fail("cilium.enableIPIPTermination", "true needs version 1.20 (IPIP "
                     f"termination in BPF is not in the {ver.value} datapath)")
    return CiliumConfig(
        version=ver,
        mode=r.opt(lb, "mode", "cilium.loadBalancer", lambda v, p: r.enum(v, p, LBMode),
                   LBMode.SNAT),
        dispatch=r.opt(lb, "dsrDispatch", "cilium.loadBalancer",
                       lambda v, p: r.enum(v, p, DsrDispatch), DsrDispatch.OPT),
        routing=r.opt(c, "routingMode", "cilium", lambda v, p: r.enum(v, p, RoutingMode),
                      RoutingMode.NATIVE),
        tunnel=r.opt(c, "tunnelProtocol", "cilium", lambda v, p: r.enum(v, p, TunnelProtocol),
                     TunnelProtocol.VXLAN),
        no_backend_response=r.opt(c, "serviceNoBackendResponse", "cilium",
                                  lambda v, p: r.enum(v, p, NoBackendResponse),
                                  NoBackendResponse.REJECT),
        no_service_endpoints_routable=routable,
        ipip_termination=ipip_term,
        nodeport_min=lo, nodeport_max=hi,
        seed=r.opt(c, "seed", "cilium", lambda v, p: r.integer(v, p, 0, 2**63), 0),
        ct_max=r.opt(bpf, "ctTcpMax", "cilium.bpf", lambda v, p: r.integer(v, p, 1, 2**26),
                     524288),
        ct_any_max=r.opt(bpf, "ctAnyMax", "cilium.bpf",
                         lambda v, p: r.integer(v, p, 1, 2**26), 262144),
        masquerade=r.opt(bpf, "masquerade", "cilium.bpf", lambda v, p: r.boolean(v, p), False),
        socket_lb=r.opt(sock, "enabled", "cilium.socketLB", lambda v, p: r.boolean(v, p),
                        True),
        pmtu_discovery=r.opt(pmtu, "enabled", "cilium.pmtuDiscovery",
                             lambda v, p: r.boolean(v, p), False),
        mtu=r.opt(c, "mtu", "cilium", lambda v, p: r.integer(v, p, MTU_MIN, MTU_MAX),
                  MTU_DEFAULT),
        fragment_tracking=r.opt(bpf, "fragmentTracking", "cilium.bpf",
                                lambda v, p: r.boolean(v, p), True),
        acceleration=r.opt(lb, "acceleration", "cilium.loadBalancer",
                           lambda v, p: r.enum(v, p, Acceleration), Acceleration.DISABLED),
        nat_max=r.opt(bpf, "natMax", "cilium.bpf", lambda v, p: r.integer(v, p, 2, 2**26),
                      524288),
        algorithm=r.opt(lb, "algorithm", "cilium.loadBalancer",
                        lambda v, p: r.enum(v, p, LBAlgorithm), LBAlgorithm.RANDOM),
        **_maglev(r, c))


def _maglev(r: _Reader, c: Mapping[str, Any]) -> dict[str, Any]:
    """maglev.tableSize (one of the agent's primes) and maglev.hashSeed (base64 of 12 bytes),
    refused as pkg/maglev's ToConfig refuses them."""
    mg = r.mapping(c.get("maglev", {}), "cilium.maglev", {"tableSize", "hashSeed"})
    size = r.opt(mg, "tableSize", "cilium.maglev", lambda v, p: r.integer(v, p, 1, 2**31),
                 DEFAULT_TABLE_SIZE)
    if size not in TABLE_SIZES:
        raise r.fail("cilium.maglev.tableSize", f"{size} is not a supported size (one of "
                     f"{', '.join(map(str, TABLE_SIZES))})")
    seed = mg.get("hashSeed", DEFAULT_HASH_SEED)
    if not isinstance(seed, str):
        raise r.fail("cilium.maglev.hashSeed", f"{_shown(seed)} is not a base64 string")
    try:
        seeds(seed)
    except InputError as e:
        raise r.fail("cilium.maglev.hashSeed", str(e)) from None
    return {"maglev_table_size": size, "maglev_hash_seed": seed}


def _service(r: _Reader, path: str, m: Mapping[str, Any], pods: Mapping[str, Pod],
             cfg: CiliumConfig) -> Service:
    stype = r.enum(m["type"], f"{path}.type", ServiceType)
    proto_name = m.get("protocol", "TCP")
    if proto_name not in ("TCP", "UDP"):
        raise r.fail(f"{path}.protocol", f"{proto_name!r} is not one of TCP, UDP")
    proto = Proto[proto_name]
    node_port = r.opt(m, "nodePort", path, _port(r), None)
    if node_port is not None and not cfg.nodeport_min <= node_port <= cfg.nodeport_max:
        raise r.fail(f"{path}.nodePort", f"{node_port} is outside nodePort.range "
                     f"{cfg.nodeport_min}-{cfg.nodeport_max}")
    if stype in (ServiceType.NODEPORT, ServiceType.LOADBALANCER) and node_port is None:
        raise r.fail(f"{path}.nodePort", f"required for type {stype.value}")
    lb_ip = r.opt(m, "loadBalancerIP", path, r.host, None)
    if stype is ServiceType.LOADBALANCER and lb_ip is None:
        raise r.fail(f"{path}.loadBalancerIP", "required for type LoadBalancer")
    if stype is not ServiceType.LOADBALANCER and lb_ip is not None:
        raise r.fail(f"{path}.loadBalancerIP", "only for type LoadBalancer")
    ext = tuple(r.host(a, f"{path}.externalIPs[{i}]")
                for i, a in enumerate(r.seq(m.get("externalIPs", []), f"{path}.externalIPs")))
    for i, a in enumerate(ext):
        if a in ext[:i]:
            raise r.fail(f"{path}.externalIPs[{i}]", f"{a} is listed twice")
    if stype is ServiceType.EXTERNALIP and not ext:
        raise r.fail(f"{path}.externalIPs", "type ExternalIP needs at least one address")
    _cluster_ip_type(r, path, m, stype)
    backends = _pod_list(r, m.get("backends", []), f"{path}.backends", set(pods))
    ranges = []
    for i, text in enumerate(r.seq(m.get("loadBalancerSourceRanges", []),
                                   f"{path}.loadBalancerSourceRanges")):
        if not isinstance(text, str):
            raise r.fail(f"{path}.loadBalancerSourceRanges[{i}]",
                         f"expected a CIDR as a string, got {_shown(text)}")
        try:
            if not text.isascii():
                raise ValueError(text)
            ranges.append(ip_network(text.strip(), strict=False))
        except ValueError:
            raise r.fail(f"{path}.loadBalancerSourceRanges[{i}]",
                         f"{text!r} is not a CIDR") from None
    return Service(
        name=m["name"], type=stype, proto=proto, port=_port(r)(m["port"], f"{path}.port"),
        target_port=_port(r)(m["targetPort"], f"{path}.targetPort"), node_port=node_port,
        load_balancer_ip=lb_ip, external_ips=ext,
        cluster_ip=r.opt(m, "clusterIP", path, r.host, None),
        etp=r.opt(m, "externalTrafficPolicy", path,
                  lambda v, p: r.enum(v, p, TrafficPolicy), TrafficPolicy.CLUSTER),
        backends=backends, source_ranges=tuple(ranges), **_affinity(r, path, m))


def _cluster_ip_type(r: _Reader, path: str, m: Mapping[str, Any], stype: ServiceType) -> None:
    """type ClusterIP: a clusterIP and nothing reachable from outside."""
    if stype is not ServiceType.CLUSTERIP:
        return
    if "clusterIP" not in m:
        raise r.fail(f"{path}.clusterIP", "required for type ClusterIP")
    for key in ("nodePort", "externalIPs", "externalTrafficPolicy"):
        if key in m:
            raise r.fail(f"{path}.{key}", "not for type ClusterIP")


def _affinity(r: _Reader, path: str, m: Mapping[str, Any]) -> dict[str, Any]:
    """sessionAffinity and its timeout, Kubernetes' names, defaults and range."""
    aff = r.opt(m, "sessionAffinity", path, lambda v, p: r.enum(v, p, SessionAffinity),
                SessionAffinity.NONE)
    if "sessionAffinityTimeoutSeconds" in m and aff is not SessionAffinity.CLIENT_IP:
        raise r.fail(f"{path}.sessionAffinityTimeoutSeconds",
                     "only with sessionAffinity: ClientIP")
    timeout = r.opt(m, "sessionAffinityTimeoutSeconds", path,
                    lambda v, p: r.integer(v, p, 1, AFFINITY_TIMEOUT_MAX),
                    AFFINITY_TIMEOUT_DEFAULT)
    return {"affinity": aff, "affinity_timeout": timeout}


def parse(doc: Any, source: str = "<scenario>") -> Scenario:
    """Check a parsed document and build the World and flows it describes."""
    r = _Reader(source)
    top = r.mapping(doc, "", {"cilium", "fabric", "nodes", "pods", "services", "clients",
                              "flows"}, {"nodes", "services", "flows"})
    cfg = _cilium(r, top)
    fab = r.mapping(top.get("fabric", {}), "fabric", {"dropsIPOptions", "sourceDestCheck"})
    fabric = Fabric.NONE
    if r.opt(fab, "dropsIPOptions", "fabric", r.boolean, False):
        fabric |= Fabric.DROPS_IP_OPTIONS
    if r.opt(fab, "sourceDestCheck", "fabric", r.boolean, False):
        fabric |= Fabric.SOURCE_DEST_CHECK
    addrs: dict[IPAddress, str] = {}

    def own(a: IPAddress, path: str) -> IPAddress:
        if a in addrs:
            raise r.fail(path, f"address {a} is already used by {addrs[a]}")
        addrs[a] = path
        return a

    nodes = tuple(
        Node(name=m["name"], ip=own(r.host(m.get("ip"), f"{p}.ip"), f"{p}.ip"),
             router_ip=own(r.host(m["routerIP"], f"{p}.routerIP"), f"{p}.routerIP")
             if "routerIP" in m else None,
             masq_ip=own(r.host(m["masqueradeIP"], f"{p}.masqueradeIP"), f"{p}.masqueradeIP")
             if "masqueradeIP" in m else None,
             mtu=r.opt(m, "mtu", p, lambda v, q: r.integer(v, q, MTU_MIN, MTU_MAX), None))
        for p, m in _named(r, top, "nodes", {"name", "ip", "routerIP", "masqueradeIP", "mtu"},
                           {"name", "ip"}))
    if not nodes:
        raise r.fail("nodes", "at least one node is required")
    node_names = {n.name for n in nodes}
    pods = []
    for p, m in _named(r, top, "pods", {"name", "node", "ip"}, {"name", "node", "ip"}):
        if r.string(m["node"], f"{p}.node") not in node_names:
            raise r.fail(f"{p}.node", f"unknown node {m['node']!r}")
        pods.append(Pod(name=m["name"], node=m["node"], ip=own(r.host(m["ip"], f"{p}.ip"),
                                                                f"{p}.ip")))
    pod_map = {pd.name: pd for pd in pods}
    clients = tuple(Client(name=m["name"], ip=own(r.host(m["ip"], f"{p}.ip"), f"{p}.ip"))
                    for p, m in _named(r, top, "clients", {"name", "ip"}, {"name", "ip"}))
    services = tuple(_service(r, p, m, pod_map, cfg) for p, m in _named(
        r, top, "services",
        {"name", "type", "protocol", "port", "targetPort", "nodePort", "loadBalancerIP",
         "externalIPs", "externalTrafficPolicy", "backends", "clusterIP",
         "loadBalancerSourceRanges", "sessionAffinity", "sessionAffinityTimeoutSeconds"},
        {"name", "type", "port", "targetPort"}))
    family = type(nodes[0].ip)
    hosts: list[tuple[str, list[IPAddress]]] = [
        ("nodes", [n.ip for n in nodes]), ("pods", [pd.ip for pd in pods]),
        ("clients", [c.ip for c in clients])]
    for what, ips in hosts:
        for i, ip in enumerate(ips):
            if type(ip) is not family:
                raise r.fail(f"{what}[{i}].ip", f"mixed address families: {ip} is not "
                             f"{'IPv4' if family is IPv4Address else 'IPv6'} like nodes[0]")
    _check_services(r, services, family, addrs, cfg)
    try:
        validate(cfg, ipv6_underlay=family is IPv6Address)
    except ConfigRefused as exc:
        raise ConfigRefused(f"{source}: cilium: configuration refused by the agent: {exc}"
                            ) from None
    nodes = _default_router_ips(nodes, pods, addrs)
    cluster = derive_cluster(Cluster(nodes=nodes, pods=tuple(pods), clients=clients,
                                     services=services, fabric=fabric),
                             range_all_ext=cfg.version is CiliumVersion.V1_20)
    flows, announced = _flows(r, top, cluster, cfg)
    return Scenario(source=source, flows=flows,
                    world=World(cluster=cluster, cfg=cfg, announced=announced))


def _check_services(r: _Reader, services: tuple[Service, ...], family: type,
                    hosts: Mapping[IPAddress, str], cfg: CiliumConfig) -> None:
    """One address family; VIPs that are nobody's host address; no frontend owned twice."""
    fam = "IPv4" if family is IPv4Address else "IPv6"
    owner: dict[tuple[IPAddress | str, int, Proto], tuple[str, str]] = {}
    for i, s in enumerate(services):
        path = f"services[{i}]"
        vips: list[tuple[str, IPAddress | None]] = [
            (f"{path}.clusterIP", s.cluster_ip), (f"{path}.loadBalancerIP", s.load_balancer_ip),
            *((f"{path}.externalIPs[{k}]", a) for k, a in enumerate(s.external_ips))]
        for where, a in vips:
            if a is None:
                continue
            if type(a) is not family:
                raise r.fail(where, f"mixed address families: {a} is not {fam} like nodes[0]")
            if a in hosts:
                node_ip = hosts[a].startswith("nodes[") and hosts[a].endswith("].ip")
                if not node_ip or where.endswith(".clusterIP"):
                    raise r.fail(where, f"address {a} is already used by {hosts[a]} (a VIP "
                                 "that is a pod's, client's or router's address, or a "
                                 "ClusterIP on a node's, is outside this model)")
                if cfg.nodeport_min <= s.port <= cfg.nodeport_max:
                    # Such a frontend would shadow the node's own NodePorts; Cilium's
                    # load-balancer writer is described as dropping it with a warning.
                    raise r.fail(where, f"{a} is {hosts[a]} and port {s.port} is in the "
                                 "NodePort range, where it would shadow the node's NodePort "
                                 "frontends (Cilium drops such a frontend)")
        for k, net in enumerate(s.source_ranges):
            if net.version != (4 if family is IPv4Address else 6):
                raise r.fail(f"{path}.loadBalancerSourceRanges[{k}]",
                             f"{net} is not {fam}; this cluster is single-stack {fam}")
        # Cilium's pkg/loadbalancer/writer: UpsertServiceAndFrontends refuses a service
        # whose frontend (address, port, protocol) another service owns (ErrFrontendConflict).
        fronts: list[tuple[str, IPAddress | str, int]] = []
        if s.node_port is not None:
            fronts.append((f"{path}.nodePort", "every node's IP", s.node_port))
        fronts += [(w, v, s.port) for w, v in vips if v is not None]
        for where, fa, port in fronts:
            key = (fa, port, s.proto)
            if key in owner and owner[key][0] != s.name:
                shown = f"{fa}:{port}" if isinstance(fa, IPv4Address) else (
                    f"[{fa}]:{port}" if not isinstance(fa, str) else f"{fa}, port {port}")
                raise r.fail(where, f"frontend already owned by another service: {shown}/"
                             f"{s.proto.name} is owned by {owner[key][0]} ({owner[key][1]}); "
                             "Cilium's agent refuses this service")
            owner[key] = (s.name, where)


def _default_router_ips(nodes: tuple[Node, ...], pods: list[Pod],
                        taken: Mapping[IPAddress, str]) -> tuple[Node, ...]:
    """cilium_host takes an address from the node's pod CIDR: the first of its pods' /24 (/64)."""
    out = []
    for n in nodes:
        mine = [p.ip for p in pods if p.node == n.name]
        if n.router_ip is None and mine:
            prefix = 24 if isinstance(mine[0], IPv4Address) else 64
            candidate = ip_network(f"{mine[0]}/{prefix}", strict=False)[1]
            if candidate not in taken:
                n = attrs.evolve(n, router_ip=candidate)
        out.append(n)
    return tuple(out)
