"""Packet builders producing the exact bytes Cilium's pktgen and datapath write."""

from __future__ import annotations

import struct

from datapath.csum import checksum, pseudo_sum
from datapath.packet import (
    DSR_GENEVE_OPT_CLASS,
    DSR_GENEVE_OPT_TYPE,
    DSR_IPV6_EXT_LEN,
    DSR_IPV6_OPT_LEN,
    DSR_IPV6_OPT_TYPE,
    ETH_P_TEB,
    GENEVE_PORT,
    IPPROTO_DSTOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_SYN,
)

# pktgen's default_data is "Should not change!!" including its NUL terminator.
DEFAULT_DATA = b"Should not change!!\x00"
# pktgen writes seq = 123456 in host (little-endian) order, so the wire value is this.
PKTGEN_SEQ = 0x40E20100

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")


def tcp_segment(saddr: bytes, daddr: bytes, sport: int, dport: int, flags: int = TCP_SYN,
                seq: int = PKTGEN_SEQ, ack: int = 0, window: int = 0xFFFF,
                payload: bytes = DEFAULT_DATA, options: bytes = b"") -> bytes:
    """TCP header + payload with a correct checksum over the pseudo header."""
    doff = (20 + len(options)) // 4
    hdr = _TCP.pack(sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options
    seg = hdr + payload
    c = checksum(seg, pseudo_sum(saddr, daddr, IPPROTO_TCP, len(seg)))
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp_datagram(saddr: bytes, daddr: bytes, sport: int, dport: int,
                 payload: bytes = DEFAULT_DATA, zero_csum: bool = False) -> bytes:
    """UDP header + payload; zero_csum leaves the IPv4 'no checksum' value."""
    ln = 8 + len(payload)
    dg = _UDP.pack(sport, dport, ln, 0) + payload
    if zero_csum:
        return dg
    c = checksum(dg, pseudo_sum(saddr, daddr, IPPROTO_UDP, ln)) or 0xFFFF
    return dg[:6] + struct.pack("!H", c) + dg[8:]


def icmp4_message(icmp_type: int, code: int, rest: bytes, payload: bytes) -> bytes:
    """ICMPv4 message (errors embed the offending packet in payload)."""
    msg = bytes([icmp_type, code, 0, 0]) + rest[:4].ljust(4, b"\0") + payload
    c = checksum(msg)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def icmp6_message(saddr: bytes, daddr: bytes, icmp_type: int, code: int, rest: bytes,
                  payload: bytes) -> bytes:
    """ICMPv6 message, checksummed over the IPv6 pseudo header."""
    msg = bytes([icmp_type, code, 0, 0]) + rest[:4].ljust(4, b"\0") + payload
    c = checksum(msg, pseudo_sum(saddr, daddr, IPPROTO_ICMPV6, len(msg)))
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def ipv4(saddr: bytes, daddr: bytes, proto: int, l4: bytes, ttl: int = 64, ident: int = 0,
         tos: int = 0, frag: int = 0, options: bytes = b"", csum_base_only: bool = False,
         tot_len: int | None = None) -> bytes:
    """IPv4 header (+options) + L4; csum_base_only mimics pktgen's 20-byte-only checksum."""
    opts = options + b"\0" * (-len(options) % 4)
    ihl = 5 + len(opts) // 4
    tl = 20 + len(opts) + len(l4) if tot_len is None else tot_len
    hdr = _IP4.pack(0x40 | ihl, tos, tl, ident, frag, ttl, proto, 0, saddr, daddr) + opts
    c = checksum(hdr[:20] if csum_base_only else hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + l4


def ipv6(saddr: bytes, daddr: bytes, nexthdr: int, payload: bytes, hlim: int = 64,
         tclass: int = 0, flow: int = 0) -> bytes:
    """IPv6 fixed header + payload (payload may start with extension headers)."""
    first = (6 << 28) | (tclass << 20) | flow
    return _IP6.pack(first, len(payload), nexthdr, hlim, saddr, daddr) + payload


def ext_header(nexthdr: int, body: bytes) -> bytes:
    """Generic hop-by-hop/routing/dest-options header, body padded to 8n+6 bytes."""
    body = body + b"\0" * (-(len(body) + 2) % 8)
    return bytes([nexthdr, (len(body) + 2) // 8 - 1]) + body


def dsr_opt4_bytes(vip: bytes, vport: int, network_order: bool = False) -> bytes:
    """struct dsr_opt_v4 as written on little-endian hosts: port and address byte-reversed."""
    if network_order:
        return bytes([0x9A, 0x08]) + struct.pack("!H", vport) + vip
    return bytes([0x9A, 0x08]) + struct.pack("<H", vport) + vip[::-1]


def dsr_opt6_bytes(nexthdr: int, vip: bytes, vport: int, port_le: bool = False) -> bytes:
    """struct dsr_opt_v6: 24-byte destination-options header carrying VIP and port."""
    port = struct.pack("<H" if port_le else "!H", vport)
    return bytes([nexthdr, DSR_IPV6_EXT_LEN, DSR_IPV6_OPT_TYPE, DSR_IPV6_OPT_LEN]) + vip + \
        port + b"\0\0"


def geneve_dsr_opt(vip: bytes, vport: int) -> bytes:
    """Cilium's Geneve DSR TLV: class 0x014B, type 0x81, addr + port (network order) + pad."""
    body = vip + struct.pack("!H", vport) + b"\0\0"
    return struct.pack("!HBB", DSR_GENEVE_OPT_CLASS, DSR_GENEVE_OPT_TYPE, len(body) // 4) + body


def geneve_encap(outer_src: bytes, outer_dst: bytes, inner: bytes, vni: int, opts: bytes,
                 sport: int, inner_v6: bool = False, inner_dmac: bytes = b"\0" * 6,
                 inner_smac: bytes = b"\0" * 6, ttl: int = 64) -> bytes:
    """Outer IPv4/UDP 6081/Geneve (+TLVs) + inner Ethernet + inner IP, UDP csum 0."""
    ethertype = 0x86DD if inner_v6 else 0x0800
    eth = inner_dmac + inner_smac + struct.pack("!H", ethertype)
    gen = struct.pack("!BBHI", len(opts) // 4, 0, ETH_P_TEB, (vni & 0xFFFFFF) << 8) + opts
    udp_payload = gen + eth + inner
    udp = _UDP.pack(sport, GENEVE_PORT, 8 + len(udp_payload), 0) + udp_payload
    if len(outer_dst) == 16:  # IPv6 underlay: zero UDP checksum (RFC 6935 tunnels)
        return ipv6(outer_src, outer_dst, IPPROTO_UDP, udp, hlim=ttl)
    return ipv4(outer_src, outer_dst, IPPROTO_UDP, udp, ttl=ttl)


def icmp4_error(saddr: bytes, daddr: bytes, icmp_type: int, code: int, inner: bytes,
                rest: bytes = b"\0\0\0\0") -> bytes:
    """ICMPv4 error carrying the first bytes of the offending packet."""
    return ipv4(saddr, daddr, IPPROTO_ICMP, icmp4_message(icmp_type, code, rest, inner))


def add_dest_opts(nexthdr_after: int, body: bytes) -> tuple[int, bytes]:
    """Helper for tests: a DEST header in front of some L4 payload."""
    return IPPROTO_DSTOPTS, ext_header(nexthdr_after, body)
