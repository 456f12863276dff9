"""DSR dispatch ipip: the agents' refusals per version, the model's trace, the reference
datapath's bytes, the vectors, P-DSR-04 and the generator reaching IPIP (docs/ipip.md)."""

from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from datapath.build import ipv4, ipv6, tcp_segment
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.csum import checksum
from datapath.diffgen import combos
from datapath.drop import Verdict, XdpVerdict
from datapath.explicit import _two_nodes
from datapath.faults import faults_killed
from datapath.host import make_node
from datapath.packet import ip_bytes
from datapath.programs import IPIP_COMBOS, programs
from datapath.vectors import run_vector_file
from diagrams.catalogue import PICTURES, picture_dot
from model.config import CiliumConfig, CiliumVersion, DsrDispatch, LBMode, validate
from model.drops import DropReason
from model.errors import ConfigRefused
from model.flows import run_flows, trace_json
from model.hooks import Hook, Step
from model.scenario import parse
from model.values import Encap
from nodeport.cli import main
from properties.catalogue import BY_ID
from properties.coreprops import HOLD, VIOLATED
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "ipip-dsr.yaml"
VECTORS = ("ipip_dsr.yaml", "xdp_ipip_dsr.yaml", "ipip_termination.yaml")


def _doc(**cilium: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    lb = cilium.pop("loadBalancer", {})
    doc["cilium"]["loadBalancer"].update(lb)
    doc["cilium"].update(cilium)
    return doc


def _run(doc: dict[str, Any]) -> Any:
    sc = parse(doc, "<t>")
    _st, traces = run_flows(sc.world, sc.flows)
    return traces


# -- the agent ------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "mode", "accel", "words"), [
    (CiliumVersion.V1_13, LBMode.DSR, True, "only supported for --datapath-mode=lb-only"),
    (CiliumVersion.V1_18, LBMode.DSR, False, "currently only available under XDP acceleration"),
    (CiliumVersion.V1_18, LBMode.HYBRID, True, "Invalid value for --bpf-lb-dsr-dispatch: ipip"),
])
def test_refusals_per_version(version: CiliumVersion, mode: LBMode, accel: bool,
                              words: str) -> None:
    from model.config import Acceleration
    cfg = CiliumConfig(version=version, mode=mode, dispatch=DsrDispatch.IPIP,
                       acceleration=Acceleration.NATIVE if accel else Acceleration.DISABLED)
    with pytest.raises(ConfigRefused, match=words.replace("-", r"\-").replace(".", r"\.")):
        validate(cfg)


def test_accepted_where_the_agent_accepts() -> None:
    from model.config import Acceleration
    validate(CiliumConfig(version=CiliumVersion.V1_20, mode=LBMode.DSR,
                          dispatch=DsrDispatch.IPIP))
    validate(CiliumConfig(version=CiliumVersion.V1_20, mode=LBMode.HYBRID,
                          dispatch=DsrDispatch.IPIP))
    validate(CiliumConfig(version=CiliumVersion.V1_18, mode=LBMode.DSR,
                          dispatch=DsrDispatch.IPIP, acceleration=Acceleration.NATIVE))
    validate(CiliumConfig(mode=LBMode.SNAT, dispatch=DsrDispatch.IPIP))  # unused in SNAT


@pytest.mark.parametrize(("change", "fragment"), [
    ({"version": "1.18"}, "cilium.enableIPIPTermination: true needs version 1.20"),
    ({"enableIPIPTermination": "yes"}, "cilium.enableIPIPTermination"),
    ({"version": "1.18", "enableIPIPTermination": False},
     "cilium: configuration refused by the agent: DSR dispatch mode ipip currently only"),
    ({"routingMode": "tunnel", "tunnelProtocol": "geneve"},
     "Tunnel routing with Node Port \"dsr\" mode requires geneve dispatch."),
    ({"loadBalancer": {"dsrDispatch": "ip-in-ip"}}, "cilium.loadBalancer.dsrDispatch"),
])
def test_bad_configs_exit_2_with_key_path(change: dict[str, Any], fragment: str,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(**copy.deepcopy(change))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    rc = main(["trace", str(path)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and fragment in err, err


# -- the model's trace ----------------------------------------------------------------------
def test_trace_outer_header_no_dnat_then_termination() -> None:
    tr = _run(_doc())[0]
    steps = [(h.at, h.hook, h.action) for h in tr.hops]
    assert ("node1", Hook.FROM_NETDEV, Step.IPIP) in steps
    assert ("node2", Hook.FROM_NETDEV, Step.IPIP_DNAT) in steps
    enc = next(h.packet for h in tr.hops if h.action is Step.IPIP)
    assert enc.outer is not None and enc.outer.kind is Encap.IPIP
    assert str(enc.outer.src) == "192.168.2.3" and str(enc.outer.dst) == "10.0.2.10"
    assert str(enc.dst) == "172.16.0.10:80"  # the LB node does not DNAT
    # the backend sees the client; the forced backend keeps the frontend's port
    assert [str(p.src) for p in tr.backend_saw] == ["203.0.113.7:40000"] * 2
    assert {str(p.dst) for p in tr.backend_saw} == {"10.0.2.10:80"}
    assert [str(p.src) for p in tr.client_saw] == ["172.16.0.10:80"] * 2
    js = trace_json(tr)
    outer = [h["packet"]["outer"] for h in js["hops"] if h["packet"]["outer"]]
    assert outer[0] == {"type": "ipip", "src": "192.168.2.3", "dst": "10.0.2.10"}


def test_without_termination_the_pod_cannot_take_it() -> None:
    tr = _run(_doc(enableIPIPTermination=False))[0]
    assert not tr.delivered and tr.drop is not None
    assert tr.drop[0] == "node2" and tr.drop[1] is DropReason.ENDPOINT_NO_IPIP
    assert DropReason.ENDPOINT_NO_IPIP.code is None  # not a Cilium drop


def test_v118_encapsulates_at_xdp_only() -> None:
    tr = _run(_doc(version="1.18", enableIPIPTermination=False,
                   loadBalancer={"acceleration": "native"}))[0]
    assert (tr.hops[1].hook, tr.hops[1].action) == (Hook.XDP, Step.IPIP)
    assert tr.drop is not None and tr.drop[1] is DropReason.ENDPOINT_NO_IPIP


def test_another_nodes_nodeport_is_no_frontend_of_the_backends_node() -> None:
    doc = _doc()
    doc["flows"][0]["to"] = {"node": "node1", "service": "web"}
    tr = _run(doc)[0]
    assert tr.drop is not None and tr.drop == ("node2", DropReason.PUNT_TO_STACK)


def test_v118_local_backend_is_not_dnated() -> None:
    doc = _doc(version="1.18", enableIPIPTermination=False,
               loadBalancer={"acceleration": "native"})
    doc["flows"][0]["to"]["via"] = "node2"
    doc["flows"][0]["to"] = {"address": "172.16.0.10", "port": 80, "via": "node2"}
    tr = _run(doc)[0]
    assert tr.drop == ("node2", DropReason.PUNT_TO_STACK) and not tr.backend_saw
    doc["cilium"]["version"] = "1.20"
    tr = _run(doc)[0]
    assert tr.delivered and str(tr.backend_saw[0].dst) == "10.0.2.10:8080"


# -- the reference datapath on bytes --------------------------------------------------------
def _lb_node(version: Literal["1.18", "1.20"] = "1.20", **kw: Any) -> Any:
    cfg = NodeConfig(name="lb", ipv4="10.0.10.1", mode="dsr", dispatch="ipip", version=version,
                     services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),),
                     backends=(BackendConfig(124, "192.168.0.2", 8080),), **kw)
    return make_node(cfg)


def _syn(dst: str = "172.16.10.2") -> bytes:
    c, f = ip_bytes("110.0.11.1"), ip_bytes(dst)
    return ipv4(c, f, 6, tcp_segment(c, f, 111, 80))


def test_tc_encapsulation_keeps_the_inner_packet() -> None:
    r = _lb_node().run("from-netdev", _syn())
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "cilium_ipip4"
    out = bytes(r.packet)
    assert out[9] == 4 and out[8] == 64 and checksum(out[:20]) == 0
    assert out[12:16] == ip_bytes("10.0.10.1") and out[16:20] == ip_bytes("192.168.0.2")
    assert out[20:] == _syn()


def test_xdp_encapsulation_copies_the_inner_header() -> None:
    r = _lb_node("1.18").run("xdp", _syn())
    assert r.verdict == XdpVerdict.XDP_TX
    out = bytes(r.packet)
    assert struct.unpack("!H", out[2:4])[0] == len(_syn()) + 20
    assert out[8] == 63 and struct.unpack("!H", out[10:12])[0] == 0xA6FF  # the 1.20 test's
    assert out[20:] == _syn()


def test_termination_forces_the_outer_destination() -> None:
    cfg = NodeConfig(name="be", ipv4="10.0.10.2", mode="dsr", dispatch="ipip",
                     ipip_termination=True,
                     services=(ServiceConfig("172.16.10.2", 80, 1, (124,)),),
                     backends=(BackendConfig(124, "192.168.0.9", 8080),),
                     endpoints=(EndpointConfig("192.168.0.1"),))
    node = make_node(cfg)
    pkt = ipv4(ip_bytes("10.0.10.1"), ip_bytes("192.168.0.1"), 4, _syn())
    r = node.run("from-netdev", pkt)
    assert r.verdict == Verdict.CTX_ACT_REDIRECT and r.target == "lxc:25"
    assert r.packet[16:20] == ip_bytes("192.168.0.1")  # not the LB map's 192.168.0.9
    assert struct.unpack("!H", r.packet[22:24])[0] == 80  # port 0: the frontend's stays
    off = make_node(NodeConfig(**{**_cfg_dict(cfg), "ipip_termination": False}))
    left = off.run("from-netdev", pkt)  # left encapsulated, handed to the pod as it is
    assert left.target == "lxc:25" and left.packet[9] == 4 and left.packet[20:] == pkt[20:]


def _cfg_dict(cfg: NodeConfig) -> dict[str, Any]:
    import attrs
    return attrs.asdict(cfg, recurse=False)


def test_ipv6_xdp_keeps_the_hop_limit() -> None:
    cfg = NodeConfig(name="lb", ipv4=None, ipv6="500::", mode="dsr", dispatch="ipip",
                     services=(ServiceConfig("200::", 80, 1, (125,)),),
                     backends=(BackendConfig(125, "300::", 8080),))
    c, f = ip_bytes("100::"), ip_bytes("200::")
    inner = ipv6(c, f, 6, tcp_segment(c, f, 111, 80))
    r = make_node(cfg).run("xdp", inner)
    assert r.verdict == XdpVerdict.XDP_TX
    assert r.packet[6] == 41 and r.packet[7] == 64 and bytes(r.packet[40:]) == inner


@pytest.mark.parametrize("name", VECTORS)
def test_vectors_pass_on_the_reference(name: str) -> None:
    rep = run_vector_file(ROOT / "vectors" / name)
    assert rep.ok, rep


def test_ipip_faults_are_killed_by_the_vectors() -> None:
    killed = faults_killed([ROOT / "vectors" / v for v in VECTORS])
    assert killed["ipip_dnats_inner"] and killed["ipip_outer_src_client"]


# -- properties, generator, diagram ---------------------------------------------------------
def test_p_dsr_04_expected_results() -> None:
    p = BY_ID["P-DSR-04"]
    got = {c.label(): p.expect(c) for c in p.configs}
    assert got["dsr/ipv4/remote/loadbalancer/tcp/ipip/v1.20/ipip-term"] == HOLD
    assert got["dsr/ipv4/remote/loadbalancer/tcp/ipip/v1.20"] == VIOLATED
    assert got["dsr/ipv4/remote/nodeport/tcp/ipip/v1.20/ipip-term"] == VIOLATED
    assert p.mutants and p.mutants[0][0].name == "IPIP_DNATS_INNER"


def test_prove_p_dsr_04_and_its_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove", "--property", "P-DSR-04", "--jobs", "1"]) == 0
    assert "8 results, 0 unexpected" in capsys.readouterr().out
    assert main(["prove", "--property", "P-DSR-04", "--mutants", "--jobs", "1"]) == 0
    assert "1/1 mutants killed" in capsys.readouterr().out


def test_generator_reaches_ipip() -> None:
    from hypothesis import HealthCheck, given, settings
    combo = ("ipv4", "dsr", "ipip", "native")
    assert combo in IPIP_COMBOS and ("ipv6", "dsr", "ipip", "native") in IPIP_COMBOS
    assert set(IPIP_COMBOS) <= set(combos("1.20")) and combo in combos("1.18")
    seen: dict[str, set[Any]] = {"accel": set(), "term": set()}

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(programs(combo))
    def check(doc: dict[str, Any]) -> None:
        c = doc["cilium"]
        assert c["loadBalancer"]["dsrDispatch"] == "ipip"
        if c["version"] == "1.18":
            assert c["loadBalancer"]["acceleration"] == "native"
        seen["accel"].add(c["loadBalancer"].get("acceleration"))
        seen["term"].add(c.get("enableIPIPTermination", False))
        parse(copy.deepcopy(doc), "<generated>")  # the agent accepts every one

    check()
    assert True in seen["term"] and "native" in seen["accel"]
    parse(_two_nodes(combo, "1.18", "TCP", []), "<explicit>")


def test_standard_diagram() -> None:
    pic = next(p for p in PICTURES if p.name == "21-ipip-dsr")
    dot = picture_dot(pic)
    assert "IPIP 192.168.2.3 → 10.0.2.10" in dot and "ipip-decap+dnat" in dot
    committed = (ROOT / "docs" / "diagrams" / "21-ipip-dsr.dot").read_text()
    assert committed.strip() == dot.strip()
