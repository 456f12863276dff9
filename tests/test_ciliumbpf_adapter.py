"""The cilium-bpf adapter: agent-side programming, dump conversion, version matching, and
(when a Cilium tree and the toolchain are present) vectors through the real bpf_host.c."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs
import pytest

from ciliumbpf import programming as prog
from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.errors import ConfigError, VectorFileError
from datapath.vectors import run_vector_file

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "vectors"
TREE = ROOT.parent / "shared" / "cilium" / "v1.20.0-dev"


def _cfg(**kw: object) -> NodeConfig:
    base: dict[str, object] = dict(
        ipv4="10.0.10.1",
        services=(ServiceConfig(frontend="172.16.10.2", port=80, rev_nat_index=1,
                                backends=(124, 125)),),
        backends=(BackendConfig(id=124, address="192.168.0.2", port=8080),
                  BackendConfig(id=125, address="192.168.0.3", port=8080)))
    base.update(kw)
    return NodeConfig(**base)  # type: ignore[arg-type]


def test_defines_follow_mode_and_dispatch() -> None:
    snat = prog.defines(_cfg())
    assert "ENABLE_DSR" not in snat and snat["ENABLE_IPV4"] == "1"
    assert snat["IPV4_DIRECT_ROUTING"] == hex(int.from_bytes(bytes([10, 0, 10, 1]), "little"))
    assert snat["NPH_NAT_PORT_MAX_MIN1"] == "32767"  # NODEPORT_PORT_MIN_NAT = max + 1
    dsr = prog.defines(_cfg(mode="dsr"))
    assert dsr["ENABLE_DSR"] == "1" and dsr["DSR_ENCAP_MODE"] == dsr["DSR_ENCAP_NONE"]
    assert "ENABLE_DSR_BYUSER" not in dsr
    gen = prog.defines(_cfg(mode="hybrid", dispatch="geneve"))
    assert gen["DSR_ENCAP_MODE"] == gen["DSR_ENCAP_GENEVE"] and gen["ENABLE_DSR_BYUSER"] == "1"
    assert "ENCAP_IFINDEX" in gen


def test_entries_keep_the_agent_slot_order() -> None:
    e = prog.Entries(_cfg())
    assert e.slots(bytes([172, 16, 10, 2]), 80, 6) == [124, 125]
    rows = list(e.rows())
    masters = [v for n, k, v in rows if n == "cilium_lb4_services_v2" and k["backend_slot"] == 0]
    assert masters == [{"backend_id": 0, "count": 2, "rev_nat_index": 1, "flags": 96,
                        "flags2": 0}]


def test_ct_entry_reads_the_union_by_tuple_kind() -> None:
    k = prog.ct_tuple({"daddr": 0x6E000B01, "saddr": 0xC0A80001, "dport": 8080, "sport": 111,
                       "nexthdr": 6, "flags": 0}, v6=False)
    v = {"nat_addr": {"addr": bytes(12) + bytes([172, 16, 10, 1])}, "backend_id": 77,
         "lifetime": 60, "rx_closing": 0, "tx_closing": 0, "seen_non_syn": 0, "node_port": 0,
         "dsr_internal": 1, "rev_nat_index": 0, "nat_port": 80, "tx_flags_seen": 0x12,
         "rx_flags_seen": 0x02, "packets": 0, "bytes": 0}
    e = prog.ct_entry(k, v, v6=False)
    assert e.nat_addr == bytes([172, 16, 10, 1]) and e.backend_id == 0 and e.dsr_internal
    assert (e.tx_flags_seen, e.rx_flags_seen) == (0x12, 0x02)
    svc = prog.ct_entry(k._replace(flags=4), v, v6=False)
    assert svc.backend_id == 77 and svc.nat_addr == b""


def test_versions_select_vectors(tmp_path: Path) -> None:
    rep = run_vector_file(VECTORS / "snat_clamp.yaml", version="1.20.0-dev")
    assert rep.skipped.startswith("reference datapath only")
    rep = run_vector_file(VECTORS / "lb4_dsr_backend.yaml", version="1.18.0-dev")
    assert "tree is 1.18.0-dev" in rep.skipped
    bad = tmp_path / "bad.yaml"
    bad.write_text((VECTORS / "lb4_dsr_backend.yaml").read_text().replace(
        'cilium: ["1.20"]', "cilium: 1.20"))
    with pytest.raises(VectorFileError, match="cilium"):
        run_vector_file(bad, version="1.20.0-dev")


def test_stale_divergence_is_a_failure(tmp_path: Path) -> None:
    """A documented divergence on a step that now passes fails the file (no silent allowlist)."""
    text = (VECTORS / "lb4_nat_fwd.yaml").read_text().replace(
        "  - name: tc_nodeport_nat_fwd\n",
        '  - name: tc_nodeport_nat_fwd\n    diverges: {"1.20": "example"}\n', 1)
    f = tmp_path / "stale.yaml"
    f.write_text(text)
    rep = run_vector_file(f, version="1.20.0-dev")  # the reference datapath agrees
    assert not rep.ok and "no longer happens" in rep.failures[0]


def _real_bpf_ready() -> str:
    if not TREE.is_dir():
        return f"no Cilium tree at {TREE}"
    if shutil.which("clang-19") is None:
        return "clang-19 not installed (scripts/bootstrap-bpf.sh)"
    if os.geteuid() != 0:
        return "BPF_PROG_TEST_RUN needs root"
    from ciliumbpf.probe import wedged
    return wedged() or ""


_NOT_READY = _real_bpf_ready()
real = pytest.mark.skipif(bool(_NOT_READY), reason=_NOT_READY or "ready")


@real
def test_real_bpf_host_snat_vector() -> None:
    from ciliumbpf.adapter import factory

    f = factory(str(TREE))
    rep = run_vector_file(VECTORS / "lb4_nat_fwd.yaml", f, version=f.cilium_version)
    assert rep.ok, rep.format()


@real
def test_real_bpf_host_documented_divergence() -> None:
    from ciliumbpf.adapter import factory

    f = factory(str(TREE))
    rep = run_vector_file(VECTORS / "lb4_dsr_backend.yaml", f, version=f.cilium_version)
    assert rep.ok, rep.format()
    assert any("nodeport.h:1972" in d for d in rep.diverged)


def test_geneve_device_presents_the_tunnel_info() -> None:
    """The harness's Geneve decap hands cil_from_overlay what the kernel's device would."""
    from ciliumbpf.node import geneve_device
    from datapath.build import geneve_encap, ipv4, tcp_segment

    inner = ipv4(bytes([110, 0, 11, 1]), bytes([192, 168, 0, 2]), 6,
                 tcp_segment(bytes([110, 0, 11, 1]), bytes([192, 168, 0, 2]), 111, 8080))
    opt = bytes.fromhex("014b8102") + bytes([172, 16, 10, 2]) + bytes.fromhex("00500000")
    pkt = geneve_encap(bytes([10, 0, 10, 1]), bytes([10, 0, 10, 2]), inner, 2, opt, 40000)
    dec = geneve_device(pkt)
    assert dec is not None
    tun, eth, l3 = dec
    assert l3 == inner and eth[12:14] == b"\x08\x00"
    assert tun["tun_id"] == 2 and tun["tun_v6"] == 0 and tun["tun_opt_len"] == 12
    assert tun["tun_remote4"] == 0x0A000A01 and tun["tun_opt"][:12] == opt
    assert geneve_device(inner) is None  # not UDP 6081: the device never sees it
    bad = bytearray(pkt)
    bad[20 + 8] |= 0x40  # Geneve version 1
    assert geneve_device(bytes(bad)) is None


def test_nothing_is_declared_and_pods_share_the_reference_identity() -> None:
    """The four differences the campaigns found were model errors, fixed: the one declared
    difference is a gap of the harness (bpf_lxc's CT entry of a masqueraded pod), a CT row
    the model has and real BPF lacks, nothing else; the harness's pod identity (the VNI of a
    pod's packets) is the reference's and the model's."""
    from ciliumbpf.adapter import DECLARED
    from datapath.nodeport import POD_IDENTITY as REFERENCE
    from model.maps import CtEntry
    from model.values import POD_IDENTITY as MODEL

    (lxc,) = DECLARED
    assert lxc.row("ct", None, CtEntry(), None)
    assert not lxc.row("ct", None, CtEntry(node_port=True, rev_nat_index=1), None)
    assert not lxc.row("snat", None, CtEntry(), None)
    assert not lxc.row("ct", None, CtEntry(), CtEntry())
    assert prog.POD_IDENTITY == REFERENCE == MODEL
    assert prog.defines(_cfg(tunnel=True))["NPH_POD_EGRESS"] == str(MODEL)


@real
def test_real_bpf_overlay_geneve_dsr_backend() -> None:
    """bpf_overlay.o shares bpf_host.o's maps: the CT entry from-overlay creates is the one
    to-netdev uses for the reply."""
    from ciliumbpf.adapter import factory

    f = factory(str(TREE))
    rep = run_vector_file(VECTORS / "geneve_dsr_backend.yaml", f, version=f.cilium_version)
    assert rep.ok and not rep.skipped, rep.format()


@real
def test_real_bpf_difftest_tunnel_program() -> None:
    """One difftest program through two real nodes in tunnel routing (from-overlay, the
    pod's encapsulation with its identity, reverse SNAT after decap), agreeing exactly."""
    from ciliumbpf.adapter import factory
    from datapath.diffgen import drain_program, run_program
    from datapath.difftest import Counters

    f = factory(str(TREE))
    c = Counters()
    div = run_program(drain_program(("ipv4", "snat", "geneve", "tunnel")), f, frozenset(), c)
    assert div is None, div
    assert c.observations > 10 and c.declared == {}


def test_rows_fit_an_older_release_layout() -> None:
    """v1.18's plain __be32 addresses and implied tunnel flag take the agent's v1.20 rows;
    a field the older struct lacks is refused unless it is zero."""
    from ciliumbpf.btf import Field, Layout

    u32 = Layout(name="__be32", kind="int", size=4, big_endian=True)
    u8 = Layout(name="__u8", kind="int", size=1)
    lay = Layout(name="remote_endpoint_info", kind="struct", size=9, fields=(
        Field(name="sec_identity", offset=0, type=u32),
        Field(name="tunnel_endpoint", offset=4, type=u32),
        Field(name="key", offset=8, type=u8)))
    row = {"sec_identity": 1000, "tunnel_endpoint": {"ip4": {"addr": bytes([10, 0, 0, 1])}},
           "flag_has_tunnel_ep": 1}
    assert prog.fit(lay, row) == {"sec_identity": 1000, "tunnel_endpoint": 0x0A000001}
    assert prog.fit(lay, {"sec_identity": 1, "flag_ipv6_tunnel_ep": 0}) == {"sec_identity": 1}
    with pytest.raises(ConfigError, match="flag_ipv6_tunnel_ep"):
        prog.fit(lay, {"flag_ipv6_tunnel_ep": 1})


def test_defines_follow_the_tree_release() -> None:
    old = prog.defines(_cfg(mode="hybrid"), version="1.18.0-dev")
    new = prog.defines(_cfg(mode="hybrid"), version="1.20.0-dev")
    assert old["NPH_CILIUM_MINOR"] == "118" and new["NPH_CILIUM_MINOR"] == "120"
    assert old["ENABLE_DSR_HYBRID"] == "1" and "ENABLE_DSR_BYUSER" not in old
    assert new["ENABLE_DSR_BYUSER"] == "1" and "ENABLE_DSR_HYBRID" not in new
    assert old["ENABLE_SERVICE_PROTOCOL_DIFFERENTIATION"] == "1"
    assert "ENABLE_SERVICE_PROTOCOL_DIFFERENTIATION" not in new


TREE_118 = ROOT.parent / "shared" / "cilium" / "v1.18.0-dev"


@real
def test_real_bpf_host_118_vectors() -> None:
    """The harness builds against v1.18's bpf_host.c too (test_cilium_* map names, defines
    instead of load-time config); its SNAT and hybrid vectors pass there."""
    from ciliumbpf.adapter import factory

    if not TREE_118.is_dir():
        pytest.skip(f"no Cilium tree at {TREE_118}")
    f = factory(str(TREE_118))
    for name in ("lb4_nat_fwd.yaml", "hybrid.yaml"):
        rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
        assert rep.ok and not rep.skipped, rep.format()


def test_mutant_patches_apply_or_say_why(tmp_path: Path) -> None:
    """Mutants are zero-context diffs: applied at their line, or where the old line occurs
    exactly once; anything else is a one-line error, never a partial patch."""
    from ciliumbpf.errors import BpfInputError
    from ciliumbpf.mutate import apply_hunks, load_mutants, parse_diff

    muts = load_mutants()
    assert len(muts) >= 4 and all(m.description for m in muts)
    desc, patches = parse_diff("# flips x\n--- a/bpf/lib/x.h\n+++ b/bpf/lib/x.h\n"
                               "@@ -2 +2 @@\n-b = 1;\n+b = 0;\n", "t.diff")
    assert desc == "flips x" and list(patches) == ["lib/x.h"]
    assert apply_hunks("a;\nb = 1;\nc;", patches["lib/x.h"], "x") == "a;\nb = 0;\nc;"
    assert apply_hunks("z;\na;\nb = 1;", patches["lib/x.h"], "x") == "z;\na;\nb = 0;"
    with pytest.raises(BpfInputError, match="does not apply"):
        apply_hunks("b = 1;\nq;\nb = 1;", patches["lib/x.h"], "x")
    with pytest.raises(BpfInputError, match="not under bpf/"):
        parse_diff("--- a/x.h\n+++ b/x.h\n@@ -1 +1 @@\n-a\n+b\n", "t.diff")


@real
def test_real_bpf_mutant_is_killed_by_its_vector() -> None:
    """A mutant builds from a shadow copy (the tree untouched) and its vector fails there."""
    from ciliumbpf.adapter import Factory
    from ciliumbpf.mutate import load_mutants, mutant_tree
    from ciliumbpf.toolchain import cilium_tree

    tree = cilium_tree(str(TREE))
    m = next(m for m in load_mutants() if m.name == "rev_dnat_port")
    shadow = mutant_tree(tree, m)
    assert shadow.root != tree.root and (shadow.bpf / "lib" / "lb.h").read_text() != (
        tree.bpf / "lib" / "lb.h").read_text()
    f = Factory(str(shadow.root))
    rep = run_vector_file(VECTORS / "lb4_nat_fwd.yaml", f, version=f.cilium_version)
    f.free()
    assert not rep.ok and any("sport" in x for x in rep.failures), rep.format()


def test_node_pool_is_bounded() -> None:
    """Released nodes are kept for reuse, at most POOL_PER_CONFIG of a configuration and
    POOL_TOTAL in all (oldest freed first): a process never frees thousands of programs at
    once."""
    from ciliumbpf import adapter

    class FakeNode:
        freed = 0

        def free(self) -> None:
            FakeNode.freed += 1

    f = adapter.Factory.__new__(adapter.Factory)
    f._pool, f._keys = [], {}
    nodes = [FakeNode() for _ in range(adapter.POOL_TOTAL + 4)]
    for i, n in enumerate(nodes):
        f._keys[id(n)] = (("cfg", str(i % 5)),)
    kept = [f._release(n) for n in nodes]  # type: ignore[arg-type]
    assert len(f._pool) == adapter.POOL_TOTAL
    assert kept.count(False) + FakeNode.freed == len(nodes) - adapter.POOL_TOTAL
    per = {k for k, _n in f._pool}
    assert all(sum(1 for k, _n in f._pool if k == key) <= adapter.POOL_PER_CONFIG
               for key in per)
    f.free()
    assert not f._pool and FakeNode.freed + kept.count(False) == len(nodes)


def _affinity_cfg() -> NodeConfig:
    svc = ServiceConfig(frontend="10.0.1.1", port=80, rev_nat_index=123, backends=(7, 42),
                        affinity_timeout=100)
    return _cfg(services=(svc,), backends=(
        BackendConfig(id=7, address="10.0.2.1", port=8080),
        BackendConfig(id=42, address="10.0.3.1", port=8080, state="terminating")))


def test_affinity_programming_follows_the_agent() -> None:
    """SVC_FLAG_AFFINITY with the timeout in slot 0; match entries for active backends
    only; 1.18 compiles the affinity code only with ENABLE_SESSION_AFFINITY."""
    rows = list(prog.Entries(_affinity_cfg()).rows())
    master = next(v for n, k, v in rows if n == "cilium_lb4_services_v2" and not k["backend_slot"])
    assert master["backend_id"] == 100 and master["flags"] & (1 << 4)
    match = [k for n, k, _v in rows if n == "cilium_lb_affinity_match"]
    assert match == [{"backend_id": 7, "rev_nat_id": 123}]
    assert prog.defines(_affinity_cfg(), version="1.18.0-dev")["ENABLE_SESSION_AFFINITY"] == "1"
    assert "ENABLE_SESSION_AFFINITY" not in prog.defines(_cfg(), version="1.18.0-dev")
    assert "ENABLE_SESSION_AFFINITY" not in prog.defines(_affinity_cfg(), version="1.20.0-dev")


def test_affinity_key_round_trips_both_families() -> None:
    from datapath.maps import AffinityKey

    for addr in (bytes([10, 0, 0, 1]), bytes(range(16))):
        key = AffinityKey(addr, 123)
        row = prog.affinity_key_row(key)
        assert prog.affinity_key(row, len(addr) == 16) == key
    # IPv4: a plain __u32 holding the network-order bytes (lb.h:126)
    assert prog.affinity_key_row(AffinityKey(bytes([10, 0, 0, 1]), 1))["client_id"] == {
        "client_ip": 0x0100000A}


@real
def test_real_bpf_session_affinity_both_trees() -> None:
    """vectors/session_affinity.yaml (session_affinity_test.c's setup, then the sliding
    timeout) and its IPv6 twin hold for the compiled lb4_local/lb6_local of both releases,
    and the difftest's explicit affinity program (expiry, per node, the match map) agrees
    with the model there."""
    from ciliumbpf.adapter import factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import affinity_program

    for tree in (TREE, TREE_118):
        if not tree.is_dir():
            pytest.skip(f"no Cilium tree at {tree}")
        f = factory(str(tree))
        for name in ("session_affinity.yaml", "session_affinity6.yaml"):
            rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
            assert rep.ok and not rep.skipped, rep.format()
        doc = affinity_program(("ipv4", "snat", "opt", "native"), f.cilium_version[:4])
        c = Counters()
        assert run_program(doc, f, frozenset(), c) is None
        assert c.observations > 20
        f.free()


def test_masquerade_programming_follows_the_agent() -> None:
    """bpf.masquerade: ENABLE_MASQUERADE_IPV4, the masquerade address (the node's unless
    given), the native-routing CIDR, and node addresses as remote nodes in the ipcache."""
    cfg = _cfg(masquerade=True, snat_exclusion_cidrs=("10.0.0.0/16",),
               tunnel_endpoints=(("10.0.10.2", "10.0.10.2"), ("10.0.2.5", "10.0.10.2")))
    d = prog.defines(cfg, version="1.20.0-dev")
    assert d["ENABLE_MASQUERADE_IPV4"] == "1" and "ENABLE_MASQUERADE_IPV6" not in d
    assert d["NPH_IPV4_MASQUERADE"] == d["IPV4_DIRECT_ROUTING"]
    assert d["NPH_SNAT_EXCL_CIDR4"] == hex(0x0000000A) and d["NPH_SNAT_EXCL_CIDR4_LEN"] == "16"
    other = prog.defines(attrs.evolve(cfg, masquerade_ipv4="10.0.10.9"), version="1.20.0-dev")
    assert other["NPH_IPV4_MASQUERADE"] == hex(0x090A000A)
    assert "ENABLE_MASQUERADE_IPV4" not in prog.defines(_cfg(), version="1.20.0-dev")
    ids = {bytes(k["ip4"]["addr"]): v["sec_identity"] for n, k, v in prog.Entries(cfg).rows()
           if n == "cilium_ipcache_v2"}
    assert ids[bytes([10, 0, 10, 2])] == prog.REMOTE_NODE_ID
    assert ids[bytes([10, 0, 2, 5])] == prog.POD_IDENTITY


@real
def test_real_bpf_masquerade_both_trees() -> None:
    """vectors/pod_masquerade.yaml holds for both trees' compiled cil_to_netdev /
    cil_from_netdev with ENABLE_MASQUERADE_IPV4, the ICMP reverse-SNAT vectors for v1.20,
    and the difftest's explicit masquerade program agrees with the model, counting only
    the declared bpf_lxc CT entry."""
    from ciliumbpf.adapter import factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import masq_program

    for tree in (TREE, TREE_118):
        if not tree.is_dir():
            pytest.skip(f"no Cilium tree at {tree}")
        f = factory(str(tree))
        names = ["pod_masquerade.yaml"]
        if f.cilium_version.startswith("1.20"):
            names += ["icmp_error_revnat.yaml", "icmp4_snat_pmtu.yaml"]
        for name in names:
            rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
            assert rep.ok and not rep.skipped, rep.format()
        c = Counters()
        doc = masq_program(("ipv4", "snat", "opt", "native"), f.cilium_version[:4])
        assert run_program(doc, f, frozenset(), c) is None
        assert c.observations > 30 and c.declared, c


def test_fragment_tracking_defines_per_release() -> None:
    """--enable-ipv4/6-fragment-tracking: 1.20's load-time CONFIG (config.h NPH_FRAGMENTS),
    1.18's ENABLE_IPV4_FRAGMENTS define; off, neither (as the tree's tests compile)."""
    on = _cfg(fragment_tracking=True)
    assert prog.defines(on, version="1.20")["NPH_FRAGMENTS"] == "1"
    assert "ENABLE_IPV4_FRAGMENTS" not in prog.defines(on, version="1.20")
    assert prog.defines(on, version="1.18")["ENABLE_IPV4_FRAGMENTS"] == "1"
    off = prog.defines(_cfg(), version="1.18") | prog.defines(_cfg(), version="1.20")
    assert "NPH_FRAGMENTS" not in off and "ENABLE_IPV4_FRAGMENTS" not in off


@real
def test_real_bpf_fragments_both_trees() -> None:
    """vectors/lb_fragments.yaml (tc_nodeport_lb_fragments_ns.c's packets: the frag map
    entry, the second fragment DNATed by address only, a later fragment first dropped) and
    lb_fragments_untracked.yaml hold for both releases' bpf_host, and the difftest's
    explicit fragment program agrees with the model there."""
    from ciliumbpf.adapter import factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import fragment_program

    for tree in (TREE, TREE_118):
        if not tree.is_dir():
            continue
        f = factory(str(tree))
        for name in ("lb_fragments.yaml", "lb_fragments_untracked.yaml"):
            rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
            assert rep.ok and not rep.skipped, rep.format()
        doc = fragment_program(("ipv4", "snat", "opt", "native"), f.cilium_version[:4])
        c = Counters()
        assert run_program(doc, f, frozenset(), c) is None
        assert c.observations > 40
        f.free()
