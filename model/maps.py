"""BPF map abstractions: keys and entries laid out as Cilium lays them, with LRU capacity."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
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


class EqMap(Mapping[K, V]):
    """An immutable insertion-ordered mapping whose keys need only `==`.

    Concrete keys live in a dict. A key that cannot be hashed (a symbolic port during a
    proof) switches the map to a list of pairs searched with `==`, so every comparison the
    model makes is one the prover sees: the lookup is the model's, not a twin's.
    """

    __slots__ = ("_d", "_pairs")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        pairs = tuple(items.items() if isinstance(items, Mapping) else items)
        self._d: dict[K, V] | None
        self._pairs: tuple[tuple[K, V], ...]
        try:
            self._d, self._pairs = dict(pairs), ()
        except TypeError:
            self._d, self._pairs = None, pairs

    def _find(self, key: object) -> int:
        for i, (k, _) in enumerate(self._pairs):
            if k == key:
                return i
        return -1

    def __getitem__(self, key: K) -> V:
        if self._d is not None:
            try:
                return self._d[key]
            except TypeError:  # an unhashable key against concrete ones
                for k, v in self._d.items():
                    if k == key:
                        return v
                raise KeyError(key) from None
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return self._pairs[i][1]

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def get(self, key: K, default: Any = None) -> Any:
        """Mapping.get through __getitem__'s equality search."""
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[K]:
        if self._d is not None:
            return iter(self._d)
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._d) if self._d is not None else len(self._pairs)

    def __repr__(self) -> str:
        return f"EqMap({dict(self._d) if self._d is not None else list(self._pairs)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        if self._d is not None and isinstance(other, EqMap) and other._d is not None:
            return self._d == other._d  # concrete keys on both sides: the dicts decide
        return len(self) == len(other) and all(
            k in other and other[k] == v for k, v in self.items())

    __hash__ = None  # type: ignore[assignment]

    def without(self, key: K) -> EqMap[K, V]:
        """A copy with key removed (recency of the others kept)."""
        if self._d is not None:
            try:
                d = self._d.copy()
                d.pop(key, None)
                return _from_dict(d)
            except TypeError:
                pass
        return EqMap((k, v) for k, v in self.items() if k != key)

    def with_item(self, key: K, value: V, capacity: int | None = None) -> EqMap[K, V]:
        """A copy with key (re)inserted as most recent; the oldest goes when at capacity."""
        if self._d is not None:
            try:
                d = self._d.copy()
                d.pop(key, None)
                if capacity is not None and len(d) >= capacity:
                    del d[next(iter(d))]
                d[key] = value
                return _from_dict(d)
            except TypeError:
                pass
        rest = [(k, v) for k, v in self.items() if k != key]
        if capacity is not None and len(rest) >= capacity:
            rest = rest[1:]
        return EqMap([*rest, (key, value)])


def _from_dict(d: dict[K, V]) -> EqMap[K, V]:
    m: EqMap[K, V] = EqMap.__new__(EqMap)
    m._d, m._pairs = d, ()
    return m


def _sorted_ids(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(ids))


def _sorted_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(pairs))


def _frozen_map(value: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> EqMap[Any, Any]:
    return value if isinstance(value, EqMap) else EqMap(value)


@attrs.frozen(kw_only=True, eq=True)
class LruMap(Generic[K, V]):
    """A BPF_MAP_TYPE_LRU_HASH: bounded, lookups refresh, inserts into a full map evict.

    With `any_capacity` set it stands for a pair of maps split by protocol, as Cilium's CT
    is (conntrack_map.h: cilium_ct4_global holds TCP, CT_MAP_SIZE_TCP entries;
    cilium_ct_any4_global everything else, CT_MAP_SIZE_ANY; get_ct_map4 picks by nexthdr):
    `capacity` bounds the TCP keys, `any_capacity` the others, each evicting its own oldest.
    """

    capacity: int
    entries: EqMap[K, V] = attrs.field(factory=EqMap, converter=_frozen_map)
    any_capacity: int | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def get(self, key: K) -> V | None:
        """Lookup without touching recency (map_lookup_elem on a read-only path)."""
        got: V | None = self.entries.get(key)
        return got

    def touch(self, key: K) -> LruMap[K, V]:
        """Mark key most recently used, as an LRU map lookup does."""
        value = self.entries.get(key)
        if value is None:
            return self
        return attrs.evolve(self, entries=self.entries.with_item(key, value))

    def put(self, key: K, value: V) -> LruMap[K, V]:
        """map_update_elem(BPF_ANY): evicts the least recently used entry when full."""
        if self.any_capacity is None:
            return attrs.evolve(self, entries=self.entries.with_item(key, value, self.capacity))
        entries = self.entries
        if len(entries) >= min(self.capacity, self.any_capacity):
            tcp = _is_tcp(key)
            same = [k for k in entries if _is_tcp(k) is tcp and k is not key and k != key]
            if len(same) >= (self.capacity if tcp else self.any_capacity):
                entries = entries.without(same[0])
        return attrs.evolve(self, entries=entries.with_item(key, value))

    def put_noexist(self, key: K, value: V) -> LruMap[K, V] | None:
        """map_update_elem(BPF_NOEXIST): None when the key is already present."""
        if key in self.entries:
            return None
        return self.put(key, value)

    def delete(self, key: K) -> LruMap[K, V]:
        """map_delete_elem."""
        if key not in self.entries:
            return self
        return attrs.evolve(self, entries=self.entries.without(key))


def _is_tcp(key: object) -> bool:
    """Which of the split CT maps a key lives in (get_ct_map4: TCP or 'any')."""
    return getattr(key, "nexthdr", None) is Proto.TCP


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
    loopback: bool = False  # a hairpin connection (ct_state.loopback; model/eastwest.py)
    seen_non_syn: bool = False
    # TCP_FLAG_SYN of tx_flags_seen / rx_flags_seen (conntrack.h:116-117 in v1.20): the one
    # bit of those OR-accumulated flag bytes the datapath reads (ct_entry_seen_both_syns,
    # conntrack.h:139); the others only pace monitor notifications.
    tx_syn_seen: bool = False
    rx_syn_seen: bool = False
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
    affinity_timeout: int = 0  # SVC_FLAG_AFFINITY with this timeout (seconds); 0: none
    # cilium_lb4/6_maglev's inner array for this rev_nat_index (the agent's lookup table of
    # backend IDs); empty: random selection
    maglev: tuple[int, ...] = attrs.field(default=(), repr=False)

    @property
    def count(self) -> int:
        """svc->count."""
        return len(self.backend_slots)


ServiceKey = tuple[IPAddress, int, Proto]  # lb4_key {address, dport, proto}, scope EXT


@attrs.frozen(kw_only=True)
class LbMaps:
    """Per-node LB maps: services (lb4_services_v2), backends (lb4_backends_v3), revnat."""

    services: EqMap[ServiceKey, ServiceEntry] = attrs.field(converter=_frozen_map)
    backends: EqMap[int, Endpoint] = attrs.field(converter=_frozen_map)
    revnat: EqMap[int, Endpoint] = attrs.field(converter=_frozen_map)
    local_endpoints: frozenset[IPAddress] = frozenset()  # cilium_lxc
    # backend IDs flagged BE_STATE_TERMINATING, sorted: looked up with ==, never hashed
    terminating: tuple[int, ...] = attrs.field(default=(), converter=_sorted_ids)
    # cilium_lb_affinity_match: (rev_nat_id, backend_id) of each affinity frontend's active
    # backends, sorted; looked up with ==
    affinity_match: tuple[tuple[int, int], ...] = attrs.field(default=(), converter=_sorted_pairs)


AFFINITY_MAP_MAX = 65536  # CILIUM_LB_AFFINITY_MAP_MAX_ENTRIES (the agent's default, 64k)


@attrs.frozen(kw_only=True, order=True, cache_hash=True)
class AffinityKey:
    """struct lb4_affinity_key / lb6_affinity_key with netns_cookie = 0 (lb.h:130, 144)."""

    client: IPAddress
    rev_nat_id: int


@attrs.frozen(kw_only=True)
class AffinityVal:
    """struct lb_affinity_val (lb.h:153): the backend and when the client last used it."""

    backend_id: int
    last_used: int  # model seconds (bpf_mono_now)


def _affinity_map() -> LruMap[AffinityKey, AffinityVal]:
    return LruMap(capacity=AFFINITY_MAP_MAX)


FRAG_MAP_MAX = 8192  # CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES (--bpf-fragments-map-max default)


@attrs.frozen(kw_only=True, order=True, cache_hash=True)
class FragKey:
    """struct ipv4_frag_id / ipv6_frag_id (ipv4.h:16, ipv6.h:43): a datagram's identity."""

    saddr: IPAddress
    daddr: IPAddress
    id: int
    proto: Proto


@attrs.frozen(kw_only=True)
class FragPorts:
    """struct ipv4_frag_l4ports (ipv4.h:24): the first fragment's ports, packet order."""

    sport: int
    dport: int


def _frag_map() -> LruMap[FragKey, FragPorts]:
    return LruMap(capacity=FRAG_MAP_MAX)


@attrs.frozen(kw_only=True)
class TokenBucket:
    """struct ratelimit_value: the node's ICMPv6 error bucket (cilium_ratelimit)."""

    last_topup: int  # model seconds
    tokens: int


@attrs.frozen(kw_only=True)
class NodeState:
    """Everything one node's datapath keeps between packets."""

    lb: LbMaps
    ct: LruMap[CtTuple, CtEntry]
    snat: LruMap[NatTuple, NatEntry]
    icmp6_bucket: TokenBucket | None = None  # created by the first ICMPv6 reject
    # cilium_lb4_affinity / cilium_lb6_affinity (one LRU hash per family; the key's address
    # tells them apart): the client's backend per frontend, for sessionAffinity=ClientIP
    affinity: LruMap[AffinityKey, AffinityVal] = attrs.field(factory=_affinity_map)
    # cilium_ipv4_frag_datagrams / cilium_ipv6_frag_datagrams (one LRU per family; the key's
    # address tells them apart): a datagram's L4 ports for its later fragments
    frag: LruMap[FragKey, FragPorts] = attrs.field(factory=_frag_map)
