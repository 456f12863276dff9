"""The property catalogue: stable IDs, statements, scope and the expected result per configuration.

Like a TLA+ manifest: each property names the configurations it is checked under and
whether it is expected to hold there; `nodeport prove` fails when a result differs.
Each property also names the seeded faults (model/faults.py) that must break it.
"""

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


PROPERTIES: tuple[Property, ...] = (
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

def _affinity_kept(c: Config) -> str:
    return VIOLATED if c.ecmp else HOLD


PROPERTIES += (
    Property(
        id="P-AFF-01", title="session affinity",
        statement=("With sessionAffinity: ClientIP a client's new connection (another source "
                   "port) through one node reaches the backend its previous connection "
                   "reached, while less than the timeout has passed since that one's last "
                   "packet and the backend stays active. Across nodes only where selection "
                   "gives the same first choice: with random selection a connection that "
                   "ECMP sends to another node finds no affinity entry there (the map is "
                   "per node) and may reach another backend: an expected counterexample."),
        scope="one client, two connections, two backends; NodePort through one node (SNAT "
              "IPv4 TCP, DSR IPv6 UDP) and a LoadBalancer VIP reached through both nodes",
        method="bmc",
        configs=(_cfg(SNAT, affinity=True), _cfg(DSR, "ipv6", proto=UDP, affinity=True),
                 _cfg(SNAT, typ=ServiceType.LOADBALANCER, affinity=True, ecmp=True)),
        expected=_affinity_kept, bounds=Bounds(packets=2, backends=2, reconnect=True),
        mutants=((F.AFFINITY_EXPIRY_INVERTED, _cfg(SNAT, affinity=True)),)),
)


def _maglev_same(c: Config) -> str:
    return HOLD if c.maglev else VIOLATED


MAGLEV_LB = _cfg(SNAT, typ=ServiceType.LOADBALANCER, ecmp=True, maglev=True)
PROPERTIES += (
    Property(
        id="P-MAG-01", title="Maglev: one backend per flow on every node",
        statement=("With loadBalancer.algorithm: maglev every node picks the same backend for "
                   "the same flow, so a connection that ECMP moves to another node (which has "
                   "no CT entry for it) keeps its backend, given the same backend set, "
                   "weights, table size and cluster-wide seed. The agent builds each table "
                   "from the backends' names sorted (pkg/maglev), so equal sets give equal "
                   "tables; the datapath hashes the client's address, both ports and the "
                   "protocol with the cluster seed, not the destination address nor "
                   "anything of the node (lib/hash.h), with the client port zeroed on "
                   "affinity frontends in v1.20 (lb.h:1937). The proof runs the model with "
                   "its own tables and the lookup as one uninterpreted function of the table "
                   "and the hashed fields: it rests on nothing about jhash but that it is a "
                   "function. With random selection the moved connection draws afresh: an "
                   "expected counterexample, and why DSR clusters behind ECMP use Maglev."),
        scope="one client, one connection entering by node1 then by node2 (ECMP), two "
              "backends on node2; a LoadBalancer VIP: SNAT IPv4 TCP (v1.18), DSR IPv6 UDP "
              "with affinity (v1.20), and random selection",
        method="bmc",
        configs=(MAGLEV_LB,
                 _cfg(DSR, "ipv6", typ=ServiceType.LOADBALANCER, proto=UDP, ecmp=True,
                      maglev=True, affinity=True, version=CiliumVersion.V1_20),
                 _cfg(SNAT, typ=ServiceType.LOADBALANCER, ecmp=True)),
        expected=_maglev_same, bounds=Bounds(packets=1, backends=2, moved=True),
        mutants=((F.MAGLEV_NODE_SEED, MAGLEV_LB),), pin_backend=False),
)
PROPERTIES += (
    Property(
        id="P-MAG-02", title="Maglev: bounded disruption when a backend leaves",
        statement=("Removing one backend from a Maglev service moves at most 6% of the "
                   "other backends' flows to another backend, when the table has at least "
                   "100 entries per backend (pkg/maglev's sizing advice). A flow's entry is "
                   "its hash, uniform over the entries, so the share of the remaining "
                   "backends' entries that change owner is the share of their flows that "
                   "move. Checked exhaustively over every entry of the agent's tables of "
                   "sizes 251 to 2039 and 2 to 10 backends of the default weight, each one "
                   "removed in turn. Measured worst: 3.9% with IPv4 backend names, 5.3% with "
                   "IPv6 ones; the share falls as the table grows (1.6-1.9% at 4093, "
                   "0.7-0.8% at the default 16381) and exceeds the bound below the advice "
                   "(10.8% at 251 entries for 9 backends): Maglev is not minimal disruption. "
                   "A permutation that ignores the skip (every backend walks the table in "
                   "order) moves 25-58%: the seeded fault."),
        scope="the agent's lookup table (pkg/maglev computeLookupTable) with the default "
              "seed, IPv4 and IPv6 backend names",
        method="tables",
        configs=(MAGLEV_LB, _cfg(DSR, "ipv6", typ=ServiceType.LOADBALANCER, maglev=True)),
        expected=_hold, mutants=((F.MAGLEV_SKIP_IGNORED, MAGLEV_LB),)),
)

# P-NAT-02's IPv4 cell with bpf.masquerade: the same invariant, NodePort allocation's step
# proved there (model.snat reads no masquerade flag), the masquerade step here
MASQ_CELL = _cfg(SNAT, masquerade=True)

PROPERTIES += (
    Property(
        id="P-NAT-04", title="masquerade and NodePort SNAT share the map safely",
        statement=("With bpf.masquerade, pod egress masqueraded to the node's address and "
                   "NodePort SNAT allocate from one SNAT map and one port range "
                   "(snat_v4_new_mapping, nodeport_egress.h:324-325): no two flows of either "
                   "kind ever share one translated tuple, every reverse entry leads back to "
                   "its own flow, and every port lies in the NAT range, also when the range "
                   "is a few ports and the map holds any set of taken ones (collision retries "
                   "and exhaustion included)."),
        scope="the node's SNAT map under any sequence of NodePort allocations, masquerade "
              "allocations (model/masq.py), reply lookups and pair deletions, with the "
              "masquerade address equal to the NodePort address (Cilium's default, the case "
              "where the two kinds share reverse keys; a distinct IPV4_MASQUERADE makes the "
              "key spaces disjoint); IPv4: the masquerade step by induction on P-NAT-02's "
              "invariant (whose NodePort step P-NAT-02 proves; the open map may hold any "
              "set of taken ports), then a model run with a four-port NAT range "
              "(nodePort.range 30000-65531) where two pods and a NodePort flow compete",
        method="induction",
        configs=(MASQ_CELL,),
        expected=_hold,
        mutants=((F.MASQ_IGNORES_REVERSE_ENTRY, MASQ_CELL),)),
)

MTU_BOUNDS = Bounds(packets=1, size=1500)  # a full-size request on a 1500-byte device
MTU_ON = (_cfg(DSR, pmtu=True), _cfg(DSR, "ipv6", proto=UDP, pmtu=True),
          _cfg(DSR, disp=GEN, pmtu=True), _cfg(DSR, pmtu=True, version=CiliumVersion.V1_20))
MTU_CONFIGS = (*MTU_ON, _cfg(DSR), _cfg(DSR, "ipv6", proto=UDP))


def _pmtu_on(c: Config) -> str:
    return HOLD if c.pmtu and not c.ip_options else VIOLATED


PROPERTIES += (
    Property(
        id="P-MTU-01", title="DSR and the MTU: what the client learns",
        statement=("A request that DSR cannot forward as the client sent it (longer than "
                   "the LB node's device MTU once the DSR option, extension header or Geneve "
                   "encapsulation is added; an IPv4 header with no room left for the "
                   "option) is answered to the client: ICMP fragmentation-needed / "
                   "packet-too-big addressed to it, quoting the tuple it sent, whose MTU is "
                   "the device MTU less the DSR overhead (8, 24, or Geneve's 62 / 94), so "
                   "its next attempt fits. Holds with --enable-pmtu-discovery "
                   "(ENABLE_DSR_ICMP_ERRORS; dsr_reply_icmp4/6, nodeport.h:1977, 592). "
                   "Expected counterexamples: with it off (the default) the request leaves "
                   "oversized (dsr_is_too_big is false, nodeport.h:192-200) and the wire "
                   "loses it; an IPv4 header with more than 32 bytes of options is dropped "
                   "(DROP_CT_INVALID_HDR, nodeport.h:1782) in either setting. The client "
                   "learns nothing and retries the same size. And with any IPv4 options in "
                   "the request the error's quote keeps the backend's port (the frontend "
                   "port is written 22 bytes in, :2055, into the options), so the client "
                   "cannot match it to its socket (docs/dsr-mtu.md)."),
        scope="DSR remote backend, 1500-byte requests, device MTU 1500: IPv4 TCP and IPv6 "
              "UDP opt dispatch, IPv4 Geneve, v1.18 and v1.20, PMTU discovery on and off; "
              "IPv4 with 36 and with 4 bytes of options",
        method="bmc",
        configs=(*MTU_CONFIGS, _cfg(DSR, pmtu=True, ip_options=36),
                 _cfg(DSR, pmtu=True, ip_options=4)),
        expected=_pmtu_on, bounds=MTU_BOUNDS,
        mutants=((F.DSR_MTU_KEEPS_OVERHEAD, MTU_ON[0]),
                 (F.DSR_MTU_KEEPS_OVERHEAD, MTU_ON[1]))),
    Property(
        id="P-MTU-02", title="DSR and the MTU: the error's sender",
        statement=("The frag-needed / packet-too-big a DSR LB node answers with comes from "
                   "the address the client contacted. Expected to fail in both trees: the "
                   "request was DNATed before tail_nodeport_ipv4/6_dsr, and "
                   "dsr_reply_icmp4/6 take its destination as the error's source "
                   "(nodeport.h:2009, :622): the client hears from the backend's address, one "
                   "it never contacted (a Linux client still matches the error to its socket "
                   "by the quote). Cilium fixed the source after these trees "
                   "(cilium/cilium#48053, in v1.20.2)."),
        scope="as P-MTU-01, PMTU discovery on",
        method="bmc", configs=MTU_ON, expected=_never, bounds=MTU_BOUNDS,
        mutants=((F.DSR_ICMP_FROM_FRONTEND, MTU_ON[0]),)),
)


def _frags_together(c: Config) -> str:
    """Held where the first fragment arrives first and the version tracks the family."""
    tracked = c.frag_tracking and (not c.ipv6 or c.version is CiliumVersion.V1_20)
    return HOLD if tracked and c.frag_order != "reversed" else VIOLATED


V120 = CiliumVersion.V1_20
FRAG_CONFIGS = (
    _cfg(SNAT, proto=UDP, version=V120, frag_order="in-order"),
    _cfg(DSR, "ipv6", proto=UDP, version=V120, frag_order="first-last"),
    _cfg(SNAT, place=L, version=CiliumVersion.V1_18, frag_order="in-order"),
    _cfg(SNAT, proto=UDP, version=V120, frag_order="reversed"),
    _cfg(SNAT, proto=UDP, version=V120, frag_order="in-order", frag_tracking=False),
    _cfg(DSR, "ipv6", proto=UDP, frag_order="in-order"),
)
XDP_CONFIGS = (
    _cfg(SNAT, xdp=True), _cfg(DSR, xdp=True), _cfg(DSR, "ipv6", xdp=True),
    _cfg(SNAT, place=L, xdp=True),
    _cfg(SNAT, place=L, etp=TrafficPolicy.LOCAL, version=CiliumVersion.V1_20, xdp=True),
    _cfg(SNAT, etp=TrafficPolicy.LOCAL, xdp=True),
)

PROPERTIES += (
    Property(
        id="P-FRAG-01", title="fragments of a datagram stay together",
        statement=("Every fragment of one datagram reaches the same backend, with the same "
                   "(SNAT) source, when its first fragment arrives first: the first records "
                   "its ports in cilium_ipv4/6_frag_datagrams under {saddr, daddr, IP id, "
                   "proto} (ipv4.h:127-134), the later ones, which carry no L4 header, take "
                   "them from there. Expected counterexamples: a later fragment arriving "
                   "first is dropped (DROP_FRAG_NOT_FOUND, ipv4.h:96-98); with tracking off "
                   "bpf_host drops every fragment, the first too (DROP_FRAG_NOSUPPORT, "
                   "bpf_host.c:612-617); "
                   "v1.18 has no IPv6 tracking and drops every IPv6 fragment (v1.18 "
                   "ipv6.h:55-56)."),
        scope="one client, one datagram in two fragments, two backends; SNAT IPv4 UDP and "
              "a local IPv4 TCP backend, DSR IPv6 UDP; in order, first-last, reversed; "
              "tracking off; v1.18 IPv6",
        method="bmc", configs=FRAG_CONFIGS, expected=_frags_together,
        bounds=Bounds(packets=1, backends=2, fragments=2),
        mutants=((F.FRAG_FIRST_NOT_RECORDED, FRAG_CONFIGS[0]),)),
    Property(
        id="P-XDP-01", title="XDP acceleration is transparent",
        statement=("With loadBalancer.acceleration: native every flow has the same outcome "
                   "(delivered, or dropped at the same node for the same reason), reaches the "
                   "same backend, and the backend and the client see the same packets as with "
                   "acceleration disabled. XDP runs nodeport_lb4/6 itself (bpf_xdp.c:97-123); "
                   "it serves remote backends and reverse SNAT with XDP_TX, DNATs a local "
                   "backend and hands it to tc with XFER_PKT_NO_SVC (nodeport.h:2865-2868), "
                   "and in v1.20 punts eTP=Local services to tc untouched (nodeport.h:2732)."),
        scope="one client, one flow (two requests and their replies); SNAT IPv4, DSR IPv4 "
              "and IPv6 to a remote backend, a local backend, eTP=Local punted (v1.20) and "
              "served at XDP (v1.18, no local backend: the ICMP reject at XDP); the twin run "
              "without acceleration draws the same random numbers",
        method="bmc", configs=XDP_CONFIGS, expected=_hold,
        mutants=((F.XDP_ETP_LOCAL_SKIPS_TC, XDP_CONFIGS[4]),)),
)

CIP = ServiceType.CLUSTERIP
V118 = CiliumVersion.V1_18
# P-EW-01: a pod on node1 calls the ClusterIP (socket-LB on and off, both families, a
# backend on its node or node2), node1's or node2's NodePort (v1.18's exact per-packet
# lookup, v1.20's wildcard, socket-LB's), and a hairpin cell without IPv6 loopback
EW_CONFIGS = (
    *(_cfg(SNAT, fam, place, CIP, east_west="clusterip", socket_lb=sock)
      for fam in ("ipv4", "ipv6") for place in (L, R) for sock in (True, False)),
    _cfg(SNAT, place=R, east_west="nodeport-own", socket_lb=False),
    _cfg(SNAT, place=R, east_west="nodeport-own", socket_lb=False, version=V120),
    _cfg(SNAT, place=L, east_west="nodeport-other", socket_lb=False),
    _cfg(SNAT, place=L, east_west="nodeport-other", socket_lb=False, version=V120),
    _cfg(SNAT, place=L, east_west="nodeport-other"),
    _cfg(DSR, place=R, typ=CIP, east_west="clusterip", socket_lb=False),
    _cfg(DSR, place=R, typ=CIP, disp=GEN, east_west="clusterip", socket_lb=False),
    _cfg(SNAT, "ipv6", L, CIP, east_west="hairpin", socket_lb=False))
HAIRPIN_CONFIGS = tuple(
    _cfg(SNAT, fam, L, CIP, east_west="hairpin", socket_lb=sock, version=ver)
    for fam in ("ipv4", "ipv6") for sock in (True, False) for ver in (V118, V120))
EW_BOUNDS = Bounds(packets=2)


def _hairpin_ok(c: Config) -> str:
    """Per-packet LB before v1.20 has no IPv6 loopback (v1.18 lb6_local): the pod's answer to
    its own address stays on lo and never meets the reverse translation."""
    broken = (c.east_west == "hairpin" and c.ipv6 and not c.socket_lb
              and c.version is not CiliumVersion.V1_20)
    return VIOLATED if broken else HOLD


# P-DSR-04 (docs/ipip.md): IPIP dispatch to a LoadBalancer VIP (a frontend every node
# serves), v1.20 terminating in BPF, both families; what else is expected to fail.
IPIP, LB_T = DsrDispatch.IPIP, ServiceType.LOADBALANCER
IPIP_CONFIGS = (
    _cfg(DSR, typ=LB_T, disp=IPIP, version=V120, ipip_term=True),
    _cfg(DSR, "ipv6", typ=LB_T, disp=IPIP, version=V120, ipip_term=True),
    _cfg(DSR, typ=LB_T, proto=UDP, disp=IPIP, version=V120, ipip_term=True),
    _cfg(DSR, place=L, disp=IPIP, version=V120),
    _cfg(DSR, typ=LB_T, disp=IPIP, version=V120),
    _cfg(DSR, typ=LB_T, disp=IPIP, xdp=True),
    _cfg(DSR, disp=IPIP, version=V120, ipip_term=True),
    _cfg(DSR, place=L, typ=LB_T, disp=IPIP, xdp=True),
)


def _ipip_arrives(c: Config) -> str:
    """Only v1.20's BPF termination decapsulates for a pod; the inner destination must be a
    frontend of the backend's node (a VIP, not another node's NodePort); a local backend is
    DNATed on the LB node as under any dispatch, except in v1.18."""
    if c.placement is Placement.LOCAL:  # v1.18 does not DNAT it (nodeport_xlate4)
        return VIOLATED if c.version is CiliumVersion.V1_18 else HOLD
    if not c.ipip_term or c.svc_type is ServiceType.NODEPORT:
        return VIOLATED
    return HOLD


PROPERTIES += (
    Property(
        id="P-EW-01", title="a pod hears from the address it called",
        statement=("A pod calling a service (its ClusterIP, or the NodePort of its own or "
                   "another node) only ever receives answers from the address and port it "
                   "called, to the address and port it called from: with socket-LB the "
                   "socket's recvmsg/getpeername give the frontend back "
                   "(__sock4_xlate_rev, bpf_sock.c:588-632), without it the client's "
                   "to-container reverse-translates by the CT entry's rev_nat_index "
                   "(ipv4_policy, v1.20 bpf_lxc.c:2230-2242, lb4_rev_nat), for another "
                   "node's NodePort under v1.18 that node's reverse SNAT does. Expected "
                   "counterexample: a hairpin call over IPv6 with per-packet LB before "
                   "v1.20 (no IPv6 loopback, v1.18 bpf_lxc.c:486): the pod hears from its "
                   "own backend address."),
        scope="a pod on node1, one connection of two packets, SNAT mode: ClusterIP with "
              "socket-LB on and off, IPv4 and IPv6, backend on node1 or node2 (and under DSR, "
              "native and Geneve tunnel routing, socket-LB off); node1's "
              "NodePort (v1.18, v1.20) and node2's NodePort (v1.18 per packet, v1.20's "
              "wildcard, socket-LB) with socket-LB off unless stated; IPv6 hairpin v1.18",
        method="bmc", configs=EW_CONFIGS, expected=_hairpin_ok, bounds=EW_BOUNDS,
        mutants=((F.EW_REVNAT_SKIPPED, EW_CONFIGS[3]),
                 (F.EW_SOCK_REV_SKIPPED, EW_CONFIGS[2]))),
    Property(
        id="P-EW-02", title="hairpin: a pod reaches itself through its service",
        statement=("A pod that is its own service's backend gets an answer from the "
                   "service's address for every request it delivered to itself: socket-LB "
                   "connects it to its own address (lo) and recvmsg shows the ClusterIP; "
                   "per-packet LB rewrites the source to the service loopback address "
                   "(169.254.42.1 by default; lb4_dnat_request, v1.20 lib/lb.h:2309-2330, "
                   "v1.18 IPV4_LOOPBACK, lib/lb.h:1832) so the answer leaves the pod and "
                   "lb4_rev_nat turns it back (USE_LOOPBACK_LB, v1.20 lib/lb.h:1562-1580). "
                   "Expected counterexample: IPv6 per-packet LB before v1.20, which has no "
                   "loopback (v1.18 bpf_lxc.c:486)."),
        scope="web-0 on node1 calls its own ClusterIP, one connection of two packets: "
              "IPv4 and IPv6, socket-LB on and off, v1.18 and v1.20",
        method="bmc", configs=HAIRPIN_CONFIGS, expected=_hairpin_ok, bounds=EW_BOUNDS,
        mutants=((F.HAIRPIN_NO_LOOPBACK, HAIRPIN_CONFIGS[2]),)),
    Property(
        id="P-DSR-04", title="IPIP dispatch keeps the client IP and the reply source",
        statement=("Under loadBalancer.dsrDispatch: ipip every request reaches a backend "
                   "with the client's address and port as its source and the client's "
                   "replies come from the frontend it called, as under opt dispatch. The LB "
                   "node does not DNAT a remote backend's request (nodeport_skip_xlate4, "
                   "nodeport.h:1642-1653) but sends it inside an outer IP header to the "
                   "backend's address (dsr_set_ipip4/6); v1.20 with --enable-ipip-"
                   "termination strips it on the backend's node and DNATs to that backend "
                   "(bpf_host.c:1149-1175, nodeport.h:2783-2793). Expected counterexamples: "
                   "without termination (v1.18; v1.20 by default) the pod gets the IPIP "
                   "packet and has no handler for it (bpf_host.c:1134-1136); a NodePort "
                   "frontend is the LB node's own address, which the backend's node does "
                   "not serve; v1.18 does not DNAT a local backend's request under IPIP "
                   "either (nodeport_xlate4, v1.18 nodeport.h:1441-1449)."),
        scope="one client, one flow; DSR LoadBalancer IPv4 TCP/UDP and IPv6 TCP (v1.20 "
              "terminating), a local backend (v1.20, v1.18), no termination (v1.20, and "
              "v1.18 under XDP), a NodePort frontend",
        method="bmc", configs=IPIP_CONFIGS, expected=_ipip_arrives,
        mutants=((F.IPIP_DNATS_INNER, IPIP_CONFIGS[0]),)),
)

BY_ID = {p.id: p for p in PROPERTIES}
