"""The property catalogue: stable IDs, statements, scope and the expected result per configuration.

Like a TLA+ manifest: each property names the configurations it is checked under and
whether it is expected to hold there; `nodeport prove` fails when a result differs.
Each property also names the seeded faults (model/faults.py) that must break it.
"""

from __future__ import annotations

from model.config import CiliumVersion, DsrDispatch
from model.topology import ServiceType, TrafficPolicy
from properties.configs import Config, Placement
from properties.coreprops import (
    CORE,
    DSR,
    GEN,
    HOLD,
    SNAT,
    UDP,
    VIOLATED,
    F,
    L,
    Property,
    R,
    _cfg,
    _hold,
    _never,
)
from properties.symworld import Bounds

PROPERTIES: tuple[Property, ...] = CORE


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
