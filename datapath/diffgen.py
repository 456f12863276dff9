"""Generated programs for differential testing, the Hypothesis driver, and the fault table.

A program is a scenario document in model.scenario's YAML format, so a shrunk failure is
printed as a file `nodeport trace` can load.  Generated: 1-3 nodes, 1-3 pods, 1-2 services
(NodePort / LoadBalancer / ExternalIP, TCP / UDP, eTP Cluster / Local, no or several
backends, backends shared between services, loadBalancerSourceRanges), 1-6 flows (source
ports in and below the NAT range and reused across flows, the same connection sent
again, 1-4 packets, FIN close, idle time with CT GC, endpoint changes before a flow: scale
up, pod deletion, termination with drain, replacement), in snat / dsr / hybrid, opt /
geneve dispatch, native / tunnel routing, IPv4 / IPv6, reject / drop for backend-less
services; Cilium version 1.20 (the release the reference datapath implements: DSR
frontend in the CT entry, pure-SYN reopen), or the release of the datapath under test when
its factory says (`cilium_version`, e.g. a 1.18 tree: the model then follows 1.18).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from datapath.adapter import DatapathFactory, check_datapath
from datapath.config import NodeConfig
from datapath.difftest import Counters, DiffRun, Divergence
from model.scenario import parse

ADDR = {
    "ipv4": {"node": "192.168.2.{}", "pod": "10.0.{}.{}", "client": "203.0.113.{}",
             "vip": "172.16.10.{}", "ext": "198.51.100.{}", "range_in": "203.0.113.0/24",
             "range_out": "192.0.2.0/24", "cluster": "10.96.0.{}"},
    "ipv6": {"node": "2001:db8:2::{}", "pod": "2001:db8:10:{}::{}", "client": "2001:db8:ff00::{}",
             "vip": "2001:db8:16:10::{}", "ext": "2001:db8:51:100::{}",
             "range_in": "2001:db8:ff00::/64", "range_out": "2001:db8:eeee::/64",
             "cluster": "2001:db8:96::{}"},
}
SOURCE_PORTS = (40000, 40001, 33000, 1024, 5000, 65535)
IDLE = (0, 0, 0, 0, 5, 61, 9000)


# (family, mode, dispatch, routing): every configuration the agent accepts for v1.20.
COMBOS: tuple[tuple[str, str, str, str], ...] = tuple(
    (fam, mode, disp, routing)
    for fam in ("ipv4", "ipv6")
    for mode, disp, routing in (("snat", "opt", "native"), ("snat", "geneve", "tunnel"),
                                ("dsr", "opt", "native"), ("dsr", "geneve", "native"),
                                ("dsr", "geneve", "tunnel"), ("hybrid", "opt", "native"),
                                ("hybrid", "geneve", "native"), ("hybrid", "geneve", "tunnel")))


VERSIONS = ("1.18", "1.20")  # releases a program may say; the reference datapath is 1.20


def combos(version: str = "1.20") -> tuple[tuple[str, str, str, str], ...]:
    """The configurations a release can express: v1.18 has no IPv6 tunnel endpoints
    (remote_endpoint_info.tunnel_endpoint is a __u32, bpf/lib/common.h:360), and the
    generated IPv6 clusters have IPv6 nodes, so its campaign is the IPv4 configurations."""
    if version == "1.18":
        return tuple(c for c in COMBOS if c[0] == "ipv4")
    return COMBOS


def program_version(factory: object) -> str:
    """The release the programs say: the datapath's (`cilium_version`, as a tree's VERSION
    such as 1.18.0-dev) when the model has that profile, else 1.20."""
    given_version = str(getattr(factory, "cilium_version", "") or "")
    short = ".".join(given_version.split(".")[:2])
    return short if short in VERSIONS else "1.20"


@st.composite
def programs(draw: Callable[..., Any], combo: tuple[str, str, str, str] | None = None,
             version: str = "1.20") -> dict[str, Any]:
    """One scenario document (cluster + services + flows) in the scenario YAML format."""
    fam, mode, dispatch, routing = combo if combo is not None else draw(
        st.sampled_from(COMBOS))
    a = ADDR[fam]
    # sampled_from shrinks towards its first element: simplest values come first.
    nodes = [f"node{i + 1}" for i in range(draw(st.sampled_from((1, 2, 3))))]
    pods = []
    for i in range(draw(st.sampled_from((1, 2, 3)))):
        n = draw(st.integers(0, len(nodes) - 1))
        pods.append({"name": f"pod{i}", "node": nodes[n],
                     "ip": a["pod"].format(n + 1, 10 + i)})
    services = []
    for i in range(draw(st.integers(1, 2))):
        stype = draw(st.sampled_from(("NodePort", "LoadBalancer", "ExternalIP")))
        svc: dict[str, Any] = {
            "name": f"svc{i}", "type": stype,
            "protocol": draw(st.sampled_from(("TCP", "UDP"))),
            "port": 80 + i, "targetPort": draw(st.sampled_from((8080, 8081))),
            "externalTrafficPolicy": draw(st.sampled_from(("Cluster", "Cluster", "Local"))),
            "backends": draw(st.lists(st.sampled_from([p["name"] for p in pods]),
                                      unique=True, max_size=len(pods),
                                      min_size=draw(st.sampled_from((0, 1, 1, 1))))),
        }
        if draw(st.integers(0, 4)) == 0:
            svc["clusterIP"] = a["cluster"].format(10 + i)
        if stype in ("NodePort", "LoadBalancer"):
            svc["nodePort"] = 30080 + i
        if stype == "LoadBalancer":
            svc["loadBalancerIP"] = a["vip"].format(2 + i)
            ranges = draw(st.sampled_from(((), ("range_in",), ("range_out",))))
            if ranges:
                svc["loadBalancerSourceRanges"] = [a[r] for r in ranges]
        if stype == "ExternalIP":
            svc["externalIPs"] = [a["ext"].format(20 + i)]
        services.append(svc)
    clients = [{"name": f"client{i}", "ip": a["client"].format(7 + i)} for i in range(2)]
    flows: list[dict[str, Any]] = []
    live = {s["name"]: list(s["backends"]) for s in services}
    names = [p["name"] for p in pods]
    left: set[tuple[str, str]] = set()
    for i in range(draw(st.sampled_from((1, 2, 3, 4, 6)))):
        change = _endpoint_change(draw, services, live, names, left) if flows else None
        if flows and draw(st.integers(0, 2)) == 0:  # the same connection again
            prev = flows[draw(st.integers(0, len(flows) - 1))]
            flow: dict[str, Any] = {
                "name": f"flow{i}", "client": prev["client"],
                "sourcePort": prev["sourcePort"], "to": prev["to"],
                "packets": draw(st.sampled_from((1, 2, 3, 4)))}
            svc = next(x for x in services if x["name"] == prev["svc"])
            via = prev["to"]["via" if "via" in prev["to"] else "node"]
            flow["svc"] = svc["name"]
            if svc["protocol"] == "TCP" and draw(st.booleans()):
                flow["resume"] = True  # continue the connection: ACKs, no SYN
            _finish_flow(draw, flow, svc, via, pods, live, change)
            flows.append(flow)
            continue
        svc = services[draw(st.integers(0, len(services) - 1))]
        via = draw(st.sampled_from(nodes))
        if "clusterIP" in svc and draw(st.integers(0, 2)) == 0:
            to: dict[str, Any] = {"address": svc["clusterIP"], "port": svc["port"], "via": via}
        elif svc["type"] == "NodePort" or (svc["type"] == "LoadBalancer" and draw(
                st.booleans())):
            to = {"node": via, "service": svc["name"]}
        else:
            addr = svc["loadBalancerIP"] if svc["type"] == "LoadBalancer" \
                else svc["externalIPs"][0]
            to = {"address": addr, "port": svc["port"], "via": via}
        flow = {
            "name": f"flow{i}", "client": draw(st.sampled_from(("client0", "client1"))),
            "sourcePort": draw(st.sampled_from(SOURCE_PORTS)), "to": to,
            "packets": draw(st.sampled_from((1, 2, 3, 4))), "svc": svc["name"]}
        _finish_flow(draw, flow, svc, via, pods, live, change)
        flows.append(flow)
    for f in flows:
        del f["svc"]
    return {
        "cilium": {"version": version, "loadBalancer": {"mode": mode, "dsrDispatch": dispatch},
                   "routingMode": routing, "tunnelProtocol": "geneve", "seed": draw(
                       st.integers(0, 3)),
                   "serviceNoBackendResponse": draw(st.sampled_from(("reject", "drop")))},
        "nodes": [{"name": n, "ip": a["node"].format(3 + i)} for i, n in enumerate(nodes)],
        "pods": pods, "services": services, "clients": clients, "flows": flows,
    }


def _endpoint_change(draw: Callable[..., Any], services: list[dict[str, Any]],
                     live: dict[str, list[str]], pods: list[str], left: set[tuple[str, str]]
                     ) -> tuple[dict[str, list[str]], list[str]] | None:
    """Sometimes an endpoint change before a flow: scale up (a pod joins), pod deletion or
    termination (a pod leaves, deleted or draining), or a replacement (one of each)."""
    kind = draw(st.sampled_from(("none", "none", "up", "delete", "terminate", "replace",
                                 "all")))
    if kind == "none":
        return None
    svc = services[draw(st.integers(0, len(services) - 1))]["name"]
    now = list(live[svc])
    out = [p for p in pods if p not in now]
    gone: list[str] = []
    if kind in ("up", "replace") and out:
        now.append(draw(st.sampled_from(out)))
    if kind in ("delete", "terminate", "replace") and now:
        gone = [draw(st.sampled_from(now))]
        now.remove(gone[0])
    if kind == "all":  # scale to zero: every pod leaves (some terminating)
        gone, now = list(now), []
    left.update((svc, g) for g in gone)
    if now == live[svc]:
        return None
    live[svc] = now
    return {svc: now}, (gone if kind in ("terminate", "replace", "all") else [])


def _finish_flow(draw: Callable[..., Any], flow: dict[str, Any], svc: dict[str, Any],
                 via: str, pods: list[dict[str, Any]], live: dict[str, list[str]],
                 change: tuple[dict[str, list[str]], list[str]] | None) -> None:
    """Endpoint change, pinned backend (from the service's backends after the change),
    FIN close and idle time of one generated flow."""
    if change is not None:
        flow["setBackends"] = change[0]
        if change[1]:
            flow["terminating"] = change[1]
    eligible = [b for b in live[svc["name"]]
                if svc["externalTrafficPolicy"] == "Cluster"
                or next(p for p in pods if p["name"] == b)["node"] == via]
    if eligible:
        flow["backend"] = draw(st.sampled_from(eligible))
    if svc["protocol"] == "TCP" and draw(st.booleans()):
        flow["close"] = True
    idle = draw(st.sampled_from(IDLE))
    if idle:
        flow["idle"] = idle


def drain_program(combo: tuple[str, str, str, str], version: str = "1.20") -> dict[str, Any]:
    """The explicit example every configuration starts with: a connection whose backend
    is replaced and left terminating keeps draining to it (ACKs, lb4_local keeps the
    backend), is then opened again with a SYN (which must not stay on a terminating
    backend), then a fresh connection."""
    fam, mode, dispatch, routing = combo
    a = ADDR[fam]
    to = {"node": "node1", "service": "web"}
    return {
        "cilium": {"version": version, "loadBalancer": {"mode": mode, "dsrDispatch": dispatch},
                   "routingMode": routing, "tunnelProtocol": "geneve", "seed": 0},
        "nodes": [{"name": "node1", "ip": a["node"].format(3)},
                  {"name": "node2", "ip": a["node"].format(4)}],
        "pods": [{"name": "pod0", "node": "node2", "ip": a["pod"].format(2, 10)},
                 {"name": "pod1", "node": "node2", "ip": a["pod"].format(2, 11)}],
        "services": [{"name": "web", "type": "NodePort", "protocol": "TCP", "port": 80,
                      "targetPort": 8080, "nodePort": 30080, "backends": ["pod0"]}],
        "clients": [{"name": "client0", "ip": a["client"].format(7)}],
        "flows": [
            {"name": "open", "client": "client0", "sourcePort": 40000, "to": to,
             "packets": 1, "backend": "pod0"},
            {"name": "drain", "client": "client0", "sourcePort": 40000, "to": to,
             "packets": 2, "resume": True, "setBackends": {"web": ["pod1"]},
             "terminating": ["pod0"]},
            {"name": "reopen", "client": "client0", "sourcePort": 40000, "to": to,
             "packets": 2, "setBackends": {"web": ["pod1"]}, "terminating": ["pod0"]},
            {"name": "fresh", "client": "client0", "sourcePort": 40001, "to": to,
             "packets": 1, "setBackends": {"web": ["pod1", "pod0"]}, "backend": "pod0"}],
    }


def run_program(doc: dict[str, Any], factory: DatapathFactory, faults: frozenset[str],
                counters: Counters, spec: str = "datapath"
                ) -> Divergence | None:
    """Parse the document and run it on both sides; the first divergence or None."""
    sc = parse(doc, "<difftest>")
    run = DiffRun(sc.world, factory, faults, spec, counters)
    try:
        return run.run(sc.flows)
    finally:
        run.net.close()


@attrs.frozen(kw_only=True)
class Failure:
    """A shrunk failing program and what diverged."""

    doc: dict[str, Any]
    divergence: Divergence


@attrs.frozen(kw_only=True)
class Summary:
    """What one difftest run did."""

    programs: int
    steps: int
    observations: int
    seconds: float
    failure: Failure | None
    declared: dict[str, int] = attrs.field(factory=dict)
    units: tuple[int, ...] = ()  # the campaign units this run covered (see plan())

    @property
    def obs_per_s(self) -> float:
        """Compared packet observations per second."""
        return self.observations / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        def n(count: int, what: str) -> str:
            return f"{count} {what}{'' if count == 1 else 's'}"

        return (f"difftest: {n(self.programs, 'program')}, {n(self.steps, 'step')}, "
                f"{n(self.observations, 'packet observation')} compared in "
                f"{self.seconds:.1f}s "
                f"({self.obs_per_s:,.0f} obs/s); "
                + ("FAILED" if self.failure else "model and datapath agree")
                + "".join(f"; {n} comparisons differ as declared ({k})"
                          for k, n in sorted(self.declared.items())))


class _Found(Exception):
    pass


CHUNK = 10  # generated programs per unit: the grain of --shard and --jobs


@attrs.frozen(kw_only=True)
class Unit:
    """One deterministic slice of a campaign: a configuration, a chunk of its budget, and
    the Hypothesis seed that generates exactly those programs wherever it runs."""

    index: int
    combo: int
    chunk: int
    examples: int
    seed: int


def plan(examples: int, seed: int, version: str = "1.20") -> list[Unit]:
    """The campaign: the budget split evenly over every configuration of the release (no
    mode, dispatch, routing or family left to the generator's luck), in chunks of CHUNK."""
    per = max(1, -(-examples // len(combos(version))))
    units: list[Unit] = []
    for i in range(len(combos(version))):
        for j in range(-(-per // CHUNK)):
            useed = seed * 1000 + i + j * (1 << 32)  # chunk 0 keeps the historical seed
            units.append(Unit(index=len(units), combo=i, chunk=j,
                              examples=min(CHUNK, per - j * CHUNK), seed=useed))
    return units


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) into (I, N); ValueError with the reason otherwise."""
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or int(n) < 1 or int(i) >= int(n):
        raise ValueError(f"--shard: expected I/N with 0 <= I < N, got {text!r}")
    return int(i), int(n)


@attrs.frozen(kw_only=True)
class UnitResult:
    """What one unit did (counters, and its shrunk failure if any)."""

    unit: Unit
    programs: int
    steps: int
    observations: int
    declared: dict[str, int]
    failure: Failure | None


def run_unit(unit: Unit, factory: DatapathFactory, faults: frozenset[str] = frozenset(),
             shrink: bool = True, spec: str = "datapath",
             progress: Callable[[int, Counters], None] | None = None,
             base: int = 0) -> UnitResult:
    """One unit's programs (the explicit drain example with chunk 0), stopping at the
    first divergence, shrunk when `shrink`."""
    counters = Counters()
    calls = [0]
    last: list[Failure] = []
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    def one(doc: dict[str, Any]) -> None:
        calls[0] += 1
        div = run_program(doc, factory, faults, counters, spec)
        if progress is not None:
            progress(base + calls[0], counters)
        if div is not None:
            last[:] = [Failure(doc=doc, divergence=div)]
            raise _Found(div.step)

    version = program_version(factory)
    combo = combos(version)[unit.combo]
    test = given(programs(combo, version))(one)
    if unit.chunk == 0:
        test = example(drain_program(combo, version))(test)
    prop = hseed(unit.seed)(settings(
        max_examples=unit.examples, deadline=None, database=None, phases=phases,
        suppress_health_check=list(HealthCheck), print_blob=False)(test))
    with contextlib.suppress(_Found):
        prop()
    return UnitResult(unit=unit, programs=calls[0], steps=counters.steps,
                      observations=counters.observations, declared=dict(counters.declared),
                      failure=last[0] if last else None)


_WORK: tuple[DatapathFactory, frozenset[str], bool, str] | None = None


def _work(unit: Unit) -> UnitResult:
    assert _WORK is not None
    factory, faults, shrink, spec = _WORK
    return run_unit(unit, factory, faults, shrink, spec)


def difftest(examples: int, seed: int, factory: DatapathFactory,
             faults: frozenset[str] = frozenset(), *,
             shrink: bool = True, spec: str = "datapath",
             progress: Callable[[int, Counters], None] | None = None,
             jobs: int = 1, shard: tuple[int, int] = (0, 1)) -> Summary:
    """Run `examples` generated programs (fixed seed); on divergence shrink to a minimal one.

    `shard` (I, N) runs the units whose index is I mod N: the union of all N shards is the
    unsharded campaign, unit for unit. `jobs` > 1 runs units in that many forked processes;
    the failure reported is the lowest unit's, as a sequential run would find first."""
    global _WORK
    probe = check_datapath(factory(NodeConfig(), frozenset()), spec)  # a bad --datapath fails early
    if callable(getattr(probe, "close", None)):
        probe.close()  # type: ignore[attr-defined]
    units = [u for u in plan(examples, seed, program_version(factory))
             if u.index % shard[1] == shard[0]]
    t0 = time.perf_counter()
    results: list[UnitResult] = []
    if jobs <= 1 or len(units) <= 1:
        done, seen = 0, Counters()

        def so_far(n: int, c: Counters) -> None:  # the campaign's totals, not the unit's
            assert progress is not None
            progress(n, Counters(steps=seen.steps + c.steps,
                                 observations=seen.observations + c.observations))
        for u in units:
            r = run_unit(u, factory, faults, shrink, spec,
                         so_far if progress is not None else None, done)
            done += r.programs
            seen.steps += r.steps
            seen.observations += r.observations
            results.append(r)
            if r.failure is not None:
                break
    else:
        import multiprocessing

        free = getattr(factory, "free", None)
        if callable(free):
            free()  # loaded objects must not be shared with the forked workers
        _WORK = (factory, faults, shrink, spec)
        total = Counters()
        try:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                for r in pool.imap_unordered(_work, units):
                    results.append(r)
                    total.steps += r.steps
                    total.observations += r.observations
                    if progress is not None:
                        progress(sum(x.programs for x in results), total)
        finally:
            _WORK = None
        results.sort(key=lambda r: r.unit.index)
        first = next((i for i, r in enumerate(results) if r.failure is not None), None)
        if first is not None:
            results = results[:first + 1]
    dt = time.perf_counter() - t0
    declared: dict[str, int] = {}
    for r in results:
        for k, n in r.declared.items():
            declared[k] = declared.get(k, 0) + n
    fail = next((r.failure for r in results if r.failure is not None), None)
    return Summary(programs=sum(r.programs for r in results),
                   steps=sum(r.steps for r in results),
                   observations=sum(r.observations for r in results),
                   seconds=dt, failure=fail, declared=declared,
                   units=tuple(r.unit.index for r in results))


def format_failure(f: Failure, width: int = 100) -> str:
    """The shrunk case as a scenario file plus both traces side by side."""
    d = f.divergence
    out = ["# --- minimal failing scenario (load with `nodeport trace FILE`) ---",
           yaml.safe_dump(f.doc, sort_keys=False, default_flow_style=None, width=100).rstrip(),
           f"# --- first divergence at: {d.step}"]
    out += [f"#   {w}" for w in d.what]
    out.append(f"# --- traces ({'model':<{width - 2}} | datapath)")
    n = max(len(d.model_trace), len(d.dp_trace))
    for i in range(n):
        m = d.model_trace[i] if i < len(d.model_trace) else ""
        p = d.dp_trace[i] if i < len(d.dp_trace) else ""
        mark = " " if m == p else "*"
        ms = m if len(m) <= width else m[:width - 3] + "..."
        out.append(f"#{mark} {ms:<{width}} | {p}")
    return "\n".join(out)


def planned(examples: int, shard: tuple[int, int] = (0, 1), version: str = "1.20") -> int:
    """How many programs a run (or one shard) generates: the budget rounded up to every
    configuration."""
    return max(1, sum(u.examples for u in plan(examples, 0, version)
                      if u.index % shard[1] == shard[0]))


def text_progress(total: int, stream: Any = None) -> Callable[[int, Counters], None]:
    """A plain-text progress bar (stderr by default; no dependency), redrawn in place
    at most ten times a second; programs beyond `total` are shrinking attempts."""
    s = stream if stream is not None else sys.stderr
    t0 = time.perf_counter()
    last = [0.0]

    def show(n: int, c: Counters) -> None:
        now = time.perf_counter()
        if now - last[0] < 0.1 and n != total:
            return
        last[0] = now
        frac = min(1.0, n / total) if total else 1.0
        bar = "#" * int(30 * frac)
        rate = c.observations / max(1e-9, now - t0)
        extra = f" (+{n - total} shrinking)" if n > total else ""
        s.write(f"\r[{bar:<30}] {min(n, total)}/{total} programs{extra}, "
                f"{c.observations} obs ({rate:,.0f}/s) ")
        s.flush()
    return show


def kill_table(examples: int, seed: int, factory: DatapathFactory,
               progress: Callable[[str], None] | None = None
               ) -> list[tuple[str, bool, list[str]]]:
    """For every seeded fault: killed by difftest? which vector files kill it?"""
    from datapath.faults import FAULTS, faults_killed

    vectors = faults_killed()
    rows = []
    for name in FAULTS:
        if progress is not None:
            progress(name)
        s = difftest(examples, seed, factory, frozenset({name}), shrink=False)
        rows.append((name, s.failure is not None, vectors.get(name, [])))
    return rows


def format_kill_table(rows: list[tuple[str, bool, list[str]]]) -> str:
    """The kill table: fault | difftest | vectors, and the survivors count."""
    out = [f"{'fault':44s} {'difftest':9s} vectors"]
    for name, diff, vec in rows:
        out.append(f"{name:44s} {'KILLED' if diff else '-':9s} "
                   f"{', '.join(vec) if vec else '-'}")
    alive = [n for n, d, v in rows if not d and not v]
    nd = sum(1 for _n, d, _v in rows if d)
    nv = sum(1 for _n, _d, v in rows if v)
    out.append(f"{len(rows)} faults: difftest kills {nd}, vectors kill {nv}, "
               f"survivors {len(alive)}" + (f" ({', '.join(alive)})" if alive else ""))
    return "\n".join(out)
