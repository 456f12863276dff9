"""lb4_local's choice of backend: the CT_SERVICE entry, session affinity, Maglev or a random
slot (lib/lb.h), shared by from-netdev's nodeport_lb and from-container's per-packet LB."""

from __future__ import annotations

import attrs

from model.config import CiliumVersion
from model.conntrack import created, on_packet, reopens, reset
from model.faults import ModelFault
from model.hooks import NodeCtx, ct_tuple
from model.maps import AffinityKey, AffinityVal, CtTuple, NodeState, ServiceEntry, TupleFlags
from model.values import Packet


def lb_select(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet
              ) -> tuple[NodeState, int | None, bool]:
    """lb4_local: CT_SERVICE lookup, then keep, reselect or pick a backend (random)."""
    key = ct_tuple(pkt, TupleFlags.SERVICE)
    entry = st.ct.get(key)
    version = ctx.cfg.version
    if entry is not None and reopens(version, entry, pkt):
        # ACTION_CREATE: the closing entry is reset in place and the lookup says CT_NEW.
        st = attrs.evolve(st, ct=st.ct.put(key, reset(version, entry, pkt, ctx.now)))
        entry = None
    if entry is not None:  # the CT lookup itself refreshes the entry (ct_update_timeout)
        entry = on_packet(version, entry, pkt, ctx.now, service=True)
    if (entry is not None and not ctx.has(ModelFault.LB_IGNORES_CT_SERVICE)
            and entry.rev_nat_index == svc.rev_nat_index and entry.backend_id in st.lb.backends
            and (entry.backend_id not in st.lb.terminating or not pkt.is_syn
                 or ctx.has(ModelFault.TERMINATING_BACKEND_TAKES_SYN))):
        # An existing backend is kept; a BE_STATE_TERMINATING one only for established
        # connections (non-SYN): they drain, new connections go elsewhere.
        st = attrs.evolve(st, ct=st.ct.put(key, entry))
        return _update_affinity(ctx, st, svc, pkt, entry.backend_id), entry.backend_id, False
    if svc.count == 0:
        if entry is not None:
            st = attrs.evolve(st, ct=st.ct.put(key, entry))
        return st, None, False
    bid = 0
    if entry is None and svc.affinity_timeout:  # CT_NEW only (lb.h:2219-2226)
        st, bid = _affinity_backend_id(ctx, st, svc, pkt)
        if bid not in st.lb.backends:  # lb4_lookup_backend failed: select afresh
            bid = 0
    if bid == 0:
        slots = svc.backend_slots
        pinned = [b for b in slots if st.lb.backends[b].addr == ctx.pinned]
        if svc.maglev:  # a pin stands for the hash's pick (counterexample replays)
            bid = pinned[0] if pinned else _maglev_backend_id(ctx, svc, key)
        else:
            draw = ctx.rand.u32("lb", ctx.name, key, ctx.now)
            bid = pinned[0] if pinned else random_slot(slots, draw)
    if entry is not None:  # reselect: the entry stays, only its backend changes
        new = attrs.evolve(entry, backend_id=bid, rev_nat_index=svc.rev_nat_index)
    else:
        new = created(version, pkt, ctx.now, service=True, backend_id=bid,
                      rev_nat_index=svc.rev_nat_index)
    st = attrs.evolve(st, ct=st.ct.put(key, new))
    return _update_affinity(ctx, st, svc, pkt, bid), bid, entry is None


def _affinity_backend_id(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet
                         ) -> tuple[NodeState, int]:
    """__lb4_affinity_backend_id / __lb6_ (lb.h:2056, 1243): the client's remembered backend.

    The entry is stale from last_used + timeout on (lb.h:2079-2080, `<= now`: the session is
    sticky for [last_used, last_used + timeout)) and void once the agent no longer lists its
    backend in cilium_lb_affinity_match (lb.h:2085); either way it is deleted and 0 says
    "select". A live entry's last_used becomes now (lb.h:2090).
    """
    key = AffinityKey(client=pkt.src.addr, rev_nat_id=svc.rev_nat_index)
    val = st.affinity.get(key)
    if val is None:
        return st, 0
    expired = val.last_used + svc.affinity_timeout <= ctx.now
    if ctx.has(ModelFault.AFFINITY_EXPIRY_INVERTED):
        expired = not expired
    if expired or (svc.rev_nat_index, val.backend_id) not in st.lb.affinity_match:
        return attrs.evolve(st, affinity=st.affinity.delete(key)), 0
    val = attrs.evolve(val, last_used=ctx.now)
    return attrs.evolve(st, affinity=st.affinity.put(key, val)), val.backend_id


def _update_affinity(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet,
                     bid: int) -> NodeState:
    """lb4_update_affinity_by_addr (lb.h:2124, 2294): every packet lb4_local passes, new or
    established, writes {backend, now} for its client on an affinity frontend."""
    if not svc.affinity_timeout:
        return st
    key = AffinityKey(client=pkt.src.addr, rev_nat_id=svc.rev_nat_index)
    return attrs.evolve(st, affinity=st.affinity.put(
        key, AffinityVal(backend_id=bid, last_used=ctx.now)))


def _maglev_backend_id(ctx: NodeCtx, svc: ServiceEntry, key: CtTuple) -> int:
    """lb4_select_backend_id_maglev / lb6_ (v1.20 lb.h:1928, :1121; v1.18 lb.h:1429): the
    flow's entry in the frontend's table, hashing the client's address, both ports and the
    protocol with the cluster-wide seed, never the destination address (hash.h:9). v1.20
    hashes the CT tuple's ports swapped and a zero client port on affinity frontends
    (lb.h:1937-1938); v1.18 hashes the tuple as it is."""
    if ctx.cfg.version is CiliumVersion.V1_20:
        sport, dport = (0 if svc.affinity_timeout else key.dport), key.sport
    else:
        sport, dport = key.sport, key.dport
    _murmur, seed4, seed6 = ctx.cfg.maglev_seeds
    seed = seed4 if key.saddr.version == 4 else seed6
    if ctx.has(ModelFault.MAGLEV_NODE_SEED):
        seed ^= int(ctx.ip) & 0xFFFFFFFF
    return ctx.picker.pick(svc.maglev, key.saddr, sport, dport, int(key.nexthdr), seed)


def random_slot(slots: tuple[int, ...], rand: int) -> int:
    """lb4_select_backend_id_random: slot (rand % count) + 1, compared slot by slot."""
    pick = rand % len(slots)
    for i, bid in enumerate(slots):
        if pick == i:
            return bid
    raise AssertionError("rand % count is below count")  # pragma: no cover
