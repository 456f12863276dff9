"""One cilium-bpf node: harness objects loaded, each hook a BPF_PROG_TEST_RUN, maps as rows."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Collection, Iterator
from ipaddress import ip_address
from typing import Any

from ciliumbpf import programming as prog
from ciliumbpf.btf import STRUCT
from ciliumbpf.libbpf import BpfObject, Program, array_map
from ciliumbpf.programming import AFFINITY_MAPS, CT_MAPS, NAT_MAPS, RATELIMIT_MAP, MapsView
from ciliumbpf.toolchain import CiliumTree, compile_object, ensure_toolchain
from datapath.build import geneve_encap
from datapath.config import NodeConfig
from datapath.drop import XFER_PKT_NO_SVC, DropReason, Verdict, XdpVerdict
from datapath.errors import ConfigError
from datapath.host import HookResult
from datapath.ipip import kernel_ipip
from datapath.maps import (
    TUPLE_F_IN,
    TUPLE_F_OUT,
    AffinityKey,
    AffinityVal,
    CtEntry,
    CtTuple,
    NatEntry,
    RatelimitKey,
    RatelimitValue,
)
from datapath.packet import parse

HOOKS = ("from-netdev", "to-netdev", "from-overlay", "xdp")
XDP_MD_SIZE = 24  # struct xdp_md: data, data_end, data_meta, ingress/rx_queue/egress index
_ETH_NODE = bytes.fromhex("020000000001")
_ETH_PEER = bytes.fromhex("020000000002")
LB_MAPS = ("cilium_lb4_services_v2", "cilium_lb4_backends_v3", "cilium_lb4_reverse_nat",
           "cilium_lb6_services_v2", "cilium_lb6_backends_v3", "cilium_lb6_reverse_nat",
           "cilium_lxc", "cilium_ipcache_v2", "cilium_lb_affinity_match")
MAGLEV_MAPS = ("cilium_lb4_maglev", "cilium_lb6_maglev")
AGENT_MAPS = (*LB_MAPS, "cilium_lb4_source_range", "cilium_lb6_source_range", *MAGLEV_MAPS)
_KNOWN_DROPS = {-r.value: r for r in DropReason}
MAP_CAPACITY = 4096
MAP_PROG_ARRAY = 3


_ARRAYS = frozenset({2, 6})  # ARRAY, PERCPU_ARRAY


def _ethertype(data: bytes | bytearray) -> bytes:
    return b"\x86\xdd" if data and data[0] >> 4 == 6 else b"\x08\x00"


class _Object:
    """One compiled and loaded harness object (bpf_host or bpf_overlay)."""

    def __init__(self, tree: CiliumTree, source: str, cfg: NodeConfig, overlay: bool,
                 share: BpfObject | None = None, xdp: bool = False) -> None:
        defines = prog.defines(cfg, overlay, tree.version)
        if xdp:  # bpf_xdp.c: no host identity, no pod egress; the acceleration on
            for name in ("SECLABEL", "NPH_POD_EGRESS"):
                defines.pop(name, None)
            defines["ENABLE_NODEPORT_ACCELERATION"] = "1"
        path = compile_object(tree, prog.HARNESS_DIR / source, defines=defines,
                              include_dirs=(prog.HARNESS_DIR,))
        self.obj = BpfObject.open(path)
        # The agent sizes maps at load time; the tests never come near MAP_CAPACITY entries,
        # and preallocated 512k-entry LRU maps would cost ~0.5 GB of kernel memory a node.
        self.obj.cap_maps(MAP_CAPACITY)
        # One node's programs share its cilium_* maps (Cilium pins them in bpffs).
        self.shared = self.obj.reuse_maps(share) if share is not None else []
        self.obj.load()
        self.maps = self.obj.maps()
        skb = self.obj.btf.find(STRUCT, "__sk_buff")
        lay = self.obj.btf.layout(skb) if skb else None
        self.ctx_size = lay.size if lay else 192
        cb = [f for f in lay.fields if f.name == "cb"] if lay else []
        self.cb_off = cb[0].offset if cb else 48

    def program(self, name: str) -> Program:
        """A program by its function name."""
        return self.obj.program(name)

    def close(self) -> None:
        """Free maps and programs."""
        self.obj.close()


class CiliumBpfNode:
    """One node's real datapath: bpf_host (+ bpf_overlay) from the user's tree, test-run."""

    def __init__(self, config: NodeConfig, tree: CiliumTree,
                 pool: Callable[[CiliumBpfNode], bool] | None = None) -> None:
        ensure_toolchain()
        self.tree = tree
        self.config = config
        self.now = 0
        self._pool = pool
        self.host = _Object(tree, "host.c", config, overlay=False)
        self._overlay: _Object | None = None
        self._xdp: _Object | None = None
        progs = self.host.obj.programs()
        self._from_container = progs.get("nph_from_container")
        self._progs = {"from-netdev": self.host.program("cil_from_netdev"),
                       "to-netdev": self.host.program("cil_to_netdev")}
        self._no_svc = progs.get("nph_from_netdev_no_svc")
        self._ctx = bytes(self.host.ctx_size)
        m = self.host.maps
        self._ctl, self._cap = m["nph_control"], m["nph_capture"]
        self._zero_cap = bytes(self._cap.value_size)
        self._start(config)

    def _start(self, config: NodeConfig) -> None:
        """Seed the random source and program the agent's maps (maps otherwise empty)."""
        self.config = config
        self.now = 0
        seed = (config.seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % (1 << 64) or 1
        self.host.maps["nph_rng"].update(b"\0" * 4, seed.to_bytes(8, "little"))
        self._entries = prog.Entries(config)
        self._program()

    def reset(self, config: NodeConfig) -> None:
        """Back to a just-loaded node for `config` (same defines): every hash/LRU/LPM map
        emptied, every array and .bss zeroed (as at creation), then programmed afresh.
        Tail-call arrays and .rodata/.data keep what load gave them."""
        objs = [self.host] + [o for o in (self._overlay, self._xdp) if o is not None]
        seen: set[int] = set()
        for o in objs:
            for name, m in o.maps.items():
                if m.type == MAP_PROG_ARRAY or ("." in name and not name.endswith(".bss")):
                    continue
                ident = id(self.host.maps.get(name)) if name in o.shared else id(m)
                if ident in seen:
                    continue
                seen.add(ident)
                if m.type in _ARRAYS:
                    zero = bytes(len(m._value_buf().raw))
                    for i in range(m.max_entries):
                        m.update(i.to_bytes(4, "little"), zero)
                else:
                    for k in list(m.keys()):
                        m.delete(k)
        self._start(config)

    # -- programming -------------------------------------------------------------------
    def _program(self) -> None:
        for name, key, val in self._entries.rows():
            m = self.host.maps.get(name)
            if m is None:
                raise ConfigError(f"{self.tree.version}: bpf_host has no map {name}")
            if name in MAGLEV_MAPS:  # hash-of-maps: an inner array per rev_nat_index
                fd = array_map(b"".join(int(b).to_bytes(4, "little") for b in val))
                try:
                    # the outer key is the __u16 rev_nat_index (lb.h:327); no BTF for it here
                    m.update(int(key).to_bytes(m.key_size, "little"), fd.to_bytes(4, "little"))
                finally:
                    os.close(fd)  # the outer map holds the inner one now
                continue
            m.update(m.pack_key(prog.fit(m.key_type, key)),
                     m.pack_value(prog.fit(m.value_type, val)))

    def reprogram(self, config: NodeConfig) -> None:
        """The agent rewrites LB/endpoint/ipcache maps; CT and NAT state survive."""
        for name in AGENT_MAPS:
            m = self.host.maps.get(name)
            if m is not None:
                for k in list(m.keys()):
                    m.delete(k)
        self.config = config
        self._entries = prog.Entries(config)
        self._program()

    # -- running -----------------------------------------------------------------------
    def _pin(self, pkt: bytes | bytearray, backend: int | None) -> int | None:
        """The random draw that makes lb{4,6}_select_backend_id_random pick `backend`."""
        if backend is None:
            return None
        try:
            p = parse(bytearray(pkt))
        except Exception:
            return None
        slots = self._entries.slots(bytes(p.daddr), p.dport, p.proto)
        return slots.index(backend) if backend in slots else None

    def overlay(self) -> _Object:
        """bpf_overlay, loaded on first use onto bpf_host's maps."""
        if self._overlay is None:
            self._overlay = _Object(self.tree, "overlay.c", self.config, overlay=True,
                                    share=self.host.obj)
            self._progs["from-overlay"] = self._overlay.program("cil_from_overlay")
        return self._overlay

    def xdp(self) -> _Object:
        """bpf_xdp (ENABLE_NODEPORT_ACCELERATION), loaded on first use onto bpf_host's maps."""
        if self._xdp is None:
            self._xdp = _Object(self.tree, "xdp.c", self.config, overlay=False,
                                share=self.host.obj, xdp=True)
            self._progs["xdp"] = self._xdp.program("cil_xdp_entry")
        return self._xdp

    def _run_xdp(self, ip: bytes) -> HookResult:
        """cil_xdp_entry on the frame; the output is XDP's metadata (ctx_move_xfer) then the
        frame, the metadata's length read from the returned xdp_md (data - data_meta)."""
        obj = self.xdp()
        self._zero_scratch(obj)
        frame = _ETH_NODE + _ETH_PEER + _ethertype(ip) + ip
        try:
            # xdp_md in: no metadata, data_end the frame's length (bpf_prog_test_run_xdp)
            md = struct.pack("<6I", 0, len(frame), 0, 0, 0, 0)
            res = self._progs["xdp"].test_run(frame, md)
        except OSError:
            return HookResult(XdpVerdict.XDP_DROP, ip, DropReason.DROP_INVALID, None)
        meta = 0
        if res.ctx is not None and len(res.ctx) >= 12:
            data, _end, data_meta = struct.unpack_from("<III", res.ctx)
            meta = max(0, data - data_meta)
        xfer = struct.unpack_from("<I", res.data)[0] if meta >= 4 else 0
        body = res.data[meta:]
        out = body[14:] if len(body) >= 14 else b""
        try:
            verdict = XdpVerdict(res.retval)
        except ValueError:
            return HookResult(XdpVerdict.XDP_DROP, ip, DropReason.DROP_INVALID, None)
        if verdict is XdpVerdict.XDP_DROP:
            return HookResult(verdict, out or ip, self._xdp_drop(obj), None)
        if verdict is XdpVerdict.XDP_PASS:
            return HookResult(verdict, out, None, "tc", xfer)
        # tail_no_service_ipv4/6's answer goes back out the receiving device: 1.20's
        # redirect_self is a bare XDP_TX (no redirect recorded), 1.18 redirects to
        # ctx_get_ifindex() (`self`); a forwarded packet leaves by a FIB redirect
        cap = self._cap.unpack_value(self._cap.lookup(b"\0" * 4) or self._zero_cap)
        here = not cap["kind"] or cap["self"]
        reason = DropReason.DROP_NO_SERVICE if _port_unreachable(out) and here else None
        if reason is None and here and _frag_needed(out):
            # dsr_reply_icmp4/6 at XDP (e.g. dsr_set_ipip4's dsr_is_too_big): the request
            # answered back out the receiving device, as the reference reports it
            reason = DropReason.DROP_FRAG_NEEDED
        return HookResult(verdict, out, reason, "netdev")

    def _xdp_drop(self, obj: _Object) -> DropReason:
        """The reason _send_drop_notify stored as meta word 2 (lib/drop.h:154); XDP's meta
        words live in the per-CPU cilium_xdp_scratch map (ctx/xdp.h ctx_store_meta), zeroed
        before each run, so the one CPU that ran the program holds it."""
        m = obj.maps.get("cilium_xdp_scratch")
        raw = m.lookup(b"\0" * 4) if m is not None else None
        if m is None or raw is None:
            return DropReason.DROP_INVALID
        step = (m.value_size + 7) // 8 * 8
        for off in range(0, len(raw), step):
            word = struct.unpack_from("<I", raw, off + 8)[0] if m.value_size >= 12 else 0
            if word:
                return _KNOWN_DROPS.get(word & 0xFF, DropReason.DROP_INVALID)
        return DropReason.DROP_INVALID

    def _zero_scratch(self, obj: _Object) -> None:  # before each run: see _xdp_drop
        m = obj.maps.get("cilium_xdp_scratch")
        if m is not None:
            m.update(b"\0" * 4, bytes(len(m._value_buf().raw)))

    def _control(self, pin: int | None, tun: dict[str, Any] | None) -> None:
        val: dict[str, Any] = {"now_sec": self.now, "pin_valid": int(pin is not None),
                               "pin_value": pin or 0}
        if tun:
            val.update(tun)
        self._ctl.update(b"\0" * 4, self._ctl.pack_value(val))
        self._cap.update(b"\0" * 4, self._zero_cap)

    def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None,
            xfer: int = 0) -> HookResult:
        """Run one hook on one packet (bytes from the IP header); `xfer`: the XFER flags
        XDP passed a from-netdev packet with."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}; expected one of {HOOKS}")
        if hook == "from-overlay":
            return self._from_overlay(bytes(pkt), backend)
        self._control(self._pin(pkt, backend), None)
        if hook == "xdp":
            return self._run_xdp(bytes(pkt))
        if hook == "from-netdev" and xfer & XFER_PKT_NO_SVC:
            if self._no_svc is None:
                raise ConfigError(f"{self.tree.version}: the harness has no "
                                  "nph_from_netdev_no_svc")
            return self._run(hook, self._no_svc, self.host, bytes(pkt))
        if hook == "to-netdev" and self._from_container is not None:
            # tunnel routing: the pod's bpf_lxc encapsulation first (host.c), then, when
            # it did not tunnel the packet, cil_to_netdev
            r = self._run(hook, self._from_container, self.host, bytes(pkt))
            if r.verdict != Verdict.CTX_ACT_OK:
                return r
            self._control(None, None)
        return self._run(hook, self._progs[hook], self.host, bytes(pkt))

    def _run(self, hook: str, program: Program, obj: _Object, ip: bytes,
             eth: bytes | None = None) -> HookResult:
        frame = (eth if eth is not None else _ETH_NODE + _ETH_PEER + _ethertype(ip)) + ip
        try:
            res = program.test_run(frame, self._ctx)
        except OSError:
            # The kernel refuses the frame before the program runs (bpf_prog_test_run_skb:
            # shorter than an Ethernet + minimal L3 header): nothing reaches Cilium's code.
            return HookResult(Verdict.CTX_ACT_DROP, ip, DropReason.DROP_INVALID, None)
        out = res.data[14:] if len(res.data) >= 14 else b""
        cap = self._cap.unpack_value(self._cap.lookup(b"\0" * 4) or self._zero_cap)
        try:
            verdict = Verdict(res.retval)
        except ValueError:
            return HookResult(Verdict.CTX_ACT_DROP, ip, DropReason.DROP_INVALID, None)
        if verdict == Verdict.CTX_ACT_DROP:
            cb2 = struct.unpack_from("<I", res.ctx or b"", obj.cb_off + 8)[0] \
                if res.ctx and len(res.ctx) >= obj.cb_off + 12 else 0
            reason = _KNOWN_DROPS.get(cb2 & 0xFF, DropReason.DROP_INVALID)
            return HookResult(verdict, out or ip, reason, None)
        if verdict == Verdict.CTX_ACT_OK:
            return HookResult(verdict, out, None, "netdev" if hook == "to-netdev" else "stack")
        return self._redirect(out, cap)

    def _redirect(self, out: bytes, cap: dict[str, Any]) -> HookResult:
        kind, ifindex = int(cap["kind"]), int(cap["ifindex"])
        if kind == 1 and cap["self"] and _port_unreachable(out):
            # tail_no_service_ipv{4,6} (lib/lb.h:2340): the ICMP answer goes back out the
            # receiving device (redirect_self); the protocol reports a reject as the
            # request dropped with DROP_NO_SERVICE beside the REDIRECT of the answer.
            return HookResult(Verdict.CTX_ACT_REDIRECT, out, DropReason.DROP_NO_SERVICE,
                              "netdev")
        if kind == 1 and cap["self"] and _frag_needed(out):
            # dsr_reply_icmp4/6 (nodeport.h:1977, 592): the DSR request too big for the
            # device MTU, answered out the receiving device (ctx_redirect to its ifindex)
            return HookResult(Verdict.CTX_ACT_REDIRECT, out, DropReason.DROP_FRAG_NEEDED,
                              "netdev")
        if kind == 4:  # the pod's policy tail call: delivery to its lxc device
            eps = {e.ep_id: e.ifindex for e in self.config.endpoints}
            return HookResult(Verdict.CTX_ACT_REDIRECT, out, None,
                              f"lxc:{eps.get(ifindex, ifindex)}")
        if cap["tun_set"] and ifindex == prog.IPIP_IFINDEX:
            # the collect-md IPIP device: the outer header as datapath/ipip.py writes it
            v6 = bool(cap["tun_v6"])
            remote = (b"".join(int(w).to_bytes(4, "little") for w in cap["tun_remote6"])
                      if v6 else int(cap["tun_remote4"]).to_bytes(4, "big"))
            return HookResult(Verdict.CTX_ACT_REDIRECT, kernel_ipip(self.config, out, remote),
                              None, "cilium_ipip6" if v6 else "cilium_ipip4")
        if cap["tun_set"] and ifindex == prog.ENCAP_IFINDEX:
            return HookResult(Verdict.CTX_ACT_REDIRECT, self._encap(out, cap), None,
                              "cilium_geneve")
        if ifindex == prog.NATIVE_IFINDEX:
            return HookResult(Verdict.CTX_ACT_REDIRECT, out, None, "netdev")
        if ifindex == prog.ENCAP_IFINDEX:
            return HookResult(Verdict.CTX_ACT_REDIRECT, out, None, "cilium_geneve")
        lxc = {e.ifindex for e in self.config.endpoints}
        return HookResult(Verdict.CTX_ACT_REDIRECT, out, None,
                          f"lxc:{ifindex}" if ifindex in lxc else f"if:{ifindex}")

    def _encap(self, inner: bytes, cap: dict[str, Any]) -> bytes:
        """What the Geneve device does with the key bpf_host set: outer IP/UDP/Geneve."""
        if cap["tun_v6"]:
            words = cap["tun_remote6"]
            remote = b"".join(int(w).to_bytes(4, "little") for w in words)
            local = ip_address(self.config.ipv6 or "::").packed
        else:
            remote = int(cap["tun_remote4"]).to_bytes(4, "big")
            local = ip_address(self.config.ipv4 or "0.0.0.0").packed
        opts = bytes(cap["tun_opt"])[:int(cap["tun_opt_len"])]
        p = parse(bytearray(inner))
        h = zlib.crc32(bytes(p.saddr) + bytes(p.daddr) + struct.pack("!HH", p.sport, p.dport))
        sport = 32768 + h % (61000 - 32768)
        return geneve_encap(local, remote, inner, int(cap["tun_id"]), opts, sport, p.v6)

    def _from_overlay(self, pkt: bytes, backend: int | None) -> HookResult:
        """What the Geneve device does, then cil_from_overlay on the inner frame.

        The kernel's geneve driver (drivers/net/geneve.c geneve_udp_encap_recv/geneve_rx)
        takes UDP to 6081 with version 0 and protocol Transparent Ethernet Bridging, strips
        the outer headers and attaches the tunnel info: the VNI, the outer source as the
        remote, the whole option block (bpf_skb_get_tunnel_key/opt read these). A packet
        it would not decapsulate never reaches bpf_overlay: the hook reports it dropped
        as DROP_INVALID, the reference datapath's answer for it (datapath.host.geneve_decap).
        """
        dec = geneve_device(pkt)
        if dec is None:
            return HookResult(Verdict.CTX_ACT_DROP, pkt, DropReason.DROP_INVALID, None)
        tun, eth, inner = dec
        ov = self.overlay()
        self._control(self._pin(inner, backend), tun)
        return self._run("from-overlay", self._progs["from-overlay"], ov, inner, eth)

    # -- clock, GC, dumps ----------------------------------------------------------------
    def advance(self, seconds: int) -> None:
        """Move the harness clock (bpf_mono_now) forward."""
        self.now += seconds

    def _rows(self, name: str) -> Iterator[tuple[bytes, Any, Any]]:
        m = self.host.maps.get(name)
        if m is None:
            return
        for k, v in m.items():
            yield k, m.unpack_key(k), m.unpack_value(v)

    def ct(self, name: str) -> dict[CtTuple, CtEntry]:
        """One CT map as the reference's CtTuple -> CtEntry."""
        v6 = CT_MAPS[name]
        out = {}
        for _raw, k, v in self._rows(name):
            t = prog.ct_tuple(k, v6)
            out[t] = prog.ct_entry(t, v, v6)
        return out

    def nat(self, name: str) -> dict[CtTuple, NatEntry]:
        """One SNAT map as the reference's CtTuple -> NatEntry."""
        v6 = NAT_MAPS[name]
        return {prog.ct_tuple(k, v6): prog.nat_entry(v, v6) for _raw, k, v in self._rows(name)}

    def affinity(self, name: str) -> dict[AffinityKey, AffinityVal]:
        """cilium_lb{4,6}_affinity as the reference's key/value."""
        v6 = AFFINITY_MAPS[name]
        return {prog.affinity_key(k, v6): AffinityVal(int(v["last_used"]), int(v["backend_id"]))
                for _raw, k, v in self._rows(name)}

    def ratelimit(self) -> dict[RatelimitKey, RatelimitValue]:
        """cilium_ratelimit (lib/ratelimit.h) as the reference's key/value."""
        return {RatelimitKey(int(k["usage"]), int(k["key"]["icmpv6"]["netdev_idx"])):
                RatelimitValue(int(v["last_topup"]), int(v["tokens"]))
                for _raw, k, v in self._rows(RATELIMIT_MAP)}

    def gc(self) -> int:
        """The agent's CT GC (pkg/maps/ctmap): expired entries, then orphaned SNAT entries."""
        n = 0
        live = set()
        for name in CT_MAPS:
            m = self.host.maps.get(name)
            if m is None:
                continue
            for raw, k, v in list(self._rows(name)):
                t = prog.ct_tuple(k, CT_MAPS[name])
                if int(v["lifetime"]) < self.now:
                    m.delete(raw)
                    n += 1
                elif t.flags == TUPLE_F_OUT:
                    live.add((t.saddr, t.daddr, t.sport, t.dport, t.nexthdr))
        for name in NAT_MAPS:
            m = self.host.maps.get(name)
            if m is None:
                continue
            for raw, k, v in list(self._rows(name)):
                t, e = prog.ct_tuple(k, NAT_MAPS[name]), prog.nat_entry(v, NAT_MAPS[name])
                if t.flags == TUPLE_F_IN:
                    ok = (t.saddr, e.to_addr, e.to_port, t.sport, t.nexthdr) in live
                else:
                    ok = ((t.daddr, t.saddr, t.sport, t.dport, t.nexthdr) in live
                          or (t.saddr, t.daddr, t.dport, t.sport, t.nexthdr) in live)
                if not ok:
                    m.delete(raw)
        return n

    def dump(self, maps: Collection[str] | None = None
             ) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
        """The reference's dump rows (datapath.maps.NodeMaps.dump) read from the BPF maps."""
        from datapath.maps import _as_dict

        out: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        want = set(maps) if maps is not None else None
        for name in CT_MAPS:
            if want is None or name in want:
                out[name] = [(_as_dict(k), _as_dict(v)) for k, v in self.ct(name).items()]
        for name in NAT_MAPS:
            if want is None or name in want:
                out[name] = [(_as_dict(k), _as_dict(v)) for k, v in self.nat(name).items()]
        for name in AFFINITY_MAPS:
            if (want is None or name in want) and name in self.host.maps:
                out[name] = [(_as_dict(k), _as_dict(v)) for k, v in self.affinity(name).items()]
        for name in prog.FRAG_MAPS:
            if (want is None or name in want) and name in self.host.maps:
                out[name] = [(_as_dict(k), _as_dict(v))
                             for k, v in prog.frags(self, name).items()]
        for name in LB_MAPS:
            if (want is None or name in want) and name in self.host.maps:
                out[name] = [r for _raw, k, v in self._rows(name)
                             if (r := prog.lb_row(name, k, v)) is not None]
        return out

    @property
    def maps(self) -> MapsView:
        """What the vector runner reads: by_name(map) with the reference's keys/values."""
        return MapsView(self)

    def close(self) -> None:
        """Free the loaded objects, or give the node back to its factory's pool."""
        if self._pool is not None and self._pool(self):
            return
        self.free()

    def free(self) -> None:
        """Free the loaded objects."""
        if self._overlay is not None:
            self._overlay.close()
        self.host.close()


def _port_unreachable(ip: bytes) -> bool:
    """ICMP destination/port unreachable (IPv4 3/3, IPv6 1/4) without extension headers."""
    if len(ip) >= 22 and ip[0] >> 4 == 4 and ip[9] == 1:
        off = (ip[0] & 0xF) * 4
        return len(ip) >= off + 2 and ip[off:off + 2] == b"\x03\x03"
    return len(ip) >= 42 and ip[0] >> 4 == 6 and ip[6] == 58 and ip[40:42] == b"\x01\x04"


def _frag_needed(ip: bytes) -> bool:
    """ICMP frag-needed (IPv4 3/4) or ICMPv6 packet-too-big (2/0)."""
    if len(ip) >= 22 and ip[0] >> 4 == 4 and ip[9] == 1:
        off = (ip[0] & 0xF) * 4
        return len(ip) >= off + 2 and ip[off:off + 2] == b"\x03\x04"
    return len(ip) >= 42 and ip[0] >> 4 == 6 and ip[6] == 58 and ip[40:42] == b"\x02\x00"


GENEVE_PORT = 6081
ETH_P_TEB = 0x6558


def geneve_device(pkt: bytes) -> tuple[dict[str, Any], bytes, bytes] | None:
    """The geneve driver's receive path on an outer IPv4/IPv6 packet: (the tunnel info as
    the harness's control fields, the inner Ethernet header, the inner L3 packet), or None
    when the device would not take it."""
    if len(pkt) < 1:
        return None
    v6 = pkt[0] >> 4 == 6
    if v6:
        if len(pkt) < 40 or pkt[6] != 17:
            return None
        remote, l4 = pkt[8:24], 40
        end = min(len(pkt), 40 + int.from_bytes(pkt[4:6], "big"))
    else:
        ihl = (pkt[0] & 0xF) * 4
        if pkt[0] >> 4 != 4 or ihl < 20 or len(pkt) < ihl + 8 or pkt[9] != 17:
            return None
        remote, l4 = pkt[12:16], ihl
        end = min(len(pkt), int.from_bytes(pkt[2:4], "big"))
    if int.from_bytes(pkt[l4 + 2:l4 + 4], "big") != GENEVE_PORT:
        return None
    g = l4 + 8
    if end < g + 8:
        return None
    ver, optlen = pkt[g] >> 6, (pkt[g] & 0x3F) * 4
    if ver != 0 or int.from_bytes(pkt[g + 2:g + 4], "big") != ETH_P_TEB:
        return None
    inner = g + 8 + optlen
    if end < inner + 14:
        return None
    tun: dict[str, Any] = {"tun_valid": 1, "tun_v6": int(v6),
                           "tun_id": int.from_bytes(pkt[g + 4:g + 7], "big"),
                           "tun_opt_len": optlen,
                           # the harness keeps 64 bytes: more than either DSR struct reads
                           "tun_opt": bytes(pkt[g + 8:inner])[:64].ljust(64, b"\0")}
    if v6:
        tun["tun_remote6"] = [int.from_bytes(remote[i:i + 4], "little") for i in (0, 4, 8, 12)]
    else:
        tun["tun_remote4"] = int.from_bytes(remote, "big")
    return tun, bytes(pkt[inner:inner + 14]), bytes(pkt[inner + 14:end])
