"""Configurations a property is checked under: mode x family x placement x service type ..."""

from __future__ import annotations

import enum

import attrs

from model.config import (
    Acceleration,
    CiliumConfig,
    CiliumVersion,
    DsrDispatch,
    LBAlgorithm,
    LBMode,
    NoBackendResponse,
    RoutingMode,
    TunnelProtocol,
)
from model.topology import ServiceType, TrafficPolicy
from model.values import DsrKind, Proto


class Placement(enum.Enum):
    """Where the service's backends live relative to the node the client talks to."""

    LOCAL = "local"
    REMOTE = "remote"


@attrs.frozen(kw_only=True)
class Config:
    """One cell of the property matrix; mirrors the Helm values a scenario sets (CiliumConfig)."""

    mode: LBMode = LBMode.SNAT
    family: str = "ipv4"
    placement: Placement = Placement.REMOTE
    svc_type: ServiceType = ServiceType.NODEPORT
    dispatch: DsrDispatch = DsrDispatch.OPT
    proto: Proto = Proto.TCP
    etp: TrafficPolicy = TrafficPolicy.CLUSTER
    drops_ip_options: bool = False
    source_dest_check: bool = False
    version: CiliumVersion = CiliumVersion.V1_18
    reject: bool = True  # serviceNoBackendResponse: reject
    affinity: bool = False  # the service has sessionAffinity: ClientIP
    ecmp: bool = False  # the client's later connections arrive at the other node (ECMP)
    masquerade: bool = False  # bpf.masquerade
    pmtu: bool = False  # pmtuDiscovery.enabled (--enable-pmtu-discovery)
    ip_options: int = 0  # bytes of IPv4 options in the client's requests
    # the client's datagrams leave fragmented, reaching the node in this order (None: whole)
    frag_order: str | None = None
    frag_tracking: bool = True  # --enable-ipv4/6-fragment-tracking (cilium.bpf)
    xdp: bool = False  # loadBalancer.acceleration: native
    maglev: bool = False  # loadBalancer.algorithm: maglev (default table size and seed)
    # the client is a pod on node1 (properties/ewcells.py): "clusterip", "nodeport-own",
    # "nodeport-other" (node2's NodePort) or "hairpin" (web-0 calls its own ClusterIP)
    east_west: str = ""
    socket_lb: bool = True  # socketLB.enabled: a pod's service calls translated at connect()
    ipip_term: bool = False  # --enable-ipip-termination (v1.20; docs/ipip.md)

    @property
    def ipv6(self) -> bool:
        """Address family of every host in the configuration."""
        return self.family == "ipv6"

    @property
    def tunneling(self) -> bool:
        """Geneve dispatch runs in tunnel routing mode (tunnelProtocol geneve)."""
        return self.mode is not LBMode.SNAT and self.dispatch is DsrDispatch.GENEVE

    @property
    def dsr_kind(self) -> DsrKind:
        """How the frontend travels on a DSR packet in this configuration."""
        if self.dispatch is DsrDispatch.GENEVE:
            return DsrKind.GENEVE_OPTION
        return DsrKind.IPV6_DSTOPT if self.ipv6 else DsrKind.IPV4_OPTION

    @property
    def uses_dsr(self) -> bool:
        """SVC_FLAG_FWD_MODE_DSR for this frontend (model.network.uses_dsr)."""
        return self.mode is LBMode.DSR or (self.mode is LBMode.HYBRID and self.proto is Proto.TCP)

    @property
    def rejects(self) -> bool:
        """A backend-less service answers ICMP (serviceNoBackendResponse=reject, v1.15+)."""
        return self.reject and self.version is not CiliumVersion.V1_13

    def cilium(self) -> CiliumConfig:
        """The agent configuration a decoded scenario carries."""
        return CiliumConfig(
            version=self.version, mode=self.mode, dispatch=self.dispatch,
            routing=RoutingMode.TUNNEL if self.tunneling else RoutingMode.NATIVE,
            tunnel=TunnelProtocol.GENEVE if self.tunneling else TunnelProtocol.VXLAN,
            no_backend_response=(NoBackendResponse.REJECT if self.reject
                                 else NoBackendResponse.DROP),
            masquerade=self.masquerade, pmtu_discovery=self.pmtu,
            fragment_tracking=self.frag_tracking,
            acceleration=Acceleration.NATIVE if self.xdp else Acceleration.DISABLED,
            algorithm=LBAlgorithm.MAGLEV if self.maglev else LBAlgorithm.RANDOM,
            socket_lb=self.socket_lb,
            ipip_termination=self.ipip_term)

    def label(self) -> str:
        """A short stable name: mode/family/placement/type/proto[/dispatch][/flags]."""
        parts = [self.mode.value, self.family, self.placement.value,
                 self.svc_type.value.lower(), self.proto.name.lower()]
        if self.mode is not LBMode.SNAT:
            parts.append(self.dispatch.value)
        if self.etp is TrafficPolicy.LOCAL:
            parts.append("etp-local")
        if self.drops_ip_options:
            parts.append("drops-ipopts")
        if self.source_dest_check:
            parts.append("src-dst-check")
        if self.version is not CiliumVersion.V1_18:
            parts.append(f"v{self.version.value}")
        if not self.reject:
            parts.append("no-backend-drop")
        if self.affinity:
            parts.append("affinity")
        if self.ecmp:
            parts.append("ecmp")
        if self.masquerade:
            parts.append("bpf-masq")
        if self.pmtu:
            parts.append("pmtu")
        if self.ip_options:
            parts.append(f"ipopts{self.ip_options}")
        if self.frag_order is not None:
            parts.append(f"frag-{self.frag_order}")
        if not self.frag_tracking:
            parts.append("no-frag-tracking")
        if self.xdp:
            parts.append("xdp")
        if self.maglev:
            parts.append("maglev")
        if self.east_west:
            parts.append(f"pod-{self.east_west}")
        if not self.socket_lb:
            parts.append("no-socket-lb")
        if self.ipip_term:
            parts.append("ipip-term")
        return "/".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The configuration for --json output."""
        return {"mode": self.mode.value, "family": self.family,
                "placement": self.placement.value, "service_type": self.svc_type.value,
                "proto": self.proto.name, "dispatch": self.dispatch.value,
                "etp": self.etp.value, "drops_ip_options": self.drops_ip_options,
                "source_dest_check": self.source_dest_check, "version": self.version.value,
                "no_backend_response": "reject" if self.reject else "drop",
                "session_affinity": "ClientIP" if self.affinity else "None",
                "ecmp": self.ecmp, "bpf_masquerade": self.masquerade,
                "pmtu_discovery": self.pmtu, "ip_options": self.ip_options,
                "fragment_order": self.frag_order, "fragment_tracking": self.frag_tracking,
                "acceleration": "native" if self.xdp else "disabled",
                "algorithm": "maglev" if self.maglev else "random",
                "pod_client": self.east_west or None, "socket_lb": self.socket_lb,
                "ipip_termination": self.ipip_term}
