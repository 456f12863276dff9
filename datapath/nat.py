"""SNAT for NodePort (bpf/lib/nat.h: __snat_v4_nat, snat_v4_new_mapping, snat_v4_rev_nat)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datapath.drop import DatapathDrop, DropReason
from datapath.lb import rewrite
from datapath.maps import BPF_ANY, BPF_NOEXIST, TUPLE_F_IN, TUPLE_F_OUT, CtTuple, NatEntry
from datapath.packet import PORT_PROTOS, Parsed

if TYPE_CHECKING:
    from datapath.host import Node

SNAT_COLLISION_RETRIES = 32


def snat_clamp_port_range(start: int, end: int, val: int, modulo: bool = False) -> int:
    """__snat_clamp_port_range(): multiply-shift (v1.17+) or v1.13's biased modulo."""
    val &= 0xFFFF
    if modulo:
        return (val % ((end - start) & 0xFFFF or 1)) + start
    return start + ((val * (end - start + 1)) >> 16)


_new = tuple.__new__  # NamedTuple construction without the Python-level __new__


def _otuple(p: Parsed) -> CtTuple:
    # NAT tuples keep plain packet order: saddr/sport are the packet's source.
    return _new(CtTuple, (p.daddr, p.saddr, p.dport, p.sport, p.proto, TUPLE_F_OUT))


def snat_new_mapping(node: Node, p: Parsed, otuple: CtTuple, target: bytes) -> int:
    """snat_v4_new_mapping(): reverse entry NOEXIST first, retry with clamp, then forward."""
    snat = node.maps.snat6 if p.v6 else node.maps.snat4
    lo, hi = node.config.nat_min, node.config.nat_max
    modulo = "snat_port_clamp_modulo" in node.faults
    sport = otuple.sport
    if lo <= sport <= hi or "snat_keep_port_out_of_range" in node.faults:
        port = sport
    else:
        port = snat_clamp_port_range(lo, hi, node.prandom(), modulo)
    flag = BPF_ANY if "snat_ignore_reverse_entry" in node.faults else BPF_NOEXIST
    rstate = NatEntry(otuple.saddr, sport, node.now)
    for retries in range(SNAT_COLLISION_RETRIES):
        rtuple = _new(CtTuple, (target, otuple.daddr, port, otuple.dport, otuple.nexthdr,
                                TUPLE_F_IN))
        if snat.update(rtuple, rstate, flag):
            break
        port = snat_clamp_port_range(lo, hi, node.prandom() if retries == 0 else port + 1,
                                     modulo)
    else:
        node.nat_exhaustion_signals += 1
        raise DatapathDrop(DropReason.DROP_NAT_NO_MAPPING)
    if not snat.update(otuple, NatEntry(target, port, node.now), BPF_ANY):
        snat.delete(rtuple)
        raise DatapathDrop(DropReason.DROP_NAT_NO_MAPPING)
    return port


def snat_nat(node: Node, p: Parsed, target: bytes) -> None:
    """__snat_v4_nat() for the nodeport forward path, with v1.17+ self-healing."""
    snat = node.maps.snat6 if p.v6 else node.maps.snat4
    otuple = _otuple(p)
    state = snat.lookup(otuple)
    if state is not None and state.to_addr != target:
        # Stale source address: drop both entries and allocate again.
        snat.delete(CtTuple(state.to_addr, otuple.daddr, state.to_port, otuple.dport,
                            otuple.nexthdr, TUPLE_F_IN))
        snat.delete(otuple)
        state = None
    if state is None:
        port = snat_new_mapping(node, p, otuple, target)
    else:
        port = state.to_port
        rtuple = CtTuple(target, otuple.daddr, port, otuple.dport, otuple.nexthdr, TUPLE_F_IN)
        if "snat_no_reverse_recreate" not in node.faults and snat.lookup(rtuple) is None:
            snat.update(rtuple, NatEntry(otuple.saddr, otuple.sport, node.now), BPF_ANY)
    rewrite(p, True, target, port)


def snat_rev_nat(node: Node, p: Parsed) -> bool:
    """snat_v4_rev_nat(): True when translated, False for NAT_PUNT_TO_STACK / no mapping."""
    if not p.frag_first or p.proto not in PORT_PROTOS:  # Parsed.has_ports()
        return False
    lo, hi = node.config.nat_min, node.config.nat_max
    if not lo <= p.dport <= hi and "rev_snat_skip_range_check" not in node.faults:
        return False
    snat = node.maps.snat6 if p.v6 else node.maps.snat4
    rtuple = _new(CtTuple, (p.daddr, p.saddr, p.dport, p.sport, p.proto, TUPLE_F_IN))
    state = snat.lookup(rtuple)
    if state is None:
        if "rev_snat_skip_range_check" in node.faults:
            raise DatapathDrop(DropReason.DROP_NAT_NO_MAPPING)
        return False
    # snat_v4_rev_nat_handle_mapping: restore a missing forward entry.
    otuple = CtTuple(p.saddr, state.to_addr, p.sport, state.to_port, p.proto, TUPLE_F_OUT)
    if snat.lookup(otuple) is None:
        snat.update(otuple, NatEntry(p.daddr, p.dport, node.now), BPF_ANY)
    rewrite(p, False, state.to_addr, state.to_port)
    return True
