"""P-MAG-02 by exhaustion over the agent's Maglev tables: removing one backend moves a bounded
share of the other backends' table entries (so of their flows: a flow's entry is its hash).

The share is measured, not sampled: for every table size in SIZES, every backend count in
COUNTS and every backend removed, the model's own table (model.maglev.lookup_table, the code
`trace` runs) is built before and after, and every entry is compared. A flow keeps its
backend exactly when its entry does, so the share of moved entries among those the remaining
backends held is the share of their flows that move (hash values are uniform over entries).
"""

from __future__ import annotations

import ipaddress
import time

import attrs

from model.faults import ModelFault
from model.maglev import DEFAULT_HASH_SEED, DEFAULT_WEIGHT, hash_string, lookup_table, seeds
from properties.checks import Finding
from properties.configs import Config
from properties.coreprops import Property
from properties.results import COUNTEREXAMPLE, PROVED, Result

SIZES = (251, 509, 1021, 2039)
COUNTS = tuple(range(2, 11))
# At most this share of the other backends' entries moves when the table has at least 100
# entries per backend (pkg/maglev's own sizing advice, after the Maglev paper). Measured
# worst: 3.9% (IPv4 names) and 5.3% (IPv6) up to 2039; 1.6-1.9% at 4093, 0.7-0.8% at 16381.
# Smaller tables for their backend count disrupt more (10.8% at 251 entries, 9 backends).
BOUND = 0.06
PER_BACKEND = 100


def _backends(n: int, ipv6: bool) -> tuple[tuple[str, int, int], ...]:
    """n backends named as the agent names them, IDs 1..n, the default weight."""
    out = []
    for i in range(n):
        addr = ipaddress.ip_address(f"fd00::10:2:0:{i + 10:x}" if ipv6 else f"10.0.2.{i + 10}")
        out.append((hash_string(addr, 8080, "TCP"), i + 1, DEFAULT_WEIGHT))
    return tuple(out)


def worst_share(ipv6: bool, faults: frozenset[ModelFault] = frozenset(),
                sizes: tuple[int, ...] = SIZES, counts: tuple[int, ...] = COUNTS,
                per_backend: int = PER_BACKEND) -> tuple[float, int, int, int, int]:
    """(share, table size, backends, removed ID) of the worst removal, entries compared."""
    murmur = seeds(DEFAULT_HASH_SEED)[0]
    skip = ModelFault.MAGLEV_SKIP_IGNORED in faults
    worst = (0.0, 0, 0, 0)
    compared = 0
    for m in sizes:
        for n in (c for c in counts if m >= per_backend * c):
            bes = _backends(n, ipv6)
            before = lookup_table(bes, m, murmur, skip)
            for r in range(n):
                gone = bes[r][1]
                after = lookup_table(bes[:r] + bes[r + 1:], m, murmur, skip)
                kept = [i for i in range(m) if before[i] != gone]
                moved = sum(1 for i in kept if after[i] != before[i])
                compared += m
                share = moved / len(kept)
                if share > worst[0]:
                    worst = (share, m, n, gone)
    return (*worst, compared)


def check_tables(prop: Property, cfg: Config, faults: frozenset[ModelFault]) -> Result:
    """The bound over every (size, count, removed backend); the worst case as the finding."""
    t0 = time.perf_counter()
    share, m, n, gone, compared = worst_share(cfg.ipv6, faults)
    bound = (f"tables {SIZES[0]}..{SIZES[-1]}, {COUNTS[0]}..{COUNTS[-1]} backends (table >= "
             f"{PER_BACKEND} x backends), each removed; {compared} entries")
    base = Result(prop=prop.id, cfg=cfg, expected=prop.expect(cfg), result=PROVED,
                  method="exhaustive over the agent's tables", bound=bound, seconds=0.0,
                  faults=faults)
    msg = (f"removing backend {gone} of {n} (table size {m}) moves {share:.2%} of the other "
           f"backends' entries (bound {BOUND:.0%})")
    if share <= BOUND:
        return attrs.evolve(base, seconds=time.perf_counter() - t0, note=f"worst: {msg}")
    table = {"tableSize": m, "backends": n, "removed": gone, "share": round(share, 4)}
    return attrs.evolve(base, result=COUNTEREXAMPLE, seconds=time.perf_counter() - t0,
                        note=msg, counterexample={"hops": [], "maglev": table},
                        finding=Finding(flow=0, hop=0, message=msg))
