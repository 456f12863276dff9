"""The fabric's choice of receiver: owned addresses, then the flow's entry node only if it
announces the address, then the first announcing node, else no route."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import attrs

from model.network import _receiver
from model.scenario import load
from model.values import Endpoint, Packet, Proto

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "loadbalancer-vip.yaml"
VIP = ip_address("172.16.10.2")


def _to(addr: str) -> Packet:
    return Packet(src=Endpoint(addr=ip_address("203.0.113.7"), port=40000),
                  dst=Endpoint(addr=ip_address(addr), port=80), proto=Proto.TCP)


def test_vip_goes_to_the_entry_node_only_if_it_announces_it() -> None:
    world = load(EXAMPLE).world
    assert world.announced[VIP] == frozenset({"node1"})
    assert _receiver(world, _to(str(VIP)), "node1") == ("node", "node1")
    # An entry node that does not announce the VIP is not where the fabric delivers it.
    assert _receiver(world, _to(str(VIP)), "node2") == ("node", "node1")
    both = attrs.evolve(world, announced={VIP: frozenset({"node1", "node2"})})
    assert _receiver(both, _to(str(VIP)), "node2") == ("node", "node2")
    assert _receiver(both, _to(str(VIP)), None) == ("node", "node1")


def test_an_address_nobody_owns_or_announces_has_no_route() -> None:
    world = load(EXAMPLE).world
    assert _receiver(world, _to("198.51.100.1"), "node2") is None
    assert _receiver(world, _to("198.51.100.1"), None) is None
