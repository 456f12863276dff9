"""More behaviours of the model that the mutation check found no property, program or test
pinning (docs/mutation-model.md): the SNAT retry sequence, both directions' self-healing,
LRU recency of SNAT lookups, CT lifetimes (v1.13, the expiry boundary), a random draw's
width, draining backends across services, the reject's ICMP direction, EqMap equality."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import attrs

from model.config import CiliumConfig, CiliumVersion
from model.conntrack import CtState, created, gc, on_packet, state_of
from model.flows import run_flows
from model.hooks import Hook, NodeCtx, Step, Verdict
from model.maps import CtEntry, CtTuple, EqMap, LbMaps, LruMap, NatEntry, NodeState, TupleFlags
from model.network import Action, initial_state, reprogram
from model.nodeport import nodeport_lb
from model.scenario import parse
from model.snat import SeededRandom, clamp_port, fwd_key, rev_key, snat_nat, snat_rev_nat
from model.values import Endpoint, Packet, Proto, TcpFlags
from tests.conftest import ADDRS, build_doc

CFG = CiliumConfig()
NODE = ip_address("192.168.2.3")
B = Endpoint(addr=ip_address("10.0.2.10"), port=8080)
OTHER = Endpoint(addr=ip_address("203.0.113.99"), port=1)


def _client(i: int, port: int = 40000) -> Endpoint:
    return Endpoint(addr=ip_address(f"203.0.113.{10 + i}"), port=port)


def _hold(snat: LruMap[Any, Any], port: int) -> LruMap[Any, Any]:
    """Another flow's reverse entry on NODE:port towards B (the port is taken)."""
    return snat.put(rev_key(B, Endpoint(addr=NODE, port=port), Proto.TCP),
                    NatEntry(to_addr=OTHER.addr, to_port=OTHER.port))


@attrs.define
class Scripted:
    """A get_prandom_u32() that returns the given values in call order, whatever the site."""

    values: list[int]
    calls: int = 0

    def u32(self, *site: object) -> int:
        self.calls += 1
        return self.values.pop(0)


def test_random_draws_span_the_u32_range() -> None:
    """get_prandom_u32() returns a __u32 (bpf/include/bpf/helpers.h:59), uniform over the
    32-bit range: the seeded stand-in neither exceeds it nor stays in its low bytes."""
    draws = [SeededRandom(7).u32("site", i) for i in range(256)]
    assert all(0 <= d < 2**32 for d in draws)
    assert max(draws) >= 2**31


def test_snat_reusing_a_mapping_reports_no_retries() -> None:
    """snat_v4_nat_handle_mapping returns on an existing mapping for the same target
    (v1.20 nat.h:355-379) without reaching snat_v4_new_mapping, whose loop is what counts
    retries (nat.h:259-283): a reused mapping records none."""
    c = _client(0)
    first = snat_nat(CFG, LruMap(capacity=16), c, B, Proto.TCP, NODE, 5, "t", SeededRandom(1))
    again = snat_nat(CFG, first.snat, c, B, Proto.TCP, NODE, 6, "t", SeededRandom(1))
    assert again.nat == first.nat
    assert again.retries == 0


def test_snat_collision_sequence_keep_port_then_random_then_plus_one() -> None:
    """snat_v4_new_mapping (v1.20 nat.h:255-270): the first try keeps the client's port when
    it lies in the NAT range (__snat_try_keep_port, nat.h:85-89), the second is a fresh
    random draw, every later one the previous port + 1, each passed through the clamp
    (__snat_clamp_port_range's multiply-shift, nat.h:70-78, so + 1 is not the next port)."""
    c = _client(0, port=CFG.nat_min + 5)
    draw = 0x8000
    p1 = clamp_port(CFG, draw)
    p2 = clamp_port(CFG, p1 + 1)
    p3 = clamp_port(CFG, p2 + 1)
    assert len({c.port, clamp_port(CFG, c.port + 1), p1, p2, p3, clamp_port(CFG, p1 + 2)}) == 6
    snat: LruMap[Any, Any] = LruMap(capacity=16)
    for port in (c.port, p1, p2):
        snat = _hold(snat, port)
    rand = Scripted(values=[draw])
    res = snat_nat(CFG, snat, c, B, Proto.TCP, NODE, 5, "t", rand)
    assert rand.calls == 1
    assert res.nat == Endpoint(addr=NODE, port=p3)
    assert res.retries == 3


def test_snat_retry_after_a_random_port_collides_draws_afresh() -> None:
    """A client port outside the NAT range gets a random port (nat.h:85-89); when that port
    is taken, the retry is another get_prandom_u32() draw (nat.h:266-269), independent of
    the first: with the seeded source it lands elsewhere on the first retry."""
    for i in range(8):
        c = _client(i, port=1000 + i)
        first = snat_nat(CFG, LruMap(capacity=16), c, B, Proto.TCP, NODE, 5, "t",
                         SeededRandom(1))
        assert first.nat is not None and first.retries == 0
        taken = _hold(LruMap(capacity=16), first.nat.port)
        res = snat_nat(CFG, taken, c, B, Proto.TCP, NODE, 5, "t", SeededRandom(1))
        assert res.nat is not None and res.nat.port != first.nat.port
        assert res.retries == 1


def test_rev_snat_restores_a_missing_forward_entry() -> None:
    """snat_v4_rev_nat_handle_mapping (v1.20 nat.h:403-440): a reply whose reverse entry
    is there but whose forward entry is gone (LRU eviction) restores the forward entry
    {client -> L:N} before translating; 1.18's (v1.18 nat.h:365-399) does not, and the
    vector snat_rev_restore.yaml shows both on the real programs."""
    c = _client(0)
    first = snat_nat(CFG, LruMap(capacity=16), c, B, Proto.TCP, NODE, 5, "t", SeededRandom(1))
    assert first.nat is not None
    okey = fwd_key(c, B, Proto.TCP)
    snat, client = snat_rev_nat(first.snat.delete(okey), B, first.nat, Proto.TCP)
    assert client == c
    got = snat.get(okey)
    assert got is not None
    assert (got.to_addr, got.to_port) == (first.nat.addr, first.nat.port)
    snat18, client18 = snat_rev_nat(first.snat.delete(okey), B, first.nat, Proto.TCP,
                                    version=CiliumVersion.V1_18)
    assert client18 == c
    assert snat18.get(okey) is None


def test_snat_lookup_of_a_used_mapping_refreshes_its_recency() -> None:
    """The NAT map is an LRU hash (nat.h cilium_snat_v4_external, BPF_MAP_TYPE_LRU_HASH):
    snat_v4_nat_handle_mapping's lookup of a flow's forward entry marks it used, so a later
    insert into the full map evicts an older, untouched entry instead."""
    a, b, c = _client(0), _client(1), _client(2)
    snat: LruMap[Any, Any] = LruMap(capacity=4)
    for cl in (a, b, a, c):
        snat = snat_nat(CFG, snat, cl, B, Proto.TCP, NODE, 5, "t", SeededRandom(1)).snat
    assert len(snat) == 4
    assert snat.get(fwd_key(a, B, Proto.TCP)) is not None


def test_rev_snat_lookup_refreshes_the_reverse_entry() -> None:
    """snat_v4_rev_nat_handle_mapping's lookup of the reverse entry (nat.h:417) marks it
    used in the LRU NAT map: a reply keeps its flow's reverse entry over older ones."""
    a, b, c = _client(0), _client(1), _client(2)
    snat: LruMap[Any, Any] = LruMap(capacity=4)
    na = None
    for cl in (a, b):
        res = snat_nat(CFG, snat, cl, B, Proto.TCP, NODE, 5, "t", SeededRandom(1))
        snat = res.snat
        na = res.nat if cl is a else na
    assert na is not None
    snat, client = snat_rev_nat(snat, B, na, Proto.TCP)
    assert client == a
    snat = snat_nat(CFG, snat, c, B, Proto.TCP, NODE, 5, "t", SeededRandom(1)).snat
    assert snat.get(rev_key(B, na, Proto.TCP)) is not None


def test_nodeport_reply_restores_the_lost_forward_snat_entry() -> None:
    """nodeport_lb's reverse SNAT keeps what snat_v4_rev_nat_handle_mapping wrote: a reply
    to L:N after the flow's forward entry was lost restores it (v1.20 nat.h:435-446; the
    v1.18.0-dev tree's snat_v4_rev_nat_handle_mapping, nat.h:365, has no such restore)."""
    sc = parse(build_doc(placement="remote", version="1.20"))
    state, traces = run_flows(sc.world, sc.flows)
    assert traces[0].delivered
    st = state.nodes["node1"]
    [okey] = [k for k in st.snat if k.flags is TupleFlags.OUT]
    out = st.snat.get(okey)
    assert out is not None
    st = attrs.evolve(st, snat=st.snat.delete(okey))
    a = ADDRS["ipv4"]
    n = sc.world.cluster.node("node1")
    ctx = NodeCtx(cfg=sc.world.cfg, name="node1", ip=n.ip, router_ip=n.router_ip,
                  ipcache=sc.world.ipcache(), now=10, rand=SeededRandom(0))
    reply = Packet(src=Endpoint(addr=okey.daddr, port=okey.dport),
                   dst=Endpoint(addr=out.to_addr, port=out.to_port), proto=Proto.TCP,
                   flags=TcpFlags.ACK)
    st2, res = nodeport_lb(ctx, st, reply, Hook.FROM_NETDEV)
    assert res.verdict is Verdict.FORWARD and res.step is Step.REV_SNAT
    assert res.packet.dst.addr == ip_address(a["client"])
    got = st2.snat.get(okey)
    assert got is not None and (got.to_addr, got.to_port) == (out.to_addr, out.to_port)


def test_v113_established_tcp_lifetime_is_six_hours() -> None:
    """Before v1.15 the agent's TCP lifetime was 21600 s (6 h), the value bpf/node_config.h
    still compiles in (v1.20 node_config.h:37,39; v1.18 :82,84), for service and connection
    entries alike; since v1.15 the agent passes 8000 s (ciliumbpf/harness/harness.h:404)."""
    syn = Packet(src=_client(0), dst=B, proto=Proto.TCP, flags=TcpFlags.SYN)
    ack = attrs.evolve(syn, flags=TcpFlags.ACK)
    for version, life in ((CiliumVersion.V1_13, 21600), (CiliumVersion.V1_20, 8000)):
        entry = created(version, syn, 100)
        assert entry.lifetime == 160
        for service in (False, True):
            est = on_packet(version, entry, ack, 200, service=service)
            assert est.lifetime == 200 + life


def test_an_entry_is_expired_only_after_its_lifetime() -> None:
    """__ct_update_timeout stores lifetime = now + timeout (v1.20 conntrack.h:176): the
    entry lives through that second, and the agent's GC removes only entries whose lifetime
    is below now (model.conntrack.gc); state_of calls an entry expired exactly when GC
    would remove it."""
    syn = Packet(src=_client(0), dst=B, proto=Proto.TCP, flags=TcpFlags.SYN)
    entry = created(CiliumVersion.V1_20, syn, 100)
    key = CtTuple(daddr=B.addr, saddr=_client(0).addr, dport=B.port, sport=40000,
                  nexthdr=Proto.TCP, flags=TupleFlags.OUT)
    lb = LbMaps(services={}, backends={}, revnat={})
    ct: LruMap[CtTuple, CtEntry] = LruMap(capacity=4)
    st = NodeState(lb=lb, ct=ct.put(key, entry), snat=LruMap(capacity=4))
    end = entry.lifetime
    assert state_of(entry, end) is CtState.CREATED
    assert gc(st, end).ct.get(key) is not None
    assert state_of(entry, end + 1) is CtState.EXPIRED
    assert gc(st, end + 1).ct.get(key) is None


def test_icmp_error_for_a_rejected_request_travels_as_a_reply() -> None:
    """tail_no_service_ipv4 answers a request to a backend-less service with an ICMP port
    unreachable and redirects it out of the interface it came in on (v1.20 lb.h:2345-2350):
    from the reject on, the trace is on the way back to the client."""
    sc = parse(build_doc(placement="none", packets=1,
                         cilium={"serviceNoBackendResponse": "reject"}))
    _state, traces = run_flows(sc.world, sc.flows)
    hops = traces[0].hops
    assert [(h.action, h.reply) for h in hops] == [
        (Action.SEND, False), (Step.REJECT, True), (Action.RECEIVE, True)]
    assert hops[-1].at == "client" and hops[-1].packet.proto is Proto.ICMP


def test_a_services_update_keeps_another_services_draining_backend() -> None:
    """lb4_local keeps an established flow on a terminating backend as long as the backend
    map still has it (v1.20 lb.h:2265-2270); updating another service's endpoints must not
    delete it from the map nor clear its BE_STATE_TERMINATING flag."""
    doc = build_doc(placement="remote", service={"backends": ["web-local", "web-remote"]})
    api = dict(doc["services"][0], name="api", targetPort=9090, nodePort=30081,
               backends=["web-local"])
    doc["services"].append(api)
    sc = parse(doc)
    state = initial_state(sc.world)
    state = reprogram(sc.world, state, "web", ("web-local",), terminating=("web-remote",))
    assert state.agent is not None
    [gone] = state.agent.terminating
    remote = Endpoint(addr=ip_address(ADDRS["ipv4"]["remote"]), port=8080)
    assert state.nodes["node1"].lb.backends[gone] == remote
    state = reprogram(sc.world, state, "api", ())
    assert state.agent is not None and state.agent.terminating == {gone}
    for st in state.nodes.values():
        assert st.lb.backends.get(gone) == remote
        assert gone in st.lb.terminating


@attrs.frozen(eq=False)
class Sym:
    """A key that cannot be hashed but compares by value, as a symbolic port does."""

    value: int

    def __eq__(self, other: object) -> bool:
        got = other.value if isinstance(other, Sym) else other
        return bool(self.value == got)

    __hash__ = None  # type: ignore[assignment]


def test_eqmap_equality_is_mapping_equality_whatever_the_keys() -> None:
    """EqMap stands for a BPF hash map, whose lookup matches keys by equality (map_lookup_elem
    compares the key bytes): two maps are equal when they hold equal keys with equal values,
    whether their keys could be hashed (a dict) or not (pairs searched with ==)."""
    sym_a = EqMap([(Sym(1), "a")])
    assert sym_a == EqMap([(Sym(1), "a")])
    assert sym_a != EqMap([(Sym(1), "b")])
    assert sym_a != EqMap([(Sym(2), "a")])
    concrete = EqMap({1: "a"})
    assert concrete == sym_a and sym_a == concrete
    assert concrete != EqMap([(Sym(1), "b")]) and EqMap([(Sym(1), "b")]) != concrete
    assert concrete == {1: "a"} and concrete != {1: "b"}


def test_affinity_map_capacity_is_the_trees_define() -> None:
    """cilium_lb4/6_affinity hold CILIUM_LB_AFFINITY_MAP_MAX_ENTRIES entries (lb.h:222,
    node_config.h); the model's per-node LRU has the same capacity as both Cilium trees."""
    import re

    from model.maps import AFFINITY_MAP_MAX
    from tests.conftest import ROOT

    assert AFFINITY_MAP_MAX == 65536  # node_config.h:91 (v1.20), :198 (v1.18)
    seen = 0
    for tree in ("v1.18.0-dev", "v1.20.0-dev"):
        cfg = ROOT.parent / "shared" / "cilium" / tree / "bpf" / "node_config.h"
        if not cfg.is_file():
            continue
        m = re.search(r"#define\s+CILIUM_LB_AFFINITY_MAP_MAX_ENTRIES\s+(\d+)", cfg.read_text())
        assert m is not None and int(m.group(1)) == AFFINITY_MAP_MAX, tree
        seen += 1
    sc = parse(build_doc(placement="remote", version="1.20"))
    state, _ = run_flows(sc.world, ())
    assert state.nodes["node1"].affinity.capacity == AFFINITY_MAP_MAX
    assert seen == 2 or not (ROOT.parent / "shared").is_dir()
