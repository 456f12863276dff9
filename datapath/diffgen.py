"""The difftest driver: campaign units (--shard, --jobs), Hypothesis runs, shrinking, and
the fault kill table; the programs themselves are drawn by datapath.programs."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed

from datapath.adapter import DatapathFactory, check_datapath, reference_factory
from datapath.config import NodeConfig
from datapath.difftest import Counters, DiffRun, Divergence
from datapath.explicit import EXPLICIT, drain_program
from datapath.programs import COMBOS, IPIP_COMBOS, VERSIONS, programs, smaller
from model.errors import InputError
from model.scenario import parse

__all__ = ["COMBOS", "drain_program", "programs"]  # re-exported for callers


@contextlib.contextmanager
def own_constants_only() -> Iterator[None]:
    """Why: Hypothesis (6.131 on) also draws literals it finds in every loaded local module,
    so a seed's programs would change with what the process imported (a user's adapter, a
    test file's imports, a mutant's edited constant); generation sees none of them."""
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants

    real = getattr(providers, "_get_local_constants", None)
    if real is None:  # a Hypothesis without local constants: nothing to hide
        yield
        return
    empty = Constants()
    providers._get_local_constants = lambda: empty
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = real
        providers.CONSTANTS_CACHE.cache.clear()


def small_maps_for(factory: DatapathFactory) -> bool:
    """Map capacities of a few entries (LRU eviction compared entry by entry) only for the
    reference datapath, whose LRU is exact; a kernel's BPF LRU frees in batches."""
    return factory is reference_factory


def combos(version: str = "1.20") -> tuple[tuple[str, str, str, str], ...]:
    """The configurations a release can express: v1.18 has no IPv6 tunnel endpoints
    (remote_endpoint_info.tunnel_endpoint is a __u32, v1.18 bpf/lib/common.h:360), and the
    generated IPv6 clusters have IPv6 nodes, so its campaign is the IPv4 configurations."""
    every = COMBOS + IPIP_COMBOS
    if version == "1.18":
        return tuple(c for c in every if c[0] == "ipv4")
    return every


def program_version(factory: object) -> str:
    """The release a campaign is planned for: the datapath's (`cilium_version`, a tree's
    VERSION such as 1.18.0-dev) when the model has that profile, else 1.20."""
    short = ".".join(str(getattr(factory, "cilium_version", "") or "").split(".")[:2])
    return short if short in VERSIONS else "1.20"


def versions_for(factory: DatapathFactory) -> tuple[str, ...]:
    """The Cilium versions to generate for: the tree's release when the datapath is Cilium's
    own code (`cilium_version`), else every version the reference datapath implements."""
    tree = getattr(factory, "cilium_version", None)
    if tree is None:
        return VERSIONS
    return (".".join(str(tree).split(".")[:2]),)


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
    """One unit's programs (chunk 0 starts with the explicit examples), stopping at the
    first divergence, shrunk when `shrink` (by Hypothesis, or greedily for an explicit
    example)."""
    counters = Counters()
    calls = [0]
    last: list[Failure] = []
    phases = [Phase.generate] + ([Phase.shrink] if shrink else [])

    def one(doc: dict[str, Any]) -> None:
        calls[0] += 1
        div = run_program(doc, factory, faults, counters, spec)
        if progress is not None:
            progress(base + calls[0], counters)
        if div is not None:
            last[:] = [Failure(doc=doc, divergence=div)]
            raise _Found(div.step)

    combo = combos(program_version(factory))[unit.combo]
    versions = versions_for(factory)
    small = small_maps_for(factory)
    try:  # the explicit programs first, run directly (Hypothesis would pretty-print them)
        for doc in explicit(unit, versions, small):
            one(doc)
    except _Found:
        if shrink:
            last[:] = [shrink_explicit(last[0], factory, faults, spec)]
    if not last:
        prop = hseed(unit.seed)(settings(
            max_examples=unit.examples, deadline=None, database=None, phases=phases,
            suppress_health_check=list(HealthCheck), print_blob=False)(
                given(programs(combo, versions, small))(one)))
        with contextlib.suppress(_Found), own_constants_only():
            prop()
    return UnitResult(unit=unit, programs=calls[0], steps=counters.steps,
                      observations=counters.observations, declared=dict(counters.declared),
                      failure=last[0] if last else None)


def shrink_explicit(found: Failure, factory: DatapathFactory, faults: frozenset[str],
                    spec: str = "datapath") -> Failure:
    """Greedy shrinking of a failing hand-written program: take the first one-step
    simplification that still diverges, until none does."""
    cur = found
    while True:
        for doc in smaller(cur.doc):
            try:
                div = run_program(doc, factory, faults, Counters(), spec)
            except InputError:
                continue
            if div is not None:
                cur = Failure(doc=doc, divergence=div)
                break
        else:
            return cur


def explicit(unit: Unit, versions: tuple[str, ...], small_maps: bool
             ) -> list[dict[str, Any]]:
    """The explicit examples a configuration's first chunk starts with: the drain example,
    then the SNAT-exhaustion and (where maps may be small) the LRU-eviction programs, in
    each version generated for."""
    if unit.chunk != 0:
        return []
    combo = combos(versions[0] if len(versions) == 1 else "1.20")[unit.combo]
    out = [drain_program(combo, versions[0])]
    for make, needs_small in EXPLICIT:
        if small_maps or not needs_small:
            out += [make(combo, v) for v in versions]
    return out


def draw_programs(examples: int, seed: int, versions: tuple[str, ...] = VERSIONS
                  ) -> list[dict[str, Any]]:
    """The programs a campaign of `examples` generates (its units' seeds, generation
    only: no explicit example, nothing run), for checking what the generator reaches."""
    docs: list[dict[str, Any]] = []

    def keep(doc: dict[str, Any]) -> None:
        docs.append(doc)

    for unit in plan(examples, seed):
        docs += explicit(unit, versions, True)
        test = given(programs(combos()[unit.combo], versions))(keep)
        with own_constants_only():
            hseed(unit.seed)(settings(
                max_examples=unit.examples, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                print_blob=False)(test))()
    return docs


_WORK: tuple[DatapathFactory, frozenset[str], bool, str] | None = None


def _work(unit: Unit) -> UnitResult:
    assert _WORK is not None
    factory, faults, shrink, spec = _WORK
    return run_unit(unit, factory, faults, shrink, spec)


def difftest(examples: int, seed: int, factory: DatapathFactory,
             faults: frozenset[str] = frozenset(), *,
             shrink: bool = True, spec: str = "datapath",
             progress: Callable[[int, Counters], None] | None = None,
             jobs: int = 1, shard: tuple[int, int] = (0, 1),
             only: frozenset[int] | None = None) -> Summary:
    """Run `examples` generated programs (fixed seed); on divergence shrink to a minimal one.

    `shard` (I, N) runs the units whose index is I mod N: the union of all N shards is the
    unsharded campaign, unit for unit. `jobs` > 1 runs units in that many forked processes;
    the failure reported is the lowest unit's, as a sequential run would find first.
    `only` keeps just those unit indices (the mutation check's coverage selection)."""
    global _WORK
    probe = check_datapath(factory(NodeConfig(), frozenset()), spec)  # a bad --datapath fails early
    if callable(getattr(probe, "close", None)):
        probe.close()  # type: ignore[attr-defined]
    units = [u for u in plan(examples, seed, program_version(factory))
             if u.index % shard[1] == shard[0] and (only is None or u.index in only)]
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


def planned(examples: int, shard: tuple[int, int] = (0, 1), version: str = "1.20",
            factory: DatapathFactory | None = None) -> int:
    """How many programs a run (or one shard) generates: the budget rounded up to every
    configuration, plus the explicit programs each configuration's first chunk runs."""
    versions = VERSIONS if factory is None else versions_for(factory)
    small = factory is None or small_maps_for(factory)
    return max(1, sum(u.examples + len(explicit(u, versions, small))
                      for u in plan(examples, 0, version)
                      if u.index % shard[1] == shard[0]))


def text_progress(total: int, stream: Any = None) -> Callable[[int, Counters], None]:
    """A plain-text progress bar (stderr by default; no dependency), redrawn in place
    at most ten times a second; programs beyond `total` are Hypothesis' shrinking attempts
    or its retries of drawn programs it discarded."""
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
        extra = f" (+{n - total} beyond the plan)" if n > total else ""
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
