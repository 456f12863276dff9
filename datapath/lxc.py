"""bpf_lxc on bytes: a pod's service translation at from-container, the reverse at to-container.

cil_from_container runs `__per_packet_lb_svc_xlate_4/6` (v1.20 bpf_lxc.c:161-290, 316-451;
v1.18 bpf_lxc.c:72-130) unless socket-LB translated at connect() (ENABLE_SOCKET_LB_FULL
leaves ENABLE_PER_PACKET_LB undefined, bpf_lxc.c:99-105): lb4_local picks the backend
(datapath.lb.lb_local), lb4_dnat_request DNATs, and a pod that is its own backend gets the
service loopback address as source (v1.20 lib/lb.h:2309-2330; v1.18 IPV4_LOOPBACK in
lb4_local, lib/lb.h:1815-1840, IPv4 only). v1.20 also finds another node's (or its own)
NodePort through the 0.0.0.0:nodePort surrogate (lb4_lookup_wildcard_service, lib/lb.h:1804)
for new connections, keeping the called address in the CT entry (nat_addr/nat_port,
bpf_lxc.c:187-207). The CT_EGRESS entry carries rev_nat_index and loopback; cil_to_container's
ipv4_policy reverse-translates a reply with it (v1.20 bpf_lxc.c:2230-2242, lb4_rev_nat,
lib/lb.h:1550-1657: a loopback reply's destination becomes its source first).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

from datapath.conntrack import ct_create, ct_lookup
from datapath.drop import DatapathDrop, DropReason, Verdict
from datapath.icmp import no_service
from datapath.lb import lb_local, rewrite
from datapath.maps import LB_LOOKUP_SCOPE_EXT, TUPLE_F_OUT, CtEntry, CtTuple, LbKey, LbService
from datapath.packet import IPPROTO_TCP, Parsed, ip_bytes

if TYPE_CHECKING:
    from datapath.host import HookResult, Node

_new = tuple.__new__
_H = struct.Struct("!H")


def _egress_key(p: Parsed) -> CtTuple:
    """bpf_lxc's CT_EGRESS tuple of a pod's packet (addresses and ports skewed)."""
    return _new(CtTuple, (p.saddr, p.daddr, p.dport, p.sport, p.proto, TUPLE_F_OUT))


def _lookup(node: Node, p: Parsed) -> tuple[LbKey, LbService, bool] | None:
    """lb4_lookup_service on the exact key; v1.20 then the NodePort surrogate for a node's
    address when no CT_EGRESS entry says the connection started without it. The flag says
    the surrogate matched (the called address is kept)."""
    svcs = node.lb6_svc if p.v6 else node.lb4_svc
    t = (p.daddr, p.dport, p.proto, LB_LOOKUP_SCOPE_EXT, 0)
    svc = svcs.get(t)
    if svc is not None:
        return _new(LbKey, t), svc, False
    c = node.config
    if c.version != "1.20" or not c.nodeport_min <= p.dport < c.nat_min:
        return None
    own = node.snat_addr(p.v6)
    tep = node.maps.ipcache.lookup(p.daddr)
    if p.daddr != own and tep != p.daddr:  # HOST_ID or a remote node's own address only
        return None
    if node.maps.ct_map(p.v6, p.proto).lookup(_egress_key(p)) is not None:
        return None  # ct_has_egress_entry4: a plain map lookup
    t = (b"\0" * len(p.daddr), p.dport, p.proto, LB_LOOKUP_SCOPE_EXT, 0)
    svc = svcs.get(t)
    return None if svc is None else (_new(LbKey, t), svc, True)


def loopback_addr(node: Node, v6: bool) -> bytes:
    """CONFIG(service_loopback_ipv4/6), v1.18 IPV4_LOOPBACK."""
    c = node.config
    return ip_bytes(c.service_loopback_ipv6 if v6 else c.service_loopback_ipv4)


def from_container(node: Node, buf: bytearray) -> HookResult:
    """cil_from_container: per-packet service translation, then delivery or the device."""
    from datapath.host import HookResult

    p = node._parse(buf)
    if not node.config.socket_lb and p.has_ports():
        found = _lookup(node, p)
        if found is not None:
            try:
                _translate(node, p, *found)
            except DatapathDrop as d:
                if d.reason != DropReason.DROP_NO_SERVICE:
                    raise
                # tail_no_service_ipv4/6 under SERVICE_NO_BACKEND_RESPONSE, v1.20's
                # routable switch first (bpf_lxc.c:254-262): as nodeport's
                verdict, target = no_service(node, p, found[1])
                reason, node.rejected = node.rejected, None
                return HookResult(Verdict(verdict), p.buf, reason, target)
    daddr = p.daddr
    if p.has_ports():
        # a reply whose CT entry is a loopback one (hairpin_flow |= ct_state->loopback,
        # bpf_lxc.c:1189) has its endpoint looked up by the source (v1.20 :1234-1242)
        key = _new(CtTuple, (p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_OUT))
        e = node.maps.ct_map(p.v6, p.proto).peek(key)
        if e is not None and e.loopback:
            daddr = p.saddr
    ep = node.lxc_eps.get(daddr)
    if ep is not None:  # ipv4_local_delivery: the endpoint's policy program takes it
        return HookResult(Verdict.CTX_ACT_OK, p.buf, None, f"lxc:{ep.ifindex}")
    return HookResult(Verdict.CTX_ACT_OK, p.buf, None, "stack")


def _translate(node: Node, p: Parsed, key: LbKey, svc: LbService, kept: bool) -> None:
    """lb4_local, lb4_dnat_request, then the CT_EGRESS entry with rev_nat_index."""
    vip, vport = p.daddr, p.dport
    _bid, be, _ct_new = lb_local(node, p, key, svc)  # DROP_NO_SERVICE without backends
    loopback = p.saddr == be.address and "hairpin_no_loopback" not in node.faults
    if loopback and p.v6 and node.config.version != "1.20":
        loopback = False  # no IPv6 loopback before v1.20 (v1.18 lb6_local)
    rewrite(p, False, be.address, be.port or None, node.dnat_csum)
    if loopback:
        rewrite(p, True, loopback_addr(node, p.v6), None)
    tcp = p.proto == IPPROTO_TCP
    ct = node.maps.ct_map(p.v6, p.proto)
    key_ct = _egress_key(p)
    if ct_lookup(node, ct, key_ct, p.tcp_flags, tcp, size=len(p.buf)) is not None:
        return
    entry = CtEntry(rev_nat_index=svc.rev_nat_index, loopback=loopback,
                    nat_addr=vip if kept else b"", nat_port=vport if kept else 0)
    if not ct_create(node, ct, key_ct, entry, tcp, size=len(p.buf)):
        raise DatapathDrop(DropReason.DROP_CT_CREATE_FAILED)


def to_container(node: Node, buf: bytearray) -> HookResult:
    """cil_to_container / ipv4_policy: a reply of the pod's connection (CT_REPLY) gets the
    frontend back as its source; a loopback one also the pod's address as destination."""
    from datapath.host import HookResult

    p = node._parse(buf)
    ep = node.lxc_eps.get(p.daddr)
    if p.has_ports():
        key = _new(CtTuple, (p.daddr, p.saddr, p.sport, p.dport, p.proto, TUPLE_F_OUT))
        e = ct_lookup(node, node.maps.ct_map(p.v6, p.proto), key, p.tcp_flags,
                      p.proto == IPPROTO_TCP, reply=True, size=len(p.buf))
        if e is not None and "ew_revnat_skipped" not in node.faults:
            _rev_nat(node, p, e)
            ep = node.lxc_eps.get(p.daddr) or ep
    target = f"lxc:{ep.ifindex}" if ep is not None else "stack"
    return HookResult(Verdict.CTX_ACT_OK, p.buf, None, target)


def _rev_nat(node: Node, p: Parsed, e: CtEntry) -> None:
    """lb4_rev_nat: the CT entry's own address (nat_port set) or the rev_nat_index's."""
    if e.nat_port:
        addr, port = e.nat_addr, e.nat_port
    elif e.rev_nat_index:
        revnat = (node.maps.lb6_reverse_nat if p.v6 else node.maps.lb4_reverse_nat).lookup(
            e.rev_nat_index)
        if revnat is None:
            return
        addr, port = revnat.address, revnat.port
    else:
        return
    if e.loopback:  # USE_LOOPBACK_LB: the current source becomes the destination
        rewrite(p, False, p.saddr, None)
    rewrite(p, True, addr, port or None)


class SockPeer(NamedTuple):
    """cilium_lb4_reverse_sk's entry of a connected socket: the frontend it called, the
    backend it is connected to, the service's rev_nat_index."""

    vip: bytes
    vport: int
    backend: bytes
    bport: int
    rev_nat_index: int


def _sock_lookup(node: Node, v6: bool, daddr: bytes, dport: int, proto: int
                 ) -> LbService | None:
    """__sock4_xlate_fwd's lookups: the exact key, then the 0.0.0.0:nodePort surrogate for a
    node's own or a remote node's address in the NodePort range (sock4_wildcard_lookup_full,
    v1.20 bpf_sock.c:243-296, v1.18 :195-242). The surrogate is read as the model reads it,
    from this node's own NodePort frontend (difftest programs no surrogate with socket-LB
    on: this is the harness's bpf_sock, not a program Cilium's tests load)."""
    svcs = node.lb6_svc if v6 else node.lb4_svc
    svc = svcs.get((daddr, dport, proto, LB_LOOKUP_SCOPE_EXT, 0))
    if svc is not None:
        return svc
    c = node.config
    if not c.nodeport_min <= dport < c.nat_min:
        return None
    if daddr != node.snat_addr(v6) and node.maps.ipcache.lookup(daddr) != daddr:
        return None
    return svcs.get((node.snat_addr(v6), dport, proto, LB_LOOKUP_SCOPE_EXT, 0))


def sock_connect(node: Node, pkt: bytes | bytearray, pin: int | None
                 ) -> tuple[SockPeer | None, DropReason | None]:
    """cil_sock4_connect on the request's tuple: (None, None) without a service, (None,
    DROP_NO_SERVICE) without backends (EHOSTUNREACH), else the connected socket's peer:
    the pinned backend's slot, else sock_select_slot (get_prandom_u32) % count + 1."""
    p = node._parse(bytearray(pkt))
    if not p.has_ports():
        return None, None
    found = _sock_lookup(node, p.v6, p.daddr, p.dport, p.proto)
    if found is None:
        return None, None
    if found.count == 0:
        return None, DropReason.DROP_NO_SERVICE
    svcs = node.lb6_svc if p.v6 else node.lb4_svc
    master = next(k for k, v in svcs.items() if v is found and k[4] == 0)  # exact or own
    slot = (node.prandom() % found.count) + 1
    for n in range(1, found.count + 1):
        s = svcs.get((*master[:4], n))
        if pin is not None and s is not None and s.backend_id == pin:
            slot = n
    be = (node.lb6_be if p.v6 else node.lb4_be)[svcs[(*master[:4], slot)].backend_id]
    return SockPeer(p.daddr, p.dport, be.address, be.port, found.rev_nat_index), None


def sock_rewrite(node: Node, pkt: bytes | bytearray, peer: SockPeer, forward: bool
                 ) -> bytes:
    """The socket's view on bytes: a request's destination becomes the connected backend
    (connect()); an answer from it shows the frontend as its source while the service
    still has that rev_nat_index and backends (__sock4_xlate_rev, recvmsg/getpeername)."""
    p = node._parse(bytearray(pkt))
    if forward:
        rewrite(p, False, peer.backend, peer.bport)
        return bytes(p.buf)
    if "ew_sock_rev_skipped" in node.faults or (p.saddr, p.sport) != (peer.backend,
                                                                        peer.bport):
        return bytes(p.buf)
    svc = _sock_lookup(node, p.v6, peer.vip, peer.vport, p.proto)
    if svc is None or svc.rev_nat_index != peer.rev_nat_index or svc.count == 0:
        return bytes(p.buf)
    rewrite(p, True, peer.vip, peer.vport)
    return bytes(p.buf)
