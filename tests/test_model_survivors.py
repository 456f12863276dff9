"""Behaviours the model mutation check found unpinned: a pinned backend on a Maglev
frontend, v1.20's Maglev hash on affinity frontends checked against the reference
datapath, and the IPIP-at-XDP frag-needed boundary."""

from __future__ import annotations

from typing import Any

from model.hooks import Hook, Step
from model.values import IcmpKind
from tests.test_ipip import _doc as ipip_doc
from tests.test_ipip import _run as ipip_run
from tests.test_model_maglev import _doc as maglev_doc
from tests.test_model_maglev import _run as maglev_run


def test_a_pin_on_a_maglev_frontend_is_taken() -> None:
    """A flow's `backend:` pin stands for the hash's pick on a Maglev frontend too (as a
    counterexample replays it): each pinned flow reaches its pod."""
    doc = maglev_doc("1.20")
    doc["flows"] = doc["flows"][:8]
    for i, f in enumerate(doc["flows"]):
        f["backend"] = f"web-{i % 4}"
    traces = maglev_run(doc)
    assert [t.backend_pod for t in traces] == [f"web-{i % 4}" for i in range(8)]


def test_v120_maglev_affinity_hash_agrees_with_the_datapath() -> None:
    """v1.20 hashes a zero client port on affinity frontends (lb.h:1937-1938): the model's
    picks equal the reference datapath's (datapath/lb.py), flow by flow, through the
    differential runner; without affinity the ports are hashed and the picks spread."""
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters

    for svc in ({"sessionAffinity": "ClientIP"}, {}):
        doc: dict[str, Any] = maglev_doc("1.20", **svc)
        # a client per flow: each first connection of a client is the hash's pick
        doc["clients"] = [{"name": f"c{i}", "ip": f"203.0.113.{10 + i}"} for i in range(12)]
        doc["flows"] = [dict(f, client=f"c{i}", packets=1)
                        for i, f in enumerate(doc["flows"][::2])]
        c = Counters()
        assert run_program(doc, reference_factory, frozenset(), c) is None, svc
        assert c.observations > 20


def _ipip_xdp(size: int) -> Any:
    doc = ipip_doc(enableIPIPTermination=True, loadBalancer={"acceleration": "native"},
                   pmtuDiscovery={"enabled": True})
    doc["flows"][0]["size"] = size
    doc["flows"][0]["packets"] = 1
    return ipip_run(doc)[0]


def test_ipip_at_xdp_frag_needed_only_above_the_mtu() -> None:
    """dsr_set_ipip4 asks dsr_is_too_big about the request plus the outer header
    (v1.20 nodeport.h:1735, :192-200: strictly above the MTU): 1480 + 20 fits a 1500 MTU
    and is encapsulated, 1481 is answered with frag-needed (MTU 1480)."""
    fits = _ipip_xdp(1480)
    assert any(h.hook is Hook.XDP and h.action is Step.IPIP for h in fits.hops), fits.hops
    over = _ipip_xdp(1481)
    errs = [h.packet for h in over.hops if h.at == "client" and h.reply]
    assert errs and errs[0].icmp is IcmpKind.FRAG_NEEDED and errs[0].mtu == 1480


def test_ipv6_geneve_dsr_later_fragment_without_its_dnated_entry() -> None:
    """encap_geneve_dsr_opt6 looks the DNATed fragment's ports up again (v1.20
    nodeport.h:437): a later fragment whose entry under the backend's address is gone
    (the LRU fragment map evicted it, the frontend's entry still there) is
    DROP_FRAG_NOT_FOUND, though nodeport_lb6's own lookup found its ports."""
    from ipaddress import ip_address

    import attrs

    from model.drops import DropReason
    from model.flows import run_flows
    from model.maps import FragKey
    from model.network import _ctx
    from model.nodeport import nodeport_lb
    from model.scenario import parse
    from model.values import Endpoint, Fragment, Packet, Proto
    from tests.conftest import ADDRS, NODE_PORT, build_doc

    sc = parse(build_doc(family="ipv6", mode="dsr", dispatch="geneve", proto="UDP",
                         version="1.20", routing="tunnel", tunnel="geneve"))
    state, _ = run_flows(sc.world, [])
    a = ADDRS["ipv6"]
    ctx = _ctx(sc.world, state, "node1", None)
    client = Endpoint(addr=ip_address(a["client"]), port=40000)
    to = Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT)
    first = Packet(src=client, dst=to, proto=Proto.UDP, frag=Fragment(id=7, more=True))
    st, res = nodeport_lb(ctx, state.nodes["node1"], first, Hook.FROM_NETDEV)
    assert res.reason is None, res
    backend = ip_address(a["remote"])
    key = FragKey(saddr=client.addr, daddr=backend, id=7, proto=Proto.UDP)
    assert st.frag.get(key) is not None
    later = attrs.evolve(first, src=attrs.evolve(client, port=0), dst=attrs.evolve(to, port=0),
                         frag=Fragment(id=7, offset=10))
    _, ok = nodeport_lb(ctx, st, later, Hook.FROM_NETDEV)
    assert ok.reason is None, ok
    _, lost = nodeport_lb(ctx, attrs.evolve(st, frag=st.frag.delete(key)), later,
                          Hook.FROM_NETDEV)
    assert lost.reason is DropReason.DROP_FRAG_NOT_FOUND


def _lb_ctx(doc: dict[str, Any], node: str = "node1") -> tuple[Any, Any]:
    from model.flows import run_flows
    from model.network import _ctx
    from model.scenario import parse

    sc = parse(doc)
    state, _ = run_flows(sc.world, [])
    return _ctx(sc.world, state, node, None), state.nodes[node]


def test_snat_later_fragment_without_its_dnated_entry() -> None:
    """tail_nodeport_nat_egress_ipv4 extracts the DNATed fragment's ports again
    (nodeport.h:2621): a later fragment whose entry under the backend's address is gone
    is DROP_FRAG_NOT_FOUND there, though nodeport_lb4's own lookup found its ports."""
    from ipaddress import ip_address

    import attrs

    from model.drops import DropReason
    from model.maps import FragKey
    from model.nodeport import nodeport_lb
    from model.values import Endpoint, Fragment, Packet, Proto
    from tests.conftest import ADDRS, NODE_PORT, build_doc

    ctx, st = _lb_ctx(build_doc(proto="UDP", version="1.20"))
    a = ADDRS["ipv4"]
    client = Endpoint(addr=ip_address(a["client"]), port=40000)
    to = Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT)
    first = Packet(src=client, dst=to, proto=Proto.UDP, frag=Fragment(id=7, more=True))
    st, res = nodeport_lb(ctx, st, first, Hook.FROM_NETDEV)
    assert res.reason is None, res
    key = FragKey(saddr=client.addr, daddr=ip_address(a["remote"]), id=7, proto=Proto.UDP)
    assert st.frag.get(key) is not None
    later = attrs.evolve(first, src=attrs.evolve(client, port=0), dst=attrs.evolve(to, port=0),
                         frag=Fragment(id=7, offset=10))
    assert nodeport_lb(ctx, st, later, Hook.FROM_NETDEV)[1].reason is None
    _, lost = nodeport_lb(ctx, attrs.evolve(st, frag=st.frag.delete(key)), later,
                          Hook.FROM_NETDEV)
    assert lost.reason is DropReason.DROP_FRAG_NOT_FOUND


def test_geneve_dsr_to_a_backend_without_tunnel_endpoint() -> None:
    """encap_geneve_dsr_opt4 (nodeport.h:1843-1845): no ipcache entry with a tunnel
    endpoint for the backend -> DROP_NO_TUNNEL_ENDPOINT."""
    from ipaddress import ip_address
    from types import MappingProxyType

    import attrs

    from model.drops import DropReason
    from model.nodeport import nodeport_lb
    from model.values import Endpoint, Packet, Proto, TcpFlags
    from tests.conftest import ADDRS, NODE_PORT, build_doc

    ctx, st = _lb_ctx(build_doc(mode="dsr", dispatch="geneve", version="1.20",
                                routing="tunnel", tunnel="geneve"))
    a = ADDRS["ipv4"]
    syn = Packet(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                 dst=Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT), proto=Proto.TCP,
                 flags=TcpFlags.SYN)
    assert nodeport_lb(ctx, st, syn, Hook.FROM_NETDEV)[1].reason is None
    bare = attrs.evolve(ctx, ipcache=MappingProxyType({}))
    _, res = nodeport_lb(bare, st, syn, Hook.FROM_NETDEV)
    assert res.reason is DropReason.DROP_NO_TUNNEL_ENDPOINT


def test_snat_mode_ignores_a_dsr_option() -> None:
    """Without DSR compiled in (nodeport_extract_dsr_v4 is #ifdef ENABLE_DSR) a packet that
    carries a DSR option to a local endpoint is no DSR ingress: it is delivered as any."""
    from ipaddress import ip_address

    from model.nodeport import nodeport_lb
    from model.values import DsrKind, DsrMeta, Endpoint, Packet, Proto, TcpFlags
    from tests.conftest import ADDRS, NODE_PORT, TARGET_PORT, build_doc

    a = ADDRS["ipv4"]
    meta = DsrMeta(kind=DsrKind.IPV4_OPTION,
                   frontend=Endpoint(addr=ip_address(a["node1"]), port=NODE_PORT))
    pkt = Packet(src=Endpoint(addr=ip_address(a["client"]), port=40000),
                 dst=Endpoint(addr=ip_address(a["remote"]), port=TARGET_PORT),
                 proto=Proto.TCP, flags=TcpFlags.SYN, dsr=meta)
    for mode, step in (("dsr", Step.DSR_INGRESS), ("snat", None)):
        ctx, st = _lb_ctx(build_doc(mode=mode), "node2")
        _, res = nodeport_lb(ctx, st, pkt, Hook.FROM_NETDEV)
        assert (res.step is Step.DSR_INGRESS) == (step is not None), (mode, res)


def test_ipip_terminated_later_fragment_without_its_entry() -> None:
    """IPIP termination runs nodeport_lb4 on the inner packet (v1.20 bpf_host.c:1149-1175),
    whose lb4_extract_tuple loads a later fragment's ports: with no entry for the datagram
    on the backend's node it is DROP_FRAG_NOT_FOUND (ipv4.h:96-98)."""
    from ipaddress import ip_address

    from model.drops import DropReason
    from model.nodeport import from_netdev
    from model.values import Encap, Endpoint, Fragment, Outer, Packet, Proto

    doc = ipip_doc()
    doc["services"][0]["protocol"] = "UDP"
    ctx, st = _lb_ctx(doc, "node2")
    client = Endpoint(addr=ip_address("203.0.113.7"), port=0)
    vip = Endpoint(addr=ip_address("172.16.0.10"), port=0)
    outer = Outer(src=ip_address("192.168.2.3"), dst=ip_address("10.0.2.10"), kind=Encap.IPIP)
    later = Packet(src=client, dst=vip, proto=Proto.UDP, outer=outer,
                   frag=Fragment(id=9, offset=10))
    _, res = from_netdev(ctx, st, later)
    assert res.reason is DropReason.DROP_FRAG_NOT_FOUND


def test_another_nodes_masquerade_address_is_not_masqueraded_to() -> None:
    """A node's masquerade address is a cluster address the ipcache knows (remote node), so
    a pod's packet to it is not masqueraded (nat.h:745-748), as to the node's own IP; an
    outside address is."""
    from ipaddress import ip_address

    from model.nodeport import to_netdev
    from model.values import Endpoint, Packet, Proto, TcpFlags
    from tests.conftest import ADDRS, build_doc

    doc = build_doc(version="1.20", cilium={"bpf": {"masquerade": True}})
    doc["nodes"][0]["masqueradeIP"] = "192.168.2.99"  # node1's; the pod is on node2
    ctx, st = _lb_ctx(doc, "node2")
    pod = next(p for p in doc["pods"] if p["node"] == "node2")
    for dst, masqueraded in (("192.168.2.99", False), (ADDRS["ipv4"]["client"], True)):
        pkt = Packet(src=Endpoint(addr=ip_address(pod["ip"]), port=45000),
                     dst=Endpoint(addr=ip_address(dst), port=443), proto=Proto.TCP,
                     flags=TcpFlags.SYN)
        _, res = to_netdev(ctx, st, pkt)
        assert (res.packet.src.addr != pkt.src.addr) is masqueraded, (dst, res)


def test_geneve_dsr_without_pmtu_discovery_loses_what_exceeds_the_mtu() -> None:
    """PMTU discovery off: the LB node sends the Geneve-encapsulated request whatever its
    size and the fabric loses what exceeds the 1500-byte MTU. On the wire: the request,
    the outer IP, UDP, Geneve and inner Ethernet headers (50 over IPv4 nodes, 70 over
    IPv6), and the DSR option (12 / 24): 1438 and 1406 bytes are the largest that pass
    (docs/dsr-mtu.md)."""
    from model.drops import DropReason
    from tests.test_dsr_mtu import _doc, _run

    for family, largest in (("ipv4", 1438), ("ipv6", 1406)):
        for size, passes in ((largest, True), (largest + 1, False)):
            tr = _run(_doc(pmtu=False, family=family, dispatch="geneve", routing="tunnel",
                           tunnel="geneve", size=size))
            assert tr.delivered is passes, (family, size, tr.drop)
            if not passes:
                assert tr.drop == ("fabric", DropReason.FABRIC_OVER_MTU)


def test_fragment_map_capacity_is_the_trees_define() -> None:
    """cilium_ipv4/6_frag_datagrams hold CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES entries
    (--bpf-fragments-map-max, 8192 by default); the model's per-node LRU and the
    reference datapath's maps have that capacity, as both Cilium trees define it."""
    import re

    from datapath.config import NodeConfig
    from datapath.host import make_node
    from model.flows import run_flows
    from model.maps import FRAG_MAP_MAX
    from model.scenario import parse
    from tests.conftest import ROOT, build_doc

    assert FRAG_MAP_MAX == 8192
    for tree in ("v1.18.0-dev", "v1.20.0-dev"):
        cfg = ROOT.parent / "shared" / "cilium" / tree / "bpf" / "node_config.h"
        if cfg.is_file():
            m = re.search(r"#define\s+CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES\s+(\d+)", cfg.read_text())
            assert m is not None and int(m.group(1)) == FRAG_MAP_MAX, tree
    state, _ = run_flows(parse(build_doc(version="1.20")).world, ())
    assert state.nodes["node1"].frag.capacity == FRAG_MAP_MAX
    maps = make_node(NodeConfig(ipv4="10.0.10.1")).maps
    assert maps.frag4.max_entries == maps.frag6.max_entries == FRAG_MAP_MAX


def test_fragment_orders() -> None:
    """The network's fragment orders: reversed is last first for any count; first-last
    sends the first, then the last, then the middle ones."""
    from ipaddress import ip_address

    from model.fragments import ordered
    from model.values import Endpoint, Packet, Proto

    frags = tuple(Packet(src=Endpoint(addr=ip_address("203.0.113.7"), port=i),
                         dst=Endpoint(addr=ip_address("10.0.0.1"), port=80), proto=Proto.UDP)
                  for i in range(4))
    assert ordered(frags, "reversed") == frags[::-1]
    assert ordered(frags[:3], "reversed") == frags[2::-1]
    assert ordered(frags, "first-last") == (frags[0], frags[3], frags[1], frags[2])
    assert ordered(frags[:3], "first-last") == (frags[0], frags[2], frags[1])
    assert ordered(frags, "in-order") == frags


def test_a_later_fragment_refreshes_its_entry() -> None:
    """cilium_ipv4_frag_datagrams is an LRU map: a later fragment's lookup makes its entry
    the most recent (map_lookup_elem on an LRU hash), so a full map evicts another one."""
    from ipaddress import ip_address

    import attrs

    from model.config import CiliumConfig
    from model.fragments import load_l4_ports
    from model.maps import FragKey, FragPorts, LruMap
    from model.values import Endpoint, Fragment, Packet, Proto

    c, vip = ip_address("203.0.113.7"), ip_address("10.0.0.1")
    keys = [FragKey(saddr=c, daddr=vip, id=i, proto=Proto.UDP) for i in range(3)]
    empty: LruMap[FragKey, FragPorts] = LruMap(capacity=2)
    frag = empty.put(keys[0], FragPorts(sport=1, dport=80))
    frag = frag.put(keys[1], FragPorts(sport=2, dport=80))
    from tests.conftest import build_doc

    _ctx_unused, st0 = _lb_ctx(build_doc(version="1.20"))
    st = attrs.evolve(st0, frag=frag)
    later = Packet(src=Endpoint(addr=c, port=0), dst=Endpoint(addr=vip, port=0),
                   proto=Proto.UDP, frag=Fragment(id=0, offset=10))
    st, pkt, err = load_l4_ports(CiliumConfig(), frozenset(), st, later)
    assert err is None and pkt.src.port == 1
    st = attrs.evolve(st, frag=st.frag.put(keys[2], FragPorts(sport=3, dport=80)))
    assert st.frag.get(keys[0]) is not None and st.frag.get(keys[1]) is None


def test_pod_to_another_nodes_nodeport_at_the_range_edges() -> None:
    """v1.20 serves a pod's call to any node's NodePort through the 0.0.0.0:nodePort
    surrogate (lb4_lookup_service's wildcard, per packet at from-container or at connect()
    with socket-LB), for every port of the NodePort range, its first and last included; a
    pod's call to an outside server finds no service and goes out untranslated."""
    from tests.test_eastwest import _doc as ew_doc
    from tests.test_eastwest import _hooks
    from tests.test_eastwest import _run as ew_run

    for socket_lb, hook in ((False, ("from-container", "dnat")),
                            (True, ("sock-connect", "sock-xlate"))):
        for port in (30000, 32767):
            doc = ew_doc({"client": "cli", "to": {"node": "node2", "service": "web"},
                          "backend": "web-1"}, socket_lb=socket_lb, version="1.20")
            doc["services"][0]["nodePort"] = port
            tr = ew_run(doc)
            assert hook in _hooks(tr) and tr.delivered, (socket_lb, port)
    out = ew_doc({"client": "cli", "to": {"address": "198.51.100.10", "port": 443,
                                          "protocol": "TCP"}},
                 socket_lb=True, version="1.20", clients=[{"name": "srv", "ip": "198.51.100.10"}])
    tr = ew_run(out)
    assert tr.delivered and ("sock-connect", "sock-xlate") not in _hooks(tr)


def test_xdp_checks_an_etp_local_service_before_its_punt() -> None:
    """v1.20 at XDP: an eTP=Local service's source ranges are checked before the punt to
    tc (nodeport.h:2715-2732), so a client outside them is dropped at XDP; one inside is
    punted and served by from-netdev (vectors/xdp_nodeport.yaml on the bytes)."""
    from model.drops import DropReason
    from model.flows import run_flows
    from model.scenario import parse
    from tests.conftest import build_doc

    for ranges, dropped in ((["10.0.0.0/8"], True), (["203.0.113.0/24"], False)):
        doc = build_doc(svc_type="LoadBalancer", placement="local", version="1.20",
                        service={"externalTrafficPolicy": "Local",
                                 "loadBalancerSourceRanges": ranges},
                        cilium={"loadBalancer": {"mode": "snat", "dsrDispatch": "opt",
                                                 "acceleration": "native"}})
        sc = parse(doc)
        tr = run_flows(sc.world, sc.flows)[1][0]
        xdp = next(h for h in tr.hops if h.hook is Hook.XDP)
        if dropped:
            assert tr.drop == ("node1", DropReason.DROP_NOT_IN_SRC_RANGE)
            assert xdp.action is Step.DROP
        else:
            assert tr.delivered and xdp.action is Step.PASS
