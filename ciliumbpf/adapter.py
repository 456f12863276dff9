"""The `cilium-bpf` datapath: the user's compiled bpf_host.c/bpf_overlay.c behind datapath.adapter.

One node (ciliumbpf/node.py) = the project's harness (ciliumbpf/harness) compiled around
the user's tree for this NodeConfig, loaded with libbpf, its maps programmed as the agent
would, and every hook a BPF_PROG_TEST_RUN of cil_from_netdev / cil_to_netdev /
cil_from_overlay on an Ethernet frame. What test-run cannot show (where a redirect went,
the tunnel key handed to the Geneve device) is read back from the harness's capture map;
the clock and the random source are the harness's control maps, so `advance` moves CT
lifetimes and `backend` pins the slot lb4_select_backend_id_random() draws. Here: the
factory (the tree checked and the toolchain installed once, loaded nodes pooled by
configuration) and the divergences the cilium-bpf datapath declares.
"""

from __future__ import annotations

from ciliumbpf import programming as prog
from ciliumbpf.node import CiliumBpfNode
from ciliumbpf.toolchain import cilium_tree, ensure_toolchain
from datapath.config import NodeConfig
from datapath.difftest import Declared
from datapath.errors import ConfigError

POOL_PER_CONFIG = 3  # a generated program has at most 3 nodes
# Pooled nodes in all: each holds ~60 JIT-ed programs, and freeing thousands at once (process
# exit) queues one kernel work item per program; 6.18's bpf_prog_pack_free can then deadlock
# the system workqueue (vfree's purge waits behind 1024 blocked frees per CPU). Keep bursts small.
POOL_TOTAL = 8

# Differences between the model and Cilium that the difftest would count and print instead of
# stopping at (datapath.difftest.Declared), each with its Cilium line. The four the campaigns
# found (the VNI of a pod's packet and of IPv6 world traffic, a TCP entry created by a non-SYN,
# a closed entry's lifetime) were model errors, fixed in model/ and datapath/. One is a gap of
# the harness: a masqueraded pod's own CT_EGRESS entry is bpf_lxc's (handle_ipv4_from_lxc's
# ct_create4), a program the harness does not load; bpf_host creates none for a pod's packet
# (tc_nodeport_snat_conflict.c:369-371 asserts it). The model and the reference fold it in.
# Generated programs leave pod egress to the reference (the agent's GC would purge the pair
# here); the explicit masquerade program, which has no GC, runs on real BPF with it.
DECLARED: tuple[Declared, ...] = (
    Declared(name="bpf_lxc's CT entry of a masqueraded pod",
             cite="bpf_lxc.c handle_ipv4_from_lxc; tc_nodeport_snat_conflict.c:369-371",
             row=lambda what, _k, m, d: (
                 what == "ct" and d is None and m is not None and not m.node_port
                 and not m.dsr_internal and not m.rev_nat_index and not m.backend_id)),)


class Factory:
    """`--datapath cilium-bpf`: the tree (--cilium-src or $NODEPORT_CILIUM_SRC) is checked and
    the toolchain installed once, before any node is built; `cilium_version` tells the
    vector runner which vectors apply."""

    def __init__(self, cilium_src: str | None) -> None:
        self.tree = cilium_tree(cilium_src)
        ensure_toolchain()
        self.cilium_version = self.tree.version
        self.declared = DECLARED
        self._pool: list[tuple[tuple[tuple[str, str], ...], CiliumBpfNode]] = []
        self._keys: dict[int, tuple[tuple[str, str], ...]] = {}

    def __call__(self, config: NodeConfig, faults: frozenset[str] | set[str] | None = None
                 ) -> CiliumBpfNode:
        bad = set(faults or ()) | set(config.faults)
        if bad:
            raise ConfigError("cilium-bpf runs the Cilium tree's own code; the reference "
                              f"datapath's seeded faults do not apply: {', '.join(sorted(bad))}")
        key = tuple(sorted(prog.defines(config, False, self.tree.version).items()))
        for i, (k, node) in enumerate(self._pool):
            if k == key:  # loading is most of a node's cost: reuse a released one, reset
                del self._pool[i]
                node.reset(config)
                return node
        node = CiliumBpfNode(config, self.tree, self._release)
        self._keys[id(node)] = key
        return node

    def _release(self, node: CiliumBpfNode) -> bool:
        """Keep a closed node for reuse (oldest evicted first; at most POOL_TOTAL, and
        POOL_PER_CONFIG of one configuration); False: the caller frees it."""
        key = self._keys.get(id(node))
        if key is None or sum(1 for k, _n in self._pool if k == key) >= POOL_PER_CONFIG:
            self._keys.pop(id(node), None)
            return False
        if len(self._pool) >= POOL_TOTAL:
            _k, old = self._pool.pop(0)
            self._keys.pop(id(old), None)
            old.free()
        self._pool.append((key, node))
        return True

    def free(self) -> None:
        """Free every pooled node."""
        while self._pool:
            _k, node = self._pool.pop()
            self._keys.pop(id(node), None)
            node.free()


def factory(cilium_src: str | None) -> Factory:
    """The `cilium-bpf` factory for a tree path (None: $NODEPORT_CILIUM_SRC)."""
    return Factory(cilium_src)


def make_node(config: NodeConfig, faults: frozenset[str] | set[str] | None = None
              ) -> CiliumBpfNode:
    """`--datapath ciliumbpf.adapter:make_node`: the tree from $NODEPORT_CILIUM_SRC."""
    return factory(None)(config, faults)
