"""What the difftest generator reaches: each extension is drawn by a fixed-seed campaign, and
the behaviour it is there for happens when the model runs the drawn programs."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import model.lbselect
import model.nodeport
from datapath.diffgen import draw_programs, small_maps_for, versions_for
from datapath.programs import VERSIONS, nat_min
from model.conntrack import reopens
from model.flows import run_flows
from model.hooks import Hook
from model.maps import LruMap, TupleFlags
from model.scenario import parse
from model.snat import snat_nat
from model.values import TcpFlags
from tests.conftest import ROOT

EXAMPLES, SEED = 200, 1


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return draw_programs(EXAMPLES, SEED)


def _pairs(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    flows = doc["flows"]
    for i, f in enumerate(flows):
        for g in flows[i + 1:]:
            yield f, g


def features(doc: dict[str, Any]) -> set[str]:
    """What one program has, read off the document."""
    out: set[str] = set()
    svcs = doc["services"]
    flows = doc["flows"]
    lo = nat_min(doc)
    out.add(f"version-{doc['cilium']['version']}")
    if len(svcs) == 2 and svcs[0].get("nodePort") == svcs[1].get("nodePort") == 30053 \
            and {s["protocol"] for s in svcs} == {"TCP", "UDP"}:
        out.add("tcp-udp-one-port")
        targets = {f["to"].get("service") or f["to"].get("protocol") for f in flows}
        if {"svc0", "svc1"} <= targets or {"TCP", "UDP"} <= targets:
            out.add("tcp-udp-one-port-both-used")
    rng = doc["cilium"].get("nodePort", {}).get("range")
    out.add(f"range-{rng or 'default'}")
    for f in flows:
        if f.get("close"):
            out.add(f"close-{f['close']}")
        if f.get("lostReplies"):
            out.add("lost-replies")
        if f["to"].get("service") and "protocol" in f["to"]:
            out.add("other-protocol-to-a-nodeport")
        if f["sourcePort"] == lo - 1:
            out.add(f"port-below-snat-range-{rng or 'default'}")
        if f["sourcePort"] == lo:
            out.add(f"port-at-snat-range-start-{rng or 'default'}")
        if f["sourcePort"] == 65535:
            out.add("port-65535")
    sticky = {x["name"] for x in svcs if x.get("sessionAffinity") == "ClientIP"}
    if sticky:
        out.add("session-affinity")
    for f, g in _pairs(doc):
        if f["to"] == g["to"] and f["client"] == g["client"] and \
                f["sourcePort"] != g["sourcePort"] and (f["to"].get("service") in sticky or any(
                    f["to"].get("address") in (x.get("loadBalancerIP"), *x.get("externalIPs", []))
                    for x in svcs if x["name"] in sticky)):
            out.add("affinity-second-connection")
        same = f["to"] == g["to"] and f["sourcePort"] == g["sourcePort"]
        if same and f["client"] != g["client"] and f.get("backend") == g.get("backend") \
                and f["sourcePort"] >= lo:
            out.add("two-clients-one-snat-port")
        if same and f["client"] == g["client"] and f.get("close") and not g.get("resume"):
            out.add("syn-after-close")
            if f["close"] in ("half", "backend-fin"):
                out.add("syn-after-one-way-close")
    for f in flows:
        if f.get("fragments"):
            out.add(f"fragments-{f.get('fragmentOrder', 'in-order')}")
    accel = doc["cilium"]["loadBalancer"].get("acceleration")
    if accel:
        out.add(f"xdp-{accel}")
        if any(f.get("fragments") for f in flows):
            out.add("fragments-at-xdp")
    bpf = doc["cilium"].get("bpf", {})
    pods = {p["name"] for p in doc["pods"]}
    egress = [f for f in flows if f["client"] in pods]
    if bpf.get("masquerade") and egress and len(egress) < len(flows):
        out.add("pod-egress-beside-nodeport")  # masquerade and NodePort in one SNAT map
    if bpf.get("fragmentTracking") is False:
        out.add("fragment-tracking-off")
    bpf = {k: v for k, v in bpf.items() if k not in ("masquerade", "fragmentTracking")}
    out.update(f"small-{k}" for k in bpf)
    out.update(f"fabric-{k}" for k in doc.get("fabric", {}))
    return out


def test_generator_draws_every_extension(docs: list[dict[str, Any]]) -> None:
    seen: Counter[str] = Counter(x for d in docs for x in features(d))
    want = {"tcp-udp-one-port", "tcp-udp-one-port-both-used", "range-default",
            "range-30000-40000", "range-30000-65534",
            "port-below-snat-range-default", "port-at-snat-range-start-default",
            "port-below-snat-range-30000-40000", "port-at-snat-range-start-30000-40000",
            "port-65535", "two-clients-one-snat-port", "syn-after-close",
            "other-protocol-to-a-nodeport", "close-True", "close-half", "close-rst",
            "close-backend-fin", "close-backend-rst", "lost-replies", "syn-after-one-way-close",
            "small-ctTcpMax", "small-ctAnyMax", "small-natMax",
            "fabric-dropsIPOptions", "fabric-sourceDestCheck",
            "session-affinity", "affinity-second-connection", "pod-egress-beside-nodeport",
            "fragments-in-order", "fragments-first-last", "fragments-reversed",
            "fragment-tracking-off",
            "xdp-native", "xdp-best-effort", "fragments-at-xdp",
            *(f"version-{v}" for v in VERSIONS)}
    assert want <= set(seen), sorted(want - set(seen))
    # the map and fabric extensions stay a minority of the generated programs (the
    # explicit ones all have them): most exercise the ordinary paths
    plain = sum(1 for d in docs if "bpf" not in d["cilium"] and "fabric" not in d)
    assert plain > len(docs) * 2 // 5, (plain, len(docs))


def test_both_versions_for_the_reference_one_for_a_tree() -> None:
    from datapath.adapter import reference_factory

    assert set(versions_for(reference_factory)) == {"1.18", "1.20"}
    assert small_maps_for(reference_factory)

    class Tree:
        cilium_version = "1.18.0-dev"

        def __call__(self, *_a: object) -> None:
            return None

    assert versions_for(Tree()) == ("1.18",)
    assert not small_maps_for(Tree())


def test_model_runs_reach_the_behaviours(docs: list[dict[str, Any]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each drawn program on the model and count what happened inside it."""
    seen: Counter[str] = Counter()
    real_put = LruMap.put
    real_snat = snat_nat

    def put(self: LruMap[Any, Any], key: Any, value: Any) -> LruMap[Any, Any]:
        new = real_put(self, key, value)
        if key not in self.entries and len(new.entries) <= len(self.entries):
            seen["ct-eviction" if self.any_capacity is not None else "snat-eviction"] += 1
            if self.any_capacity is not None and getattr(key, "nexthdr", None) is not None:
                seen[f"ct-eviction-{key.nexthdr.name}"] += 1
        return new

    def counted_snat(*args: Any, **kw: Any) -> Any:
        res = real_snat(*args, **kw)
        client = args[2]
        if res.retries and args[0].nat_min <= client.port:
            seen["keep-port-collision"] += 1
        return res

    def counted_reopens(*args: Any) -> bool:
        r = reopens(*args)
        if r:
            seen["syn-reopens-closing-entry"] += 1
            entry = args[1]
            if entry.tx_closing != entry.rx_closing:
                seen["syn-reopens-half-closed-entry"] += 1
        return r

    real_affinity = model.lbselect._affinity_backend_id

    def counted_affinity(*args: Any) -> Any:
        st, bid = real_affinity(*args)
        seen["affinity-hit" if bid else "affinity-miss"] += 1
        if not bid and len(st.affinity) < len(args[1].affinity):
            seen["affinity-entry-dropped"] += 1  # expired, or its backend left
        return st, bid

    monkeypatch.setattr(model.lbselect, "_affinity_backend_id", counted_affinity)
    monkeypatch.setattr(LruMap, "put", put)
    monkeypatch.setattr(model.nodeport, "snat_nat", counted_snat)
    monkeypatch.setattr(model.nodeport, "reopens", counted_reopens)
    monkeypatch.setattr(model.lbselect, "reopens", counted_reopens)
    for doc in docs:
        sc = parse(doc)
        lo = sc.world.cfg.nat_min
        state, traces = run_flows(sc.world, sc.flows)
        for tr in traces:
            for i, h in enumerate(tr.hops):
                if h.hook is not None and h.packet.flags & TcpFlags.RST:
                    seen[f"{'reply' if h.reply else 'request'}-rst-seen-by-node"] += 1
                if h.hook is Hook.XDP:  # XDP_TX, or XDP_PASS to the node's from-netdev
                    nxt = tr.hops[i + 1] if i + 1 < len(tr.hops) else None
                    passed = nxt is not None and nxt.hook is Hook.FROM_NETDEV and nxt.at == h.at
                    seen[f"xdp-{'pass' if passed else 'final'}-{h.action.value}"] += 1
            if tr.drop is not None:
                seen[tr.drop[1].name] += 1
                if not tr.spec.egress and tr.spec.proto is not next(
                        s.proto for s in sc.world.cluster.services
                        if s.name == tr.spec.service):
                    seen[f"other-protocol-{tr.drop[1].name}"] += 1
            if tr.delivered and tr.spec.service == "svc1" and "tcp-udp-one-port" in features(
                    doc):
                seen["shared-port-second-protocol-delivered"] += 1
        pods = {pd.ip for pd in sc.world.cluster.pods}
        version = doc["cilium"]["version"]
        for st in state.nodes.values():
            for ce in st.ct.entries.values():
                if ce.tx_closing != ce.rx_closing:
                    seen["closed-one-way"] += 1
                if ce.dsr_internal and ce.nat_addr is not None:
                    seen[f"dsr-frontend-in-ct-{version}"] += 1
            for k, e in st.snat.entries.items():
                paired = attrs.evolve(k, saddr=k.daddr, daddr=e.to_addr, sport=k.dport,
                                      dport=e.to_port, flags=TupleFlags.IN) in st.snat.entries
                if k.flags is TupleFlags.OUT and k.saddr in pods and not paired:
                    seen[f"dsr-frontend-in-snat-map-{version}"] += 1  # {b, c, bp, cp}
                elif k.flags is TupleFlags.OUT and k.saddr in pods:
                    seen["pod-egress-masqueraded"] += 1  # a masquerade pair
                if k.flags is not TupleFlags.OUT or e.to_addr == k.saddr:
                    continue
                if k.sport == lo and e.to_port == lo:
                    seen["kept-at-snat-range-start"] += 1
                if k.sport == lo - 1 and lo <= e.to_port <= 65535:
                    seen["clamped-just-below-range"] += 1
    want = {"ct-eviction", "ct-eviction-TCP", "ct-eviction-UDP", "snat-eviction",
            "keep-port-collision", "DROP_NAT_NO_MAPPING", "FABRIC_DROPS_IP_OPTIONS",
            "FABRIC_SOURCE_DEST_CHECK", "syn-reopens-closing-entry",
            "shared-port-second-protocol-delivered", "kept-at-snat-range-start",
            "clamped-just-below-range", "dsr-frontend-in-ct-1.20",
            "dsr-frontend-in-snat-map-1.18", "other-protocol-PUNT_TO_STACK",
            "syn-reopens-half-closed-entry", "closed-one-way", "request-rst-seen-by-node",
            "reply-rst-seen-by-node", "affinity-hit", "affinity-miss",
            "affinity-entry-dropped", "pod-egress-masqueraded", "xdp-final-dnat+snat",
            "xdp-final-dnat+dsr", "xdp-final-rev-snat", "xdp-pass-dnat", "xdp-pass-pass",
            "xdp-pass-dsr-ingress"}
    assert not {"dsr-frontend-in-ct-1.18", "dsr-frontend-in-snat-map-1.20"} & set(seen)
    assert want <= set(seen), (sorted(want - set(seen)), seen)


def test_deterministic_snat_ports_are_compared_exactly() -> None:
    """Where allocation is deterministic the port renaming stays the identity: the one-port
    range (65535) and the keep-port path; a datapath whose keep-port boundary is off by one
    (its SNAT range starting at 32769) is caught at client port 32768."""
    import attrs

    from datapath.adapter import reference_factory
    from datapath.config import NodeConfig
    from datapath.difftest import DiffRun
    from datapath.explicit import evict_program, exhaust_program
    from datapath.host import Node
    from datapath.programs import COMBOS

    combo = COMBOS[0]  # ipv4 snat: every flow SNATed
    sc = parse(exhaust_program(combo))
    run = DiffRun(sc.world, reference_factory)
    assert run.run(sc.flows) is None
    assert run.ren.fwd and all(d == m for v in run.ren.fwd.values() for d, m in v.items())

    def off_by_one(config: NodeConfig, faults: frozenset[str] = frozenset()) -> Node:
        return Node(attrs.evolve(config, nat_min=config.nat_min + 1), faults)

    sc = parse(evict_program(combo))
    div = DiffRun(sc.world, off_by_one).run(sc.flows)
    assert div is not None and div.step.startswith("d: request 1"), div
    assert DiffRun(sc.world, reference_factory).run(sc.flows) is None


def test_affinity_program_sticks_expires_and_follows_the_match_map() -> None:
    """The explicit affinity program: the pin loses to the entry, then wins past the
    timeout; node2 has its own entry; a terminating backend (still in the backend map)
    is no longer matched. The reference agrees in every configuration; a datapath whose
    expiry is inverted does not."""
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import EXPLICIT, affinity_program
    from datapath.programs import COMBOS

    assert (affinity_program, False) in EXPLICIT
    for combo in COMBOS:
        doc = affinity_program(combo)
        sc = parse(doc)
        _, traces = run_flows(sc.world, sc.flows)
        assert [t.backend_pod for t in traces] == ["pod1", "pod1", "pod0", "pod1", "pod1"]
        assert run_program(doc, reference_factory, frozenset(), Counters()) is None
    bad = run_program(affinity_program(COMBOS[0]), reference_factory,
                      frozenset({"affinity_expiry_inverted"}), Counters())
    assert bad is not None and bad.step.startswith("second-port"), bad


def _moved_pairs(doc: dict[str, Any]) -> list[tuple[int, int]]:
    """(i, j): flow j is flow i's connection entering by another node, no endpoint change
    up to j (a drained connection stays on its old backend where it has a CT entry, while
    the other node picks from the new table: not P-MAG-01's premise)."""
    flows = doc["flows"]
    out = []
    for i, f in enumerate(flows):
        for j in range(i + 1, len(flows)):
            g = flows[j]
            if any("setBackends" in h for h in flows[:j + 1]):
                break
            to_f = {k: v for k, v in f["to"].items() if k not in ("via", "node")}
            to_g = {k: v for k, v in g["to"].items() if k not in ("via", "node")}
            if (to_f == to_g and f["client"] == g["client"]
                    and f["sourcePort"] == g["sourcePort"]
                    and f["to"].get("via", f["to"].get("node"))
                    != g["to"].get("via", g["to"].get("node"))):
                out.append((i, j))
    return out


def test_generator_draws_maglev_and_moved_connections(docs: list[dict[str, Any]]) -> None:
    """loadBalancer.algorithm maglev (table 251, no pins) and the same connection entering
    by another node; the model keeps such a connection's backend on every node."""
    mag = [d for d in docs if d["cilium"]["loadBalancer"].get("algorithm") == "maglev"]
    assert len(mag) > len(docs) // 16, len(mag)
    assert all(d["cilium"]["maglev"] == {"tableSize": 251} for d in mag)
    assert not any("backend" in f for d in mag for f in d["flows"])
    moved = kept = 0
    for doc in mag + [d for d in draw_programs(300, SEED + 1)
                      if d["cilium"]["loadBalancer"].get("algorithm") == "maglev"]:
        # one table on every node: no eTP=Local; no affinity entry another connection of
        # the client may have left on the second node
        plain = {s["name"] for s in doc["services"]
                 if not s.get("sessionAffinity")
                 and s.get("externalTrafficPolicy", "Cluster") == "Cluster"}
        pairs = [(i, j) for i, j in _moved_pairs(doc) if _service(doc, i) in plain]
        if not pairs:
            continue
        _, traces = run_flows(*_world_flows(doc))
        for i, j in pairs:
            a, b = traces[i], traces[j]
            if a.backend_pod is not None and b.backend_pod is not None:
                moved += 1
                kept += a.backend_pod == b.backend_pod
    assert moved >= 3, moved
    assert kept == moved, (kept, moved)


def _service(doc: dict[str, Any], i: int) -> str | None:
    """The service flow i addresses (by name, or by its frontend address)."""
    to = doc["flows"][i]["to"]
    if "service" in to:
        return str(to["service"])
    for s in doc["services"]:
        if to.get("address") in (s.get("loadBalancerIP"), s.get("clusterIP"),
                                 *s.get("externalIPs", [])) and s["port"] == to.get("port") \
                and s["protocol"] == to.get("protocol", s["protocol"]):
            return str(s["name"])
    return None


def _world_flows(doc: dict[str, Any]) -> tuple[Any, Any]:
    sc = parse(doc)
    return sc.world, sc.flows


def test_explicit_maglev_program_agrees_and_keeps_moved_connections() -> None:
    """The explicit Maglev program runs in every configuration: the reference agrees with
    the model, the connections moved to node2 keep their backends, and the two backends
    are both used."""
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import EXPLICIT, maglev_program
    from datapath.programs import COMBOS

    assert (maglev_program, False) in EXPLICIT
    for combo in COMBOS:
        doc = maglev_program(combo)
        assert run_program(doc, reference_factory, frozenset(), Counters()) is None, combo
        _, traces = run_flows(*_world_flows(doc))
        pods = [t.backend_pod for t in traces]
        assert pods[:4] == pods[4:8] and set(pods[:4]) == {"pod0", "pod1"}, (combo, pods)
        assert pods[8] == "pod1"
        assert run_program(doc, reference_factory, frozenset({"maglev_hash_daddr"}),
                           Counters()) is not None, combo

def test_generated_pod_egress_is_masqueraded_beside_nodeport_snat(
        docs: list[dict[str, Any]]) -> None:
    """Drawn programs with bpf.masquerade run pod egress through to-netdev's masquerade
    and back through reverse SNAT to the pod, on nodes whose SNAT map NodePort flows use."""
    from model.hooks import Step

    masq = revsnat_to_pod = 0
    for doc in docs:
        if not doc["cilium"].get("bpf", {}).get("masquerade"):
            continue
        sc = parse(doc)
        _, traces = run_flows(sc.world, sc.flows)
        for tr in traces:
            if not tr.spec.egress:
                continue
            masq += sum(1 for h in tr.hops if h.action is Step.MASQ)
            revsnat_to_pod += sum(1 for h in tr.hops if h.action is Step.REV_SNAT
                                  and h.packet.dst == tr.spec.source)
    assert masq >= 10 and revsnat_to_pod >= 10, (masq, revsnat_to_pod)


def test_masq_program_agrees_and_a_masquerade_fault_diverges() -> None:
    """The explicit masquerade program: every flow answered, the two pods on one source
    port to one server get different ports; the reference agrees in every configuration."""
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import EXPLICIT, masq_program
    from datapath.programs import COMBOS
    from model.hooks import Step

    assert (masq_program, False) in EXPLICIT
    for combo in COMBOS:
        doc = masq_program(combo)
        sc = parse(doc)
        _, traces = run_flows(sc.world, sc.flows)
        assert all(t.delivered for t in traces)
        ports = [h.packet.src for t in traces if t.spec.name in ("egress-a", "egress-b")
                 for h in t.hops if h.action is Step.MASQ]
        assert len(set(ports)) == 2 and all(65532 <= p.port <= 65535 for p in ports), ports
        assert run_program(doc, reference_factory, frozenset(), Counters()) is None
    bad = run_program(masq_program(COMBOS[0]), reference_factory,
                      frozenset({"snat_ignore_reverse_entry"}), Counters())
    assert bad is not None and bad.step.startswith("egress-b"), bad


def test_fragment_program_and_generated_fragments_reach_the_frag_map(
        docs: list[dict[str, Any]]) -> None:
    """Generated programs send fragmented datagrams that the model delivers whole (every
    fragment to one pod) and drop (a later fragment first: DROP_FRAG_NOT_FOUND; tracking
    off: DROP_FRAG_NOSUPPORT). The explicit fragment program agrees with the reference in
    every configuration and version; a datapath whose first fragment records nothing
    diverges at the first later fragment."""
    from datapath.adapter import reference_factory
    from datapath.diffgen import run_program
    from datapath.difftest import Counters
    from datapath.explicit import EXPLICIT, fragment_program
    from datapath.programs import COMBOS
    from model.drops import DropReason

    seen: Counter[str] = Counter()
    for doc in docs:
        if not any(f.get("fragments") for f in doc["flows"]):
            continue
        sc = parse(doc)
        _, traces = run_flows(sc.world, sc.flows)
        for tr in traces:
            if tr.spec.fragments and any(len(d) == tr.spec.fragments for d in tr.datagrams):
                seen["whole-datagram"] += 1
            if tr.drop is not None and tr.drop[1].name.startswith("DROP_FRAG"):
                seen[tr.drop[1].name] += 1
    assert seen["whole-datagram"] >= 5 and seen["DROP_FRAG_NOT_FOUND"] >= 1 \
        and seen["DROP_FRAG_NOSUPPORT"] >= 1, seen
    assert (fragment_program, False) in EXPLICIT
    for combo in COMBOS:
        for version in VERSIONS:
            doc = fragment_program(combo, version)
            sc = parse(doc)
            _, traces = run_flows(sc.world, sc.flows)
            dropped = [t.drop[1] if t.drop else None for t in traces]
            if combo[0] == "ipv6" and version == "1.18":
                assert dropped[:3] == [DropReason.DROP_FRAG_NOSUPPORT] * 3
            else:
                assert dropped == [None, None, DropReason.DROP_FRAG_NOT_FOUND, None], dropped
                assert [len(d) for d in traces[0].datagrams] == [3, 3]
            assert run_program(doc, reference_factory, frozenset(), Counters()) is None
    bad = run_program(fragment_program(COMBOS[0]), reference_factory,
                      frozenset({"frag_first_not_recorded"}), Counters())
    assert bad is not None and bad.step.startswith("in-order: request 1"), bad


def test_programs_do_not_depend_on_what_the_process_imported(tmp_path: Path) -> None:
    """Hypothesis mixes in literals of every loaded local module; a seed's programs must be
    the same whatever else is loaded (the CLI, the catalogues, a user's adapter module)."""
    (tmp_path / "user_adapter.py").write_text(
        "PORTS = (" + ", ".join(str(p) for p in range(40100, 40400, 7)) + ")\n"
        "NAMES = ('client9', 'pod7', 'TCP', 'UDP', 'svc3')\n")
    code = ("import hashlib, json, sys\n"
            "if len(sys.argv) > 1:\n"
            "    sys.path.insert(0, sys.argv[1])\n"
            "    import user_adapter, nodeport.cli, properties.catalogue, diagrams.catalogue\n"
            "    import datapath.faults, datapath.vectors\n"
            "from datapath.diffgen import draw_programs\n"
            "d = json.dumps(draw_programs(24, 1), sort_keys=True, default=str)\n"
            "print(hashlib.sha256(d.encode()).hexdigest())\n")
    runs = [subprocess.run([sys.executable, "-c", code, *extra], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout
            for extra in ([], [str(tmp_path)])]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64
