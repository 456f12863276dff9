"""Reverse SNAT of ICMPv6 packet-too-big on bytes, against packets scapy builds independently.

Cilium v1.20 bpf/lib/nat.h snat_v6_rev_nat (:2114-2210) with
snat_v6_rev_nat_handle_icmp_pkt_toobig (:2027-2110) and snat_v6_rewrite_headers
(:1582-1632). The frame is bpf/tests/bpf_nat_icmp6.h's: outer IPv6 from the remote to the
node, ICMPv6 packet-too-big, the node's SNATed packet quoted. IPv6 has no header checksum:
the quote's L4 checksum absorbs its address change, and the outer destination's change
reaches the ICMPv6 checksum through its pseudo header only (:2204-2209 -> :1627-1629).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from datapath.config import NodeConfig
from datapath.drop import DropReason
from datapath.host import make_node
from datapath.maps import TUPLE_F_IN, CtTuple, NatEntry
from datapath.nat import snat_rev_nat_icmp_error
from datapath.packet import IPPROTO_TCP, IPPROTO_UDP, ip_bytes, parse

NODE, REMOTE, CLIENT = "fd05::1", "fd04::2", "2001:db8::7"
SNAT_PORT, CLIENT_PORT, DPORT = 40000, 1234, 53
PAYLOAD = bytes(range(1, 13))
INNER, L4 = 48, 88  # outer IPv6 40 + ICMPv6 8; the quote's IPv6 header 40
TCP_CSUM, UDP_CSUM = L4 + 16, L4 + 6


def node(version: Literal["1.18", "1.20"] = "1.20", tracking: bool = False) -> Any:
    n = make_node(NodeConfig(ipv4=None, ipv6=NODE, masquerade=True, version=version,
                             fragment_tracking=tracking))
    for proto in (IPPROTO_TCP, IPPROTO_UDP):
        n.maps.snat6.update(CtTuple(ip_bytes(NODE), ip_bytes(REMOTE), SNAT_PORT, DPORT, proto,
                                    TUPLE_F_IN), NatEntry(ip_bytes(CLIENT), CLIENT_PORT, 0), 0)
    return n


def quote(l4: str = "tcp", *, src: str = NODE, sport: int = SNAT_PORT,
          payload: bytes = PAYLOAD, udp_csum: int | None = None) -> bytes:
    seg = (TCP(sport=sport, dport=DPORT) if l4 == "tcp"
           else UDP(sport=sport, dport=DPORT, chksum=udp_csum))
    return bytes(IPv6(src=src, dst=REMOTE) / seg / Raw(payload))


def error(quoted: bytes, *, dst: str = NODE, typ: int = 2, code: int = 0) -> bytes:
    """Outer IPv6 + ICMPv6 (packet-too-big's layout) carrying `quoted`; scapy's checksum."""
    icmp = ICMPv6PacketTooBig(mtu=1280)
    icmp.type, icmp.code = typ, code
    return bytes(IPv6(src=REMOTE, dst=dst) / icmp / Raw(quoted))


def translated(l4: str, n: int | None = None, code: int = 0, **kw: Any) -> bytes:
    """Cilium's result for error(quote(l4, **kw)[:n]): quote source and port restored, its
    L4 checksum fixed; the ICMPv6 checksum follows the outer destination only, so it is
    the one scapy computes for the untranslated quote sent to the client."""
    orig = quote(l4, **kw)
    new = quote(l4, **{**kw, "src": CLIENT, "sport": CLIENT_PORT})
    m = len(orig) if n is None else n - INNER
    out = bytearray(error(new[:m], dst=CLIENT, code=code))
    out[42:44] = error(orig[:m], dst=CLIENT, code=code)[42:44]
    return bytes(out)


def cut(frame: bytes, n: int) -> bytes:
    """The error its sender cut to n bytes (payload length and ICMPv6 checksum scapy's)."""
    if n < INNER:
        return frame[:4] + struct.pack("!H", n - 40) + frame[6:n]
    return error(frame[INNER:n], typ=frame[40], code=frame[41])


def icmp6_csum_ok(frame: bytes) -> bool:
    pseudo = frame[8:40] + struct.pack("!IxxxB", len(frame) - 40, 58)
    return scapy_checksum(pseudo + frame[40:]) == 0


def run(n: Any, frame: bytes) -> tuple[bytes, DropReason | None]:
    r = n.run("from-netdev", frame)
    assert n.internal_errors == 0
    return bytes(r.packet), r.drop_reason


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_translation_equals_the_independently_built_packet(l4: str) -> None:
    """The whole quote: every checksum valid after the rewrite (bpf_nat_icmp6.h's case)."""
    out, drop = run(node(), error(quote(l4)))
    assert drop is None and out == translated(l4)
    assert out == error(quote(l4, src=CLIENT, sport=CLIENT_PORT), dst=CLIENT)
    assert icmp6_csum_ok(out)


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_every_cut_of_the_error_at_each_load_bound(l4: str) -> None:
    """ICMPv6 header (parser; :2163-2164), the quote's IPv6 header (:2044-2045), its ports
    (:2079-2080): DROP_INVALID one byte short. A quote cut before its L4 checksum is
    DROP_CSUM_L4: snat_v6_rewrite_headers' failed fix (:1622-1629) is not tolerated the
    way v1.20's IPv4 handler tolerates it (:1121-1123)."""
    full = error(quote(l4))
    csum_end = (TCP_CSUM if l4 == "tcp" else UDP_CSUM) + 2
    for n in range(40, len(full) + 1):
        out, drop = run(node(), cut(full, n))
        if n < L4 + 4:
            assert drop == DropReason.DROP_INVALID, n
        elif n < csum_end:
            assert drop == DropReason.DROP_CSUM_L4, n
        else:
            assert drop is None and out == translated(l4, n), n


def test_quote_header_bound_with_a_protocol_that_is_punted() -> None:
    """A quoted protocol without ports (GRE, 47) is NAT_PUNT_TO_STACK (:2099-2100) once the
    quote's IPv6 header loads (88 bytes); one byte short it is DROP_INVALID (:2044-2045)."""
    full = error(bytes(IPv6(src=NODE, dst=REMOTE, nh=47, plen=8)) + bytes(8))
    out, drop = run(node(), cut(full, L4))
    assert drop is None and out == cut(full, L4)
    _, drop = run(node(), cut(full, L4 - 1))
    assert drop == DropReason.DROP_INVALID


def test_every_type_and_code() -> None:
    """Only ICMPV6_PKT_TOOBIG (2), any code, is reverse-SNATed (:2173-2188); the other types
    of 0..20 (and echo request/reply, 128/129, without a mapping) are punted unchanged.
    Cilium reads no code here, so a few codes per type stand for all."""
    n = node()
    q = quote()
    for typ in (*range(21), 128, 129):
        for code in (0, 1, 4, 20):
            frame = error(q, typ=typ, code=code)
            p = parse(bytearray(frame))
            got = snat_rev_nat_icmp_error(n, p)
            assert got is (typ == 2), (typ, code)
            if typ == 2:
                assert bytes(p.buf) == translated("tcp", code=code), code
                assert icmp6_csum_ok(bytes(p.buf)), code
            else:
                assert bytes(p.buf) == frame, (typ, code)


def test_the_result_says_punted_or_translated() -> None:
    """True translated; False NAT_PUNT_TO_STACK: a quoted protocol without ports
    (:2099-2100) or no mapping for the quoted tuple (:2103-2105)."""
    n = node()
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(quote())))) is True
    other = bytes(IPv6(src=NODE, dst=REMOTE, nh=47) / Raw(b"\0" * 8))
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(other)))) is False
    stranger = quote(sport=SNAT_PORT + 1)
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(stranger)))) is False
    udp = bytes(IPv6(src=REMOTE, dst=NODE) / UDP(sport=DPORT, dport=SNAT_PORT))
    assert snat_rev_nat_icmp_error(n, parse(bytearray(udp))) is False  # not ICMPv6
    echo = bytes([128, 0, 0, 0, 0, 9])  # a quoted echo request: no mapping (:2103-2105)
    quoted = bytes(IPv6(src=NODE, dst=REMOTE, nh=58, plen=len(echo))) + echo
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(quoted)))) is False


@pytest.mark.parametrize(("to_addr", "to_port", "dropped"), [
    (NODE, CLIENT_PORT, True), (CLIENT, SNAT_PORT, True), (NODE, SNAT_PORT, False)])
def test_a_cut_quote_drops_unless_nothing_changes(to_addr: str, to_port: int,
                                                  dropped: bool) -> None:
    """A quote cut before its TCP checksum: any change of address or port needs the
    failing checksum fix, DROP_CSUM_L4 (:1622-1629); an entry that changes nothing returns
    before any write (:1593-1594) and the error goes on, its outer destination unchanged."""
    n = make_node(NodeConfig(ipv4=None, ipv6=NODE, masquerade=True))
    n.maps.snat6.update(CtTuple(ip_bytes(NODE), ip_bytes(REMOTE), SNAT_PORT, DPORT,
                                IPPROTO_TCP, TUPLE_F_IN),
                        NatEntry(ip_bytes(to_addr), to_port, 0), 0)
    frame = cut(error(quote()), TCP_CSUM + 1)
    out, drop = run(n, frame)
    assert drop == (DropReason.DROP_CSUM_L4 if dropped else None)
    if not dropped:
        assert out == frame


def test_a_zero_udp_checksum_stays_zero() -> None:
    """BPF_F_MARK_MANGLED_0 (csum.h:37-40): a quoted UDP checksum of 0 is left 0 by the port
    and address fixes (l4_modify_port, :1622; the pseudo header, :1627-1628)."""
    out, drop = run(node(), error(quote("udp", udp_csum=0)))
    assert drop is None and out[UDP_CSUM:UDP_CSUM + 2] == b"\0\0"
    assert out == translated("udp", udp_csum=0)


def test_a_udp_checksum_that_becomes_zero_is_written_as_ffff() -> None:
    """BPF_F_MARK_MANGLED_0: a fixed UDP checksum of 0 is stored as 0xFFFF."""
    t0 = quote("udp", src=CLIENT, sport=CLIENT_PORT, payload=b"\0\0")[40:]
    t0 = t0[:6] + b"\0\0" + t0[8:]
    pseudo = ip_bytes(CLIENT) + ip_bytes(REMOTE) + struct.pack("!IxxxB", len(t0), 17)
    data = struct.pack("!H", scapy_checksum(pseudo + t0))  # the translated sum becomes 0xFFFF
    out, drop = run(node(), error(quote("udp", payload=data)))
    assert drop is None and out[UDP_CSUM:UDP_CSUM + 2] == b"\xff\xff"
    assert out == translated("udp", payload=data)


def test_a_quoted_icmpv6_message() -> None:
    """A quoted ICMPv6 message must be an echo request whose identifier loads (:2085-2098),
    else DROP_INVALID; the echo has no mapping (only TCP/UDP are masqueraded): punted."""
    def err(icmp: bytes) -> bytes:
        return error(bytes(IPv6(src=NODE, dst=REMOTE, nh=58, plen=len(icmp))) + icmp)
    for data, reason in ((bytes([128, 0, 0, 0, 0]), DropReason.DROP_INVALID),
                         (bytes([128, 0, 0, 0, 0, 9]), None),
                         (bytes([129, 0, 0, 0, 0, 9]), DropReason.DROP_INVALID)):
        frame = err(data)
        out, drop = run(node(), frame)
        assert drop == reason, data
        assert reason is not None or out == frame


@pytest.mark.parametrize(("version", "reason"), [("1.20", DropReason.DROP_INVALID),
                                                 ("1.18", DropReason.DROP_FRAG_NOSUPPORT)])
def test_an_icmpv6_fragment(version: Literal["1.18", "1.20"], reason: DropReason) -> None:
    """v1.20 drops an ICMPv6 fragment in snat_v6_rev_nat (:2161-2162); v1.18's
    ipv6_hdrlen refuses any fragment header (v1.18 ipv6.h:55-56)."""
    from scapy.layers.inet6 import IPv6ExtHdrFragment
    frame = bytes(IPv6(src=REMOTE, dst=NODE) / IPv6ExtHdrFragment(m=1, id=5, nh=58)
                  / Raw(error(quote())[40:]))
    _, drop = run(node(version, tracking=True), frame)
    assert drop == reason


def _with_ext(*hdrs: Any) -> bytes:
    """quote("tcp") with extension headers between its IPv6 header and its segment."""
    pkt: Any = IPv6(src=NODE, dst=REMOTE)
    for h in hdrs:
        pkt = pkt / h
    return bytes(pkt / TCP(sport=SNAT_PORT, dport=DPORT) / Raw(PAYLOAD))


def test_v120_walks_the_quotes_extension_headers() -> None:
    """ipv6_hdrlen_offset on the quote (v1.20 nat.h:2063-2067): hop-by-hop, destination
    options and a fragment header are skipped and the segment behind them translated; a
    fourth header exceeds IPV6_MAX_HEADERS and no-next-header stops the walk
    (DROP_INVALID_EXTHDR, ipv6.h:84, :161)."""
    from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
    for hdrs in ((IPv6ExtHdrDestOpt(),), (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()),
                 (IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(), IPv6ExtHdrDestOpt())):
        q = _with_ext(*hdrs)
        l4 = INNER + len(q) - 20 - len(PAYLOAD)
        out, drop = run(node(), error(q))
        assert drop is None, hdrs
        assert out[24:40] == ip_bytes(CLIENT) and out[INNER + 8:INNER + 24] == ip_bytes(CLIENT)
        assert struct.unpack_from("!H", out, l4)[0] == CLIENT_PORT and icmp6_csum_ok(out)
        seg = out[l4:]
        pseudo = out[INNER + 8:INNER + 40] + struct.pack("!IxxxB", len(seg), IPPROTO_TCP)
        assert scapy_checksum(pseudo + seg) == 0, hdrs
    four = _with_ext(*(IPv6ExtHdrDestOpt() for _ in range(4)))
    assert run(node(), error(four))[1] == DropReason.DROP_INVALID_EXTHDR
    none = bytearray(quote("tcp"))
    none[6] = 59
    assert run(node(), error(bytes(none)))[1] == DropReason.DROP_INVALID_EXTHDR


def test_v118_reads_the_quote_from_the_mtu_field() -> None:
    """v1.18 starts the quoted header at the ICMPv6 MTU field (v1.18 nat.h:1754-1755): its
    next header is the quote's payload-length high byte. A quote of 256 bytes or more
    reads as protocol 1 or above, an unknown protocol: punted, untouched. A short one
    reads as hop-by-hop; walking on with a fragment header is DROP_FRAG_NOSUPPORT there
    (v1.18 ipv6.h:55-56), where v1.20 translates."""
    big = error(quote("tcp", payload=bytes(300)))
    out, drop = run(node("1.18"), big)
    assert drop is None and out == big
    assert run(node("1.20"), big)[0][24:40] == ip_bytes(CLIENT)
    # the fake hop-by-hop header lies over the last 4 bytes of the quote's destination:
    # its first byte (next header) 44 sends the walk to a fragment header
    remote = bytearray(ip_bytes(REMOTE))
    remote[12] = 44
    frag = bytearray(error(quote("tcp")))
    frag[INNER + 24:INNER + 40] = remote
    assert run(node("1.18"), bytes(frag))[1] == DropReason.DROP_FRAG_NOSUPPORT


def test_v120_walk_bounds_and_header_lengths_in_the_quote() -> None:
    """ipv6_skip_exthdr loads each header's first two bytes (next header, length) from the
    packet (v1.20 ipv6.h:91-92): one byte short is DROP_INVALID; with both bytes there the
    walk goes on, here to an unknown protocol, which is punted untranslated. Lengths: an
    authentication header counts (len + 2) * 4 bytes (ipv6_authlen), the others
    (len + 1) * 8 (ipv6_optlen): a 16-byte destination-options header and an 8-byte AH
    both end where the segment starts, which is translated."""
    head = bytearray(quote("tcp")[:40])
    head[6] = 60  # destination options next
    for n, punted in ((1, False), (2, True)):
        q = bytes(head) + bytes([253, 0])[:n]
        frame = error(q)
        out, drop = run(node(), frame)
        if punted:
            assert drop is None and out == frame, n
        else:
            assert drop == DropReason.DROP_INVALID, n
    seg = quote("tcp")[40:]
    opts16 = (60, bytes([0, 1]) + b"\x01\x0c" + b"\0" * 12)  # PadN over 14 bytes: 16
    ah = (51, bytes([0, 1, 0, 0]) + b"\0\0\0\x01" + b"\0\0\0\x01")  # (1 + 2) * 4 = 12
    for chain in ((opts16,), (ah,), (opts16, ah)):
        body = b""
        for i, (_t, raw) in enumerate(chain):  # each header's first byte: what follows it
            nxt = chain[i + 1][0] if i + 1 < len(chain) else IPPROTO_TCP
            body += bytes([nxt]) + raw[1:]
        ip6 = bytearray(quote("tcp")[:40])
        ip6[6] = chain[0][0]
        struct.pack_into("!H", ip6, 4, len(body) + len(seg))
        q = bytes(ip6) + body + seg
        l4 = INNER + 40 + len(body)
        out, drop = run(node(), error(q))
        assert drop is None and struct.unpack_from("!H", out, l4)[0] == CLIENT_PORT, chain
        tcp = out[l4:]
        pseudo = out[INNER + 8:INNER + 40] + struct.pack("!IxxxB", len(tcp), IPPROTO_TCP)
        assert scapy_checksum(pseudo + tcp) == 0 and icmp6_csum_ok(out), chain
