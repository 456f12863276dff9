"""Immutable packet-level values shared by every model layer."""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address

import attrs

IPAddress = IPv4Address | IPv6Address

# The Geneve VNI carries the sender's security identity (lib/encap.h __encap_with_nodeid).
# Nodeport traffic is world's: WORLD_ID on the wire for both families (single-stack defines
# WORLD_IPV6_ID as 2; dual-stack's world-ipv4/-ipv6, 9/10, go out as WORLD_ID through
# get_tunnel_id(), bpf/lib/common.h:121).
WORLD_ID = 2
WORLD_IPV6_ID = 10
# The identity a NodePort reply carries when it is tunnelled to a client inside the cluster
# (nodeport.h:2343, v1.20: REMOTE_NODE_ID). v1.18 sends the program's own SECLABEL
# (v1.18 nodeport.h:2116): bpf_host's is the host endpoint's (reserved:host), which
# __encap_with_nodeid turns into LOCAL_NODE_ID, 6 (v1.18 lib/encap.h:37-38); bpf_overlay is
# compiled with SECLABEL=WORLD_ID by the agent's loader, so its replies carry 2.
REMOTE_NODE_ID = 6
# A pod's packet leaves bpf_lxc with the pod's identity (bpf_lxc.c:1340 encap_and_redirect_lxc
# with SECLABEL). The model has no labels or policy: every pod has this one identity (the
# reference datapath and the cilium-bpf harness program the same).
POD_IDENTITY = 1000
# Geneve UDP port used by Cilium's tunnel device.
GENEVE_PORT = 6081
# DSR option constants (bpf/lib/nodeport.h, bpf/lib/tunnel.h).
DSR_IPV4_OPT_TYPE = 0x9A
DSR_IPV6_OPT_TYPE = 0x1B
DSR_GENEVE_OPT_CLASS = 0x014B
DSR_GENEVE_OPT_TYPE = 0x81


class Proto(enum.IntEnum):
    """L4 protocol numbers as they appear in the IP header's nexthdr."""

    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58


class TcpFlags(enum.IntFlag):
    """TCP header flag bits, as Cilium reads them for CT and DSR decisions."""

    NONE = 0
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10

    def letters(self) -> str:
        """Render in the scapy style users know (S, SA, A, FA)."""
        out = ""
        for bit, ch in ((TcpFlags.FIN, "F"), (TcpFlags.SYN, "S"), (TcpFlags.RST, "R"),
                        (TcpFlags.PSH, "P"), (TcpFlags.ACK, "A")):
            if self & bit:
                out += ch
        return out

    @classmethod
    def parse(cls, text: str) -> TcpFlags:
        """Inverse of letters(); unknown letters raise ValueError."""
        table = {"F": cls.FIN, "S": cls.SYN, "R": cls.RST, "P": cls.PSH, "A": cls.ACK}
        flags = cls.NONE
        for ch in text:
            flags |= table[ch]
        return flags


class DsrKind(enum.Enum):
    """Where the frontend travels on a DSR packet (loadBalancer.dsrDispatch encodings)."""

    IPV4_OPTION = "ipv4-option"
    IPV6_DSTOPT = "ipv6-dstopt"
    GENEVE_OPTION = "geneve-option"


class IcmpKind(enum.Enum):
    """ICMP errors by meaning, the same in both families (their type/code numbers differ:
    the abstraction maps them). The model's own NodePort path generates PORT_UNREACHABLE;
    the others are errors Cilium's programs write elsewhere, named so that a datapath
    emitting one shows as that error rather than as garbage."""

    PORT_UNREACHABLE = "port-unreachable"  # tail_no_service_ipv4/6 (lb.h:2345, 2383)
    FRAG_NEEDED = "frag-needed"  # DSR MTU errors: nodeport.h:1993 (v4), :610 (v6 too big)
    ADMIN_PROHIBITED = "admin-prohibited"  # policy deny response (bpf_lxc.c:2729, 2764)
    TIME_EXCEEDED = "time-exceeded"  # IPv6 hop limit reached (icmp6.h:248)


@attrs.frozen(kw_only=True, order=True)
class Endpoint:
    """An L3 address plus an L4 port, the unit every NAT rewrites."""

    addr: IPAddress
    port: int = attrs.field(validator=attrs.validators.and_(
        attrs.validators.ge(0), attrs.validators.le(65535)))

    def __str__(self) -> str:
        if isinstance(self.addr, IPv6Address):
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"


@attrs.frozen(kw_only=True)
class DsrMeta:
    """The service frontend carried to the backend's node (dsr_opt_v4 / dsr_opt_v6 / Geneve)."""

    kind: DsrKind
    frontend: Endpoint


class Encap(enum.Enum):
    """Which encapsulation an outer header belongs to."""

    GENEVE = "geneve"  # outer IP, UDP 6081, Geneve, inner Ethernet (cilium_geneve)
    IPIP = "ipip"  # outer IP only, protocol 4 / next header 41 (DSR dispatch ipip)


@attrs.frozen(kw_only=True)
class Outer:
    """Outer header added by encapsulation: Geneve/UDP towards a tunnel endpoint, or IPIP
    towards a DSR backend (no VNI on the wire: tunnel_id 0, nodeport.h:1669)."""

    src: IPAddress
    dst: IPAddress
    vni: int = WORLD_ID
    kind: Encap = Encap.GENEVE

    @property
    def length(self) -> int:
        """Bytes the encapsulation adds in front of the inner IP header."""
        ip = 40 if isinstance(self.dst, IPv6Address) else 20
        return ip if self.kind is Encap.IPIP else ip + 8 + 8 + 14


# Each fragment the model sends carries this many 8-byte units of its datagram (24 bytes:
# room for a TCP header in the first, RFC 791 offsets count 8-byte units).
FRAG_UNITS = 3


@attrs.frozen(kw_only=True)
class Fragment:
    """An IP fragment's identity: the datagram's IP id (16 bits in IPv4, 32 in the IPv6
    fragment header), its offset in 8-byte units and the more-fragments bit. Only the
    first fragment (offset 0) carries the L4 header: the others have no ports (0 here)."""

    id: int
    offset: int = 0
    more: bool = False

    @property
    def first(self) -> bool:
        """Offset 0: the fragment with the L4 header (ipfrag_has_l4_header)."""
        return self.offset == 0


@attrs.frozen(kw_only=True)
class Packet:
    """An L3/L4 packet as the model sees it: tuple, flags, DSR metadata, encapsulation."""

    src: Endpoint
    dst: Endpoint
    proto: Proto
    flags: TcpFlags = TcpFlags.NONE
    dsr: DsrMeta | None = None
    outer: Outer | None = None
    icmp: IcmpKind | None = None
    quote: FlowKey | None = None  # an ICMP error's quoted inner header (RFC 792/4443)
    # L3 length as the client built it (IP header with its own options, L4, payload; not
    # the DSR metadata or encapsulation a node adds); None: the model's short packet.
    size: int | None = None
    ip_options: int = 0  # bytes of IPv4 options the client put in its header (NOPs)
    mtu: int | None = None  # a frag-needed / packet-too-big's MTU field (None: 0 on the wire)
    frag: Fragment | None = None  # an IP fragment (MF/offset, IPv6 fragment header)

    @property
    def is_syn(self) -> bool:
        """True for a TCP packet with SYN set (Cilium's DSR option trigger)."""
        return self.proto is Proto.TCP and bool(self.flags & TcpFlags.SYN)

    @property
    def is_ipv6(self) -> bool:
        """Address family of the inner packet."""
        return isinstance(self.dst.addr, IPv6Address)

    def key(self) -> FlowKey:
        """The 5-tuple of this packet in packet order."""
        return FlowKey(src=self.src, dst=self.dst, proto=self.proto)


# The L3 length of the model's short packet (size None): IP header, TCP (20) or UDP (8)
# header and pktgen's 20-byte payload (datapath/build.py DEFAULT_DATA).
SHORT_PAYLOAD = 20


def short_size(ipv6: bool, proto: Proto, ip_options: int = 0) -> int:
    """The L3 length of a short packet: what `size: None` stands for on the wire."""
    l4 = 20 if proto is Proto.TCP else 8
    return (40 if ipv6 else 20) + ip_options + l4 + SHORT_PAYLOAD


# What DSR adds in front of the client's packet (nodeport.h struct sizes): the IPv4 option
# (struct dsr_opt_v4, 8), the IPv6 destination-options header (struct dsr_opt_v6, 24), and
# for Geneve dispatch the encapsulation encap_geneve_dsr_opt4/6 count: outer IP (IPv4 20;
# the v6 function counts an ipv6hdr, 40), UDP 8, Geneve 8, inner Ethernet 14, and the DSR
# TLV (geneve_dsr_opt4 12, geneve_dsr_opt6 24) only when the packet carries the frontend.
DSR_OPT4_LEN = 8
DSR_OPT6_LEN = 24
MAX_IPOPTLEN = 40


def dsr_overhead(kind: DsrKind | None, ipv6: bool, geneve: bool) -> int:
    """Bytes the LB node adds to a DSR request (what dsr_is_too_big compares)."""
    if geneve:
        base = (40 if ipv6 else 20) + 8 + 8 + 14
        if kind is DsrKind.GENEVE_OPTION:
            base += 24 if ipv6 else 12
        return base
    if kind is DsrKind.IPV4_OPTION:
        return DSR_OPT4_LEN
    if kind is DsrKind.IPV6_DSTOPT:
        return DSR_OPT6_LEN
    return 0


@attrs.frozen(kw_only=True, order=True)
class FlowKey:
    """A 5-tuple in packet order (src, dst, proto); reversed() gives the reply's."""

    src: Endpoint
    dst: Endpoint
    proto: Proto

    def reversed(self) -> FlowKey:
        """The tuple a reply to this packet carries."""
        return FlowKey(src=self.dst, dst=self.src, proto=self.proto)
