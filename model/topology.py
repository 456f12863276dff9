"""The cluster: nodes, pods, clients, services and the frontends/backends the agent derives."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network

import attrs

from model.values import Endpoint, IPAddress, Proto


class ServiceType(enum.Enum):
    """Kubernetes Service type (ClusterIP: reached by pods only, model/eastwest.py)."""

    CLUSTERIP = "ClusterIP"
    NODEPORT = "NodePort"
    LOADBALANCER = "LoadBalancer"
    EXTERNALIP = "ExternalIP"


class TrafficPolicy(enum.Enum):
    """externalTrafficPolicy; Local sets SVC_FLAG_EXT_LOCAL_SCOPE."""

    CLUSTER = "Cluster"
    LOCAL = "Local"


class SessionAffinity(enum.Enum):
    """spec.sessionAffinity; ClientIP sets SVC_FLAG_AFFINITY on every frontend."""

    NONE = "None"
    CLIENT_IP = "ClientIP"


AFFINITY_TIMEOUT_DEFAULT = 10800  # Kubernetes' DefaultClientIPServiceAffinitySeconds
AFFINITY_TIMEOUT_MAX = 86400  # Kubernetes' MaxClientIPServiceAffinitySeconds


class FrontendKind(enum.Enum):
    """Which address a frontend listens on (lb4_key.address)."""

    NODEPORT = "nodeport"
    LOADBALANCER = "loadbalancer"
    EXTERNALIP = "externalip"
    CLUSTERIP = "clusterip"


class Fabric(enum.Flag):
    """Environment facts of the network between nodes that DSR depends on."""

    NONE = 0
    DROPS_IP_OPTIONS = enum.auto()
    SOURCE_DEST_CHECK = enum.auto()


@attrs.frozen(kw_only=True)
class Node:
    """A Cilium node; ip is its direct-routing device address (IPV4_DIRECT_ROUTING)."""

    name: str
    ip: IPAddress
    router_ip: IPAddress | None = None  # cilium_host (IPV4_GATEWAY), tunnel-mode SNAT source
    masq_ip: IPAddress | None = None  # IPV4_MASQUERADE when not `ip` (bpf.masquerade)
    mtu: int | None = None  # its device MTU (v1.20 CONFIG(device_mtu), v1.18 THIS_MTU)


@attrs.frozen(kw_only=True)
class Pod:
    """A backend pod: a local endpoint (cilium_lxc) on one node."""

    name: str
    node: str
    ip: IPAddress


@attrs.frozen(kw_only=True)
class Client:
    """An external client outside the cluster (WORLD identity)."""

    name: str
    ip: IPAddress


@attrs.frozen(kw_only=True)
class Service:
    """A Kubernetes Service as the agent sees it before it writes the LB maps."""

    name: str
    type: ServiceType
    proto: Proto
    port: int
    target_port: int
    node_port: int | None
    load_balancer_ip: IPAddress | None = None
    external_ips: tuple[IPAddress, ...] = ()
    cluster_ip: IPAddress | None = None
    etp: TrafficPolicy = TrafficPolicy.CLUSTER
    backends: tuple[str, ...] = ()
    source_ranges: tuple[IPv4Network | IPv6Network, ...] = ()
    affinity: SessionAffinity = SessionAffinity.NONE
    affinity_timeout: int = AFFINITY_TIMEOUT_DEFAULT  # seconds


@attrs.frozen(kw_only=True)
class Backend:
    """One entry of cilium_lb4_backends_v3: backend_id -> {address, port, proto}."""

    backend_id: int
    addr: Endpoint
    pod: str
    node: str
    proto: Proto


@attrs.frozen(kw_only=True)
class Frontend:
    """One cilium_lb4_services_v2 master entry (its ID is the rev_nat_index)."""

    rev_nat_index: int
    service: str
    kind: FrontendKind
    addr: Endpoint
    proto: Proto
    node: str | None  # the node whose own IP this is (NodePort); None for VIPs
    backend_ids: tuple[int, ...]  # slots 1..count, all backends of the service
    etp_local: bool
    routable: bool  # SVC_FLAG_ROUTABLE: every non-ClusterIP frontend
    source_ranges: tuple[IPv4Network | IPv6Network, ...]
    affinity_timeout: int = 0  # SVC_FLAG_AFFINITY with this timeout (s); 0: no affinity

    def backends_for(self, node: str, backends: Mapping[int, Backend]) -> tuple[int, ...]:
        """Backend slots this node's map holds: only node-local ones under eTP=Local."""
        if not self.etp_local:
            return self.backend_ids
        return tuple(b for b in self.backend_ids if backends[b].node == node)


@attrs.frozen(kw_only=True)
class Cluster:
    """The static topology plus the service state the agent programs into every node."""

    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    clients: tuple[Client, ...]
    services: tuple[Service, ...]
    fabric: Fabric = Fabric.NONE
    backends: Mapping[int, Backend] = attrs.field(factory=dict)
    frontends: tuple[Frontend, ...] = ()

    def node(self, name: str) -> Node:
        """Node by name."""
        return next(n for n in self.nodes if n.name == name)

    def pod(self, name: str) -> Pod:
        """Pod by name."""
        return next(p for p in self.pods if p.name == name)

    def owner_of(self, addr: IPAddress) -> tuple[str, str] | None:
        """Which host holds this address: ('client'|'node'|'pod', name)."""
        for n in self.nodes:
            if addr in (n.ip, n.router_ip, n.masq_ip):
                return ("node", n.name)
        for p in self.pods:
            if p.ip == addr:
                return ("pod", p.name)
        for c in self.clients:
            if c.ip == addr:
                return ("client", c.name)
        return None

    def frontends_on(self, node: str) -> tuple[Frontend, ...]:
        """The frontends a node's service map serves (its own NodePorts, VIPs, ExternalIPs)."""
        return tuple(f for f in self.frontends if f.node in (None, node))


def derive(cluster: Cluster, *, range_all_ext: bool = False) -> Cluster:
    """Allocate backend IDs and rev_nat_indexes the way the agent writes the LB maps.

    Source ranges (SVC_FLAG_SOURCE_RANGE) guard the LoadBalancer frontend, and from v1.20
    the ExternalIP frontends too (GetSourceRangesEnabled): `range_all_ext` selects that.
    """
    pods = {p.name: p for p in cluster.pods}
    backends: dict[int, Backend] = {}
    by_key: dict[tuple[str, int, Proto], int] = {}
    frontends: list[Frontend] = []

    def backend_ids(svc: Service) -> tuple[int, ...]:
        ids = []
        for name in svc.backends:
            key = (name, svc.target_port, svc.proto)
            if key not in by_key:
                bid = len(backends) + 1
                pod = pods[name]
                backends[bid] = Backend(backend_id=bid, pod=name, node=pod.node, proto=svc.proto,
                                        addr=Endpoint(addr=pod.ip, port=svc.target_port))
                by_key[key] = bid
            ids.append(by_key[key])
        return tuple(ids)

    def add(svc: Service, kind: FrontendKind, addr: Endpoint, node: str | None,
            ids: tuple[int, ...]) -> None:
        guarded = kind is FrontendKind.LOADBALANCER or (
            kind is FrontendKind.EXTERNALIP and range_all_ext)
        frontends.append(Frontend(
            rev_nat_index=len(frontends) + 1, service=svc.name, kind=kind, addr=addr,
            proto=svc.proto, node=node, backend_ids=ids,
            etp_local=svc.etp is TrafficPolicy.LOCAL and kind is not FrontendKind.CLUSTERIP,
            routable=kind is not FrontendKind.CLUSTERIP,
            source_ranges=svc.source_ranges if guarded else (),
            affinity_timeout=(svc.affinity_timeout
                              if svc.affinity is SessionAffinity.CLIENT_IP else 0)))

    for svc in cluster.services:
        ids = backend_ids(svc)
        if svc.cluster_ip is not None:
            add(svc, FrontendKind.CLUSTERIP, Endpoint(addr=svc.cluster_ip, port=svc.port),
                None, ids)
        if svc.node_port is not None:
            for n in cluster.nodes:
                add(svc, FrontendKind.NODEPORT, Endpoint(addr=n.ip, port=svc.node_port),
                    n.name, ids)
        if svc.load_balancer_ip is not None:
            add(svc, FrontendKind.LOADBALANCER,
                Endpoint(addr=svc.load_balancer_ip, port=svc.port), None, ids)
        for ip in svc.external_ips:
            add(svc, FrontendKind.EXTERNALIP, Endpoint(addr=ip, port=svc.port), None, ids)
    return attrs.evolve(cluster, backends=backends, frontends=tuple(frontends))
