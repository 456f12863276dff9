"""NodeConfig -> Cilium's compile-time defines and map entries; Cilium's CT/SNAT rows -> MapDump.

The agent side of one node, for the real datapath: what `pkg/datapath/linux/config`
renders as defines (ENABLE_DSR, DSR_ENCAP_MODE, IPV4_DIRECT_ROUTING...) and what the
BPF reconcilers write into cilium_lb{4,6}_services_v2 / _backends_v3 / _reverse_nat,
cilium_lxc, cilium_ipcache_v2 and cilium_lb_affinity_match. Which frontend slot holds
which backend is the agent's rule, shared with the reference datapath
(datapath.host.program_maps), so both datapaths under test start from the same maps.
Values go through the object's BTF layouts (ciliumbpf.btf.Layout.pack), never
hand-written struct formats. `MapsView` is the real maps as the vector runner reads and
seeds them, with the reference's keys and values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ciliumbpf.btf import Layout
from datapath.config import NodeConfig
from datapath.errors import ConfigError
from datapath.host import Node
from datapath.maps import (
    AffinityKey,
    AffinityMatch,
    AffinityVal,
    CtEntry,
    CtTuple,
    FragKey,
    FragPorts,
    NatEntry,
    RatelimitKey,
    RatelimitValue,
)

if TYPE_CHECKING:
    from ciliumbpf.libbpf import Map
    from ciliumbpf.node import CiliumBpfNode
from datapath.nodeport import HOST_ID
from datapath.nodeport import POD_IDENTITY as REFERENCE_POD_IDENTITY

HARNESS_DIR = Path(__file__).resolve().parent / "harness"
# Interface indexes the harness reports (the FIB stub routes everything out NATIVE).
NATIVE_IFINDEX = 2
ENCAP_IFINDEX = 3
HOST_IFINDEX = 4
IPIP_IFINDEX = 6  # cilium_ipip4 / cilium_ipip6 (one index: the adapter tells them by family)
# pkg/identity: reserved identities as node_config.h numbers them; every pod has the
# reference datapath's one identity (the VNI of its tunnelled packets).
REMOTE_NODE_ID = 6
POD_IDENTITY = REFERENCE_POD_IDENTITY
TUPLE_F_SERVICE = 4


def _be32(addr: str) -> str:
    """A __be32 constant as C sees it on a little-endian target (bpf_htonl of the address)."""
    return hex(int.from_bytes(ip_address(addr).packed, "little"))


def _v6_init(addr: str) -> str:
    """`{ .addr = { ... } }` for a union v6addr define (IPV6_DIRECT_ROUTING)."""
    return "{ .addr = { " + ", ".join(hex(b) for b in ip_address(addr).packed) + " } }"


def harness_rev() -> str:
    """Hash of the harness sources: part of the compile cache key (headers are not hashed)."""
    h = hashlib.sha256()
    for f in sorted(HARNESS_DIR.iterdir()):
        if f.suffix in (".c", ".h"):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def minor(version: str) -> int:
    """'1.18.0-dev' -> 118: the harness's NPH_CILIUM_MINOR (config names differ by release)."""
    major, _, rest = version.partition(".")
    try:
        return int(major) * 100 + int(rest.partition(".")[0])
    except ValueError:
        return 120


def defines(cfg: NodeConfig, overlay: bool = False, version: str = "1.20") -> dict[str, str]:
    """The defines the agent would render for this node (node_config.h / netdev_config.h)."""
    d: dict[str, str] = {"NPH_HARNESS_REV": harness_rev(), "ENABLE_NODEPORT": "1",
                         "NPH_CILIUM_MINOR": str(minor(version)),
                         "NPH_NATIVE_IFINDEX": str(NATIVE_IFINDEX),
                         # NODEPORT_PORT_MIN_NAT is nodeport_port_max + 1 (lib/nat.h).
                         "NPH_NAT_PORT_MAX_MIN1": str(cfg.nat_min - 1),
                         "NPH_NAT_PORT_MAX": str(cfg.nat_max),
                         # the agent's CT timeout flags (defaults), not node_config.h's
                         "NPH_CT_LIFETIME_TCP": "8000", "NPH_CT_LIFETIME_ANY": "60",
                         "NPH_CT_SYN_TIMEOUT": "60", "NPH_CT_CLOSE_TIMEOUT": "10"}
    if minor(version) < 120:
        # bpf-lb-proto-diff (agent default true since v1.17): services keyed by protocol,
        # as later releases always are (lib/lb.h lb4_key_set_protocol)
        d["ENABLE_SERVICE_PROTOCOL_DIFFERENTIATION"] = "1"
        d["ENABLE_SRC_RANGE_CHECK"] = "1"  # loadBalancerSourceRanges (agent default on)
        if not overlay:
            # bpf_host runs as the host endpoint: the loader substitutes SECLABEL with its
            # identity, reserved:host (the tree's test ep_config.h says 0xfffff); bpf_overlay
            # gets -DSECLABEL=WORLD_ID, as the tree's netdev_config.h has it.
            d["SECLABEL"] = str(HOST_ID)
    if cfg.ipv4:
        d["ENABLE_IPV4"] = "1"
        d["IPV4_DIRECT_ROUTING"] = _be32(cfg.ipv4)
    if cfg.ipv6:
        d["ENABLE_IPV6"] = "1"
        d["IPV6_DIRECT_ROUTING"] = _v6_init(cfg.ipv6)
    if cfg.host_routing == "bpf":
        d["ENABLE_HOST_ROUTING"] = "1"
    if cfg.mode in ("dsr", "hybrid"):
        d["ENABLE_DSR"] = "1"
        # pkg/datapath/linux/config: DSR_ENCAP_NONE/IPIP/GENEVE and the mode in use.
        d.update(DSR_ENCAP_NONE="1", DSR_ENCAP_IPIP="2", DSR_ENCAP_GENEVE="3",
                 DSR_ENCAP_MODE={"geneve": "3", "ipip": "2"}.get(cfg.dispatch, "1"))
        if cfg.dispatch == "ipip":
            # the agent's cilium_ipip4/6 devices (EnableIPIPDevices, v1.20 tc dispatch);
            # IPV4/6_RSS_PREFIX come from the tree's node_config.h (IPV4_DIRECT_ROUTING)
            d.update(ENCAP4_IFINDEX=str(IPIP_IFINDEX), ENCAP6_IFINDEX=str(IPIP_IFINDEX))
        if cfg.mode == "hybrid" and minor(version) < 120:
            d["ENABLE_DSR_HYBRID"] = "1"  # v1.18 nodeport_uses_dsr: TCP -> DSR, others SNAT
        elif cfg.mode == "hybrid":
            d["ENABLE_DSR_BYUSER"] = "1"  # per-service SVC_FLAG_FWD_MODE_DSR decides
    if cfg.ipip_termination and minor(version) >= 120:
        d["NPH_IPIP_TERMINATION"] = "1"  # config.h: enable_ipip_termination
    if cfg.tunnel or (cfg.mode != "snat" and cfg.dispatch == "geneve") or overlay:
        d["ENCAP_IFINDEX"] = str(ENCAP_IFINDEX)
        d["TUNNEL_MODE"] = "1"
    if cfg.tunnel and not overlay:
        d["NPH_POD_EGRESS"] = str(POD_IDENTITY)  # host.c nph_from_container's SECLABEL
    # cilium_host's address, the SNAT source towards a tunnel endpoint (nodeport.h
    # tail_nodeport_nat_egress_ipv4: IPV4_GATEWAY, _ipv6: CONFIG(router_ipv6)): the
    # scenario's router IP, and for a node without one the model's rule
    # (model/nodeport.py nodeport_lb: the node's own address).
    if cfg.router_ipv4 or cfg.ipv4:
        d["NPH_IPV4_GATEWAY"] = _be32(cfg.router_ipv4 or cfg.ipv4 or "")
    if cfg.router_ipv6 or cfg.ipv6:
        d["NPH_ROUTER_IPV6"] = _v6_init(cfg.router_ipv6 or cfg.ipv6 or "")
    if cfg.mode in ("dsr", "hybrid") and cfg.pmtu_discovery:
        # pkg/datapath/linux/config: --enable-pmtu-discovery under DSR
        d["ENABLE_DSR_ICMP_ERRORS"] = "1"
    if minor(version) < 120:
        d["THIS_MTU"] = str(cfg.mtu)  # the device's MTU (common.h:38-43 falls back to MTU)
    else:
        d["NPH_DEVICE_MTU"] = str(cfg.mtu)  # config.h: CONFIG(device_mtu)
    if cfg.no_backend_response == "reject":
        d["SERVICE_NO_BACKEND_RESPONSE"] = "1"  # tail_no_service_ipv{4,6}: ICMP unreachable
    if cfg.ct_accounting:
        d["NPH_CT_ACCOUNTING"] = "1"  # config.h (1.20 CONFIG) / harness.h (1.18 define)
    if cfg.fragment_tracking:
        # 1.20: CONFIG(enable_ipv4/6_fragments) (config.h); 1.18: the compile-time define
        # (v1.18 lib/ipv4.h:28, 186), IPv4 only: 1.18 has no IPv6 fragment tracking
        d["NPH_FRAGMENTS" if minor(version) >= 120 else "ENABLE_IPV4_FRAGMENTS"] = "1"
    if minor(version) < 120 and any(s.affinity_timeout for s in cfg.services):
        # sessionAffinity=ClientIP: 1.18 compiles the affinity maps and lookups only under
        # this define (lib/lb.h:56, 143, 193, 954); 1.20 always has them
        d["ENABLE_SESSION_AFFINITY"] = "1"
    if cfg.masquerade:
        d.update(_masquerade(cfg))
    if cfg.selection == "first":
        d.update(LB_SELECTION_RANDOM="1", LB_SELECTION_MAGLEV="2", LB_SELECTION_FIRST="3",
                 LB_SELECTION="3")
    if cfg.selection == "maglev":
        # loadBalancer.algorithm=maglev: LB_SELECTION_MAGLEV (node_config.h) and the table
        # size LB_MAGLEV_LUT_SIZE
        d.update(LB_SELECTION_RANDOM="1", LB_SELECTION_MAGLEV="2", LB_SELECTION_FIRST="3",
                 LB_SELECTION="2", NPH_LB_MAGLEV_LUT_SIZE=str(cfg.maglev_table_size))
    # the tuple-hash seeds, read by Maglev and by XDP's tunnel source port (encap.h:92):
    # HASH_INIT4/6_SEED defines in 1.18 (hash.h:16), CONFIG(hash_init4/6_seed) in 1.20
    # (include/bpf/config/node.h:69-70); harness.h and config.h put them in place
    d.update(NPH_HASH_INIT4_SEED=str(cfg.hash_seed4), NPH_HASH_INIT6_SEED=str(cfg.hash_seed6))
    return d


def _masquerade(cfg: NodeConfig) -> dict[str, str]:
    """bpf.masquerade: ENABLE_MASQUERADE_IPV4/6, the masquerade address (IPV4_MASQUERADE,
    1.20's nat_ipv4_masquerade; the node's own by default) and the native-routing CIDR."""
    d: dict[str, str] = {}
    if cfg.ipv4:
        d["ENABLE_MASQUERADE_IPV4"] = "1"
        d["NPH_IPV4_MASQUERADE"] = _be32(cfg.masquerade_ipv4 or cfg.ipv4)
    if cfg.ipv6:
        d["ENABLE_MASQUERADE_IPV6"] = "1"
        d["NPH_IPV6_MASQUERADE"] = _v6_init(cfg.masquerade_ipv6 or cfg.ipv6)
        d["NPH_IPV6_MASQUERADE_BYTES"] = ", ".join(
            hex(b) for b in ip_address(cfg.masquerade_ipv6 or cfg.ipv6).packed)
    for cidr in cfg.snat_exclusion_cidrs:
        net, _, plen = cidr.partition("/")
        if ip_address(net).version == 4:
            d["NPH_SNAT_EXCL_CIDR4"] = _be32(net)
            d["NPH_SNAT_EXCL_CIDR4_LEN"] = plen
        else:
            mask = str(ip_address(((1 << 128) - 1) ^ ((1 << (128 - int(plen))) - 1)))
            d["NPH_SNAT_EXCL_CIDR6"] = _v6_init(net)
            d["NPH_SNAT_EXCL_CIDR6_MASK"] = _v6_init(mask)
    return d


def _u(addr: bytes) -> int:
    return int.from_bytes(addr, "big")


def _v6(addr: bytes) -> dict[str, Any]:
    return {"addr": bytes(addr)}


class Entries:
    """The maps' contents for one NodeConfig: (map name, key fields, value fields) rows."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.ref = Node(cfg)  # the agent's slot/eTP/maintenance rules (program_maps)

    def slots(self, vip: bytes, port: int, proto: int) -> list[int]:
        """Backend ids in slot order (1..count) of one frontend."""
        m = self.ref.maps
        svcs = m.lb6_services if len(vip) == 16 else m.lb4_services
        out: dict[int, int] = {}
        for k, v in svcs.items():
            if k.address == vip and k.dport == port and k.proto == proto and k.backend_slot:
                out[k.backend_slot] = v.backend_id
        master = [v for k, v in svcs.items() if k.address == vip and k.dport == port
                  and k.proto == proto and k.backend_slot == 0]
        count = master[0].count if master else 0
        return [out[i] for i in range(1, count + 1) if i in out]

    def rows(self) -> Iterator[tuple[str, Any, Any]]:
        """Every entry the agent writes, as BTF field dicts."""
        m = self.ref.maps
        for fam, svcs, bes, revs in (("4", m.lb4_services, m.lb4_backends, m.lb4_reverse_nat),
                                     ("6", m.lb6_services, m.lb6_backends, m.lb6_reverse_nat)):
            a = _u if fam == "4" else _v6
            for k, v in svcs.items():
                yield (f"cilium_lb{fam}_services_v2",
                       {"address": a(k.address), "dport": k.dport, "backend_slot": k.backend_slot,
                        "proto": k.proto, "scope": k.scope},
                       {"backend_id": v.backend_id, "count": v.count,
                        "rev_nat_index": v.rev_nat_index, "flags": v.flags, "flags2": v.flags2})
            for bid, b in bes.items():
                yield (f"cilium_lb{fam}_backends_v3", bid,
                       {"address": a(b.address), "port": b.port, "proto": b.proto,
                        "flags": b.flags})
            for idx, r in revs.items():
                yield (f"cilium_lb{fam}_reverse_nat", idx,
                       {"address": a(r.address), "port": r.port})
        for addr, ep in m.lxc.items():
            v6 = len(addr) == 16
            key: dict[str, Any] = {"ip6" if v6 else "ip4": {"addr": bytes(addr)}}
            key["family"] = 2 if v6 else 1  # ENDPOINT_KEY_IPV6 / ENDPOINT_KEY_IPV4
            yield ("cilium_lxc", key,
                   {"ifindex": ep.ifindex, "lxc_id": ep.lxc_id, "sec_id": POD_IDENTITY})
        for idx, cidrs in m.src_range.items():
            for net, plen in cidrs:
                v6 = len(net) == 16
                # lb{4,6}_src_range_ok: prefix = 32 bits of rev_nat_id/pad + the CIDR; the
                # IPv4 addr is a plain __u32 holding network-order bytes.
                key = {"lpm_key": {"prefixlen": 32 + plen}, "rev_nat_id": idx,
                       "addr": {"addr": net} if v6 else int.from_bytes(net, "little")}
                yield f"cilium_lb{'6' if v6 else '4'}_source_range", key, 1
        for fam, tables in (("4", m.lb4_maglev), ("6", m.lb6_maglev)):
            for idx, table in tables.items():  # the agent's Maglev table per service
                yield f"cilium_lb{fam}_maglev", idx, table
        for mk, _zero in m.lb_affinity_match.items():
            # the agent marks each active backend of an affinity frontend (lb.h:159, 2085)
            yield ("cilium_lb_affinity_match",
                   {"backend_id": mk.backend_id, "rev_nat_id": mk.rev_nat_id}, 0)
        yield from self._ipcache()

    def _ipcache(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """cilium_ipcache_v2: pods (local and tunnelled) with an identity, and the world."""
        teps = {ip_address(a).packed: ip_address(t).packed for a, t in self.cfg.tunnel_endpoints}
        addrs: set[bytes] = set(teps)
        addrs |= {ip_address(b.address).packed for b in self.cfg.backends}
        addrs |= {ip_address(e.address).packed for e in self.cfg.endpoints}
        for addr in sorted(addrs):
            v6 = len(addr) == 16
            key: dict[str, Any] = {"lpm_key": {"prefixlen": 32 + (128 if v6 else 32)},
                                   "family": 2 if v6 else 1}
            key["ip6" if v6 else "ip4"] = {"addr": bytes(addr)}
            val: dict[str, Any] = {"sec_identity": POD_IDENTITY}
            tep = teps.get(addr)
            if self.cfg.masquerade and addr in teps.values():
                # a node's own address is a remote node's (reserved:remote-node), which
                # snat_v4_needs_masquerade leaves alone in native routing (nat.h:745-748)
                val["sec_identity"] = REMOTE_NODE_ID
            if tep is not None:
                if len(tep) == 16:
                    val["tunnel_endpoint"] = {"ip6": {"addr": tep}}
                    val["flag_ipv6_tunnel_ep"] = 1
                else:
                    val["tunnel_endpoint"] = {"ip4": {"addr": tep}}
                val["flag_has_tunnel_ep"] = 1
                if not self.cfg.tunnel:
                    # native routing: the endpoint is there for Geneve DSR only
                    # (nodeport.h:1844 encap_geneve_dsr_opt4 checks flag_has_tunnel_ep);
                    # other paths skip it (nodeport.h:2594 SNAT, bpf_host.c:384).
                    val["flag_skip_tunnel"] = 1
            yield "cilium_ipcache_v2", key, val


def fit(lay: Layout | None, value: Any, path: str = "") -> Any:
    """A row written in the current release's shape, fitted to this tree's BTF layout:
    `{"addr": bytes}` (union v4addr) into an older plain __be32, and fields the older
    struct lacks dropped when they are zero (a non-zero one is an error: that release
    cannot express the row)."""
    if lay is None:
        return value
    if lay.kind == "int" and isinstance(value, Mapping) and len(value) == 1:
        (k, v), = value.items()
        if k == "addr":
            return int.from_bytes(bytes(v), "big" if lay.big_endian else "little")
        return fit(lay, v, f"{path}.{k}")  # {"ip4": {"addr": ...}} into a plain __be32
    if lay.kind in ("struct", "union") and isinstance(value, Mapping):
        fields = _members(lay)
        out = {}
        for k, v in value.items():
            f = fields.get(k)
            if f is not None:
                out[k] = v if f.bit_size else fit(f.type, v, f"{path}.{k}")
            elif k in _IMPLIED:
                continue
            elif v not in (0, False, None) and v != {} and not (
                    isinstance(v, bytes) and not any(v)):
                raise ConfigError(f"{lay.name}{path}.{k}: this Cilium release has no such "
                                  f"field, and the agent's row needs {v!r}")
        return out
    return value


# Fields a newer release spells out and an older one implies.
_IMPLIED = {"flag_has_tunnel_ep": "v1.18 remote_endpoint_info: a non-zero tunnel_endpoint"}


def _members(lay: Layout) -> dict[str, Any]:
    """Named members, those of anonymous struct/union members included."""
    out: dict[str, Any] = {}
    for f in lay.fields:
        if f.name:
            out[f.name] = f
        else:
            out.update(_members(f.type))
    return out


# -- dumps: Cilium's rows -> the reference's row shape (datapath.maps.NodeMaps.dump) ----
def _addr(v: Any, v6: bool) -> bytes:
    if isinstance(v, Mapping):
        raw = bytes(v.get("addr", b""))
        return raw if v6 else raw[:4]
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    return int(v).to_bytes(16 if v6 else 4, "big")


def ct_tuple(k: Mapping[str, Any], v6: bool) -> CtTuple:
    """struct ipv{4,6}_ct_tuple fields (daddr, saddr, dport, sport, nexthdr, flags)."""
    return CtTuple(_addr(k["daddr"], v6), _addr(k["saddr"], v6), int(k["dport"]),
                   int(k["sport"]), int(k["nexthdr"]), int(k["flags"]))


def ct_entry(key: CtTuple, v: Mapping[str, Any], v6: bool) -> CtEntry:
    """struct ct_entry: the union holds backend_id (CT_SERVICE) or nat_addr (others); an
    IPv4 nat_addr sits in the last word (p4), as nodeport_extract_dsr_v4 stores it."""
    service = bool(key.flags & TUPLE_F_SERVICE)
    raw = b"" if service else bytes(v.get("nat_addr", {}).get("addr", b""))
    nat = raw if v6 else raw[12:16]
    return CtEntry(lifetime=int(v["lifetime"]), rx_closing=bool(v["rx_closing"]),
                   tx_closing=bool(v["tx_closing"]), seen_non_syn=bool(v["seen_non_syn"]),
                   tx_flags_seen=int(v["tx_flags_seen"]), rx_flags_seen=int(v["rx_flags_seen"]),
                   node_port=bool(v["node_port"]), dsr_internal=bool(v["dsr_internal"]),
                   backend_id=int(v["backend_id"]) if service else 0,
                   rev_nat_index=int(v["rev_nat_index"]),
                   nat_addr=b"" if not any(nat) else nat, nat_port=int(v.get("nat_port", 0)),
                   src_sec_id=int(v.get("src_sec_id", 0)),
                   packets=int(v["packets"]), bytes=int(v["bytes"]))


def ct_row(key: CtTuple, e: CtEntry, v6: bool) -> dict[str, Any]:
    """The reverse of ct_entry: a reference entry as struct ct_entry fields (a `seed`)."""
    row: dict[str, Any] = {
        "lifetime": e.lifetime, "rx_closing": int(e.rx_closing),
        "tx_closing": int(e.tx_closing), "seen_non_syn": int(e.seen_non_syn),
        "node_port": int(e.node_port), "dsr_internal": int(e.dsr_internal),
        "rev_nat_index": e.rev_nat_index, "nat_port": e.nat_port,
        "src_sec_id": e.src_sec_id, "tx_flags_seen": e.tx_flags_seen,
        "rx_flags_seen": e.rx_flags_seen, "packets": e.packets, "bytes": e.bytes}
    if key.flags & TUPLE_F_SERVICE:
        row["backend_id"] = e.backend_id
    elif e.nat_addr:
        row["nat_addr"] = {"addr": e.nat_addr if v6 else bytes(12) + e.nat_addr}
    return row


def nat_row(e: NatEntry, v6: bool) -> dict[str, Any]:
    """The reverse of nat_entry: a reference entry as struct ipv{4,6}_nat_entry fields."""
    addr: Any = {"addr": e.to_addr} if v6 else int.from_bytes(e.to_addr, "big")
    return {"common": {"created": e.created, "needs_ct": int(e.needs_ct)},
            "to_saddr": addr, "to_sport": e.to_port}


def nat_entry(v: Mapping[str, Any], v6: bool) -> NatEntry:
    """struct ipv{4,6}_nat_entry: to_saddr/to_sport (OUT) and to_daddr/to_dport (IN) alias."""
    common = v.get("common", v)
    return NatEntry(to_addr=_addr(v["to_saddr"], v6), to_port=int(v["to_sport"]),
                    created=int(common["created"]), needs_ct=bool(common["needs_ct"]))


def _text(v: Any, v6: bool) -> str:
    return str(ip_address(_addr(v, v6)))


def lb_row(name: str, k: Any, v: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """An agent-written map row read back from BPF, in NodeMaps.dump()'s shape (None: a row
    the reference has no counterpart for, e.g. an ipcache identity without a tunnel)."""
    v6 = "lb6" in name
    if name.endswith("_services_v2"):
        return ({"address": _text(k["address"], v6), "dport": k["dport"], "proto": k["proto"],
                 "scope": k["scope"], "backend_slot": k["backend_slot"]},
                {"backend_id": v["backend_id"], "count": v["count"],
                 "rev_nat_index": v["rev_nat_index"], "flags": v["flags"],
                 "flags2": v["flags2"]})
    if name.endswith("_backends_v3"):
        return ({"key": int(k)}, {"address": _text(v["address"], v6), "port": v["port"],
                                  "proto": v["proto"], "flags": v["flags"]})
    if name.endswith("_reverse_nat"):
        return ({"key": int(k)}, {"address": _text(v["address"], v6), "port": v["port"]})
    if name == "cilium_lb_affinity_match":
        return {"backend_id": k["backend_id"], "rev_nat_id": k["rev_nat_id"]}, {"value": v}
    if name == "cilium_lxc":
        v6 = k["family"] == 2
        raw = bytes(k["ip6"]["addr"]) if v6 else _net4(k["ip4"])
        return ({"key": str(ip_address(raw))}, {"ifindex": v["ifindex"], "lxc_id": v["lxc_id"]})
    if name == "cilium_ipcache_v2":
        tep = v["tunnel_endpoint"]
        if not v.get("flag_has_tunnel_ep", isinstance(tep, int) and tep != 0):  # v1.18: implied
            return None
        v6 = k["family"] == 2
        raw = bytes(k["ip6"]["addr"]) if v6 else _net4(k["ip4"])
        if v.get("flag_ipv6_tunnel_ep"):
            tep_raw = bytes(tep["ip6"]["addr"])
        else:
            tep_raw = _net4(tep["ip4"] if isinstance(tep, Mapping) else tep)
        return ({"key": str(ip_address(raw))}, {"value": str(ip_address(tep_raw))})
    return None


def affinity_key(k: Mapping[str, Any], v6: bool) -> AffinityKey:
    """struct lb{4,6}_affinity_key as the reference's key (client_ip: a plain __u32 holding
    the network-order bytes, or a union v6addr)."""
    ip = k["client_id"]["client_ip"]
    return AffinityKey(bytes(ip["addr"]) if v6 else _net4(ip), int(k["rev_nat_id"]),
                       int(k["netns_cookie"]))


def affinity_key_row(k: AffinityKey) -> dict[str, Any]:
    """The reference's affinity key in the BTF layout."""
    v6 = len(k.client_id) == 16
    ip: Any = {"addr": k.client_id} if v6 else int.from_bytes(k.client_id, "little")
    return {"client_id": {"client_ip": ip}, "rev_nat_id": k.rev_nat_id,
            "netns_cookie": k.netns_cookie}


def _net4(v: Any) -> bytes:
    """An IPv4 address field: `union v4addr` (v1.20), or a plain __u32 holding the
    network-order bytes (v1.18's endpoint_key, ipcache_key, remote_endpoint_info)."""
    if isinstance(v, Mapping):
        return bytes(v["addr"])[:4]
    return int(v).to_bytes(4, "little")


# -- the real maps as the vector runner reads and seeds them (reference keys/values) --
CT_MAPS = {"cilium_ct4_global": False, "cilium_ct_any4_global": False,
           "cilium_ct6_global": True, "cilium_ct_any6_global": True}
NAT_MAPS = {"cilium_snat_v4_external": False, "cilium_snat_v6_external": True}
AFFINITY_MAPS = {"cilium_lb4_affinity": False, "cilium_lb6_affinity": True}
RATELIMIT_MAP = "cilium_ratelimit"
FRAG_MAPS = {"cilium_ipv4_frag_datagrams": False, "cilium_ipv6_frag_datagrams": True}


def frag_key(k: Mapping[str, Any], v6: bool) -> FragKey:
    """struct ipv4_frag_id / ipv6_frag_id (ipv4.h:16, ipv6.h:43) as the reference's key."""
    return FragKey(_addr(k["daddr"], v6), _addr(k["saddr"], v6), int(k["id"]),
                   int(k["proto"]))


def frags(node: CiliumBpfNode, name: str) -> dict[FragKey, FragPorts]:
    """cilium_ipv4/6_frag_datagrams as the reference's key/value."""
    v6 = FRAG_MAPS[name]
    return {frag_key(k, v6): FragPorts(int(v["sport"]), int(v["dport"]))
            for _raw, k, v in node._rows(name)}

@attrs.define
class MapView:
    """One map as the vector runner reads it: `_d` (a snapshot), `len`, `delete`, `update`
    (a `seed` step: what a Cilium test's setup writes with map_update_elem)."""

    node: CiliumBpfNode
    name: str
    _d: dict[Any, Any]

    def __len__(self) -> int:
        return len(self._d)

    def _map(self) -> Map:
        m: Map = self.node.host.maps[self.name]
        return m

    def _key(self, key: Any) -> bytes:
        m = self._map()
        if isinstance(key, AffinityKey):
            return m.pack_key(fit(m.key_type, affinity_key_row(key)))
        if isinstance(key, FragKey):
            v6 = len(key.daddr) == 16
            return m.pack_key(fit(m.key_type, {"daddr": _a(key.daddr, v6),
                                               "saddr": _a(key.saddr, v6), "id": key.id,
                                               "proto": key.proto}))
        if isinstance(key, RatelimitKey):
            return m.pack_key({"usage": key.usage, "key": {"icmpv6": {"netdev_idx":
                                                                      key.netdev_idx}}})
        v6 = len(key.daddr) == 16
        return m.pack_key({"daddr": _a(key.daddr, v6), "saddr": _a(key.saddr, v6),
                           "dport": key.dport, "sport": key.sport, "nexthdr": key.nexthdr,
                           "flags": key.flags})

    def delete(self, key: Any) -> bool:
        """map_delete_elem on the real map."""
        return self._map().delete(self._key(key))

    def update(self, key: Any, value: Any) -> bool:
        """map_update_elem(BPF_ANY) on the real map, the value in this tree's BTF layout."""
        m = self._map()
        if isinstance(value, AffinityVal):
            row: dict[str, Any] = {"last_used": value.last_used, "backend_id": value.backend_id}
        elif isinstance(value, RatelimitValue):
            row = {"last_topup": value.last_topup, "tokens": value.tokens}
        elif isinstance(value, FragPorts):
            row = {"sport": value.sport, "dport": value.dport}
        elif isinstance(value, NatEntry):
            row = nat_row(value, len(value.to_addr) == 16)
        else:
            row = ct_row(key, value, len(key.daddr) == 16)
        m.update(self._key(key), m.pack_value(fit(m.value_type, row)))
        return True


def _a(addr: bytes, v6: bool) -> Any:
    return {"addr": addr} if v6 else int.from_bytes(addr, "big")


_ALIASES = {"ct4": "cilium_ct4_global", "ct_any4": "cilium_ct_any4_global",
            "ct6": "cilium_ct6_global", "ct_any6": "cilium_ct_any6_global",
            "snat4": "cilium_snat_v4_external", "snat6": "cilium_snat_v6_external"}


@attrs.define
class MapsView:
    node: CiliumBpfNode

    def by_name(self, name: str) -> MapView:
        """A CT, SNAT or rate-limit map by Cilium name or alias (KeyError otherwise)."""
        name = _ALIASES.get(name, name)
        if name in CT_MAPS:
            return MapView(self.node, name, dict(self.node.ct(name)))
        if name in NAT_MAPS:
            return MapView(self.node, name, dict(self.node.nat(name)))
        if name in AFFINITY_MAPS and name in self.node.host.maps:
            return MapView(self.node, name, self.node.affinity(name))
        if name == "cilium_lb_affinity_match" and name in self.node.host.maps:
            return MapView(self.node, name, {
                AffinityMatch(int(k["backend_id"]), int(k["rev_nat_id"])): v
                for _raw, k, v in self.node._rows(name)})
        if name == RATELIMIT_MAP and name in self.node.host.maps:
            return MapView(self.node, name, self.node.ratelimit())
        if name in FRAG_MAPS and name in self.node.host.maps:
            return MapView(self.node, name, frags(self.node, name))
        raise KeyError(name)
