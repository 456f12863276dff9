"""Packet parsing on raw bytes starting at the IP header (bpf/lib/ipv4.h, ipv6.h, lb.h tuples)."""

from __future__ import annotations

import socket
import struct

from datapath.drop import DatapathDrop, DropReason

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AUTH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

IPV6_MAX_HEADERS = 4
DSR_IPV4_OPT_TYPE = 0x9A
DSR_IPV4_OPT_LEN = 8
DSR_IPV6_OPT_TYPE = 0x1B
DSR_IPV6_OPT_LEN = 20
DSR_IPV6_EXT_LEN = 2
GENEVE_PORT = 6081
DSR_GENEVE_OPT_CLASS = 0x014B
DSR_GENEVE_OPT_TYPE = 0x81
ETH_P_TEB = 0x6558

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_UDP = struct.Struct("!HHH")
_IP6 = struct.Struct("!4xHBx16s16s")  # payload_len, nexthdr, saddr, daddr
_H = struct.Struct("!H")

PORT_PROTOS = frozenset((IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP))
EXT_HDRS = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_AUTH,
                       IPPROTO_FRAGMENT))

PROTO_NAMES = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "icmp": IPPROTO_ICMP,
               "icmpv6": IPPROTO_ICMPV6, "sctp": IPPROTO_SCTP, "any": 0}


def ip_bytes(text: str) -> bytes:
    """Text address to packed bytes (4 or 16) as Cilium stores __be32 / in6_addr."""
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return socket.inet_aton(text) if text.count(".") == 3 else _bad_addr(text)


def _bad_addr(text: str) -> bytes:
    raise ValueError(f"bad IP address {text!r}")


def ip_text(addr: bytes) -> str:
    """Packed address back to text for dumps and diffs."""
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


class Parsed:
    """The L3/L4 view a BPF program builds with revalidate_data + lb4_extract_tuple."""

    __slots__ = ("buf", "daddr", "dport", "frag_first", "frag_hdr", "frag_id", "frag_more",
                 "frag_offset", "frag_ports", "is_frag", "l3_len", "l4_off", "proto", "saddr",
                 "sport", "tcp_flags", "v6")

    def __init__(self, buf: bytearray, v6: bool, saddr: bytes = b"", daddr: bytes = b"",
                 proto: int = 0, l4_off: int = 0, l3_len: int = 0, sport: int = 0,
                 dport: int = 0, tcp_flags: int = 0) -> None:
        self.buf = buf
        self.v6 = v6
        self.l4_off = l4_off
        self.l3_len = l3_len
        self.proto = proto
        self.saddr = saddr
        self.daddr = daddr
        self.sport = sport
        self.dport = dport
        self.tcp_flags = tcp_flags
        self.is_frag = False
        self.frag_hdr = False  # an IPv6 fragment header, maybe an atomic fragment's
        self.frag_first = True
        self.frag_id = 0  # the IP id (IPv4) or the fragment header's id (IPv6)
        self.frag_offset = 0  # in 8-byte units
        self.frag_more = False  # MF
        self.frag_ports = False  # a later fragment's ports came from the fragment map

    def has_ports(self) -> bool:
        """TCP/UDP/SCTP carry the ports a service lookup needs (a later fragment's from
        cilium_ipv4/6_frag_datagrams)."""
        return (self.frag_first or self.frag_ports) and self.proto in PORT_PROTOS

    def l4_csum_off(self) -> int:
        """Offset of the L4 checksum field, or -1 when the protocol has none we fix."""
        if self.proto == IPPROTO_TCP:
            return self.l4_off + 16
        if self.proto == IPPROTO_UDP:
            return self.l4_off + 6
        return -1


def _drop(reason: DropReason) -> DatapathDrop:
    return DatapathDrop(reason)


def validate_ipv4_options(buf: bytearray | bytes, end: int) -> None:
    """Walk IPv4 options so a malformed option length is rejected, not mis-parsed."""
    off = 20
    while off < end:
        t = buf[off]
        if t == 0:
            return
        if t == 1:
            off += 1
            continue
        if off + 1 >= end:
            raise _drop(DropReason.DROP_INVALID)
        ln = buf[off + 1]
        if ln < 2 or off + ln > end:
            raise _drop(DropReason.DROP_INVALID)
        off += ln


def parse(buf: bytearray, ext_len_off_by_8: bool = False) -> Parsed:
    """Parse an IPv4/IPv6 packet; raise DatapathDrop for anything malformed."""
    if len(buf) < 1:
        raise _drop(DropReason.DROP_INVALID)
    ver = buf[0] >> 4
    if ver == 4:
        return _parse4(buf)
    if ver == 6:
        return _parse6(buf, ext_len_off_by_8)
    raise _drop(DropReason.DROP_INVALID)


def _parse4(buf: bytearray) -> Parsed:
    n = len(buf)
    if n < 20:
        raise _drop(DropReason.DROP_INVALID)
    vihl, _tos, tot_len, ident, frag, _ttl, proto, _c, saddr, daddr = _IP4.unpack_from(buf, 0)
    ihl = (vihl & 0xF) * 4
    if ihl < 20 or ihl > n or tot_len < ihl or tot_len > n:
        raise _drop(DropReason.DROP_INVALID)
    if ihl > 20:
        validate_ipv4_options(buf, ihl)
    if not frag & 0x3FFF:  # the common cases, inlined: one Parsed built with its ports
        if proto == IPPROTO_TCP and ihl + 20 <= tot_len:
            doff = (buf[ihl + 12] >> 4) * 4
            if doff >= 20 and ihl + doff <= tot_len:
                sport, dport = _PORTS.unpack_from(buf, ihl)
                return Parsed(buf, False, saddr, daddr, proto, ihl, tot_len, sport, dport,
                              buf[ihl + 13])
        elif proto == IPPROTO_UDP and ihl + 8 <= tot_len:
            sport, dport, ulen = _UDP.unpack_from(buf, ihl)
            if ulen >= 8 and ihl + ulen <= tot_len:
                return Parsed(buf, False, saddr, daddr, proto, ihl, tot_len, sport, dport)
    p = Parsed(buf, False, saddr, daddr, proto, ihl, tot_len)
    if frag & 0x3FFF:
        p.is_frag = True
        p.frag_id = ident
        p.frag_offset = frag & 0x1FFF
        p.frag_more = bool(frag & 0x2000)
        p.frag_first = (frag & 0x1FFF) == 0
        if not p.frag_first:
            return p
    _parse_l4(p, tot_len)
    return p


def ext_hdr_len(nh: int, hdrlen: int, off_by_8: bool = False) -> int:
    """ipv6_optlen / ipv6_authlen: one extension header's length from its hdrlen byte, the
    one formula every walk of the extension headers shares (v1.20 ipv6.h:67-75, :100-111)."""
    if nh == IPPROTO_FRAGMENT:
        return 8
    if nh == IPPROTO_AUTH:
        return (hdrlen + 2) * 4
    return hdrlen * 8 if off_by_8 else (hdrlen + 1) * 8


def _parse6(buf: bytearray, off_by_8: bool) -> Parsed:
    n = len(buf)
    if n < 40:
        raise _drop(DropReason.DROP_INVALID)
    plen, nh, saddr, daddr = _IP6.unpack_from(buf, 0)
    end = 40 + plen
    if end > n:
        raise _drop(DropReason.DROP_INVALID)
    is_frag = frag_hdr = False
    frag_first = True
    frag_id = fo = 0
    off = 40
    for _ in range(IPV6_MAX_HEADERS):
        if nh == IPPROTO_NONE:  # ipv6_skip_exthdr (v1.20 ipv6.h:83-84, v1.18 :52-53)
            raise _drop(DropReason.DROP_INVALID_EXTHDR)
        if nh in EXT_HDRS:
            if off + 8 > end:
                raise _drop(DropReason.DROP_INVALID)
            nxt = buf[off]
            if nh == IPPROTO_FRAGMENT:
                fo = _H.unpack_from(buf, off + 2)[0]
                # ipfrag_encode_ipv6 (v1.20 ipfrag.h:81-84): an atomic fragment (offset 0,
                # no MF) is no fragment
                frag_hdr = True
                is_frag = bool(fo & 0xFFF9)
                frag_first = (fo & 0xFFF8) == 0
                frag_id = struct.unpack_from("!I", buf, off + 4)[0]
            hl = ext_hdr_len(nh, buf[off + 1], off_by_8)
            if hl == 0 or off + hl > end:
                raise _drop(DropReason.DROP_INVALID)
            off += hl
            nh = nxt
            continue
        break
    else:  # ipv6_hdrlen_offset: IPV6_MAX_HEADERS turns all spent on extension headers,
        # none left to see the upper layer (v1.20 ipv6.h:135-161, v1.18 :50-80)
        raise _drop(DropReason.DROP_INVALID_EXTHDR)
    p = Parsed(buf, True, saddr, daddr, nh, off, end)
    p.frag_hdr = frag_hdr
    if is_frag:
        p.is_frag = True
        p.frag_first = frag_first
        p.frag_id = frag_id
        p.frag_offset = fo >> 3
        p.frag_more = bool(fo & 1)
    if frag_first:
        _parse_l4(p, end)
    return p


def _parse_l4(p: Parsed, end: int) -> None:
    buf = p.buf
    off = p.l4_off
    proto = p.proto
    if proto == IPPROTO_TCP:
        if off + 20 > end:
            raise _drop(DropReason.DROP_CT_INVALID_HDR)
        doff = (buf[off + 12] >> 4) * 4
        if doff < 20 or off + doff > end:
            raise _drop(DropReason.DROP_CT_INVALID_HDR)
        p.sport, p.dport = _PORTS.unpack_from(buf, off)
        p.tcp_flags = buf[off + 13]
    elif proto == IPPROTO_UDP:
        if off + 8 > end:
            raise _drop(DropReason.DROP_INVALID)
        ulen = _H.unpack_from(buf, off + 4)[0]
        # a first fragment's UDP length counts the whole datagram (Cilium reads no length)
        if ulen < 8 or (off + ulen > end and not p.is_frag):
            raise _drop(DropReason.DROP_INVALID)
        p.sport, p.dport = _PORTS.unpack_from(buf, off)
    elif proto == IPPROTO_SCTP:
        if off + 12 > end:
            raise _drop(DropReason.DROP_INVALID)
        p.sport, p.dport = _PORTS.unpack_from(buf, off)
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and off + 8 > end:
        raise _drop(DropReason.DROP_INVALID)


def find_dsr_opt4(buf: bytearray | bytes) -> tuple[bytes, int] | None:
    """nodeport_extract_dsr_v4 for opt dispatch: the DSR option must be first, ihl >= 7."""
    ihl = buf[0] & 0xF
    if ihl < 7:
        return None
    if buf[20] != DSR_IPV4_OPT_TYPE or buf[21] != DSR_IPV4_OPT_LEN:
        return None
    # Cilium stores htons(port) / htonl(addr) of values already in network order, so the
    # wire carries them byte-reversed; the backend applies ntohs/ntohl when reading.
    port = struct.unpack_from("<H", buf, 22)[0]
    addr = bytes(buf[24:28])[::-1]
    return addr, port


def find_dsr_opt6(buf: bytearray | bytes, off_by_8: bool = False) -> tuple[bytes, int] | None:
    """find_dsr_v6: walk extension headers for a 24-byte DEST header carrying opt 0x1B."""
    nh = buf[6]
    off = 40
    end = 40 + _H.unpack_from(buf, 4)[0]
    for _ in range(IPV6_MAX_HEADERS):
        if nh not in EXT_HDRS:
            return None
        if off + 8 > end:
            raise _drop(DropReason.DROP_INVALID)
        hl = ext_hdr_len(nh, buf[off + 1], off_by_8)
        if (nh == IPPROTO_DSTOPTS and hl == 24 and off + 24 <= end
                and buf[off + 2] == DSR_IPV6_OPT_TYPE and buf[off + 3] == DSR_IPV6_OPT_LEN):
            return bytes(buf[off + 4:off + 20]), _H.unpack_from(buf, off + 20)[0]
        nh = buf[off]
        off += hl
    raise _drop(DropReason.DROP_INVALID_EXTHDR)
