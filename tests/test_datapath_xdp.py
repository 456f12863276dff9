"""XDP acceleration on bytes: the reference's xdp hook and its hand-over to from-netdev, the
vector schema for it, the fault the vectors and the difftest kill, and (with a Cilium tree)
the same vectors and a difftest through the real bpf_xdp.c."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from datapath.config import NodeConfig
from datapath.diffgen import run_program
from datapath.difftest import Counters
from datapath.drop import XFER_PKT_NO_SVC, Verdict, XdpVerdict, verdict_named, xfer_value
from datapath.errors import VectorFileError
from datapath.faults import faults_killed
from datapath.host import Node
from datapath.spec import build_packet, describe
from datapath.vectors import run_vector_file
from tests.conftest import ROOT
from tests.test_ciliumbpf_adapter import TREE, TREE_118, real

VECTORS = ROOT / "vectors"
FILES = ("xdp_nodeport.yaml", "xdp_dsr.yaml")


def _example(tunnel: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "xdp-acceleration.yaml")
                                         .read_text())
    if tunnel:  # SNAT to the remote backend through Geneve, built by XDP itself
        doc["cilium"].update(routingMode="tunnel", tunnelProtocol="geneve")
    return doc


def test_vectors_pass_on_the_reference() -> None:
    for name in FILES:
        rep = run_vector_file(VECTORS / name)
        assert rep.ok, rep.format()


def test_verdicts_never_compare_equal_across_kinds() -> None:
    assert XdpVerdict.XDP_PASS.value == Verdict.CTX_ACT_DROP.value
    kinds: list[object] = [XdpVerdict.XDP_PASS, Verdict.CTX_ACT_DROP]
    assert kinds[0] != kinds[1]
    assert verdict_named("XDP_TX") is XdpVerdict.XDP_TX
    assert verdict_named("CTX_ACT_OK") is Verdict.CTX_ACT_OK
    assert xfer_value("XFER_PKT_NO_SVC | XFER_PKT_SNAT_DONE") == 5 and xfer_value(1) == 1


def test_local_backend_handed_over_without_ttl_decrement() -> None:
    from datapath.config import BackendConfig, EndpointConfig, ServiceConfig
    cfg = NodeConfig(services=(ServiceConfig(frontend="172.16.10.1", port=80, rev_nat_index=1,
                                             backends=(124,)),),
                     backends=(BackendConfig(id=124, address="192.168.0.1", port=8080),),
                     endpoints=(EndpointConfig(address="192.168.0.1", ifindex=25),))
    node = Node(cfg)
    pkt = build_packet({"ip": {"src": "110.0.11.1", "dst": "172.16.10.1"},
                        "tcp": {"sport": 111, "dport": 80}})
    r = node.run("xdp", pkt)
    assert r.verdict is XdpVerdict.XDP_PASS and r.xfer == XFER_PKT_NO_SVC
    f = describe(r.packet)
    assert f["ip.dst"] == "192.168.0.1" and f["ip.ttl"] == 64
    tc = node.run("from-netdev", r.packet, xfer=r.xfer)
    assert tc.verdict is Verdict.CTX_ACT_REDIRECT and tc.target == "lxc:25"
    assert describe(tc.packet)["ip.ttl"] == 63
    # without the hand-over tc finds no service for the backend's address and still
    # delivers: the flag saves work, the outcome is the same
    again = node.run("from-netdev", r.packet)
    assert again.target == "lxc:25"


def test_schema_refuses_misplaced_or_unknown_xfer(tmp_path: Any) -> None:
    doc = yaml.safe_load((VECTORS / "xdp_nodeport.yaml").read_text())
    doc["steps"][0]["xfer"] = "XFER_PKT_NO_SVC"  # an xdp step: only from-netdev takes it
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(VectorFileError, match=r"steps\[0\]\.xfer"):
        run_vector_file(p)
    doc["steps"][0].pop("xfer")
    doc["steps"][0]["expect"]["xfer"] = "XFER_NOPE"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(VectorFileError, match=r"expect\.xfer"):
        run_vector_file(p)


def test_fault_killed_by_vectors_and_difftest() -> None:
    assert faults_killed([VECTORS / "xdp_nodeport.yaml"])["xdp_etp_punt_no_svc"]
    from datapath.adapter import reference_factory
    doc = _example()
    assert run_program(doc, reference_factory, frozenset(), Counters()) is None
    assert run_program(_example(True), reference_factory, frozenset(), Counters()) is None
    div = run_program(doc, reference_factory, frozenset({"xdp_etp_punt_no_svc"}), Counters())
    assert div is not None and "etp-local-punted" in str(div)


@real
def test_real_bpf_xdp_both_trees() -> None:
    """The vectors from Cilium's xdp_nodeport_* tests and the example's difftest (XDP_TX,
    the hand-over to cil_from_netdev, the eTP=Local punt on 1.20), natively routed and
    through the Geneve tunnel XDP builds itself, on both trees."""
    from ciliumbpf.adapter import factory

    for tree in (TREE, TREE_118):
        if not tree.is_dir():
            pytest.skip(f"no Cilium tree at {tree}")
        f = factory(str(tree))
        for name in FILES:
            rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
            assert rep.ok and not rep.skipped, rep.format()
        for tunnel in (False, True):
            doc = _example(tunnel)
            doc["cilium"]["version"] = f.cilium_version[:4]
            c = Counters()
            assert run_program(doc, f, frozenset(), c) is None, (tree.name, tunnel)
            assert c.observations > 15
        f.free()
