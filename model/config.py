"""Cilium agent configuration (Helm values) and the agent's own validation rules."""

from __future__ import annotations

import enum

import attrs

from model.errors import ConfigRefused
from model.maglev import DEFAULT_HASH_SEED, DEFAULT_TABLE_SIZE, seeds

# Defaults from Cilium's Helm chart / pkg/defaults.
NODEPORT_MIN_DEFAULT = 30000
NODEPORT_MAX_DEFAULT = 32767
NODEPORT_PORT_MAX_NAT = 65535
# v1.20: the agent's 32 (the tree's node_config.h:78). v1.18 defines 128 (nat.h:38); for a
# NAT range of at most 33,959 ports (the default's 32,768 included) the clamp's +1 steps
# cycle within the first 32 candidates, so the outcome is the same (tests/test_snat_retries.py);
# 128 symbolic retries would cost the induction 30 s per cell (docs/concepts.md)
SNAT_COLLISION_RETRIES = 32
CT_MAP_SIZE_TCP_DEFAULT = 524288
CT_MAP_SIZE_ANY_DEFAULT = 262144
NAT_MAP_SIZE_DEFAULT = 524288
MTU_DEFAULT = 1500  # node_config.h:222 MTU; the agent's device MTU when none is detected


class CiliumVersion(enum.Enum):
    """Which Cilium release's user-visible NodePort rules apply."""

    V1_13 = "1.13"
    V1_18 = "1.18"
    V1_20 = "1.20"


class LBMode(enum.Enum):
    """loadBalancer.mode (--bpf-lb-mode)."""

    SNAT = "snat"
    DSR = "dsr"
    HYBRID = "hybrid"


class DsrDispatch(enum.Enum):
    """loadBalancer.dsrDispatch (--bpf-lb-dsr-dispatch): DSR_ENCAP_NONE / _GENEVE / _IPIP."""

    OPT = "opt"
    GENEVE = "geneve"
    IPIP = "ipip"  # docs/ipip.md: encapsulated to the backend, no DNAT on the LB node


class LBAlgorithm(enum.Enum):
    """loadBalancer.algorithm (--bpf-lb-algorithm): LB_SELECTION_RANDOM or _MAGLEV."""

    RANDOM = "random"
    MAGLEV = "maglev"


class RoutingMode(enum.Enum):
    """routingMode (--routing-mode)."""

    NATIVE = "native"
    TUNNEL = "tunnel"


class TunnelProtocol(enum.Enum):
    """tunnelProtocol (--tunnel-protocol)."""

    VXLAN = "vxlan"
    GENEVE = "geneve"


class Acceleration(enum.Enum):
    """loadBalancer.acceleration (--bpf-lb-acceleration): the NodePort program at XDP."""

    DISABLED = "disabled"
    NATIVE = "native"
    BEST_EFFORT = "best-effort"  # v1.15+: native where the driver can, else none


class NoBackendResponse(enum.Enum):
    """serviceNoBackendResponse (v1.15+): ICMP reject or silent drop."""

    REJECT = "reject"
    DROP = "drop"


@attrs.frozen(kw_only=True)
class CiliumConfig:
    """The agent options that shape the NodePort datapath (mirrors node_config.h defines)."""

    version: CiliumVersion = CiliumVersion.V1_18
    mode: LBMode = LBMode.SNAT
    dispatch: DsrDispatch = DsrDispatch.OPT
    routing: RoutingMode = RoutingMode.NATIVE
    tunnel: TunnelProtocol = TunnelProtocol.VXLAN
    nodeport_min: int = NODEPORT_MIN_DEFAULT
    nodeport_max: int = NODEPORT_MAX_DEFAULT
    no_backend_response: NoBackendResponse = NoBackendResponse.REJECT
    # --enable-no-service-endpoints-routable (v1.20; the 1.18 datapath has no such switch):
    # false sends a backend-less service's packets up the stack, eTP=Local ones dropped.
    no_service_endpoints_routable: bool = True
    # bpf.masquerade (ENABLE_MASQUERADE_IPV4/6): only then does the LB node's reverse SNAT
    # see packets of no service protocol, ICMP errors among them (nodeport.h:3021, :1624).
    masquerade: bool = False
    # --enable-pmtu-discovery (Helm pmtuDiscovery.enabled, default false): the agent then
    # defines ENABLE_DSR_ICMP_ERRORS for DSR, and a request DSR would push over the device
    # MTU is answered with frag-needed / packet-too-big (nodeport.h:192-200, 1977, 592).
    pmtu_discovery: bool = False
    mtu: int = MTU_DEFAULT  # every node's device MTU unless the node sets its own
    # --enable-ipv4-fragment-tracking / --enable-ipv6-fragment-tracking (both default true;
    # Helm fragmentTracking): cilium_ipv4/6_frag_datagrams give later fragments their ports.
    # The IPv6 switch exists from v1.20 on; v1.18 drops every IPv6 fragment (ipv6.h:55).
    fragment_tracking: bool = True
    # loadBalancer.acceleration: ENABLE_NODEPORT_ACCELERATION, bpf_xdp.c on native devices
    acceleration: Acceleration = Acceleration.DISABLED
    # socketLB.enabled (ENABLE_SOCKET_LB_FULL): a pod's service connections are translated
    # at connect() by bpf_sock; off, per packet at its from-container (model/eastwest.py).
    # On by default: kube-proxy replacement turns it on.
    socket_lb: bool = True
    # --enable-ipip-termination (v1.20 only; default false): the node config
    # enable_ipip_termination, cil_from_netdev strips an IPIP header whose outer destination
    # is a local endpoint and DNATs the inner request to it (bpf_host.c:1149-1175)
    ipip_termination: bool = False
    ct_max: int = CT_MAP_SIZE_TCP_DEFAULT
    ct_any_max: int = CT_MAP_SIZE_ANY_DEFAULT
    nat_max: int = NAT_MAP_SIZE_DEFAULT
    seed: int = 0
    algorithm: LBAlgorithm = LBAlgorithm.RANDOM
    # maglev.tableSize (--bpf-lb-maglev-table-size, LB_MAGLEV_LUT_SIZE) and maglev.hashSeed
    # (--bpf-lb-maglev-hash-seed): the agent builds every table and seeds every hash with them
    maglev_table_size: int = DEFAULT_TABLE_SIZE
    maglev_hash_seed: str = DEFAULT_HASH_SEED

    @property
    def maglev(self) -> bool:
        """LB_SELECTION == LB_SELECTION_MAGLEV."""
        return self.algorithm is LBAlgorithm.MAGLEV

    @property
    def maglev_seeds(self) -> tuple[int, int, int]:
        """(murmur seed, hash_init4_seed, hash_init6_seed) from maglev.hashSeed."""
        return seeds(self.maglev_hash_seed)

    @property
    def nat_min(self) -> int:
        """NODEPORT_PORT_MIN_NAT: one past the NodePort range."""
        return self.nodeport_max + 1

    @property
    def nat_max_port(self) -> int:
        """NODEPORT_PORT_MAX_NAT."""
        return NODEPORT_PORT_MAX_NAT

    @property
    def dsr_enabled(self) -> bool:
        """ENABLE_DSR: DSR code paths are compiled in (dsr or hybrid)."""
        return self.mode is not LBMode.SNAT

    @property
    def tunneling(self) -> bool:
        """Pod traffic between nodes is encapsulated."""
        return self.routing is RoutingMode.TUNNEL

    @property
    def accelerated(self) -> bool:
        """cil_xdp_entry runs nodeport_lb4/6 before cil_from_netdev (best-effort: the model's
        devices all have driver support)."""
        return self.acceleration is not Acceleration.DISABLED

    @property
    def reject_no_backend(self) -> bool:
        """Whether a backend-less service answers ICMP (v1.15+ serviceNoBackendResponse)."""
        return (self.version is not CiliumVersion.V1_13
                and self.no_backend_response is NoBackendResponse.REJECT)


def validate(cfg: CiliumConfig, *, ipv6_underlay: bool = False) -> None:
    """Refuse what Cilium's agent refuses (kube_proxy_replacement.go), with its reason."""
    if cfg.nodeport_min > cfg.nodeport_max:
        raise ConfigRefused("invalid nodePort.range: min is greater than max")
    if cfg.nodeport_max >= NODEPORT_PORT_MAX_NAT:
        raise ConfigRefused("nodePort.range leaves no SNAT port range (NODEPORT_PORT_MIN_NAT "
                            "must not exceed NODEPORT_PORT_MAX_NAT 65535)")
    _validate_acceleration(cfg, ipv6_underlay)
    if cfg.mode is LBMode.SNAT:
        return
    mode = f'"{cfg.mode.value}"'  # Go's %q, as the agent prints it
    _validate_ipip(cfg)
    if cfg.version is CiliumVersion.V1_13:
        if cfg.tunneling:
            raise ConfigRefused(f"Node Port {mode} mode cannot be used with tunneling.")
        if cfg.dispatch is not DsrDispatch.OPT:
            raise ConfigRefused(f"Invalid value for --bpf-lb-dsr-dispatch: {cfg.dispatch.value} "
                                "(Cilium 1.13 supports opt and ipip only)")
        return
    # pkg/kpr/initializer/kube_proxy_replacement.go, in the agent's order and words.
    if cfg.tunneling and cfg.tunnel is TunnelProtocol.VXLAN:
        raise ConfigRefused(f"Node Port {mode} mode cannot be used with vxlan tunneling.")
    if cfg.tunneling and cfg.dispatch is not DsrDispatch.GENEVE:
        raise ConfigRefused(f"Tunnel routing with Node Port {mode} mode requires geneve "
                            "dispatch.")
    if cfg.dispatch is DsrDispatch.GENEVE and cfg.tunnel is not TunnelProtocol.GENEVE:
        raise ConfigRefused(f'Node Port {mode} mode with "geneve" dispatch requires geneve '
                            "tunnel protocol.")


def _validate_acceleration(cfg: CiliumConfig, ipv6_underlay: bool) -> None:
    """--bpf-lb-acceleration: v1.13 knows disabled/generic/native and refuses any tunnel
    (daemon/cmd/kube_proxy_replacement.go, "Cannot use NodePort acceleration with
    tunneling"); 1.15+ adds best-effort and refuses only an IPv6 tunnel underlay (v1.18
    daemon/cmd, v1.20 pkg/kpr/initializer/kube_proxy_replacement.go)."""
    if not cfg.accelerated:
        return
    if cfg.version is CiliumVersion.V1_13:
        if cfg.acceleration is Acceleration.BEST_EFFORT:
            raise ConfigRefused("Invalid value for --bpf-lb-acceleration: best-effort "
                                "(Cilium 1.13 supports disabled, generic and native)")
        if cfg.tunneling:
            raise ConfigRefused("Cannot use NodePort acceleration with tunneling. Either run "
                                "cilium-agent with --bpf-lb-acceleration=disabled or "
                                "--tunnel=disabled")
        return
    if cfg.tunneling and ipv6_underlay:
        raise ConfigRefused("XDP acceleration cannot be used with an IPv6 underlay")


def _validate_ipip(cfg: CiliumConfig) -> None:
    """IPIP dispatch per agent (docs/ipip.md). v1.13's daemon/cmd/kube_proxy_replacement.go
    accepts it only with --datapath-mode=lb-only (the standalone L4LB; the model's nodes run
    pods, so veth) and then only under XDP acceleration; the v1.18 agent
    (daemon/cmd/kube_proxy_replacement.go, initKubeProxyReplacementOptions) refuses it for
    hybrid ("Invalid value for --bpf-lb-dsr-dispatch") and without acceleration, as the
    1.18 datapath encapsulates only at XDP (v1.18 nodeport.h:1469-1520, no tc branch);
    v1.20 (pkg/kpr/initializer/kube_proxy_replacement.go) accepts it on tc too and creates
    the IPIP devices instead (EnableIPIPDevices)."""
    if cfg.dispatch is not DsrDispatch.IPIP:
        return
    if cfg.version is CiliumVersion.V1_13:
        raise ConfigRefused("DSR dispatch mode ipip only supported for "
                            "--datapath-mode=lb-only")
    if cfg.version is CiliumVersion.V1_18:
        if cfg.mode is LBMode.HYBRID:
            raise ConfigRefused("Invalid value for --bpf-lb-dsr-dispatch: ipip")
        if not cfg.accelerated:
            raise ConfigRefused("DSR dispatch mode ipip currently only available under XDP "
                                "acceleration")
