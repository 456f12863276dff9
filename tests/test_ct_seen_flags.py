"""Per-direction TCP flags of a CT entry (tx_flags_seen / rx_flags_seen, conntrack.h): which
lookup records into which byte, their reset on a reopen, and ACTION_CLOSE, where an RST closes
both ways because ct_entry_seen_both_syns is never true as compiled."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import pytest

from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.host import make_node
from datapath.spec import build_packet
from datapath.vecschema import map_key
from model import conntrack as ct
from model.config import CiliumVersion
from model.maps import CtEntry
from model.values import Endpoint, Packet, Proto, TcpFlags

V20, V18 = CiliumVersion.V1_20, CiliumVersion.V1_18
CLIENT = Endpoint(addr=ip_address("203.0.113.7"), port=40000)
BACKEND = Endpoint(addr=ip_address("10.0.2.10"), port=8080)


def tcp(flags: TcpFlags, reply: bool = False) -> Packet:
    """A request (client -> backend) or a reply with these flags."""
    src, dst = (BACKEND, CLIENT) if reply else (CLIENT, BACKEND)
    return Packet(src=src, dst=dst, proto=Proto.TCP, flags=flags)


Direction = ct.Direction
created, on_packet, reopens, reset = ct.created, ct.on_packet, ct.reopens, ct.reset
ORIG, REPLY = Direction.ORIGINAL, Direction.REPLY
S, A, R, F = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.RST, TcpFlags.FIN


def step(e: CtEntry, flags: TcpFlags, d: Direction, now: int, v: CiliumVersion = V20
         ) -> CtEntry:
    """One CT_EGRESS (ORIGINAL) or CT_INGRESS (REPLY) lookup hit."""
    return on_packet(v, e, tcp(flags, d is REPLY), now, direction=d)


def test_created_records_the_syn_in_tx_only() -> None:
    """ct_create4 ORs TCP_FLAG_SYN into the creating (egress) direction, whatever the packet."""
    e = created(V20, tcp(A), 0, node_port=True)
    assert (e.tx_syn_seen, e.rx_syn_seen, e.seen_non_syn) == (True, False, False)
    udp = created(V20, Packet(src=CLIENT, dst=BACKEND, proto=Proto.UDP), 0)
    assert not (udp.tx_syn_seen or udp.rx_syn_seen)


def test_rst_with_lost_replies_closes_both_directions() -> None:
    """SYN, ACK, RST with no SYN-ACK seen: both ways closed, the close timeout (not 8000 s)."""
    e = created(V20, tcp(S), 0)
    e = step(e, A, ORIG, 1)
    assert e.lifetime == 1 + ct.CT_CONNECTION_LIFETIME_TCP and not e.rx_syn_seen
    e = step(e, R, ORIG, 2)
    assert e.tx_closing and e.rx_closing and e.lifetime == 2 + ct.CT_CLOSE_TIMEOUT


def test_rst_after_both_syns_closes_both_too() -> None:
    """ct_entry_seen_both_syns is never true as compiled (a __be32 mask on a __u8): an RST
    closes both directions even with both SYNs seen; a FIN closes only its own."""
    e = step(created(V20, tcp(S), 0), S | A, REPLY, 1)
    assert e.tx_syn_seen and e.rx_syn_seen and not ct.seen_both_syns(e)
    e = step(step(e, A, ORIG, 2), R, ORIG, 3)
    assert e.tx_closing and e.rx_closing and e.lifetime == 3 + ct.CT_CLOSE_TIMEOUT
    fin = step(step(step(created(V20, tcp(S), 0), S | A, REPLY, 1), A, ORIG, 2), F | A,
               REPLY, 3)
    assert fin.rx_closing and not fin.tx_closing
    assert fin.lifetime == 3 + ct.CT_CONNECTION_LIFETIME_TCP


@pytest.mark.parametrize("v", [V18, V20])
def test_reopen_clears_both_directions_seen_flags(v: CiliumVersion) -> None:
    """ACTION_CREATE resets the seen flags (ct_reset_seen_flags) and records the new SYN in its
    own direction: a backend RST before its SYN-ACK then closes both ways."""
    e = step(step(created(v, tcp(S), 0), S | A, REPLY, 1), A, ORIG, 2)
    e = step(step(e, F | A, ORIG, 3), F | A, REPLY, 4)
    assert e.tx_closing and e.rx_closing and e.tx_syn_seen and e.rx_syn_seen
    assert reopens(v, e, tcp(S))
    again = reset(v, e, tcp(S), 5, service=False)
    assert (again.tx_syn_seen, again.rx_syn_seen, again.seen_non_syn) == (True, False, False)
    assert again.lifetime == 5 + ct.CT_SYN_TIMEOUT
    shut = step(again, R, REPLY, 6, v)
    assert shut.tx_closing and shut.rx_closing and shut.lifetime == 6 + ct.CT_CLOSE_TIMEOUT
    # the reply direction's reset: the SYN goes to rx_flags_seen
    rx = reset(v, e, tcp(S, reply=True), 5, service=False, direction=REPLY)
    assert (rx.tx_syn_seen, rx.rx_syn_seen) == (False, True)


def test_dead_entry_records_flags_only_on_close() -> None:
    """A dead entry is not updated (ct_entry_alive); ACTION_CLOSE still records its flags."""
    dead = CtEntry(tx_closing=True, rx_closing=True, tx_syn_seen=True, lifetime=9)
    assert step(dead, S | A, REPLY, 5) == dead  # 1.20: SYN-ACK is no ACTION_CREATE
    closed = step(dead, S | R, REPLY, 5)
    assert closed.rx_syn_seen and closed.lifetime == 5 + ct.CT_CLOSE_TIMEOUT


def test_fin_or_rst_with_syn_is_a_close_not_a_reopen() -> None:
    """ct_tcp_select_action tests FIN/RST before SYN: SYN|FIN on a closing entry closes."""
    half = CtEntry(tx_closing=True, tx_syn_seen=True, rx_syn_seen=True)
    assert reopens(V20, half, tcp(S)) and reopens(V18, half, tcp(S | A))
    assert not reopens(V20, half, tcp(S | A))
    assert not reopens(V18, half, tcp(S | F)) and not reopens(V20, half, tcp(S | R))


def test_service_entry_closes_both_whatever_the_flags() -> None:
    """CT_SERVICE sees one direction only; its seen flags go to tx_flags_seen."""
    e = on_packet(V20, created(V20, tcp(S), 0, service=True), tcp(A), 1, service=True)
    assert e.tx_syn_seen and not e.rx_syn_seen
    e = on_packet(V20, e, tcp(F | A), 2, service=True)
    assert e.tx_closing and e.rx_closing


def _ref_node() -> tuple[Any, Callable[..., Any]]:
    """The reference datapath with a local backend: requests on from-netdev (CT_EGRESS),
    replies on to-netdev (CT_INGRESS); returns the node and a sender."""
    node = make_node(NodeConfig(
        mode="snat", host_routing="bpf",
        services=(ServiceConfig(frontend="172.16.10.1", port=80, rev_nat_index=1,
                                backends=(124,)),),
        backends=(BackendConfig(id=124, address="192.168.0.1", port=8080),),
        endpoints=(EndpointConfig(address="192.168.0.1", ifindex=25, ep_id=127),)))

    def send(hook: str, flags: str, sport: int = 111) -> Any:
        if hook == "from-netdev":
            ip, l4 = {"src": "110.0.11.1", "dst": "172.16.10.1"}, {"sport": sport, "dport": 80}
        else:
            ip, l4 = {"src": "192.168.0.1", "dst": "110.0.11.1"}, {"sport": 8080, "dport": sport}
        return node.run(hook, build_packet({"ip": ip, "tcp": dict(l4, flags=flags)}))
    return node, send


def _egress(node: Any, sport: int = 111) -> Any:
    key = map_key("ct4", {"saddr": "192.168.0.1", "daddr": "110.0.11.1", "sport": sport,
                          "dport": 8080, "nexthdr": 6, "flags": 0})
    return node.maps.by_name("ct4")._d[key]


def test_reference_records_flags_per_direction() -> None:
    """The reference ORs whole flag bytes per direction, as CT_REPORT_FLAGS 0xff does."""
    node, send = _ref_node()
    send("from-netdev", "S")
    send("to-netdev", "SA")
    send("from-netdev", "PA")
    e = _egress(node)
    assert (e.tx_flags_seen, e.rx_flags_seen) == (0x1A, 0x12)
    send("to-netdev", "FA")  # a FIN closes its own direction only
    assert e.rx_closing and not e.tx_closing and e.rx_flags_seen == 0x13
    send("from-netdev", "R")  # both SYNs seen, yet the RST closes both (as compiled)
    assert e.tx_closing and e.rx_closing and e.tx_flags_seen == 0x1E


def test_reference_rst_before_both_syns_and_syn_fin() -> None:
    """An RST with the SYN-ACK lost closes both ways; SYN|FIN on a half-closed entry closes
    (ACTION_CLOSE is tested first), it does not reopen."""
    node, send = _ref_node()
    send("from-netdev", "S")
    send("from-netdev", "A")
    send("from-netdev", "R")
    e = _egress(node)
    assert e.tx_closing and e.rx_closing and e.lifetime == ct.CT_CLOSE_TIMEOUT
    send("from-netdev", "S", sport=112)
    send("to-netdev", "SA", sport=112)
    send("to-netdev", "FA", sport=112)
    half = _egress(node, 112)
    assert half.rx_closing and not half.tx_closing
    send("from-netdev", "SF", sport=112)
    assert half is _egress(node, 112) and half.tx_closing and half.rx_closing
