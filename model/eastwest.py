"""Pods as clients of services (east-west): bpf_lxc per-packet translation, or at connect().

A pod reaching a ClusterIP, or a NodePort on its own node or another, is translated on its
own node, before the packet meets any NodePort code:

- socket-LB on (`cilium.socketLB.enabled`, ENABLE_SOCKET_LB_FULL): bpf_sock's connect hook
  picks the backend and rewrites the socket's peer (`__sock4_xlate_fwd`, v1.20
  bpf_sock.c:298-464, v1.18 bpf_sock.c:243-420) and records the frontend in
  cilium_lb4_reverse_sk (`sock4_update_revnat`); recvmsg/getpeername give the frontend back
  (`__sock4_xlate_rev`, v1.20 bpf_sock.c:588-632). The pod's packets carry the backend's
  address on the wire; ENABLE_PER_PACKET_LB is then not defined (v1.20 bpf_lxc.c:99-105).
- socket-LB off: bpf_lxc's from-container runs `__per_packet_lb_svc_xlate_4` (v1.20
  bpf_lxc.c:161-290, v1.18 bpf_lxc.c:72-130): lb4_local picks the backend (the CT_SERVICE
  entry, model.lbselect.lb_select) and lb4_dnat_request DNATs the packet; the CT_EGRESS entry
  keeps the rev_nat_index, and the client pod's to-container (ipv4_policy, CT_REPLY,
  v1.20 bpf_lxc.c:2230-2242, v1.18 bpf_lxc.c:1915-1928) reverse-translates the reply with
  lb4_rev_nat (v1.20 lib/lb.h:1550-1657).
- hairpin: a pod that is its own backend (v1.20 bpf_lxc.c:259-275, v1.18 lib/lb.h:1815-1840)
  gets the service loopback address as source (lb4_dnat_request, v1.20 lib/lb.h:2309-2330:
  CONFIG(service_loopback_ipv4); v1.18 IPV4_LOOPBACK); __lb4_rev_nat puts the pod's address
  back as the reply's destination (USE_LOOPBACK_LB, v1.20 lib/lb.h:1562-1580). v1.18 has no
  IPv6 loopback (v1.18 bpf_lxc.c:486, lb6_local): the packet keeps the pod's own address as
  source, the pod's answer stays inside its network namespace (lo) and never meets bpf_lxc.
- v1.20 also looks up a NodePort of any node (its own or a remote one) by the wildcard
  surrogate 0.0.0.0:nodePort (lb4_lookup_wildcard_service, v1.20 lib/lb.h:1804-1850) and keeps
  the address the pod called in the CT entry (cilium_nodeport_nat_buffer, v1.20
  bpf_lxc.c:187-207); v1.18's per-packet lookup is exact, so another node's NodePort goes to
  that node and its nodeport_lb4. bpf_sock's wildcard lookup takes local and remote node
  addresses in both trees (v1.18 bpf_sock.c:195-212, v1.20 bpf_sock.c:243-296).
A backend-less service is answered as at from-netdev (tail_no_service_ipv4/6, v1.20's
routable switch first); under socket-LB connect() fails (EHOSTUNREACH). Left out: session
affinity by netns cookie, L7 and local-redirect services.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import attrs

from model.config import CiliumVersion
from model.conntrack import Direction, created, on_packet
from model.drops import DropReason
from model.faults import ModelFault
from model.hooks import HookResult, NodeCtx, Step, Verdict, egress_key
from model.lbselect import lb_select, random_slot
from model.maps import NodeState, ServiceEntry
from model.nodeport import no_service
from model.values import Endpoint, IPAddress, Packet, Proto

# The agent's default service loopback addresses (--ipv4/ipv6-service-loopback-address,
# 169.254.42.1 and fe80::1: the agent's infra-endpoints config, outside the bpf/ trees;
# Cilium's own tests program 10.245.255.31, tests/pktgen.h:90)
LOOPBACK_V4 = IPv4Address("169.254.42.1")
LOOPBACK_V6 = IPv6Address("fe80::1")


def service_loopback(addr: IPAddress) -> IPAddress:
    """The service loopback address of addr's family."""
    return LOOPBACK_V6 if isinstance(addr, IPv6Address) else LOOPBACK_V4


@attrs.frozen(kw_only=True)
class SockPeer:
    """A connected socket's cilium_lb4_reverse_sk entry: the frontend the pod called, the
    backend its peer now is, and the service's rev_nat_index at connect()."""

    frontend: Endpoint
    backend: Endpoint
    rev_nat_index: int


def _wildcard(ctx: NodeCtx, st: NodeState, dst: Endpoint, proto: Proto
              ) -> ServiceEntry | None:
    """A NodePort of any cluster node by the 0.0.0.0:nodePort surrogate, which carries this
    node's NodePort frontend and backends (the model writes no surrogate entry: the node's
    own NodePort frontend stands for it)."""
    if not ctx.cfg.nodeport_min <= dst.port <= ctx.cfg.nodeport_max:
        return None
    if ctx.ipcache.get(dst.addr) != dst.addr:  # not a node's own address (HOST/REMOTE_NODE)
        return None
    svc: ServiceEntry | None = st.lb.services.get((ctx.ip, dst.port, proto))
    return svc


def lookup(ctx: NodeCtx, st: NodeState, pkt: Packet, wildcard: bool
           ) -> tuple[ServiceEntry | None, bool]:
    """lb4_lookup_service on the packet's destination, then (if allowed) the wildcard
    surrogate; the flag says the wildcard matched (the called address is kept)."""
    svc: ServiceEntry | None = st.lb.services.get((pkt.dst.addr, pkt.dst.port, pkt.proto))
    if svc is not None or not wildcard:
        return svc, False
    svc = _wildcard(ctx, st, pkt.dst, pkt.proto)
    return svc, svc is not None


def sock_connect(ctx: NodeCtx, st: NodeState, pkt: Packet
                 ) -> tuple[SockPeer | None, DropReason | None]:
    """cil_sock4_connect / __sock4_xlate_fwd: no service, no translation (None, None); no
    backend, connect() fails (EHOSTUNREACH); else the backend slot sock_select_slot picks."""
    svc, _ = lookup(ctx, st, pkt, wildcard=True)
    if svc is None:
        return None, None
    if svc.count == 0:
        return None, DropReason.DROP_NO_SERVICE
    slots = svc.backend_slots
    pinned = [b for b in slots if st.lb.backends[b].addr == ctx.pinned]
    draw = ctx.rand.u32("sock", ctx.name, pkt.key(), ctx.now)
    bid = pinned[0] if pinned else random_slot(slots, draw)  # sock_select_slot's formula
    return SockPeer(frontend=pkt.dst, backend=st.lb.backends[bid],
                    rev_nat_index=svc.rev_nat_index), None


def sock_rev(ctx: NodeCtx, st: NodeState, peer: SockPeer, pkt: Packet) -> Packet:
    """cil_sock4_recvmsg / getpeername: __sock4_xlate_rev gives the frontend back while the
    service still has that rev_nat_index and backends; else the backend's address shows.
    Cilium also deletes the stale cilium_lb4_reverse_sk entry (v1.20 bpf_sock.c:617-621);
    a service cannot change within one modelled flow, so the model does not keep it."""
    if ctx.has(ModelFault.EW_SOCK_REV_SKIPPED) or pkt.src != peer.backend:
        return pkt
    probe = attrs.evolve(pkt, dst=peer.frontend)
    svc, _ = lookup(ctx, st, probe, wildcard=True)
    if svc is None or svc.rev_nat_index != peer.rev_nat_index or svc.count == 0:
        return pkt
    return attrs.evolve(pkt, src=peer.frontend)


def from_container(ctx: NodeCtx, st: NodeState, pkt: Packet, per_packet: bool
                   ) -> tuple[NodeState, HookResult]:
    """cil_from_container: __per_packet_lb_svc_xlate_4/6 (when per-packet LB is compiled
    in), then the CT_EGRESS entry; DELIVER to a local endpoint, else FORWARD."""
    if not per_packet:
        return st, _onward(st, pkt, Step.PASS)
    wildcard = ctx.cfg.version is CiliumVersion.V1_20 and st.ct.get(
        egress_key(pkt.src, pkt.dst, pkt.proto)) is None
    svc, kept = lookup(ctx, st, pkt, wildcard)
    if svc is None:
        return st, _onward(st, pkt, Step.PASS)
    st, bid, _first = lb_select(ctx, st, svc, pkt)
    if bid is None:  # tail_no_service_ipv4/6 as at from-netdev (v1.20 bpf_lxc.c:254-262)
        return no_service(ctx, st, svc, pkt)
    backend = st.lb.backends[bid]
    loopback = pkt.src.addr == backend.addr and not ctx.has(ModelFault.HAIRPIN_NO_LOOPBACK)
    if loopback and pkt.is_ipv6 and ctx.cfg.version is not CiliumVersion.V1_20:
        loopback = False  # no IPv6 loopback before v1.20 (v1.18 lb6_local)
    out = attrs.evolve(pkt, dst=backend)
    if loopback:
        out = attrs.evolve(out, src=Endpoint(addr=service_loopback(pkt.src.addr),
                                             port=pkt.src.port))
    key = egress_key(out.src, out.dst, pkt.proto)
    old = st.ct.get(key)
    version = ctx.cfg.version
    if old is None:
        entry = created(version, pkt, ctx.now, rev_nat_index=svc.rev_nat_index,
                        loopback=loopback, nat_addr=pkt.dst.addr if kept else None,
                        nat_port=pkt.dst.port if kept else 0)
    else:
        entry = on_packet(version, old, pkt, ctx.now)
    st = attrs.evolve(st, ct=st.ct.put(key, entry))
    return st, _onward(st, out, Step.DNAT)


def _onward(st: NodeState, pkt: Packet, step: Step) -> HookResult:
    """DELIVER to a local endpoint, else FORWARD. A reply whose CT entry is a loopback one
    (hairpin_flow |= ct_state->loopback) is addressed to the service loopback address, so
    its endpoint is looked up by its source: back into the pod it came from (v1.20
    bpf_lxc.c:1189, :1234-1242)."""
    local = pkt.dst.addr in st.lb.local_endpoints
    if not local:
        entry = st.ct.get(egress_key(pkt.dst, pkt.src, pkt.proto))
        local = entry is not None and entry.loopback
    return HookResult(verdict=Verdict.DELIVER if local else Verdict.FORWARD, packet=pkt,
                      step=step)


def to_container(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, HookResult]:
    """cil_to_container / ipv4_policy on a reply: the client's CT_EGRESS entry seen as
    CT_REPLY; with a rev_nat_index (or a kept address) lb4_rev_nat puts the frontend back
    as the source, and for a loopback entry the pod's own address as the destination."""
    key = egress_key(pkt.dst, pkt.src, pkt.proto)
    entry = st.ct.get(key)
    if entry is None:
        return st, HookResult(verdict=Verdict.DELIVER, packet=pkt)
    st = attrs.evolve(st, ct=st.ct.put(key, on_packet(ctx.cfg.version, entry, pkt, ctx.now,
                                                      direction=Direction.REPLY)))
    fe: Endpoint | None = None
    if entry.nat_port and entry.nat_addr is not None:
        fe = Endpoint(addr=entry.nat_addr, port=entry.nat_port)
    elif entry.rev_nat_index:
        fe = st.lb.revnat.get(entry.rev_nat_index)
    if fe is None or ctx.has(ModelFault.EW_REVNAT_SKIPPED):
        return st, HookResult(verdict=Verdict.DELIVER, packet=pkt)
    out = attrs.evolve(pkt, src=fe)
    if entry.loopback:
        out = attrs.evolve(out, dst=Endpoint(addr=pkt.src.addr, port=pkt.dst.port))
    return st, HookResult(verdict=Verdict.DELIVER, packet=out, step=Step.REV_DNAT)
