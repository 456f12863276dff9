"""The abstraction function: bytes <-> Packet round trips, dumps <-> NodeState, --datapath."""

from __future__ import annotations

from ipaddress import ip_address

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath.abstraction import bytes_of, packet_of, wire_fault
from datapath.adapter import Datapath, load_factory, reference_factory
from datapath.config import NodeConfig
from datapath.difftest import DiffRun, PortRenaming, diff_states
from datapath.errors import VectorFileError
from datapath.mapstate import node_state
from model.config import CiliumVersion
from model.scenario import load
from model.values import DsrKind, DsrMeta, Endpoint, IcmpKind, Outer, Packet, Proto, TcpFlags
from tests.conftest import EXAMPLES, run_cli

V4 = st.sampled_from(["203.0.113.7", "10.0.2.10", "192.168.2.3", "172.16.10.2"])
V6 = st.sampled_from(["2001:db8:ff00::7", "2001:db8:10:2::10", "2001:db8:2::3"])
PORT = st.integers(1, 65535)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    addrs = V6 if draw(st.booleans()) else V4
    ep = st.builds(lambda a, p: Endpoint(addr=ip_address(a), port=p), addrs, PORT)
    src, dst = draw(ep), draw(ep)
    if draw(st.integers(0, 9)) == 0:
        return Packet(src=attrs.evolve(src, port=0), dst=attrs.evolve(dst, port=0),
                      proto=Proto.ICMPV6 if src.addr.version == 6 else Proto.ICMP,
                      icmp=IcmpKind.PORT_UNREACHABLE)
    proto = draw(st.sampled_from([Proto.TCP, Proto.UDP]))
    flags = TcpFlags(draw(st.integers(0, 0x1F))) if proto is Proto.TCP else TcpFlags.NONE
    outer = None
    if draw(st.booleans()):
        outer = Outer(src=ip_address(draw(addrs)), dst=ip_address(draw(addrs)),
                      vni=draw(st.integers(0, 0xFFFFFF)))
    kinds = [DsrKind.GENEVE_OPTION] if outer else [
        DsrKind.IPV6_DSTOPT if src.addr.version == 6 else DsrKind.IPV4_OPTION]
    dsr = None
    if draw(st.booleans()):
        dsr = DsrMeta(kind=draw(st.sampled_from(kinds)), frontend=draw(ep))
    return Packet(src=src, dst=dst, proto=proto, flags=flags, dsr=dsr, outer=outer)


@settings(max_examples=200, deadline=None)
@given(packets())
def test_packet_round_trip(p: Packet) -> None:
    data = bytes_of(p)
    assert packet_of(data) == p
    assert wire_fault(data) is None


def test_wire_fault_sees_bad_checksums() -> None:
    p = Packet(src=Endpoint(addr=ip_address("203.0.113.7"), port=1),
               dst=Endpoint(addr=ip_address("10.0.2.10"), port=2), proto=Proto.TCP)
    data = bytearray(bytes_of(p))
    data[-1] ^= 0xFF
    assert wire_fault(bytes(data)) == "BAD_L4_CHECKSUM"
    data = bytearray(bytes_of(p))
    data[10] ^= 0xFF
    assert wire_fault(bytes(data)) == "BAD_IP_CHECKSUM"


def test_dump_abstracts_to_model_state_and_detects_tampering() -> None:
    sc = load(EXAMPLES / "snat-remote-backend.yaml")
    world = attrs.evolve(sc.world, cfg=attrs.evolve(sc.world.cfg, version=CiliumVersion.V1_20))
    run = DiffRun(world, reference_factory)
    assert run.run(sc.flows) is None
    model = run.model_states()
    dp = run.net.states(run.state.nodes, lb=True)
    assert diff_states(model, dp, run.ren, lb=True) == []
    assert any(len(st.ct) for st in model.values()) and any(len(st.snat) for st in model.values())
    assert all(dp[n].ct == model[n].ct and dp[n].lb == model[n].lb for n in model)
    # the abstraction is not vacuous: a changed CT lifetime is a difference
    node = next(n for n in model if len(model[n].ct))
    maps = run.net.nodes[node].maps  # type: ignore[attr-defined]
    for ct in (maps.ct4_tcp, maps.ct4_any):
        for _k, e in ct.items():
            e.lifetime += 1
    again = run.net.states(run.state.nodes)
    assert diff_states(model, again, PortRenaming([], 1, 1)) != []
    assert node_state(run.net.nodes[node].dump(), model[node]).ct != model[node].ct


def test_load_factory() -> None:
    f = load_factory("datapath.host:make_node")
    assert isinstance(f(NodeConfig(), frozenset()), Datapath)
    assert load_factory(None) is reference_factory
    for bad in ("datapath.host", "nope.mod:f", "datapath.host:nothing", "datapath.host:HOOKS"):
        with pytest.raises(VectorFileError) as ei:
            load_factory(bad)
        assert "\n" not in str(ei.value) and "--datapath" in str(ei.value)


@pytest.mark.parametrize("spec", ["nope:x", "datapath.host", "datapath.config:NodeConfig"])
def test_cli_bad_datapath_exits_2(spec: str) -> None:
    res = run_cli("difftest", "--datapath", spec, "--examples", "1", "--quiet")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodeport: error: --datapath")
    assert "Traceback" not in res.stderr


def test_cli_runs_and_vectors_share_the_loader() -> None:
    res = run_cli("difftest", "--examples", "16", "--seed", "2",
                  "--datapath", "datapath.adapter:reference_factory")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "packet observations compared" in res.stdout and "obs/s" in res.stdout
    assert "programs" in res.stderr  # progress bar
    res = run_cli("vectors", str(EXAMPLES.parent / "vectors" / "lb4_nat_fwd.yaml"),
                  "--datapath", "nope:x")
    assert res.returncode == 2 and "--datapath" in res.stderr


def test_plain_udp_to_the_geneve_port_is_not_geneve() -> None:
    """A datagram to UDP 6081 without a Geneve header behind it abstracts as itself (found
    by the round trip: the abstraction used to fail on it)."""
    p = Packet(src=Endpoint(addr=ip_address("203.0.113.7"), port=1),
               dst=Endpoint(addr=ip_address("203.0.113.7"), port=6081), proto=Proto.UDP)
    assert packet_of(bytes_of(p)) == p
