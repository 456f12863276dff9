"""z3 encoding of the per-node hooks of model/nodeport.py and model/snat.py.

Addresses are 32/128-bit bit-vectors, ports 16-bit. Each node's CT map and SNAT map
(cilium_ct4_global, cilium_snat_v4_external) is a set of z3 Arrays from the packed key to
each entry field, so a proof covers every table content. Everything a configuration fixes
(mode, family, protocol, TCP flags of the n-th packet, faults) stays a Python value and
selects the code path, exactly as the compile-time defines select it in bpf/.
Nondeterminism (random backend choice, SNAT port retries) becomes oracle variables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import z3

from model.config import NODEPORT_PORT_MAX_NAT, CiliumVersion
from model.drops import DropReason
from model.faults import ModelFault
from model.maps import TupleFlags
from model.nodeport import Hook, Step, Verdict
from model.values import DsrKind, Proto, TcpFlags
from properties.symstate import (
    Key,
    NatMap,
    SCt,
    SCtx,
    SEp,
    SNat,
    SNode,
    SPkt,
    SRes,
    SSvc,
    result,
)
from properties.terms import (
    BV,
    NO_REASON,
    STEP,
    VERDICT,
    B,
    band,
    bnot,
    bor,
    bv,
    eq,
    ite_b,
    ite_bv,
    ite_int,
    ne,
    set_range,
)


def ek(client: SEp, backend: SEp) -> tuple[BV, BV, BV, BV, int]:
    """model.nodeport.egress_key as CtMap.get/put arguments.

    {saddr=b, daddr=c, sport=c_port, dport=b_port, OUT}.
    """
    return (client.addr, backend.addr, backend.port, client.port, TupleFlags.OUT)


def in_range(p: BV, lo: int, hi: int) -> B:
    """lo <= p <= hi, unsigned."""
    return z3.And(z3.UGE(p, lo), z3.ULE(p, hi))


def clamp(ctx: SCtx, v: BV) -> BV:
    """__snat_clamp_port_range (model.snat.clamp_port) on a 16-bit random value."""
    start = ctx.nodeport_min if ctx.has(ModelFault.NAT_RANGE_OVERLAPS_NODEPORT) else ctx.nat_min
    end = NODEPORT_PORT_MAX_NAT
    wide = z3.ZeroExt(16, v)
    if ctx.cfg.version is CiliumVersion.V1_13:
        span = end - start
        return z3.Extract(15, 0, bv(start, 32) + z3.URem(wide, bv(span, 32)))
    span = end - start + 1
    return z3.Extract(15, 0, bv(start, 32) + z3.LShR(wide * bv(span, 32), 16))


def clamp_start(ctx: SCtx) -> int:
    """The lowest port the clamp can yield (fault-aware)."""
    return ctx.nodeport_min if ctx.has(ModelFault.NAT_RANGE_OVERLAPS_NODEPORT) else ctx.nat_min


def closes(pkt: SPkt) -> bool:
    """A TCP FIN or RST marks the entry closing (model.conntrack.on_packet)."""
    return pkt.proto is Proto.TCP and bool(pkt.flags & (TcpFlags.FIN | TcpFlags.RST))


def reopens(ctx: SCtx, e: SCt, pkt: SPkt) -> B | bool:
    """model.conntrack.reopens: a SYN on a closing entry (v1.19+: without ACK) starts afresh."""
    if not pkt.is_syn:
        return False
    if ctx.cfg.version is CiliumVersion.V1_20 and pkt.flags & TcpFlags.ACK:
        return False
    return e.closing


def touched(e: SCt, pkt: SPkt) -> SCt:
    """The entry after a hit (model.conntrack.on_packet) in the fields the encoding tracks."""
    return replace(e, closing=bor(e.closing, closes(pkt)))


def in_backends(ctx: SCtx, bid: BV, ids: Sequence[int]) -> B:
    """bid is one of ids."""
    return bor(*[eq(bid, bv(i, 16)) for i in ids])


def backend_ep(ctx: SCtx, bid: BV) -> SEp:
    """cilium_lb4_backends_v3[bid]."""
    ids = sorted(ctx.backends)
    out = ctx.backends[ids[-1]]
    for i in reversed(ids[:-1]):
        out = ctx.backends[i].ite(eq(bid, bv(i, 16)), out)
    return out


def key_of(pkt: SPkt) -> Key:
    """model.nodeport.ct_tuple(pkt, SERVICE) as CtMap arguments."""
    return (pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)


def lb_select(ctx: SCtx, st: SNode, svc: SSvc, pkt: SPkt) -> tuple[SNode, BV, B, B]:
    """lb4_local: CT_SERVICE hit keeps the backend, else a random slot (oracle pick)."""
    raw = st.ct.get(pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)
    reopen = reopens(ctx, raw, pkt)
    e = replace(raw, valid=band(raw.valid, bnot(reopen)))
    key = (pkt.dst.addr, pkt.src.addr, pkt.src.port, pkt.dst.port, TupleFlags.SERVICE)
    # the lookup itself refreshes a live entry (closing on FIN) or resets a reopened one
    looked = st.ct.put(*key, replace(raw, closing=band(bnot(reopen),
                                                        bor(raw.closing, closes(pkt)))))
    after_lookup = looked.ite(raw.valid, st.ct)
    # an existing backend is kept unless it is terminating and this is a SYN
    hit = band(e.valid, not ctx.has(ModelFault.LB_IGNORES_CT_SERVICE), eq(e.rni, bv(svc.rni, 16)),
               in_backends(ctx, e.bid, list(ctx.backends)),
               bor(bnot(in_backends(ctx, e.bid, ctx.terminating)), not pkt.is_syn,
                   ctx.has(ModelFault.TERMINATING_BACKEND_TAKES_SYN)))
    if not svc.slots:
        return SNode(ct=after_lookup, snat=st.snat), e.bid, hit, bnot(e.valid)
    pick = ctx.oracle.bv("pick", 16)
    ctx.oracle.picks.append(pick)
    ctx.oracle.constraints.append(in_backends(ctx, pick, svc.slots))
    # a reselect keeps the (refreshed) entry and changes its backend; else a fresh entry
    new = SCt(valid=z3.BoolVal(True), bid=pick, rni=bv(svc.rni, 16),
              node_port=z3.BoolVal(False), dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False),
              nat_addr=bv(0, ctx.abits), nat_port=bv(0, 16),
              closing=band(e.valid, bor(e.closing, closes(pkt))))
    stored = st.ct.put(*key, new)
    st2 = SNode(ct=after_lookup.ite(hit, stored), snat=st.snat)
    return st2, ite_bv(hit, e.bid, pick), True, bnot(e.valid)


def ct_egress(ctx: SCtx, st: SNode, svc: SSvc, client: SEp, backend: SEp, pkt: SPkt
              ) -> SNode:
    """The nodeport CT_EGRESS entry, recreated on a rev_nat_index mismatch (GH#10983)."""
    old = st.ct.get(*ek(client, backend))
    keep = band(old.valid, old.node_port, eq(old.rni, bv(svc.rni, 16)),
                bnot(reopens(ctx, old, pkt)))
    new = SCt(valid=z3.BoolVal(True), bid=bv(0, 16), rni=bv(svc.rni, 16),
              node_port=z3.BoolVal(True), dsr=z3.BoolVal(False), nat_set=z3.BoolVal(False),
              nat_addr=bv(0, ctx.abits), nat_port=bv(0, 16))
    val = SCt(valid=z3.BoolVal(True), bid=ite_bv(keep, old.bid, new.bid),
              rni=ite_bv(keep, old.rni, new.rni), node_port=z3.BoolVal(True),
              dsr=ite_b(keep, old.dsr, False), nat_set=ite_b(keep, old.nat_set, False),
              nat_addr=ite_bv(keep, old.nat_addr, new.nat_addr),
              nat_port=ite_bv(keep, old.nat_port, new.nat_port),
              closing=band(keep, bor(old.closing, closes(pkt))))
    ct = st.ct.put(*ek(client, backend), val)
    return SNode(ct=ct, snat=st.snat)


def snat_nat(ctx: SCtx, snat: NatMap, client: SEp, backend: SEp, target: BV
             ) -> tuple[NatMap, SEp, B]:
    """snat_v4_nat_handle_mapping + snat_v4_new_mapping: (map, NAT endpoint, allocated)."""
    out_f, in_f = TupleFlags.OUT, TupleFlags.IN
    ex = snat.get(client.addr, backend.addr, client.port, backend.port, out_f)
    reuse = band(ex.valid, eq(ex.addr, target))
    # reuse path: restore a lost reverse entry
    rk = (backend.addr, target, backend.port, ex.port, in_f)
    rv = snat.get(*rk)
    healed = snat.put(*rk, SNat(valid=z3.BoolVal(True), addr=client.addr, port=client.port))
    reused_map = healed.ite(bnot(rv.valid), snat)
    # stale target: drop both, then allocate
    stale = band(ex.valid, ne(ex.addr, target))
    cleared = snat.delete(backend.addr, ex.addr, backend.port, ex.port, in_f).delete(
        client.addr, backend.addr, client.port, backend.port, out_f)
    base = cleared.ite(stale, snat)
    r0 = ctx.oracle.bv("rand", 16)
    p0 = ite_bv(in_range(client.port, ctx.nat_min, NODEPORT_PORT_MAX_NAT), client.port,
                clamp(ctx, r0))
    if ctx.has(ModelFault.SNAT_IGNORE_REVERSE_ENTRY):
        port: BV = p0
        ok: B = z3.BoolVal(True)
        alt = p0
        alt_ok = z3.BoolVal(True)
    else:
        free0 = bnot(base.get(backend.addr, target, backend.port, p0, in_f).valid)
        alt = ctx.oracle.bv("natport", 16)
        alt_ok = ctx.oracle.bool("natok")
        alt_free = bnot(base.get(backend.addr, target, backend.port, alt, in_f).valid)
        ctx.oracle.constraints.append(z3.Implies(
            alt_ok, z3.And(in_range(alt, clamp_start(ctx), NODEPORT_PORT_MAX_NAT), alt_free)))
        port = ite_bv(free0, p0, alt)
        ok = bor(free0, alt_ok)
        set_range(port, clamp_start(ctx), NODEPORT_PORT_MAX_NAT)
    ctx.oracle.nat_ports.append((r0, alt, alt_ok))
    alloc = base.put(backend.addr, target, backend.port, port, in_f,
                     SNat(valid=z3.BoolVal(True), addr=client.addr, port=client.port)).put(
        client.addr, backend.addr, client.port, backend.port, out_f,
        SNat(valid=z3.BoolVal(True), addr=target, port=port))
    alloc = alloc.ite(ok, base)
    final = reused_map.ite(reuse, alloc)
    nat = SEp(addr=target, port=ite_bv(reuse, ex.port, port))
    return final, nat, bor(reuse, ok)


def snat_rev_nat(ctx: SCtx, snat: NatMap, src: SEp, dst: SEp) -> tuple[NatMap, B, SEp]:
    """snat_v4_rev_nat: the original client for a reply to L:N, restoring a lost OUT entry."""
    e = snat.get(src.addr, dst.addr, src.port, dst.port, TupleFlags.IN)
    cport = dst.port if ctx.has(ModelFault.REVSNAT_WRONG_PORT) else e.port
    client = SEp(addr=e.addr, port=cport)
    fwd = snat.get(client.addr, src.addr, client.port, src.port, TupleFlags.OUT)
    restored = snat.put(client.addr, src.addr, client.port, src.port, TupleFlags.OUT,
                        SNat(valid=z3.BoolVal(True), addr=dst.addr, port=dst.port))
    snat2 = restored.ite(band(e.valid, bnot(fwd.valid)), snat)
    return snat2, e.valid, client


def carries_dsr(ctx: SCtx, pkt: SPkt, first: B) -> B:
    """_carries_dsr: TCP SYN (v1.13 IPv6: every packet), every UDP datagram."""
    if pkt.proto is not Proto.TCP:
        return bor(first, not ctx.has(ModelFault.DSR_UDP_FIRST_ONLY))
    if ctx.cfg.version is CiliumVersion.V1_13 and ctx.cfg.ipv6:
        return z3.BoolVal(True)
    return z3.BoolVal(pkt.is_syn and not ctx.has(ModelFault.DSR_NO_OPT_ON_SYN))


def dsr_forward(ctx: SCtx, st: SNode, pkt: SPkt, out: SPkt, first: B) -> SRes:
    """tail_nodeport_ipv4_dsr: attach the frontend and forward (Geneve: encapsulate)."""
    out = replace(out, dsr=carries_dsr(ctx, pkt, first), dsr_fe=pkt.dst)
    if ctx.cfg.dispatch.value == "geneve":
        found, tep = ctx.tep(out.dst.addr)
        out = replace(out, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep)
        return result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_NO_TUNNEL_ENDPOINT
                      ).ite(bnot(found), result(st, Verdict.FORWARD, Step.DSR, out))
    return result(st, Verdict.FORWARD, Step.DSR, out)


def nodeport_svc_lb(ctx: SCtx, st: SNode, svc: SSvc, pkt: SPkt) -> SRes:
    """nodeport_svc_lb4: lb4_local, DNAT, then local / DSR / SNAT forwarding."""
    if ctx.has(ModelFault.ETP_LOCAL_FORWARDS_REMOTE) and svc.etp_local:
        svc = replace(svc, slots=svc.all_backends)
    st, bid, found, first = lb_select(ctx, st, svc, pkt)
    if ctx.cfg.rejects:
        icmp = replace(pkt, src=SEp(addr=pkt.dst.addr, port=bv(0, 16)),
                       dst=SEp(addr=pkt.src.addr, port=bv(0, 16)), dsr=z3.BoolVal(False),
                       outer=z3.BoolVal(False))
        none = result(st, Verdict.REJECT, Step.REJECT, icmp, DropReason.DROP_NO_SERVICE, True)
    else:
        none = result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_NO_SERVICE)
    if not ctx.backends:
        return none
    backend = backend_ep(ctx, bid)
    client = pkt.src
    if ctx.has(ModelFault.DNAT_KEEPS_FRONTEND_PORT):
        backend = SEp(addr=backend.addr, port=pkt.dst.port)
    out = replace(pkt, dst=backend)
    local = ctx.is_local(backend.addr)
    st_eg = ct_egress(ctx, st, svc, client, backend, pkt)
    res_local = result(st_eg, Verdict.DELIVER, Step.DNAT, out)
    if svc.dsr or (ctx.has(ModelFault.HYBRID_UDP_AS_DSR) and pkt.proto is Proto.UDP):
        dout = out
        if ctx.has(ModelFault.DSR_ALSO_SNATS):
            dout = replace(out, src=SEp(addr=ctx.ip, port=client.port))
        remote = dsr_forward(ctx, st, pkt, dout, first)
    else:
        st2 = st_eg
        target = ctx.ip
        if ctx.cfg.tunneling and ctx.router is not None:
            found_r, _ = ctx.tep(backend.addr)
            target = ite_bv(found_r, ctx.router, ctx.ip)
        snat, nat, ok = snat_nat(ctx, st2.snat, client, backend, target)
        st2 = SNode(ct=st2.ct, snat=snat)
        sout = out if ctx.has(ModelFault.SNAT_SKIPPED) else replace(out, src=nat)
        fwd = result(st2, Verdict.FORWARD, Step.SNAT, sout)
        if ctx.cfg.tunneling:
            found_t, tep = ctx.tep(backend.addr)
            enc = replace(sout, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep)
            # no tunnel endpoint: the native device (nodeport.h:2592-2604, 2687)
            fwd = result(st2, Verdict.FORWARD, Step.SNAT, enc).ite(found_t, fwd)
        remote = fwd.ite(ok, result(st2, Verdict.DROP, Step.DROP, pkt,
                                     DropReason.DROP_NAT_NO_MAPPING))
    if local is True or (not isinstance(local, bool) and z3.is_true(local)):
        return res_local.ite(found, none)
    return res_local.ite(local, remote).ite(found, none)


def dsr_extract(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> tuple[SNode, B, B, SEp]:
    """nodeport_extract_dsr_v4: (state, is DSR flow, frontend present, frontend)."""
    if pkt.proto is Proto.TCP and not pkt.is_syn:
        e = st.ct.get(*ek(pkt.src, pkt.dst))
        return st, band(e.valid, e.dsr), z3.BoolVal(False), ctx.zero_ep()
    kind = ctx.cfg.dsr_kind
    kind_ok = (kind is DsrKind.GENEVE_OPTION if hook is Hook.FROM_OVERLAY
               else kind is not DsrKind.GENEVE_OPTION)
    accepted = band(pkt.dsr, kind_ok)
    if pkt.is_syn:
        e = st.ct.get(*ek(pkt.src, pkt.dst))
        cleared = st.ct.put(*ek(pkt.src, pkt.dst), replace(e, dsr=z3.BoolVal(False)))
        st = SNode(ct=cleared.ite(band(bnot(accepted), e.valid, e.dsr), st.ct), snat=st.snat)
    return st, accepted, accepted, pkt.dsr_fe


def dsr_ingress(ctx: SCtx, st: SNode, pkt: SPkt, has_fe: B, fe: SEp) -> tuple[SNode, B]:
    """nodeport_dsr_ingress_ipv4: record the frontend; returns (state, DROP_INVALID)."""
    old = st.ct.get(*ek(pkt.src, pkt.dst))
    fresh = bor(bnot(old.valid), bnot(old.dsr))
    keep = band(bnot(fresh), bnot(band(pkt.is_syn, has_fe)))
    invalid = bor(bnot(has_fe), eq(fe.port, bv(0, 16)))
    if ctx.has(ModelFault.DSR_CT_NOT_RECORDED):
        return st, band(bnot(keep), invalid)
    in_ct = ctx.cfg.version is CiliumVersion.V1_20
    entry = SCt(valid=z3.BoolVal(True), bid=bv(0, 16), rni=bv(0, 16),
                closing=z3.BoolVal(False), node_port=z3.BoolVal(False), dsr=z3.BoolVal(True),
                nat_set=z3.BoolVal(in_ct), nat_addr=fe.addr if in_ct else bv(0, ctx.abits),
                nat_port=fe.port if in_ct else bv(0, 16))
    ct = st.ct.put(*ek(pkt.src, pkt.dst), entry)
    snat = st.snat
    if not in_ct:
        snat = snat.put(pkt.dst.addr, pkt.src.addr, pkt.dst.port, pkt.src.port, TupleFlags.OUT,
                        SNat(valid=z3.BoolVal(True), addr=fe.addr, port=fe.port))
    created = SNode(ct=ct, snat=snat)
    kept = st
    if closes(pkt):
        kept = SNode(ct=st.ct.put(*ek(pkt.src, pkt.dst), touched(old, pkt)), snat=st.snat)
    new_st = kept.ite(keep, st.ite(invalid, created))
    return new_st, band(bnot(keep), invalid)


def rev_dnat(ctx: SCtx, st: SNode, pkt: SPkt) -> tuple[SPkt, B]:
    """nodeport_rev_dnat_ipv4 / __lb4_rev_nat: source back to the frontend."""
    e = st.ct.get(*ek(pkt.dst, pkt.src))
    ok = band(e.valid, e.node_port, ne(e.rni, bv(0, 16)))
    src = pkt.src
    found: B = z3.BoolVal(False)
    for rni, fe in ctx.revnat.items():
        hit = band(ok, eq(e.rni, bv(rni, 16)))
        src = fe.ite(hit, src)
        found = bor(found, hit)
    return replace(pkt, src=src), found


def local_out(ctx: SCtx, st: SNode, pkt: SPkt, step: Step) -> SRes:
    """_local: pods get the packet, the node's own IP goes up the stack, else forward."""
    deliver = result(st, Verdict.DELIVER, step, pkt)
    stack = result(st, Verdict.TO_STACK, step, pkt, DropReason.PUNT_TO_STACK)
    fwd = result(st, Verdict.FORWARD, step, pkt)
    return deliver.ite(ctx.is_local(pkt.dst.addr), stack.ite(ctx.is_own(pkt.dst.addr), fwd))


def _is(c: B | bool, v: bool) -> bool:
    if isinstance(c, bool):
        return c is v
    return bool(z3.is_true(c)) if v else bool(z3.is_false(c))


def _no_service(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> SRes:
    """nodeport_lb4's branch for packets that match no service: DSR ingress, reverse SNAT."""
    def revsnat_or_local(st0: SNode) -> SRes:
        nat_case = band(in_range(pkt.dst.port, ctx.nat_min, NODEPORT_PORT_MAX_NAT),
                        ctx.is_own(pkt.dst.addr))
        plain = local_out(ctx, st0, pkt, Step.PASS)
        if _is(nat_case, False):
            return plain
        snat, found, client = snat_rev_nat(ctx, st0.snat, pkt.src, pkt.dst)
        st_n = SNode(ct=st0.ct, snat=snat)
        out, _ = rev_dnat(ctx, st_n, replace(pkt, dst=client))
        if closes(pkt):
            ce = st_n.ct.get(*ek(client, pkt.src))
            upd = st_n.ct.put(*ek(client, pkt.src), touched(ce, pkt))
            st_n = SNode(ct=upd.ite(band(found, ce.valid), st_n.ct), snat=st_n.snat)
        revsnat = result(st_n, Verdict.FORWARD, Step.REV_SNAT, out).ite(
            found, local_out(ctx, st_n, pkt, Step.PASS))
        return revsnat.ite(nat_case, plain)

    nosvc = revsnat_or_local(st)
    local = ctx.is_local(pkt.dst.addr)
    if ctx.cfg.mode.value != "snat" and not _is(local, False):
        st_d, is_dsr, has_fe, fe = dsr_extract(ctx, st, pkt, hook)
        st_i, invalid = dsr_ingress(ctx, st_d, pkt, has_fe, fe)
        ingress = result(st_i, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_INVALID).ite(
            invalid, result(st_i, Verdict.DELIVER, Step.DSR_INGRESS, pkt))
        dsr_path = ingress.ite(is_dsr, revsnat_or_local(st_d))
        nosvc = dsr_path.ite(local, nosvc)
    return nosvc


def nodeport_lb(ctx: SCtx, st: SNode, pkt: SPkt, hook: Hook) -> SRes:
    """nodeport_lb4: service traffic to nodeport_svc_lb, the rest to DSR / reverse SNAT."""
    matches = []
    for svc in ctx.services:
        c = pkt.dst.eq(svc.fe)
        if _is(c, False):
            continue
        if _is(c, True):
            return nodeport_svc_lb(ctx, st, svc, pkt)
        matches.append((svc, c))
    res = _no_service(ctx, st, pkt, hook)
    for svc, c in reversed(matches):
        res = nodeport_svc_lb(ctx, st, svc, pkt).ite(c, res)
    return res


def from_netdev(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_from_netdev: encapsulated packets on the native device are not ours."""
    return result(st, Verdict.DROP, Step.DROP, pkt, DropReason.DROP_UNKNOWN_L4).ite(
        pkt.outer, nodeport_lb(ctx, st, pkt, Hook.FROM_NETDEV))


def from_overlay(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_from_overlay: the decapsulated inner packet."""
    inner = replace(pkt, outer=z3.BoolVal(False), osrc=bv(0, ctx.abits), odst=bv(0, ctx.abits))
    res = nodeport_lb(ctx, st, inner, Hook.FROM_OVERLAY)
    if ctx.cfg.dsr_kind is not DsrKind.GENEVE_OPTION:
        return res
    # the Geneve option lives in the tunnel header: decapsulation removes it
    off = z3.BoolVal(False)
    return replace(res, pkt=replace(res.pkt, dsr=off),
                   fwd=replace(res.fwd, dsr=off) if res.fwd is not None else None,
                   dlv=replace(res.dlv, dsr=off) if res.dlv is not None else None)


def to_netdev(ctx: SCtx, st: SNode, pkt: SPkt) -> SRes:
    """cil_to_netdev / nodeport_rev_dnat_fwd_ipv4: reverse DNAT for local and DSR backends."""
    e = st.ct.get(*ek(pkt.dst, pkt.src))
    from_ct = band(e.nat_set, ne(e.nat_port, bv(0, 16)))
    n = st.snat.get(pkt.src.addr, pkt.dst.addr, pkt.src.port, pkt.dst.port, TupleFlags.OUT)
    fe = SEp(addr=e.nat_addr, port=e.nat_port).ite(from_ct, SEp(addr=n.addr, port=n.port))
    have_fe = bor(from_ct, n.valid)
    dsr_hit = band(e.valid, e.dsr)
    dsr_xlate = band(dsr_hit, have_fe, not ctx.has(ModelFault.SKIP_REVNAT_DSR))
    rd_pkt, rd_changed = rev_dnat(ctx, st, pkt)
    local_xlate = band(bnot(dsr_hit), e.valid, not ctx.has(ModelFault.SKIP_REVNAT_LOCAL),
                       rd_changed)
    out = replace(pkt, src=fe).ite(dsr_xlate, replace(pkt, src=rd_pkt.src).ite(
        local_xlate, pkt))
    step = ite_int(bor(dsr_xlate, local_xlate), STEP[Step.REV_DNAT], STEP[Step.PASS])
    if closes(pkt):
        upd = st.ct.put(*ek(pkt.dst, pkt.src), touched(e, pkt))
        st = SNode(ct=upd.ite(e.valid, st.ct), snat=st.snat)
    if ctx.cfg.tunneling:
        found, tep = ctx.tep(out.dst.addr)
        enc = band(found, ne(tep, ctx.ip))
        out = replace(out, outer=z3.BoolVal(True), osrc=ctx.ip, odst=tep).ite(enc, out)
    return SRes(st=st, verdict=z3.IntVal(VERDICT[Verdict.FORWARD]), step=step,
                reason=z3.IntVal(NO_REASON), pkt=out, icmp=z3.BoolVal(False), fwd=out,
                dlv=None)


HookFn = Callable[[SCtx, SNode, SPkt], SRes]
