"""Golden-vector runner: YAML node setup + hook steps + expected bytes/fields/map entries."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from datapath.config import BackendConfig, EndpointConfig, NodeConfig, ServiceConfig
from datapath.drop import DropReason, verdict_named, xfer_value
from datapath.errors import ConfigError, VectorFileError
from datapath.host import HookResult, make_node
from datapath.packet import ip_text
from datapath.spec import SpecError, build_packet, describe
from datapath.vecschema import load_vector_file, map_entry, map_key

__all__ = ["Datapath", "DatapathFactory", "VectorReport", "covers", "load_vector_file",
           "run_vector_file"]


class MapsView(Protocol):
    """Maps by Cilium name (NodeMaps, or a real datapath's snapshot view)."""

    def by_name(self, name: str) -> Any: ...


class Datapath(Protocol):
    """What the runner needs from a datapath: run hooks and expose readable maps."""

    @property
    def maps(self) -> MapsView: ...

    def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None,
            xfer: int = 0) -> HookResult: ...

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


# The releases whose behaviour the reference datapath implements (NodeConfig.version).
REFERENCE_VERSIONS = ("1.18", "1.20")


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


def _programmed(d: Mapping[str, Any]) -> dict[str, Any]:
    """Services, backends, endpoints and tunnel endpoints of a checked mapping, as NodeConfig
    fields; a key the mapping leaves out is not in the result (a `reprogram` step keeps
    the node's current value for it)."""
    out: dict[str, Any] = {}
    if "services" in d:
        out["services"] = tuple(
            ServiceConfig(frontend=str(s["frontend"]), port=int(s["port"]),
                          rev_nat_index=int(s["rev_nat_index"]),
                          backends=tuple(int(b) for b in s.get("backends", [])),
                          proto=str(s.get("proto", "tcp")), kind=s.get("kind", "loadbalancer"),
                          ext_traffic_local=bool(s.get("ext_traffic_local", False)),
                          fwd_mode=s.get("fwd_mode"),
                          source_ranges=tuple(s.get("source_ranges", [])),
                          source_range_deny=bool(s.get("source_range_deny", False)),
                          routable=s.get("routable"),
                          affinity_timeout=int(s.get("affinity_timeout", 0)),
                          maglev=tuple(int(b) for b in s.get("maglev", [])))
            for s in d.get("services") or [])
    if "backends" in d:
        out["backends"] = tuple(
            BackendConfig(id=int(b["id"]), address=str(b["address"]), port=int(b.get("port", 0)),
                          proto=str(b.get("proto", "tcp")), state=b.get("state", "active"))
            for b in d.get("backends") or [])
    if "endpoints" in d:
        out["endpoints"] = tuple(
            EndpointConfig(address=str(e["address"]), ifindex=int(e.get("ifindex", 25)),
                           ep_id=int(e.get("ep_id", 127)))
            for e in d.get("endpoints") or [])
    if "tunnel_endpoints" in d:
        out["tunnel_endpoints"] = tuple(
            (str(k), str(v)) for k, v in (d.get("tunnel_endpoints") or {}).items())
    return out


def _build_config(doc: Mapping[str, Any], path: str) -> NodeConfig:
    node = doc.get("node") or {}
    try:
        cfg = NodeConfig(
            name=str(node.get("name", "node")), ipv4=node.get("ipv4", "10.0.10.1"),
            ipv6=node.get("ipv6"), mode=node.get("mode", "snat"),
            dispatch=node.get("dispatch", "opt"),
            host_routing=node.get("host_routing", "bpf"),
            nat_min=int(node.get("nat_min", 32768)), nat_max=int(node.get("nat_max", 65535)),
            ct_capacity=int(node.get("ct_capacity", 65536)),
            nat_capacity=int(node.get("nat_capacity", 65536)),
            seed=int(node.get("seed", 0)), selection=node.get("selection", "random"),
            faults=frozenset(node.get("faults", []) or []),
            tunnel=bool(node.get("tunnel", False)), router_ipv4=node.get("router_ipv4"),
            router_ipv6=node.get("router_ipv6"),
            no_backend_response=node.get("no_backend_response", "drop"),
            masquerade=bool(node.get("masquerade", False)),
            masquerade_ipv4=node.get("masquerade_ipv4"),
            masquerade_ipv6=node.get("masquerade_ipv6"),
            snat_exclusion_cidrs=tuple(node.get("snat_exclusion_cidrs", []) or []),
            no_service_endpoints_routable=bool(
                node.get("no_service_endpoints_routable", True)),
            ct_accounting=bool(node.get("ct_accounting", False)),
            pmtu_discovery=bool(node.get("pmtu_discovery", False)),
            mtu=int(node.get("mtu", 1500)),
            fragment_tracking=bool(node.get("fragment_tracking", False)),
            maglev_table_size=int(node.get("maglev_table_size", 16381)),
            hash_seed4=int(node.get("hash_seed4", 0)), hash_seed6=int(node.get("hash_seed6", 0)),
            ipip_termination=bool(node.get("ipip_termination", False)))
        return attrs.evolve(cfg, **_lxc(node), **_programmed(doc))
    except (TypeError, ValueError, AttributeError, OSError) as e:
        raise VectorFileError(path, "node/services/backends", str(e)) from None


def _lxc(node: Mapping[str, Any]) -> dict[str, Any]:
    """bpf_lxc's switches (datapath/lxc.py) and a reference-only file's release."""
    keys = ("socket_lb", "nodeport_min", "service_loopback_ipv4", "service_loopback_ipv6",
            "version")
    return {k: node[k] for k in keys if k in node}


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


def _maps(dp: Datapath) -> MapsView:
    """The datapath's maps, which map expectations and deletes read; a datapath without
    them cannot run such a vector file (bad --datapath, not a failed vector)."""
    maps = getattr(dp, "maps", None)
    if maps is None or not callable(getattr(maps, "by_name", None)):
        raise VectorFileError("--datapath", type(dp).__name__, "has no `maps` with "
                              "by_name(), which this vector file's map steps read")
    m: MapsView = maps
    return m


def _lacks(doc: Mapping[str, Any], dp: Datapath, version: str | None) -> str:
    """What the file's steps (those for this version) need that the datapath under test
    does not offer: a map, writes to a map (`seed`), `reprogram` ('' when nothing)."""
    maps: set[str] = set()
    written: set[str] = set()
    again = False
    for st in doc["steps"]:
        if version is not None and "cilium" in st and _minor(version) not in st["cilium"]:
            continue
        maps.update(str(m["map"]) for m in (st.get("expect") or {}).get("maps") or [])
        for act in ("delete", "seed"):
            if act in st:
                maps.add(str(st[act]["map"]))
        if "seed" in st:
            written.add(str(st["seed"]["map"]))
        again = again or "reprogram" in st
    missing = []
    if again and not callable(getattr(dp, "reprogram", None)):
        missing.append("reprogram()")
    for name in sorted(maps):
        try:
            view = _maps(dp).by_name(name)
        except KeyError:
            missing.append(f"map {name}")
            continue
        if name in written and not callable(getattr(view, "update", None)):
            missing.append(f"writes to {name}")
    return f"the datapath under test has no {', '.join(missing)}" if missing else ""


def _check_maps(dp: Datapath, exp: list[Any], caps: Mapping[str, Any], where: str, path: str
                ) -> list[str]:
    fails = []
    for j, e in enumerate(exp):
        e = _subst(e, caps)
        kp = f"{where}.maps[{j}]"
        name = str(e["map"])
        try:
            m = _maps(dp).by_name(name)
        except KeyError:
            raise VectorFileError(path, f"{kp}.map", f"unknown map {name!r}") from None
        if "count" in e:
            if len(m) != int(e["count"]):
                fails.append(f"{kp} {m.name}: count expected {e['count']} got {len(m)}")
            continue
        try:
            key = map_key(name, e["key"])
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


def _table_step(dp: Datapath, act: str, d: Mapping[str, Any], path: str, kp: str) -> None:
    """`delete` (an LRU eviction, a lost entry) or `seed` (an entry a test's setup writes)."""
    name = str(d["map"])
    try:
        m = _maps(dp).by_name(name)
        key = map_key(name, d["key"])
        if act == "delete":
            m.delete(key)
            return
        value = map_entry(name, d["entry"])
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise VectorFileError(path, kp, f"bad map/key/entry: {e}") from None
    if not callable(getattr(m, "update", None)) or not m.update(key, value):
        raise VectorFileError(path, kp, f"the datapath's {name} took no entry (full, or "
                              "its maps cannot be written)")


def _reprogram(dp: Datapath, cfg: NodeConfig, d: Mapping[str, Any], path: str, kp: str
               ) -> NodeConfig:
    """The agent rewrites the LB/endpoint/ipcache maps; CT and NAT state stay."""
    fn = getattr(dp, "reprogram", None)
    if not callable(fn):
        raise VectorFileError("--datapath", type(dp).__name__, "has no reprogram(), which "
                              "this vector file's reprogram steps need")
    try:
        new = attrs.evolve(cfg, **_programmed(d))
        fn(new)
    except (TypeError, ValueError, AttributeError, OSError, ConfigError) as e:
        raise VectorFileError(path, kp, str(e)) from None
    return new


def _check_result(res: HookResult, exp: Mapping[str, Any], where: str, path: str
                  ) -> list[str]:
    fails = []
    if "verdict" in exp:
        try:
            want_v = verdict_named(str(exp["verdict"]))
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
    if "xfer" in exp and res.xfer != xfer_value(exp["xfer"]):
        fails.append(f"{where}.xfer: expected {exp['xfer']!r} got {res.xfer:#x}")
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
    `version`: the Cilium tree's VERSION when the datapath is Cilium's own code. The
    reference datapath (no factory, no version) runs the file once per Cilium version it
    lists, with that version's profile and steps, so per-version steps are checked too."""
    p = str(path)
    doc = load_vector_file(path)
    listed = doc.get("cilium")
    if datapath_factory is None and version is None and isinstance(listed, list):
        profiles = [str(v) for v in listed if str(v) in REFERENCE_VERSIONS]
        if profiles:
            reps = [_run_doc(doc, p, None, faults, None, v) for v in profiles]
            return VectorReport(p, str(doc["source"]), sum(r.steps for r in reps),
                                tuple(f"[{v}] {f}" for v, r in zip(profiles, reps, strict=True)
                                      for f in r.failures))
    return _run_doc(doc, p, datapath_factory, faults, version)


def _run_doc(doc: Mapping[str, Any], p: str, datapath_factory: DatapathFactory | None,
             faults: frozenset[str], version: str | None, profile: str | None = None
             ) -> VectorReport:
    """One run of a loaded file against a tree of `version`, or (`profile`) the reference
    datapath with that release's behaviour, running that release's steps."""
    why = covers(doc, p, version)
    if why:
        return VectorReport(p, str(doc["source"]), len(doc["steps"]), (), skipped=why)
    diverged: list[str] = []
    try:
        cfg = _build_config(doc, p)
        if profile == "1.18":
            cfg = attrs.evolve(cfg, version="1.18")
        elif profile == "1.20":
            cfg = attrs.evolve(cfg, version="1.20")
        factory: DatapathFactory = datapath_factory or make_node
        dp = factory(cfg, frozenset(faults))
    except ConfigError as e:
        raise VectorFileError(p, "services", str(e)) from None
    only = version if version is not None else profile  # whose steps run
    why = _lacks(doc, dp, only)
    if why:
        return VectorReport(p, str(doc["source"]), len(doc["steps"]), (), skipped=why)
    caps: dict[str, Any] = {}
    fails: list[str] = []
    skipped = 0
    for i, st in enumerate(doc["steps"]):
        where = f"steps[{i}]" + (f"({st['name']})" if "name" in st else "")
        if only is not None and "cilium" in st and _minor(only) not in st["cilium"]:
            skipped += 1  # the step's bytes come from other Cilium versions
            continue
        if "advance" in st:
            dp.advance(int(st["advance"]))
            continue
        if "gc" in st:
            dp.gc()
            continue
        if "reprogram" in st:
            cfg = _reprogram(dp, cfg, _subst(st["reprogram"], caps), p, f"steps[{i}].reprogram")
            continue
        act = "delete" if "delete" in st else "seed" if "seed" in st else ""
        if act:
            _table_step(dp, act, _subst(st[act], caps), p, f"steps[{i}].{act}")
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
        bid = int(backend) if backend is not None else None
        if "xfer" in st:  # the XFER flags XDP handed over (only asked of datapaths then)
            res = dp.run(st["hook"], pkt, bid, xfer=xfer_value(_subst(st["xfer"], caps)))
        else:
            res = dp.run(st["hook"], pkt, bid)
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
    return VectorReport(p, str(doc["source"]), len(doc["steps"]) - skipped, tuple(fails),
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
