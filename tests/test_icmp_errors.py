"""ICMP errors about a load-balanced flow: what Cilium reverse-translates, P-ICMP-01/02."""

from __future__ import annotations

import json
from ipaddress import ip_address
from typing import Any, Literal

import attrs
import pytest

from datapath.programs import COMBOS
from model.errors import InputError
from model.faults import ModelFault
from model.flows import FlowTrace, run_flows, trace_json
from model.maps import TupleFlags
from model.scenario import parse
from model.values import Endpoint, FlowKey, IcmpKind, Proto
from properties.bmc import check_cell
from properties.catalogue import BY_ID
from properties.coreprops import HOLD, VIOLATED
from properties.prove import COUNTEREXAMPLE, PROVED
from tests.conftest import ADDRS, NODE_PORT, ROOT, TARGET_PORT, build_doc, run_cli


def _trace(error: str = "frag-needed", *, faults: frozenset[ModelFault] = frozenset(),
           masquerade: bool = True, **kw: Any) -> FlowTrace:
    doc = build_doc(proto="UDP", packets=1, **kw)
    doc["flows"][0]["backendError"] = error
    if masquerade:
        doc["cilium"]["bpf"] = {"masquerade": True}
    sc = parse(doc, "<icmp>")
    _, traces = run_flows(attrs.evolve(sc.world, faults=faults), sc.flows)
    return traces[0]


def _received(tr: FlowTrace) -> list[Any]:
    return [h.packet for h in tr.hops if h.at == "client" and h.reply]


def _sent(family: str = "ipv4") -> FlowKey:
    a = ADDRS[family]
    return FlowKey(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                   dst=Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT), proto=Proto.UDP)


def _backend(family: str, placement: str) -> Endpoint:
    return Endpoint(addr=ip_address(ADDRS[family][placement]), port=TARGET_PORT)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_snat_with_masquerade_restores_the_quoted_source_only(family: str) -> None:
    tr = _trace(family=family, version="1.20")
    [got] = _received(tr)
    assert got.icmp is IcmpKind.FRAG_NEEDED
    assert got.dst.addr == ip_address(ADDRS[family]["client"])
    assert got.src.addr == ip_address(ADDRS[family]["remote"])  # the outer source: the sender
    assert got.quote == FlowKey(src=_sent(family).src, dst=_backend(family, "remote"),
                                proto=Proto.UDP)
    assert got.quote != _sent(family)  # P-ICMP-01's finding


def test_snat_without_masquerade_sends_the_error_up_the_lb_nodes_stack() -> None:
    tr = _trace(masquerade=False)
    assert _received(tr) == []
    assert tr.drop is not None and tr.drop[0] == "node1"
    assert tr.drop[1].name == "PUNT_TO_STACK"


def test_ipv6_reverse_snat_takes_only_packet_too_big() -> None:
    assert _received(_trace("frag-needed", family="ipv6", version="1.20"))
    assert _received(_trace("port-unreachable", family="ipv6", version="1.20")) == []


def test_v118_never_translates_an_ipv6_packet_too_big() -> None:
    """v1.18 reads the quote from the MTU field on (v1.18 nat.h:1754-1755): no mapping is
    ever found, the error goes up the LB node's stack (vectors/icmp6_snat_pmtu.yaml)."""
    tr = _trace("frag-needed", family="ipv6", version="1.18")
    assert _received(tr) == []
    assert tr.drop is not None and tr.drop[0] == "node1" and tr.drop[1].name == "PUNT_TO_STACK"
    assert _received(_trace("frag-needed", family="ipv4", version="1.18"))
    [v4] = _received(_trace("port-unreachable"))
    assert v4.quote.src == _sent().src


@pytest.mark.parametrize(("mode", "placement"), [("dsr", "remote"), ("snat", "local"),
                                                  ("dsr", "local")])
def test_dsr_and_local_backends_leave_the_quote_as_the_backend_saw_it(
        mode: str, placement: str) -> None:
    tr = _trace("port-unreachable", mode=mode, placement=placement)
    [got] = _received(tr)
    assert got.quote == FlowKey(src=_sent().src, dst=_backend("ipv4", placement),
                                proto=Proto.UDP)
    assert not any(h.packet.quote is not None and h.action.value.startswith("rev")
                   for h in tr.hops)


def test_seeded_fault_keeps_the_snated_quote() -> None:
    [got] = _received(_trace(faults=frozenset({ModelFault.REVSNAT_ICMP_KEEPS_QUOTE})))
    assert got.dst.addr == ip_address(ADDRS["ipv4"]["client"])
    assert got.quote is not None
    assert got.quote.src.addr == ip_address(ADDRS["ipv4"]["node1"])


def test_trace_json_and_text_show_the_quote() -> None:
    doc = trace_json(_trace())
    last = doc["hops"][-2]  # node1's reverse SNAT
    assert last["action"] == "rev-snat"
    assert "quote" in last["changed"] and "dst" in last["changed"]
    assert doc["client_saw"][0]["quote"] == {
        "src": f"{ADDRS['ipv4']['client']}:40000",
        "dst": f"{ADDRS['ipv4']['remote']}:{TARGET_PORT}", "proto": "UDP"}
    res = run_cli("trace", "examples/icmp-error-through-nat.yaml")
    assert res.returncode == 0, res.stderr
    assert "*quote=[UDP 203.0.113.7:40001 -> 10.0.2.11:5353]" in res.stdout


def test_backend_error_is_validated() -> None:
    doc = build_doc(proto="UDP")
    doc["flows"][0]["backendError"] = "host-unreachable"
    with pytest.raises(InputError, match=r"flows\[0\]\.backendError: 'host-unreachable'"):
        parse(doc, "<bad>")
    doc = build_doc(cilium={"bpf": {"masquerade": "yes"}})
    with pytest.raises(InputError, match=r"cilium\.bpf\.masquerade"):
        parse(doc, "<bad>")


def test_prove_gives_the_expected_results_and_kills_the_fault() -> None:
    p1, p2 = BY_ID["P-ICMP-01"], BY_ID["P-ICMP-02"]
    assert {p1.expect(c) for c in p1.configs} == {VIOLATED}
    assert {c.label(): p2.expect(c) for c in p2.configs}["snat/ipv4/remote/nodeport/udp"] \
        == VIOLATED
    for cfg in p1.configs:
        r1, r2 = check_cell([p1, p2], cfg, frozenset(), 20000)
        assert r1.result == COUNTEREXAMPLE, (cfg.label(), r1.note)
        assert r2.result == (PROVED if p2.expect(cfg) == HOLD else COUNTEREXAMPLE), cfg.label()
    [(fault, cfg)] = p2.mutants
    [killed] = check_cell([p2], cfg, frozenset({fault}), 20000)
    assert killed.result == COUNTEREXAMPLE and killed.counterexample is not None


def test_prove_cli_json_for_p_icmp() -> None:
    res = run_cli("prove", "--property", "P-ICMP-01", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["results"]
    assert len(rows) == len(BY_ID["P-ICMP-01"].configs)
    assert all(r["expected"] == "violated" for r in rows)


# The reference datapath on bytes: Cilium's own expected packet (bpf/tests/icmp_error_revnat.c)
ERR_IN = bytes.fromhex(
    "45000044000100004001f964c0a80002c0a800010304788e000005dc45000028000140004006b97bc0a8"
    "0001c0a80002800000500000000000000000500220008e3e0000")
ERR_OUT = bytes.fromhex(
    "45000044000100004001a60dc0a800020a000a010304cbe5000005dc4500002800014000400666240a00"
    "0a01c0a800020bd60050000000000000000050022000af110000")


def _node(version: Literal["1.18", "1.20"], masquerade: bool = True,
          faults: frozenset[str] = frozenset()
          ) -> Any:
    from datapath.config import NodeConfig
    from datapath.host import make_node
    from datapath.maps import TUPLE_F_IN, CtTuple, NatEntry
    from datapath.packet import ip_bytes
    n = make_node(NodeConfig(ipv4="192.168.0.1", masquerade=masquerade, version=version),
                  faults)
    n.maps.snat4.update(CtTuple(ip_bytes("192.168.0.1"), ip_bytes("192.168.0.2"), 32768, 80,
                                6, TUPLE_F_IN), NatEntry(ip_bytes("10.0.10.1"), 3030, 0), 0)
    return n


def test_datapath_matches_ciliums_expected_packet_in_v120() -> None:
    assert bytes(_node("1.20").run("from-netdev", ERR_IN).packet) == ERR_OUT


def test_datapath_v118_leaves_the_icmp_checksum_stale() -> None:
    from datapath.spec import describe
    out = bytes(_node("1.18").run("from-netdev", ERR_IN).packet)
    assert out[:22] == ERR_OUT[:22] and out[24:] == ERR_OUT[24:]  # all but the ICMP checksum
    assert out[22:24] == ERR_IN[22:24]
    assert describe(out)["icmp.csum_ok"] is False


def test_datapath_without_masquerade_and_with_the_fault() -> None:
    assert bytes(_node("1.20", masquerade=False).run("from-netdev", ERR_IN).packet) == ERR_IN
    out = bytes(_node("1.20", faults=frozenset({"icmp_error_quote_kept"}))
                .run("from-netdev", ERR_IN).packet)
    assert out[16:20] == bytes([10, 0, 10, 1])  # the outer destination is still restored
    assert out[28 + 12:28 + 16] == bytes([192, 168, 0, 1])  # the quote is not
    from datapath.faults import faults_killed
    assert faults_killed([ROOT / "vectors" / "icmp_error_revnat.yaml"])["icmp_error_quote_kept"]


def test_abstraction_reads_and_writes_the_quote() -> None:
    from datapath.abstraction import bytes_of, packet_of
    pkt = packet_of(ERR_OUT)
    assert pkt.icmp is IcmpKind.FRAG_NEEDED
    assert pkt.quote == FlowKey(src=Endpoint(addr=ip_address("10.0.10.1"), port=3030),
                                dst=Endpoint(addr=ip_address("192.168.0.2"), port=80),
                                proto=Proto.TCP)
    for family in ("ipv4", "ipv6"):
        [got] = _received(_trace(family=family, version="1.20"))
        assert packet_of(bytes_of(got)) == got
        assert packet_of(bytes_of(attrs.evolve(got, quote=None))).quote is None


@pytest.mark.parametrize("combo", COMBOS)
def test_difftest_icmp_program_agrees(combo: tuple[str, str, str, str]) -> None:
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import icmp_program
    c = Counters()
    assert run_program(icmp_program(combo), reference_factory, frozenset(), c) is None
    assert c.observations > 5
    killed = run_program(icmp_program(combo), reference_factory,
                         frozenset({"icmp_error_quote_kept"}), Counters())
    assert (killed is not None) == (combo[1] != "dsr"), killed


@pytest.mark.parametrize("l4", ["udp", "tcp"])
def test_datapath_ipv6_packet_too_big_keeps_every_checksum_valid(l4: str) -> None:
    from datapath.config import NodeConfig
    from datapath.host import make_node
    from datapath.maps import TUPLE_F_IN, CtTuple, NatEntry
    from datapath.packet import ip_bytes
    from datapath.spec import build_packet, describe
    n = make_node(NodeConfig(ipv4=None, ipv6="fd05::1", masquerade=True))
    n.maps.snat6.update(CtTuple(ip_bytes("fd05::1"), ip_bytes("fd04::2"), 40000, 53,
                                6 if l4 == "tcp" else 17, TUPLE_F_IN),
                        NatEntry(ip_bytes("2001:db8::7"), 1234, 0), 0)
    err = build_packet({"ip6": {"src": "fd04::2", "dst": "fd05::1"}, "icmp": {
        "type": 2, "code": 0, "inner": {"ip6": {"src": "fd05::1", "dst": "fd04::2"},
                                        l4: {"sport": 40000, "dport": 53}}}})
    d = describe(n.run("from-netdev", err).packet)
    assert (d["ip6.dst"], d["quote.ip6.src"], d["quote.l4.sport"]) == (
        "2001:db8::7", "2001:db8::7", 1234)
    assert d["icmp.csum_ok"] and d["quote.l4.csum_ok"]


def test_reverse_snat_of_an_error_marks_the_reverse_entry_used() -> None:
    """snat_v4_rev_nat_handle_icmp_error looks the reverse entry up in the LRU SNAT map
    (nat.h:1087): the lookup marks it most recently used, so the error keeps its flow's
    entry over older ones when the map is under pressure."""
    doc = build_doc(proto="UDP", packets=1)
    doc["flows"][0]["backendError"] = "frag-needed"
    doc["cilium"]["bpf"] = {"masquerade": True}
    sc = parse(doc, "<icmp>")
    state, [tr] = run_flows(sc.world, sc.flows)
    assert _received(tr)
    snat = state.nodes["node1"].snat
    keys = list(snat)
    assert len(keys) == 2
    assert keys[-1].flags is TupleFlags.IN  # the error's lookup came after both inserts


def test_an_error_without_a_snat_mapping_goes_up_the_stack() -> None:
    """snat_v4_rev_nat_handle_icmp_error finds no reverse entry for the quoted tuple: the
    error is punted to the stack (NAT_PUNT_TO_STACK, nat.h:1087), the SNAT map untouched."""
    from model.hooks import Hook, NodeCtx
    from model.nodeport import nodeport_lb
    from model.snat import SeededRandom
    from model.values import Packet

    doc = build_doc(proto="UDP", packets=1)
    doc["cilium"]["bpf"] = {"masquerade": True}
    sc = parse(doc, "<icmp>")
    state, _ = run_flows(sc.world, ())
    n = sc.world.cluster.node("node1")
    st = state.nodes["node1"]
    ctx = NodeCtx(cfg=sc.world.cfg, name="node1", ip=n.ip, router_ip=n.router_ip,
                  ipcache=sc.world.ipcache(), now=5, rand=SeededRandom(0))
    a = ADDRS["ipv4"]
    quote = FlowKey(src=Endpoint(addr=n.ip, port=45000),
                    dst=Endpoint(addr=ip_address(a["remote"]), port=TARGET_PORT),
                    proto=Proto.UDP)
    err = Packet(src=Endpoint(addr=ip_address(a["remote"]), port=0),
                 dst=Endpoint(addr=n.ip, port=0), proto=Proto.ICMP,
                 icmp=IcmpKind.FRAG_NEEDED, quote=quote)
    st2, res = nodeport_lb(ctx, st, err, Hook.FROM_NETDEV)
    assert res.packet.dst.addr == n.ip and res.packet.quote == quote
    assert st2.snat == st.snat


def test_datapath_truncated_errors_drop_or_translate_at_the_bounds() -> None:
    """Every truncation of Cilium's expected error (icmp_error_revnat.c, outer lengths and
    checksum fixed up): shorter than the inner IP header plus the quoted ports (52 bytes)
    it cannot be loaded and is DROP_INVALID (ctx_load_bytes fails); from there on the
    quote and the outer destination are translated, the quoted TCP checksum only where it
    is present (66 bytes on), as in the full packet. Never an exception inside."""
    import struct

    from datapath.csum import checksum

    for cut in range(20, len(ERR_IN) + 1):
        b = bytearray(ERR_IN[:cut])
        struct.pack_into("!H", b, 2, cut)
        struct.pack_into("!H", b, 10, 0)
        struct.pack_into("!H", b, 10, checksum(bytes(b[:20])))
        node = _node("1.20")
        r = node.run("from-netdev", bytes(b))
        out = bytes(r.packet)
        assert node.internal_errors == 0, cut
        if cut < 52:
            assert r.drop_reason is not None and r.drop_reason.name == "DROP_INVALID", cut
            continue
        assert r.drop_reason is None, cut
        assert out[16:20] == ERR_OUT[16:20] and out[40:44] == ERR_OUT[40:44], cut
        assert out[48:50] == ERR_OUT[48:50], cut  # the quoted source port
        if cut >= 66:
            assert out[64:66] == ERR_OUT[64:66], cut  # the quoted TCP checksum
        else:
            assert out[64:66] == bytes(b[64:66]), cut
