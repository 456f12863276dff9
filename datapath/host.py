"""Per-node hook entry points (bpf/bpf_host.c cil_from_netdev/cil_to_netdev, bpf_overlay.c)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import attrs

from datapath.config import NodeConfig
from datapath.conntrack import ct_gc, nat_gc
from datapath.drop import (
    XFER_PKT_NO_SVC,
    XFER_PKT_SNAT_DONE,
    DatapathDrop,
    DropReason,
    Verdict,
    XdpVerdict,
)
from datapath.errors import ConfigError
from datapath.fragments import load_l4_ports
from datapath.ipip import terminate
from datapath.maps import (
    BE_STATE_ACTIVE,
    BE_STATE_MAINTENANCE,
    BE_STATE_QUARANTINED,
    BE_STATE_TERMINATING,
    LB_LOOKUP_SCOPE_EXT,
    SVC_FLAG_AFFINITY,
    SVC_FLAG_EXT_LOCAL_SCOPE,
    SVC_FLAG_EXTERNAL_IP,
    SVC_FLAG_FWD_MODE_DSR,
    SVC_FLAG_LOADBALANCER,
    SVC_FLAG_NODEPORT,
    SVC_FLAG_ROUTABLE,
    SVC_FLAG_SOURCE_RANGE,
    SVC_FLAG_SOURCE_RANGE_DENY,
    AffinityMatch,
    EndpointInfo,
    HashMap,
    LbBackend,
    LbKey,
    LbReverseNat,
    LbService,
    NodeMaps,
)
from datapath.nat import (
    masq_reply_ct,
    masquerade,
    needs_masquerade,
    snat_rev_nat,
    snat_rev_nat_icmp_error,
)
from datapath.nodeport import (
    POD_IDENTITY,
    REMOTE_NODE_ID,
    WORLD_ID,
    dsr_ingress,
    encapsulate,
    nodeport_lb,
    rev_dnat,
    xdp_punts_etp_local,
)
from datapath.packet import (
    DSR_GENEVE_OPT_CLASS,
    DSR_GENEVE_OPT_TYPE,
    ETH_P_TEB,
    GENEVE_PORT,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    PROTO_NAMES,
    TCP_SYN,
    Parsed,
    find_dsr_opt4,
    find_dsr_opt6,
    ip_bytes,
    parse,
)

_H = struct.Struct("!H")
_STATES = {"active": BE_STATE_ACTIVE, "terminating": BE_STATE_TERMINATING,
           "quarantined": BE_STATE_QUARANTINED, "maintenance": BE_STATE_MAINTENANCE}
HOOKS = ("from-netdev", "to-netdev", "from-overlay", "xdp", "from-container", "to-container")
_REDIRECT_NETDEV = (Verdict.CTX_ACT_REDIRECT, "netdev")
_new_result = tuple.__new__  # NamedTuple construction without the Python-level __new__


class HookResult(NamedTuple):
    """What a BPF program hands back: TC verdict, the packet as left, drop reason, target.

    A NamedTuple (immutable, compared by value) because one is built per packet.
    """

    verdict: Verdict | XdpVerdict  # XdpVerdict from the xdp hook only
    packet: bytes | bytearray  # the program's own buffer: handed out, never copied
    drop_reason: DropReason | None = None
    target: str | None = None
    xfer: int = 0  # xdp: the XFER flags handed to tc (ctx_move_xfer, bpf_xdp.c:86-93)


class Node:
    """One node's datapath instance: its maps plus the bpf_host/bpf_overlay programs."""

    def __init__(self, config: NodeConfig, faults: frozenset[str] | set[str] | None = None):
        self.config = config
        self.faults: frozenset[str] = frozenset(faults or ()) | config.faults
        self.maps = NodeMaps(config.ct_capacity, config.nat_capacity,
                             lru_refresh="lru_no_refresh_on_lookup" not in self.faults,
                             ct_any_capacity=config.ct_any_capacity)
        self.now = 0
        self.pinned_backend: int | None = None
        self.rejected: DropReason | None = None  # set by a hook that answered with ICMP
        self.at_xdp = False  # running cil_xdp_entry: "local delivery" is XDP_PASS to tc
        self.xfer = 0  # XFER flags the running XDP program set (ctx_set_xfer)
        self.xfer_in = 0  # the flags tc's from-netdev received with the packet
        self.forced_backend: bytes | None = None  # CB_FORCED_BACKEND_V4/V6 (IPIP termination)
        self.internal_errors = 0
        self.nat_exhaustion_signals = 0
        self._rng = random.Random(config.seed)
        self._off8 = "ipv6_ext_len_off_by_8" in self.faults
        self._l4 = ip_bytes(config.ipv4) if config.ipv4 else b"\0" * 4
        self._l6 = ip_bytes(config.ipv6) if config.ipv6 else b"\0" * 16
        self._r4 = ip_bytes(config.router_ipv4) if config.router_ipv4 else None
        self._r6 = ip_bytes(config.router_ipv6) if config.router_ipv6 else None
        m = self.maps
        # The maps' dicts, read directly per packet: a plain HashMap lookup is dict.get.
        # Keys are Any: a plain tuple finds the LbKey it spells without building one.
        self.lb4_svc: dict[Any, LbService] = m.lb4_services._d
        self.lb6_svc: dict[Any, LbService] = m.lb6_services._d
        self.lb4_be: dict[int, LbBackend] = m.lb4_backends._d
        self.lb6_be: dict[int, LbBackend] = m.lb6_backends._d
        self.lxc_eps: dict[bytes, EndpointInfo] = m.lxc._d
        # Fault switches read on every packet, resolved once (faults never change).
        f = self.faults
        self.ttl_dec = "no_ttl_decrement" not in f
        self.dnat_csum = "no_csum_update_after_dnat" not in f
        self.ct_svc_reuse = "ct_service_not_reused" not in f
        self.clusterip_check = "no_clusterip_check" not in f
        self.keep_stale_revnat = "revnat_index_not_updated_shared_backend" in f
        self.revnat_to_netdev = "skip_revnat_to_netdev" not in f
        self.syn_keeps_terminating = "terminating_backend_kept_for_syn" in f
        program_maps(self)
        self._derive()

    def _derive(self) -> None:
        """Config switches read on every packet, resolved per (re)programming."""
        c = self.config
        self.mode = c.mode
        self.dsr_on = c.mode in ("dsr", "hybrid")
        self.opt_dispatch = c.dispatch == "opt"
        self.ipip_dispatch = c.dispatch == "ipip"
        self.ipip_termination = c.ipip_termination and c.version == "1.20"
        self.tunnel = c.tunnel
        self.bpf_routing = c.host_routing == "bpf"
        self.random_pick = c.selection == "random"
        self.maglev = c.selection == "maglev"
        self.ct_accounting = c.ct_accounting
        self.snat_exclusion = [(ip_bytes(n.partition("/")[0]), int(n.partition("/")[2]))
                               for n in c.snat_exclusion_cidrs]
        self.remote_nodes = {ip_bytes(t) for _a, t in c.tunnel_endpoints}

    # -- helpers used by the library modules ------------------------------------------
    def prandom(self) -> int:
        """get_prandom_u32(), deterministic per node seed."""
        return self._rng.getrandbits(32)

    def snat_addr(self, v6: bool) -> bytes:
        """IPV4_DIRECT_ROUTING / IPV6_DIRECT_ROUTING."""
        return self._l6 if v6 else self._l4

    def masq_addr(self, v6: bool) -> bytes:
        """IPV4_MASQUERADE / IPV6_MASQUERADE: the configured one, else the node's own."""
        c = self.config
        alt = c.masquerade_ipv6 if v6 else c.masquerade_ipv4
        return ip_bytes(alt) if alt else self.snat_addr(v6)

    def router_addr(self, v6: bool) -> bytes | None:
        """IPV4_GATEWAY / router IPv6: cilium_host's address, if the node has one."""
        return self._r6 if v6 else self._r4

    def dec_ttl(self, p: Parsed) -> None:
        """ipv4_dec_ttl() / ipv6_dec_hoplimit() (ipv4_l3, ipv6_l3)."""
        if not self.ttl_dec:
            return
        buf = p.buf
        if p.v6:
            buf[7] = (buf[7] - 1) & 0xFF
            return
        buf[8] = (buf[8] - 1) & 0xFF
        s = _H.unpack_from(buf, 10)[0] + 0x0100  # RFC 1624: TTL is its word's high byte
        _H.pack_into(buf, 10, (s & 0xFFFF) + (s >> 16))

    def fib_redirect(self, p: Parsed) -> tuple[int, str]:
        """fib_redirect_v4(): ipv4_l3 TTL decrement, then redirect out the native device."""
        if self.ttl_dec:  # _dec_ttl inlined: this is the common forward path
            buf = p.buf
            if p.v6:
                buf[7] = (buf[7] - 1) & 0xFF
            else:
                buf[8] = (buf[8] - 1) & 0xFF
                s = _H.unpack_from(buf, 10)[0] + 0x0100
                _H.pack_into(buf, 10, (s & 0xFFFF) + (s >> 16))
        return _REDIRECT_NETDEV

    def tunnel_redirect(self) -> tuple[int, str]:
        """Redirect to the Geneve tunnel device (the kernel adds the outer L2)."""
        return Verdict.CTX_ACT_REDIRECT, "cilium_geneve"

    def local_delivery(self, p: Parsed) -> tuple[int, str]:
        """ipv4_local_delivery with BPF host routing, or up the stack without it; XDP
        leaves that to tc (CTX_ACT_OK)."""
        if self.at_xdp:
            return Verdict.CTX_ACT_OK, "tc"
        ep = self.lxc_eps.get(p.daddr)
        if ep is None or not self.bpf_routing:
            return Verdict.CTX_ACT_OK, "stack"
        self.dec_ttl(p)
        return Verdict.CTX_ACT_REDIRECT, f"lxc:{ep.ifindex}"

    # -- entry points -----------------------------------------------------------------
    def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None,
            xfer: int = 0) -> HookResult:
        """Run one hook on one packet; never raises, malformed input becomes a drop.
        `xfer`: the XFER flags XDP handed to from-netdev with this packet."""
        fn = _HOOK_FNS.get(hook)
        if fn is None:
            raise ValueError(f"unknown hook {hook!r}; expected one of {HOOKS}")
        self.pinned_backend = backend
        self.rejected = None
        self.xfer, self.xfer_in = 0, xfer
        buf = bytearray(pkt)  # the caller's bytes are never written to
        drop: Verdict | XdpVerdict = XdpVerdict.XDP_DROP if hook == "xdp" else Verdict.CTX_ACT_DROP
        try:
            return fn(self, buf)
        except DatapathDrop as d:
            # a drop returns the skb as it stands: rewrites made before it stay (a NAT
            # exhaustion drop already carries the backend, nodeport.h: DNAT, then SNAT)
            return HookResult(drop, bytes(buf), d.reason, None)
        except Exception:
            self.internal_errors += 1
            return HookResult(drop, bytes(pkt), DropReason.DROP_INVALID, None)
        finally:
            self.at_xdp = False
            self.forced_backend = None

    def advance(self, seconds: int) -> None:
        """Move the node's monotonic clock (bpf_mono_now) forward."""
        self.now += seconds

    def gc(self) -> int:
        """Agent CT GC: remove expired CT entries, then the NAT entries they orphaned."""
        m = self.maps
        cts = (m.ct4_tcp, m.ct4_any, m.ct6_tcp, m.ct6_any)
        n = sum(ct_gc(self, ct) for ct in cts)
        nat_gc(cts, (m.snat4, m.snat6))
        return n

    def dump(self, maps: Collection[str] | None = None
             ) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
        """Plain-data snapshot of every map, or the named ones (`bpftool map dump`)."""
        return self.maps.dump(maps)

    def reprogram(self, config: NodeConfig) -> None:
        """The agent rewrites LB/endpoint/ipcache maps; CT and NAT state survive."""
        m = self.maps
        lb: list[HashMap[Any, Any]] = [m.lb4_services, m.lb4_backends, m.lb4_reverse_nat,
                                       m.lb6_services, m.lb6_backends, m.lb6_reverse_nat,
                                       m.lxc, m.ipcache, m.lb_affinity_match]
        for hm in lb:
            hm.clear()
        m.src_range.clear()
        m.lb4_maglev.clear()
        m.lb6_maglev.clear()
        self.config = attrs.evolve(config, faults=self.config.faults)
        program_maps(self)
        self._derive()

    def _parse(self, buf: bytearray, entry: bool = True) -> Parsed:
        p = parse(buf, self._off8)
        if p.is_frag or p.frag_hdr:
            load_l4_ports(self, p, entry)
        return p

    def _from_netdev(self, buf: bytearray) -> HookResult:
        if self.ipip_termination:
            self.forced_backend = terminate(self, buf)
            if self.forced_backend is not None:
                self.xfer_in = 0  # ctx_skip_nodeport_clear (bpf_host.c:1174)
        p = parse(buf, self._off8)
        # lb4_extract_tuple's ipv4_load_l4_ports, inside nodeport_lb4: skipped with it under
        # XFER_PKT_NO_SVC (bpf_host.c:621 v1.20, :624 v1.18; vectors/xdp_fragments.yaml)
        if (p.is_frag or p.frag_hdr) and not self.xfer_in & XFER_PKT_NO_SVC:
            load_l4_ports(self, p)
        done = None
        if self.xfer_in & XFER_PKT_NO_SVC:
            pass  # XDP did the NodePort work: skip-nodeport (bpf_host.c:1292-1293)
        elif p.proto in PORT_PROTOS:
            done = nodeport_lb(self, p)
            if done is None:
                done = self._no_service(p, from_overlay=False)
        elif self.config.masquerade:
            # nodeport_lb4: no service protocol, reverse SNAT only under bpf.masquerade
            # (nodeport.h:3021); the reverse DNAT after it skips ICMP and sends the
            # packet back through from-netdev to the stack (nodeport.h:2297-2301, 2446)
            snat_rev_nat_icmp_error(self, p)
        if done is None:
            done = self.local_delivery(p)
        v = done[0]  # _result(), inlined for the busiest hook
        verdict = v if type(v) is Verdict else Verdict(v)
        if self.rejected is not None:
            reason, self.rejected = self.rejected, None
            return HookResult(verdict, p.buf, reason, done[1])
        return _new_result(HookResult, (verdict, p.buf, None, done[1], 0))

    def _xdp(self, buf: bytearray) -> HookResult:
        """cil_xdp_entry -> tail_lb_ipv4/6 (bpf_xdp.c:97-123): nodeport_lb4/6 at XDP. What
        leaves the node (a remote backend, a reverse-SNATed reply, the ICMP reject) is
        XDP_TX (fib_redirect out of the receiving device); the rest is XDP_PASS to tc."""
        self.at_xdp = True
        p = self._parse(buf)
        done = None
        if p.proto in PORT_PROTOS:
            if self.config.version == "1.20" and xdp_punts_etp_local(self, p):
                xfer = XFER_PKT_NO_SVC if "xdp_etp_punt_no_svc" in self.faults else 0
                return HookResult(XdpVerdict.XDP_PASS, p.buf, None, "tc", xfer)
            done = nodeport_lb(self, p)
            if done is None:
                self.xfer |= XFER_PKT_NO_SVC  # no service (nodeport.h:2971, v1.18 :2731)
                done = self._no_service(p, from_overlay=False)
        else:
            self.xfer |= XFER_PKT_NO_SVC  # no service protocol (lb4_extract_tuple errors)
            if self.config.masquerade and snat_rev_nat_icmp_error(self, p):
                # tail_nodeport_nat_ingress_ipv4's ctx_snat_done_set (nodeport.h:2497),
                # which at XDP goes into the xfer flags (overloadable_xdp.h:148)
                self.xfer |= XFER_PKT_SNAT_DONE
        if done is None:
            done = self.local_delivery(p)
        reason, self.rejected = self.rejected, None
        if done[0] == Verdict.CTX_ACT_OK:
            return HookResult(XdpVerdict.XDP_PASS, p.buf, reason, "tc", self.xfer)
        return HookResult(XdpVerdict.XDP_TX, p.buf, reason, "netdev", 0)

    def _no_service(self, p: Parsed, from_overlay: bool,
                    ginfo: tuple[bytes, int] | None = None) -> tuple[int, str] | None:
        """The 'no service' branch of nodeport_lb4: DSR extraction, then NAT ingress."""
        if self.dsr_on:
            info: tuple[bytes, int] | None = None
            if from_overlay:
                info = ginfo
            elif self.opt_dispatch and (
                    p.proto != IPPROTO_TCP or p.tcp_flags & TCP_SYN):
                info = find_dsr_opt6(p.buf, self._off8) if p.v6 else find_dsr_opt4(p.buf)
            if (from_overlay or self.opt_dispatch) and dsr_ingress(self, p, info):
                return self.local_delivery(p)
        if snat_rev_nat(self, p):
            self.xfer |= XFER_PKT_SNAT_DONE  # ctx_snat_done_set (nodeport.h:2497): read at XDP
            revd = self.mode != "dsr" and rev_dnat(self, p, dsr_ok=False)
            if not revd and p.daddr in self.lxc_eps:
                # a masqueraded pod's reply: no nodeport CT entry, so nodeport_rev_dnat_ipv4
                # returns CTX_ACT_OK (nodeport.h:2321-2351) and bpf_host delivers it; the
                # pod's bpf_lxc sees it as CT_REPLY (the lookup above did that but in dsr)
                if self.mode == "dsr":
                    masq_reply_ct(self, p)
                return self.local_delivery(p)
            if revd and self.tunnel:
                # nodeport_rev_dnat_ipv4 (nodeport.h:2336-2346, 2385-2404; v6 :1005-1035):
                # a client with a tunnel endpoint (a pod or node of the cluster) gets the
                # reply through the tunnel, tagged REMOTE_NODE_ID; others by the native device.
                # v1.18 tags it with the program's SECLABEL (v1.18 nodeport.h:2116): bpf_host
                # runs as the host endpoint, whose identity encap.h:37-38 turns into
                # LOCAL_NODE_ID (6); bpf_overlay is compiled with WORLD_ID.
                tep = self.maps.ipcache.lookup(p.daddr)
                if tep is not None and tep != self.snat_addr(len(tep) == 16):
                    self.dec_ttl(p)
                    vni = REMOTE_NODE_ID
                    if self.config.version == "1.18" and from_overlay:
                        vni = WORLD_ID
                    encapsulate(self, p, tep, b"", vni)
                    return self.tunnel_redirect()
            return self.fib_redirect(p)
        return None

    def _to_netdev(self, buf: bytearray) -> HookResult:
        p = self._parse(buf, entry=False)
        done = False
        if self.revnat_to_netdev and p.has_ports():
            done = rev_dnat(self, p, dsr_ok=True)
        if self.tunnel:
            # to-overlay: traffic towards another node's pod or address is encapsulated.
            tep = self.maps.ipcache.lookup(p.daddr)
            if tep is not None and tep != self.snat_addr(len(tep) == 16):
                sender = POD_IDENTITY if p.saddr in self.lxc_eps else WORLD_ID  # bpf_lxc's
                encapsulate(self, p, tep, b"", sender)
                return HookResult(Verdict.CTX_ACT_REDIRECT, p.buf, None, "cilium_geneve")
        if not done and needs_masquerade(self, p):  # snat_done unset: masquerade
            masquerade(self, p)
        return HookResult(Verdict.CTX_ACT_OK, p.buf, None, "netdev")

    def _from_overlay(self, buf: bytearray) -> HookResult:
        inner, ginfo = geneve_decap(buf)
        p = self._parse(inner)
        done = None
        if p.has_ports():
            # cil_from_overlay runs nodeport_lb too: services, DSR ingress, reverse SNAT.
            done = nodeport_lb(self, p)
            if done is None:
                done = self._no_service(p, from_overlay=True, ginfo=ginfo)
        elif self.config.masquerade:  # bpf_overlay's nodeport_lb4, as in _from_netdev
            snat_rev_nat_icmp_error(self, p)
        if done is None:
            done = self.local_delivery(p)
        return self._result(done, p)

    def _result(self, done: tuple[int, str], p: Parsed) -> HookResult:
        v = done[0]
        verdict = v if type(v) is Verdict else Verdict(v)
        if self.rejected is not None:
            reason, self.rejected = self.rejected, None
            return HookResult(verdict, p.buf, reason, done[1])
        return _new_result(HookResult, (verdict, p.buf, None, done[1], 0))


# Plain functions, not bound methods kept on the node: a node holding its own bound methods
# is a reference cycle, so its maps would wait for a full GC pass instead of being freed.
_HOOK_FNS: dict[str, Callable[[Node, bytearray], HookResult]] = {
    "from-netdev": Node._from_netdev, "to-netdev": Node._to_netdev,
    "from-overlay": Node._from_overlay, "xdp": Node._xdp}


def _lxc_hooks() -> None:
    """bpf_lxc's cil_from_container / cil_to_container (datapath/lxc.py)."""
    from datapath.lxc import from_container, to_container  # it imports this module

    _HOOK_FNS.update({"from-container": from_container, "to-container": to_container})


_lxc_hooks()


def geneve_decap(buf: bytearray) -> tuple[bytearray, tuple[bytes, int] | None]:
    """The Geneve device's decap plus ctx_get_tunnel_opt(): inner packet and DSR option."""
    outer = parse(buf)
    if outer.proto != IPPROTO_UDP or outer.dport != GENEVE_PORT:
        raise DatapathDrop(DropReason.DROP_INVALID)
    off = outer.l4_off + 8
    end = outer.l3_len
    if off + 8 > end:
        raise DatapathDrop(DropReason.DROP_INVALID)
    optlen = (buf[off] & 0x3F) * 4
    # geneve_udp_encap_recv (drivers/net/geneve.c) drops another version or an inner
    # protocol other than Ethernet; it hands the option block on whole, unparsed.
    if (buf[off] >> 6 != 0 or _H.unpack_from(buf, off + 2)[0] != ETH_P_TEB
            or off + 8 + optlen + 14 > end):
        raise DatapathDrop(DropReason.DROP_INVALID)
    inner = bytearray(buf[off + 8 + optlen + 14:end])
    v6 = bool(inner) and inner[0] >> 4 == 6
    return inner, geneve_dsr_info(bytes(buf[off + 8:off + 8 + optlen]), v6)


def geneve_dsr_info(opts: bytes, v6: bool) -> tuple[bytes, int] | None:
    """Why only a lone DSR option counts: nodeport_extract_dsr_v4/v6 (v1.20 nodeport.h:1936,
    :553) copy the option block into one struct geneve_dsr_opt4/6, and bpf_skb_get_tunnel_opt
    fails (-ENOMEM) on a block longer than it; only the first header's class and type are
    checked, not its length (a short block is zero-filled)."""
    alen = 16 if v6 else 4
    size = 4 + alen + 4
    if not opts or len(opts) > size:
        return None
    o = opts.ljust(size, b"\0")
    if _H.unpack_from(o, 0)[0] != DSR_GENEVE_OPT_CLASS or o[2] != DSR_GENEVE_OPT_TYPE:
        return None
    return o[4:4 + alen], _H.unpack_from(o, 4 + alen)[0]


def program_maps(node: Node) -> None:
    """What the agent's BPF reconciler writes: services, backends, rev NAT, endpoints."""
    cfg = node.config
    m = node.maps
    bes = {b.id: b for b in cfg.backends}
    for b in cfg.backends:
        addr = ip_bytes(b.address)
        backends = m.lb6_backends if len(addr) == 16 else m.lb4_backends
        backends.update(b.id, LbBackend(addr, b.port, PROTO_NAMES[b.proto], _STATES[b.state]))
    local = set()
    for ep in cfg.endpoints:
        a = ip_bytes(ep.address)
        local.add(a)
        m.lxc.update(a, EndpointInfo(ep.ifindex, ep.ep_id))
    for addr_s, tep in cfg.tunnel_endpoints:
        m.ipcache.update(ip_bytes(addr_s), ip_bytes(tep))
    for s in cfg.services:
        vip = ip_bytes(s.frontend)
        v6 = len(vip) == 16
        proto = PROTO_NAMES[s.proto]
        ids = []
        for bid in s.backends:
            if bid not in bes:
                raise ConfigError(f"service {s.frontend}:{s.port} names unknown backend {bid}")
            b = bes[bid]
            if b.state == "maintenance":
                continue
            if s.ext_traffic_local and "etp_local_forwards_offnode" not in node.faults and \
                    ip_bytes(b.address) not in local:
                continue
            ids.append(bid)
        active = [i for i in ids if bes[i].state == "active"]
        slots = active or [i for i in ids if bes[i].state == "terminating"]
        flags = {"loadbalancer": SVC_FLAG_LOADBALANCER, "nodeport": SVC_FLAG_NODEPORT,
                 "externalip": SVC_FLAG_EXTERNAL_IP, "clusterip": 0}[s.kind]
        routable = s.routable if s.routable is not None else s.kind != "clusterip"
        if routable:
            flags |= SVC_FLAG_ROUTABLE
        if s.ext_traffic_local:
            flags |= SVC_FLAG_EXT_LOCAL_SCOPE
        if s.source_ranges:
            flags |= SVC_FLAG_SOURCE_RANGE
        if s.affinity_timeout:
            flags |= SVC_FLAG_AFFINITY
            for bid in active:  # only active backends are marked live for affinity
                m.lb_affinity_match.update(AffinityMatch(bid, s.rev_nat_index), 0)
        flags2 = SVC_FLAG_SOURCE_RANGE_DENY if s.source_range_deny else 0
        if _fwd_dsr(node, s.fwd_mode, proto):
            flags2 |= SVC_FLAG_FWD_MODE_DSR
        if s.maglev:
            if len(s.maglev) != cfg.maglev_table_size:
                raise ConfigError(f"service {s.frontend}:{s.port}: maglev table has "
                                  f"{len(s.maglev)} entries, LB_MAGLEV_LUT_SIZE is "
                                  f"{cfg.maglev_table_size}")
            (m.lb6_maglev if v6 else m.lb4_maglev)[s.rev_nat_index] = s.maglev
        svcs = m.lb6_services if v6 else m.lb4_services
        svcs.update(LbKey(vip, s.port, proto, LB_LOOKUP_SCOPE_EXT, 0),
                    LbService(s.affinity_timeout, len(slots), s.rev_nat_index, flags, flags2))
        ordered = slots + [i for i in ids if i not in slots]
        for n, bid in enumerate(ordered, start=1):
            svcs.update(LbKey(vip, s.port, proto, LB_LOOKUP_SCOPE_EXT, n),
                        LbService(bid, 0, s.rev_nat_index, flags, flags2))
        (m.lb6_reverse_nat if v6 else m.lb4_reverse_nat).update(
            s.rev_nat_index, LbReverseNat(vip, s.port))
        for cidr in s.source_ranges:
            net, _, plen = cidr.partition("/")
            nb = ip_bytes(net)
            m.src_range.setdefault(s.rev_nat_index, []).append(
                (nb, int(plen) if plen else len(nb) * 8))


def _fwd_dsr(node: Node, fwd_mode: str | None, proto: int) -> bool:
    """ToSVCForwardingMode(): hybrid + TCP -> DSR, everything else per annotation/SNAT."""
    if fwd_mode is not None:
        return fwd_mode == "dsr"
    mode = node.config.mode
    if mode == "dsr":
        return True
    if mode == "hybrid":
        return proto == IPPROTO_TCP or "hybrid_udp_as_dsr" in node.faults
    return False


def make_node(config: NodeConfig, faults: frozenset[str] | set[str] | None = None) -> Node:
    """Default datapath factory used by the vector runner."""
    return Node(config, faults)
