"""The NodePort program at XDP (bpf_xdp.c, loadBalancer.acceleration) and its hand-over to tc."""

from __future__ import annotations

import attrs

from model.config import CiliumVersion
from model.drops import DropReason
from model.faults import ModelFault
from model.fragments import load_l4_ports
from model.hooks import Hook, HookResult, NodeCtx, Step, Verdict
from model.ipip import v118_ipip_skips
from model.maps import NodeState
from model.nodeport import dropped, in_ranges, nodeport_lb
from model.values import Packet, Proto


@attrs.frozen(kw_only=True)
class XdpResult:
    """What cil_xdp_entry did: a final verdict (XDP_TX / XDP_DROP), or XDP_PASS to tc.

    `passed` is XDP_PASS (CTX_ACT_OK): the packet, as XDP left it, goes on to cil_from_netdev.
    `no_svc` is XFER_PKT_NO_SVC in the metadata (bpf_xdp.c:86-93 ctx_move_xfer), which
    from-netdev turns into skip-nodeport (bpf_host.c:1292-1293).
    """

    res: HookResult
    passed: bool
    no_svc: bool


def _pass(pkt: Packet, step: Step, no_svc: bool) -> XdpResult:
    return XdpResult(res=HookResult(verdict=Verdict.TO_STACK, packet=pkt, step=step),
                     passed=True, no_svc=no_svc)


def xdp(ctx: NodeCtx, st: NodeState, pkt: Packet) -> tuple[NodeState, XdpResult]:
    """cil_xdp_entry -> tail_lb_ipv4/6 (bpf_xdp.c:97-123): nodeport_lb4/6 at XDP.

    The hook is the model's nodeport_lb itself; the XDP differences are the branches here:
    - an eTP=Local service is punted before any lookup (v1.20 nodeport.h:2732 / :1398,
      lb_punt_etp_local() true in XDP, lb.h:648-655): XDP_PASS without XFER_PKT_NO_SVC, so
      tc runs the whole service path again; v1.18 has no punt and serves it at XDP;
    - a local backend is DNATed at XDP and passed with XFER_PKT_NO_SVC (nodeport.h:2865-2868,
      v1.18 :2652-2655): tc only delivers it;
    - a packet of no service sets XFER_PKT_NO_SVC first (nodeport.h:2971, v1.18 :2731): a
      reverse-SNATed reply leaves at XDP (fib redirect: XDP_TX), a DSR request for a local
      backend or anything else is passed and tc skips nodeport;
    - remote backends (SNAT, DSR) and the no-backend ICMP reject leave at XDP (XDP_TX).
    """
    svc, loaded = None, st
    if pkt.quote is None and pkt.proto in (Proto.TCP, Proto.UDP):
        # the punt follows the service lookup, on the ports lb4_extract_tuple loaded: a
        # later fragment's come from the fragment map (nodeport.h:2732 after the lookup)
        loaded, probe, _ = load_l4_ports(ctx.cfg, ctx.faults, st, pkt)
        svc = st.lb.services.get((probe.dst.addr, probe.dst.port, probe.proto))
    if svc is not None and svc.etp_local and ctx.cfg.version is CiliumVersion.V1_20:
        st = loaded  # a first fragment's ports were recorded before the lookup
        if svc.source_ranges and not in_ranges(pkt.src.addr, svc.source_ranges):
            return st, _final(dropped(pkt, DropReason.DROP_NOT_IN_SRC_RANGE))
        if not svc.routable:
            return st, _final(dropped(pkt, DropReason.DROP_IS_CLUSTER_IP))
        return st, _pass(pkt, Step.PASS, ctx.has(ModelFault.XDP_ETP_LOCAL_SKIPS_TC))
    before = st
    st, res = nodeport_lb(ctx, st, pkt, Hook.XDP)
    if res.step is Step.DSR_INGRESS and ctx.cfg.version is CiliumVersion.V1_13:
        # v1.13 extracts DSR info in bpf_lxc (the model's to-container), not at XDP: the
        # packet passes untouched and from-netdev, which stands for it, does the work.
        return before, _pass(pkt, Step.PASS, False)
    if res.verdict is Verdict.DELIVER:
        return st, _pass(res.packet, res.step, True)
    if res.verdict is Verdict.TO_STACK:
        # CTX_ACT_OK: for no service XFER_PKT_NO_SVC is set; a service's non-routable
        # pass-up (handle_nonroutable_endpoints_v4) sets none, and tc decides again.
        return st, _pass(res.packet, res.step,
                         svc is None or v118_ipip_skips(ctx.cfg, svc.dsr))
    return st, _final(res)


def _final(res: HookResult) -> XdpResult:
    """XDP_TX (FORWARD, and the REJECT's ICMP error, redirect_self) or XDP_DROP."""
    return XdpResult(res=res, passed=False, no_svc=False)
