"""DSR dispatch ipip on bytes: the LB node's encapsulation, v1.20's termination on the backend's."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.config import NodeConfig
from datapath.conntrack import ct_create, ct_lookup
from datapath.csum import checksum, csum_diff, csum_fix
from datapath.drop import DatapathDrop, DropReason, Verdict
from datapath.maps import TUPLE_F_SERVICE, CtEntry, CtTuple, LbBackend, LbService
from datapath.packet import IPPROTO_TCP, Parsed, ip_bytes

if TYPE_CHECKING:
    from datapath.host import Node

IPPROTO_IPIP = 4  # IPv4 in IP (the outer protocol / next header)
IPPROTO_IPV6 = 41  # IPv6 in IP
IPDEFTTL = 64  # include/linux/ip.h: the tunnel key's and dsr_set_ipip4's outer TTL
_H = struct.Struct("!H")


def ipip_forward(node: Node, p: Parsed, backend: bytes) -> tuple[int, str]:
    """tail_nodeport_ipv4/6_dsr with DSR_ENCAP_IPIP: the request, not DNATed
    (nodeport_skip_xlate4, v1.20 nodeport.h:1642-1653), goes to the backend's address.

    At XDP (dsr_set_ipip4, :1696-1750; v1.18 :1469-1520) the program writes the outer
    header itself: a copy of the inner one with tot_len grown by 20, TTL IPDEFTTL, protocol
    IPIP, source rss_gen_src4 (IPV4_RSS_PREFIX = IPV4_DIRECT_ROUTING with 32 bits: the
    node's address) and the backend as destination, its checksum updated by difference;
    fib_redirect's ipv4_l3 then decrements that outer TTL (xdp_nodeport_lb_dsr_ipip.c's
    0xa6ff). IPv6 (dsr_set_ipip6, :302-340): payload_len grown by 40, next header 41, hop
    limit IPDEFTTL (not decremented after), source IPV6_RSS_PREFIX (IPV6_DIRECT_ROUTING),
    flow label kept.

    On tc (v1.20 only: dsr_set_ipip4_dev, :1659-1681) the program sets a tunnel key
    {remote = backend, tunnel_id 0, ttl IPDEFTTL} and redirects to cilium_ipip4/6
    (ENCAP4/6_IFINDEX); the kernel's collect-md device writes the outer header. The
    reference writes it as that device would: TTL 64, DF clear, the ECN bits of the inner
    TOS, IP id 0 (the kernel's ip_select_ident differs), source the node's address (the
    route's source, TUNNEL_KEY_WITHOUT_SRC_IP)."""
    from datapath.nodeport import frag_needed, too_big
    outer = 40 if p.v6 else 20
    if node.at_xdp:
        if too_big(node, p, outer):  # dsr_set_ipip4/6's dsr_is_too_big, XDP only
            # dsr_reply_icmp4/6 write "the frontend" into the quote from CB_ADDR_V4 and
            # CB_PORT: under IPIP the backend's address and, CB_PORT aliasing CB_HINT
            # (common.h:329-330), the CT tuple's dport, the client's port (:2903-2905)
            return frag_needed(node, p, backend, p.sport, outer)
        p.buf[:] = _xdp_header(node, p, backend) + p.buf
        if p.v6:  # tail_nodeport_ipv6_dsr's fib_redirect has no hop-limit step (:766,
            return Verdict.CTX_ACT_REDIRECT, "netdev"  # lib/fib.h:163-240)
        return node.fib_redirect(p)  # fib_redirect_v4 (:2137): the outer TTL drops
    p.buf[:] = _kernel_header(node, p, backend) + p.buf
    return Verdict.CTX_ACT_REDIRECT, "cilium_ipip6" if p.v6 else "cilium_ipip4"


def _xdp_header(node: Node, p: Parsed, backend: bytes) -> bytes:
    buf = p.buf
    src = node.snat_addr(p.v6)
    if "ipip_outer_src_client" in node.faults:
        src = p.saddr
    if p.v6:
        h = bytearray(buf[:40])
        _H.pack_into(h, 4, (_H.unpack_from(buf, 4)[0] + 40) & 0xFFFF)
        h[6], h[7] = IPPROTO_IPV6, IPDEFTTL
        h[8:24], h[24:40] = src, backend
        return bytes(h)
    # the inner header's first 20 bytes, its IHL byte included (an inner header with
    # options gives an outer one that claims them: malformed, docs/ipip.md), the fields of
    # dsr_set_ipip4's tp_old/tp_new replaced and the checksum updated by their difference
    h = bytearray(buf[:20])
    old = bytes(h[2:4]) + b"\0\0\0\0" + bytes(h[8:10]) + bytes(h[12:20])
    _H.pack_into(h, 2, (_H.unpack_from(buf, 2)[0] + 20) & 0xFFFF)
    h[8], h[9] = IPDEFTTL, IPPROTO_IPIP
    h[12:16], h[16:20] = src, backend
    new = bytes(h[2:4]) + b"\0\0\0\0" + bytes(h[8:10]) + bytes(h[12:20])
    csum_fix(h, 10, csum_diff(old, new))
    return bytes(h)


def kernel_ipip(config: NodeConfig, inner: bytes, remote: bytes) -> bytes:
    """The packet a collect-md IPIP device sends for a tunnel key {remote} (cilium-bpf's
    adapter, after bpf_host redirected to it): the header _kernel_header writes."""
    v6 = len(remote) == 16
    src = ip_bytes((config.ipv6 if v6 else config.ipv4) or ("::" if v6 else "0.0.0.0"))
    return _outer_for(bytearray(inner), v6, src, remote) + inner


def _kernel_header(node: Node, p: Parsed, backend: bytes) -> bytes:
    src = node.snat_addr(p.v6)
    if "ipip_outer_src_client" in node.faults:
        src = p.saddr
    return _outer_for(p.buf, p.v6, src, backend)


def _ecn_encapsulate(inner_dsfield: int) -> int:
    """INET_ECN_encapsulate(0, inner) (include/net/inet_ecn.h): the outer TOS is the inner's
    ECN field, except that congestion experienced (CE) becomes ECT(0)."""
    ecn = inner_dsfield & 0x3
    return 0x2 if ecn == 0x3 else ecn


def _outer_for(buf: bytearray, v6: bool, src: bytes, backend: bytes) -> bytes:
    if v6:
        ecn = _ecn_encapsulate((buf[0] << 4 | buf[1] >> 4) & 0xFF)
        first = (6 << 28) | (ecn << 20)
        return struct.pack("!IHBB16s16s", first, len(buf), IPPROTO_IPV6, IPDEFTTL,
                           src, backend)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, _ecn_encapsulate(buf[1]), 20 + len(buf), 0, 0,
                    IPDEFTTL, IPPROTO_IPIP, 0, src, backend)
    return h[:10] + _H.pack(checksum(h)) + h[12:]


def terminate(node: Node, buf: bytearray) -> bytes | None:
    """cil_from_netdev's IPIP termination (v1.20 bpf_host.c:1149-1175, v6 :1061-1090):
    under enable_ipip_termination an IPIP (IPv4, ihl 5) / IPv6-in-IPv6 packet whose outer
    destination is a local endpoint loses its outer header; the destination is returned
    as the forced backend (CB_FORCED_BACKEND_V4). None: left as it is. A packet with less
    than a second base header behind the outer one is DROP_INVALID, where Cilium's
    bpf_skb_adjust_room refuses to shrink below one (bpf_host.c:1158-1161, v6 :1072-1075):
    here the parse of what is left drops it, with the same reason."""
    c = node.config
    if not c.ipip_termination or c.version != "1.20" or len(buf) < 20:
        return None
    if buf[0] >> 4 == 4:
        if buf[9] != IPPROTO_IPIP or buf[0] & 0xF != 5:
            return None
        dst, hdr = bytes(buf[16:20]), 20
    elif buf[0] >> 4 == 6 and len(buf) >= 40 and buf[6] == IPPROTO_IPV6:
        dst, hdr = bytes(buf[24:40]), 40
    else:
        return None
    if dst not in node.lxc_eps:
        return None
    del buf[:hdr]
    return dst


def forced_local(node: Node, p: Parsed, svc: LbService, forced: bytes
                 ) -> tuple[int, LbBackend, bool]:
    """lb4_local with a forced backend (v1.20 lb.h:2183-2206): the CT_SERVICE entry is
    looked up or created with backend_id 0, and the backend is the outer destination with
    port 0, so lb4_dnat_request keeps the frontend's port (lb.h:2325-2326)."""
    tcp = p.proto == IPPROTO_TCP
    m = node.maps
    ct = (m.ct6_tcp if tcp else m.ct6_any) if p.v6 else (m.ct4_tcp if tcp else m.ct4_any)
    tup = CtTuple(p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_SERVICE)
    entry = ct_lookup(node, ct, tup, p.tcp_flags, tcp, True, size=len(p.buf))
    if entry is None:
        new = CtEntry(backend_id=0, rev_nat_index=svc.rev_nat_index)
        if not ct_create(node, ct, tup, new, tcp, True, size=len(p.buf)):
            raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)
    return 0, LbBackend(forced, 0, p.proto), entry is None
