"""The abstraction function: datapath bytes and dumped maps -> the model's values and state.

Three translations, each the only bridge between the byte-level datapath and the model:

* `node_config(world, node)`: what the agent programs into one node, from a model World
  (frontends with their rev_nat_index, backends with their ids, local endpoints, the
  node's address, mode/dispatch, NAT range, tunnel, eTP, no-backend response).
* `packet_of(bytes)` / `bytes_of(Packet)`: wire bytes (from the IP header, possibly a Geneve
  outer header) to model.values.Packet {src, dst, proto, flags, dsr, outer, icmp} and back.
* `node_state(dump, ...)`, in datapath/mapstate.py: a `Datapath.dump()` to
  model.maps.NodeState: the four CT maps (cilium_ct{4,6}_global, cilium_ct_any{4,6}_global)
  union into the model's one CT LruMap, the SNAT maps into its NAT LruMap, the LB maps into
  LbMaps.
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, ip_address, ip_network

import attrs

from datapath.build import (
    DEFAULT_DATA,
    dsr_opt4_bytes,
    dsr_opt6_bytes,
    geneve_dsr_opt,
    geneve_encap,
    icmp4_message,
    icmp6_message,
    ipv4,
    ipv6,
    tcp_segment,
    udp_datagram,
)
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.csum import checksum, pseudo_sum
from datapath.drop import DatapathDrop
from datapath.host import geneve_decap
from datapath.ipip import IPPROTO_IPIP
from datapath.ipip import IPPROTO_IPV6 as IPPROTO_IPV6_IN_IP
from datapath.packet import (
    GENEVE_PORT,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    find_dsr_opt4,
    find_dsr_opt6,
    parse,
)
from model.config import CiliumVersion
from model.network import World, maglev_table
from model.topology import Frontend, FrontendKind
from model.values import (
    FRAG_UNITS,
    DsrKind,
    DsrMeta,
    Encap,
    Endpoint,
    FlowKey,
    Fragment,
    IcmpKind,
    IPAddress,
    Outer,
    Packet,
    Proto,
    TcpFlags,
    short_size,
)

_KIND = {FrontendKind.NODEPORT: "nodeport", FrontendKind.LOADBALANCER: "loadbalancer",
         FrontendKind.EXTERNALIP: "externalip", FrontendKind.CLUSTERIP: "clusterip"}
_PROTO = {Proto.TCP: "tcp", Proto.UDP: "udp"}


# Each ICMP error the model names, per family: (IP version, kind) -> (type, code), as
# <linux/icmp.h> and <linux/icmpv6.h> number them. Written here, not imported from the
# datapath's builder (datapath/icmp.py), so that a wrong number on either side shows as a
# divergence instead of cancelling out; tests/test_abstraction_icmp.py pins the table
# against the bytes of vectors/no_backend_reject.yaml (checksums Cilium's tests assert).
ICMP_KINDS: dict[tuple[int, IcmpKind], tuple[int, int]] = {
    (4, IcmpKind.PORT_UNREACHABLE): (3, 3),  # ICMP_DEST_UNREACH / ICMP_PORT_UNREACH
    (6, IcmpKind.PORT_UNREACHABLE): (1, 4),  # ICMPV6_DEST_UNREACH / ICMPV6_PORT_UNREACH
    (4, IcmpKind.FRAG_NEEDED): (3, 4),  # ICMP_DEST_UNREACH / ICMP_FRAG_NEEDED
    (6, IcmpKind.FRAG_NEEDED): (2, 0),  # ICMPV6_PKT_TOOBIG
    (4, IcmpKind.ADMIN_PROHIBITED): (3, 13),  # ICMP_DEST_UNREACH / ICMP_PKT_FILTERED
    (6, IcmpKind.ADMIN_PROHIBITED): (1, 1),  # ICMPV6_DEST_UNREACH / ICMPV6_ADM_PROHIBITED
    (6, IcmpKind.TIME_EXCEEDED): (3, 0),  # ICMPV6_TIME_EXCEED / ICMPV6_EXC_HOPLIMIT
}
_ICMP_BY_WIRE = {(fam, tc): kind for (fam, kind), tc in ICMP_KINDS.items()}


class AbstractionError(ValueError):
    """Bytes or a dump the model has no value for (the datapath emitted something odd)."""


# -- configuration: model World -> datapath NodeConfig ------------------------------------
def node_config(world: World, node: str, *, ct_capacity: int | None = None,
                nat_capacity: int | None = None, agent: AgentView | None = None
                ) -> NodeConfig:
    """The NodeConfig the agent would program into `node` for this World (after the
    endpoint changes `agent` has recorded, if given)."""
    c = world.cluster
    cfg = world.cfg
    me = c.node(node)
    v6 = isinstance(me.ip, IPv6Address)
    services = tuple(
        ServiceConfig(frontend=str(fe.addr.addr), port=fe.addr.port,
                      rev_nat_index=fe.rev_nat_index,
                      backends=fe.backend_ids if agent is None else agent.ids(fe.service),
                      proto=_PROTO[fe.proto], kind=_KIND[fe.kind],  # type: ignore[arg-type]
                      ext_traffic_local=fe.etp_local,
                      source_ranges=tuple(str(r) for r in fe.source_ranges),
                      routable=fe.routable, affinity_timeout=fe.affinity_timeout,
                      maglev=_maglev(world, node, fe, agent))
        for fe in c.frontends_on(node))
    services = _surrogates(world, node, services) + services
    backends = tuple(BackendConfig(id=bid, address=str(b.addr.addr), port=b.addr.port,
                                   proto=_PROTO[_backend_proto(world, bid)])
                     for bid, b in sorted(c.backends.items())) if agent is None \
        else agent.backend_configs()
    endpoints = tuple(EndpointConfig(address=str(p.ip), ifindex=100 + i, ep_id=1000 + i)
                      for i, p in enumerate(c.pods) if p.node == node)
    teps = tuple((str(a), str(t)) for a, t in world.ipcache().items())
    return NodeConfig(
        name=node, ipv4=None if v6 else str(me.ip), ipv6=str(me.ip) if v6 else None,
        mode=cfg.mode.value, dispatch=cfg.dispatch.value,
        ipip_termination=cfg.ipip_termination,
        services=services, backends=backends, endpoints=endpoints, tunnel_endpoints=teps,
        nat_min=cfg.nat_min, nat_max=cfg.nat_max_port,
        ct_capacity=ct_capacity or cfg.ct_max, ct_any_capacity=ct_capacity or cfg.ct_any_max,
        nat_capacity=nat_capacity or cfg.nat_max,
        seed=cfg.seed, tunnel=cfg.tunneling,
        router_ipv4=str(me.router_ip) if me.router_ip is not None and not v6 else None,
        router_ipv6=str(me.router_ip) if me.router_ip is not None and v6 else None,
        no_backend_response="reject" if cfg.reject_no_backend else "drop",
        no_service_endpoints_routable=cfg.no_service_endpoints_routable,
        masquerade=cfg.masquerade,
        masquerade_ipv4=str(me.masq_ip) if me.masq_ip is not None and not v6 else None,
        masquerade_ipv6=str(me.masq_ip) if me.masq_ip is not None and v6 else None,
        snat_exclusion_cidrs=_native_routing_cidr(world),
        pmtu_discovery=cfg.pmtu_discovery, mtu=world.mtu(node),
        fragment_tracking=cfg.fragment_tracking,
        version="1.18" if cfg.version is CiliumVersion.V1_18 else "1.20",
        selection="maglev" if cfg.maglev else "random", maglev_table_size=cfg.maglev_table_size,
        hash_seed4=cfg.maglev_seeds[1], hash_seed6=cfg.maglev_seeds[2],
        socket_lb=cfg.socket_lb, nodeport_min=cfg.nodeport_min)


def _surrogates(world: World, node: str, services: tuple[ServiceConfig, ...]
                ) -> tuple[ServiceConfig, ...]:
    """v1.20: the agent's 0.0.0.0:nodePort (:::nodePort) surrogate of each of the node's
    NodePort frontends, which bpf_lxc's lb4_lookup_wildcard_service finds for any node's
    address; the model folds it into the node's own frontend, so it shares that frontend's
    rev_nat_index and backends (listed first: the real frontend's reverse NAT entry wins).
    Programmed only with socket-LB off, where bpf_lxc's per-packet lookup reads them: the
    reference's bpf_host has no wildcard lookup of its own."""
    if world.cfg.version is not CiliumVersion.V1_20 or world.cfg.socket_lb:
        return ()
    v6 = isinstance(world.cluster.node(node).ip, IPv6Address)
    zero = "::" if v6 else "0.0.0.0"
    return tuple(attrs.evolve(s, frontend=zero) for s in services if s.kind == "nodeport"
                 and s.frontend == str(world.cluster.node(node).ip))


def _maglev(world: World, node: str, fe: Frontend, agent: AgentView | None
            ) -> tuple[int, ...]:
    """The agent's Maglev table for a frontend on `node` (pkg/maglev, as model.network
    computes it): its live backends, only the node's own under eTP=Local."""
    if not world.cfg.maglev:
        return ()
    c = world.cluster
    pods = {p.name: p for p in c.pods}
    if agent is None:
        ids = fe.backends_for(node, c.backends)
        ends = {b: x.addr for b, x in c.backends.items()}
    else:
        ends = {b: Endpoint(addr=pods[pod].ip, port=port)
                for b, (pod, port, _proto) in agent.table.items()}
        ids = tuple(b for b in agent.ids(fe.service)
                    if not fe.etp_local or pods[agent.table[b][0]].node == node)
    return maglev_table(world, ids, ends, fe.proto)


def _native_routing_cidr(world: World) -> tuple[str, ...]:
    """ipv4/ipv6-native-routing-cidr as a user would set it: the smallest prefix holding every
    pod and cilium_host address (IPV4_SNAT_EXCLUSION_DST_CIDR, never masqueraded)."""
    addrs = [p.ip for p in world.cluster.pods] + [
        n.router_ip for n in world.cluster.nodes if n.router_ip is not None]
    if not addrs:
        return ()
    bits: int = addrs[0].max_prefixlen
    ints = [int(a) for a in addrs]
    plen = bits
    while plen and len({i >> (bits - plen) for i in ints}) > 1:
        plen -= 1
    net = ip_network((addrs[0], plen), strict=False)
    return (str(net),)


class AgentView:
    """The agent's endpoint bookkeeping behind cilium_lb{4,6}_backends_v3 IDs.

    Written independently of model.network.reprogram so that the LB maps compared after
    each change check the model's rule rather than copy it: a backend is one (address, port,
    protocol); its ID is stable while any service (or a drain) holds it; a new one takes the
    allocator's next ID (pkg/loadbalancer's IDAllocator: nextID++, freed IDs are not handed
    straight back); a pod dropped from a service is deleted unless listed
    as terminating (kept with BE_STATE_TERMINATING, in no slot) or still live elsewhere.
    """

    def __init__(self, world: World) -> None:
        c = world.cluster
        self.world = world
        self.svc = {s.name: s for s in c.services}
        # backend id -> (pod, port, proto)
        self.table: dict[int, tuple[str, int, Proto]] = {}
        for bid, b in c.backends.items():
            self.table[bid] = (b.pod, b.addr.port, _backend_proto(world, bid))
        self.live: dict[str, tuple[int, ...]] = {}
        for fe in c.frontends:
            self.live.setdefault(fe.service, fe.backend_ids)
        for s in c.services:
            self.live.setdefault(s.name, ())
        self.draining: dict[str, set[int]] = {}  # service -> its terminating backends
        self.terminating: set[int] = set()
        self.next_id = max(self.table, default=0) + 1

    def ids(self, service: str) -> tuple[int, ...]:
        """The service's live backend IDs, in slot order."""
        return self.live[service]

    def backend_id(self, service: str, pod: str) -> int | None:
        """The ID `pod` has as a backend of `service`, if it is one."""
        s = self.svc[service]
        for bid in self.live[service]:
            if self.table[bid] == (pod, s.target_port, s.proto):
                return bid
        return None

    def apply(self, service: str, pods: tuple[str, ...], terminating: tuple[str, ...]) -> None:
        """One endpoint change: `service` now has `pods`; `terminating` pods drain."""
        s = self.svc[service]
        by_key = {k: bid for bid, k in self.table.items()}
        ids = []
        for pod in pods:
            key = (pod, s.target_port, s.proto)
            if key not in by_key:
                by_key[key], self.next_id = self.next_id, self.next_id + 1
                self.table[by_key[key]] = key
            ids.append(by_key[key])
        dropped = set(self.live[service]) | self.draining.get(service, set())
        self.live[service] = tuple(ids)
        held = {b for v in self.live.values() for b in v}
        drain = {b for b in dropped - held if self.table[b][0] in terminating}
        self.draining[service] = drain
        others = {b for n, v in self.draining.items() if n != service for b in v}
        for bid in dropped - held - drain - others:
            self.table.pop(bid)
        for n in self.draining:  # back in a service: active again
            self.draining[n] -= held
        self.terminating = {b for v in self.draining.values() for b in v}

    def backend_configs(self) -> tuple[BackendConfig, ...]:
        """cilium_lb{4,6}_backends_v3 as the agent writes it now."""
        c = self.world.cluster
        return tuple(
            BackendConfig(id=bid, address=str(c.pod(pod).ip), port=port, proto=_PROTO[proto],
                          state="terminating" if bid in self.terminating else "active")
            for bid, (pod, port, proto) in sorted(self.table.items()))


def _backend_proto(world: World, bid: int) -> Proto:
    for fe in world.cluster.frontends:
        if bid in fe.backend_ids:
            return fe.proto
    return Proto.TCP


# -- packets: bytes <-> model Packet -------------------------------------------------------
def _ip(b: bytes) -> IPAddress:
    return ip_address(b)


def packet_of(data: bytes | bytearray) -> Packet:
    """Wire bytes (IP header first, maybe Geneve-encapsulated) to the model's Packet."""
    buf = bytearray(data)
    try:
        p = parse(buf)
        outer: Outer | None = None
        dsr: DsrMeta | None = None
        geneve = None
        if p.proto == IPPROTO_UDP and p.dport == GENEVE_PORT:
            try:
                geneve = geneve_decap(buf)
            except DatapathDrop:  # no Geneve header behind port 6081: a plain datagram
                geneve = None
        if p.proto == (IPPROTO_IPV6_IN_IP if p.v6 else IPPROTO_IPIP) and not p.is_frag:
            # DSR dispatch ipip: an outer IP header and the client's packet behind it
            outer = Outer(src=_ip(p.saddr), dst=_ip(p.daddr), vni=0, kind=Encap.IPIP)
            buf = bytearray(buf[p.l4_off:p.l3_len])
            p = parse(buf)
        elif geneve is not None:
            off = p.l4_off + 8
            vni = int.from_bytes(buf[off + 4:off + 7], "big")
            outer = Outer(src=_ip(p.saddr), dst=_ip(p.daddr), vni=vni)
            inner, ginfo = geneve
            if ginfo is not None:
                dsr = DsrMeta(kind=DsrKind.GENEVE_OPTION,
                              frontend=Endpoint(addr=_ip(ginfo[0]), port=ginfo[1]))
            buf = inner
            p = parse(buf)
        if dsr is None and p.proto in (6, 17):
            info = find_dsr_opt6(buf) if p.v6 else find_dsr_opt4(buf)
            if info is not None:
                dsr = DsrMeta(kind=DsrKind.IPV6_DSTOPT if p.v6 else DsrKind.IPV4_OPTION,
                              frontend=Endpoint(addr=_ip(info[0]), port=info[1]))
    except Exception as e:  # the datapath's own drop exception or a short buffer
        raise AbstractionError(f"unparseable packet {bytes(data[:64]).hex()}: {e}") from None
    if p.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        fam = 6 if p.v6 else 4
        if p.proto != (IPPROTO_ICMPV6 if p.v6 else IPPROTO_ICMP):
            raise AbstractionError(f"protocol {p.proto} in an IPv{fam} packet: ICMP is "
                                   f"{IPPROTO_ICMP} in IPv4, {IPPROTO_ICMPV6} in IPv6")
        t, code = buf[p.l4_off], buf[p.l4_off + 1]
        icmp = _ICMP_BY_WIRE.get((fam, (t, code)))
        if icmp is None:
            raise AbstractionError(f"ICMP{'v6' if p.v6 else ''} type {t} code {code} has no "
                                   "model value")
        mtu = None
        if icmp is IcmpKind.FRAG_NEEDED:  # RFC 1191 next-hop MTU / RFC 4443 MTU; 0: none
            mtu = int.from_bytes(buf[p.l4_off + 4:p.l4_off + 8], "big") or None
        return Packet(src=Endpoint(addr=_ip(p.saddr), port=0),
                      dst=Endpoint(addr=_ip(p.daddr), port=0), proto=Proto(p.proto),
                      icmp=icmp, outer=outer, quote=quote_of(buf, p.l4_off, p.v6), mtu=mtu)
    if p.proto not in (6, 17):
        raise AbstractionError(f"protocol {p.proto} has no model value")
    added = 0 if dsr is None or dsr.kind is DsrKind.GENEVE_OPTION else (
        24 if p.v6 else 8)
    opts = 0 if p.v6 else (buf[0] & 0xF) * 4 - 20 - added
    proto = Proto(p.proto)
    size: int | None = p.l3_len - added
    frag = (Fragment(id=p.frag_id, offset=p.frag_offset, more=p.frag_more)
            if p.is_frag else None)
    if frag is not None or size == short_size(p.v6, proto, opts):
        size = None  # a fragment's length is its piece's, not the request's
    return Packet(src=Endpoint(addr=_ip(p.saddr), port=p.sport),
                  dst=Endpoint(addr=_ip(p.daddr), port=p.dport), proto=proto,
                  flags=TcpFlags(p.tcp_flags & 0x1F), dsr=dsr, outer=outer, size=size,
                  ip_options=opts, frag=frag)


def wire_fault(data: bytes | bytearray) -> str | None:
    """What a receiving host stack would reject: a bad IPv4 header or L4 checksum."""
    try:
        p = parse(bytearray(data))
        if not p.v6 and checksum(data[:p.l4_off]) != 0:
            return "BAD_IP_CHECKSUM"
        if p.is_frag:  # an L4 checksum covers the reassembled datagram, not a fragment
            return None
        seg = bytes(data[p.l4_off:p.l3_len])
        if p.proto == IPPROTO_ICMP:
            ok = checksum(seg) == 0
        elif p.proto in (6, IPPROTO_UDP, IPPROTO_ICMPV6):
            ok = checksum(seg, pseudo_sum(p.saddr, p.daddr, p.proto, len(seg))) == 0
            # UDP checksum 0: "none" on IPv4, and allowed for tunnels on IPv6 (RFC 6935).
            ok = ok or (p.proto == IPPROTO_UDP and seg[6:8] == b"\0\0"
                        and (not p.v6 or p.dport == GENEVE_PORT))
        else:
            ok = True
    except Exception:
        return "MALFORMED"
    return None if ok else "BAD_L4_CHECKSUM"


QUOTE_UNKNOWN_PROTO = 253  # RFC 3692 experimental: a quote the model has no tuple for


def _quote_bytes(pkt: Packet, v6: bool) -> bytes:
    """The header an ICMP error quotes: its tuple (TCP/UDP), or, for an error the model
    keeps no quote of, a packet back to the error's source with no L4 ports."""
    q = pkt.quote
    if q is None:
        s, d = pkt.dst.addr.packed, pkt.src.addr.packed
        return (ipv6(s, d, QUOTE_UNKNOWN_PROTO, b"\0" * 8) if v6
                else ipv4(s, d, QUOTE_UNKNOWN_PROTO, b"\0" * 8))
    s, d = q.src.addr.packed, q.dst.addr.packed
    l4 = (tcp_segment(s, d, q.src.port, q.dst.port, 0) if q.proto is Proto.TCP
          else udp_datagram(s, d, q.src.port, q.dst.port))
    return ipv6(s, d, int(q.proto), l4) if v6 else ipv4(s, d, int(q.proto), l4)


def quote_of(buf: bytes | bytearray, l4_off: int, v6: bool) -> FlowKey | None:
    """The tuple an ICMP error quotes (RFC 792: the IP header and at least 8 bytes after
    it; RFC 4443: as much as fits): TCP/UDP only, IPv6 without extension headers but a
    first fragment's fragment header."""
    q = l4_off + 8
    try:
        if v6:
            nh, a, b, off = buf[q + 6], buf[q + 8:q + 24], buf[q + 24:q + 40], q + 40
            if nh == IPPROTO_FRAGMENT and not int.from_bytes(buf[off + 2:off + 4]) & 0xFFF8:
                nh, off = buf[off], off + 8  # a first fragment's quote: ports follow
        else:
            nh, a, b = buf[q + 9], buf[q + 12:q + 16], buf[q + 16:q + 20]
            off = q + (buf[q] & 0xF) * 4
        if nh not in (IPPROTO_TCP, IPPROTO_UDP) or len(buf) < off + 4:
            return None
        sport, dport = int.from_bytes(buf[off:off + 2], "big"), int.from_bytes(
            buf[off + 2:off + 4], "big")
    except IndexError:
        return None
    return FlowKey(src=Endpoint(addr=_ip(bytes(a)), port=sport),
                   dst=Endpoint(addr=_ip(bytes(b)), port=dport), proto=Proto(nh))


def bytes_of(pkt: Packet) -> bytes:
    """A model Packet as the bytes a client, a pod or a node would put on the wire."""
    s, d = pkt.src.addr.packed, pkt.dst.addr.packed
    v6 = len(s) == 16
    if pkt.icmp is not None:
        fam = 6 if v6 else 4
        if (fam, pkt.icmp) not in ICMP_KINDS:
            raise AbstractionError(f"{pkt.icmp.value} has no ICMP{'v6' if v6 else ''} form")
        t, code = ICMP_KINDS[(fam, pkt.icmp)]
        quote = _quote_bytes(pkt, v6)
        mtu = pkt.mtu or 0
        if v6:
            inner = ipv6(s, d, IPPROTO_ICMPV6, icmp6_message(s, d, t, code,
                                                             mtu.to_bytes(4, "big"), quote))
        else:
            inner = ipv4(s, d, IPPROTO_ICMP, icmp4_message(t, code,
                                                           mtu.to_bytes(4, "big"), quote))
    else:
        proto = int(pkt.proto)
        payload = DEFAULT_DATA
        if pkt.size is not None:
            short = short_size(v6, pkt.proto, pkt.ip_options)
            payload = DEFAULT_DATA + bytes(max(0, pkt.size - short))
        l4 = (tcp_segment(s, d, pkt.src.port, pkt.dst.port, int(pkt.flags), payload=payload)
              if pkt.proto is Proto.TCP else udp_datagram(s, d, pkt.src.port, pkt.dst.port,
                                                          payload=payload))
        ident = word = 0
        nh6 = proto  # what the IPv6 chain leads to after a DSR option
        if pkt.frag is not None:
            l4, ident, word, nh6 = _fragment(pkt.frag, l4, proto, v6)
        meta = pkt.dsr
        fe = meta.frontend if meta is not None else None
        nops = b"\x01" * pkt.ip_options  # IPOPT_NOOP
        if meta is not None and fe is not None and meta.kind is DsrKind.IPV4_OPTION:
            inner = ipv4(s, d, proto, l4, ident=ident, frag=word,
                         options=dsr_opt4_bytes(fe.addr.packed, fe.port) + nops)
        elif meta is not None and fe is not None and meta.kind is DsrKind.IPV6_DSTOPT:
            inner = ipv6(s, d, IPPROTO_DSTOPTS,
                         dsr_opt6_bytes(nh6, fe.addr.packed, fe.port) + l4)
        else:
            inner = (ipv6(s, d, nh6, l4) if v6
                     else ipv4(s, d, proto, l4, ident=ident, frag=word, options=nops))
    if pkt.outer is None:
        return inner
    if pkt.outer.kind is Encap.IPIP:  # the kernel IPIP device's outer header (ipip.py)
        o = pkt.outer
        if v6:
            return ipv6(o.src.packed, o.dst.packed, IPPROTO_IPV6_IN_IP, inner)
        return ipv4(o.src.packed, o.dst.packed, IPPROTO_IPIP, inner)
    opt = b""
    if pkt.dsr is not None and pkt.dsr.kind is DsrKind.GENEVE_OPTION:
        opt = geneve_dsr_opt(pkt.dsr.frontend.addr.packed, pkt.dsr.frontend.port)
    o = pkt.outer
    return geneve_encap(o.src.packed, o.dst.packed, inner, o.vni, opt, 40000, v6)


def _fragment(frag: Fragment, l4: bytes, proto: int, v6: bool) -> tuple[bytes, int, int, int]:
    """A fragment's L4 bytes, IPv4 id and flags/offset word, and the IPv6 next header: the
    first carries the datagram's first FRAG_UNITS * 8 bytes (its L4 header), a later one
    as many zero bytes; IPv6 puts a fragment header (RFC 8200 4.5) in front."""
    size = FRAG_UNITS * 8
    body = l4[:size] if frag.first else b"\0" * size
    if not v6:
        return body, frag.id & 0xFFFF, (0x2000 if frag.more else 0) | frag.offset, proto
    hdr = struct.pack("!BBHI", proto, 0, (frag.offset << 3) | int(frag.more), frag.id)
    return hdr + body, 0, 0, IPPROTO_FRAGMENT
