"""Behaviours of the reference datapath that the mutation check found no vector, generated
program or test pinning (docs/mutation-datapath.md): one test each."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from datapath.abstraction import wire_fault
from datapath.build import ipv4, tcp_segment, udp_datagram
from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.drop import Verdict
from datapath.host import make_node
from datapath.lb import rewrite
from datapath.packet import IPPROTO_TCP, IPPROTO_UDP, ip_bytes, parse
from datapath.spec import build_packet, describe


def _two_backends(**kw: Any) -> NodeConfig:
    return NodeConfig(ipv4="10.0.10.2",
                      services=(ServiceConfig(frontend="172.16.10.1", port=80, rev_nat_index=1,
                                              backends=(7, 9)),),
                      backends=(BackendConfig(id=7, address="192.168.9.7", port=8080),
                                BackendConfig(id=9, address="192.168.9.9", port=8080)),
                      **kw)


def _syn(sport: int) -> bytes:
    return build_packet({"ip": {"src": "110.0.11.1", "dst": "172.16.10.1"},
                         "tcp": {"sport": sport, "dport": 80}})


def test_selection_first_always_takes_slot_one() -> None:
    """NodeConfig.selection 'first' (vector node key `selection`): every new flow goes to
    the backend in slot 1 (lb.py _select_slot), where 'random' spreads them."""
    first = make_node(_two_backends(selection="first"))
    dsts = set()
    for sport in range(1000, 1040):
        r = first.run("from-netdev", _syn(sport))
        assert r.verdict is Verdict.CTX_ACT_REDIRECT
        dsts.add(describe(r.packet)["ip.dst"])
    assert dsts == {"192.168.9.7"}
    rand = make_node(_two_backends(selection="random", seed=3))
    spread = {describe(rand.run("from-netdev", _syn(s)).packet)["ip.dst"]
              for s in range(1000, 1040)}
    assert spread == {"192.168.9.7", "192.168.9.9"}


@pytest.mark.parametrize(("old", "new"), [
    ("192.168.9.7", "192.168.9.9"),  # first 16-bit word equal, second differs
    ("10.1.0.5", "10.2.0.5"),  # second word equal, first differs
])
@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP])
def test_ipv4_rewrite_where_one_half_of_the_address_is_unchanged(old: str, new: str,
                                                                 proto: int) -> None:
    """lb.rewrite compares the address as two 16-bit words (bpf_csum_diff's unit): a new
    address sharing either word must still be written, with both checksums updated."""
    s, d, n = ip_bytes("110.0.11.1"), ip_bytes(old), ip_bytes(new)
    l4 = (tcp_segment(s, d, 40000, 80) if proto == IPPROTO_TCP
          else udp_datagram(s, d, 40000, 80))
    buf = bytearray(ipv4(s, d, proto, l4))
    p = parse(buf)
    rewrite(p, False, n, 8080)
    assert wire_fault(buf) is None
    again = parse(bytearray(buf))
    assert (again.daddr, again.dport) == (n, 8080) and p.daddr == n, new


def test_udp_rewrite_whose_checksum_comes_out_zero_writes_0xffff() -> None:
    """RFC 768: a UDP checksum that computes to 0 is sent as 0xffff (0 means none); the
    incremental update after DNAT must do the same (lb.rewrite, BPF_F_MARK_MANGLED_0).
    Source port 24833 makes this DNAT's result exactly zero."""
    s, d, n = ip_bytes("110.0.11.1"), ip_bytes("172.16.10.1"), ip_bytes("192.168.9.9")
    buf = bytearray(ipv4(s, d, IPPROTO_UDP, udp_datagram(s, d, 24833, 80)))
    p = parse(buf)
    rewrite(p, False, n, 8080)
    assert struct.unpack_from("!H", buf, 20 + 6)[0] == 0xFFFF
    assert wire_fault(buf) is None
