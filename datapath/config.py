"""Node configuration: what Cilium's agent would program into one node's BPF maps."""

from __future__ import annotations

from typing import Literal

import attrs

Mode = Literal["snat", "dsr", "hybrid"]
Dispatch = Literal["opt", "geneve", "ipip"]


@attrs.frozen(slots=True)
class BackendConfig:
    """One backend as the agent writes it to cilium_lb{4,6}_backends_v3."""

    id: int
    address: str
    port: int
    proto: str = "tcp"
    state: Literal["active", "terminating", "quarantined", "maintenance"] = "active"


@attrs.frozen(slots=True)
class ServiceConfig:
    """One frontend as the agent writes it to cilium_lb{4,6}_services_v2 (+ reverse NAT)."""

    frontend: str
    port: int
    rev_nat_index: int
    backends: tuple[int, ...] = ()
    proto: str = "tcp"
    kind: Literal["loadbalancer", "nodeport", "externalip", "clusterip"] = "loadbalancer"
    ext_traffic_local: bool = False
    fwd_mode: Literal["dsr", "snat"] | None = None
    source_ranges: tuple[str, ...] = ()
    source_range_deny: bool = False
    routable: bool | None = None
    # sessionAffinity=ClientIP: SVC_FLAG_AFFINITY with this timeout in seconds (slot 0's
    # affinity_timeout, lb.h:89); 0: no affinity
    affinity_timeout: int = 0
    # cilium_lb4/6_maglev[rev_nat_index]: the agent's lookup table of backend IDs (exactly
    # NodeConfig.maglev_table_size of them) for LB_SELECTION_MAGLEV; empty: none written
    maglev: tuple[int, ...] = ()


@attrs.frozen(slots=True)
class EndpointConfig:
    """A local endpoint as in cilium_lxc (endpoint map): address -> ifindex, lxc id."""

    address: str
    ifindex: int = 25
    ep_id: int = 127


@attrs.frozen(slots=True)
class NodeConfig:
    """Everything the agent and the compile-time defines fix for one node's datapath."""

    name: str = "node"
    ipv4: str | None = "10.0.10.1"
    ipv6: str | None = None
    mode: Mode = "snat"
    dispatch: Dispatch = "opt"
    host_routing: Literal["bpf", "legacy"] = "bpf"
    services: tuple[ServiceConfig, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    endpoints: tuple[EndpointConfig, ...] = ()
    tunnel_endpoints: tuple[tuple[str, str], ...] = ()
    nat_min: int = 32768
    nat_max: int = 65535
    ct_capacity: int = 65536  # cilium_ct{4,6}_global (TCP): CT_MAP_SIZE_TCP
    ct_any_capacity: int | None = None  # cilium_ct_any{4,6}_global; None: ct_capacity
    nat_capacity: int = 65536
    seed: int = 0
    selection: Literal["random", "first", "maglev"] = "random"
    # LB_MAGLEV_LUT_SIZE (maglev.tableSize) and the cluster-wide hash seeds the loader sets
    # (hash_init4_seed / hash_init6_seed: SeedJhash0 / SeedJhash1 of maglev.hashSeed)
    maglev_table_size: int = 16381
    hash_seed4: int = 0
    hash_seed6: int = 0
    faults: frozenset[str] = frozenset()
    # routingMode=tunnel: pod traffic between nodes (SNAT'd requests, replies to remote
    # nodes) goes through the Geneve device using tunnel_endpoints (cilium_ipcache).
    tunnel: bool = False
    # cilium_host's address (IPV4_GATEWAY / IPV6 router IP): the SNAT source in tunnel mode.
    router_ipv4: str | None = None
    router_ipv6: str | None = None
    # serviceNoBackendResponse: "reject" answers ICMP port unreachable (tail_no_service_ipv4).
    no_backend_response: Literal["drop", "reject"] = "drop"
    # enable-no-service-endpoints-routable (v1.20 CONFIG, agent default true): false passes
    # a backend-less service's packets on to the stack (eTP/iTP=Local ones drop); v1.18
    # has no such switch and behaves as true.
    no_service_endpoints_routable: bool = True
    # bpf.masquerade: the reverse SNAT also sees ICMP errors (nodeport.h:3021), and a local
    # endpoint's packet to an outside address is SNATed at to-netdev (nat.h:626-789)
    masquerade: bool = False
    # IPV4_MASQUERADE / IPV6_MASQUERADE; None: the node's own address (the agent's default)
    masquerade_ipv4: str | None = None
    masquerade_ipv6: str | None = None
    # ipv4/ipv6-native-routing-cidr: IPV4_SNAT_EXCLUSION_DST_CIDR, never masqueraded
    snat_exclusion_cidrs: tuple[str, ...] = ()
    # bpf.ctAccounting: CT entries count packets and bytes (frames, L2 header included);
    # a load-time switch in v1.20 (off by default), CONNTRACK_ACCOUNTING at compile time
    # in v1.18.
    ct_accounting: bool = False
    # --enable-pmtu-discovery (ENABLE_DSR_ICMP_ERRORS) and the device MTU it compares with
    # (v1.20 CONFIG(device_mtu), v1.18 THIS_MTU)
    pmtu_discovery: bool = False
    mtu: int = 1500
    # --enable-ipv4/6-fragment-tracking: cilium_ipv4/6_frag_datagrams give a datagram's
    # later fragments its ports. Off here unless set, as Cilium's bpf/tests compile it
    # (the agent's default is on; the model's scenarios say so explicitly).
    fragment_tracking: bool = False
    # The Cilium release whose rules apply where 1.18 and 1.20 differ: 1.18 keeps a DSR
    # connection's frontend in the SNAT map (nodeport.h snat_v4_create_dsr) and reopens a
    # closing CT entry on any SYN; 1.20 keeps it in the CT entry, and reopens on a pure SYN.
    version: Literal["1.18", "1.20"] = "1.20"
    # bpf_lxc (datapath/lxc.py): socketLB.enabled (ENABLE_SOCKET_LB_FULL) leaves a pod's
    # service translation to connect(), so from-container translates nothing; off, as
    # Cilium's bpf/tests compile bpf_lxc. The NodePort range's floor (its ceiling is
    # nat_min - 1) for v1.20's surrogate lookup; the service loopback addresses (the
    # agent's IPv4 default; IPv6's is the model's stand-in).
    socket_lb: bool = False
    nodeport_min: int = 30000
    service_loopback_ipv4: str = "169.254.42.1"
    service_loopback_ipv6: str = "fe80::1"
    # --enable-ipip-termination (v1.20 enable_ipip_termination): from-netdev strips an IPIP
    # header addressed to a local endpoint and DNATs the inner request to it
    ipip_termination: bool = False
