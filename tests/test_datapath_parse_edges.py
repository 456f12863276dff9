"""Parser and builder edges the mutation check found unpinned: header-only and fragment
IPv4 packets, TCP data offsets, cut IPv6 extension headers, the DSR option searches, and
the builders' bytes against scapy's.

Cilium lines are v1.20 (`bpf/lib/...`). Where the reference is stricter than Cilium (a TCP
data offset, a 7-byte UDP header in a first fragment) the test says so: the reference drops
what it cannot parse exactly (docs/validating-a-datapath.md, "Malformed headers").
"""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, PadN
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from datapath.build import (
    DEFAULT_DATA,
    PKTGEN_SEQ,
    ext_header,
    geneve_encap,
    ipv4,
    ipv6,
    tcp_segment,
    udp_datagram,
)
from datapath.drop import DatapathDrop, DropReason, Verdict
from datapath.packet import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_NONE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_SYN,
    find_dsr_opt4,
    find_dsr_opt6,
    ip_bytes,
    parse,
)
from tests.test_datapath_edges import _node, run

C4, N4, V4, B4 = (ip_bytes(a) for a in ("203.0.113.7", "10.0.10.1", "172.16.10.2",
                                        "10.0.10.20"))
C6, V6 = ip_bytes("2001:db8::7"), ip_bytes("fd10::2")
IPPROTO_GRE = 47




def _drop_reason(pkt: bytes | bytearray) -> DropReason:
    with pytest.raises(DatapathDrop) as e:
        parse(bytearray(pkt))
    return e.value.reason


# -- IPv4 header bounds --------------------------------------------------------------------
def test_ipv4_packet_that_is_all_header_is_parsed() -> None:
    """__revalidate_data_pull (common.h:110) needs only the base header to fit: a 20-byte
    packet (and a 24-byte one whose options fill its IHL) is a whole packet of a protocol
    with no L4 header to read, not a malformed one."""
    bare = bytearray(ipv4(C4, N4, IPPROTO_GRE, b""))
    assert len(bare) == 20
    p = parse(bare)
    assert (p.proto, p.l4_off, p.l3_len, p.sport, p.dport) == (IPPROTO_GRE, 20, 20, 0, 0)
    opts = bytearray(ipv4(C4, N4, IPPROTO_GRE, b"", options=b"\x01\x01\x01\x00"))
    assert len(opts) == 24
    p = parse(opts)
    assert (p.l4_off, p.l3_len) == (24, 24)
    r = run(_node(), "from-netdev", bytes(bare))
    assert r.verdict == Verdict.CTX_ACT_OK and r.drop_reason is None


def test_ipv4_fragment_at_offset_one_is_a_later_fragment() -> None:
    """ipfrag_encode_ipv4 (ipfrag.h:59-62): any MF/offset bit makes a fragment, any offset
    bit a fragment with no L4 header; an offset of one 8-byte unit is the smallest."""
    seg = tcp_segment(C4, V4, 40000, 80)
    for word, more in ((0x0001, False), (0x2001, True)):
        p = parse(bytearray(ipv4(C4, V4, IPPROTO_TCP, seg, ident=0x1234, frag=word)))
        assert (p.is_frag, p.frag_first, p.frag_offset, p.frag_more, p.frag_id) == (
            True, False, 1, more, 0x1234), hex(word)
        assert (p.sport, p.dport) == (0, 0)  # the bytes there are not a TCP header
    # fragment tracking on, no first fragment seen: ipv4_frag_get_l4ports (ipv4.h:96-98)
    node = _node(fragment_tracking=True)
    r = run(node, "from-netdev", ipv4(C4, V4, IPPROTO_TCP, seg, ident=0x1234, frag=0x0001))
    assert (r.verdict, r.drop_reason) == (Verdict.CTX_ACT_DROP, DropReason.DROP_FRAG_NOT_FOUND)


def test_later_icmp_fragment_to_a_container_is_delivered() -> None:
    """A later fragment of a protocol without ports has none to look up (the fragment map
    holds TCP/UDP/SCTP ports only): to-container delivers it to the endpoint."""
    frag = ipv4(N4, B4, IPPROTO_ICMP, b"x" * 16, frag=10)
    for tracking in (False, True):
        r = run(_node(fragment_tracking=tracking), "to-container", frag)
        assert (r.verdict, r.drop_reason, r.target) == (Verdict.CTX_ACT_OK, None, "lxc:25")


# -- TCP data offset -----------------------------------------------------------------------
def _tcp_with_doff(nibble: int, payload: bytes, flags: int = TCP_SYN, ack: int = 0) -> bytes:
    seg = bytearray(tcp_segment(C4, V4, 40000, 80, flags, ack=ack, payload=payload))
    seg[12] = nibble << 4
    return bytes(seg)


def test_tcp_data_offset_below_five_words_is_invalid_in_any_length() -> None:
    """A data offset of 4 words (16 bytes) is shorter than the TCP header itself; the
    reference drops it however long the segment and whatever the neighbouring bytes (TTL,
    the acknowledgement number, the flags) hold. Cilium reads the ports and flags at fixed
    offsets and never the data offset (l4.h:75-82): the reference is stricter here."""
    seg = _tcp_with_doff(4, b"z" * 4200, flags=0xC2, ack=0xF0)  # SYN|ECE|CWR
    pkt = ipv4(C4, V4, IPPROTO_TCP, seg, ttl=255)
    assert _drop_reason(pkt) == DropReason.DROP_CT_INVALID_HDR
    short = ipv4(C4, V4, IPPROTO_TCP, _tcp_with_doff(4, b"z" * 16), ttl=255)
    assert _drop_reason(short) == DropReason.DROP_CT_INVALID_HDR


def test_tcp_header_longer_than_its_segment_is_invalid() -> None:
    """A data offset of 15 words (60 bytes) in a 48-byte segment: the header's options run
    past the packet (both families; the IPv6 one goes through the L4 parser alone)."""
    seg4 = _tcp_with_doff(15, b"o" * 28)
    assert _drop_reason(ipv4(C4, V4, IPPROTO_TCP, seg4)) == DropReason.DROP_CT_INVALID_HDR
    seg6 = bytearray(tcp_segment(C6, V6, 40000, 80, payload=b"o" * 28))
    seg6[12] = 15 << 4
    assert _drop_reason(ipv6(C6, V6, IPPROTO_TCP, bytes(seg6))) == (
        DropReason.DROP_CT_INVALID_HDR)
    # the same offset with the whole 60 bytes present is a valid header
    full = _tcp_with_doff(15, b"o" * 40)
    assert parse(bytearray(ipv4(C4, V4, IPPROTO_TCP, full))).dport == 80


def test_tcp_header_cut_after_twelve_bytes_is_invalid() -> None:
    """The TCP flags sit 12 bytes in (l4_load_tcp_flags, l4.h:79-82); a 12-byte segment
    cannot give them: ct_lookup4's DROP_CT_INVALID_HDR (conntrack.h:935-937). The sequence
    number's high half reads 12, so the cut header also looks like a whole UDP header."""
    seg = tcp_segment(C4, V4, 40000, 80, seq=0x000C0000)[:12]
    assert _drop_reason(ipv4(C4, V4, IPPROTO_TCP, seg)) == DropReason.DROP_CT_INVALID_HDR


def test_udp_first_fragment_shorter_than_the_udp_header_is_invalid() -> None:
    """A first fragment (MF, offset 0) carrying 7 bytes of UDP header: the reference needs
    the whole 8-byte header; Cilium loads the 4 port bytes only (ipv4.h:129-131, l4.h:75),
    one of the malformed inputs on which the reference is stricter."""
    dg = udp_datagram(C4, V4, 40000, 80)
    assert _drop_reason(ipv4(C4, V4, IPPROTO_UDP, dg[:7], frag=0x2000)) == (
        DropReason.DROP_INVALID)
    p = parse(bytearray(ipv4(C4, V4, IPPROTO_UDP, dg[:8], frag=0x2000)))
    assert (p.is_frag, p.frag_first, p.sport, p.dport) == (True, True, 40000, 80)


# -- IPv6 extension headers ------------------------------------------------------------------
def test_ipv6_extension_header_cut_short_is_invalid() -> None:
    """ipv6_skip_exthdr loads the 2-byte next-header/length pair (ipv6.h:91-92) and the
    fragment header whole (ipv6.h:150-151); either cut off is DROP_INVALID, never a read
    past the buffer."""
    for nh, body in ((IPPROTO_DSTOPTS, b""), (IPPROTO_DSTOPTS, b"\x06"),
                     (IPPROTO_FRAGMENT, bytes([IPPROTO_TCP, 0, 0, 8, 0, 0, 0]))):
        pkt = ipv6(C6, V6, nh, body)
        assert _drop_reason(pkt) == DropReason.DROP_INVALID, (nh, body.hex())
        r = run(_node(), "from-netdev", pkt)
        assert (r.verdict, r.drop_reason) == (Verdict.CTX_ACT_DROP, DropReason.DROP_INVALID)


def test_dsr_search_stops_at_a_fragment_header_that_ends_the_packet() -> None:
    """find_dsr_v6 (nodeport.h:497-521) skips headers by their 2-byte prefix (ipv6.h:91):
    a later fragment whose fragment header is the packet's last byte has no DSR option,
    and that is not an error."""
    frag = bytes([IPPROTO_UDP, 0]) + struct.pack("!H", 1 << 3) + b"\x00\x00\x00\x2a"
    pkt = bytearray(ipv6(C6, V6, IPPROTO_FRAGMENT, frag))
    p = parse(pkt)
    assert (p.is_frag, p.frag_first, p.l4_off, p.l3_len) == (True, False, 48, 48)
    assert find_dsr_opt6(pkt) is None


# -- IPv4 DSR option -----------------------------------------------------------------------
def test_ipv4_dsr_option_is_read_only_from_an_option_area() -> None:
    """nodeport_extract_dsr_v4 reads the option only when IHL >= 7 (nodeport.h:1952): a
    header without options whose TCP/UDP source port is 0x9a08 (39432) starts its L4
    header with the DSR option's type and length bytes, and carries no DSR option."""
    for proto, l4 in ((IPPROTO_TCP, tcp_segment(C4, V4, 0x9A08, 80)),
                      (IPPROTO_UDP, udp_datagram(C4, V4, 0x9A08, 80))):
        pkt = bytearray(ipv4(C4, V4, proto, l4))
        assert pkt[20:22] == b"\x9a\x08" and parse(pkt).sport == 0x9A08
        assert find_dsr_opt4(pkt) is None, proto


def test_ipv4_dsr_option_needs_its_type_and_its_length() -> None:
    """The first option is DSR only when its type is 0x9a and its length 8
    (nodeport.h:1959): an 8-byte timestamp option, or a 12-byte option of type 0x9a, is
    not."""
    seg = tcp_segment(C4, V4, 40000, 80)
    stamp = bytes([0x44, 8, 9, 0]) + b"\x00\x00\x00\x01"  # one full timestamp slot
    long_dsr = bytes([0x9A, 12]) + struct.pack("<H", 80) + V4[::-1] + b"\x00" * 4
    for opt in (stamp, long_dsr):
        pkt = bytearray(ipv4(C4, V4, IPPROTO_TCP, seg, options=opt))
        assert parse(pkt).dport == 80
        assert find_dsr_opt4(pkt) is None, opt.hex()


# -- builders against scapy --------------------------------------------------------------------
def _s4(a: bytes) -> str:
    return ".".join(str(b) for b in a)


def test_tcp_segment_bytes_match_scapy() -> None:
    """pktgen's defaults (ack 0, window 0xffff) and a 4-byte MSS option, with scapy's own
    checksum over the pseudo header."""
    ours = tcp_segment(C4, V4, 40000, 80)
    ip = IP(src=_s4(C4), dst=_s4(V4), id=0)
    theirs = ip / TCP(sport=40000, dport=80, seq=PKTGEN_SEQ, ack=0, flags="S",
                      window=0xFFFF) / Raw(DEFAULT_DATA)
    assert ours == bytes(theirs)[20:]
    mss = tcp_segment(C4, V4, 40000, 80, options=b"\x02\x04\x05\xb4", payload=b"")
    theirs = ip / TCP(sport=40000, dport=80, seq=PKTGEN_SEQ, flags="S", window=0xFFFF,
                      options=[("MSS", 1460)])
    assert mss == bytes(theirs)[20:]


def test_ipv4_header_bytes_match_scapy() -> None:
    """Default TOS 0 and TTL 64, and an option list padded to whole 32-bit words."""
    ours = ipv4(C4, V4, 253, b"ab")
    assert ours == bytes(IP(src=_s4(C4), dst=_s4(V4), id=0, proto=253) / Raw(b"ab"))
    padded = ipv4(C4, V4, 253, b"ab", options=b"\x01\x01\x01")
    theirs = IP(src=_s4(C4), dst=_s4(V4), id=0, proto=253,
                options=IPOption(b"\x01\x01\x01")) / Raw(b"ab")
    assert padded == bytes(theirs) and padded[0] == 0x46


def test_ipv6_header_bytes_match_scapy() -> None:
    """Default hop limit 64; traffic class and flow label in their bit positions (the
    packet-too-big reply copies both, icmp.py)."""
    ours = ipv6(C6, V6, IPPROTO_NONE, b"")
    assert ours == bytes(IPv6(src="2001:db8::7", dst="fd10::2", nh=IPPROTO_NONE))
    marked = ipv6(C6, V6, IPPROTO_NONE, b"", tclass=0xB8, flow=0x12345)
    assert marked == bytes(IPv6(src="2001:db8::7", dst="fd10::2", nh=IPPROTO_NONE, tc=0xB8,
                                fl=0x12345))


def test_long_destination_options_header_length_field() -> None:
    """A 56-byte destination-options header: its length field is 6 (8-byte units after
    the first, ipv6_optlen, ipv6.h:67-70), as scapy writes it; the parser skips 56 bytes."""
    body = bytes([1, 52]) + b"\x00" * 52  # one PadN option filling the header
    hdr = ext_header(IPPROTO_TCP, body)
    assert hdr == bytes(IPv6ExtHdrDestOpt(nh=IPPROTO_TCP, options=[PadN(optdata=b"\0" * 52)]))
    seg = tcp_segment(C6, V6, 40000, 80)
    p = parse(bytearray(ipv6(C6, V6, IPPROTO_DSTOPTS, hdr + seg)))
    assert (p.proto, p.l4_off, p.dport) == (IPPROTO_TCP, 40 + 56, 80)


@pytest.mark.parametrize("inner_v6", [False, True])
def test_geneve_encapsulation_bytes_match_scapy(inner_v6: bool) -> None:
    """Outer IPv4 (TTL 64) / UDP to 6081 (length counted, checksum 0) / Geneve (no flags,
    protocol ETH_P_TEB) / inner Ethernet whose type names the inner family."""
    if inner_v6:
        inner = ipv6(C6, V6, IPPROTO_TCP, tcp_segment(C6, V6, 40000, 80))
    else:
        inner = ipv4(C4, V4, IPPROTO_TCP, tcp_segment(C4, V4, 40000, 80))
    src, dst = ip_bytes("192.168.2.4"), ip_bytes("10.0.10.1")
    if inner_v6:
        ours = geneve_encap(src, dst, inner, 2, b"", 40000, inner_v6=True)
    else:
        ours = geneve_encap(src, dst, inner, 2, b"", 40000)  # the default: an IPv4 inner
    theirs = (IP(src="192.168.2.4", dst="10.0.10.1", id=0)
              / UDP(sport=40000, dport=6081, chksum=0) / GENEVE(vni=2, proto=0x6558)
              / Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00",
                      type=0x86DD if inner_v6 else 0x0800) / Raw(inner))
    assert ours == bytes(theirs)
