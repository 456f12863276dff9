"""CT packet/byte accounting (bpf.ctAccounting): off by default, frames counted with their
Ethernet header when on, and the counts visible to vectors and dumps."""

from __future__ import annotations

import pytest

from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.host import make_node
from datapath.spec import build_packet


@pytest.mark.parametrize("on", [False, True])
def test_counts_only_when_switched_on(on: bool) -> None:
    node = make_node(NodeConfig(ct_accounting=on, services=(
        ServiceConfig(frontend="172.16.10.2", port=80, rev_nat_index=1, backends=(1,)),),
        backends=(BackendConfig(id=1, address="192.168.0.2", port=8080),)))
    sizes = []
    for flags, payload in (("S", ""), ("A", "x" * 100), ("A", "y")):
        pkt = build_packet({"ip": {"src": "110.0.11.1", "dst": "172.16.10.2"},
                            "tcp": {"sport": 111, "dport": 80, "flags": flags},
                            "payload": payload})
        sizes.append(len(pkt) + 14)
        node.run("from-netdev", pkt)
    rows = node.dump(["cilium_ct4_global"])["cilium_ct4_global"]
    assert len(rows) == 2  # CT_SERVICE and the nodeport CT_EGRESS entry
    for _key, val in rows:
        assert (val["packets"], val["bytes"]) == ((3, sum(sizes)) if on else (0, 0))
    assert sizes == [54, 154, 55]
