"""The abstraction function's map half: a Datapath.dump() as the model's NodeState, row by row."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from typing import Any, TypeVar

from datapath.maps import (
    AFFINITY_TIMEOUT_MASK,
    SVC_FLAG_AFFINITY,
    SVC_FLAG_EXT_LOCAL_SCOPE,
    SVC_FLAG_FWD_MODE_DSR,
    SVC_FLAG_ROUTABLE,
)
from datapath.packet import TCP_SYN
from model.maps import (
    AffinityKey,
    AffinityVal,
    CtEntry,
    CtTuple,
    FragKey,
    FragPorts,
    LbMaps,
    LruMap,
    NatEntry,
    NatTuple,
    NodeState,
    ServiceEntry,
    ServiceKey,
    TokenBucket,
    TupleFlags,
)
from model.values import Endpoint, IPAddress, Proto

CT_MAPS = ("cilium_ct4_global", "cilium_ct_any4_global", "cilium_ct6_global",
           "cilium_ct_any6_global")
AFFINITY_MAPS = ("cilium_lb4_affinity", "cilium_lb6_affinity")
FRAG_MAPS = ("cilium_ipv4_frag_datagrams", "cilium_ipv6_frag_datagrams")
NAT_MAPS = ("cilium_snat_v4_external", "cilium_snat_v6_external")


# -- maps: dump -> model NodeState ---------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _addr(text: Any) -> IPAddress:
    return ip_address(str(text))


T = TypeVar("T")


def _rows(conv: Callable[[Mapping[str, Any]], T]) -> Callable[[Mapping[str, Any]], T]:
    """A row converter memoized on the row's (field, value) pairs: most rows are dumped
    again unchanged after every step, and the model's values are immutable."""
    cache: dict[tuple[tuple[str, Any], ...], T] = {}

    def convert(row: Mapping[str, Any]) -> T:
        try:
            key = tuple(row.items())
            got = cache.get(key)
        except TypeError:  # an unhashable field value: convert every time
            return conv(row)
        if got is None:
            if len(cache) >= 65536:
                cache.clear()
            got = cache[key] = conv(row)
        return got
    return convert


@_rows
def _ct_key(k: Mapping[str, Any]) -> CtTuple:
    return CtTuple(daddr=_addr(k["daddr"]), saddr=_addr(k["saddr"]), dport=int(k["dport"]),
                   sport=int(k["sport"]), nexthdr=Proto(int(k["nexthdr"])),
                   flags=TupleFlags(int(k["flags"])))


@_rows
def _ct_entry(v: Mapping[str, Any]) -> CtEntry:
    nat = v.get("nat_addr")
    return CtEntry(backend_id=int(v["backend_id"]), rev_nat_index=int(v["rev_nat_index"]),
                   node_port=bool(v["node_port"]), dsr_internal=bool(v["dsr_internal"]),
                   nat_addr=_addr(nat) if isinstance(nat, str) and nat else None,
                   nat_port=int(v["nat_port"]), loopback=bool(v.get("loopback", False)),
                   seen_non_syn=bool(v["seen_non_syn"]),
                   tx_syn_seen=bool(int(v["tx_flags_seen"]) & TCP_SYN),
                   rx_syn_seen=bool(int(v["rx_flags_seen"]) & TCP_SYN),
                   tx_closing=bool(v["tx_closing"]), rx_closing=bool(v["rx_closing"]),
                   lifetime=int(v["lifetime"]))


@_rows
def _nat_key(k: Mapping[str, Any]) -> NatTuple:
    return NatTuple(saddr=_addr(k["saddr"]), daddr=_addr(k["daddr"]), sport=int(k["sport"]),
                    dport=int(k["dport"]), nexthdr=Proto(int(k["nexthdr"])),
                    flags=TupleFlags(int(k["flags"])))


@_rows
def _nat_entry(v: Mapping[str, Any]) -> NatEntry:
    return NatEntry(to_addr=_addr(v["to_addr"]), to_port=int(v["to_port"]),
                    created=int(v["created"]), needs_ct=bool(v["needs_ct"]))


def ct_map(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]], capacity: int,
           any_capacity: int | None = None) -> LruMap[CtTuple, CtEntry]:
    """The four per-family/per-protocol CT maps as the model's single CT map."""
    entries: dict[CtTuple, CtEntry] = {}
    for name in CT_MAPS:
        for k, v in dump.get(name, []):
            entries[_ct_key(k)] = _ct_entry(v)
    return LruMap(capacity=capacity, entries=entries, any_capacity=any_capacity)


def nat_map(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]], capacity: int
            ) -> LruMap[NatTuple, NatEntry]:
    """cilium_snat_v{4,6}_external as the model's SNAT map."""
    entries: dict[NatTuple, NatEntry] = {}
    for name in NAT_MAPS:
        for k, v in dump.get(name, []):
            entries[_nat_key(k)] = _nat_entry(v)
    return LruMap(capacity=capacity, entries=entries)


def lb_maps(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]], ref: LbMaps
            ) -> LbMaps:
    """LB maps back to LbMaps; the agent-side views (source ranges, the service's backends
    on all nodes) are not in any BPF map and are taken from `ref`."""
    services: dict[ServiceKey, ServiceEntry] = {}
    for fam in ("4", "6"):
        rows = dump.get(f"cilium_lb{fam}_services_v2", [])
        slots: dict[tuple[IPAddress, int, Proto], dict[int, int]] = {}
        masters: dict[tuple[IPAddress, int, Proto], Mapping[str, Any]] = {}
        for k, v in rows:
            key = (_addr(k["address"]), int(k["dport"]), Proto(int(k["proto"])))
            if key[0].is_unspecified:
                continue  # a NodePort surrogate: the model folds it into the own frontend
            if int(k["backend_slot"]) == 0:
                masters[key] = v
            else:
                slots.setdefault(key, {})[int(k["backend_slot"])] = int(v["backend_id"])
        for key, m in masters.items():
            n = int(m["count"])
            s = slots.get(key, {})
            r = ref.services.get(key)
            services[key] = ServiceEntry(
                rev_nat_index=int(m["rev_nat_index"]),
                backend_slots=tuple(s[i] for i in range(1, n + 1) if i in s),
                routable=bool(int(m["flags"]) & SVC_FLAG_ROUTABLE),
                etp_local=bool(int(m["flags"]) & SVC_FLAG_EXT_LOCAL_SCOPE),
                dsr=bool(int(m["flags2"]) & SVC_FLAG_FWD_MODE_DSR),
                source_ranges=r.source_ranges if r is not None else (),
                all_backends=r.all_backends if r is not None else (),
                affinity_timeout=(int(m["backend_id"]) & AFFINITY_TIMEOUT_MASK
                                  if int(m["flags"]) & SVC_FLAG_AFFINITY else 0),
                maglev=r.maglev if r is not None else ())  # the agent's, not dumped
    backends = {int(k["key"]): Endpoint(addr=_addr(v["address"]), port=int(v["port"]))
                for fam in ("4", "6") for k, v in dump.get(f"cilium_lb{fam}_backends_v3", [])}
    revnat = {int(k["key"]): Endpoint(addr=_addr(v["address"]), port=int(v["port"]))
              for fam in ("4", "6") for k, v in dump.get(f"cilium_lb{fam}_reverse_nat", [])}
    local = frozenset(_addr(k["key"]) for k, _v in dump.get("cilium_lxc", []))
    match = tuple((int(k["rev_nat_id"]), int(k["backend_id"]))
                  for k, _v in dump["cilium_lb_affinity_match"]) \
        if "cilium_lb_affinity_match" in dump else ref.affinity_match
    return LbMaps(services=services, backends=backends, revnat=revnat, local_endpoints=local,
                  affinity_match=match)


def affinity_map(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]],
                 ref: LruMap[AffinityKey, AffinityVal]) -> LruMap[AffinityKey, AffinityVal]:
    """cilium_lb4_affinity and cilium_lb6_affinity as the model's one affinity map (the
    key's address family tells them apart); a datapath that does not dump them leaves
    the model's map standing in."""
    if not any(n in dump for n in AFFINITY_MAPS):
        return ref
    entries = {AffinityKey(client=_addr(k["client_id"]), rev_nat_id=int(k["rev_nat_id"])):
               AffinityVal(backend_id=int(v["backend_id"]), last_used=int(v["last_used"]))
               for n in AFFINITY_MAPS for k, v in dump.get(n, [])
               if not int(k.get("netns_cookie", 0))}
    return LruMap(capacity=ref.capacity, entries=entries)


def icmp6_bucket(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]],
                 ref: TokenBucket | None) -> TokenBucket | None:
    """cilium_ratelimit's ICMPv6 bucket (usage 1) in model seconds; a datapath that does not
    dump the map leaves the model's bucket standing in for it."""
    if "cilium_ratelimit" not in dump:
        return ref
    for k, v in dump["cilium_ratelimit"]:
        if int(k["usage"]) == 1:
            return TokenBucket(last_topup=int(v["last_topup"]) // 1_000_000_000,
                               tokens=int(v["tokens"]))
    return None


def node_state(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]], ref: NodeState,
               lb: bool = True) -> NodeState:
    """A datapath dump as the model's NodeState (capacities and agent views from `ref`);
    with lb=False the LB maps are not abstracted and `ref.lb` stands in for them."""
    return NodeState(lb=lb_maps(dump, ref.lb) if lb else ref.lb,
                     ct=ct_map(dump, ref.ct.capacity, ref.ct.any_capacity),
                     snat=nat_map(dump, ref.snat.capacity),
                     icmp6_bucket=icmp6_bucket(dump, ref.icmp6_bucket),
                     affinity=affinity_map(dump, ref.affinity),
                     frag=frag_map(dump, ref.frag))


def frag_map(dump: Mapping[str, list[tuple[dict[str, Any], dict[str, Any]]]],
             ref: LruMap[FragKey, FragPorts]) -> LruMap[FragKey, FragPorts]:
    """cilium_ipv4_frag_datagrams and cilium_ipv6_frag_datagrams as the model's one map;
    a datapath that does not dump them leaves the model's map standing in."""
    if not any(n in dump for n in FRAG_MAPS):
        return ref
    entries = {FragKey(saddr=_addr(k["saddr"]), daddr=_addr(k["daddr"]), id=int(k["id"]),
                       proto=Proto(int(k["proto"]))):
               FragPorts(sport=int(v["sport"]), dport=int(v["dport"]))
               for n in FRAG_MAPS for k, v in dump.get(n, [])}
    return LruMap(capacity=ref.capacity, entries=entries)
