"""XDP acceleration in the model: the scenario key and the agent's refusals per version, the
xdp hook's verdicts and hand-over (bpf_xdp.c, nodeport.h), and what from-netdev skips."""

from __future__ import annotations

from typing import Any

import pytest

from model.config import Acceleration
from model.errors import ConfigRefused, ScenarioError
from model.flows import run_flows
from model.hooks import Hook, Step
from model.scenario import load, parse
from tests.conftest import ROOT

V6_TUNNEL = ROOT / "examples" / "ipv6-geneve-dsr-tunnel.yaml"


def _doc(path: str, **lb: Any) -> dict[str, Any]:
    import yaml
    doc: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    doc["cilium"]["loadBalancer"].update(lb)
    return doc


def _hooks(doc: dict[str, Any]) -> list[list[tuple[str | None, str]]]:
    sc = parse(doc, "<t>")
    _st, traces = run_flows(sc.world, sc.flows)
    return [[(h.hook.value if h.hook else None, h.action.value) for h in tr.hops]
            for tr in traces]


def test_key_values_and_default() -> None:
    assert load(ROOT / "examples" / "snat-remote-backend.yaml").world.cfg.acceleration \
        is Acceleration.DISABLED
    for v in ("native", "best-effort", "disabled"):
        sc = parse(_doc("examples/snat-remote-backend.yaml", acceleration=v), "<t>")
        assert sc.world.cfg.acceleration.value == v
        assert sc.world.cfg.accelerated is (v != "disabled")
    with pytest.raises(ScenarioError, match=r"cilium\.loadBalancer\.acceleration"):
        parse(_doc("examples/snat-remote-backend.yaml", acceleration="generic"), "<t>")


def test_agent_refusals_per_version() -> None:
    doc = _doc("examples/ipv6-geneve-dsr-tunnel.yaml", acceleration="native")
    with pytest.raises(ConfigRefused, match="XDP acceleration cannot be used with an IPv6 "
                       "underlay"):
        parse(doc, "<t>")
    doc["cilium"]["loadBalancer"]["acceleration"] = "disabled"
    parse(doc, "<t>")  # the same cluster without XDP is accepted
    v4 = _doc("examples/geneve-dsr-tunnel.yaml", acceleration="native")
    parse(v4, "<t>")  # an IPv4 underlay is fine on 1.18/1.20
    v4["cilium"]["version"] = "1.13"
    v4["cilium"]["loadBalancer"] = {"mode": "snat", "acceleration": "native"}
    with pytest.raises(ConfigRefused, match="Cannot use NodePort acceleration with tunneling"):
        parse(v4, "<t>")
    old = _doc("examples/v113-dsr.yaml", acceleration="best-effort")
    with pytest.raises(ConfigRefused, match="bpf-lb-acceleration: best-effort"):
        parse(old, "<t>")


def test_remote_backend_and_reply_served_at_xdp() -> None:
    hops = _hooks(_doc("examples/snat-remote-backend.yaml", acceleration="native"))[0]
    assert hops[1] == ("xdp", Step.SNAT.value)  # XDP_TX: no from-netdev on node1
    assert hops[2] == ("xdp", "pass") and hops[3] == ("from-netdev", "pass")  # node2
    assert ("xdp", Step.REV_SNAT.value) in hops
    assert ("from-netdev", Step.REV_SNAT.value) not in hops


def test_local_backend_dnat_at_xdp_then_tc_skips() -> None:
    hops = _hooks(_doc("examples/local-backend.yaml", acceleration="native"))[0]
    assert hops[1:3] == [("xdp", "dnat"), ("from-netdev", "pass")]


def test_etp_local_punted_on_120_served_on_118() -> None:
    doc = _doc("examples/etp-local.yaml", acceleration="native")
    doc["cilium"]["version"] = "1.20"
    hops = _hooks(doc)
    assert hops[0][1:3] == [("xdp", "pass"), ("from-netdev", "dnat")]
    assert hops[1][1:3] == [("xdp", "pass"), ("from-netdev", "icmp-reject")]
    doc["cilium"]["version"] = "1.18"
    hops = _hooks(doc)
    assert hops[0][1:3] == [("xdp", "dnat"), ("from-netdev", "pass")]
    assert hops[1][1] == ("xdp", "icmp-reject")


def test_dsr_ingress_at_xdp_and_tunnel_untouched() -> None:
    hops = _hooks(_doc("examples/dsr-remote-backend.yaml", acceleration="native"))[0]
    assert hops[1] == ("xdp", "dnat+dsr")
    assert hops[2:4] == [("xdp", "dsr-ingress"), ("from-netdev", "pass")]
    gen = _hooks(_doc("examples/geneve-dsr-tunnel.yaml", acceleration="native"))[0]
    assert ("from-overlay", "dsr-ingress") in gen  # the Geneve packet passes XDP unseen
    assert Hook.XDP.value == "xdp"


def test_standard_pictures_show_the_hand_over() -> None:
    from diagrams.catalogue import PICTURES, picture_dot
    pics = {p.name: p for p in PICTURES}
    local = picture_dot(pics["16-xdp-local"])
    assert "xdp: dnat, XDP_PASS to tc" in local and "walk ends" not in local
    remote = picture_dot(pics["15-xdp-remote"])
    assert "xdp: pass, XDP_PASS to tc" in remote and "rev-snat" in remote


def test_v113_dsr_ingress_stays_in_bpf_lxc() -> None:
    """v1.13 extracts DSR info in bpf_lxc: XDP passes the request untouched and the
    to-container hook records the frontend, so the reply is still reverse-translated."""
    doc = _doc("examples/v113-dsr.yaml", acceleration="native")
    hops = _hooks(doc)[0]
    assert hops[1:4] == [("xdp", "dnat+dsr"), ("xdp", "pass"), ("to-container", "dsr-ingress")]
    assert ("from-container", "rev-dnat") in hops


ETP_FRAGMENTS = """
cilium:
  version: '1.20'
  loadBalancer: {mode: snat, acceleration: native}
  routingMode: native
nodes: [{name: node1, ip: 192.168.2.3}]
pods: [{name: pod0, node: node1, ip: 10.0.1.10}]
services:
- {name: svc0, type: ExternalIP, protocol: TCP, port: 80, targetPort: 8080,
   externalTrafficPolicy: Local, backends: [pod0], externalIPs: [198.51.100.20]}
clients: [{name: client0, ip: 203.0.113.7}]
flows:
- {name: flow0, client: client0, sourcePort: 40000, fragments: 2,
   to: {address: 198.51.100.20, port: 80, via: node1}}
"""


def test_etp_local_later_fragment_punted_on_its_loaded_ports() -> None:
    """The eTP=Local punt follows the service lookup on the ports lb4_extract_tuple loaded
    (v1.20 nodeport.h:2732): a later fragment, whose ports come from the fragment map, is
    punted untouched like its first, and tc DNATs both (bpf_host.c:621)."""
    import yaml
    sc = parse(yaml.safe_load(ETP_FRAGMENTS), "<t>")
    _st, traces = run_flows(sc.world, sc.flows)
    hops = [h for h in traces[0].hops if h.hook is not None][:4]  # the two requests
    assert [(h.hook.value, h.action.value) for h in hops if h.hook] == [
        ("xdp", "pass"), ("from-netdev", "dnat")] * 2
    for xdp, tc in (hops[0:2], hops[2:4]):
        assert str(xdp.packet.dst.addr) == "198.51.100.20"  # untouched at XDP
        assert str(tc.packet.dst.addr) == "10.0.1.10"  # DNATed by tc
    assert hops[3].packet.dst.port == 0  # the later fragment: no L4 header
