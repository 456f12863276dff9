"""BPF maps of one node, keyed exactly like Cilium's structs (lb.h, conntrack.h, nat.h)."""

from __future__ import annotations

import functools
import operator
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

import attrs

from datapath.packet import ip_text

K = TypeVar("K")
V = TypeVar("V")

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

TUPLE_F_OUT = 0
TUPLE_F_IN = 1
TUPLE_F_RELATED = 2
TUPLE_F_SERVICE = 4

LB_LOOKUP_SCOPE_EXT = 0
LB_LOOKUP_SCOPE_INT = 1

SVC_FLAG_EXTERNAL_IP = 1 << 0
SVC_FLAG_NODEPORT = 1 << 1
SVC_FLAG_EXT_LOCAL_SCOPE = 1 << 2
SVC_FLAG_HOSTPORT = 1 << 3
SVC_FLAG_AFFINITY = 1 << 4
SVC_FLAG_LOADBALANCER = 1 << 5
SVC_FLAG_ROUTABLE = 1 << 6
SVC_FLAG_SOURCE_RANGE = 1 << 7
SVC_FLAG_INT_LOCAL_SCOPE = 1 << 4  # flags2
SVC_FLAG_TWO_SCOPES = 1 << 5  # flags2
SVC_FLAG_SOURCE_RANGE_DENY = 1 << 6  # flags2
SVC_FLAG_FWD_MODE_DSR = 1 << 7  # flags2

LB_ALGORITHM_SHIFT = 24
AFFINITY_TIMEOUT_MASK = (1 << LB_ALGORITHM_SHIFT) - 1  # lb.h:400: the low 24 bits

BE_STATE_ACTIVE = 0
BE_STATE_TERMINATING = 1
BE_STATE_QUARANTINED = 2
BE_STATE_MAINTENANCE = 3


class HashMap(Generic[K, V]):
    """BPF_MAP_TYPE_HASH: fixed capacity, inserts into a full map fail with -E2BIG."""

    lru = False

    def __init__(self, name: str, max_entries: int) -> None:
        self.name = name
        self.max_entries = max_entries
        self._d: OrderedDict[K, V] = OrderedDict()

    def lookup(self, key: K) -> V | None:
        """map_lookup_elem()."""
        return self._d.get(key)

    def peek(self, key: K) -> V | None:
        """A lookup that leaves an LRU map's order alone, where Cilium's own lookup is a
        per-packet CT refresh the reference does not run."""
        return self._d.get(key)

    def update(self, key: K, value: V, flags: int = BPF_ANY) -> bool:
        """map_update_elem(); False stands for -EEXIST / -ENOENT / -E2BIG."""
        d = self._d
        if key in d:
            if flags == BPF_NOEXIST:
                return False
            d[key] = value
            if self.lru:  # an overwrite is a use: move it to the recent end
                d.move_to_end(key)
            return True
        if flags == BPF_EXIST or (len(d) >= self.max_entries and not self._evict()):
            return False
        d[key] = value  # a new key is appended at the recent end already
        return True

    def _evict(self) -> bool:
        return False

    def delete(self, key: K) -> bool:
        """map_delete_elem()."""
        return self._d.pop(key, None) is not None

    def clear(self) -> None:
        """Delete every entry (the agent re-syncing a map from scratch)."""
        self._d.clear()

    def items(self) -> Iterator[tuple[K, V]]:
        """Iterate like bpftool map dump (oldest first for LRU maps)."""
        return iter(list(self._d.items()))

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d


class LruHashMap(HashMap[K, V]):
    """BPF_MAP_TYPE_LRU_HASH: a full map evicts the least recently used entry on insert."""

    lru = True

    def __init__(self, name: str, max_entries: int, refresh: bool = True) -> None:
        super().__init__(name, max_entries)
        self.refresh = refresh

    def lookup(self, key: K) -> V | None:
        """Lookups mark the entry as recently used, as the kernel's LRU does."""
        v = self._d.get(key)
        if v is not None and self.refresh:
            self._d.move_to_end(key)
        return v

    def _evict(self) -> bool:
        self._d.popitem(last=False)
        return True


class LbKey(NamedTuple):
    """struct lb4_key / lb6_key: {address, dport, proto, scope, backend_slot}."""

    address: bytes
    dport: int
    proto: int
    scope: int
    backend_slot: int


@attrs.frozen(slots=True)
class LbService:
    """struct lb4_service: slot 0 holds count/rev_nat_index/flags, slot n a backend_id."""

    backend_id: int = 0
    count: int = 0
    rev_nat_index: int = 0
    flags: int = 0
    flags2: int = 0


@attrs.frozen(slots=True)
class LbBackend:
    """struct lb4_backend / lb6_backend in cilium_lb{4,6}_backends_v3."""

    address: bytes
    port: int
    proto: int
    flags: int = BE_STATE_ACTIVE


@attrs.frozen(slots=True)
class LbReverseNat:
    """struct lb4_reverse_nat in cilium_lb4_reverse_nat: rev_nat_index -> frontend."""

    address: bytes
    port: int


class AffinityKey(NamedTuple):
    """struct lb4_affinity_key / lb6_affinity_key (lb.h:130, 144): client, frontend, cookie."""

    client_id: bytes  # the client's address (netns_cookie 0)
    rev_nat_id: int
    netns_cookie: int = 0


@attrs.define(slots=True)
class AffinityVal:
    """struct lb_affinity_val (lb.h:153); last_used is written in place on a hit."""

    last_used: int  # bpf_mono_now(), seconds
    backend_id: int


class AffinityMatch(NamedTuple):
    """struct lb_affinity_match (lb.h:159): the agent marks a backend live for a frontend."""

    backend_id: int
    rev_nat_id: int


class FragKey(NamedTuple):
    """struct ipv4_frag_id / ipv6_frag_id (ipv4.h:16, ipv6.h:43); id as on the wire."""

    daddr: bytes
    saddr: bytes
    id: int
    proto: int


@attrs.frozen(slots=True)
class FragPorts:
    """struct ipv4_frag_l4ports / ipv6_frag_l4ports: the first fragment's ports."""

    sport: int
    dport: int


class CtTuple(NamedTuple):
    """struct ipv4_ct_tuple / ipv6_ct_tuple, field order and skew as in common.h."""

    daddr: bytes
    saddr: bytes
    dport: int
    sport: int
    nexthdr: int
    flags: int

    def reverse(self) -> CtTuple:
        """ipv4_ct_tuple_reverse(): swap addresses and ports, keep flags."""
        return CtTuple(self.saddr, self.daddr, self.sport, self.dport, self.nexthdr, self.flags)


@attrs.define(slots=True)
class CtEntry:
    """struct ct_entry (conntrack map value); mutated in place like the BPF code does."""

    lifetime: int = 0
    rx_closing: bool = False
    tx_closing: bool = False
    seen_non_syn: bool = False
    tx_flags_seen: int = 0  # OR of the TCP flags seen per direction (conntrack.h:116-117)
    rx_flags_seen: int = 0
    node_port: bool = False
    dsr_internal: bool = False
    backend_id: int = 0
    rev_nat_index: int = 0
    nat_addr: bytes = b""
    nat_port: int = 0
    loopback: bool = False  # a hairpin connection (bpf_lxc, datapath/lxc.py)
    src_sec_id: int = 0
    packets: int = 0  # bpf.ctAccounting: packets and bytes (frames) seen on this entry
    bytes: int = 0


@attrs.frozen(slots=True)
class NatEntry:
    """struct ipv4_nat_entry: to_saddr/to_sport (OUT) or to_daddr/to_dport (IN)."""

    to_addr: bytes
    to_port: int
    created: int = 0
    needs_ct: bool = False


class RatelimitKey(NamedTuple):
    """struct ratelimit_key: {usage, key.icmpv6.netdev_idx} (ratelimit.h)."""

    usage: int
    netdev_idx: int


@attrs.define(slots=True)
class RatelimitValue:
    """struct ratelimit_value: a token bucket, mutated in place like the BPF code does."""

    last_topup: int  # ns
    tokens: int


@attrs.frozen(slots=True)
class EndpointInfo:
    """struct endpoint_info from cilium_lxc: a pod on this node."""

    ifindex: int
    lxc_id: int


def _addr(v: Any) -> Any:
    return _text(v) if type(v) is bytes and len(v) in (4, 16) else v


@functools.lru_cache(maxsize=4096)
def _text(v: bytes) -> str:
    return ip_text(v)


_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]] | None]] = {}


def _as_dict(obj: Any) -> dict[str, Any]:
    t = type(obj)
    got = _FIELDS.get(t)
    if got is None:
        if hasattr(t, "_fields"):  # a NamedTuple key is its own tuple of values
            got = (t._fields, None)
        else:
            names = tuple(f.name for f in attrs.fields(t))
            one = operator.attrgetter(*names)
            getter: Callable[[Any], tuple[Any, ...]] = (
                one if len(names) > 1 else lambda o: (one(o),))
            got = (names, getter)
        _FIELDS[t] = got
    names, get = got
    return dict(zip(names, map(_addr, obj if get is None else get(obj)), strict=True))


class NodeMaps:
    """All per-node maps, named as Cilium pins them under /sys/fs/bpf/tc/globals."""

    def __init__(self, ct_capacity: int, nat_capacity: int, lru_refresh: bool = True,
                 ct_any_capacity: int | None = None) -> None:
        any_cap = ct_capacity if ct_any_capacity is None else ct_any_capacity
        self.lb4_services: HashMap[LbKey, LbService] = HashMap("cilium_lb4_services_v2", 65536)
        self.lb4_backends: HashMap[int, LbBackend] = HashMap("cilium_lb4_backends_v3", 65536)
        self.lb4_reverse_nat: HashMap[int, LbReverseNat] = HashMap(
            "cilium_lb4_reverse_nat", 65536)
        self.lb6_services: HashMap[LbKey, LbService] = HashMap("cilium_lb6_services_v2", 65536)
        self.lb6_backends: HashMap[int, LbBackend] = HashMap("cilium_lb6_backends_v3", 65536)
        self.lb6_reverse_nat: HashMap[int, LbReverseNat] = HashMap(
            "cilium_lb6_reverse_nat", 65536)
        self.ct4_tcp: LruHashMap[CtTuple, CtEntry] = LruHashMap(
            "cilium_ct4_global", ct_capacity, lru_refresh)
        self.ct4_any: LruHashMap[CtTuple, CtEntry] = LruHashMap(
            "cilium_ct_any4_global", any_cap, lru_refresh)
        self.ct6_tcp: LruHashMap[CtTuple, CtEntry] = LruHashMap(
            "cilium_ct6_global", ct_capacity, lru_refresh)
        self.ct6_any: LruHashMap[CtTuple, CtEntry] = LruHashMap(
            "cilium_ct_any6_global", any_cap, lru_refresh)
        self.snat4: LruHashMap[CtTuple, NatEntry] = LruHashMap(
            "cilium_snat_v4_external", nat_capacity, lru_refresh)
        self.snat6: LruHashMap[CtTuple, NatEntry] = LruHashMap(
            "cilium_snat_v6_external", nat_capacity, lru_refresh)
        self.lxc: HashMap[bytes, EndpointInfo] = HashMap("cilium_lxc", 65536)
        self.ipcache: HashMap[bytes, bytes] = HashMap("cilium_ipcache_v2", 512000)
        self.ratelimit: LruHashMap[RatelimitKey, RatelimitValue] = LruHashMap(
            "cilium_ratelimit", 1024, lru_refresh)
        self.src_range: dict[int, list[tuple[bytes, int]]] = {}
        self.lb4_affinity: LruHashMap[AffinityKey, AffinityVal] = LruHashMap(
            "cilium_lb4_affinity", 65536, lru_refresh)
        self.lb6_affinity: LruHashMap[AffinityKey, AffinityVal] = LruHashMap(
            "cilium_lb6_affinity", 65536, lru_refresh)
        self.lb_affinity_match: HashMap[AffinityMatch, int] = HashMap(
            "cilium_lb_affinity_match", 65536)
        # CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES: --bpf-fragments-map-max, 8192 by default
        self.frag4: LruHashMap[FragKey, FragPorts] = LruHashMap(
            "cilium_ipv4_frag_datagrams", 8192, lru_refresh)
        self.frag6: LruHashMap[FragKey, FragPorts] = LruHashMap(
            "cilium_ipv6_frag_datagrams", 8192, lru_refresh)
        # cilium_lb4_maglev / cilium_lb6_maglev: hash-of-maps, rev_nat_index -> the inner
        # array's one value, LB_MAGLEV_LUT_SIZE backend IDs (lb.h:324-339)
        self.lb4_maglev: dict[int, tuple[int, ...]] = {}
        self.lb6_maglev: dict[int, tuple[int, ...]] = {}

    def ct_map(self, v6: bool, nexthdr: int) -> LruHashMap[CtTuple, CtEntry]:
        """get_ct_map4/6: TCP entries live in the TCP map, everything else in 'any'."""
        if v6:
            return self.ct6_tcp if nexthdr == 6 else self.ct6_any
        return self.ct4_tcp if nexthdr == 6 else self.ct4_any

    def all_maps(self) -> list[HashMap[Any, Any]]:
        """Every map in a stable order, for dumps."""
        return [self.lb4_services, self.lb4_backends, self.lb4_reverse_nat, self.lb6_services,
                self.lb6_backends, self.lb6_reverse_nat, self.ct4_tcp, self.ct4_any,
                self.ct6_tcp, self.ct6_any, self.snat4, self.snat6, self.lxc, self.ipcache,
                self.ratelimit, self.lb4_affinity, self.lb6_affinity, self.lb_affinity_match,
                self.frag4, self.frag6]

    def by_name(self, name: str) -> HashMap[Any, Any]:
        """Find a map by its Cilium name or a short alias (ct4, snat4, ...)."""
        aliases: dict[str, Callable[[], HashMap[Any, Any]]] = {
            "ct4": lambda: self.ct4_tcp, "ct_any4": lambda: self.ct4_any,
            "ct6": lambda: self.ct6_tcp, "ct_any6": lambda: self.ct6_any,
            "snat4": lambda: self.snat4, "snat6": lambda: self.snat6}
        if name in aliases:
            return aliases[name]()
        for m in self.all_maps():
            if m.name == name:
                return m
        raise KeyError(name)

    def dump(self, names: Collection[str] | None = None
             ) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
        """Plain-data snapshot of every map (or only `names`), for the abstraction and diffs."""
        out: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for m in self.all_maps():
            if names is not None and m.name not in names:
                continue
            rows = []
            for k, v in m.items():
                kd = _as_dict(k) if not isinstance(k, (bytes, int)) else {"key": _addr(k)}
                vd = {"value": _addr(v)} if isinstance(v, (bytes, int)) else _as_dict(v)
                rows.append((kd, vd))
            out[m.name] = rows
        return out
