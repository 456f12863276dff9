"""East-west cells: a pod on node1 calls the service (ClusterIP, a NodePort, itself), P-EW-01/02.

The cell's document is the external client's one (properties/decode.py) with the client
replaced by a pod: `cli` on node1, or the backend `web-0` itself for a hairpin cell; a
ClusterIP cell's service is `type: ClusterIP` with the cell's VIP as its clusterIP and its
port left open. The checkers read what the model did (model/ewflows.py), like every other.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from model.flows import FlowTrace
from model.network import Action, Hop
from model.topology import ServiceType
from properties.configs import Config

if TYPE_CHECKING:  # properties.checks registers this module's checkers
    from properties.checks import Finding, Replay

CLIENT_POD = {"ipv4": "10.0.1.50", "ipv6": "fd00::10:1:0:32"}
KINDS = ("clusterip", "nodeport-own", "nodeport-other", "hairpin")


def ew_document(cfg: Config, doc: dict[str, Any]) -> dict[str, Any]:
    """The cell's document with a pod as every flow's client."""
    assert cfg.east_west in KINDS, cfg.east_west
    doc = copy.deepcopy(doc)
    svc = doc["services"][0]
    if cfg.svc_type is ServiceType.CLUSTERIP:
        svc["clusterIP"] = _vip(cfg)
        svc.pop("externalTrafficPolicy", None)
    client = "web-0"
    if cfg.east_west != "hairpin":
        client = "cli"
        doc["pods"].append({"name": "cli", "node": "node1", "ip": CLIENT_POD[cfg.family]})
    for flow in doc["flows"]:
        flow["client"] = client
        if cfg.east_west in ("clusterip", "hairpin"):
            flow["to"] = {"service": "web"}
        else:
            flow["to"] = {"node": "node1" if cfg.east_west == "nodeport-own" else "node2",
                          "service": "web"}
    doc.pop("clients", None)
    doc["cilium"]["socketLB"] = {"enabled": cfg.socket_lb}
    return doc


def _vip(cfg: Config) -> str:
    from properties.symworld import V4_HOSTS, V6_HOSTS  # it imports properties.decode

    return (V6_HOSTS if cfg.ipv6 else V4_HOSTS)["vip"]


def _receives(tr: FlowTrace) -> list[tuple[int, Hop]]:
    """Where the client pod's socket got an answer (its RECEIVE hops on the reply leg)."""
    return [(i, h) for i, h in enumerate(tr.hops)
            if h.action is Action.RECEIVE and h.at == tr.spec.client and h.reply
            and h.packet.proto is tr.spec.proto]


def ew01(rp: Replay) -> Finding | None:
    """P-EW-01: every answer a pod's socket receives comes from the address it called, to
    the address and port it called from."""
    from properties.checks import Finding

    for n, tr in enumerate(rp.traces):
        if not tr.spec.east_west:
            continue
        for i, h in _receives(tr):
            if h.packet.src != tr.spec.frontend or h.packet.dst != tr.spec.source:
                return Finding(flow=n, hop=i, message=(
                    f"pod {tr.spec.client} received {h.packet.src} -> {h.packet.dst}, "
                    f"having called {tr.spec.frontend} from {tr.spec.source}"))
    return None


def ew02(rp: Replay) -> Finding | None:
    """P-EW-02: a pod that reached itself through its service gets each answer back, from
    the service's address."""
    from properties.checks import Finding

    for n, tr in enumerate(rp.traces):
        if not tr.spec.east_west or tr.backend_pod != tr.spec.client:
            continue
        got = [(i, h) for i, h in _receives(tr) if h.packet.src == tr.spec.frontend
               and h.packet.dst == tr.spec.source]
        if len(got) < len(tr.backend_saw):
            i = len(tr.hops) - 1
            return Finding(flow=n, hop=i, message=(
                f"pod {tr.spec.client} reached itself {len(tr.backend_saw)} times through "
                f"{tr.spec.frontend} and got {len(got)} answers from it"))
    return None


def hairpinned(rp: Replay) -> bool:
    """A pod's request reached the pod itself (P-EW-02's premise)."""
    return any(tr.spec.east_west and tr.backend_pod == tr.spec.client for tr in rp.traces)


def answered(rp: Replay) -> bool:
    """A pod's socket received an answer (P-EW-01's premise)."""
    return any(tr.spec.east_west and _receives(tr) for tr in rp.traces)
