"""The catalogue's Property type and configuration helpers, and its core properties (LB to ICMP)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import attrs

from model.config import CiliumVersion, DsrDispatch, LBMode
from model.faults import ModelFault
from model.topology import ServiceType, TrafficPolicy
from model.values import IcmpKind, Proto
from properties.configs import Config, Placement
from properties.symworld import Bounds

HOLD, VIOLATED = "hold", "violated"
F = ModelFault


@attrs.frozen(kw_only=True)
class Property:
    """One catalogued invariant of the NodePort datapath."""

    id: str
    title: str
    statement: str
    scope: str
    method: str  # "bmc" or "induction"
    configs: tuple[Config, ...]
    expected: Callable[[Config], str]
    bounds: Bounds = attrs.field(factory=Bounds)
    mutants: tuple[tuple[ModelFault, Config], ...] = ()
    pin_backend: bool = True  # decoded scenarios pin the backend z3 picked

    def expect(self, cfg: Config) -> str:
        """hold or violated for this configuration."""
        return self.expected(cfg)


def _cfg(mode: LBMode, fam: str = "ipv4", place: Placement = Placement.REMOTE,
         typ: ServiceType = ServiceType.NODEPORT, proto: Proto = Proto.TCP,
         disp: DsrDispatch = DsrDispatch.OPT, **kw: object) -> Config:
    return Config(mode=mode, family=fam, placement=place, svc_type=typ, proto=proto,
                  dispatch=disp, **kw)  # type: ignore[arg-type]


def _matrix(types: tuple[ServiceType, ...] = (ServiceType.NODEPORT,),
            places: tuple[Placement, ...] = (Placement.LOCAL, Placement.REMOTE),
            families: tuple[str, ...] = ("ipv4", "ipv6"), geneve: bool = True
            ) -> tuple[Config, ...]:
    """Every mode x family x placement x type; hybrid with TCP and UDP; Geneve dispatch too."""
    out = []
    for mode, fam, place, typ in itertools.product(LBMode, families, places, types):
        protos = (Proto.TCP, Proto.UDP) if mode is LBMode.HYBRID else (Proto.TCP,)
        if mode is LBMode.DSR:
            protos = (Proto.TCP, Proto.UDP)
        for proto in protos:
            out.append(_cfg(mode, fam, place, typ, proto))
            if (geneve and mode is not LBMode.SNAT and place is Placement.REMOTE
                    and typ is ServiceType.NODEPORT):
                out.append(_cfg(mode, fam, place, typ, proto, DsrDispatch.GENEVE))
    return tuple(out)


ALL_TYPES = (ServiceType.NODEPORT, ServiceType.LOADBALANCER, ServiceType.EXTERNALIP)
R, L = Placement.REMOTE, Placement.LOCAL
SNAT, DSR, HYB = LBMode.SNAT, LBMode.DSR, LBMode.HYBRID
TCP, UDP = Proto.TCP, Proto.UDP
GEN = DsrDispatch.GENEVE


def _hold(_: Config) -> str:
    return HOLD


def _client_ip_kept(c: Config) -> str:
    if c.placement is Placement.LOCAL or c.uses_dsr:
        return HOLD
    return VIOLATED


def _env_opts(c: Config) -> str:
    return VIOLATED if c.uses_dsr and c.dispatch is DsrDispatch.OPT else HOLD


def _env_sdc(c: Config) -> str:
    return VIOLATED if c.uses_dsr else HOLD


def _never(_: Config) -> str:
    return VIOLATED


def _quote_source(c: Config) -> str:
    """The LB node reverse-SNATs an ICMP error only under bpf.masquerade (nodeport.h:3021)."""
    snat_path = c.placement is Placement.REMOTE and not c.uses_dsr
    return VIOLATED if snat_path and not c.masquerade else HOLD


ICMP_BOUNDS = Bounds(packets=1, backend_error=IcmpKind.FRAG_NEEDED)
# v1.20 where reverse SNAT translates the error: v1.18 leaves its ICMP checksum stale (no
# snat_v4_calc_icmp_error_csum_diff), which the model, without checksums, cannot show
V120 = CiliumVersion.V1_20
ICMP_CONFIGS = (_cfg(SNAT, proto=UDP), _cfg(SNAT, proto=UDP, masquerade=True, version=V120),
                _cfg(SNAT, "ipv6", proto=UDP, masquerade=True, version=V120),
                _cfg(DSR, proto=UDP), _cfg(SNAT, place=L, proto=UDP))


CORE: tuple[Property, ...] = (
    Property(
        id="P-LB-01", title="reply source",
        statement=("Every reply the client receives on a flow it opened to frontend F has "
                   "source exactly F (address and port) and destination the client's own "
                   "address and port."),
        scope="all modes, both families, local and remote backends, NodePort/LoadBalancer/"
              "ExternalIP; the flow's own L4 packets (ICMP errors are P-ETP-01's)",
        method="bmc",
        configs=_matrix(ALL_TYPES[:1]) + tuple(
            _cfg(m, "ipv4", p, t, TCP) for m, p, t in itertools.product(
                LBMode, (L, R), ALL_TYPES[1:])) + (
            _cfg(DSR, "ipv4", R, ServiceType.NODEPORT, TCP, version=CiliumVersion.V1_20),
            _cfg(DSR, "ipv6", R, ServiceType.NODEPORT, TCP, version=CiliumVersion.V1_13),),
        expected=_hold,
        mutants=((F.SKIP_REVNAT_DSR, _cfg(DSR)), (F.SKIP_REVNAT_LOCAL, _cfg(SNAT, place=L)),
                 (F.REVSNAT_WRONG_PORT, _cfg(SNAT)))),
    Property(
        id="P-LB-02", title="request reaches a backend",
        statement=("A request to F is delivered to a backend of F's service, addressed to "
                   "that backend's address and targetPort, or dropped with a Cilium drop "
                   "reason; never delivered elsewhere."),
        scope="all modes, both families, local and remote backends, all service types",
        method="bmc",
        configs=_matrix(ALL_TYPES[:1], geneve=False) + tuple(
            _cfg(m, "ipv4", R, t) for m in LBMode for t in ALL_TYPES[1:]),
        expected=_hold,
        mutants=((F.DNAT_KEEPS_FRONTEND_PORT, _cfg(SNAT)),
                 (F.DNAT_KEEPS_FRONTEND_PORT, _cfg(DSR, place=L)))),
    Property(
        id="P-NAT-01", title="reverse NAT inverts forward NAT",
        statement=("Every reply that reaches the client was reverse-translated exactly once "
                   "(rev-SNAT at the LB node or rev-DNAT at to-netdev), and that step restores "
                   "the original tuple: RevNAT o NAT = id on the flow."),
        scope="all modes, both families, local and remote backends, NodePort",
        method="bmc", configs=_matrix(), expected=_hold,
        mutants=((F.REVSNAT_WRONG_PORT, _cfg(SNAT)), (F.SKIP_REVNAT_DSR, _cfg(DSR)),
                 (F.SKIP_REVNAT_LOCAL, _cfg(DSR, place=L)))),
    Property(
        id="P-NAT-02", title="SNAT is injective",
        statement=("No two live flows share one translated tuple: the SNAT map's forward and "
                   "reverse entries stay a bijection and every allocated port lies in the "
                   "NAT range (nodePort max+1..65535), never in the NodePort range."),
        scope="the LB node's nodeport SNAT map under any sequence of allocations, reply "
              "lookups and pair deletions (no LRU eviction); IPv4 and IPv6",
        method="induction",
        configs=(_cfg(SNAT), _cfg(SNAT, "ipv6"),
                 _cfg(SNAT, version=CiliumVersion.V1_13), _cfg(SNAT, version=CiliumVersion.V1_20)),
        expected=_hold,
        # REVSNAT_WRONG_PORT reaches the map only through 1.20's restore of a lost forward
        # entry (v1.20 nat.h:426-446); 1.18's reverse SNAT writes no forward entry.
        mutants=((F.SNAT_IGNORE_REVERSE_ENTRY, _cfg(SNAT)),
                 (F.REVSNAT_WRONG_PORT, _cfg(SNAT, version=CiliumVersion.V1_20)),
                 (F.NAT_RANGE_OVERLAPS_NODEPORT, _cfg(SNAT)))),
    Property(
        id="P-NAT-03", title="SNAT ports never collide with NodePorts",
        statement=("Every port the LB node allocates for SNAT lies above the NodePort range, "
                   "so a backend's reply is never mistaken for new service traffic."),
        scope="SNAT path (snat mode, hybrid UDP), remote backends, both families",
        method="bmc",
        configs=(_cfg(SNAT), _cfg(SNAT, "ipv6"), _cfg(HYB, proto=UDP)),
        expected=_hold, bounds=Bounds(extra_service=True),
        mutants=((F.NAT_RANGE_OVERLAPS_NODEPORT, _cfg(SNAT)),)),
    Property(
        id="P-DSR-01", title="client IP preserved",
        statement=("The backend sees the client's address and port as the source of every "
                   "request: under DSR, under eTP=Local, and for local backends in any mode; "
                   "not under SNAT with a remote backend."),
        scope="all modes, both families, local and remote backends, eTP Cluster and Local",
        method="bmc",
        configs=(*_matrix(geneve=False), _cfg(SNAT, place=L, etp=TrafficPolicy.LOCAL),
                 _cfg(DSR, typ=ServiceType.LOADBALANCER, disp=GEN)),
        expected=_client_ip_kept,
        mutants=((F.DSR_ALSO_SNATS, _cfg(DSR)),)),
    Property(
        id="P-DSR-02", title="a hop fewer",
        statement=("Under DSR with a remote backend the reply leaves the backend's node "
                   "straight to the client and never passes the receiving node; under SNAT "
                   "it always returns through the receiving node."),
        scope="remote backends; snat, dsr (opt and Geneve) and hybrid TCP/UDP; both families",
        method="bmc",
        configs=tuple(c for c in _matrix(places=(R,))),
        expected=_hold,
        mutants=((F.DSR_ALSO_SNATS, _cfg(DSR)), (F.SNAT_SKIPPED, _cfg(SNAT)))),
    Property(
        id="P-DSR-03", title="DSR metadata",
        statement=("The packet from the receiving node to the backend's node carries the "
                   "frontend (IPv4 option / IPv6 destination option / Geneve option) on every "
                   "TCP SYN and every UDP datagram, and the backend's node records it in a "
                   "DSR CT entry that the reply's reverse NAT uses."),
        scope="dsr and hybrid TCP, remote backends, opt and Geneve dispatch, both families",
        method="bmc",
        configs=(*(c for c in _matrix(places=(R,)) if c.uses_dsr),
                 _cfg(DSR, proto=UDP, version=CiliumVersion.V1_20)),
        expected=_hold,
        mutants=((F.DSR_NO_OPT_ON_SYN, _cfg(DSR)), (F.DSR_UDP_FIRST_ONLY, _cfg(DSR, proto=UDP)),
                 (F.DSR_CT_NOT_RECORDED, _cfg(DSR)),
                 (F.DSR_NO_OPT_ON_SYN, _cfg(DSR, disp=GEN)))),
    Property(
        id="P-ETP-01", title="externalTrafficPolicy=Local",
        statement=("With eTP=Local the receiving node never forwards a request to another "
                   "node; with no local backend the request is dropped with DROP_NO_SERVICE "
                   "(and, under serviceNoBackendResponse=reject, v1.15+, the client gets an "
                   "ICMP port-unreachable)."),
        scope="all modes, both families, local and remote backends, NodePort and "
              "LoadBalancer, reject and drop",
        method="bmc",
        configs=(*(_cfg(m, fam, p, t, etp=TrafficPolicy.LOCAL) for m, fam, p, t in
                   itertools.product(LBMode, ("ipv4", "ipv6"), (L, R), ALL_TYPES[:2])),
                 _cfg(SNAT, etp=TrafficPolicy.LOCAL, reject=False),
                 _cfg(SNAT, etp=TrafficPolicy.LOCAL, version=CiliumVersion.V1_13)),
        expected=_hold,
        mutants=((F.ETP_LOCAL_FORWARDS_REMOTE, _cfg(SNAT, etp=TrafficPolicy.LOCAL)),
                 (F.ETP_LOCAL_FORWARDS_REMOTE, _cfg(DSR, etp=TrafficPolicy.LOCAL)))),
    Property(
        id="P-HYB-01", title="hybrid split",
        statement=("In hybrid mode TCP takes the DSR path and UDP the SNAT path, and both "
                   "satisfy P-LB-01."),
        scope="hybrid, remote backends, TCP and UDP, opt and Geneve, both families",
        method="bmc",
        configs=tuple(c for c in _matrix(places=(R,)) if c.mode is HYB),
        expected=_hold,
        mutants=((F.HYBRID_UDP_AS_DSR, _cfg(HYB, proto=UDP)),)),
    Property(
        id="P-ENV-01", title="fabric keeps IP options",
        statement=("DSR with opt dispatch needs a fabric that forwards IP options: where "
                   "the fabric drops them the request carrying the option is lost. Geneve "
                   "dispatch and SNAT do not depend on it."),
        scope="remote backends with fabric.dropsIPOptions; snat, dsr opt/Geneve, hybrid",
        method="bmc",
        configs=tuple(attrs.evolve(c, drops_ip_options=True) for c in (
            _cfg(SNAT), _cfg(DSR), _cfg(DSR, proto=UDP), _cfg(DSR, "ipv6"), _cfg(DSR, disp=GEN),
            _cfg(HYB), _cfg(HYB, proto=UDP))),
        expected=_env_opts,
        mutants=((F.HYBRID_UDP_AS_DSR, _cfg(HYB, proto=UDP, drops_ip_options=True)),)),
    Property(
        id="P-ENV-02", title="fabric without source/destination check",
        statement=("DSR needs a fabric that does not check source addresses: with opt "
                   "dispatch the request leaves the LB node with the client's source, and "
                   "with either dispatch the reply leaves the backend's node with the "
                   "frontend's source, so a source/destination check drops the flow. SNAT is "
                   "unaffected."),
        scope="remote backends with fabric.sourceDestCheck; snat, dsr opt/Geneve, hybrid, "
              "NodePort and LoadBalancer",
        method="bmc",
        configs=tuple(attrs.evolve(c, source_dest_check=True) for c in (
            _cfg(SNAT), _cfg(SNAT, typ=ServiceType.LOADBALANCER), _cfg(DSR), _cfg(DSR, "ipv6"),
            _cfg(DSR, disp=GEN), _cfg(DSR, typ=ServiceType.LOADBALANCER, disp=GEN),
            _cfg(HYB), _cfg(HYB, proto=UDP))),
        expected=_env_sdc,
        mutants=((F.SNAT_SKIPPED, _cfg(SNAT, source_dest_check=True)),)),
    Property(
        id="P-CT-01", title="flow stickiness",
        statement=("All packets of one flow reach the same backend while that backend "
                   "exists: a CT_SERVICE entry that names a live backend of its own service "
                   "(the inductive invariant) is kept and followed."),
        scope="one node's CT_SERVICE entries under any packets of any flows, any number of "
              "backends; witnessed by two-backend flows in every mode",
        method="induction",
        configs=(_cfg(SNAT), _cfg(SNAT, "ipv6"), _cfg(DSR, proto=UDP), _cfg(HYB)),
        expected=_hold, bounds=Bounds(packets=2, backends=2), pin_backend=False,
        mutants=((F.LB_IGNORES_CT_SERVICE, _cfg(SNAT)),
                 (F.LB_IGNORES_CT_SERVICE, _cfg(DSR, proto=UDP)))),
    Property(
        id="P-CT-02", title="graceful termination",
        statement=("A connection whose backend turns terminating keeps reaching that backend "
                   "(non-SYN packets drain to it) while it stays in the backend map, and no "
                   "new connection (a SYN) is ever sent to a terminating backend."),
        scope="one node's CT_SERVICE entries under any packets of any flows and any "
              "endpoint changes of the service (pods added, deleted, or dropped as "
              "BE_STATE_TERMINATING), any number of backends, other services sharing them",
        method="induction",
        configs=(_cfg(SNAT), _cfg(DSR, "ipv6"), _cfg(HYB)),
        expected=_hold, pin_backend=False,
        mutants=((F.TERMINATING_BACKEND_TAKES_SYN, _cfg(SNAT)),
                 (F.TERMINATING_BACKEND_TAKES_SYN, _cfg(DSR, "ipv6")))),
    Property(
        id="P-CT-03", title="CT garbage collection",
        statement=("The agent's CT garbage collector removes only what has expired: a "
                   "connection that GC runs inside of (before any of its entries' lifetimes "
                   "end) goes on to the same backend with the same translated source and "
                   "still gets its replies; after a silence past every lifetime, no CT or "
                   "SNAT entry of the flows before it is left on any node."),
        scope="a connection, GC while it is live, the connection again, then GC after "
              "every lifetime and another client's flow; the SNAT path (both families, "
              "local backend), DSR with either storage of its reverse NAT (v1.18 SNAT map, "
              "v1.20 CT entry), hybrid UDP",
        method="bmc",
        configs=(_cfg(SNAT), _cfg(SNAT, "ipv6", proto=UDP), _cfg(SNAT, place=L), _cfg(DSR),
                 _cfg(DSR, version=CiliumVersion.V1_20), _cfg(HYB, proto=UDP)),
        expected=_hold, bounds=Bounds(packets=2, backends=2, gc=True), pin_backend=False,
        mutants=((F.GC_PURGES_LIVE_NAT, _cfg(SNAT)), (F.GC_PURGES_LIVE_NAT, _cfg(DSR)),
                 (F.GC_KEEPS_ORPHAN_NAT, _cfg(SNAT)))),
    Property(
        id="P-ICMP-01", title="ICMP errors reverse-translated",
        statement=("An ICMP error about a load-balanced flow (here fragmentation-needed / "
                   "packet-too-big sent back by the backend's side) reaches the client, and "
                   "its quoted header shows the tuple the client sent: the client's own "
                   "address and port as source, the frontend's address and port as "
                   "destination. Expected to fail everywhere: no reverse DNAT of Cilium's "
                   "touches ICMP (lb4_extract_tuple, lb.h:1697; bpf_lxc.c:1637), so the quote "
                   "keeps the backend as destination (docs/icmp-errors.md)."),
        scope="SNAT (bpf.masquerade off and on, both families), DSR, a local backend; UDP, "
              "one datagram answered with the error",
        method="bmc", configs=ICMP_CONFIGS, expected=_never, bounds=ICMP_BOUNDS,
        mutants=((F.REVDNAT_ICMP_QUOTE, ICMP_CONFIGS[1]),)),
    Property(
        id="P-ICMP-02", title="ICMP errors reach the client",
        statement=("What Cilium does give: such an error reaches the client addressed to it, "
                   "and its quote's source is the client's own address and port (reverse "
                   "SNAT of ICMP errors, nat.h:1017-1125). Not on the SNAT path without "
                   "bpf.masquerade: the LB node sends the error up its own stack "
                   "(nodeport.h:3021) and the client never hears of it."),
        scope="as P-ICMP-01; the reverse-SNAT cells are v1.20's: v1.18 leaves the ICMP "
              "checksum stale, so the client's kernel discards the error (the model has no "
              "checksums; the reference datapath shows it, docs/icmp-errors.md)",
        method="bmc", configs=ICMP_CONFIGS, expected=_quote_source, bounds=ICMP_BOUNDS,
        mutants=((F.REVSNAT_ICMP_KEEPS_QUOTE, ICMP_CONFIGS[1]),)),
)
