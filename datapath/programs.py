"""Generated difftest programs: scenario documents drawn by Hypothesis, and what each reaches.

A program is a scenario document in model.scenario's YAML format, so a shrunk failure is
printed as a file `nodeport trace` can load.  Generated: 1-3 nodes, 1-3 pods, 1-2 services
(NodePort / LoadBalancer / ExternalIP, TCP / UDP, eTP Cluster / Local, no or several
backends, backends shared between services, loadBalancerSourceRanges, a TCP and a UDP
service sharing one port and address: the DNS pattern; sessionAffinity ClientIP with the
default or a 60 s timeout; loadBalancer.algorithm maglev with a 251-entry table and no
pins), 1-6 flows (sometimes sending the
protocol a NodePort does not serve, which the node's stack gets; source ports in and
below the SNAT range, at its keep-port boundary and at its top, reused across flows, a
second client on the same source port, backend and node as an earlier flow (one SNAT port
wanted twice), the same client's next connection from another source port to the same
frontend, the same connection through another node (ECMP), the same connection sent
again (resumed, or reopened by a SYN after a FIN
close or closed one way only), 1-4 packets, connection endings (FIN both ways, half-close,
RST from the client or the backend, the backend's FIN), lost replies, idle time with CT GC,
datagrams sent as 2-3 IP fragments (in order, first-last, or a later one first; fragment
tracking sometimes off),
endpoint changes before a flow: scale up, pod deletion, termination with drain,
replacement), in snat / dsr / hybrid, opt /
geneve dispatch, native / tunnel routing, IPv4 / IPv6, reject / drop for backend-less
services, the SNAT range moved (its boundary at 40000/40001) or shrunk to the one port
65535 (every allocation deterministic, a second flow exhausts it), CT and SNAT maps of 2-6
entries (LRU eviction), the fabric's IP-option dropping and source/destination check, and
the Cilium versions the datapath under test implements (1.20 and 1.18 for the reference
datapath: DSR frontend in the CT entry vs in the SNAT map).
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hypothesis import strategies as st

ADDR = {
    "ipv4": {"node": "192.168.2.{}", "pod": "10.0.{}.{}", "client": "203.0.113.{}",
             "vip": "172.16.10.{}", "ext": "198.51.100.{}", "range_in": "203.0.113.0/24",
             "range_out": "192.0.2.0/24", "cluster": "10.96.0.{}"},
    "ipv6": {"node": "2001:db8:2::{}", "pod": "2001:db8:10:{}::{}", "client": "2001:db8:ff00::{}",
             "vip": "2001:db8:16:10::{}", "ext": "2001:db8:51:100::{}",
             "range_in": "2001:db8:ff00::/64", "range_out": "2001:db8:eeee::/64",
             "cluster": "2001:db8:96::{}"},
}
SOURCE_PORTS = (40000, 40001, 33000, 1024, 5000, 65535)
IDLE = (0, 0, 0, 0, 5, 61, 9000)
AFFINITY_TIMEOUTS = (10800, 60)  # sessionAffinityTimeoutSeconds: the default, and short
# nodePort.range: Cilium's default (SNAT 32768-65535), one that moves the SNAT range's
# start to 40001, and one that leaves the single SNAT port 65535.
RANGES: tuple[str | None, ...] = (None, None, None, None, "30000-40000", "30000-65534")
# Small CT / SNAT capacities (bpf.ctTcpMax, bpf.ctAnyMax, bpf.natMax): LRU eviction happens.
CT_SIZES = (None, 2, 3, 4)
NAT_SIZES = (None, 2, 4, 6)
VERSIONS = ("1.20", "1.18")
# Fragmented datagrams (flows[].fragments / fragmentOrder) and the tracking switch.
FRAGMENTS = (0,) * 6 + (2, 3)
FRAG_ORDERS = ("in-order",) * 3 + ("first-last", "reversed")
FRAG_TRACKING = (True,) * 7 + (False,)
ALGORITHMS = ("random",) * 3 + ("maglev",)  # loadBalancer.algorithm
# A TCP flow's ending (scenario key `close`): none half the time.
ENDINGS = (None,) * 6 + (True, True, "half", "rst", "backend-fin", "backend-rst")

# (family, mode, dispatch, routing): every configuration the agent accepts for v1.18+.
COMBOS: tuple[tuple[str, str, str, str], ...] = tuple(
    (fam, mode, disp, routing)
    for fam in ("ipv4", "ipv6")
    for mode, disp, routing in (("snat", "opt", "native"), ("snat", "geneve", "tunnel"),
                                ("dsr", "opt", "native"), ("dsr", "geneve", "native"),
                                ("dsr", "geneve", "tunnel"), ("hybrid", "opt", "native"),
                                ("hybrid", "geneve", "native"), ("hybrid", "geneve", "tunnel")))
# DSR dispatch ipip (docs/ipip.md): campaigns run them after COMBOS (diffgen.combos), so
# that the older units keep their seeds.
IPIP_COMBOS: tuple[tuple[str, str, str, str], ...] = tuple(
    (fam, "dsr", "ipip", "native") for fam in ("ipv4", "ipv6"))

Draw = Callable[..., Any]


def nat_min(doc: dict[str, Any]) -> int:
    """The program's first SNAT port (one past its NodePort range)."""
    rng = doc.get("cilium", {}).get("nodePort", {}).get("range", "30000-32767")
    return int(str(rng).replace(",", "-").split("-")[1]) + 1


def _services(draw: Draw, a: dict[str, str], pods: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """1-2 services; or a TCP and a UDP service on one port and address (port 53,
    NodePort 30053: the DNS pattern), each with its own backends."""
    pair = pick(draw, (False, False, False, False, True))
    services: list[dict[str, Any]] = []
    for i in range(2 if pair else pick(draw, (1, 2))):
        if pair and i == 1:
            twin = dict(copy.deepcopy(services[0]), name="svc1", backends=_backends(draw, pods),
                        protocol="UDP" if services[0]["protocol"] == "TCP" else "TCP")
            services.append(twin)
            break
        stype, proto, target, etp, cluster_ip = picks(
            draw, ("NodePort", "LoadBalancer", "ExternalIP"), ("TCP", "UDP"), (8080, 8081),
            ("Cluster",) * 3 + ("Local",), (False,) * 4 + (True,))
        svc: dict[str, Any] = {
            "name": f"svc{i}", "type": stype, "protocol": proto,
            "port": 53 if pair else 80 + i, "targetPort": target,
            "externalTrafficPolicy": etp, "backends": _backends(draw, pods),
        }
        if cluster_ip:
            svc["clusterIP"] = a["cluster"].format(10 + i)
        if stype in ("NodePort", "LoadBalancer"):
            svc["nodePort"] = 30053 if pair else 30080 + i
        if stype == "LoadBalancer":
            svc["loadBalancerIP"] = a["vip"].format(2 + i)
            ranges = pick(draw, ((), ("range_in",), ("range_out",)))
            if ranges:
                svc["loadBalancerSourceRanges"] = [a[r] for r in ranges]
        if stype == "ExternalIP":
            svc["externalIPs"] = [a["ext"].format(20 + i)]
        affinity = pick(draw, (None,) * 3 + AFFINITY_TIMEOUTS)
        if affinity is not None:  # sessionAffinity: ClientIP, 10800 s or one IDLE crosses
            svc["sessionAffinity"] = "ClientIP"
            svc["sessionAffinityTimeoutSeconds"] = affinity
        services.append(svc)
    return services


def _backends(draw: Draw, pods: list[dict[str, Any]]) -> list[str]:
    """A service's backends in slot order: how many (mostly one), then which, in which
    order (one draw each: Hypothesis draws cost more than the programs they build)."""
    names = tuple(p["name"] for p in pods)
    size = min(len(names), pick(draw, (1, 1, 1, 0, 1, 2, 2, 3)))
    return list(pick(draw, _orders(names, size)))


@functools.lru_cache(maxsize=64)
def _orders(names: tuple[str, ...], size: int) -> tuple[tuple[str, ...], ...]:
    return tuple(itertools.permutations(names, size))


@functools.lru_cache(maxsize=1024)
def _sampled(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def pick(draw: Draw, options: Iterable[Any]) -> Any:
    """draw(st.sampled_from(options)), the strategy built once per option tuple (a fresh
    strategy is validated on its first draw, which costs more than the draw)."""
    return draw(_sampled(tuple(options)))


@functools.lru_cache(maxsize=256)
def _product(*options: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    return tuple(itertools.product(*options))


def picks(draw: Draw, *options: tuple[Any, ...]) -> tuple[Any, ...]:
    """One choice from each option tuple, in one draw (shrinking towards the first of
    each): a Hypothesis draw costs more than building the program around it."""
    got: tuple[Any, ...] = pick(draw, _product(*options))
    return got


def _cilium(draw: Draw, mode: str, dispatch: str, routing: str,
            versions: tuple[str, ...], small_maps: bool, fam: str = "ipv4") -> dict[str, Any]:
    version, seed, response, rng, small = picks(
        draw, versions, (0, 1, 2, 3), ("reject", "drop"), RANGES, (False, False, True))
    out: dict[str, Any] = {
        "version": version, "loadBalancer": {"mode": mode, "dsrDispatch": dispatch},
        "routingMode": routing, "tunnelProtocol": "geneve", "seed": seed,
        "serviceNoBackendResponse": response}
    # loadBalancer.acceleration, in a third of the programs; the agent refuses it with an
    # IPv6 tunnel underlay
    if not (routing == "tunnel" and fam == "ipv6"):
        accel = pick(draw, ("disabled",) * 4 + ("native", "best-effort"))
        if accel != "disabled":
            out["loadBalancer"]["acceleration"] = accel
    if rng is not None:
        out["nodePort"] = {"range": rng}
    if dispatch == "ipip":
        _ipip(out, pick(draw, (True, True, True, False)))
    if not pick(draw, FRAG_TRACKING):  # --enable-ipv4/6-fragment-tracking=false
        out["bpf"] = {"fragmentTracking": False}
    if pick(draw, ALGORITHMS) == "maglev":  # the smallest table the agent accepts
        out["loadBalancer"]["algorithm"] = "maglev"
        out["maglev"] = {"tableSize": 251}
    if small_maps and small:
        sizes = picks(draw, CT_SIZES, CT_SIZES, NAT_SIZES)
        bpf = {k: v for k, v in zip(("ctTcpMax", "ctAnyMax", "natMax"), sizes, strict=True)
               if v is not None}
        if bpf:
            out.setdefault("bpf", {}).update(bpf)
    return out


def _ipip(out: dict[str, Any], terminate: bool) -> None:
    """IPIP dispatch: v1.18's agent accepts it only under XDP acceleration; v1.20 on tc
    too, with BPF termination on the backends' nodes (--enable-ipip-termination) or not."""
    if out["version"] == "1.18":
        out["loadBalancer"]["acceleration"] = "native"
    elif terminate:
        out["enableIPIPTermination"] = True


def _fabric(draw: Draw) -> dict[str, bool]:
    kind = pick(draw, ("none",) * 9 + ("options", "check", "both"))
    return {k: True for k, on in (("dropsIPOptions", kind in ("options", "both")),
                                  ("sourceDestCheck", kind in ("check", "both"))) if on}


@st.composite
def programs(draw: Draw, combo: tuple[str, str, str, str] | None = None,
             versions: tuple[str, ...] = VERSIONS, small_maps: bool = True
             ) -> dict[str, Any]:
    """One scenario document (cluster + services + flows) in the scenario YAML format;
    `small_maps` False keeps Cilium's map sizes (a kernel's BPF LRU is no exact LRU)."""
    fam, mode, dispatch, routing = combo if combo is not None else pick(draw, COMBOS)
    a = ADDR[fam]
    # sampled_from shrinks towards its first element: simplest values come first.
    nodes = [f"node{i + 1}" for i in range(pick(draw, (1, 2, 2, 3, 3)))]
    pods = []
    for i in range(pick(draw, (1, 2, 3))):
        n = pick(draw, range(len(nodes)))
        pods.append({"name": f"pod{i}", "node": nodes[n],
                     "ip": a["pod"].format(n + 1, 10 + i)})
    services = _services(draw, a, pods)
    cilium = _cilium(draw, mode, dispatch, routing, versions, small_maps, fam)
    lo = nat_min({"cilium": cilium})
    # the SNAT range's keep-port boundary (lo - 1 is clamped, lo kept) and its top
    ports = (*SOURCE_PORTS, lo - 1, lo, 65534)
    clients = [{"name": f"client{i}", "ip": a["client"].format(7 + i)} for i in range(2)]
    flows: list[dict[str, Any]] = []
    live = {s["name"]: list(s["backends"]) for s in services}
    names = [p["name"] for p in pods]
    left: set[tuple[str, str]] = set()
    for i in range(pick(draw, (1, 2, 3, 4, 6))):
        change = _endpoint_change(draw, services, live, names, left) if flows else None
        again = pick(draw, ("new", "new", "same", "other-client", "other-port", "other-node")) \
            if flows else "new"
        if again != "new":
            prev = flows[pick(draw, range(len(flows)))]
            svc = next(x for x in services if x["name"] == prev["svc"])
            via = prev["to"]["via" if "via" in prev["to"] else "node"]
            flow: dict[str, Any] = {
                "name": f"flow{i}", "client": prev["client"],
                "sourcePort": prev["sourcePort"], "to": dict(prev["to"]),
                "packets": pick(draw, (1, 2, 3, 4)), "svc": svc["name"]}
            stray = flow["to"].get("protocol", svc["protocol"]) != svc["protocol"]
            if again == "other-node" and len(nodes) > 1:
                # the same connection arriving at another node (ECMP): Maglev's case
                via = nodes[(nodes.index(via) + 1) % len(nodes)]
                flow["to"]["via" if "via" in flow["to"] else "node"] = via
            elif again == "other-port":
                # the same client's next connection to the same frontend (session affinity)
                flow["sourcePort"] = pick(draw, tuple(p for p in ports
                                                      if p != prev["sourcePort"]))
            elif again == "other-client":
                # a second client, same source port, node and backend: on the keep-port
                # path both want one SNAT port (nat.h's collision retries)
                flow["client"] = "client1" if prev["client"] == "client0" else "client0"
                if "backend" in prev and prev["backend"] in live[svc["name"]]:
                    flow["backend"] = prev["backend"]
            elif flow["to"].get("protocol", svc["protocol"]) == "TCP" and prev.get(
                    "close") in (None, "half", "backend-fin") and pick(draw, (False, True)):
                flow["resume"] = True  # continue the connection: ACKs, no SYN
            # (a connection closed both ways, or one way only, sent again opens with a SYN
            # on its closing CT entry; a half-closed one may also go on with ACKs)
            _finish_flow(draw, flow, svc, via, pods, live, change, stray)
            flows.append(flow)
            continue
        svc = services[pick(draw, range(len(services)))]
        via = pick(draw, nodes)
        paired = sum(1 for s in services if s["port"] == svc["port"]) > 1
        if "clusterIP" in svc and pick(draw, (False,) * 5 + (True,)):
            to: dict[str, Any] = {"address": svc["clusterIP"], "port": svc["port"], "via": via}
        elif svc["type"] == "NodePort" or (
                svc["type"] == "LoadBalancer" and pick(draw, (False, True))):
            to = {"node": via, "service": svc["name"]}
        else:
            addr = svc["loadBalancerIP"] if svc["type"] == "LoadBalancer" \
                else svc["externalIPs"][0]
            to = {"address": addr, "port": svc["port"], "via": via}
        if paired and "address" in to:
            to["protocol"] = svc["protocol"]
        stray = "service" in to and not paired and pick(draw, (False,) * 7 + (True,))
        if stray:  # the protocol this NodePort does not serve: the stack gets it
            to["protocol"] = "UDP" if svc["protocol"] == "TCP" else "TCP"
        client, port, packets = picks(draw, ("client0", "client1"), ports, (1, 2, 3, 4))
        flow = {"name": f"flow{i}", "client": client, "sourcePort": port, "to": to,
                "packets": packets, "svc": svc["name"]}
        _finish_flow(draw, flow, svc, via, pods, live, change, stray)
        flows.append(flow)
    for f in flows:
        del f["svc"]
        if "algorithm" in cilium["loadBalancer"]:
            f.pop("backend", None)  # Maglev's hash picks; a pin would stand in for it
    if small_maps:  # the reference datapath: real BPF lacks bpf_lxc's CT entry (idle, GC)
        _pod_egress(draw, a, cilium, clients, pods, flows, ports)  # drawn last
        from datapath.ewprograms import pod_services  # it imports this module

        pod_services(draw, cilium, pods, services, nodes, live, flows)  # bpf_lxc: reference
    if (cilium.get("loadBalancer", {}).get("acceleration")
            and cilium.get("bpf", {}).get("fragmentTracking") is False):
        for f in flows:  # XDP without tracking: not modelled yet (docs/fragments.md)
            f.pop("fragments", None)
            f.pop("fragmentOrder", None)
    doc: dict[str, Any] = {"cilium": cilium}
    fabric = _fabric(draw)
    if fabric:
        doc["fabric"] = fabric
    if dispatch == "ipip":
        for f in flows:  # a fragment's IPIP termination is not modelled (docs/ipip.md)
            f.pop("fragments", None)
            f.pop("fragmentOrder", None)
    _sizes(draw, doc, flows, fam == "ipv4", {p["name"] for p in pods})
    doc.update({
        "nodes": [{"name": n, "ip": a["node"].format(3 + i)} for i, n in enumerate(nodes)],
        "pods": pods, "services": services, "clients": clients, "flows": flows})
    return doc


# Request sizes (flows[].size, L3 bytes on the cluster's 1500-byte MTU): short mostly, one
# that fits every encapsulation, and a full-size one that DSR metadata pushes over.
SIZES: tuple[int | None, ...] = (None,) * 6 + (1400, 1500)
IP_OPTIONS = (0,) * 10 + (4, 36)  # IPv4 options: 36 leave no room for the DSR option


def _sizes(draw: Draw, doc: dict[str, Any], flows: list[dict[str, Any]], v4: bool,
           pods: set[str]) -> None:
    """Drawn last (earlier draws, and so older programs, stay as they were): PMTU discovery
    on or off, each service flow's request size and, in IPv4 on a fabric that keeps IP
    options, its options (drawn for a pod's egress flow too, but not set: sizes are a
    service flow's key)."""
    if pick(draw, (False, True)):
        doc["cilium"]["pmtuDiscovery"] = {"enabled": True}
    keeps = not doc.get("fabric", {}).get("dropsIPOptions", False)
    for f in flows:
        size, opts = picks(draw, SIZES, IP_OPTIONS)
        if f["client"] in pods:
            continue
        if size is not None and not f.get("fragments"):
            f["size"] = size
        if opts and v4 and keeps and not _ipip_at_xdp(doc["cilium"]):
            f["ipOptions"] = opts


def smaller(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One-step simplifications of a program, for shrinking a hand-written one (an explicit
    example has no choice sequence for Hypothesis to shrink): a flow dropped, a flow's
    packets cut to one or an optional key dropped, a fabric fact or a map size dropped."""
    flows = doc["flows"]
    for i in range(len(flows)):
        if len(flows) > 1:
            yield dict(doc, flows=flows[:i] + flows[i + 1:])
    for i, f in enumerate(flows):
        for key in ("packets", "idle", "close", "resume", "size", "ipOptions"):
            if key in f and f[key] not in (1, False):
                g = dict(f, packets=1) if key == "packets" else {
                    k: v for k, v in f.items() if k != key}
                yield dict(doc, flows=[*flows[:i], g, *flows[i + 1:]])
    if "fabric" in doc:
        yield {k: v for k, v in doc.items() if k != "fabric"}
    for key in ("bpf", "nodePort"):
        if key in doc["cilium"]:
            yield dict(doc, cilium={k: v for k, v in doc["cilium"].items() if k != key})


def _endpoint_change(draw: Draw, services: list[dict[str, Any]],
                     live: dict[str, list[str]], pods: list[str], left: set[tuple[str, str]]
                     ) -> tuple[dict[str, list[str]], list[str]] | None:
    """Sometimes an endpoint change before a flow: scale up (a pod joins), pod deletion or
    termination (a pod leaves, deleted or draining), or a replacement (one of each)."""
    kind = pick(draw, ("none",) * 5 + ("up", "delete", "terminate", "replace",
                                                 "all"))
    if kind == "none":
        return None
    svc = services[pick(draw, range(len(services)))]["name"]
    now = list(live[svc])
    out = [p for p in pods if p not in now]
    gone: list[str] = []
    if kind in ("up", "replace") and out:
        now.append(pick(draw, out))
    if kind in ("delete", "terminate", "replace") and now:
        gone = [pick(draw, now)]
        now.remove(gone[0])
    if kind == "all":  # scale to zero: every pod leaves (some terminating)
        gone, now = list(now), []
    left.update((svc, g) for g in gone)
    if now == live[svc]:
        return None
    live[svc] = now
    return {svc: now}, (gone if kind in ("terminate", "replace", "all") else [])


def _finish_flow(draw: Draw, flow: dict[str, Any], svc: dict[str, Any],
                 via: str, pods: list[dict[str, Any]], live: dict[str, list[str]],
                 change: tuple[dict[str, list[str]], list[str]] | None,
                 stray: bool = False) -> None:
    """Endpoint change, pinned backend (from the service's backends after the change),
    FIN close and idle time of one generated flow (`stray`: sent the protocol its NodePort
    does not serve, so no backend and no TCP ending)."""
    if change is not None:
        flow["setBackends"] = change[0]
        if change[1]:
            flow["terminating"] = change[1]
    eligible = [b for b in live[svc["name"]]
                if svc["externalTrafficPolicy"] == "Cluster"
                or next(p for p in pods if p["name"] == b)["node"] == via]
    if flow.get("backend") not in eligible:
        flow.pop("backend", None)
        if eligible and not stray:
            flow["backend"] = pick(draw, eligible)
    # TCP: FIN both ways, or half-closed, RST from either side, the backend's FIN
    ending, lost, idle = picks(draw, ENDINGS, (False,) * 9 + (True,), IDLE)
    if ending is not None and flow["to"].get("protocol", svc["protocol"]) == "TCP":
        flow["close"] = ending
    if lost:
        flow["lostReplies"] = True  # the backend's answers never reach its node
    if idle:
        flow["idle"] = idle
    # each datagram in 2-3 IP fragments, mostly in order; sometimes a later one overtakes
    count, order = picks(draw, FRAGMENTS, FRAG_ORDERS)
    if count:
        flow["fragments"] = count
        if order != "in-order":
            flow["fragmentOrder"] = order


def _pod_egress(draw: Draw, a: dict[str, str], cilium: dict[str, Any],
                clients: list[dict[str, Any]], pods: list[dict[str, Any]],
                flows: list[dict[str, Any]], ports: tuple[int, ...]) -> None:
    """Now and then bpf.masquerade with pod egress among the NodePort flows: pods (two may
    share a source port) to an outside host `server0`, each flow at a drawn place."""
    if not pick(draw, (False,) * 5 + (True,)):
        return
    cilium.setdefault("bpf", {})["masquerade"] = True
    clients.append({"name": "server0", "ip": a["ext"].format(10)})
    for i in range(pick(draw, (1, 2, 3))):
        pod, port, proto, packets, at = picks(
            draw, tuple(p["name"] for p in pods), (40000, 40000, *ports), ("TCP", "UDP"),
            (1, 2, 3), tuple(range(len(flows) + 1)))
        flows.insert(at, {"name": f"egress{i}", "client": pod, "sourcePort": port,
                          "to": {"address": a["ext"].format(10), "port": 443,
                                 "protocol": proto}, "packets": packets})


def _ipip_at_xdp(cilium: dict[str, Any]) -> bool:
    """IPIP at XDP copies the inner IPv4 header's IHL into the outer one: a request with IP
    options leaves malformed (docs/ipip.md), which the model does not follow."""
    lb = cilium["loadBalancer"]
    return bool(lb.get("dsrDispatch") == "ipip"
                and lb.get("acceleration", "disabled") != "disabled")
