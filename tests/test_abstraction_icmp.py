"""Family-aware ICMP in the abstraction: each family's type/code, pinned by bytes whose
checksums Cilium's own tests assert, and the other family's numbers refused."""

from __future__ import annotations

import struct
from ipaddress import ip_address
from typing import Any

import pytest

from datapath.abstraction import ICMP_KINDS, AbstractionError, bytes_of, packet_of, wire_fault
from datapath.csum import checksum, pseudo_sum
from datapath.icmp import generate_icmp6_reply
from datapath.packet import parse
from datapath.spec import build_packet, describe
from datapath.vecschema import load_vector_file
from model.values import Endpoint, IcmpKind, Packet, Proto
from tests.conftest import ROOT

VECTOR = ROOT / "vectors" / "no_backend_reject.yaml"


def _reject_bytes() -> list[bytes]:
    """Every whole expected answer in the reject vector (the to-netdev steps' inputs too)."""
    out = []
    for st in load_vector_file(VECTOR)["steps"]:
        exp: dict[str, Any] = st.get("expect") or {}
        if "hex" in exp:
            out.append(bytes.fromhex(exp["hex"]))
    return out


def test_vector_answers_are_port_unreachable_in_their_family() -> None:
    answers = _reject_bytes()
    assert {b[0] >> 4 for b in answers} == {4, 6}
    for b in answers:
        pkt = packet_of(b)
        v6 = b[0] >> 4 == 6
        assert pkt.icmp is IcmpKind.PORT_UNREACHABLE
        assert pkt.proto is (Proto.ICMPV6 if v6 else Proto.ICMP)
        assert pkt.src.port == pkt.dst.port == 0
        assert wire_fault(b) is None


def _retype(b: bytes, t: int, code: int) -> bytes:
    """The same answer with another type/code and a checksum that is right again."""
    buf = bytearray(b)
    off = 40 if b[0] >> 4 == 6 else (b[0] & 0xF) * 4
    buf[off:off + 4] = bytes([t, code, 0, 0])
    seed = pseudo_sum(bytes(buf[8:24]), bytes(buf[24:40]), 58, len(buf) - off) \
        if b[0] >> 4 == 6 else 0
    struct.pack_into("!H", buf, off + 2, checksum(bytes(buf[off:]), seed))
    return bytes(buf)


@pytest.mark.parametrize("v6", [False, True])
def test_other_familys_numbers_are_refused(v6: bool) -> None:
    """IPv4 3/3 inside ICMPv6 is not port unreachable, nor ICMPv6's 1/4 inside IPv4."""
    b = next(x for x in _reject_bytes() if (x[0] >> 4 == 6) == v6)
    wrong = (3, 3) if v6 else (1, 4)
    other = _retype(b, *wrong)
    assert describe(other)["icmp.csum_ok"] is True
    with pytest.raises(AbstractionError, match="has no model value"):
        packet_of(other)
    assert packet_of(_retype(b, *ICMP_KINDS[(6 if v6 else 4, IcmpKind.PORT_UNREACHABLE)]))


def test_icmp_protocol_must_match_the_family() -> None:
    b = bytearray(next(x for x in _reject_bytes() if x[0] >> 4 == 4))
    b[9] = 58  # ICMPv6's protocol number in an IPv4 header
    struct.pack_into("!H", b, 10, 0)
    struct.pack_into("!H", b, 10, checksum(bytes(b[:20])))
    with pytest.raises(AbstractionError, match="protocol 58 in an IPv4 packet"):
        packet_of(b)


def test_admin_prohibited_pinned_by_cilium_checksum() -> None:
    """bpf/tests/tc_policy_reject_response_test.c: generate_icmp6_reply() with
    ICMPV6_DEST_UNREACH/ICMPV6_ADM_PROHIBITED on v6_pod_one -> v6_pod_two, tcp_src_one ->
    tcp_dst_one, default_data answers with checksum 0x9e17."""
    req = build_packet({"ip6": {"src": "fd04::1", "dst": "fd04::2"},
                        "tcp": {"sport": 22330, "dport": 22331}})
    p = parse(bytearray(req))
    generate_icmp6_reply(p, *ICMP_KINDS[(6, IcmpKind.ADMIN_PROHIBITED)])
    assert describe(p.buf)["icmp.check"] == 0x9e17
    assert packet_of(p.buf).icmp is IcmpKind.ADMIN_PROHIBITED


KINDS = sorted(ICMP_KINDS, key=lambda k: (k[0], k[1].value))


@pytest.mark.parametrize(("fam", "kind"), KINDS)
def test_every_kind_round_trips(fam: int, kind: IcmpKind) -> None:
    a, b = ("203.0.113.7", "192.168.2.3") if fam == 4 else ("2001:db8::7", "2001:db8::3")
    pkt = Packet(src=Endpoint(addr=ip_address(b), port=0), dst=Endpoint(addr=ip_address(a),
                 port=0), proto=Proto.ICMP if fam == 4 else Proto.ICMPV6, icmp=kind)
    wire = bytes_of(pkt)
    assert wire_fault(wire) is None
    assert (wire[0] >> 4, wire[9] if fam == 4 else wire[6]) == (fam, int(pkt.proto))
    assert packet_of(wire) == pkt


def test_kind_without_a_form_in_the_family_is_refused() -> None:
    pkt = Packet(src=Endpoint(addr=ip_address("192.168.2.3"), port=0),
                 dst=Endpoint(addr=ip_address("203.0.113.7"), port=0), proto=Proto.ICMP,
                 icmp=IcmpKind.TIME_EXCEEDED)
    with pytest.raises(AbstractionError, match="time-exceeded has no ICMP form"):
        bytes_of(pkt)
