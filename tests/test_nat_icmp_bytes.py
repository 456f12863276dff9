"""Reverse SNAT of IPv4 ICMP errors on bytes, against packets scapy builds independently.

Cilium: v1.20 bpf/lib/nat.h snat_v4_rev_nat (:1129-1234) with
snat_v4_rev_nat_handle_icmp_error (:1017-1125) and snat_v4_calc_icmp_error_csum_diff
(:552-577); v1.18 bpf/lib/nat.h :881-1042 (no outer checksum diff, no tolerance for a quote
cut before its L4 checksum). Frames are built as Cilium's own test builds them
(bpf/tests/scapy/icmp_err_revnat_pkt_defs.py, bpf/tests/tc_nodeport_icmp4_snat.h): outer
IPv4 from the remote to the node, ICMP frag-needed, the node's SNATed packet quoted. Every
checksum of an expected packet is scapy's, never the reference's own csum module.
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from datapath.config import NodeConfig
from datapath.drop import DropReason
from datapath.host import make_node
from datapath.maps import TUPLE_F_IN, CtTuple, NatEntry
from datapath.nat import snat_rev_nat_icmp_error
from datapath.packet import IPPROTO_TCP, IPPROTO_UDP, ip_bytes, parse

Version = Literal["1.18", "1.20"]
NODE, REMOTE, CLIENT = "192.168.0.1", "192.168.0.2", "10.0.10.1"
SNAT_PORT, CLIENT_PORT, DPORT = 32768, 3030, 80
PAYLOAD = bytes(range(1, 13))  # the quoted segment's data, so a quote can end inside it
# outer IP 20 + ICMP 8: where the quote starts; its L4 header 20 bytes on
INNER, L4 = 28, 48
TCP_CSUM, UDP_CSUM = L4 + 16, L4 + 6
FRAG_NEEDED_REST = b"\x00\x00\x05\xdc"  # unused, next-hop MTU 1500


def node(version: Version = "1.20", *, to_addr: str = CLIENT, to_port: int = CLIENT_PORT,
         masquerade: bool = True, tracking: bool = False, tunnel: bool = False,
         faults: frozenset[str] = frozenset()) -> Any:
    """A node holding the reverse SNAT entry of the node's connection NODE:SNAT_PORT ->
    REMOTE:80 (TCP and UDP) back to to_addr:to_port (tc_nodeport_icmp4_snat.h:95-112)."""
    n = make_node(NodeConfig(ipv4=NODE, masquerade=masquerade, version=version,
                             fragment_tracking=tracking, tunnel=tunnel), faults)
    for proto in (IPPROTO_TCP, IPPROTO_UDP):
        n.maps.snat4.update(CtTuple(ip_bytes(NODE), ip_bytes(REMOTE), SNAT_PORT, DPORT, proto,
                                    TUPLE_F_IN), NatEntry(ip_bytes(to_addr), to_port, 0), 0)
    return n


def quote(l4: str = "tcp", *, src: str = NODE, sport: int = SNAT_PORT,
          payload: bytes = PAYLOAD, ip_id: int = 1, udp_csum: int | None = None,
          options: bytes = b"") -> bytes:
    """The packet the error is about, whole (scapy fills lengths and checksums)."""
    ip = IP(src=src, dst=REMOTE, flags="DF", id=ip_id, options=options)
    seg = (TCP(sport=sport, dport=DPORT) if l4 == "tcp"
           else UDP(sport=sport, dport=DPORT, chksum=udp_csum))
    return bytes(ip / seg / Raw(payload))


def error(quoted: bytes, *, typ: int = 3, code: int = 4, dst: str = NODE,
          rest: bytes = FRAG_NEEDED_REST, flags: int = 0, frag: int = 0) -> bytes:
    """Outer IPv4 + ICMP error carrying `quoted`, the ICMP checksum scapy's."""
    body = bytes([typ, code, 0, 0]) + rest + quoted
    body = body[:2] + struct.pack("!H", scapy_checksum(body)) + body[4:]
    return bytes(IP(src=REMOTE, dst=dst, proto=1, id=7, flags=flags, frag=frag) / Raw(body))


def translated(l4: str, cut: int | None = None, *, to_addr: str = CLIENT,
               to_port: int = CLIENT_PORT, flags: int = 0, **kw: Any) -> bytes:
    """What Cilium v1.20 makes of error(quote(l4, **kw)[:cut]): the quote's source and
    port restored, the outer destination the client, every checksum valid; a TCP checksum
    the quote does not hold whole is left as it was (:1092-1095, :1121-1123)."""
    orig = quote(l4, **kw)
    new = quote(l4, **{**kw, "src": to_addr, "sport": to_port})
    n = len(orig) if cut is None else cut - INNER
    q = bytearray(new[:n])
    at = (orig[0] & 0xF) * 4 + (16 if l4 == "tcp" else 6)
    if n < at + 2:
        q[at:n] = orig[at:n]
    return error(bytes(q), dst=to_addr, flags=flags)


def _reip(b: bytes) -> bytes:
    """The first bytes of an outer packet with its IP length and checksum fixed (scapy)."""
    ip = IP(b[:20])
    ip.len, ip.chksum = len(b), None
    return bytes(ip)[:20] + b[20:]


def cut(frame: bytes, n: int) -> bytes:
    """The error its sender cut to n bytes: the outer lengths and checksums are scapy's for
    what it carries (below the 8-byte ICMP header, only the IP header is fixed)."""
    if n < INNER:
        return _reip(frame[:n])
    b = frame[:n]
    return error(b[INNER:], typ=b[20], code=b[21], rest=b[24:28])


def icmp_csum_ok(frame: bytes) -> bool:
    return scapy_checksum(frame[20:]) == 0


def run(n: Any, frame: bytes, hook: str = "from-netdev") -> tuple[bytes, DropReason | None]:
    r = n.run(hook, frame)
    assert n.internal_errors == 0
    return bytes(r.packet), r.drop_reason


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_v120_translation_equals_the_independently_built_packet(l4: str) -> None:
    """v1.20: quote source and port restored, outer destination the client, and the ICMP
    checksum carries the quote's pseudo-header change (:1108-1112, :552-577): byte for byte
    the packet scapy builds with every checksum computed from scratch."""
    out, drop = run(node(), error(quote(l4)))
    assert drop is None
    assert out == translated(l4)
    assert icmp_csum_ok(out)


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_v118_translation_leaves_the_icmp_checksum_stale(l4: str) -> None:
    """v1.18 rewrites the quote and the outer header alike but applies no diff to the ICMP
    checksum (v1.18 nat.h:1042-1045: the outer rewrite changes no port, ICMP has no pseudo
    header): everything but that field is v1.20's packet, and the field is the sender's."""
    frame = error(quote(l4))
    out, drop = run(node("1.18"), frame)
    want = translated(l4)
    assert drop is None
    assert out[:22] == want[:22] and out[24:] == want[24:]
    assert out[22:24] == frame[22:24] and not icmp_csum_ok(out)


@pytest.mark.parametrize("version", ["1.18", "1.20"])
@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_every_cut_of_the_error_at_each_load_bound(l4: str, version: Version) -> None:
    """Each ctx_load_bytes bound, exactly and one byte short: the ICMP header (parser;
    :1180-1181), the quote's IP header (:1038-1039), its ports (:1060-1061), the UDP
    checksum (v1.20 :1100-1102: DROP_INVALID). A TCP quote without its whole checksum is
    translated in v1.20 (DROP_CSUM_L4 tolerated, :1121-1123) with its ICMP checksum still
    valid (the port-only diff, :569-575); v1.18 returns the DROP_CSUM_L4 of
    l4_modify_port (v1.18 nat.h:455-457; l4.h:61-62), as for a UDP quote cut before its
    checksum."""
    full = error(quote(l4))
    csum_end = (TCP_CSUM if l4 == "tcp" else UDP_CSUM) + 2
    for n in range(20, len(full) + 1):
        out, drop = run(node(version), cut(full, n))
        if n < L4 + 4:
            assert drop == DropReason.DROP_INVALID, n
            continue
        if n < csum_end and (version == "1.18" or l4 == "udp"):
            want = DropReason.DROP_CSUM_L4 if version == "1.18" else DropReason.DROP_INVALID
            assert drop == want, n
            continue
        assert drop is None, n
        want_out = translated(l4, n)
        if version == "1.20":
            assert out == want_out, n
            assert icmp_csum_ok(out), n
        else:
            assert out[:22] == want_out[:22] and out[24:] == want_out[24:], n


def test_quote_header_bounds_with_a_protocol_that_is_punted() -> None:
    """A quoted protocol without ports (GRE, 47) is NAT_PUNT_TO_STACK (:1084-1085) once the
    quote's IP header loads (48 bytes); one byte short it is DROP_INVALID (:1038-1039)."""
    inner = bytes(IP(src=NODE, dst=REMOTE, proto=47, id=1) / Raw(b"\0" * 8))
    full = error(inner)
    out, drop = run(node(), cut(full, INNER + 20))
    assert drop is None and out == cut(full, INNER + 20)
    _, drop = run(node(), cut(full, INNER + 19))
    assert drop == DropReason.DROP_INVALID


def test_a_quote_with_ip_options_moves_every_bound() -> None:
    """ipv4_hdrlen() of the quoted header places its L4 header (:1050): with 4 bytes of
    options the ports end at 56 and the TCP checksum at 70 (total_inner_len against
    ipv4_hdrlen + TCP_CSUM_OFF + TCP_CSUM_SIZE, :1092-1094)."""
    opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    full = error(quote(options=opts))
    _, drop = run(node(), cut(full, 55))
    assert drop == DropReason.DROP_INVALID
    for n in (56, 69, 70, len(full)):
        out, drop = run(node(), cut(full, n))
        assert drop is None and out == translated("tcp", n, options=opts), n
        assert out[68:n] == (full if n < 70 else translated("tcp", options=opts))[68:n], n
    _, drop = run(node("1.18"), cut(full, 69))
    assert drop == DropReason.DROP_CSUM_L4
    _, drop = run(node("1.18"), cut(full, 70))
    assert drop is None


@pytest.mark.parametrize(("itype", "need", "outcome"), [
    (8, 6, None), (0, 1, None), (3, 1, DropReason.DROP_UNKNOWN_ICMP4_CODE),
    (11, 1, DropReason.DROP_UNKNOWN_ICMP4_CODE)])
def test_a_quoted_icmp_message(itype: int, need: int, outcome: DropReason | None) -> None:
    """A quoted ICMP message (:1065-1083): its type must load (1 byte), an echo request's
    identifier too (bytes 4-5); the echo's mapping lookup finds nothing (only TCP/UDP are
    masqueraded), an echo reply is punted, any other type is DROP_UNKNOWN_ICMP4_CODE."""
    inner = bytes(IP(src=NODE, dst=REMOTE, proto=1, id=1)) + bytes([itype, 0, 0, 0, 0, 9])
    full = error(inner)
    _, drop = run(node(), cut(full, L4 + need - 1))
    assert drop == DropReason.DROP_INVALID
    out, drop = run(node(), cut(full, L4 + need))
    assert drop == outcome
    if outcome is None:
        assert out == cut(full, L4 + need)


def test_every_type_and_code() -> None:
    """Exactly DEST_UNREACH codes 0..NR_ICMP_UNREACH (15) and TIME_EXCEEDED codes
    ICMP_EXC_TTL, ICMP_EXC_FRAGTIME (0, 1) are reverse-SNATed (:1189-1204, v1.18
    :1001-1013; include/linux/icmp.h:24-66); any other (type, code) of 0..20 x 0..20 is
    NAT_PUNT_TO_STACK: the packet unchanged, the function's result False."""
    n = node()
    q, tq = quote(), translated("tcp")[INNER:]
    for typ in range(21):
        for code in range(21):
            frame = error(q, typ=typ, code=code)
            handled = (typ == 3 and code <= 15) or (typ == 11 and code in (0, 1))
            p = parse(bytearray(frame))
            got = snat_rev_nat_icmp_error(n, p)
            assert got is handled, (typ, code)
            want = error(tq, typ=typ, code=code, dst=CLIENT) if handled else frame
            assert bytes(p.buf) == want, (typ, code)


def test_the_result_says_punted_or_translated() -> None:
    """The function's result is snat_v4_rev_nat's: True translated, False
    NAT_PUNT_TO_STACK (not ICMP; a quoted protocol without ports; no mapping, :1087-1089)."""
    n = node()
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(quote())))) is True
    other = bytes(IP(src=NODE, dst=REMOTE, proto=47, id=1) / Raw(b"\0" * 8))
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(other)))) is False
    stranger = quote(sport=SNAT_PORT + 1)
    assert snat_rev_nat_icmp_error(n, parse(bytearray(error(stranger)))) is False
    udp = bytes(IP(src=REMOTE, dst=NODE) / UDP(sport=80, dport=SNAT_PORT))
    assert snat_rev_nat_icmp_error(n, parse(bytearray(udp))) is False
    for itype in (8, 0):  # a quoted echo request (no mapping) or echo reply (:1070-1074)
        echo = bytes(IP(src=NODE, dst=REMOTE, proto=1, id=1)) + bytes([itype, 0, 0, 0, 0, 9])
        assert snat_rev_nat_icmp_error(n, parse(bytearray(error(echo)))) is False, itype


def test_a_udp_checksum_that_becomes_zero_is_written_as_ffff() -> None:
    """BPF_F_MARK_MANGLED_0 on the quoted UDP checksum (csum.h:37-40; l4_modify_port and
    the pseudo-header fix, nat.h:537-538): a result of 0 is stored as 0xFFFF (what scapy's
    UDP, and RFC 768, transmit for a computed 0)."""
    # the translated datagram's checksum with data 0x0000: storing it as the data makes the
    # translated checksum compute to 0
    raw0 = _pseudo_csum(CLIENT, quote("udp", src=CLIENT, sport=CLIENT_PORT,
                                      payload=b"\0\0")[20:], IPPROTO_UDP)
    assert raw0 not in (0, 0xFFFF)
    data = struct.pack("!H", raw0)
    frame = error(quote("udp", payload=data))
    out, drop = run(node(), frame)
    assert drop is None
    assert out[UDP_CSUM:UDP_CSUM + 2] == b"\xff\xff"
    assert out == translated("udp", payload=data)
    assert _pseudo_csum(CLIENT, out[L4:], IPPROTO_UDP, zero_field=False) == 0


def test_a_tcp_and_an_ip_checksum_that_become_zero_stay_zero() -> None:
    """Only UDP carries BPF_F_MARK_MANGLED_0 (csum.h:29-40): a TCP checksum, the quote's IP
    header checksum (ipv4_csum_update_by_diff, nat.h:496-497) and the ICMP checksum
    (:540-544, no flags) that compute to 0 are stored as 0."""
    t0 = quote("tcp", src=CLIENT, sport=CLIENT_PORT, payload=b"\0\0")[20:]
    data = struct.pack("!H", _pseudo_csum(CLIENT, t0, IPPROTO_TCP))
    ip0 = bytearray(quote("tcp", src=CLIENT, sport=CLIENT_PORT, payload=data, ip_id=0)[:20])
    ip0[10:12] = b"\0\0"
    ip_id = _raw_csum(bytes(ip0))  # as the identification, the header's checksum becomes 0
    frame = error(quote("tcp", payload=data, ip_id=ip_id))
    out, drop = run(node(), frame)
    assert drop is None and out == translated("tcp", payload=data, ip_id=ip_id)
    assert out[TCP_CSUM:TCP_CSUM + 2] == b"\0\0" and out[INNER + 10:INNER + 12] == b"\0\0"
    # the ICMP checksum: choose the error's unused word so that the translated one is 0
    want0 = bytearray(translated("tcp"))
    want0[22:24] = b"\0\0"
    rest = struct.pack("!H", _raw_csum(bytes(want0[20:]))) + FRAG_NEEDED_REST[2:]
    out, drop = run(node(), error(quote("tcp"), rest=rest))
    assert drop is None and out[22:24] == b"\0\0" and icmp_csum_ok(out)


def _raw_csum(b: bytes) -> int:
    return int(scapy_checksum(b))


def _pseudo_csum(src: str, seg: bytes, proto: int, zero_field: bool = True) -> int:
    """The Internet checksum of an L4 segment from `src` to REMOTE with its pseudo header
    (scapy's checksum over the bytes; the field zeroed unless asked to keep it)."""
    at = 16 if proto == IPPROTO_TCP else 6
    if zero_field:
        seg = seg[:at] + b"\0\0" + seg[at + 2:]
    pseudo = ip_bytes(src) + ip_bytes(REMOTE) + struct.pack("!BBH", 0, proto, len(seg))
    return int(scapy_checksum(pseudo + seg))


@pytest.mark.parametrize("version", ["1.18", "1.20"])
def test_a_zero_udp_checksum_stays_zero(version: Version) -> None:
    """A quoted UDP checksum of 0 means none (:1097-1104): v1.20 then carries only the
    port's change into the ICMP checksum (:569-575) and the quote's checksum fixes leave
    the 0 (BPF_F_MARK_MANGLED_0, csum.h:37-40); v1.18 leaves it too, with its ICMP
    checksum stale as always."""
    out, drop = run(node(version), error(quote("udp", udp_csum=0)))
    want = translated("udp", udp_csum=0)
    assert drop is None and out[UDP_CSUM:UDP_CSUM + 2] == b"\0\0"
    if version == "1.20":
        assert out == want and icmp_csum_ok(out)
    else:
        assert out[:22] == want[:22] and out[24:] == want[24:]


@pytest.mark.parametrize(("to_addr", "to_port"), [(NODE, CLIENT_PORT), (CLIENT, SNAT_PORT)])
@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_a_mapping_that_keeps_the_address_or_the_port(l4: str, to_addr: str,
                                                      to_port: int) -> None:
    """A host connection whose port alone was clamped (the address kept) or whose address
    alone was translated: v1.20's ICMP diff is the address change when the quote has its
    L4 checksum, none when the address stays (:563-568); cut before a TCP checksum it is the
    port change, none when the port stays (:569-575). The ICMP checksum stays valid."""
    n = node(to_addr=to_addr, to_port=to_port)
    full = error(quote(l4))
    for m in (len(full), 60) if l4 == "tcp" else (len(full),):
        out, drop = run(n, cut(full, m))
        assert drop is None, m
        assert out == translated(l4, m, to_addr=to_addr, to_port=to_port), m
        assert icmp_csum_ok(out), m


def test_icmp_fragments() -> None:
    """snat_v4_rev_nat drops an ICMP fragment in v1.20 (DROP_INVALID, :1178-1179); v1.18 has
    no such check (v1.18 nat.h:992-994): a first fragment is translated as the whole error,
    a later one is read as if its data were an ICMP header (8 bytes must load,
    v1.18 :993-994). Fragment tracking on: without it bpf_host drops every fragment first
    (bpf_host.c:609-617)."""
    first = error(quote(), flags=1)  # MF
    _, drop = run(node(tracking=True), first)
    assert drop == DropReason.DROP_INVALID
    out, drop = run(node("1.18", tracking=True), first)
    want = translated("tcp", flags=1)
    assert drop is None and out[:22] == want[:22] and out[24:] == want[24:]
    for data, reason in ((b"\0" * 7, DropReason.DROP_INVALID), (b"\0" * 8, None)):
        later = bytes(IP(src=REMOTE, dst=NODE, proto=1, id=7, frag=100) / Raw(data))
        out, drop = run(node("1.18", tracking=True), later)
        assert drop == reason and (reason is not None or out == later)
        _, drop = run(node(tracking=True), later)
        assert drop == DropReason.DROP_INVALID


@pytest.mark.parametrize("masquerade", [True, False])
def test_an_error_from_the_overlay(masquerade: bool) -> None:
    """bpf_overlay runs nodeport_lb4 too (bpf_overlay.c:287-291); a packet of no service
    protocol goes to reverse SNAT only under bpf.masquerade (nodeport.h:3021)."""
    from datapath.build import geneve_encap
    frame = geneve_encap(ip_bytes("10.0.10.9"), ip_bytes(NODE), error(quote()), 2, b"", 40000)
    out, drop = run(node(masquerade=masquerade, tunnel=True), frame, "from-overlay")
    assert drop is None
    assert out == (translated("tcp") if masquerade else error(quote()))


def test_the_seeded_fault_keeps_the_quote_and_a_valid_icmp_checksum() -> None:
    """icmp_error_quote_kept leaves the quote as the backend saw it: nothing in the ICMP
    message changes, so its checksum does not either; only the outer destination moves."""
    out, drop = run(node(faults=frozenset({"icmp_error_quote_kept"})), error(quote()))
    assert drop is None and out == error(quote(), dst=CLIENT)
