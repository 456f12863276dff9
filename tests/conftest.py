"""Shared helpers: the article's cluster as a scenario document, and running the CLI."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

from model.flows import FlowTrace
from model.network import Action, Hop

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NODEPORT = Path(sys.executable).parent / "nodeport"

# The article's addresses, and their IPv6 twins in 2001:db8::/32.
ADDRS: dict[str, dict[str, str]] = {
    "ipv4": {"node1": "192.168.2.3", "node2": "192.168.2.4", "node3": "192.168.2.5",
             "local": "10.0.1.10", "remote": "10.0.2.10", "client": "203.0.113.7",
             "client2": "203.0.113.8", "vip": "172.16.10.2", "ext": "198.51.100.20",
             "cluster": "10.96.0.10"},
    "ipv6": {"node1": "2001:db8:2::3", "node2": "2001:db8:2::4", "node3": "2001:db8:2::5",
             "local": "2001:db8:10:1::10", "remote": "2001:db8:10:2::10",
             "client": "2001:db8:ff00::7", "client2": "2001:db8:ff00::8",
             "vip": "2001:db8:16:10::2", "ext": "2001:db8:51:100::20",
             "cluster": "2001:db8:96::10"},
}
SVC_PORT, TARGET_PORT, NODE_PORT = 80, 8080, 30080


def build_doc(*, mode: str = "snat", family: str = "ipv4", placement: str = "remote",
              svc_type: str = "NodePort", proto: str = "TCP", version: str = "1.18",
              dispatch: str = "opt", routing: str = "native", tunnel: str = "vxlan",
              packets: int = 3, source_port: int = 40000, seed: int = 1,
              service: dict[str, Any] | None = None, cilium: dict[str, Any] | None = None,
              fabric: dict[str, bool] | None = None) -> dict[str, Any]:
    """The article's three-node cluster with one service and one flow entering at node1.

    placement 'remote' puts the backend on node2, 'local' on node1, 'none' leaves the
    service without backends. `service` and `cilium` entries override the defaults.
    """
    a = ADDRS[family]
    backend = {"remote": ["web-remote"], "local": ["web-local"], "none": []}[placement]
    svc: dict[str, Any] = {"name": "web", "type": svc_type, "protocol": proto,
                           "port": SVC_PORT, "targetPort": TARGET_PORT, "backends": backend}
    to: dict[str, Any]
    if svc_type in ("NodePort", "LoadBalancer"):
        svc["nodePort"] = NODE_PORT
    if svc_type == "LoadBalancer":
        svc["loadBalancerIP"] = a["vip"]
        to = {"address": a["vip"], "port": SVC_PORT, "via": "node1"}
    elif svc_type == "ExternalIP":
        svc["externalIPs"] = [a["ext"]]
        to = {"address": a["ext"], "port": SVC_PORT, "via": "node1"}
    else:
        to = {"node": "node1", "service": "web"}
    svc.update(service or {})
    cfg: dict[str, Any] = {"version": version,
                           "loadBalancer": {"mode": mode, "dsrDispatch": dispatch},
                           "routingMode": routing, "tunnelProtocol": tunnel, "seed": seed}
    cfg.update(cilium or {})
    return {
        "cilium": cfg,
        "fabric": dict(fabric or {}),
        "nodes": [{"name": n, "ip": a[n]} for n in ("node1", "node2", "node3")],
        "pods": [{"name": "web-local", "node": "node1", "ip": a["local"]},
                 {"name": "web-remote", "node": "node2", "ip": a["remote"]}],
        "services": [svc],
        "clients": [{"name": "client", "ip": a["client"]},
                    {"name": "client2", "ip": a["client2"]}],
        "flows": [{"name": "flow", "client": "client", "sourcePort": source_port, "to": to,
                   "packets": packets}],
    }


def clone(doc: dict[str, Any]) -> dict[str, Any]:
    """A deep copy to mutate without touching a shared document."""
    return copy.deepcopy(doc)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `nodeport` entry point as a user would."""
    return subprocess.run([str(NODEPORT), *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=60)


def legs(tr: FlowTrace) -> list[list[Hop]]:
    """The hops of each client packet (request and its reply), split at each send."""
    out: list[list[Hop]] = []
    for hop in tr.hops:
        if hop.action is Action.SEND:
            out.append([])
        out[-1].append(hop)
    return out
