"""maps.py behaviour only surviving mutants showed unpinned: LRU overwrites, zeroed CT fields."""

from __future__ import annotations

from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.conntrack import WORLD_IPV4_ID
from datapath.host import make_node
from datapath.maps import BPF_ANY, TUPLE_F_SERVICE, CtEntry, LruHashMap
from datapath.spec import build_packet
from datapath.vecschema import map_entry, map_key


def test_lru_overwrite_of_existing_key_is_a_use() -> None:
    """Kernel htab_lru_map_update_elem replaces an existing key by a fresh LRU node and
    bpf_lru_node_set_ref()s it: the overwritten entry is the most recently used, so the next
    insert into the full map evicts the other, untouched entry (no lookup in between)."""
    m: LruHashMap[int, str] = LruHashMap("t", 2, refresh=False)
    assert m.update(1, "a") and m.update(2, "b")
    assert m.update(1, "a2", BPF_ANY)  # overwrite, the map stays at 2 entries
    assert len(m) == 2
    assert m.update(3, "c")  # full: evicts the least recently used, which is now 2
    assert 2 not in m
    assert m.lookup(1) == "a2" and m.lookup(3) == "c"
    assert [k for k, _ in m.items()] == [1, 3]


def test_udp_ct_entries_start_zeroed_and_service_entry_has_no_identity() -> None:
    """ct_create4 starts from `struct ct_entry entry = { }`: a non-TCP tuple ORs no SYN into
    seen_flags, so tx/rx_flags_seen stay 0 (and __ct_lookup adds no flags for UDP);
    ct_create_fill_entry copies src_sec_id from the ct_state, which nodeport_lb4 zeroes for the
    CT_SERVICE entry (ct_state_svc = {}) and sets to WORLD_IPV4_ID for its CT_EGRESS entry."""
    node = make_node(NodeConfig(
        mode="snat",
        services=(ServiceConfig(frontend="172.16.10.1", port=53, rev_nat_index=1,
                                backends=(124,), proto="udp"),),
        backends=(BackendConfig(id=124, address="192.168.0.1", port=5353, proto="udp"),)))
    pkt = {"ip": {"src": "110.0.11.1", "dst": "172.16.10.1"}, "udp": {"sport": 111, "dport": 53}}
    for _ in range(2):  # the create, then a lookup hit on the same entries
        node.run("from-netdev", build_packet(pkt))
    rows = list(node.maps.ct4_any.items())
    service = [e for k, e in rows if k.flags & TUPLE_F_SERVICE]
    egress = [e for _k, e in rows if e.node_port]
    assert len(service) == 1 and len(egress) == 1
    assert all((e.tx_flags_seen, e.rx_flags_seen) == (0, 0) for _k, e in rows)
    assert service[0].src_sec_id == 0 and service[0].rev_nat_index == 1
    assert egress[0].src_sec_id == WORLD_IPV4_ID


def test_seeded_ct_entry_without_lifetime_is_expired() -> None:
    """A vector `seed` writes a zero-initialised struct ct_entry with only the named fields
    set, so an entry naming no lifetime has lifetime 0: the agent's CT GC (entries whose
    lifetime is before now) removes it one second later, while a named lifetime keeps its own."""
    node = make_node(NodeConfig(mode="snat"))
    ct = node.maps.by_name("cilium_ct4_global")
    tup = {"saddr": "110.0.11.1", "daddr": "172.16.10.1", "sport": 80, "dport": 111,
           "nexthdr": 6, "flags": TUPLE_F_SERVICE}
    bare = map_key("cilium_ct4_global", tup)
    kept = map_key("cilium_ct4_global", dict(tup, dport=112))
    seeded = map_entry("cilium_ct4_global", {"backend_id": 124, "rev_nat_index": 1})
    assert isinstance(seeded, CtEntry)
    assert (seeded.lifetime, seeded.tx_flags_seen, seeded.src_sec_id) == (0, 0, 0)
    assert ct.update(bare, seeded)
    assert ct.update(kept, map_entry("cilium_ct4_global", {"lifetime": 5, "rev_nat_index": 1}))
    node.advance(1)
    assert node.gc() == 1
    assert bare not in ct and kept in ct
