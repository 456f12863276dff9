"""Per-node BPF programs: from-netdev, from-overlay and to-netdev (bpf_host.c, nodeport.h)."""

from __future__ import annotations

import attrs

from model.config import CiliumConfig, CiliumVersion, DsrDispatch
from model.conntrack import Direction, created, on_packet, reopens
from model.drops import DropReason
from model.faults import ModelFault
from model.fragments import load_l4_ports, no_l4
from model.hooks import (
    Hook,
    HookResult,
    NodeCtx,
    Step,
    Verdict,
    ct_tuple,
    dsr_snat_key,
    egress_key,
)
from model.ipip import encapsulate, terminates, v118_ipip_skips
from model.lbselect import lb_select
from model.maps import (
    CtEntry,
    NatEntry,
    NodeState,
    ServiceEntry,
    TokenBucket,
    TupleFlags,
)
from model.masq import masquerade, needs_masquerade
from model.snat import snat_nat, snat_rev_nat, snat_rev_nat_icmp_error
from model.values import (
    MAX_IPOPTLEN,
    POD_IDENTITY,
    REMOTE_NODE_ID,
    WORLD_ID,
    DsrKind,
    DsrMeta,
    Encap,
    Endpoint,
    IcmpKind,
    IPAddress,
    Outer,
    Packet,
    Proto,
    dsr_overhead,
    short_size,
)

# The ICMPv6 error bucket per receiving device: 100 replies a second, bursts up to 1000.
ICMP6_TOKENS_PER_TOPUP = 100
ICMP6_BUCKET_SIZE = 1000


def _outer(ctx: NodeCtx, tep: IPAddress, identity: int = WORLD_ID) -> Outer:
    """Geneve towards a tunnel endpoint; the VNI is the sender's identity (get_tunnel_id)."""
    return Outer(src=ctx.ip, dst=tep, vni=identity)


def dropped(pkt: Packet, reason: DropReason) -> HookResult:
    """A hook's DROP with Cilium's drop reason (what every refusal of a hook returns)."""
    return HookResult(verdict=Verdict.DROP, packet=pkt, step=Step.DROP, reason=reason)


def in_ranges(addr: IPAddress, ranges: tuple[object, ...]) -> bool:
    """loadBalancerSourceRanges: the client in one of the service's CIDRs (SRC_RANGE map)."""
    return any(addr in r for r in ranges)  # type: ignore[operator]


def _nodeport_ct_egress(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, client: Endpoint,
                        backend: Endpoint, pkt: Packet) -> NodeState:
    """The CT_EGRESS node_port entry; recreated when rev_nat_index differs (GH#10983)."""
    key = egress_key(client, backend, pkt.proto)
    old = st.ct.get(key)
    version = ctx.cfg.version
    if (old is not None and old.node_port and old.rev_nat_index == svc.rev_nat_index
            and not reopens(version, old, pkt)):
        entry = on_packet(version, old, pkt, ctx.now)
    else:
        entry = created(version, pkt, ctx.now, rev_nat_index=svc.rev_nat_index, node_port=True)
    return attrs.evolve(st, ct=st.ct.put(key, entry))


def _carries_dsr(ctx: NodeCtx, pkt: Packet, first: bool) -> bool:
    """DSR info goes on TCP SYNs and every other packet (v1.13 IPv6: every packet)."""
    if pkt.proto is not Proto.TCP:
        return first or not ctx.has(ModelFault.DSR_UDP_FIRST_ONLY)
    if ctx.cfg.version is CiliumVersion.V1_13 and pkt.is_ipv6:
        return True
    return pkt.is_syn and not ctx.has(ModelFault.DSR_NO_OPT_ON_SYN)


def _forced_select(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet,
                   forced: IPAddress) -> tuple[NodeState, Endpoint]:
    """lb4_local with a forced backend (v1.20 lb.h:2183-2206): the CT_SERVICE entry is
    looked up or created (backend_id 0), and the backend is the IPIP outer destination with
    port 0, so lb4_dnat_request keeps the frontend's port (lb.h:2325-2326)."""
    key = ct_tuple(pkt, TupleFlags.SERVICE)
    entry = st.ct.get(key)
    version = ctx.cfg.version
    if entry is not None and reopens(version, entry, pkt):
        entry = None  # ACTION_CREATE: CT_NEW, and ct_create4 writes the entry afresh
    if entry is None:
        entry = created(version, pkt, ctx.now, service=True, backend_id=0,
                        rev_nat_index=svc.rev_nat_index)
    else:
        entry = on_packet(version, entry, pkt, ctx.now, service=True)
    return attrs.evolve(st, ct=st.ct.put(key, entry)), Endpoint(addr=forced, port=pkt.dst.port)


def nodeport_svc_lb(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet,
                    forced: IPAddress | None = None, at_xdp: bool = False
                    ) -> tuple[NodeState, HookResult]:
    """nodeport_svc_lb4: checks, lb4_local, DNAT, then local / DSR / SNAT forwarding.
    `forced` is v1.20's CB_FORCED_BACKEND_V4 after IPIP termination (nodeport.h:2783)."""
    if svc.source_ranges and not in_ranges(pkt.src.addr, svc.source_ranges):
        return st, dropped(pkt, DropReason.DROP_NOT_IN_SRC_RANGE)
    if not svc.routable:
        return st, dropped(pkt, DropReason.DROP_IS_CLUSTER_IP)
    if ctx.has(ModelFault.ETP_LOCAL_FORWARDS_REMOTE) and svc.etp_local:
        svc = attrs.evolve(svc, backend_slots=svc.all_backends)
    first = False
    if forced is not None:
        st, backend = _forced_select(ctx, st, svc, pkt, forced)
    else:
        st, bid, first = lb_select(ctx, st, svc, pkt)
        if bid is None:
            return no_service(ctx, st, svc, pkt)
        backend = st.lb.backends[bid]
    client = pkt.src
    if ctx.has(ModelFault.DNAT_KEEPS_FRONTEND_PORT):
        backend = attrs.evolve(backend, port=pkt.dst.port)
    out = attrs.evolve(pkt, dst=backend)
    if backend.addr in st.lb.local_endpoints and v118_ipip_skips(ctx.cfg, svc.dsr):
        # v1.18 nodeport_xlate4 skips the DNAT of any DSR service under IPIP, a local
        # backend's too (v1.18 nodeport.h:1441-1449): handed on untranslated, the stack
        # has no use for a frontend address (XFER_PKT_NO_SVC at XDP, :2652-2655); the
        # CT_EGRESS entry is written first, keyed by the backend's address and the
        # frontend's port (lb4_local's tuple, :2619-2640)
        st = _nodeport_ct_egress(ctx, st, svc, client,
                                 Endpoint(addr=backend.addr, port=pkt.dst.port), pkt)
        return st, HookResult(verdict=Verdict.TO_STACK, packet=pkt, step=Step.PASS,
                              reason=DropReason.PUNT_TO_STACK)
    if backend.addr in st.lb.local_endpoints:
        st = _nodeport_ct_egress(ctx, st, svc, client, backend, pkt)
        step = Step.DNAT if forced is None else Step.IPIP_DNAT
        return st, HookResult(verdict=Verdict.DELIVER, packet=out, step=step)
    if svc.dsr and ctx.cfg.dispatch is DsrDispatch.IPIP and forced is None:
        # nodeport_skip_xlate4 (nodeport.h:1642-1653): the request keeps the frontend;
        # at XDP dsr_set_ipip4/6 check the outer header against the MTU (:1735, :328)
        overhead = 40 if pkt.is_ipv6 else 20
        size = short_size(pkt.is_ipv6, pkt.proto, pkt.ip_options) if pkt.size is None \
            else pkt.size
        if at_xdp and ctx.cfg.pmtu_discovery and size + overhead > ctx.mtu:
            # dsr_reply_icmp4/6 restore "the frontend" from CB_ADDR_V4 and CB_PORT, which
            # under IPIP hold the backend's address and, CB_PORT aliasing CB_HINT, the
            # client's port (common.h:329-330, nodeport.h:2903-2905): the quote says so
            too_big = _frag_needed(ctx, pkt, pkt, overhead)
            assert too_big.packet.quote is not None
            quote = attrs.evolve(too_big.packet.quote,
                                 dst=Endpoint(addr=backend.addr, port=pkt.src.port))
            return st, attrs.evolve(too_big, packet=attrs.evolve(too_big.packet, quote=quote))
        return st, HookResult(verdict=Verdict.FORWARD, step=Step.IPIP,
                              packet=encapsulate(ctx.ip, pkt, backend.addr, ctx.faults))
    if svc.dsr or (ctx.has(ModelFault.HYBRID_UDP_AS_DSR) and pkt.proto is Proto.UDP):
        if (pkt.is_ipv6 and ctx.cfg.dispatch is DsrDispatch.GENEVE
                and ctx.ipcache.get(backend.addr) is not None):
            # encap_geneve_dsr_opt6 extracts the DNATed tuple again (nodeport.h:437)
            st, _, err = load_l4_ports(ctx.cfg, ctx.faults, st, out)
            if err is not None:
                return st, dropped(out, err)
        if ctx.has(ModelFault.DSR_ALSO_SNATS):
            out = attrs.evolve(out, src=Endpoint(addr=ctx.ip, port=client.port))
        return st, _dsr_forward(ctx, pkt, out, first)
    st = _nodeport_ct_egress(ctx, st, svc, client, backend, pkt)
    # tail_nodeport_nat_egress_ipv4 (nodeport.h:2592-2598): a backend with a tunnel endpoint
    # is reached through the tunnel, SNATed to IPV4_GATEWAY; any other natively, SNATed to
    # IPV4_DIRECT_ROUTING.
    tep = ctx.ipcache.get(backend.addr) if ctx.cfg.tunneling else None
    target = ctx.ip
    if tep is not None and ctx.router_ip is not None:
        target = ctx.router_ip
    st, _, err = load_l4_ports(ctx.cfg, ctx.faults, st, out)  # tail_nodeport_nat_egress_ipv4's
    if err is not None:  # lb4_extract_tuple on the DNATed packet (nodeport.h:2621)
        return st, dropped(out, err)
    res = snat_nat(ctx.cfg, st.snat, client, backend, pkt.proto, target, ctx.now, ctx.name,
                   ctx.rand, ctx.faults)
    st = attrs.evolve(st, snat=res.snat)
    if res.nat is None:  # the destination is already the backend's (lb4 DNAT ran first)
        return st, dropped(out, DropReason.DROP_NAT_NO_MAPPING)
    if not ctx.has(ModelFault.SNAT_SKIPPED):
        out = attrs.evolve(out, src=res.nat)
    if tep is not None:
        out = attrs.evolve(out, outer=_outer(ctx, tep))
    return st, HookResult(verdict=Verdict.FORWARD, packet=out, step=Step.SNAT)


def no_service(ctx: NodeCtx, st: NodeState, svc: ServiceEntry, pkt: Packet
                ) -> tuple[NodeState, HookResult]:
    """lb4_local found no backend: v1.20's routable switch (nodeport.h:2797), then
    tail_no_service_ipv4/6 under serviceNoBackendResponse=reject (lb.h:2340, 2363)."""
    if not ctx.cfg.no_service_endpoints_routable:
        # handle_nonroutable_endpoints_v4: every frontend here is external; eTP=Local drops,
        # the rest goes up the stack untranslated.
        if svc.etp_local:
            return st, dropped(pkt, DropReason.DROP_NO_SERVICE)
        return st, HookResult(verdict=Verdict.TO_STACK, packet=pkt, step=Step.PASS,
                              reason=DropReason.PUNT_TO_STACK)
    if not ctx.cfg.reject_no_backend:
        return st, dropped(pkt, DropReason.DROP_NO_SERVICE)
    if pkt.is_ipv6:
        bucket, allowed = icmp6_ratelimit(st.icmp6_bucket, ctx.now)
        st = attrs.evolve(st, icmp6_bucket=bucket)
        if not allowed:
            return st, dropped(pkt, DropReason.DROP_RATE_LIMITED)
    icmp = Packet(src=Endpoint(addr=pkt.dst.addr, port=0),
                  dst=Endpoint(addr=pkt.src.addr, port=0),
                  proto=Proto.ICMPV6 if pkt.is_ipv6 else Proto.ICMP,
                  icmp=IcmpKind.PORT_UNREACHABLE, quote=pkt.key())  # the request, as sent
    return st, HookResult(verdict=Verdict.REJECT, packet=icmp, step=Step.REJECT,
                          reason=DropReason.DROP_NO_SERVICE)


def icmp6_ratelimit(bucket: TokenBucket | None, now: int) -> tuple[TokenBucket, bool]:
    """ratelimit_check_and_take() with tail_no_service_ipv6's settings (lb.h:2370): a new
    bucket starts with one top-up less the token taken (ratelimit.h:96); each whole second,
    once more than one has passed, adds 100 up to 1000 (ratelimit.h:116-124)."""
    if bucket is None:
        return TokenBucket(last_topup=now, tokens=ICMP6_TOKENS_PER_TOPUP - 1), True
    since = now - bucket.last_topup
    if since > 1:
        bucket = TokenBucket(last_topup=now, tokens=min(
            bucket.tokens + since * ICMP6_TOKENS_PER_TOPUP, ICMP6_BUCKET_SIZE))
    if bucket.tokens > 0:
        return attrs.evolve(bucket, tokens=bucket.tokens - 1), True
    return bucket, False


def _dsr_forward(ctx: NodeCtx, pkt: Packet, out: Packet, first: bool) -> HookResult:
    """tail_nodeport_ipv4_dsr: attach the frontend (option / ext header / Geneve) and go."""
    meta = None
    geneve = ctx.cfg.dispatch is DsrDispatch.GENEVE
    if _carries_dsr(ctx, pkt, first):
        if geneve:
            kind = DsrKind.GENEVE_OPTION
        else:
            kind = DsrKind.IPV6_DSTOPT if pkt.is_ipv6 else DsrKind.IPV4_OPTION
        meta = DsrMeta(kind=kind, frontend=pkt.dst)
        if kind is DsrKind.IPV4_OPTION and 20 + pkt.ip_options + 8 > 20 + MAX_IPOPTLEN:
            # dsr_set_opt4: the option does not fit in the IPv4 header (nodeport.h:1782)
            return dropped(out, DropReason.DROP_CT_INVALID_HDR)
    tep = ctx.ipcache.get(out.dst.addr)
    if geneve and tep is None:
        return dropped(pkt, DropReason.DROP_NO_TUNNEL_ENDPOINT)
    if meta is not None or geneve:  # opt/ext6 check SYNs and UDP only; Geneve every packet
        overhead = dsr_overhead(None if meta is None else meta.kind, pkt.is_ipv6, geneve)
        size = short_size(pkt.is_ipv6, pkt.proto, pkt.ip_options) if pkt.size is None \
            else pkt.size
        if ctx.cfg.pmtu_discovery and size + overhead > ctx.mtu:  # dsr_is_too_big
            return _frag_needed(ctx, pkt, out, overhead)
    out = attrs.evolve(out, dsr=meta)
    if geneve and tep is not None:
        out = attrs.evolve(out, outer=_outer(ctx, tep))
    return HookResult(verdict=Verdict.FORWARD, packet=out, step=Step.DSR)


def _frag_needed(ctx: NodeCtx, pkt: Packet, out: Packet, overhead: int) -> HookResult:
    """dsr_reply_icmp4 / dsr_reply_icmp6 (nodeport.h:1977, 592): back out the receiving
    device, frag-needed / packet-too-big with the device MTU less the overhead, quoting the
    request as the client sent it (destination and port put back to the frontend's). The
    outer source is the packet's destination at that point, already DNATed to the backend
    (nodeport.h:2009 v4, :622 v6): fixed upstream after these trees (cilium/cilium#48053)."""
    mtu = ctx.mtu if ctx.has(ModelFault.DSR_MTU_KEEPS_OVERHEAD) else ctx.mtu - overhead
    quote = pkt.key()
    if pkt.ip_options:
        # the frontend port goes 22 bytes into the quote (:2055), i.e. into the request's
        # IPv4 options: the quoted TCP/UDP header keeps the backend's port
        quote = attrs.evolve(quote, dst=Endpoint(addr=pkt.dst.addr, port=out.dst.port))
    sender = pkt.dst.addr if ctx.has(ModelFault.DSR_ICMP_FROM_FRONTEND) else out.dst.addr
    icmp = Packet(src=Endpoint(addr=sender, port=0),
                  dst=Endpoint(addr=pkt.src.addr, port=0),
                  proto=Proto.ICMPV6 if pkt.is_ipv6 else Proto.ICMP,
                  icmp=IcmpKind.FRAG_NEEDED, quote=quote, mtu=mtu)
    return HookResult(verdict=Verdict.REJECT, packet=icmp, step=Step.REJECT,
                      reason=DropReason.DROP_FRAG_NEEDED)


def _dsr_extract(ctx: NodeCtx, st: NodeState, pkt: Packet, hook: Hook
                 ) -> tuple[NodeState, bool, Endpoint | None]:
    """nodeport_extract_dsr_v4: is this a DSR flow, and which frontend does it carry?"""
    rkey = egress_key(pkt.src, pkt.dst, pkt.proto)
    if pkt.proto is Proto.TCP and not pkt.is_syn:
        entry = st.ct.get(rkey)
        return st, entry is not None and entry.dsr_internal, None
    want = DsrKind.GENEVE_OPTION if hook is Hook.FROM_OVERLAY else None
    meta = pkt.dsr
    if meta is not None and (meta.kind is want or (want is None and meta.kind is not
                                                   DsrKind.GENEVE_OPTION)):
        return st, True, meta.frontend
    if pkt.is_syn:  # a SYN without DSR info clears a stale flag (ct_update_dsr)
        entry = st.ct.get(rkey)
        if entry is not None and entry.dsr_internal:
            st = attrs.evolve(st, ct=st.ct.put(rkey, attrs.evolve(entry, dsr_internal=False)))
    return st, False, None


def _dsr_ingress(ctx: NodeCtx, st: NodeState, pkt: Packet, frontend: Endpoint | None
                 ) -> tuple[NodeState, DropReason | None]:
    """nodeport_dsr_ingress_ipv4: record the frontend for the reply's reverse NAT."""
    key = egress_key(pkt.src, pkt.dst, pkt.proto)
    old = st.ct.get(key)
    fresh = old is None or not old.dsr_internal
    version = ctx.cfg.version
    if not fresh and not (pkt.is_syn and frontend is not None):
        assert old is not None
        return attrs.evolve(st, ct=st.ct.put(key, on_packet(version, old, pkt, ctx.now))), None
    if frontend is None or frontend.port == 0:
        return st, DropReason.DROP_INVALID
    if ctx.has(ModelFault.DSR_CT_NOT_RECORDED):
        return st, None
    in_ct = version is CiliumVersion.V1_20
    entry = created(version, pkt, ctx.now, dsr_internal=True,
                    nat_addr=frontend.addr if in_ct else None,
                    nat_port=frontend.port if in_ct else 0)
    st = attrs.evolve(st, ct=st.ct.put(key, entry))
    if not in_ct:
        nkey = dsr_snat_key(pkt.src, pkt.dst, pkt.proto)
        st = attrs.evolve(st, snat=st.snat.put(nkey, NatEntry(
            to_addr=frontend.addr, to_port=frontend.port, created=ctx.now)))
    return st, None


def _rev_dnat(st: NodeState, pkt: Packet) -> tuple[Packet, bool]:
    """nodeport_rev_dnat_ipv4 / __lb4_rev_nat: source back to the frontend."""
    entry = st.ct.get(egress_key(pkt.dst, pkt.src, pkt.proto))
    if entry is None or not entry.node_port or not entry.rev_nat_index:
        return pkt, False
    fe = st.lb.revnat.get(entry.rev_nat_index)
    if fe is None:
        return pkt, False
    return attrs.evolve(pkt, src=fe), True


def _reply_route(ctx: NodeCtx, out: Packet, entry: CtEntry, hook: Hook) -> Packet:
    """nodeport_rev_dnat_ipv4 after CT_REPLY (nodeport.h:2336-2346): a client with a tunnel
    endpoint (a pod or node of the cluster) gets the reply through the tunnel, tagged
    REMOTE_NODE_ID (v1.18: the program's SECLABEL, v1.18 nodeport.h:2116: bpf_host's host
    identity becomes LOCAL_NODE_ID = 6 in encap.h:37-38, bpf_overlay's is WORLD_ID); an
    external client's reply leaves by the native device."""
    if not (ctx.cfg.tunneling and entry.node_port and entry.rev_nat_index):
        return out
    tep = ctx.ipcache.get(out.dst.addr)
    if tep is None or tep == ctx.ip:
        return out
    vni = REMOTE_NODE_ID
    if ctx.cfg.version is CiliumVersion.V1_18 and hook is Hook.FROM_OVERLAY:
        vni = WORLD_ID
    return attrs.evolve(out, outer=Outer(src=ctx.ip, dst=tep, vni=vni))


def _local(ctx: NodeCtx, st: NodeState, pkt: Packet, step: Step) -> HookResult:
    """After nodeport: local endpoints get the packet, the node's own IP goes up the stack."""
    if pkt.dst.addr in st.lb.local_endpoints:
        return HookResult(verdict=Verdict.DELIVER, packet=pkt, step=step)
    if pkt.dst.addr in (ctx.ip, ctx.router_ip) or (
            pkt.dst.addr, pkt.dst.port, pkt.proto) in st.lb.services:
        # the node's own address, or a frontend nodeport was skipped for (XFER_PKT_NO_SVC)
        return HookResult(verdict=Verdict.TO_STACK, packet=pkt, step=step,
                          reason=DropReason.PUNT_TO_STACK)
    return HookResult(verdict=Verdict.FORWARD, packet=pkt, step=step)


def _icmp_error_in(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, HookResult]:
    """nodeport_lb4 for an ICMP error: no service protocol (lb4_extract_tuple, lb.h:1697),
    so no service or DSR lookup; reverse SNAT only under bpf.masquerade (nodeport.h:3021,
    v6 :1624; v1.18 :2754-2760, :1420), where snat_v4_rev_nat takes DEST_UNREACH and
    TIME_EXCEEDED (nat.h:1189-1201) and snat_v6_rev_nat only PKT_TOOBIG (nat.h:2173).
    v1.18 reads a PKT_TOOBIG's quote from 4 bytes too early (v1.18 nat.h:1754-1755), so
    it never finds the mapping: the error is punted, or dropped where the misread walk
    fails (which depends on bytes the model does not carry; docs/icmp-errors.md)."""
    assert pkt.quote is not None
    handled = not pkt.is_ipv6 or (pkt.icmp is IcmpKind.FRAG_NEEDED
                                  and ctx.cfg.version is not CiliumVersion.V1_18)
    if ctx.cfg.masquerade and handled:
        snat, client = snat_rev_nat_icmp_error(st.snat, pkt.quote)
        st = attrs.evolve(st, snat=snat)
        if client is not None:
            quote = pkt.quote
            if not ctx.has(ModelFault.REVSNAT_ICMP_KEEPS_QUOTE):
                quote = attrs.evolve(quote, src=client)
            if ctx.has(ModelFault.REVDNAT_ICMP_QUOTE):
                entry = st.ct.get(egress_key(quote.src, quote.dst, quote.proto))
                fe = st.lb.revnat.get(entry.rev_nat_index) if entry is not None else None
                if fe is not None:
                    quote = attrs.evolve(quote, dst=fe)
            # the outer destination becomes the client (nat.h:1229-1234); the reverse DNAT
            # that follows skips ICMP (nodeport.h:2297-2301), so the quote keeps the
            # backend as its destination and the outer source stays the error's sender
            out = attrs.evolve(pkt, dst=Endpoint(addr=client.addr, port=0), quote=quote)
            return st, HookResult(verdict=Verdict.FORWARD, packet=out, step=Step.REV_SNAT)
    return st, _local(ctx, st, pkt, Step.PASS)


def nodeport_lb(ctx: NodeCtx, st: NodeState, pkt: Packet, hook: Hook
                ) -> tuple[NodeState, HookResult]:
    """nodeport_lb4: a fragment's ports first (lb4_extract_tuple), then the ports' path."""
    if pkt.frag is None or pkt.quote is not None:
        return _nodeport_lb(ctx, st, pkt, hook)
    st, logical, err = load_l4_ports(ctx.cfg, ctx.faults, st, pkt)
    if err is not None:
        return st, dropped(pkt, err)
    st, res = _nodeport_lb(ctx, st, logical, hook)
    if not pkt.frag.first and res.packet.frag is not None:
        res = attrs.evolve(res, packet=no_l4(res.packet))
    return st, res


def _nodeport_lb(ctx: NodeCtx, st: NodeState, pkt: Packet, hook: Hook
                 ) -> tuple[NodeState, HookResult]:
    """nodeport_lb4: service traffic to nodeport_svc_lb, the rest to DSR/reverse-SNAT."""
    if pkt.quote is not None:
        return _icmp_error_in(ctx, st, pkt)
    if pkt.proto in (Proto.TCP, Proto.UDP):
        svc = st.lb.services.get((pkt.dst.addr, pkt.dst.port, pkt.proto))
        if svc is not None:
            return nodeport_svc_lb(ctx, st, svc, pkt, at_xdp=hook is Hook.XDP)
        if ctx.cfg.dsr_enabled and pkt.dst.addr in st.lb.local_endpoints:
            st, is_dsr, frontend = _dsr_extract(ctx, st, pkt, hook)
            if is_dsr:
                st, err = _dsr_ingress(ctx, st, pkt, frontend)
                if err is not None:
                    return st, dropped(pkt, err)
                return st, HookResult(verdict=Verdict.DELIVER, packet=pkt,
                                      step=Step.DSR_INGRESS)
        if (ctx.cfg.nat_min <= pkt.dst.port <= ctx.cfg.nat_max_port
                and pkt.dst.addr in (ctx.ip, ctx.router_ip, ctx.masq_ip)):
            snat, client = snat_rev_nat(st.snat, pkt.src, pkt.dst, pkt.proto, ctx.faults,
                                        version=ctx.cfg.version, now=ctx.now)
            st = attrs.evolve(st, snat=snat)
            if client is not None:
                out = attrs.evolve(pkt, dst=client)
                out, revdnat = _rev_dnat(st, out)
                ekey = egress_key(client, pkt.src, pkt.proto)
                entry = st.ct.get(ekey)
                if entry is not None:
                    entry = on_packet(ctx.cfg.version, entry, pkt, ctx.now,
                                      direction=Direction.REPLY)
                    st = attrs.evolve(st, ct=st.ct.put(ekey, entry))
                    out = _reply_route(ctx, out, entry, hook)
                if not revdnat and client.addr in st.lb.local_endpoints:
                    # a masqueraded pod's reply (its CT entry is bpf_lxc's, updated as the
                    # pod receives it): no nodeport CT_REPLY (nodeport.h:2321-2351), so
                    # CTX_ACT_OK and bpf_host delivers it to the pod
                    return st, HookResult(verdict=Verdict.DELIVER, packet=out,
                                          step=Step.REV_SNAT)
                return st, HookResult(verdict=Verdict.FORWARD, packet=out, step=Step.REV_SNAT)
            # DROP_NAT_NO_MAPPING inside nodeport ingress is punted to the stack.
    return st, _local(ctx, st, pkt, Step.PASS)


def from_netdev(ctx: NodeCtx, st: NodeState, pkt: Packet, *, skip_nodeport: bool = False
                ) -> tuple[NodeState, HookResult]:
    """cil_from_netdev: a packet arriving on the node's native device. XDP's XFER_PKT_NO_SVC
    becomes skip-nodeport (bpf_host.c:1292-1293): XDP already did the NodePort work."""
    if pkt.outer is not None and pkt.outer.kind is Encap.IPIP:
        return _ipip_in(ctx, st, pkt)
    if pkt.outer is not None:
        return st, dropped(pkt, DropReason.DROP_UNKNOWN_L4)
    if skip_nodeport:
        return st, _local(ctx, st, pkt, Step.PASS)
    return nodeport_lb(ctx, st, pkt, Hook.FROM_NETDEV)


def _ipip_in(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, HookResult]:
    """An IPIP packet on the native device (bpf_host.c:1149-1175, v1.20): terminated when
    enable_ipip_termination is on and the outer destination is a local endpoint, then
    nodeport_lb4 on the inner request with that endpoint as the forced backend. Otherwise
    the kernel hands the still-encapsulated packet to the pod, whose stack has no IPIP
    handler (bpf_host.c:1134-1136): the model ends it here with that loss."""
    assert pkt.outer is not None
    forced = pkt.outer.dst
    local = forced in st.lb.local_endpoints
    if not terminates(ctx.cfg, local):
        return st, dropped(pkt, DropReason.ENDPOINT_NO_IPIP)
    inner = logical = attrs.evolve(pkt, outer=None)
    if inner.frag is not None and inner.quote is None:  # lb4_extract_tuple, as nodeport_lb
        st, logical, err = load_l4_ports(ctx.cfg, ctx.faults, st, inner)
        if err is not None:
            return st, dropped(inner, err)
    svc = None
    if logical.proto in (Proto.TCP, Proto.UDP) and logical.quote is None:
        svc = st.lb.services.get((logical.dst.addr, logical.dst.port, logical.proto))
    if svc is None:
        # no frontend for the inner destination here (another node's NodePort): up the
        # stack untranslated; a forwarding kernel would send it back to the LB node
        return st, HookResult(verdict=Verdict.TO_STACK, packet=inner, step=Step.PASS,
                              reason=DropReason.PUNT_TO_STACK)
    st, res = nodeport_svc_lb(ctx, st, svc, logical, forced=forced)
    if inner.frag is not None and not inner.frag.first and res.packet.frag is not None:
        res = attrs.evolve(res, packet=no_l4(res.packet))
    return st, res


def from_overlay(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, HookResult]:
    """cil_from_overlay: a decapsulated packet off the Geneve device."""
    inner = attrs.evolve(pkt, outer=None)
    st, res = nodeport_lb(ctx, st, inner, Hook.FROM_OVERLAY)
    if res.packet.dsr is not None and res.packet.dsr.kind is DsrKind.GENEVE_OPTION:
        # The Geneve option lives in the tunnel header: decapsulation removes it.
        res = attrs.evolve(res, packet=attrs.evolve(res.packet, dsr=None))
    return st, res


def to_netdev(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, HookResult]:
    """cil_to_netdev / nodeport_rev_dnat_fwd_ipv4: reverse DNAT for local and DSR backends.
    An ICMP error finds no entry here: its key has ICMP and no ports, as Cilium skips it
    (nodeport_egress.h:483-485; bpf_lxc.c:1637-1640, "doesn't support revDNAT for ICMP")."""
    key = egress_key(pkt.dst, pkt.src, pkt.proto)
    entry = st.ct.get(key)
    out = pkt
    step = Step.PASS
    if entry is not None and entry.dsr_internal:
        fe: Endpoint | None = None
        if entry.nat_addr is not None and entry.nat_port:
            fe = Endpoint(addr=entry.nat_addr, port=entry.nat_port)
        else:
            nat = st.snat.get(dsr_snat_key(pkt.dst, pkt.src, pkt.proto))
            if nat is not None:
                fe = Endpoint(addr=nat.to_addr, port=nat.to_port)
        if fe is not None and not ctx.has(ModelFault.SKIP_REVNAT_DSR):
            out, step = attrs.evolve(pkt, src=fe), Step.REV_DNAT
    elif entry is not None and not ctx.has(ModelFault.SKIP_REVNAT_LOCAL):
        out, changed = _rev_dnat(st, pkt)
        step = Step.REV_DNAT if changed else Step.PASS
    if entry is not None:
        updated = on_packet(ctx.cfg.version, entry, pkt, ctx.now, direction=Direction.REPLY)
        st = attrs.evolve(st, ct=st.ct.put(key, updated))
    if step is Step.PASS and needs_masquerade(ctx.cfg.masquerade, st, pkt, ctx.ipcache):
        # nothing reverse-DNATed (snat_done unset): nodeport_snat_fwd_ipv4 masquerades
        m = masquerade(ctx.cfg, st, pkt, ctx.masq_ip or ctx.ip, ctx.now, ctx.name, ctx.rand,
                       ctx.faults)
        if m.drop is not None:
            return m.state, dropped(pkt, m.drop)
        return m.state, HookResult(verdict=Verdict.FORWARD, packet=m.packet, step=Step.MASQ)
    tep = ctx.ipcache.get(out.dst.addr)
    if ctx.cfg.tunneling and tep is not None and tep != ctx.ip:
        # bpf_lxc's to-overlay encapsulation of the pod's packet, with the pod's identity
        out = attrs.evolve(out, outer=_outer(ctx, tep, POD_IDENTITY))
    return st, HookResult(verdict=Verdict.FORWARD, packet=out, step=step)


def reply_hook(cfg: CiliumConfig) -> Hook:
    """Where a backend's reply is reverse-translated: bpf_lxc in v1.13, to-netdev after."""
    return Hook.FROM_CONTAINER if cfg.version is CiliumVersion.V1_13 else Hook.TO_NETDEV

