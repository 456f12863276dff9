"""SNAT for NodePort (bpf/lib/nat.h: __snat_v4_nat, snat_v4_new_mapping, snat_v4_rev_nat)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.csum import csum_diff, csum_fix
from datapath.drop import DatapathDrop, DropReason
from datapath.lb import rewrite
from datapath.maps import (
    BPF_ANY,
    BPF_NOEXIST,
    TUPLE_F_IN,
    TUPLE_F_OUT,
    CtEntry,
    CtTuple,
    NatEntry,
)
from datapath.packet import (
    EXT_HDRS,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_NONE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_MAX_HEADERS,
    PORT_PROTOS,
    Parsed,
    ext_hdr_len,
)

if TYPE_CHECKING:
    from datapath.host import Node

# SNAT_COLLISION_RETRIES per release: v1.18 defines 128 in nat.h:38; v1.20 takes the
# agent's value, 32 (the tree's node_config.h:78)
SNAT_COLLISION_RETRIES = {"1.18": 128, "1.20": 32}


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
    for retries in range(SNAT_COLLISION_RETRIES[node.config.version]):
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


def needs_masquerade(node: Node, p: Parsed) -> bool:
    """snat_v4_needs_masquerade (nat.h:626-789) for bpf.masquerade: TCP/UDP from a local
    endpoint, not to IPV4_SNAT_EXCLUSION_DST_CIDR (nat.h:729-733) nor, in native routing,
    to a remote node (nat.h:745-748: here the ipcache's tunnel endpoints, which are nodes;
    tunnel mode's remote-node masquerade, nat.h:749-760, is left out as in the model)."""
    if not (node.config.masquerade and p.frag_first and p.proto in PORT_PROTOS
            and p.saddr in node.lxc_eps):
        return False
    if any(_in(p.daddr, net, plen) for net, plen in node.snat_exclusion):
        return False
    return p.daddr not in node.remote_nodes


def _in(addr: bytes, net: bytes, plen: int) -> bool:
    if len(addr) != len(net):
        return False
    bits = len(addr) * 8
    return int.from_bytes(addr, "big") >> (bits - plen) == int.from_bytes(net, "big") >> (
        bits - plen) if plen else True


def masquerade(node: Node, p: Parsed) -> None:
    """nodeport_snat_fwd_ipv4 after snat_v4_needs_masquerade said NAT_NEEDED: the pod's
    CT_EGRESS entry (bpf_lxc's, the harness and the model fold it in here) is created or
    refreshed, then snat_v4_nat to IPV4_MASQUERADE in the NodePort SNAT map and range."""
    from datapath.conntrack import ct_create, ct_lookup
    m = node.maps
    tcp = p.proto == IPPROTO_TCP
    ct = (m.ct6_tcp if tcp else m.ct6_any) if p.v6 else (m.ct4_tcp if tcp else m.ct4_any)
    key = _new(CtTuple, (p.saddr, p.daddr, p.dport, p.sport, p.proto, TUPLE_F_OUT))
    if ct_lookup(node, ct, key, p.tcp_flags, tcp, size=len(p.buf)) is None and not ct_create(
            node, ct, key, CtEntry(), tcp, size=len(p.buf)):
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)
    snat_nat(node, p, node.masq_addr(p.v6))


def masq_reply_ct(node: Node, p: Parsed) -> None:
    """bpf_lxc's CT_INGRESS lookup of a masqueraded connection's reply (reverse-SNATed)."""
    from datapath.conntrack import ct_lookup
    tcp = p.proto == IPPROTO_TCP
    key = _new(CtTuple, (p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_OUT))
    ct_lookup(node, node.maps.ct_map(p.v6, p.proto), key, p.tcp_flags, tcp, reply=True,
              size=len(p.buf))


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
    # snat_v4_rev_nat_handle_mapping restores a missing forward entry from 1.20 on (nat.h:426).
    otuple = CtTuple(p.saddr, state.to_addr, p.sport, state.to_port, p.proto, TUPLE_F_OUT)
    if node.config.version != "1.18" and snat.lookup(otuple) is None:
        snat.update(otuple, NatEntry(p.daddr, p.dport, node.now), BPF_ANY)
    rewrite(p, False, state.to_addr, state.to_port)
    return True


_H = struct.Struct("!H")
ICMP_DEST_UNREACH, NR_ICMP_UNREACH, ICMP_TIME_EXCEEDED = 3, 15, 11
ICMP_ECHOREPLY, ICMP_ECHO, ICMPV6_ECHO_REQUEST = 0, 8, 128


def snat_rev_nat_icmp_error(node: Node, p: Parsed) -> bool:
    """snat_v4_rev_nat for an ICMP error (nat.h:1189-1234, v1.20) with
    snat_v4_rev_nat_handle_icmp_error (:1017-1125): the quote's source address and port back
    to the client's, the outer destination to the client; v1.20 also carries the quote's
    checksum effect into the ICMP checksum (:1108-1112, snat_v4_calc_icmp_error_csum_diff
    :552), v1.18 does not. False: not handled here (NAT_PUNT_TO_STACK). IPv4 only: the IPv6
    packet-too-big twin is _rev_nat_pkt_toobig6."""
    buf, off = p.buf, p.l4_off
    if p.v6:
        return _rev_nat_pkt_toobig6(node, p)
    if p.proto != IPPROTO_ICMP:
        return False
    v118 = node.config.version == "1.18"
    if p.is_frag and not v118:  # v1.20 drops an ICMP fragment (:1178-1179); v1.18 reads on
        raise DatapathDrop(DropReason.DROP_INVALID)
    if len(buf) < off + 8:  # a v1.18 later fragment: the header load fails (:1180-1181)
        raise DatapathDrop(DropReason.DROP_INVALID)
    typ, code = buf[off], buf[off + 1]
    if not ((typ == ICMP_DEST_UNREACH and code <= NR_ICMP_UNREACH)
            or (typ == ICMP_TIME_EXCEEDED and code in (0, 1))):
        return False
    inner = off + 8
    if len(buf) < inner + 20:
        raise DatapathDrop(DropReason.DROP_INVALID)
    ihl = (buf[inner] & 0xF) * 4
    iproto, l4 = buf[inner + 9], inner + ihl
    if iproto == IPPROTO_ICMP:
        return _quoted_icmp4(buf, l4)
    if iproto not in (IPPROTO_TCP, IPPROTO_UDP):
        return False
    if len(buf) < l4 + 4:
        raise DatapathDrop(DropReason.DROP_INVALID)
    old_addr = bytes(buf[inner + 12:inner + 16])
    old_port, dport = struct.unpack_from("!HH", buf, l4)
    snat = node.maps.snat4
    state = snat.lookup(CtTuple(old_addr, bytes(buf[inner + 16:inner + 20]), old_port, dport,
                                iproto, TUPLE_F_IN))
    if state is None:
        return False
    new_addr, new_port = state.to_addr, state.to_port
    # v1.20 tolerates a quote cut before its L4 checksum (:1092-1095, :1121-1123); v1.18
    # fails to fix it: DROP_CSUM_L4 (l4_modify_port, v1.18 nat.h:455-457, :465-467)
    has_csum = not (iproto == IPPROTO_TCP and len(buf) - inner < ihl + 18)
    if iproto == IPPROTO_UDP:
        if len(buf) < l4 + 8:  # v1.20 loads the UDP checksum (:1100-1102)
            raise DatapathDrop(DropReason.DROP_CSUM_L4 if v118 else DropReason.DROP_INVALID)
        has_csum = _H.unpack_from(buf, l4 + 6)[0] != 0
    elif v118 and not has_csum:
        raise DatapathDrop(DropReason.DROP_CSUM_L4)
    outer_diff = 0
    if not v118:  # snat_v4_calc_icmp_error_csum_diff, v1.20
        if has_csum:
            outer_diff = csum_diff(new_addr, old_addr) if old_addr != new_addr else 0
        elif old_port != new_port:
            outer_diff = csum_diff(_H.pack(old_port) + b"\0\0", _H.pack(new_port) + b"\0\0")
    # snat_v4_rewrite_headers on the quote: source address, its IP checksum, the port and
    # the L4 checksum (ports, then the pseudo header's address); an absent or zero L4
    # checksum stays as it is (DROP_CSUM_L4 tolerated, BPF_F_MARK_MANGLED_0)
    if "icmp_error_quote_kept" in node.faults:
        new_addr, new_port, outer_diff = old_addr, old_port, 0
    addr_diff = csum_diff(old_addr, new_addr)
    buf[inner + 12:inner + 16] = new_addr
    csum_fix(buf, inner + 10, addr_diff)
    csum_off = l4 + (16 if iproto == IPPROTO_TCP else 6)
    _H.pack_into(buf, l4, new_port)
    if has_csum:
        udp = iproto == IPPROTO_UDP
        csum_fix(buf, csum_off, csum_diff(_H.pack(old_port), _H.pack(new_port)), udp)
        csum_fix(buf, csum_off, addr_diff, udp)
    # the outer header (the `rewrite:` label): destination, IP checksum, ICMP checksum
    rewrite(p, False, state.to_addr, None)
    if outer_diff:
        csum_fix(buf, off + 2, outer_diff)
    return True


def _quoted_icmp4(buf: bytearray, l4: int) -> bool:
    """A quoted ICMP message (nat.h:1065-1083): an echo request's identifier is looked up,
    but only TCP/UDP are masqueraded here, so no ICMP mapping exists (NAT_PUNT_TO_STACK);
    an echo reply is punted, any other type is DROP_UNKNOWN_ICMP4_CODE."""
    if len(buf) < l4 + 1:
        raise DatapathDrop(DropReason.DROP_INVALID)
    typ = buf[l4]
    if typ == ICMP_ECHO:
        if len(buf) < l4 + 6:
            raise DatapathDrop(DropReason.DROP_INVALID)
        return False
    if typ != ICMP_ECHOREPLY:
        raise DatapathDrop(DropReason.DROP_UNKNOWN_ICMP4_CODE)
    return False


def _quote_hdrlen6(buf: bytearray, l3: int, v118: bool) -> tuple[int, int]:
    """ipv6_hdrlen_offset on the quoted header (v1.20 ipv6.h:119-161 with ipv6_skip_exthdr
    :77; v1.18 ipv6.h:43-81): its extension headers walked, at most IPV6_MAX_HEADERS
    iterations; v1.18 refuses a fragment header, v1.20 skips it."""
    nh, length = buf[l3 + 6], 40
    for _ in range(IPV6_MAX_HEADERS):
        if nh == IPPROTO_NONE:
            raise DatapathDrop(DropReason.DROP_INVALID_EXTHDR)
        if nh == IPPROTO_FRAGMENT and v118:
            raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT)
        if nh not in EXT_HDRS:
            return length, nh
        if len(buf) < l3 + length + 2:
            raise DatapathDrop(DropReason.DROP_INVALID)
        nxt, hl = buf[l3 + length], buf[l3 + length + 1]
        length += ext_hdr_len(nh, hl)
        nh = nxt
    raise DatapathDrop(DropReason.DROP_INVALID_EXTHDR)


def _rev_nat_pkt_toobig6(node: Node, p: Parsed) -> bool:
    """snat_v6_rev_nat for ICMPv6 packet-too-big (nat.h:2173-2188) with
    snat_v6_rev_nat_handle_icmp_pkt_toobig (:2027-2110): the same rewrite of the quote; no
    ICMPv6 checksum diff is needed, the quote's TCP/UDP checksum absorbs its address change
    (no IPv6 header checksum), and the outer destination's change goes through the ICMPv6
    pseudo header. v1.18 takes the quote to start 4 bytes early, at the MTU field (v1.18
    nat.h:1754-1755, sizeof(icmp6hdr) less its 4-byte echo part): it parses the MTU and
    the quote's first 36 bytes as the quoted header, so a real quote is not translated."""
    buf, off = p.buf, p.l4_off
    if p.proto != IPPROTO_ICMPV6:
        return False
    v118 = node.config.version == "1.18"
    if p.is_frag or (v118 and p.frag_hdr):  # v1.20 drops an ICMPv6 fragment (:2161-2162);
        # v1.18 cannot parse one, nor an atomic fragment
        raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT if v118 else DropReason.DROP_INVALID)
    if buf[off] != 2:  # the parser dropped a message shorter than its 8-byte header
        return False
    inner = off + (4 if v118 else 8)
    if len(buf) < inner + 40:
        raise DatapathDrop(DropReason.DROP_INVALID)
    hdrlen, iproto = _quote_hdrlen6(buf, inner, v118)
    l4 = inner + hdrlen
    if iproto == IPPROTO_ICMPV6:  # an echo request's identifier (:2085-2098), never mapped
        if len(buf) < l4 + 6 or buf[l4] != ICMPV6_ECHO_REQUEST:
            raise DatapathDrop(DropReason.DROP_INVALID)
        return False
    if iproto not in (IPPROTO_TCP, IPPROTO_UDP):
        return False
    if len(buf) < l4 + 4:
        raise DatapathDrop(DropReason.DROP_INVALID)
    old_addr = bytes(buf[inner + 8:inner + 24])
    old_port, dport = struct.unpack_from("!HH", buf, l4)
    state = node.maps.snat6.lookup(CtTuple(old_addr, bytes(buf[inner + 24:inner + 40]),
                                           old_port, dport, iproto, TUPLE_F_IN))
    if state is None:
        return False
    new_addr, new_port = state.to_addr, state.to_port
    if "icmp_error_quote_kept" in node.faults:
        new_addr, new_port = old_addr, old_port
    buf[inner + 8:inner + 24] = new_addr
    _H.pack_into(buf, l4, new_port)
    csum_off = l4 + (16 if iproto == IPPROTO_TCP else 6)
    if len(buf) < csum_off + 2:
        # a quote cut before its L4 checksum: unlike v4 in v1.20 nothing tolerates the failed
        # fix, snat_v6_rewrite_headers returns DROP_CSUM_L4 (:1622-1629), unless nothing
        # changes (:1593-1594)
        if new_addr != old_addr or new_port != old_port:
            raise DatapathDrop(DropReason.DROP_CSUM_L4)
    else:
        udp = iproto == IPPROTO_UDP
        csum_fix(buf, csum_off, csum_diff(_H.pack(old_port), _H.pack(new_port)), udp)
        csum_fix(buf, csum_off, csum_diff(old_addr, new_addr), udp)
    rewrite(p, False, state.to_addr, None)
    return True
