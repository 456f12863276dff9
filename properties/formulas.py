"""Each round-trip property as (premise, safety) over a symbolic Run of one flow."""

from __future__ import annotations

from collections.abc import Callable

import z3

from model.drops import DropReason
from model.nodeport import Step, Verdict
from model.values import Proto
from properties.roundtrip import END_CLIENT, END_DROP, END_POD, Run, SHop, hop_on, step_is
from properties.symstate import SEp
from properties.terms import STEP, VERDICT, B, band, bor

Formula = Callable[[Run], tuple[B, B]]
REV_STEPS = (Step.REV_DNAT, Step.REV_SNAT)
SERVICE_STEPS = (Step.DNAT, Step.SNAT, Step.DSR, Step.REJECT)


def _client(r: Run) -> SEp:
    return SEp(addr=r.world.client, port=r.world.cport)


def _reply_arrives(r: Run) -> B:
    return bor(*[band(x.reply.active, x.reply.end == END_CLIENT) for x in r.exchanges])


def _delivered(r: Run) -> B:
    return bor(*[band(x.request.active, x.request.end == END_POD) for x in r.exchanges])


def _reply_src_is_frontend(r: Run) -> B:
    fe, cl = r.world.frontend, _client(r)
    return band(*[z3.Implies(band(x.reply.active, x.reply.end == END_CLIENT),
                             band(x.reply.client_pkt.src.eq(fe), x.reply.client_pkt.dst.eq(cl)))
                  for x in r.exchanges])


def lb01(r: Run) -> tuple[B, B]:
    """P-LB-01: replies reach the client from exactly F, to the client's own tuple."""
    return _reply_arrives(r), _reply_src_is_frontend(r)


def lb02(r: Run) -> tuple[B, B]:
    """P-LB-02: delivered to a backend of F at its targetPort, or a Cilium drop."""
    w = r.world
    parts = []
    for x in r.exchanges:
        q = x.request
        to_backend = bor(*[band(q.at == i, q.pod_pkt.dst.eq(w.backend(i)))
                           for i in range(len(w.pods))])
        cilium_drop = band(q.end == END_DROP, q.reason < 0)
        parts.append(z3.Implies(q.active, bor(band(q.end == END_POD, to_backend),
                                              cilium_drop)))
    return _delivered(r), band(*parts)


def _rev_hops(x: object) -> list[SHop]:
    from properties.roundtrip import Exchange
    assert isinstance(x, Exchange)
    return [x.reply_hook, *x.reply.hops]


def nat01(r: Run) -> tuple[B, B]:
    """P-NAT-01: replies reaching the client were reverse-translated once, to the original."""
    fe, cl = r.world.frontend, _client(r)
    parts = []
    for x in r.exchanges:
        hops = _rev_hops(x)
        rev = [band(h.active, bor(*[step_is(h, s) for s in REV_STEPS])) for h in hops]
        count = z3.Sum(*[z3.If(c, 1, 0) for c in rev])
        exact = band(*[z3.Implies(c, band(h.pkt.src.eq(fe), h.pkt.dst.eq(cl)))
                       for c, h in zip(rev, hops, strict=True)])
        arrived = band(x.reply.active, x.reply.end == END_CLIENT)
        parts.append(z3.Implies(arrived, band(count == 1, exact)))
    return _reply_arrives(r), band(*parts)


def nat03(r: Run) -> tuple[B, B]:
    """P-NAT-03: SNAT ports lie above the NodePort range; replies never hit a service."""
    ctx = r.world.ctxs[0]
    parts, premise = [], []
    for x in r.exchanges:
        for h in x.request.hops:
            snat = band(hop_on(h, 0), step_is(h, Step.SNAT))
            premise.append(snat)
            parts.append(z3.Implies(snat, z3.And(z3.UGE(h.pkt.src.port, ctx.nat_min),
                                                 z3.ULE(h.pkt.src.port, 65535))))
        for h in x.reply.hops:
            parts.append(z3.Implies(h.active, band(*[z3.Not(step_is(h, s))
                                                     for s in SERVICE_STEPS])))
    return bor(*premise), band(*parts)


def dsr01(r: Run) -> tuple[B, B]:
    """P-DSR-01: the backend sees the client's own address and port as source."""
    cl = _client(r)
    parts = [z3.Implies(band(x.request.active, x.request.end == END_POD),
                        x.request.pod_pkt.src.eq(cl)) for x in r.exchanges]
    return _delivered(r), band(*parts)


def dsr02(r: Run) -> tuple[B, B]:
    """P-DSR-02: DSR replies never pass the receiving node; SNAT replies always do."""
    parts = []
    for x in r.exchanges:
        at_l = [hop_on(h, 0) for h in x.reply.hops]
        arrived = band(x.reply.active, x.reply.end == END_CLIENT)
        if r.world.cfg.uses_dsr:
            parts.append(band(*[z3.Not(a) for a in at_l]))
        else:
            parts.append(z3.Implies(arrived, bor(*at_l)))
    return _reply_arrives(r), band(*parts)


def dsr03(r: Run) -> tuple[B, B]:
    """P-DSR-03: DSR metadata leaves the LB node with F when due; the backend node uses it."""
    fe = r.world.frontend
    parts = []
    for i, x in enumerate(r.exchanges):
        due = r.world.cfg.proto is not Proto.TCP or i == 0
        for h in x.request.hops:
            if due:
                parts.append(z3.Implies(band(hop_on(h, 0), step_is(h, Step.DSR)),
                                        band(h.pkt.dsr, h.pkt.dsr_fe.eq(fe))))
        delivered = band(x.request.active, x.request.end == END_POD)
        rh = x.reply_hook
        parts.append(z3.Implies(delivered, band(rh.step == STEP[Step.REV_DNAT],
                                                rh.pkt.src.eq(fe))))
    return _delivered(r), band(*parts)


def etp01(r: Run) -> tuple[B, B]:
    """P-ETP-01: eTP=Local never forwards to another node; no local backend: DROP_NO_SERVICE."""
    parts = []
    has_local = any(n == 0 for _, n in r.world.pods)
    for x in r.exchanges:
        q = x.request
        for h in q.hops:
            parts.append(z3.Implies(hop_on(h, 0), h.verdict != VERDICT[Verdict.FORWARD]))
        if not has_local:
            no_svc = band(q.end == END_DROP, q.at == 0,
                          q.reason == DropReason.DROP_NO_SERVICE.value)
            if r.world.cfg.rejects:
                no_svc = band(no_svc, q.icmp_to_client)
            parts.append(z3.Implies(q.active, no_svc))
    premise = r.exchanges[0].request.active
    return premise, band(*parts)


def hyb01(r: Run) -> tuple[B, B]:
    """P-HYB-01: hybrid sends TCP the DSR way and UDP the SNAT way; replies come from F."""
    want = Step.DSR if r.world.cfg.proto is Proto.TCP else Step.SNAT
    parts = []
    for x in r.exchanges:
        for h in x.request.hops:
            fwd = band(hop_on(h, 0), h.verdict == VERDICT[Verdict.FORWARD])
            parts.append(z3.Implies(fwd, step_is(h, want)))
    _, lb = lb01(r)
    return _reply_arrives(r), band(lb, *parts)


def env(r: Run) -> tuple[B, B]:
    """P-ENV-01/02: the fabric never drops the flow's packets."""
    parts = []
    for x in r.exchanges:
        parts += [z3.Not(x.request.fabric_drop), z3.Not(x.reply.fabric_drop)]
    return r.exchanges[0].request.active, band(*parts)


def ct01(r: Run) -> tuple[B, B]:
    """P-CT-01 (bounded witness): every delivered packet of the flow reaches one backend."""
    first = r.exchanges[0].request
    parts = []
    for x in r.exchanges[1:]:
        q = x.request
        both = band(first.end == END_POD, q.active, q.end == END_POD)
        parts.append(z3.Implies(both, q.at == first.at))
    both_any = bor(*[band(first.end == END_POD, x.request.active, x.request.end == END_POD)
                     for x in r.exchanges[1:]])
    return both_any, band(*parts)


FORMULAS: dict[str, Formula] = {
    "P-LB-01": lb01, "P-LB-02": lb02, "P-NAT-01": nat01, "P-NAT-03": nat03,
    "P-DSR-01": dsr01, "P-DSR-02": dsr02, "P-DSR-03": dsr03, "P-ETP-01": etp01,
    "P-HYB-01": hyb01, "P-ENV-01": env, "P-ENV-02": env, "P-CT-01": ct01,
}
