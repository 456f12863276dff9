"""BPF map abstractions: keys and entries laid out as Cilium lays them, with LRU capacity."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import attrs

from model.values import Endpoint, IPAddress, Proto

K = TypeVar("K")
V = TypeVar("V")


class TupleFlags(enum.IntFlag):
    """ipv4_ct_tuple.flags (bpf/lib/common.h); NAT_DIR_EGRESS/INGRESS reuse OUT/IN."""

    OUT = 0
    IN = 1
    RELATED = 2
    SERVICE = 4


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True, eq=True)
class LruMap(Generic[K, V]):
    """A BPF_MAP_TYPE_LRU_HASH: bounded, lookups refresh, inserts into a full map evict."""

    capacity: int
    entries: Mapping[K, V] = attrs.field(factory=dict, converter=_frozen_map)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def get(self, key: K) -> V | None:
        """Lookup without touching recency (map_lookup_elem on a read-only path)."""
        return self.entries.get(key)

    def touch(self, key: K) -> LruMap[K, V]:
        """Mark key most recently used, as an LRU map lookup does."""
        if key not in self.entries:
            return self
        d = self.entries.copy()  # type: ignore[attr-defined]  # dict.copy keeps hashes
        d[key] = d.pop(key)
        return attrs.evolve(self, entries=d)

    def put(self, key: K, value: V) -> LruMap[K, V]:
        """map_update_elem(BPF_ANY): evicts the least recently used entry when full."""
        d = self.entries.copy()  # type: ignore[attr-defined]  # dict.copy keeps hashes
        d.pop(key, None)
        if len(d) >= self.capacity:
            del d[next(iter(d))]
        d[key] = value
        return attrs.evolve(self, entries=d)

    def put_noexist(self, key: K, value: V) -> LruMap[K, V] | None:
        """map_update_elem(BPF_NOEXIST): None when the key is already present."""
        if key in self.entries:
            return None
        return self.put(key, value)

    def delete(self, key: K) -> LruMap[K, V]:
        """map_delete_elem."""
        if key not in self.entries:
            return self
        d = self.entries.copy()  # type: ignore[attr-defined]  # dict.copy keeps hashes
        del d[key]
        return attrs.evolve(self, entries=d)


@attrs.frozen(kw_only=True, order=True, cache_hash=True)
class CtTuple:
    """struct ipv4_ct_tuple / ipv6_ct_tuple: addresses name the reply, ports the original."""

    daddr: IPAddress
    saddr: IPAddress
    dport: int
    sport: int
    nexthdr: Proto
    flags: TupleFlags


@attrs.frozen(kw_only=True)
class CtEntry:
    """struct ct_entry (the fields the NodePort path reads and writes)."""

    backend_id: int = 0
    rev_nat_index: int = 0
    node_port: bool = False
    dsr_internal: bool = False
    nat_addr: IPAddress | None = None  # v1.19+: DSR frontend stored in the entry
    nat_port: int = 0
    seen_non_syn: bool = False
    tx_closing: bool = False
    rx_closing: bool = False
    lifetime: int = 0  # absolute expiry, in model seconds


@attrs.frozen(kw_only=True, order=True, cache_hash=True)
class NatTuple:
    """Key of cilium_snat_v4_external: plain packet order plus NAT_DIR_EGRESS/INGRESS."""

    saddr: IPAddress
    daddr: IPAddress
    sport: int
    dport: int
    nexthdr: Proto
    flags: TupleFlags


@attrs.frozen(kw_only=True)
class NatEntry:
    """struct ipv4_nat_entry: to_saddr/to_sport (OUT) or to_daddr/to_dport (IN)."""

    to_addr: IPAddress
    to_port: int
    created: int = 0
    needs_ct: bool = False


@attrs.frozen(kw_only=True)
class ServiceEntry:
    """A cilium_lb4_services_v2 master slot for one frontend on one node."""

    rev_nat_index: int
    backend_slots: tuple[int, ...]  # backend IDs in slots 1..count
    routable: bool
    etp_local: bool
    dsr: bool  # SVC_FLAG_FWD_MODE_DSR: this frontend takes the DSR path
    source_ranges: tuple[object, ...] = ()
    all_backends: tuple[int, ...] = ()  # the service's backends on every node (agent view)

    @property
    def count(self) -> int:
        """svc->count."""
        return len(self.backend_slots)


ServiceKey = tuple[IPAddress, int, Proto]  # lb4_key {address, dport, proto}, scope EXT


@attrs.frozen(kw_only=True)
class LbMaps:
    """Per-node LB maps: services (lb4_services_v2), backends (lb4_backends_v3), revnat."""

    services: Mapping[ServiceKey, ServiceEntry] = attrs.field(converter=_frozen_map)
    backends: Mapping[int, Endpoint] = attrs.field(converter=_frozen_map)
    revnat: Mapping[int, Endpoint] = attrs.field(converter=_frozen_map)
    local_endpoints: frozenset[IPAddress] = frozenset()  # cilium_lxc
    terminating: frozenset[int] = frozenset()  # backend IDs flagged BE_STATE_TERMINATING


@attrs.frozen(kw_only=True)
class NodeState:
    """Everything one node's datapath keeps between packets."""

    lb: LbMaps
    ct: LruMap[CtTuple, CtEntry]
    snat: LruMap[NatTuple, NatEntry]
