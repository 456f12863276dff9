"""Generated pod service flows (east-west) for difftest programs: ClusterIP, NodePort, hairpin.

Drawn last, after every NodePort flow and endpoint change, so a flow's pinned backend is one
of its service's backends as they stand then. Socket-LB on or off (on only with pins: the
model's and the harness's connect() draw from different random sources). Left out: another
node's NodePort outside SNAT mode (a DSR answer from a backend on the calling pod's own
node, see docs/east-west.md) and an eTP=Local NodePort (whose per-node slots a pin may
miss).
"""

from __future__ import annotations

from typing import Any

from datapath.programs import Draw, pick, picks

PORTS = (40000, 40100, 50000)


def pod_services(draw: Draw, cilium: dict[str, Any], pods: list[dict[str, Any]],
                 services: list[dict[str, Any]], nodes: list[str],
                 live: dict[str, list[str]], flows: list[dict[str, Any]]) -> None:
    """Now and then 1-2 pods calling a service by its ClusterIP or a NodePort, the pinned
    backend sometimes the calling pod itself (hairpin)."""
    if not pick(draw, (False, False, False, True)):
        return
    snat = cilium["loadBalancer"]["mode"] == "snat"
    maglev = "algorithm" in cilium["loadBalancer"]
    targets: list[tuple[str, str | None]] = []
    for s in services:
        if "clusterIP" in s:
            targets.append((s["name"], None))
        if "nodePort" in s and s.get("externalTrafficPolicy") != "Local":
            targets += [(s["name"], n) for n in nodes[:1 if not snat else None]]
    if not targets:
        return
    cilium["socketLB"] = {"enabled": not maglev and pick(draw, (False, True))}
    for i in range(pick(draw, (1, 2))):
        (name, node), port, packets, own = picks(
            draw, tuple(targets), PORTS, (1, 2, 3), (False, False, True))
        backends = live[name]
        pod = pick(draw, tuple(p["name"] for p in pods))
        if own and backends:  # a backend calls its own service
            pod = pick(draw, tuple(backends))
        if not snat and node is not None and node != _node_of(pods, pod):
            node = _node_of(pods, pod)  # only its own node's NodePort outside SNAT mode
        to: dict[str, Any] = {"service": name} if node is None else {"node": node,
                                                                      "service": name}
        flow: dict[str, Any] = {"name": f"pod-call{i}", "client": pod, "sourcePort": port,
                                "to": to, "packets": packets}
        if backends and not maglev:
            flow["backend"] = pod if own and pod in backends else pick(draw, tuple(backends))
        flows.append(flow)


def _node_of(pods: list[dict[str, Any]], pod: str) -> str:
    return str(next(p["node"] for p in pods if p["name"] == pod))
