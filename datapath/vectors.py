"""Golden-vector runner: YAML node setup + hook steps + expected bytes/fields/map entries."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

import safeyaml
from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, Verdict
from datapath.errors import ConfigError, VectorFileError
from datapath.host import HOOKS, HookResult, make_node
from datapath.maps import CtTuple
from datapath.packet import PROTO_NAMES, ip_bytes, ip_text
from datapath.spec import FIELD_NAMES, SpecError, build_packet, check_spec, describe


class MapsView(Protocol):
    """Maps by Cilium name (NodeMaps, or a real datapath's snapshot view)."""

    def by_name(self, name: str) -> Any: ...


class Datapath(Protocol):
    """What the runner needs from a datapath: run hooks and expose readable maps."""

    @property
    def maps(self) -> MapsView: ...

    def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None
            ) -> HookResult: ...

    def advance(self, seconds: int) -> None: ...

    def gc(self) -> int: ...


DatapathFactory = Callable[[NodeConfig, frozenset[str]], Datapath]


@attrs.frozen(slots=True)
class VectorReport:
    """Outcome of one vector file: which steps ran and every field that differed."""

    path: str
    source: str
    steps: int
    failures: tuple[str, ...]
    skipped: str = ""  # why this datapath/version is not covered by the file
    diverged: tuple[str, ...] = ()  # steps that still diverge as the file documents

    @property
    def ok(self) -> bool:
        """True when every expectation held (or the file does not cover this version)."""
        return not self.failures

    def format(self) -> str:
        """Human-readable summary with a field-by-field diff."""
        if self.skipped:
            return f"SKIP {self.path} ({self.skipped})"
        head = f"{'PASS' if self.ok else 'FAIL'} {self.path} ({self.steps} steps; {self.source})"
        return "\n".join([head, *(f"  {f}" for f in self.failures),
                          *(f"  DIVERGES {d}" for d in self.diverged)])


def _minor(version: str) -> str:
    """'1.20.0-dev' -> '1.20'."""
    return ".".join(version.split(".")[:2])


def covers(doc: Mapping[str, Any], path: str, version: str | None) -> str:
    """Why a vector file does not cover this Cilium version ('' when it does). `cilium:`
    lists the versions whose bytes the file encodes; without it, the reference only."""
    if version is None:
        return ""
    vs = doc.get("cilium")
    if vs is None:
        why = doc.get("reference_only", "the file names no Cilium version (key `cilium`)")
        return f"reference datapath only: {why}"
    if not isinstance(vs, list) or not all(isinstance(v, str) for v in vs):
        raise VectorFileError(path, "cilium", "must be a list of versions like \"1.20\"")
    if _minor(version) not in vs:
        return f"bytes from Cilium {', '.join(vs)}; tree is {version}"
    return ""


def _need(d: Any, key: str, path: str, kp: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise VectorFileError(path, f"{kp}.{key}" if kp else key, "missing required key")
    return d[key]


def _build_config(doc: Mapping[str, Any], path: str) -> NodeConfig:
    node = doc.get("node", {})
    if not isinstance(node, Mapping):
        raise VectorFileError(path, "node", "must be a mapping")
    try:
        services = tuple(
            ServiceConfig(frontend=str(_need(s, "frontend", path, f"services[{i}]")),
                          port=int(_need(s, "port", path, f"services[{i}]")),
                          rev_nat_index=int(_need(s, "rev_nat_index", path, f"services[{i}]")),
                          backends=tuple(int(b) for b in s.get("backends", [])),
                          proto=str(s.get("proto", "tcp")), kind=s.get("kind", "loadbalancer"),
                          ext_traffic_local=bool(s.get("ext_traffic_local", False)),
                          fwd_mode=s.get("fwd_mode"),
                          source_ranges=tuple(s.get("source_ranges", [])),
                          source_range_deny=bool(s.get("source_range_deny", False)),
                          routable=s.get("routable"))
            for i, s in enumerate(doc.get("services", []) or []))
        backends = tuple(
            BackendConfig(id=int(_need(b, "id", path, f"backends[{i}]")),
                          address=str(_need(b, "address", path, f"backends[{i}]")),
                          port=int(b.get("port", 0)), proto=str(b.get("proto", "tcp")),
                          state=b.get("state", "active"))
            for i, b in enumerate(doc.get("backends", []) or []))
        endpoints = tuple(
            EndpointConfig(address=str(_need(e, "address", path, f"endpoints[{i}]")),
                           ifindex=int(e.get("ifindex", 25)), ep_id=int(e.get("ep_id", 127)))
            for i, e in enumerate(doc.get("endpoints", []) or []))
        teps = tuple((str(k), str(v)) for k, v in (doc.get("tunnel_endpoints") or {}).items())
        for s in services:
            for a in (s.frontend,):
                ip_bytes(a)
            if s.proto not in PROTO_NAMES:
                raise VectorFileError(path, "services.proto", f"unknown protocol {s.proto!r}")
        for b in backends:
            ip_bytes(b.address)
        cfg = NodeConfig(
            name=str(node.get("name", "node")), ipv4=node.get("ipv4", "10.0.10.1"),
            ipv6=node.get("ipv6"), mode=node.get("mode", "snat"),
            dispatch=node.get("dispatch", "opt"),
            host_routing=node.get("host_routing", "bpf"), services=services,
            backends=backends, endpoints=endpoints, tunnel_endpoints=teps,
            nat_min=int(node.get("nat_min", 32768)), nat_max=int(node.get("nat_max", 65535)),
            ct_capacity=int(node.get("ct_capacity", 65536)),
            nat_capacity=int(node.get("nat_capacity", 65536)),
            seed=int(node.get("seed", 0)), selection=node.get("selection", "random"),
            faults=frozenset(node.get("faults", []) or []),
            tunnel=bool(node.get("tunnel", False)), router_ipv4=node.get("router_ipv4"),
            router_ipv6=node.get("router_ipv6"),
            no_backend_response=node.get("no_backend_response", "drop"))
    except (TypeError, ValueError, AttributeError, OSError) as e:
        if isinstance(e, VectorFileError):
            raise
        raise VectorFileError(path, "node/services/backends", str(e)) from None
    if cfg.mode not in ("snat", "dsr", "hybrid"):
        raise VectorFileError(path, "node.mode", f"unknown mode {cfg.mode!r}")
    if cfg.dispatch not in ("opt", "geneve"):
        raise VectorFileError(path, "node.dispatch", f"unknown dispatch {cfg.dispatch!r}")
    return cfg


# `cilium` (versions the bytes come from), `reference_only` (why none) and a step's
# `diverges` are checked where they are read (covers, _divergence).
_TOP = {"source", "description", "node", "services", "backends", "endpoints",
        "tunnel_endpoints", "steps", "cilium", "reference_only"}
_NODE = {"name": "str", "ipv4": "ip", "ipv6": "ip", "mode": ("snat", "dsr", "hybrid"),
         "dispatch": ("opt", "geneve"), "host_routing": ("bpf", "legacy"),
         "nat_min": "port", "nat_max": "port", "ct_capacity": "size", "nat_capacity": "size",
         "seed": "u64", "selection": ("random", "first"), "faults": "strs", "tunnel": "bool",
         "router_ipv4": "ip", "router_ipv6": "ip", "no_backend_response": ("drop", "reject")}
_SERVICE = {"frontend": "ip", "port": "port", "rev_nat_index": "u16", "backends": "ints",
            "proto": "str", "kind": "str", "ext_traffic_local": "bool", "fwd_mode": "any",
            "source_ranges": "strs", "source_range_deny": "bool", "routable": "any"}
_BACKEND = {"id": "u32", "address": "ip", "port": "port", "proto": "str", "state": "str"}
_ENDPOINT = {"address": "ip", "ifindex": "u32", "ep_id": "u16"}
_STEP = {"name", "hook", "packet", "expect", "capture", "backend", "input_hex", "advance",
         "gc", "delete", "diverges"}
_EXPECT = {"verdict", "drop_reason", "target", "hex", "fields", "maps"}
_MAP_EXPECT = {"map", "key", "entry", "absent", "count"}
_CT_KEY = {"saddr": "ip", "daddr": "ip", "sport": "port", "dport": "port", "nexthdr": "any",
           "flags": "u16"}
_BOUNDS = {"port": 0xFFFF, "u16": 0xFFFF, "u32": 2**32 - 1, "u64": 2**64 - 1, "size": 2**26}


def _check(p: str, value: Any, kp: str, kind: Any) -> None:
    """One value of the schema; `$name` strings are captures filled in later."""
    if kind == "any" or (isinstance(value, str) and value.startswith("$")):
        return
    ok = True
    if isinstance(kind, tuple):
        ok = value in kind
        if not ok:
            raise VectorFileError(p, kp, f"{value!r} is not one of {', '.join(kind)}")
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "ip":
        ok = isinstance(value, str)
        if ok:
            try:
                ip_bytes(value)
            except (ValueError, OSError):
                raise VectorFileError(p, kp, f"{value!r} is not an IP address") from None
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


def _record(p: str, d: Any, kp: str, schema: Mapping[str, Any],
            required: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise VectorFileError(p, kp, f"must be a mapping, got {type(d).__name__}")
    for k, v in d.items():
        if k not in schema:
            raise VectorFileError(p, f"{kp}.{k}", "unknown key (allowed: "
                                  f"{', '.join(sorted(schema))})")
        _check(p, v, f"{kp}.{k}", schema[k])
    for k in required:
        if k not in d:
            raise VectorFileError(p, f"{kp}.{k}", "missing required key")
    return d


def _records(p: str, doc: Mapping[str, Any], key: str, schema: Mapping[str, Any],
             required: tuple[str, ...]) -> None:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise VectorFileError(p, key, "must be a list")
    for i, item in enumerate(items):
        _record(p, item, f"{key}[{i}]", schema, required)


def _check_expect(p: str, exp: Any, kp: str) -> None:
    if not isinstance(exp, Mapping):
        raise VectorFileError(p, kp, "must be a mapping")
    for k in exp:
        if k not in _EXPECT:
            raise VectorFileError(p, f"{kp}.{k}", "unknown key (allowed: "
                                  f"{', '.join(sorted(_EXPECT))})")
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
        _record(p, m, f"{kp}.maps[{j}]", dict.fromkeys(_MAP_EXPECT, "any"), ("map",))
        if "key" in m:
            _record(p, m["key"], f"{kp}.maps[{j}].key", _CT_KEY,
                    ("saddr", "daddr", "sport", "dport"))


def _check_step(p: str, i: int, st: Any) -> None:
    kp = f"steps[{i}]"
    if not isinstance(st, dict):
        raise VectorFileError(p, kp, "must be a mapping")
    for k in st:
        if k not in _STEP:
            raise VectorFileError(p, f"{kp}.{k}", f"unknown key (allowed: "
                                  f"{', '.join(sorted(_STEP))})")
    acts = [k for k in ("hook", "advance", "gc", "delete") if k in st]
    if len(acts) != 1:
        raise VectorFileError(p, kp, "needs exactly one of hook/advance/gc/delete")
    if "advance" in st:
        _check(p, st["advance"], f"{kp}.advance", "u32")
    if "backend" in st:
        _check(p, st["backend"], f"{kp}.backend", "u32")
    if "delete" in st:
        d = _record(p, st["delete"], f"{kp}.delete", {"map": "str", "key": "any"},
                    ("map", "key"))
        _record(p, d["key"], f"{kp}.delete.key", _CT_KEY, ("saddr", "daddr", "sport",
                                                            "dport"))
    if "hook" not in st:
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
    for k in doc:
        if k not in _TOP:
            raise VectorFileError(p, str(k), f"unknown key (allowed: {', '.join(sorted(_TOP))})")
    if not isinstance(doc.get("source"), str):
        raise VectorFileError(p, "source", "missing required key (cite the Cilium test)")
    _record(p, doc.get("node") or {}, "node", _NODE)
    _records(p, doc, "services", _SERVICE, ("frontend", "port", "rev_nat_index"))
    _records(p, doc, "backends", _BACKEND, ("id", "address"))
    _records(p, doc, "endpoints", _ENDPOINT, ("address",))
    teps = doc.get("tunnel_endpoints") or {}
    if not isinstance(teps, Mapping):
        raise VectorFileError(p, "tunnel_endpoints", "must be a mapping of address: node IP")
    for k, v in teps.items():
        _check(p, k, f"tunnel_endpoints.{k}", "ip")
        _check(p, v, f"tunnel_endpoints.{k}", "ip")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise VectorFileError(p, "steps", "must be a non-empty list")
    for i, st in enumerate(steps):
        _check_step(p, i, st)
    return doc


def _subst(v: Any, caps: Mapping[str, Any]) -> Any:
    if isinstance(v, str) and v.startswith("$"):
        return caps.get(v[1:], v)
    if isinstance(v, dict):
        return {k: _subst(x, caps) for k, x in v.items()}
    if isinstance(v, list):
        return [_subst(x, caps) for x in v]
    return v


def _match(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and "range" in expected:
        lo, hi = expected["range"]
        return isinstance(actual, int) and lo <= actual <= hi
    if isinstance(expected, dict) and "not" in expected:
        return not _match(expected["not"], actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(expected) == bool(actual)
    return bool(expected == actual)


def _ct_key(d: Mapping[str, Any]) -> CtTuple:
    proto = d.get("nexthdr", 6)
    return CtTuple(ip_bytes(str(d["daddr"])), ip_bytes(str(d["saddr"])), int(d["dport"]),
                   int(d["sport"]), PROTO_NAMES[proto] if isinstance(proto, str) else int(proto),
                   int(d.get("flags", 0)))


def _maps(dp: Datapath) -> MapsView:
    """The datapath's maps, which map expectations and deletes read; a datapath without
    them cannot run such a vector file (bad --datapath, not a failed vector)."""
    maps = getattr(dp, "maps", None)
    if maps is None or not callable(getattr(maps, "by_name", None)):
        raise VectorFileError("--datapath", type(dp).__name__, "has no `maps` with "
                              "by_name(), which this vector file's map steps read")
    m: MapsView = maps
    return m


def _check_maps(dp: Datapath, exp: list[Any], caps: Mapping[str, Any], where: str, path: str
                ) -> list[str]:
    fails = []
    for j, e in enumerate(exp):
        e = _subst(e, caps)
        kp = f"{where}.maps[{j}]"
        try:
            m = _maps(dp).by_name(str(_need(e, "map", path, kp)))
        except KeyError:
            raise VectorFileError(path, f"{kp}.map", f"unknown map {e['map']!r}") from None
        if "count" in e:
            if len(m) != int(e["count"]):
                fails.append(f"{kp} {m.name}: count expected {e['count']} got {len(m)}")
            continue
        try:
            key = _ct_key(_need(e, "key", path, kp))
        except (KeyError, ValueError, OSError) as err:
            raise VectorFileError(path, f"{kp}.key", f"bad key: {err}") from None
        val = m._d.get(key)
        if e.get("absent"):
            if val is not None:
                fails.append(f"{kp} {m.name}: expected no entry for {e['key']}")
            continue
        if val is None:
            fails.append(f"{kp} {m.name}: missing entry {e['key']}")
            continue
        vd = attrs.asdict(val, recurse=False)
        for f, want in (e.get("entry") or {}).items():
            got = vd.get(f)
            if isinstance(got, bytes):
                got = ip_text(got) if got else ""
            if f not in vd or not _match(want, got):
                fails.append(f"{kp} {m.name}[{e['key']}].{f}: expected {want!r} got {got!r}")
    return fails


def _check_result(res: HookResult, exp: Mapping[str, Any], where: str, path: str
                  ) -> list[str]:
    fails = []
    if "verdict" in exp:
        try:
            want_v = Verdict[str(exp["verdict"])]
        except KeyError:
            raise VectorFileError(path, f"{where}.verdict", f"unknown {exp['verdict']!r}") from None
        if res.verdict != want_v:
            fails.append(f"{where}.verdict: expected {want_v.name} got {res.verdict.name}"
                         f" (drop reason {res.drop_reason.name if res.drop_reason else 'none'})")
    if "drop_reason" in exp:
        want = exp["drop_reason"]
        try:
            want_r = None if want is None else DropReason.parse(want)
        except (KeyError, ValueError):
            raise VectorFileError(path, f"{where}.drop_reason", f"unknown {want!r}") from None
        if res.drop_reason != want_r:
            got = res.drop_reason.name if res.drop_reason else "none"
            fails.append(f"{where}.drop_reason: expected {want or 'none'} got {got}")
    if "target" in exp and res.target != exp["target"]:
        fails.append(f"{where}.target: expected {exp['target']!r} got {res.target!r}")
    if "hex" in exp:
        want_b = bytes.fromhex(str(exp["hex"]).replace(" ", ""))
        if res.packet != want_b:
            fails.extend(_byte_diff(want_b, res.packet, where))
    fields = exp.get("fields") or {}
    if fields:
        got_f = describe(res.packet)
        for k, want in fields.items():
            if k not in got_f or not _match(want, got_f[k]):
                fails.append(f"{where}.fields.{k}: expected {want!r} got {got_f.get(k)!r}")
    return fails


def _byte_diff(want: bytes, got: bytes | bytearray, where: str) -> list[str]:
    out = [f"{where}.hex: {len(want)} bytes expected, {len(got)} bytes got"]
    dw, dg = describe(want), describe(got)
    for k in sorted(set(dw) | set(dg)):
        if dw.get(k) != dg.get(k):
            out.append(f"  field {k}: expected {dw.get(k)!r} got {dg.get(k)!r}")
    for i in range(min(len(want), len(got))):
        if want[i] != got[i]:
            out.append(f"  first differing byte at offset {i}: {want[i]:02x} != {got[i]:02x}")
            break
    return out


def run_vector_file(path: str | Path, datapath_factory: DatapathFactory | None = None,
                    faults: frozenset[str] = frozenset(), version: str | None = None
                    ) -> VectorReport:
    """Run one vector file against a fresh datapath; malformed files raise VectorFileError.
    `version`: the Cilium tree's VERSION when the datapath is Cilium's own code."""
    p = str(path)
    doc = load_vector_file(path)
    why = covers(doc, p, version)
    if why:
        return VectorReport(p, str(doc["source"]), len(doc["steps"]), (), skipped=why)
    diverged: list[str] = []
    try:
        cfg = _build_config(doc, p)
        factory: DatapathFactory = datapath_factory or make_node
        dp = factory(cfg, frozenset(faults))
    except ConfigError as e:
        raise VectorFileError(p, "services", str(e)) from None
    caps: dict[str, Any] = {}
    fails: list[str] = []
    for i, st in enumerate(doc["steps"]):
        where = f"steps[{i}]" + (f"({st['name']})" if "name" in st else "")
        if "advance" in st:
            dp.advance(int(st["advance"]))
            continue
        if "gc" in st:
            dp.gc()
            continue
        if "delete" in st:
            d = _subst(st["delete"], caps)
            try:
                m = _maps(dp).by_name(str(_need(d, "map", p, f"steps[{i}].delete")))
                m.delete(_ct_key(_need(d, "key", p, f"steps[{i}].delete")))
            except (KeyError, ValueError, OSError) as e:
                raise VectorFileError(p, f"steps[{i}].delete", f"bad map/key: {e}") from None
            continue
        try:
            pkt = build_packet(_subst(st["packet"], caps))
        except SpecError as e:
            raise VectorFileError(p, f"steps[{i}].packet.{e.key}", str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise VectorFileError(p, f"steps[{i}].packet", f"bad packet spec: {e}") from None
        if "input_hex" in st and pkt.hex() != str(st["input_hex"]).replace(" ", ""):
            fails.append(f"{where}.input_hex: packet spec builds {pkt.hex()}")
        backend = st.get("backend")
        res = dp.run(st["hook"], pkt, int(backend) if backend is not None else None)
        exp = st.get("expect") or {}
        if not isinstance(exp, dict):
            raise VectorFileError(p, f"steps[{i}].expect", "must be a mapping")
        step_fails = _check_result(res, _subst(exp, caps), where, p)
        if "maps" in exp:
            step_fails += _check_maps(dp, list(exp["maps"]), caps, where, p)
        why_div = _divergence(st, version, p, where)
        if why_div and step_fails:
            diverged.append(f"{where}: {why_div}")
        elif why_div:
            fails.append(f"{where}: documented divergence no longer happens: {why_div}")
        else:
            fails.extend(step_fails)
        for name, field in (st.get("capture") or {}).items():
            caps[str(name)] = describe(res.packet).get(str(field))
    return VectorReport(p, str(doc["source"]), len(doc["steps"]), tuple(fails),
                        diverged=tuple(diverged))


def _divergence(st: Mapping[str, Any], version: str | None, path: str, where: str) -> str:
    """A step's documented disagreement with this Cilium version (`diverges: {"1.20": why}`),
    citing the Cilium source line; the step must still disagree, or the file is stale."""
    div = st.get("diverges")
    if div is None or version is None:
        return ""
    if not isinstance(div, Mapping):
        raise VectorFileError(path, f"{where}.diverges", "must map versions to reasons")
    return str(div.get(_minor(version), ""))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone runner: python -m datapath.vectors FILE..."""
    args = sys.argv[1:] if argv is None else argv
    rc = 0
    for f in args:
        rep = run_vector_file(f)
        print(rep.format())
        rc |= 0 if rep.ok else 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
