"""The vector file schema: every key and value checked before anything runs (bad input is one
line naming the key path, exit 2), and map keys/entries built from their YAML form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safeyaml
from datapath.drop import XFER_FLAGS, DropReason, Verdict, XdpVerdict, xfer_value
from datapath.errors import VectorFileError
from datapath.host import HOOKS
from datapath.maps import (
    AffinityKey,
    AffinityVal,
    CtEntry,
    CtTuple,
    FragKey,
    FragPorts,
    NatEntry,
    RatelimitKey,
    RatelimitValue,
)
from datapath.packet import PROTO_NAMES, ip_bytes
from datapath.spec import FIELD_NAMES, SpecError, check_spec

VERSION = re.compile(r"1\.[0-9]{1,2}")
_TOP = {"source", "description", "node", "services", "backends", "endpoints",
        "tunnel_endpoints", "steps", "cilium", "reference_only"}
_NODE = {"name": "str", "ipv4": "ip", "ipv6": "ip", "mode": ("snat", "dsr", "hybrid"),
         "dispatch": ("opt", "geneve", "ipip"), "host_routing": ("bpf", "legacy"),
         "nat_min": "port", "nat_max": "port", "ct_capacity": "size", "nat_capacity": "size",
         "seed": "u64", "selection": ("random", "first", "maglev"), "faults": "strs",
         "tunnel": "bool",
         "router_ipv4": "ip", "router_ipv6": "ip", "no_backend_response": ("drop", "reject"),
         "no_service_endpoints_routable": "bool", "ct_accounting": "bool",
         "masquerade": "bool", "masquerade_ipv4": "ip", "masquerade_ipv6": "ip",
         "snat_exclusion_cidrs": "strs", "pmtu_discovery": "bool", "mtu": "u16",
         "fragment_tracking": "bool", "maglev_table_size": "size", "hash_seed4": "u32",
         "hash_seed6": "u32", "socket_lb": "bool", "nodeport_min": "port",
         "service_loopback_ipv4": "ip", "service_loopback_ipv6": "ip",
         "version": ("1.18", "1.20"), "ipip_termination": "bool"}
_PROTOS = tuple(k for k in PROTO_NAMES if k != "any")
_SERVICE = {"frontend": "ip", "port": "port", "rev_nat_index": "u16", "backends": "ints",
            "proto": _PROTOS, "kind": ("loadbalancer", "nodeport", "externalip", "clusterip"),
            "ext_traffic_local": "bool", "fwd_mode": ("dsr", "snat"),
            "source_ranges": "strs", "source_range_deny": "bool", "routable": "bool",
            "affinity_timeout": "u24", "maglev": "ints"}
_BACKEND = {"id": "u32", "address": "ip", "port": "port", "proto": _PROTOS,
            "state": ("active", "terminating", "quarantined", "maintenance")}
_ENDPOINT = {"address": "ip", "ifindex": "u32", "ep_id": "u16"}
ACTIONS = ("hook", "advance", "gc", "delete", "seed", "reprogram")
_STEP = {"name", "packet", "expect", "capture", "backend", "input_hex", "diverges", "cilium",
         "xfer", *ACTIONS}
_EXPECT = {"verdict", "drop_reason", "target", "hex", "fields", "maps", "xfer"}
_MAP_EXPECT = {"map": "str", "key": "any", "entry": "any", "absent": "bool", "count": "size"}
_REPROGRAM = {"services", "backends", "endpoints", "tunnel_endpoints"}
_BOUNDS = {"port": 0xFFFF, "u16": 0xFFFF, "u32": 2**32 - 1, "u64": 2**64 - 1, "size": 2**26,
           "u8": 0xFF, "u24": 2**24 - 1}

# Maps a vector may read, seed or delete by key: key schema, entry schema, what builds them.
_CT_KEY = {"saddr": "ip", "daddr": "ip", "sport": "port", "dport": "port",
           "nexthdr": "proto", "flags": "u16"}
_CT_ENTRY = {"lifetime": "u32", "rx_closing": "bool", "tx_closing": "bool",
             "seen_non_syn": "bool", "tx_flags_seen": "u8", "rx_flags_seen": "u8",
             "node_port": "bool", "dsr_internal": "bool", "loopback": "bool",
             "backend_id": "u64", "rev_nat_index": "u16", "nat_addr": "ip?",
             "nat_port": "port", "src_sec_id": "u32", "packets": "u64", "bytes": "u64"}
_NAT_ENTRY = {"to_addr": "ip", "to_port": "port", "created": "u64", "needs_ct": "bool"}
_RL_KEY = {"usage": "u32", "netdev_idx": "u32"}
_RL_ENTRY = {"last_topup": "u64", "tokens": "u64"}
_AFF_KEY = {"client_id": "ip", "rev_nat_id": "u16", "netns_cookie": "u8"}
_AFF_ENTRY = {"last_used": "u64", "backend_id": "u32"}
_AFF_NAMES = ("cilium_lb4_affinity", "cilium_lb6_affinity")
_FRAG_KEY = {"saddr": "ip", "daddr": "ip", "id": "u32", "proto": "proto"}
_FRAG_ENTRY = {"sport": "port", "dport": "port"}
FRAG_NAMES = ("cilium_ipv4_frag_datagrams", "cilium_ipv6_frag_datagrams")
_CT_NAMES = ("cilium_ct4_global", "cilium_ct_any4_global", "cilium_ct6_global",
             "cilium_ct_any6_global", "ct4", "ct_any4", "ct6", "ct_any6")
_NAT_NAMES = ("cilium_snat_v4_external", "cilium_snat_v6_external", "snat4", "snat6")
KEYED: dict[str, tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]] = {
    **{n: (_CT_KEY, ("saddr", "daddr", "sport", "dport"), _CT_ENTRY) for n in _CT_NAMES},
    **{n: (_CT_KEY, ("saddr", "daddr", "sport", "dport"), _NAT_ENTRY) for n in _NAT_NAMES},
    "cilium_ratelimit": (_RL_KEY, ("usage", "netdev_idx"), _RL_ENTRY),
    **{n: (_AFF_KEY, ("client_id", "rev_nat_id"), _AFF_ENTRY) for n in _AFF_NAMES},
    **{n: (_FRAG_KEY, ("saddr", "daddr", "id", "proto"), _FRAG_ENTRY) for n in FRAG_NAMES}}
# Maps only a `count` may be expected of.
COUNTED = ("cilium_lb4_services_v2", "cilium_lb4_backends_v3", "cilium_lb4_reverse_nat",
           "cilium_lb6_services_v2", "cilium_lb6_backends_v3", "cilium_lb6_reverse_nat",
           "cilium_lxc", "cilium_ipcache_v2", "cilium_lb_affinity_match", *KEYED)


def _captured(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("$")


def check(p: str, value: Any, kp: str, kind: Any) -> None:
    """One value of the schema; `$name` strings are captures filled in later."""
    if kind == "any" or _captured(value):
        return
    ok = True
    if isinstance(kind, tuple):
        if value not in kind:
            raise VectorFileError(p, kp, f"{value!r} is not one of {', '.join(kind)}")
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind in ("ip", "ip?"):
        ok = isinstance(value, str)
        if ok and not (kind == "ip?" and value == ""):
            try:
                ip_bytes(value)
            except (ValueError, OSError):
                raise VectorFileError(p, kp, f"{value!r} is not an IP address") from None
    elif kind == "proto":
        if isinstance(value, str):
            check(p, value, kp, _PROTOS)
        else:
            check(p, value, kp, "u8")
    elif kind in _BOUNDS:
        ok = isinstance(value, int) and not isinstance(value, bool) and \
            0 <= value <= _BOUNDS[kind]
        if not ok:
            raise VectorFileError(p, kp, f"expected an integer 0-{_BOUNDS[kind]}, "
                                  f"got {value!r}")
    elif kind in ("strs", "ints"):
        want = str if kind == "strs" else int
        ok = isinstance(value, list) and all(isinstance(x, want) and not isinstance(x, bool)
                                             for x in value)
    if not ok:
        raise VectorFileError(p, kp, f"expected {kind}, got {value!r}")


def record(p: str, d: Any, kp: str, schema: Mapping[str, Any],
           required: tuple[str, ...] = (), matchers: bool = False) -> Mapping[str, Any]:
    """A mapping whose keys are all in `schema`, with `required` present; with `matchers`,
    a value may also be `{range: [lo, hi]}` or `{not: value}` (expectations)."""
    if not isinstance(d, Mapping):
        raise VectorFileError(p, kp, f"must be a mapping, got {type(d).__name__}")
    for k, v in d.items():
        if k not in schema:
            raise VectorFileError(p, f"{kp}.{k}", "unknown key (allowed: "
                                  f"{', '.join(sorted(schema))})")
        if matchers:
            _check_matcher(p, v, f"{kp}.{k}", schema[k])
        else:
            check(p, v, f"{kp}.{k}", schema[k])
    for k in required:
        if k not in d:
            raise VectorFileError(p, f"{kp}.{k}", "missing required key")
    return d


def _check_matcher(p: str, v: Any, kp: str, kind: Any) -> None:
    if not isinstance(v, Mapping):
        check(p, v, kp, kind)
        return
    if set(v) == {"not"}:
        _check_matcher(p, v["not"], f"{kp}.not", kind)
        return
    if set(v) != {"range"}:
        raise VectorFileError(p, kp, "a matcher is {range: [lo, hi]} or {not: value}")
    r = v["range"]
    if not (isinstance(r, list) and len(r) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in r) and r[0] <= r[1]):
        raise VectorFileError(p, f"{kp}.range", f"expected [lo, hi] integers, got {r!r}")


def records(p: str, doc: Mapping[str, Any], key: str, schema: Mapping[str, Any],
            required: tuple[str, ...], kp: str = "") -> None:
    """A list of records under doc[key] (absent or null: none)."""
    items = doc.get(key) or []
    where = f"{kp}.{key}" if kp else key
    if not isinstance(items, list):
        raise VectorFileError(p, where, "must be a list")
    for i, item in enumerate(items):
        record(p, item, f"{where}[{i}]", schema, required)


def check_versions(p: str, vs: Any, kp: str) -> None:
    """`cilium: ["1.18", "1.20"]`: the Cilium versions whose bytes the file (or step) holds."""
    if not isinstance(vs, list) or not vs:
        raise VectorFileError(p, kp, 'must be a non-empty list of versions like "1.20"')
    for i, v in enumerate(vs):
        if not isinstance(v, str) or not VERSION.fullmatch(v):
            raise VectorFileError(p, f"{kp}[{i}]", f'{v!r} is not a version like "1.20"')


def _teps(p: str, teps: Any, kp: str) -> None:
    teps = teps or {}
    if not isinstance(teps, Mapping):
        raise VectorFileError(p, kp, "must be a mapping of address: node IP")
    for k, v in teps.items():
        check(p, k, f"{kp}.{k}", "ip")
        check(p, v, f"{kp}.{k}", "ip")


def map_schema(p: str, name: Any, kp: str) -> tuple[dict[str, Any], tuple[str, ...],
                                                     dict[str, Any]]:
    """Key schema, required key fields and entry schema of a map a vector reads by key."""
    if name not in KEYED:
        raise VectorFileError(p, kp, f"unknown map {name!r} (keyed maps: "
                              f"{', '.join(sorted(KEYED))})")
    return KEYED[name]


def _check_map_expect(p: str, m: Any, kp: str) -> None:
    record(p, m, kp, _MAP_EXPECT, ("map",))
    if "count" in m:
        if m["map"] not in COUNTED:
            raise VectorFileError(p, f"{kp}.map", f"unknown map {m['map']!r}")
        if set(m) - {"map", "count"}:
            raise VectorFileError(p, kp, "`count` stands alone (no key, entry or absent)")
        return
    kschema, req, eschema = map_schema(p, m["map"], f"{kp}.map")
    record(p, m.get("key"), f"{kp}.key", kschema, req)
    if "entry" in m:
        record(p, m["entry"], f"{kp}.entry", eschema, matchers=True)


def _check_xfer(p: str, v: Any, kp: str) -> None:
    try:
        xfer_value(v)
    except (KeyError, TypeError, ValueError):
        raise VectorFileError(p, kp, f"unknown XFER flags {v!r} (an int, or names from "
                              f"{', '.join(XFER_FLAGS)} joined by '|')") from None


def _check_expect(p: str, exp: Any, kp: str) -> None:
    record(p, exp, kp, dict.fromkeys(_EXPECT, "any"))
    names = [*Verdict.__members__, *XdpVerdict.__members__]
    if "verdict" in exp and exp["verdict"] not in names:
        raise VectorFileError(p, f"{kp}.verdict", f"unknown {exp['verdict']!r} (one of "
                              f"{', '.join(names)})")
    if "xfer" in exp:
        _check_xfer(p, exp["xfer"], f"{kp}.xfer")
    if exp.get("drop_reason") is not None:
        try:
            DropReason.parse(exp["drop_reason"])
        except (KeyError, ValueError):
            raise VectorFileError(p, f"{kp}.drop_reason",
                                  f"unknown {exp['drop_reason']!r}") from None
    if "target" in exp:
        check(p, exp["target"], f"{kp}.target", "str")
    if "hex" in exp:
        try:
            check_spec({"hex": exp["hex"]})
        except SpecError as e:
            raise VectorFileError(p, f"{kp}.hex", str(e)) from None
    fields = exp.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise VectorFileError(p, f"{kp}.fields", "must be a mapping of field: value")
    for f in fields:
        if f not in FIELD_NAMES:
            raise VectorFileError(p, f"{kp}.fields.{f}", "unknown packet field (see "
                                  "datapath.spec.FIELD_NAMES)")
    maps = exp.get("maps") or []
    if not isinstance(maps, list):
        raise VectorFileError(p, f"{kp}.maps", "must be a list")
    for j, m in enumerate(maps):
        _check_map_expect(p, m, f"{kp}.maps[{j}]")


def _check_step(p: str, i: int, st: Any) -> None:
    kp = f"steps[{i}]"
    record(p, st, kp, dict.fromkeys(_STEP, "any"))
    acts = [k for k in ACTIONS if k in st]
    if len(acts) != 1:
        raise VectorFileError(p, kp, f"needs exactly one of {'/'.join(ACTIONS)}")
    if "cilium" in st:
        check_versions(p, st["cilium"], f"{kp}.cilium")
    if "name" in st:
        check(p, st["name"], f"{kp}.name", "str")
    if "advance" in st:
        check(p, st["advance"], f"{kp}.advance", "u32")
    if "gc" in st and st["gc"] is not True:
        raise VectorFileError(p, f"{kp}.gc", f"must be true, got {st['gc']!r}")
    if "backend" in st:
        check(p, st["backend"], f"{kp}.backend", "u32")
    for act in ("delete", "seed"):
        if act in st:
            d = record(p, st[act], f"{kp}.{act}", {"map": "str", "key": "any", "entry": "any"},
                       ("map", "key", "entry") if act == "seed" else ("map", "key"))
            kschema, req, eschema = map_schema(p, d["map"], f"{kp}.{act}.map")
            record(p, d["key"], f"{kp}.{act}.key", kschema, req)
            if act == "seed":
                record(p, d["entry"], f"{kp}.seed.entry", eschema,
                       ("to_addr", "to_port") if d["map"] in _NAT_NAMES else ())
            elif "entry" in d:
                raise VectorFileError(p, f"{kp}.delete.entry", "a delete names a key only")
    if "reprogram" in st:
        check_config(p, st["reprogram"], f"{kp}.reprogram")
    if "xfer" in st:
        if st.get("hook") != "from-netdev":
            raise VectorFileError(p, f"{kp}.xfer", "only a from-netdev step receives XDP's "
                                  "XFER flags")
        _check_xfer(p, st["xfer"], f"{kp}.xfer")
    if "hook" not in st:
        extra = {"packet", "expect", "capture", "backend", "input_hex"} & set(st)
        if extra:
            raise VectorFileError(p, f"{kp}.{sorted(extra)[0]}", "only a hook step takes it")
        return
    if st["hook"] not in HOOKS:
        raise VectorFileError(p, f"{kp}.hook", f"unknown hook {st['hook']!r}")
    if not isinstance(st.get("packet"), dict):
        raise VectorFileError(p, f"{kp}.packet", "missing required mapping")
    try:
        check_spec(st["packet"])
        if "input_hex" in st:
            check_spec({"hex": st["input_hex"]})
    except SpecError as e:
        key = "input_hex" if e.key == "hex" and "input_hex" in st else f"packet.{e.key}"
        raise VectorFileError(p, f"{kp}.{key}", str(e)) from None
    _check_expect(p, st.get("expect") or {}, f"{kp}.expect")
    caps = st.get("capture") or {}
    if not isinstance(caps, Mapping):
        raise VectorFileError(p, f"{kp}.capture", "must be a mapping of name: field")
    for name, field in caps.items():
        if field not in FIELD_NAMES:
            raise VectorFileError(p, f"{kp}.capture.{name}", f"unknown packet field {field!r}")


def check_config(p: str, d: Any, kp: str = "") -> None:
    """What the agent programs: services, backends, endpoints, tunnel endpoints (the top
    level of a file, or a `reprogram` step's mapping)."""
    if kp:
        record(p, d, kp, dict.fromkeys(_REPROGRAM, "any"))
    records(p, d, "services", _SERVICE, ("frontend", "port", "rev_nat_index"), kp)
    records(p, d, "backends", _BACKEND, ("id", "address"), kp)
    records(p, d, "endpoints", _ENDPOINT, ("address",), kp)
    _teps(p, d.get("tunnel_endpoints"), f"{kp}.tunnel_endpoints" if kp else "tunnel_endpoints")


def load_vector_file(path: str | Path) -> dict[str, Any]:
    """Read and check a vector file against its schema (every key path named on error)."""
    p = str(path)
    try:
        doc = safeyaml.load_path(path)
    except safeyaml.DocumentError as e:
        where = e.path or (f"line {e.line}" if e.line else "<file>")
        if e.path and e.line:
            where = f"{e.path} (line {e.line})"
        raise VectorFileError(p, where, e.message) from None
    if not isinstance(doc, dict):
        raise VectorFileError(p, "<root>", "must be a mapping")
    record(p, doc, "<root>", dict.fromkeys(_TOP, "any"))
    if not isinstance(doc.get("source"), str):
        raise VectorFileError(p, "source", "missing required key (cite the Cilium test)")
    if "cilium" in doc:
        check_versions(p, doc["cilium"], "cilium")
    for k in ("description", "reference_only"):
        if k in doc:
            check(p, doc[k], k, "str")
    record(p, doc.get("node") or {}, "node", _NODE)
    check_config(p, doc)
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise VectorFileError(p, "steps", "must be a non-empty list")
    for i, st in enumerate(steps):
        _check_step(p, i, st)
    return doc


def _proto(v: Any) -> int:
    return PROTO_NAMES[v] if isinstance(v, str) else int(v)


def map_key(name: str, d: Mapping[str, Any]
            ) -> CtTuple | RatelimitKey | AffinityKey | FragKey:
    """A checked key mapping as the map's key (CT and SNAT maps share the tuple layout)."""
    if name in FRAG_NAMES:
        return FragKey(ip_bytes(str(d["daddr"])), ip_bytes(str(d["saddr"])), int(d["id"]),
                       _proto(d["proto"]))
    if name in _AFF_NAMES:
        return AffinityKey(ip_bytes(str(d["client_id"])), int(d["rev_nat_id"]),
                           int(d.get("netns_cookie", 0)))
    if name == "cilium_ratelimit":
        return RatelimitKey(int(d["usage"]), int(d["netdev_idx"]))
    return CtTuple(ip_bytes(str(d["daddr"])), ip_bytes(str(d["saddr"])), int(d["dport"]),
                   int(d["sport"]), _proto(d.get("nexthdr", 6)), int(d.get("flags", 0)))


def map_entry(name: str, d: Mapping[str, Any]
              ) -> CtEntry | NatEntry | RatelimitValue | AffinityVal | FragPorts:
    """A checked `seed` entry as the map's value (unnamed fields take their zero value)."""
    if name in FRAG_NAMES:
        return FragPorts(int(d.get("sport", 0)), int(d.get("dport", 0)))
    if name in _AFF_NAMES:
        return AffinityVal(int(d.get("last_used", 0)), int(d.get("backend_id", 0)))
    if name == "cilium_ratelimit":
        return RatelimitValue(int(d.get("last_topup", 0)), int(d.get("tokens", 0)))
    if name in _NAT_NAMES:
        return NatEntry(ip_bytes(str(d["to_addr"])), int(d["to_port"]),
                        int(d.get("created", 0)), bool(d.get("needs_ct", False)))
    f = dict(d)
    f["nat_addr"] = ip_bytes(str(f["nat_addr"])) if f.get("nat_addr") else b""
    return CtEntry(**f)
