"""NodePort request/reply handling (bpf/lib/nodeport.h, nodeport_egress.h)."""

from __future__ import annotations

import functools
import struct
import zlib
from typing import TYPE_CHECKING

from datapath.build import (
    dsr_opt4_bytes,
    dsr_opt6_bytes,
    geneve_dsr_opt,
    geneve_encap,
)
from datapath.conntrack import WORLD_IPV4_ID, WORLD_IPV6_ID, ct_create, ct_lookup
from datapath.csum import csum_fix, ones_sum
from datapath.drop import XFER_PKT_NO_SVC, DatapathDrop, DropReason, Verdict
from datapath.fragments import load_l4_ports
from datapath.icmp import dsr_reply_icmp4, dsr_reply_icmp6, no_service
from datapath.ipip import forced_local, ipip_forward
from datapath.lb import lb_local, lb_lookup_service, rewrite, src_range_ok
from datapath.maglev import tuple_hash
from datapath.maps import (
    SVC_FLAG_EXT_LOCAL_SCOPE,
    SVC_FLAG_FWD_MODE_DSR,
    SVC_FLAG_ROUTABLE,
    SVC_FLAG_SOURCE_RANGE,
    SVC_FLAG_SOURCE_RANGE_DENY,
    TUPLE_F_OUT,
    CtEntry,
    CtTuple,
    LbBackend,
    LbKey,
    LbService,
    NatEntry,
)
from datapath.nat import snat_nat
from datapath.packet import (
    IPPROTO_DSTOPTS,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    TCP_SYN,
    Parsed,
)

if TYPE_CHECKING:
    from datapath.host import Node

# The Geneve VNI is the sender's security identity: nodeport traffic is world's, WORLD_ID on
# the wire for both families (get_tunnel_id, lib/common.h:121); a pod's packet leaves bpf_lxc
# with the pod's (bpf_lxc.c:1340), one identity for every pod here.
WORLD_ID = 2
REMOTE_NODE_ID = 6  # the VNI of a reply tunnelled to a cluster client (nodeport.h:2343)
HOST_ID = 1  # v1.18 bpf_host's SECLABEL: the host endpoint's identity (reserved:host)
POD_IDENTITY = 1000
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")


_new = tuple.__new__  # NamedTuple construction without the Python-level __new__


def nodeport_ct_key(p: Parsed) -> CtTuple:
    """Reversed lb4_extract_tuple of the (DNATed) request with TUPLE_F_OUT: {b, c, cp, bp}."""
    return _new(CtTuple, (p.saddr, p.daddr, p.dport, p.sport, p.proto, TUPLE_F_OUT))


def reply_ct_key(p: Parsed) -> CtTuple:
    """lb4_extract_tuple of a reply B->C with flags forced to OUT: same key as above."""
    return _new(CtTuple, (p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_OUT))


def nodeport_lb(node: Node, p: Parsed) -> tuple[int, str] | None:
    """nodeport_lb4(): returns (verdict, target) when handled, None when no service matched."""
    found = lb_lookup_service(node, p)
    if found is None:
        return None
    key, svc = found
    _svc_checks(node, p, key, svc)
    vip, vport = p.daddr, p.dport
    try:
        if node.forced_backend is not None:  # v1.20 IPIP termination (datapath/ipip.py)
            _backend_id, be, ct_new = forced_local(node, p, svc, node.forced_backend)
        else:
            _backend_id, be, ct_new = lb_local(node, p, key, svc)
    except DatapathDrop as d:
        if d.reason != DropReason.DROP_NO_SERVICE:
            raise
        return no_service(node, p, svc)
    baddr = be.address
    if node.ipip_dispatch and node.config.version == "1.18" and (
            node.mode == "dsr" and baddr in node.lxc_eps):
        # v1.18 nodeport_xlate4/6 (v1.18 nodeport.h:1441-1449, :180-188) skips the DNAT of
        # every DSR service under IPIP, a local backend's too; that backend is handed on
        # untranslated (XFER_PKT_NO_SVC at XDP, :2652-2655). v1.20 DNATs it (:1642-1653).
        # The CT_EGRESS entry is written first, keyed by lb4_local's tuple: the backend's
        # address with the frontend's port (:2619-2640).
        vip_addr, p.daddr = p.daddr, baddr
        try:
            _nodeport_ct_egress(node, p, svc)
        finally:
            p.daddr = vip_addr
        node.xfer |= XFER_PKT_NO_SVC
        return node.local_delivery(p)
    if node.ipip_dispatch and baddr not in node.lxc_eps and (
            node.mode == "dsr" or (node.mode == "hybrid" and svc.flags2 & SVC_FLAG_FWD_MODE_DSR)):
        if "ipip_dnats_inner" in node.faults:
            rewrite(p, False, baddr, be.port or None, node.dnat_csum)
        return ipip_forward(node, p, baddr)
    # lb4_dnat_request(): destination -> backend, port only when the backend has one.
    rewrite(p, False, baddr, be.port or None, node.dnat_csum)
    ep = node.lxc_eps.get(baddr)
    if ep is None:
        mode = node.mode  # nodeport_uses_dsr(), inlined
        if mode == "dsr" or (mode == "hybrid" and svc.flags2 & SVC_FLAG_FWD_MODE_DSR):
            return _dsr_forward(node, p, be, vip, vport, ct_new)
    _nodeport_ct_egress(node, p, svc)
    if ep is not None:
        node.xfer |= XFER_PKT_NO_SVC  # at XDP: tc only delivers (nodeport.h:2865-2868)
        return node.local_delivery(p)
    target = node.snat_addr(p.v6)
    tep = node.maps.ipcache.lookup(baddr) if node.tunnel else None
    if p.is_frag:  # tail_nodeport_nat_egress_ipv4's lb4_extract_tuple (nodeport.h:2621)
        load_l4_ports(node, p)
    if tep is None:
        snat_nat(node, p, target)
        return node.fib_redirect(p)
    # tail_nodeport_nat_egress_ipv4 (nodeport.h:2592-2598; v6 :1258): towards a tunnel
    # endpoint the SNAT source is cilium_host's IPV4_GATEWAY / router_ipv6, the TTL drops
    # (ipv4_l3, :2635) and the packet goes into the tunnel tagged WORLD_ID (:2650-2668).
    node.dec_ttl(p)
    snat_nat(node, p, node.router_addr(p.v6) or target)
    sport = xdp_tunnel_sport(node, p, p.sport, p.dport) if node.at_xdp else None
    encapsulate(node, p, tep, b"", sport=sport)
    return node.tunnel_redirect()


def xdp_tunnel_sport(node: Node, p: Parsed, tuple_sport: int, tuple_dport: int) -> int:
    """tunnel_gen_src_port_v4/v6 at XDP (lib/encap.h:92-110): the CT tuple's hash folded
    to 16 bits, `(hash >> 16) ^ (__be16)hash`, stored unconverted in the network-order
    field. At tc the device picks the port (encapsulate's stand-in)."""
    seed = node.config.hash_seed6 if p.v6 else node.config.hash_seed4
    h = tuple_hash(p.saddr, _H.pack(tuple_sport), _H.pack(tuple_dport), p.proto, seed)
    folded = ((h >> 16) ^ h) & 0xFFFF
    return int.from_bytes(folded.to_bytes(2, "little"), "big")


def _svc_checks(node: Node, p: Parsed, key: LbKey, svc: LbService) -> None:
    """nodeport_svc_lb4's first checks: wildcard entry, source range, routable."""
    if key.dport == 0 and key.proto == 0:
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    if svc.flags & SVC_FLAG_SOURCE_RANGE and not src_range_ok(
            node, p, svc, bool(svc.flags2 & SVC_FLAG_SOURCE_RANGE_DENY)):
        raise DatapathDrop(DropReason.DROP_NOT_IN_SRC_RANGE)
    if not svc.flags & SVC_FLAG_ROUTABLE and node.clusterip_check:
        raise DatapathDrop(DropReason.DROP_IS_CLUSTER_IP)


def xdp_punts_etp_local(node: Node, p: Parsed) -> bool:
    """v1.20 at XDP: after those checks an eTP=Local service goes to tc untouched and
    without XFER_PKT_NO_SVC (nodeport.h:2732, v6 :1398; lb_punt_etp_local, lb.h:648-655)."""
    found = lb_lookup_service(node, p)
    if found is None or not found[1].flags & SVC_FLAG_EXT_LOCAL_SCOPE:
        return False
    _svc_checks(node, p, *found)
    return True


def encapsulate(node: Node, p: Parsed, tep: bytes, opt: bytes, identity: int = WORLD_ID,
                sport: int | None = None) -> None:
    """Outer IP (the node's own address of the underlay family)/UDP 6081/Geneve + inner;
    the VNI carries the sender's identity. Without `sport` (the program's own), the outer
    source port stands in for the device's choice: a flow hash in 32768-61000."""
    inner = bytes(p.buf)
    if sport is None:
        h = zlib.crc32(p.saddr + p.daddr + _H.pack(p.sport) + _H.pack(p.dport))
        sport = 32768 + h % (61000 - 32768)
    vni = 0 if "geneve_wrong_vni" in node.faults else identity
    p.buf[:] = geneve_encap(node.snat_addr(len(tep) == 16), tep, inner, vni, opt, sport, p.v6)


def _nodeport_ct_egress(node: Node, p: Parsed, svc: LbService) -> None:
    """CT_EGRESS entry with node_port=1; a rev_nat_index mismatch recreates it (GH#10983)."""
    v6 = p.v6
    proto = p.proto
    tcp = proto == IPPROTO_TCP
    maps = node.maps
    ct = (maps.ct6_tcp if tcp else maps.ct6_any) if v6 else (
        maps.ct4_tcp if tcp else maps.ct4_any)
    key = _new(CtTuple, (p.saddr, p.daddr, p.dport, p.sport, proto, TUPLE_F_OUT))
    e = ct_lookup(node, ct, key, p.tcp_flags, tcp, size=len(p.buf))
    if e is not None and e.node_port and (
            e.rev_nat_index == svc.rev_nat_index or node.keep_stale_revnat):
        return
    new = CtEntry(node_port=True, rev_nat_index=svc.rev_nat_index,
                  src_sec_id=WORLD_IPV6_ID if v6 else WORLD_IPV4_ID)
    if not ct_create(node, ct, key, new, tcp, size=len(p.buf)):
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)


def _wants_dsr_info(node: Node, p: Parsed, every_tcp_fault: str, ct_new: bool) -> bool:
    if p.proto == IPPROTO_TCP:
        return p.tcp_flags & TCP_SYN != 0 or every_tcp_fault in node.faults
    if p.proto == IPPROTO_UDP and "dsr_udp_opt_first_only" in node.faults:
        return ct_new
    return True


def _dsr_forward(node: Node, p: Parsed, be: LbBackend, vip: bytes, vport: int,
                 ct_new: bool) -> tuple[int, str]:
    """tail_nodeport_ipv4_dsr(): opt or Geneve dispatch, then redirect; a request the
    DSR metadata would push over the device MTU is answered with ICMP under
    enable-pmtu-discovery (dsr_is_too_big, nodeport.h:192-200)."""
    if not node.opt_dispatch:
        if p.is_frag and p.v6 and node.maps.ipcache.lookup(be.address) is not None:
            # encap_geneve_dsr_opt6's lb6_extract_tuple on the DNATed packet (v1.20
            # nodeport.h:437; the IPv4 twin extracts only under XDP, :1830-1836)
            load_l4_ports(node, p)
        opt = b""
        if _wants_dsr_info(node, p, "geneve_opt_every_tcp", ct_new):
            opt = geneve_dsr_opt(vip, vport)
        tep = node.maps.ipcache.lookup(be.address)
        if tep is None:  # before the MTU check (nodeport.h:1843, :1867)
            raise DatapathDrop(DropReason.DROP_NO_TUNNEL_ENDPOINT)
        # encap_geneve_dsr_opt4/6 (:1823-1824, :1863, :415-416, :455): outer IP (the v6
        # one counts an ipv6hdr), UDP, Geneve, inner Ethernet, and the TLV when there is one
        encap = (40 if p.v6 else 20) + 8 + 8 + 14 + len(opt)
        if too_big(node, p, encap):
            return frag_needed(node, p, vip, vport, encap)
        # at XDP the outer source port hashes lb4/6_extract_tuple's tuple of the DNATed
        # packet, whose sport field holds the packet's destination port (nodeport.h:1840)
        sport = xdp_tunnel_sport(node, p, p.dport, p.sport) if node.at_xdp else None
        encapsulate(node, p, tep, opt, sport=sport)
        return node.tunnel_redirect()
    if _wants_dsr_info(node, p, "dsr_opt_every_tcp_packet", ct_new):
        if p.v6:
            if too_big(node, p, 24):  # dsr_set_ext6 (:380): struct dsr_opt_v6
                return frag_needed(node, p, vip, vport, 24)
            dsr_set_ext6(node, p, vip, vport)
        else:
            if (p.buf[0] & 0xF) * 4 + 8 <= 60 and too_big(node, p, 8):
                # dsr_set_opt4 (:1785, after its header limit): struct dsr_opt_v4
                return frag_needed(node, p, vip, vport, 8)
            dsr_set_opt4(node, p, vip, vport)
    return node.fib_redirect(p)


def _l3_len(p: Parsed) -> int:
    """The request's length from its header: tot_len, or payload_len plus the fixed header."""
    if p.v6:
        return int(_H.unpack_from(p.buf, 4)[0]) + 40
    return int(_H.unpack_from(p.buf, 2)[0])


def too_big(node: Node, p: Parsed, overhead: int) -> bool:
    """dsr_is_too_big(): only with ENABLE_DSR_ICMP_ERRORS, against the device MTU."""
    return node.config.pmtu_discovery and _l3_len(p) + overhead > node.config.mtu


def frag_needed(node: Node, p: Parsed, vip: bytes, vport: int, overhead: int
                ) -> tuple[int, str]:
    """dsr_fail_needs_reply(): the ICMP error goes back out the receiving device."""
    mtu = node.config.mtu
    if "dsr_mtu_keeps_overhead" not in node.faults:
        mtu -= overhead
    if p.v6:
        dsr_reply_icmp6(node, p, vip, vport, mtu)
    else:
        dsr_reply_icmp4(node, p, vip, vport, mtu)
    return Verdict.CTX_ACT_REDIRECT, "netdev"


@functools.lru_cache(maxsize=1024)
def _opt4(vip: bytes, vport: int, network_order: bool) -> tuple[bytes, int]:
    opt = dsr_opt4_bytes(vip, vport, network_order=network_order)
    return opt, ones_sum(opt)


def dsr_set_opt4(node: Node, p: Parsed, vip: bytes, vport: int) -> None:
    """dsr_set_opt4(): insert the 8-byte option after the base header, fix ihl/tot_len/csum."""
    buf = p.buf
    ihl = (buf[0] & 0xF) * 4
    if ihl + 8 > 60:
        raise DatapathDrop(DropReason.DROP_CT_INVALID_HDR)
    opt, opt_sum = _opt4(vip, vport, "dsr_opt_network_order" in node.faults)
    at = ihl if "dsr_opt_wrong_offset" in node.faults else 20
    w0, w1 = _HH.unpack_from(buf, 0)
    buf[at:at] = opt
    buf[0] = 0x40 | ((ihl + 8) // 4)
    _H.pack_into(buf, 2, w1 + 8)
    if "ipv4_csum_not_updated_on_opt" not in node.faults:
        # bpf_csum_diff(old first word, new first word, seeded with the option's sum)
        n0, n1 = _HH.unpack_from(buf, 0)
        diff = opt_sum + n0 + n1 + (0xFFFF - w0) + (0xFFFF - w1)
        csum_fix(buf, 10, diff)
    p.l4_off += 8
    p.l3_len += 8


@functools.lru_cache(maxsize=1024)
def _ext6(nexthdr: int, vip: bytes, vport: int, port_le: bool) -> bytes:
    # One header per frontend and next header, built once rather than per SYN.
    return dsr_opt6_bytes(nexthdr, vip, vport, port_le=port_le)


def dsr_set_ext6(node: Node, p: Parsed, vip: bytes, vport: int) -> None:
    """dsr_set_ext6(): insert the 24-byte DEST header right after the fixed header."""
    buf = p.buf
    ext = _ext6(buf[6], vip, vport, "dsr_ipv6_port_le" in node.faults)
    buf[40:40] = ext
    buf[6] = IPPROTO_DSTOPTS
    _H.pack_into(buf, 4, _H.unpack_from(buf, 4)[0] + 24)
    p.l4_off += 24
    p.l3_len += 24


def dsr_ingress(node: Node, p: Parsed, info: tuple[bytes, int] | None) -> bool:
    """nodeport_extract_dsr + nodeport_dsr_ingress: maintain the dsr_internal CT entry."""
    ct = node.maps.ct_map(p.v6, p.proto)
    key = nodeport_ct_key(p)
    tcp = p.proto == IPPROTO_TCP
    syn = tcp and bool(p.tcp_flags & TCP_SYN)
    if tcp and not syn:
        e0 = ct.lookup(key)
        dsr = e0 is not None and e0.dsr_internal
        info = None
    else:
        dsr = info is not None
        if syn and not dsr and "dsr_keep_flag_on_plain_syn" not in node.faults:
            e0 = ct.lookup(key)
            if e0 is not None:
                e0.dsr_internal = False
    if not dsr:
        return False
    e = ct_lookup(node, ct, key, p.tcp_flags, tcp, size=len(p.buf))
    if e is not None and e.dsr_internal and not (tcp and info is not None):
        return True
    if info is None:
        if e is not None and e.dsr_internal:
            return True
        raise DatapathDrop(DropReason.DROP_INVALID)
    vip, vport = info
    if vport == 0:
        raise DatapathDrop(DropReason.DROP_INVALID)
    # v1.18 keeps the frontend in the SNAT map (snat_v4_create_dsr, v1.18 nodeport.h:2036,
    # nat.h:504: key {b, c, bp, cp} OUT), v1.20 in the CT entry itself.
    no_info = "dsr_ct_no_nat_info" in node.faults or node.config.version == "1.18"
    new = CtEntry(dsr_internal=True, src_sec_id=WORLD_IPV6_ID if p.v6 else WORLD_IPV4_ID,
                  nat_addr=b"" if no_info else vip, nat_port=0 if no_info else vport)
    if not ct_create(node, ct, key, new, tcp, size=len(p.buf)):
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)
    if node.config.version == "1.18":
        snat = node.maps.snat6 if p.v6 else node.maps.snat4
        skey = _new(CtTuple, (key.daddr, key.saddr, key.sport, key.dport, key.nexthdr,
                              TUPLE_F_OUT))
        if not snat.update(skey, NatEntry(vip, vport, node.now)):
            raise DatapathDrop(DropReason.DROP_NAT_NO_MAPPING)
    return True


def rev_dnat(node: Node, p: Parsed, dsr_ok: bool) -> bool:
    """nodeport_rev_dnat_ipv4 / nodeport_rev_dnat_fwd_ipv4: source back to the frontend;
    True when the CT lookup said CT_REPLY (a nodeport or DSR entry answered)."""
    if not p.frag_first or p.proto not in PORT_PROTOS:
        return False
    ct = node.maps.ct_map(p.v6, p.proto)
    e = ct_lookup(node, ct, reply_ct_key(p), p.tcp_flags, p.proto == IPPROTO_TCP,
                  reply=True, size=len(p.buf))
    if e is None:
        return False
    if e.node_port and e.rev_nat_index:
        # CT_REPLY: lb4_rev_nat() without a reverse NAT entry rewrites nothing and is no
        # error (lb.h:1650-1653); the caller still routes the reply (nodeport.h:2336-2346).
        revnat = (node.maps.lb6_reverse_nat if p.v6 else node.maps.lb4_reverse_nat).lookup(
            e.rev_nat_index)
        if revnat is not None:
            rewrite(p, True, revnat.address, revnat.port or None)
        return True
    if dsr_ok and e.dsr_internal:
        if e.nat_port:
            rewrite(p, True, e.nat_addr, e.nat_port)
            return True
        snat = node.maps.snat6 if p.v6 else node.maps.snat4
        st = snat.lookup(CtTuple(p.daddr, p.saddr, p.dport, p.sport, p.proto, TUPLE_F_OUT))
        if st is not None:
            rewrite(p, True, st.to_addr, st.to_port)
            return True
    return False
