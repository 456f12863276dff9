"""Generate docs/properties.md from the catalogue: `python -m properties.docgen`.

Each property's scope, expected result per configuration, method, and the time measured
for it in this run (the suite is run while generating, so the times are current).
"""

from __future__ import annotations

import sys
from collections import defaultdict

from properties.catalogue import PROPERTIES
from properties.prove import Job, Result, mutants, run_many


def render(results: list[Result], kills: list[Result]) -> str:
    """The Markdown document."""
    by_prop: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_prop[r.prop].append(r)
    kill_by: dict[str, list[Result]] = defaultdict(list)
    for r in kills:
        kill_by[r.prop].append(r)
    out = ["# NodePort properties", "",
           "Generated from `properties/catalogue.py` by `python -m properties.docgen`; do not "
           "edit by hand. `nodeport prove` checks every row; `nodeport prove --mutants` "
           "shows each seeded fault (model/faults.py) caught by a replayed counterexample.", "",
           "Methods: **BMC** explores every feasible path of the model's own code "
           "(`model/flows.py` and the hooks it calls) on the configuration's scenario, with "
           "every port and every get_prandom_u32() draw symbolic and z3 deciding each branch; "
           "the property's checker (`properties/checks.py`, `properties/pktchecks.py`) runs "
           "on each path, a violating "
           "path is replayed through `nodeport trace`, and a proof is re-run on three diverse "
           "concrete witnesses. **induction** proves initiation, consecution and "
           "Inv => Safety over arbitrary map contents by running the model's own step "
           "(`model.snat.snat_nat`, `snat_rev_nat`, `model.lbselect.lb_select`) on a map of "
           "uninterpreted contents (`properties/openmap.py`), path by path; a failed step is "
           "only a counterexample to induction, so P-NAT-02, P-CT-01 and P-CT-02 are also "
           "explored from empty maps within the bound shown (P-CT-02's: a connection, its "
           "backend turns terminating, the connection goes on, a new SYN on its tuple); "
           "that exploration's counterexample wins, and its premise paths give the "
           "proof's concrete witnesses.", "",
           "## Assumptions, and what they exclude", "",
           "- **Addresses are data.** The model only compares addresses for equality, so one "
           "assignment of distinct addresses per configuration stands for all of them (data "
           "independence); ports and random draws range over their whole domains.",
           "- **Round trips start from the empty maps a scenario starts with** (BMC), and the "
           "induction proofs cover arbitrary map contents. A round trip on maps left by older "
           "flows is covered only through those proofs: an older flow's "
           "entries can answer for a new one, Cilium's documented Known Issue. One client "
           "reusing a source port towards "
           "two frontends that share a UDP DSR backend gets replies from the first frontend, "
           "because `nodeport_dsr_ingress_ipv4` does not refresh an established UDP DSR "
           "entry. `examples/known-issue-udp-dsr-port-reuse.yaml` shows it concretely.",
           "- **Maps are not full.** LRU eviction of CT/SNAT entries is modelled concretely "
           "(`model/maps.py`, the self-healing of SNAT pairs) and in the explored round "
           "trips, not in the induction proofs (an open map never evicts). CT garbage "
           "collection iterates a whole map, which an open map cannot do: P-NAT-02's "
           "induction takes the purge of a dead flow's pair as its own step.",
           "- **Backends by ID, endpoint changes by enumeration.** P-CT-01/02's packet step "
           "runs on a representative LB view (two slots, another service's backend, and for "
           "P-CT-02 a terminating one): `lb_select` compares backend IDs only by equality and "
           "draws the slot at random, so more backends add no behaviour to one packet. "
           "P-CT-02's endpoint changes are `AgentBackends.apply` itself, explored to a "
           "fixpoint over three pods and two services sharing them (up to the renaming of "
           "backend IDs); the agent does not touch CT entries, and the CT map is arbitrary.",
           "- **Session affinity within its timeout.** P-AFF-01's bound sends the second "
           "connection seconds after the first, well inside the timeout (the default "
           "10800 s), and changes no endpoints: it proves the entry is found, kept and "
           "followed, and shows the per-node map's limit under ECMP. The timeout's boundary "
           "(`last_used + timeout <= now` expires) and the match map after an endpoint "
           "change are checked concretely: `tests/test_model_affinity.py`, "
           "`vectors/session_affinity.yaml` on both Cilium trees and the difftest's "
           "affinity program.",
           "- **Maglev's hash is a function, nothing more.** P-MAG-01 runs the model with "
           "the agent's own tables (concrete, built per node from its backends) and the "
           "datapath's lookup `table[jhash(fields) % size]` as one uninterpreted function of "
           "the table and the hashed fields (client address, both ports, protocol, seed): "
           "equal tables and equal fields give equal backends, which is all the property "
           "needs; a per-node input to the hash (the seeded fault) breaks it. jhash itself "
           "is checked concretely: against `session_affinity_maglev_test.c`'s picks, on both "
           "Cilium trees (`vectors/maglev.yaml`, `vectors/session_affinity_maglev.yaml`) and "
           "by the difftest. P-MAG-02 is measured over every entry of the agent's tables, "
           "not proved for every size and backend set.",
           "- **Port arithmetic is abstracted in the induction.** After a few SNAT retries "
           "a port term is replaced by a fresh value over its interval (the NAT range), and "
           "so is the result of a shift or of a remainder that intervals cannot bound (the "
           "port clamp's `(v * span) >> 16` and `v % span` of a random draw): an "
           "over-approximation, sound for proofs; a failure it causes is only a candidate, "
           "refuted or confirmed by the bounded run (which computes them exactly).",
           "- **One fabric fact at a time.** P-ENV-01/02 enable one environment fact per "
           "configuration.", ""]
    for p in PROPERTIES:
        rs = by_prop.get(p.id, [])
        total = sum(r.seconds for r in rs)
        out += [f"## {p.id} — {p.title}", "", f"**Statement.** {p.statement}", "",
                f"**Scope.** {p.scope}", "",
                f"**Method.** {p.method}"
                + (f" ({rs[0].bound})" if rs else ""), "",
                f"**Last measured.** {len(rs)} configurations in {total:.2f} s", "",
                "| configuration | expected | result | seconds |", "|---|---|---|---|"]
        for r in rs:
            out.append(f"| `{r.cfg.label()}` | {r.expected} | {r.result} | "
                       f"{r.seconds:.3f} |")
        ks = kill_by.get(p.id, [])
        if ks:
            out += ["", "Seeded faults it catches: " + ", ".join(
                f"`{next(iter(k.faults)).name}` ({'killed' if k.killed else k.result}"
                f" on `{k.cfg.label()}`)" for k in ks) + "."]
        out.append("")
    return "\n".join(out)


def main() -> int:
    """Run the suite and the mutants, print the document."""
    jobs: list[Job] = [(p.id, c, frozenset()) for p in PROPERTIES for c in p.configs]
    results = run_many(jobs, 20.0, workers=2)
    kills = run_many([(p.id, c, frozenset({f})) for p, c, f in mutants()], 20.0, workers=2)
    sys.stdout.write(render(results, kills))
    return 0


if __name__ == "__main__":
    sys.exit(main())
