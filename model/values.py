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


@attrs.frozen(kw_only=True)
class Outer:
    """Outer Geneve/UDP header added by encapsulation towards a tunnel endpoint."""

    src: IPAddress
    dst: IPAddress
    vni: int = WORLD_ID


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


@attrs.frozen(kw_only=True, order=True)
class FlowKey:
    """A 5-tuple in packet order (src, dst, proto); reversed() gives the reply's."""

    src: Endpoint
    dst: Endpoint
    proto: Proto

    def reversed(self) -> FlowKey:
        """The tuple a reply to this packet carries."""
        return FlowKey(src=self.dst, dst=self.src, proto=self.proto)
