"""Explicit difftest programs: fixed two-node scenarios for what generation seldom reaches."""

from __future__ import annotations

from typing import Any

from datapath.programs import ADDR, _ipip


def mtu_program(combo: tuple[str, str, str, str], version: str = "1.20",
                pmtu: bool = True) -> dict[str, Any]:
    """Explicit: TCP requests with PMTU discovery on (or off): a full-size SYN DSR would
    push over the MTU, a connection that fits, one at the option's boundary, and
    (IPv4) one with no room for the option and a full-size one with an IPv4 option."""
    flows = [_flow("big", "client0", 40000, size=1500),
             _flow("fits", "client0", 40001, size=1400, packets=2),
             _flow("edge", "client0", 40002, size=1500 - (24 if combo[0] == "ipv6" else 8))]
    if combo[0] == "ipv4":  # no room for the option; an option that moves the quote's port
        flows += [_flow("opts", "client0", 40003, ipOptions=36),
                  _flow("opts-big", "client0", 40004, ipOptions=4, size=1500)]
    cilium = {"pmtuDiscovery": {"enabled": True}} if pmtu else {}
    return _two_nodes(combo, version, "TCP", flows, cilium=cilium)


def mtu_off_program(combo: tuple[str, str, str, str], version: str = "1.20"
                    ) -> dict[str, Any]:
    """mtu_program with PMTU discovery off (the agent's default)."""
    return mtu_program(combo, version, pmtu=False)


def masq_program(combo: tuple[str, str, str, str], version: str = "1.20") -> dict[str, Any]:
    """Explicit: bpf.masquerade beside NodePort SNAT on node2 with four SNAT ports
    (nodePort.range 30000-65531): pod1 and pod0 (node2) open connections to the outside
    host client1 from one source port (the second takes another port), pod1 a UDP one;
    NodePort flows through node1 and node2 in between, all replies back where they began."""
    to2 = {"node": "node2", "service": "web"}
    out = {"address": ADDR[combo[0]]["client"].format(8), "port": 443}
    doc = _two_nodes(combo, version, "TCP", [
        _flow("np1", "client0", 40000, packets=2),
        {"name": "egress-a", "client": "pod1", "sourcePort": 65533, "to": out, "packets": 2},
        _flow("np2", "client0", 40001, to=to2),
        {"name": "egress-b", "client": "pod0", "sourcePort": 65533, "to": out, "packets": 2},
        {"name": "egress-udp", "client": "pod1", "sourcePort": 5353,
         "to": {**out, "protocol": "UDP"}, "packets": 1},
        _flow("np3", "client1", 65533, packets=2)],
        cilium={"bpf": {"masquerade": True}, "nodePort": {"range": "30000-65531"}})
    return doc


def _ipip_two_nodes(doc: dict[str, Any], vip: str, version: str) -> None:
    """IPIP dispatch reaches a backend through a frontend its node serves too (docs/ipip.md):
    `web` becomes a LoadBalancer VIP and the flows to node1's NodePort go to the VIP via
    node1; v1.18 under XDP, v1.20 terminating. XDP's outer header copies the inner's
    fragment bits and IHL: no fragments or IP options in v1.18 (nor in generated programs
    under XDP)."""
    _ipip(doc["cilium"], True)
    svc = doc["services"][0]
    svc.update({"type": "LoadBalancer", "loadBalancerIP": vip})
    for f in doc["flows"]:
        to = f.get("to", {})
        if "service" in to and "node" in to:
            f["to"] = {"address": vip, "port": svc["port"], "via": to["node"],
                       **({"protocol": to["protocol"]} if "protocol" in to else {})}
        if version == "1.18":
            f.pop("fragments", None)
            f.pop("fragmentOrder", None)
            f.pop("ipOptions", None)


def _two_nodes(combo: tuple[str, str, str, str], version: str, proto: str,
               flows: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    """node1 (the entry) and node2 (pod0's node), one NodePort service `web` on pod0."""
    fam, mode, dispatch, routing = combo
    a = ADDR[fam]
    doc: dict[str, Any] = {
        "cilium": {"version": version, "loadBalancer": {"mode": mode, "dsrDispatch": dispatch},
                   "routingMode": routing, "tunnelProtocol": "geneve", "seed": 0},
        "nodes": [{"name": "node1", "ip": a["node"].format(3)},
                  {"name": "node2", "ip": a["node"].format(4)}],
        "pods": [{"name": "pod0", "node": "node2", "ip": a["pod"].format(2, 10)},
                 {"name": "pod1", "node": "node2", "ip": a["pod"].format(2, 11)}],
        "services": [{"name": "web", "type": "NodePort", "protocol": proto, "port": 80,
                      "targetPort": 8080, "nodePort": 30080, "backends": ["pod0"]}],
        "clients": [{"name": "client0", "ip": a["client"].format(7)},
                    {"name": "client1", "ip": a["client"].format(8)}],
        "flows": flows}
    if dispatch == "ipip":
        _ipip_two_nodes(doc, a["vip"].format(10), version)
    for key, value in top.items():  # merged one level deeper: cilium.loadBalancer keeps mode
        into = doc.setdefault(key, {})
        for k, v in value.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                into[k] = {**into[k], **v}
            else:
                into[k] = v
    return doc


def _flow(name: str, client: str, port: int, **more: Any) -> dict[str, Any]:
    return {"name": name, "client": client, "sourcePort": port,
            "to": {"node": "node1", "service": "web"}, "packets": 1, "backend": "pod0", **more}


def exhaust_program(combo: tuple[str, str, str, str], version: str = "1.20"
                    ) -> dict[str, Any]:
    """Explicit: the single SNAT port 65535 (nodePort.range 30000-65534). A clamped client
    port takes it, a second client wanting it exhausts the range (32 retries, DROP_NAT_NO_
    MAPPING), a client whose own port is 65535 (keep-port) collides too; on the DSR
    paths the fabric drops IP options instead (hybrid SNATs, so its example is UDP)."""
    proto = "UDP" if combo[1] == "hybrid" else "TCP"
    return _two_nodes(combo, version, proto, [
        _flow("first", "client0", 40000, packets=2),
        _flow("second", "client1", 40000),
        _flow("kept", "client1", 65535),
        _flow("again", "client0", 40000)],
        cilium={"nodePort": {"range": "30000-65534"}}, fabric={"dropsIPOptions": True})


def evict_program(combo: tuple[str, str, str, str], version: str = "1.20") -> dict[str, Any]:
    """Explicit: maps of two entries (bpf.ctTcpMax, ctAnyMax, natMax 2): every new
    connection evicts the least recently used CT entry and SNAT pair; then the first
    connection comes back (its SNAT pair and CT entries gone or refreshed), and two
    clients send from the SNAT range's first port 32768 (kept, then a collision)."""
    proto = "UDP" if combo[1] == "hybrid" else "TCP"
    return _two_nodes(combo, version, proto, [
        _flow("a", "client0", 40000, packets=2),
        _flow("b", "client1", 33000),
        _flow("c", "client0", 32767),
        _flow("a-again", "client0", 40000, packets=2),
        _flow("d", "client0", 32768),
        _flow("e", "client1", 32768)],
        cilium={"bpf": {"ctTcpMax": 2, "ctAnyMax": 2, "natMax": 2}})


def endings_program(combo: tuple[str, str, str, str], version: str = "1.20"
                    ) -> dict[str, Any]:
    """Explicit: one TCP connection closed every way in turn, each time opened again by
    a SYN on its closing entry (closed one way by the client's FIN, one way by the
    backend's FIN, both ways by the client's RST, by the backend's RST); then a second
    connection whose replies are lost, reset by its client, and opened again."""
    return _two_nodes(combo, version, "TCP", [
        _flow("half", "client0", 40000, packets=2, close="half"),
        _flow("after-half", "client0", 40000, packets=2, close="backend-fin"),
        _flow("after-backend-fin", "client0", 40000, packets=2, close="rst"),
        _flow("after-rst", "client0", 40000, packets=2, close="backend-rst"),
        _flow("after-backend-rst", "client0", 40000),
        _flow("lost", "client1", 40001, packets=2, close="rst", lostReplies=True),
        _flow("after-lost", "client1", 40001)])


def affinity_program(combo: tuple[str, str, str, str], version: str = "1.20"
                     ) -> dict[str, Any]:
    """sessionAffinity ClientIP (60 s): a second connection from another port keeps the
    first one's backend against a pin to the other; past the timeout the pin wins; node2
    keeps its own entry; a backend leaving (terminating: still in the backend map) voids the
    entry that names it, through cilium_lb_affinity_match alone."""
    to = {"node": "node1", "service": "web"}
    doc = _two_nodes(combo, version, "TCP", [
        _flow("first", "client0", 40000, packets=2, to=to, backend="pod1"),
        _flow("second-port", "client0", 40001, to=to, backend="pod0"),
        _flow("after-timeout", "client0", 40002, to=to, idle=61, backend="pod0"),
        _flow("other-node", "client0", 40003, to={"node": "node2", "service": "web"},
              backend="pod1"),
        _flow("backend-left", "client0", 40004, to=to, setBackends={"web": ["pod1"]},
              terminating=["pod0"], backend="pod1")])
    doc["services"][0].update(backends=["pod0", "pod1"], sessionAffinity="ClientIP",
                              sessionAffinityTimeoutSeconds=60)
    return doc


def icmp_program(combo: tuple[str, str, str, str], version: str = "1.20") -> dict[str, Any]:
    """Explicit: the backend answers with ICMP errors quoting what it received (under
    bpf.masquerade, so the LB node reverse-SNATs them where Cilium does): frag-needed
    (IPv6: packet too big), port unreachable (IPv6: not reverse-SNATed, punted), then a
    datagram answered normally on the same tuple."""
    errors = ("frag-needed", "port-unreachable")
    flows = [_flow(f"err-{e}", "client0", 40000 + i, backendError=e)
             for i, e in enumerate(errors)]
    flows.append(_flow("answered", "client0", 40000, packets=2))
    return _two_nodes(combo, version, "UDP", flows, cilium={"bpf": {"masquerade": True}})


def fragment_program(combo: tuple[str, str, str, str], version: str = "1.20"
                     ) -> dict[str, Any]:
    """Explicit: UDP datagrams in IP fragments (tracking on): three fragments in order,
    twice; four with the last overtaking the middle ones; a later fragment arriving before
    its first (DROP_FRAG_NOT_FOUND); then the same tuple unfragmented. v1.18 drops every
    IPv6 fragment (no IPv6 tracking)."""
    return _two_nodes(combo, version, "UDP", [
        _flow("in-order", "client0", 40000, packets=2, fragments=3),
        _flow("first-last", "client1", 40001, fragments=4, fragmentOrder="first-last"),
        _flow("overtaken", "client0", 40002, fragments=2, fragmentOrder="reversed"),
        _flow("whole", "client0", 40002)])


def maglev_program(combo: tuple[str, str, str, str], version: str = "1.20"
                   ) -> dict[str, Any]:
    """Explicit: loadBalancer.algorithm maglev (a 251-entry table), two backends, no pins:
    four connections through node1, the same four through node2 (ECMP moved them: no CT
    entry there, the hash picks), then pod0 leaves and a new connection through node2."""
    to1, to2 = {"node": "node1", "service": "web"}, {"node": "node2", "service": "web"}
    ports = (40000, 40001, 33000, 5000)
    flows = [{k: v for k, v in _flow(f"{n}-{p}", "client0", p, to=to).items()
              if k != "backend"} for n, to in (("node1", to1), ("node2", to2)) for p in ports]
    flows.append({k: v for k, v in _flow("after-leave", "client1", 40000, to=to2,
                                         setBackends={"web": ["pod1"]}).items()
                  if k != "backend"})
    doc = _two_nodes(combo, version, "TCP", flows,
                     cilium={"loadBalancer": {"algorithm": "maglev"},
                             "maglev": {"tableSize": 251}})
    doc["services"][0]["backends"] = ["pod0", "pod1"]
    return doc


# The explicit examples after the drain example: (program, needs small maps).
EXPLICIT = ((exhaust_program, False), (evict_program, True), (endings_program, False),
            (affinity_program, False), (maglev_program, False), (masq_program, False),
            (mtu_program, False), (mtu_off_program, False), (fragment_program, False))


def drain_program(combo: tuple[str, str, str, str], version: str = "1.20") -> dict[str, Any]:
    """The explicit example every configuration starts with: a connection whose backend
    is replaced and left terminating keeps draining to it (ACKs, lb4_local keeps the
    backend), is then opened again with a SYN (which must not stay on a terminating
    backend), then a fresh connection."""
    to = {"node": "node1", "service": "web"}
    doc = _two_nodes(combo, version, "TCP", [
        {"name": "open", "client": "client0", "sourcePort": 40000, "to": to,
         "packets": 1, "backend": "pod0"},
        {"name": "drain", "client": "client0", "sourcePort": 40000, "to": to,
         "packets": 2, "resume": True, "setBackends": {"web": ["pod1"]},
         "terminating": ["pod0"]},
        {"name": "reopen", "client": "client0", "sourcePort": 40000, "to": to,
         "packets": 2, "setBackends": {"web": ["pod1"]}, "terminating": ["pod0"]},
        {"name": "fresh", "client": "client0", "sourcePort": 40001, "to": to,
         "packets": 1, "setBackends": {"web": ["pod1", "pod0"]}, "backend": "pod0"}])
    doc["clients"] = doc["clients"][:1]
    return doc
