"""A service without backends: the routable switch, the ICMP error's bytes and the ICMPv6
rate limit, in the model, the reference datapath, and the two side by side."""

from __future__ import annotations

from typing import Any

import pytest

from datapath.adapter import reference_factory
from datapath.config import NodeConfig, ServiceConfig
from datapath.difftest import DiffRun
from datapath.drop import DropReason as DpDrop
from datapath.drop import Verdict as DpVerdict
from datapath.host import make_node
from datapath.icmp import ICMP_PACKET_MAX_SAMPLE_SIZE, ICMPV6_PACKET_MAX_SAMPLE_SIZE
from datapath.spec import build_packet, describe
from model.drops import DropReason
from model.errors import ScenarioError
from model.flows import FlowTrace, run_flows
from model.maps import TokenBucket
from model.nodeport import icmp6_ratelimit
from model.scenario import parse
from tests.conftest import build_doc


def _trace(doc: dict[str, Any]) -> FlowTrace:
    sc = parse(doc, "no-backend")
    return run_flows(sc.world, sc.flows)[1][0]


@pytest.mark.parametrize("svc_type", ["NodePort", "LoadBalancer"])
def test_not_routable_goes_up_the_stack(svc_type: str) -> None:
    """v1.20 enable-no-service-endpoints-routable=false: no ICMP, no drop, the stack."""
    tr = _trace(build_doc(version="1.20", placement="none", svc_type=svc_type,
                          cilium={"enableNoServiceEndpointsRoutable": False}))
    assert tr.drop == ("node1", DropReason.PUNT_TO_STACK)
    assert tr.client_saw == ()


def test_not_routable_etp_local_drops() -> None:
    tr = _trace(build_doc(version="1.20", placement="remote",
                          service={"externalTrafficPolicy": "Local"},
                          cilium={"enableNoServiceEndpointsRoutable": False}))
    assert tr.drop == ("node1", DropReason.DROP_NO_SERVICE)
    assert tr.client_saw == ()


def test_routable_switch_needs_1_20() -> None:
    with pytest.raises(ScenarioError, match=r"cilium\.enableNoServiceEndpointsRoutable"):
        parse(build_doc(version="1.18", cilium={"enableNoServiceEndpointsRoutable": False}))


@pytest.mark.parametrize("routable", [True, False])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("svc_type", ["NodePort", "LoadBalancer"])
def test_model_and_datapath_agree(routable: bool, family: str, svc_type: str) -> None:
    sc = parse(build_doc(version="1.20", placement="none", family=family, svc_type=svc_type,
                         cilium={"enableNoServiceEndpointsRoutable": routable,
                                 "serviceNoBackendResponse": "reject"}))
    run = DiffRun(sc.world, reference_factory)
    assert run.run(sc.flows) is None
    assert run.counters.observations > 0


def test_icmp6_bucket_model_matches_datapath() -> None:
    """Two independent implementations of ratelimit_check_and_take() on one schedule."""
    node = make_node(NodeConfig(ipv4=None, ipv6="fd05::1", no_backend_response="reject",
                                services=(ServiceConfig(frontend="fd04::2", port=80,
                                                        rev_nat_index=1),)))
    pkt = build_packet({"ip6": {"src": "fd04::1", "dst": "fd04::2"},
                        "tcp": {"sport": 1000, "dport": 80}})
    bucket: TokenBucket | None = None
    schedule = [0] * 101 + [1, 2, 2, 5, 5, 20] + [20] * 1000
    allowed = []
    for t in schedule:
        node.now = t
        r = node.run("from-netdev", pkt)
        bucket, ok = icmp6_ratelimit(bucket, t)
        assert r.drop_reason is (DpDrop.DROP_NO_SERVICE if ok else DpDrop.DROP_RATE_LIMITED)
        assert [v.tokens for _k, v in node.maps.ratelimit.items()] == [bucket.tokens]
        allowed.append(ok)
    assert allowed[:101] == [True] * 100 + [False]  # 99 left after the first, then none
    assert allowed[101:105] == [False, True, True, True]  # only more than 1 s tops up
    assert bucket is not None and bucket.tokens == 0
    assert sum(allowed[-1000:]) == 999  # topped up to the bucket size 1000 at t=20


@pytest.mark.parametrize(("v6", "size", "sample"), [
    (False, 0, 28 + 14), (False, 1, 28 + 14 + 1), (False, 30, 64), (False, 300, 64),
    (True, 0, 48 + 14), (True, 1170, 1232), (True, 1400, 1232)])
def test_icmp_sample_length(v6: bool, size: int, sample: int) -> None:
    """tot_len/plen = headers + min(frame length, cap); zeros where the frame was short."""
    node = make_node(NodeConfig(ipv6="fd05::1", no_backend_response="reject", services=(
        ServiceConfig(frontend="fd04::2" if v6 else "172.16.10.1", port=53, proto="udp",
                      rev_nat_index=1),)))
    l3 = {"ip6": {"src": "fd04::1", "dst": "fd04::2"}} if v6 else {
        "ip": {"src": "110.0.11.1", "dst": "172.16.10.1"}}
    req = build_packet({**l3, "udp": {"sport": 7, "dport": 53}, "payload_hex": "ab" * size})
    r = node.run("from-netdev", req)
    assert r.verdict is DpVerdict.CTX_ACT_REDIRECT and r.drop_reason is DpDrop.DROP_NO_SERVICE
    d = describe(r.packet)
    assert d["icmp.csum_ok"] is True
    cap = ICMPV6_PACKET_MAX_SAMPLE_SIZE if v6 else ICMP_PACKET_MAX_SAMPLE_SIZE
    assert sample <= cap
    hdr = 40 + 8 if v6 else 28
    assert len(r.packet) == hdr + sample
    assert (d["ip6.plen"] == 8 + sample) if v6 else (d["ip.tot_len"] == hdr + sample)
    quoted = bytes(r.packet[hdr:])
    assert quoted == (req + bytes(14))[:sample]
