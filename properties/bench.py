"""Benchmark of the property suite: `.venv/bin/python -m properties.bench`.

Reports the whole default suite's wall time (2 worker processes) and per-query times, the
median query, how one proof's time grows with the bound (packets, backends, hooks per
leg) and that the induction proofs do not grow with cluster or table size. The named peer
is exhaustive concrete enumeration: the same P-LB-01 check done by running model/ on every
scenario of a small domain (client ports x target ports x nodePorts x backend choice),
timed in the same run; the ratio says what the symbolic proof buys.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time

import attrs

from model.flows import run_flows
from model.scenario import parse
from properties import prove
from properties.catalogue import BY_ID, PROPERTIES
from properties.checks import Replay
from properties.configs import Config
from properties.decode import FlowDoc, ScenarioValues, document
from properties.pktchecks import CHECKERS
from properties.symworld import Bounds


def _suite() -> tuple[float, list[prove.Result]]:
    jobs: list[prove.Job] = [(p.id, c, frozenset()) for p in PROPERTIES for c in p.configs]
    t0 = time.perf_counter()
    results = prove.run_many(jobs, 20.0, workers=2)
    return time.perf_counter() - t0, results


def _growth(cfg: Config) -> list[tuple[Bounds, float, float]]:
    """(bound, explore+solve seconds, solve-only seconds) for P-LB-01."""
    out = []
    for b in (Bounds(packets=1), Bounds(packets=2), Bounds(packets=3),
              Bounds(packets=2, backends=2), Bounds(packets=2, backends=3)):
        prop = attrs.evolve(BY_ID["P-LB-01"], bounds=b)
        t0 = time.perf_counter()
        r = prove.check(prop, cfg)
        total = time.perf_counter() - t0
        assert r.result == prove.PROVED, r
        out.append((b, total, sum(q.seconds for q in r.queries)))
    return out


def _enumerate(cfg: Config, cports: list[int], tports: list[int], nports: list[int],
               backends: int) -> tuple[int, float]:
    """The peer: run every scenario of the domain through model/ and check P-LB-01."""
    n = 0
    t0 = time.perf_counter()
    pods = tuple(f"10.0.2.{10 + i}" for i in range(backends))
    for cp, tp, np_, pin in itertools.product(cports, tports, nports, range(backends)):
        vals = ScenarioValues(nodes=("192.168.2.3", "192.168.2.4"), pods=pods,
                              clients=("203.0.113.7",), target_port=tp, node_port=np_,
                              port=None, vip=None, other_node_port=None,
                              flows=(FlowDoc(client=0, sport=cp, packets=2, backend=pin),))
        sc = parse(document(cfg, vals, 1))
        state, traces = run_flows(sc.world, sc.flows)
        found = CHECKERS["P-LB-01"](Replay(cfg=cfg, world=sc.world, traces=tuple(traces),
                                           state=state))
        assert found is None
        n += 1
    return n, time.perf_counter() - t0


def main() -> int:
    """Run the benchmark and print the report."""
    wall, results = _suite()
    queries = [q.seconds for r in results for q in r.queries]
    bad = [r for r in results if not r.ok]
    print(f"suite: {len(results)} results ({len(bad)} unexpected), {len(queries)} solver "
          f"queries, wall {wall:.2f} s on 2 workers (target < 10 s)")
    print(f"  query time: median {statistics.median(queries) * 1000:.1f} ms (target < 50 ms), "
          f"mean {statistics.mean(queries) * 1000:.1f} ms, max {max(queries) * 1000:.0f} ms, "
          f"sum {sum(queries):.2f} s")
    per_prop: dict[str, float] = {}
    for r in results:
        per_prop[r.prop] = per_prop.get(r.prop, 0.0) + r.seconds
    print("  per property (encode + solve + decode, summed over configurations):")
    for pid, s in per_prop.items():
        print(f"    {pid:<9} {s:7.2f} s")
    slow = sorted(((q.seconds, r.prop, r.cfg.label(), q.name) for r in results
                   for q in r.queries), reverse=True)[:5]
    print("  slowest queries:")
    for sec, pid, label, name in slow:
        print(f"    {sec * 1000:7.1f} ms  {pid} {label} [{name}]")

    cfg = Config()
    print(f"\ngrowth with the bound, P-LB-01 on {cfg.label()} (encode + solve, solve only):")
    for b, total, solve in _growth(cfg):
        print(f"  {b.describe():<36} {total * 1000:8.1f} ms {solve * 1000:8.1f} ms")

    print("\ninduction proofs do not depend on cluster size (any number of backends, nodes,"
          " map entries):")
    for pid in ("P-NAT-02", "P-CT-01", "P-CT-02"):
        r = prove.check(BY_ID[pid], cfg)
        print(f"  {pid}: {r.result} in {r.seconds * 1000:.1f} ms "
              f"({len(r.queries)} queries, median "
              f"{statistics.median(q.seconds for q in r.queries) * 1000:.1f} ms)")

    print("\npeer: exhaustive concrete enumeration of P-LB-01 through model/ "
          f"({cfg.label()}, 2 packets):")
    cports = [1024, 20000, 33000, 40000, 50000, 65535]
    tports = [80, 8080, 40000]
    nports = [30000, 30080, 32767]
    t0 = time.perf_counter()
    z = prove.check(BY_ID["P-LB-01"], cfg)
    zsec = time.perf_counter() - t0
    for backends in (1, 2, 3):
        n, sec = _enumerate(cfg, cports, tports, nports, backends)
        print(f"  {backends} backend(s): {n} scenarios in {sec:.2f} s "
              f"({sec / n * 1000:.2f} ms each)")
    n, sec = _enumerate(cfg, cports, tports, nports, 1)
    per = sec / n
    full = 2.0**16 * 2.0**16 * 2768  # client port x target port x nodePort, one backend
    print(f"  z3 proof ({z.result}) for every address, port and map content: {zsec:.3f} s")
    print(f"  ratio z3 / enumeration of this {n}-scenario domain: {zsec / sec:.2f}x")
    print(f"  enumeration of ports alone (one address set, empty maps) would take "
          f"{per * full / 86400 / 365:.0f} years at {per * 1000:.2f} ms per scenario")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
