"""P-NAT-04: egress masquerade and NodePort SNAT in one SNAT map, by induction over both
allocators (properties/induction.nat02 with model/masq.py as an extra step) and a concrete
run of the model under port pressure that must show no shared tuple either."""

from __future__ import annotations

import time
from typing import Any

import attrs

from model.config import CiliumConfig
from model.faults import ModelFault
from model.maps import LbMaps, LruMap, NodeState
from model.masq import masquerade
from model.values import Endpoint, Packet, Proto
from properties.configs import Config
from properties.coreprops import Property
from properties.decode import Replayed, run_document
from properties.induction import CAPACITY, nat02
from properties.pktchecks import CHECKERS
from properties.results import PROVED, Result, counterexample_result
from properties.symexec import SymRandom

SEEDS = 8
SPORT = 65533  # inside the four-port NAT range: kept by the first pod, taken for the second
PRESSURE_MAX = 65531  # nodePort.range 30000-65531: SNAT ports 65532-65535 for every flow


def masq_step(cfg: CiliumConfig, snat: Any, pod: Endpoint, dst: Endpoint, addr: Any,
              proto: Proto, faults: frozenset[ModelFault]) -> Any:
    """A pod's packet to any destination through model.masq.masquerade (bpf_lxc's CT entry,
    then snat_v4_nat to IPV4_MASQUERADE = addr) on the open SNAT map; the map after."""
    st = NodeState(lb=LbMaps(services=(), revnat={}, backends={}),
                   ct=LruMap(capacity=CAPACITY), snat=snat)
    m = masquerade(cfg, st, Packet(src=pod, dst=dst, proto=proto), addr, now=1,
                   salt="node1", rand=SymRandom(), faults=faults)
    return m.state.snat


def document(cfg: Config, seed: int) -> dict[str, Any]:
    """The port-pressure run: a NodePort flow through node1, two pods on node1 to one outside
    server from one source port (the second must take another port), a third connection."""
    v6 = cfg.ipv6

    def a(x: str) -> str:
        return f"fd00::{x}" if v6 else f"10.0.{x}"

    proto = cfg.proto.name
    return {
        "cilium": {"version": cfg.version.value, "loadBalancer": {"mode": "snat"},
                   "nodePort": {"range": f"30000-{PRESSURE_MAX}"},
                   "bpf": {"masquerade": True}, "seed": seed},
        "nodes": [{"name": "node1", "ip": a("2.2")}, {"name": "node2", "ip": a("2.3")}],
        "pods": [{"name": "web-0", "node": "node2", "ip": a("3.10")},
                 {"name": "app-0", "node": "node1", "ip": a("1.20")},
                 {"name": "app-1", "node": "node1", "ip": a("1.21")}],
        "services": [{"name": "web", "type": "NodePort", "protocol": proto, "port": 80,
                      "targetPort": 8080, "nodePort": 30080, "backends": ["web-0"]}],
        "clients": [{"name": "client", "ip": "2001:db8::7" if v6 else "203.0.113.7"},
                    {"name": "server", "ip": "2001:db8::10" if v6 else "198.51.100.10"}],
        "flows": [
            {"name": "nodeport", "client": "client", "sourcePort": SPORT,
             "to": {"node": "node1", "service": "web"}, "packets": 1},
            *({"name": f"egress-{i}", "client": pod, "sourcePort": sport,
               "to": {"address": "2001:db8::10" if v6 else "198.51.100.10", "port": 443,
                      "protocol": proto}, "packets": 2}
              for i, (pod, sport) in enumerate((("app-0", SPORT), ("app-1", SPORT),
                                                ("app-0", SPORT + 1))))]}


def nat04(prop: Property, cfg: Config, faults: frozenset[ModelFault], ms: int) -> Result:
    """The induction, then the concrete port-pressure run; a violation there wins."""
    t0 = time.perf_counter()
    proof = nat02(prop, cfg, faults, ms, masq=masq_step)
    check = CHECKERS[prop.id]
    for seed in range(1, SEEDS + 1):
        doc = document(cfg, seed)
        rp = run_document(cfg, doc, faults, f"<{prop.id} port pressure>")
        finding = check(rp)
        if finding is not None:
            bound = "induction; model run under port pressure"
            return counterexample_result(attrs.evolve(proof, bound=bound),
                                         Replayed(doc=doc, replay=rp, finding=finding), t0,
                                         proof.queries)
    if proof.result != PROVED:
        return proof
    return attrs.evolve(proof, note=f"{proof.note}; model run under port pressure: "
                        f"{SEEDS} seeds, no shared tuple")
