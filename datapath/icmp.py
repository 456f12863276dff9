"""A service without backends: what gates the answer, the ICMP error Cilium builds, and the
ICMPv6 rate limit (bpf/lib/lb.h tail_no_service_ipv4/6, icmp.h, icmp6.h, ratelimit.h)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.build import icmp4_message, icmp6_message, ipv4, ipv6
from datapath.csum import checksum
from datapath.drop import DatapathDrop, DropReason, Verdict
from datapath.maps import (
    SVC_FLAG_EXT_LOCAL_SCOPE,
    SVC_FLAG_EXTERNAL_IP,
    SVC_FLAG_INT_LOCAL_SCOPE,
    SVC_FLAG_LOADBALANCER,
    SVC_FLAG_NODEPORT,
    LbService,
    RatelimitKey,
    RatelimitValue,
)
from datapath.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, Parsed

if TYPE_CHECKING:
    from datapath.host import Node

ETH_HLEN = 14
# The sample an ICMP error quotes: ctx_full_len() (the frame, Ethernet header included)
# capped at these sizes, copied from the IP header on; a shorter frame is padded with the
# zeros ctx_adjust_troom() grows it by (v1.20 icmp.h:17, icmp6.h:573; v1.18 lb.h:1912, 2049).
ICMP_PACKET_MAX_SAMPLE_SIZE = 64
ICMPV6_PACKET_MAX_SAMPLE_SIZE = 1280 - 40 - 8
IPDEFTTL = 64
# The reply's type/code: ICMP_DEST_UNREACH/ICMP_PORT_UNREACH (lb.h:2345) and
# ICMPV6_DEST_UNREACH/ICMPV6_PORT_UNREACH (lb.h:2383), as <linux/icmp.h>/<linux/icmpv6.h>
# number them. Written here, not shared with the parser or the abstraction, so that a
# wrong value cannot hide itself; vectors/no_backend_reject.yaml pins them.
ICMP_DEST_UNREACH, ICMP_PORT_UNREACH = 3, 3
ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH = 1, 4
# DSR's PMTU answers (dsr_reply_icmp4/6, nodeport.h:1977-2091, 592-695): ICMP_DEST_UNREACH/
# ICMP_FRAG_NEEDED and ICMPV6_PKT_TOOBIG; the v4 error quotes the request's IP header and
# 8 bytes after it (orig_dgram, :1984), the v6 one the fixed header and 64 bytes (:599).
ICMP_FRAG_NEEDED = 4
ICMPV6_PKT_TOOBIG = 2
IP_DF = 0x4000
DSR_QUOTE4 = 8
DSR_QUOTE6 = 64
# ratelimit.h: RATELIMIT_USAGE_ICMPV6 and tail_no_service_ipv6's settings (lb.h:2370):
# 100 replies per second, bursts up to 1000, per receiving device.
RATELIMIT_USAGE_ICMPV6 = 1
ICMPV6_BUCKET_SIZE = 1000
ICMPV6_TOKENS_PER_TOPUP = 100
NSEC_PER_SEC = 1_000_000_000
# The receiving device's ifindex: BPF_PROG_TEST_RUN runs programs on lo (ifindex 1), the
# key Cilium's tests look up (bpf/tests/lib/icmp.h validate_icmpv6_reply, dst_idx = 1).
NETDEV_IFINDEX = 1


def no_service(node: Node, p: Parsed, svc: LbService) -> tuple[int, str]:
    """lb4_local said DROP_NO_SERVICE: pass it on, drop it, or answer ICMP (nodeport.h:2797
    in v1.20; v1.18 has no routable gate, nodeport.h:2574)."""
    if not node.config.no_service_endpoints_routable:
        # handle_nonroutable_endpoints_v4 (lb.h:2404): eTP/iTP=Local drops, the rest goes on
        # to the stack untranslated.
        external = svc.flags & (SVC_FLAG_EXTERNAL_IP | SVC_FLAG_LOADBALANCER |
                                SVC_FLAG_NODEPORT)
        if (external and svc.flags & SVC_FLAG_EXT_LOCAL_SCOPE) or (
                not external and svc.flags2 & SVC_FLAG_INT_LOCAL_SCOPE):
            raise DatapathDrop(DropReason.DROP_NO_SERVICE)
        return node.local_delivery(p)
    if node.config.no_backend_response != "reject":  # SERVICE_NO_BACKEND_RESPONSE unset
        raise DatapathDrop(DropReason.DROP_NO_SERVICE)
    if p.v6:
        if not ratelimit_take(node):
            raise DatapathDrop(DropReason.DROP_RATE_LIMITED)
        generate_icmp6_reply(p, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH)
    else:
        generate_icmp4_reply(p, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH)
    node.rejected = DropReason.DROP_NO_SERVICE
    return Verdict.CTX_ACT_REDIRECT, "netdev"  # redirect_self(): out the receiving device


def _sample(p: Parsed, cap: int) -> bytes:
    """The first min(frame length, cap) bytes from the IP header on, zero-padded."""
    n = min(len(p.buf) + ETH_HLEN, cap)
    return bytes(p.buf[:n]).ljust(n, b"\0")


def generate_icmp4_reply(p: Parsed, icmp_type: int, code: int) -> None:
    """generate_icmp4_reply(): reversed addresses, the request's TOS, id 0, TTL 64."""
    tos = p.buf[1]
    msg = icmp4_message(icmp_type, code, b"\0" * 4, _sample(p, ICMP_PACKET_MAX_SAMPLE_SIZE))
    p.buf[:] = ipv4(p.daddr, p.saddr, IPPROTO_ICMP, msg, ttl=IPDEFTTL, tos=tos)


def generate_icmp6_reply(p: Parsed, icmp_type: int, code: int) -> None:
    """generate_icmp6_reply(): reversed addresses, traffic class and flow label 0."""
    msg = icmp6_message(p.daddr, p.saddr, icmp_type, code, b"\0" * 4,
                        _sample(p, ICMPV6_PACKET_MAX_SAMPLE_SIZE))
    p.buf[:] = ipv6(p.daddr, p.saddr, IPPROTO_ICMPV6, msg, hlim=IPDEFTTL)


def ratelimit_take(node: Node) -> bool:
    """ratelimit_check_and_take() for the ICMPv6 bucket of the receiving device: a new
    bucket starts with one top-up less the token taken; whole elapsed intervals top up
    (strictly more than one interval since the last), capped at the bucket size."""
    m = node.maps.ratelimit
    key = RatelimitKey(RATELIMIT_USAGE_ICMPV6, NETDEV_IFINDEX)
    now = node.now * NSEC_PER_SEC
    v = m.lookup(key)
    if v is None:
        return m.update(key, RatelimitValue(now, ICMPV6_TOKENS_PER_TOPUP - 1))
    since = now - v.last_topup
    if since > NSEC_PER_SEC:
        v.tokens = min(v.tokens + since // NSEC_PER_SEC * ICMPV6_TOKENS_PER_TOPUP,
                       ICMPV6_BUCKET_SIZE)
        v.last_topup = now - since % NSEC_PER_SEC
    if v.tokens > 0:
        v.tokens -= 1
        return True
    return False


def dsr_reply_icmp4(node: Node, p: Parsed, vip: bytes, vport: int, mtu: int) -> None:
    """dsr_reply_icmp4 (nodeport.h:1977): to the request's source from its destination (by
    now the backend's: the DNAT ran first, :2009), TOS and IP id kept, DF, TTL 64; the quote
    is the request's header (options included) and 8 bytes, the first 20 bytes with the
    frontend put back as destination and their checksum recomputed over those 20 only
    (:2025-2028), the frontend port written 22 bytes in (:2055, wherever the L4
    header starts)."""
    buf = p.buf
    ihl = (buf[0] & 0xF) * 4
    quote = bytearray(buf[:ihl + DSR_QUOTE4].ljust(ihl + DSR_QUOTE4, b"\0"))
    quote[16:20] = vip
    quote[10:12] = b"\0\0"
    struct.pack_into("!H", quote, 10, checksum(bytes(quote[:20])))
    struct.pack_into("!H", quote, 22, vport)
    msg = icmp4_message(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, struct.pack("!HH", 0, mtu),
                        bytes(quote))
    ident = struct.unpack_from("!H", buf, 4)[0]
    p.buf[:] = ipv4(p.daddr, p.saddr, IPPROTO_ICMP, msg, ttl=IPDEFTTL, tos=buf[1],
                    ident=ident, frag=IP_DF)
    node.rejected = DropReason.DROP_FRAG_NEEDED


def dsr_reply_icmp6(node: Node, p: Parsed, vip: bytes, vport: int, mtu: int) -> None:
    """dsr_reply_icmp6 (nodeport.h:592): packet-too-big from the request's (DNATed)
    destination, traffic class and flow label kept, hop limit 64; the quote is the fixed
    header with the frontend as destination and the 64 bytes after it, the frontend port
    2 bytes in (:634, :646). A request whose next header is neither TCP nor UDP (an
    extension header first) is dropped instead (:640-641)."""
    buf = p.buf
    if buf[6] not in (6, 17):
        raise DatapathDrop(DropReason.DROP_FRAG_NEEDED)
    quote = bytearray(buf[:40 + DSR_QUOTE6].ljust(40 + DSR_QUOTE6, b"\0"))
    quote[24:40] = vip
    struct.pack_into("!H", quote, 42, vport)
    msg = icmp6_message(p.daddr, p.saddr, ICMPV6_PKT_TOOBIG, 0, struct.pack("!I", mtu),
                        bytes(quote))
    first = struct.unpack_from("!I", buf, 0)[0]
    p.buf[:] = ipv6(p.daddr, p.saddr, IPPROTO_ICMPV6, msg, hlim=IPDEFTTL,
                    tclass=(first >> 20) & 0xFF, flow=first & 0xFFFFF)
    node.rejected = DropReason.DROP_FRAG_NEEDED
