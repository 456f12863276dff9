"""What is mutated and which checks may kill it: the model's and the datapath's targets."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import attrs

# argv for a check, given the workspace root (a copy of the repository).
Argv = Callable[[Path], list[str]]
# argv running only some units of a check (mutation/covmap.py selects them by coverage).
UnitsArgv = Callable[[Path, list[str]], list[str]]


@attrs.frozen(kw_only=True)
class Check:
    """One killing check: a command that exits 0 on the unmutated tree."""

    name: str
    argv: Argv
    shown: str  # the command as the report prints it
    why: str  # why this check, and this selection, belongs here
    # Units that run alone (prove cells, difftest units, vector files, pytest node ids):
    # an argv printing their names one a line, and one running just the given ones.
    # Without them the whole check is one unit.
    units: Argv | None = None
    run_units: UnitsArgv | None = None
    pytest: bool = False  # units are node ids, recorded in one run by mutation/covplugin.py
    # argv recording one unit, where run_units' way (a forked pool) would race coverage.py's
    # data saving; it must run the same code in this process. Default: run_units.
    record_unit: UnitsArgv | None = None


@attrs.frozen(kw_only=True)
class Target:
    """The files to mutate and the checks, cheapest-first or as the report's rates need."""

    name: str
    files: tuple[str, ...]
    checks: tuple[Check, ...]
    immutable_writes: bool
    report: str  # docs/ path of the markdown report
    results: str  # checked-in JSON of per-mutant results
    classifications: str  # checked-in YAML of survivor classes


def _py() -> str:
    return sys.executable


def _nodeport(*args: str) -> Argv:
    return lambda root: [_py(), "-m", "nodeport.cli", *args]


def _vectors(root: Path) -> list[str]:
    return [_py(), "-m", "nodeport.cli", "vectors",
            *sorted(str(p.relative_to(root)) for p in (root / "vectors").glob("*.yaml"))]


def _vector_files(root: Path) -> list[str]:
    return [_py(), "-c", "import pathlib; print(*sorted(str(p) for p in "
            "pathlib.Path('vectors').glob('*.yaml')), sep='\\n')"]


_PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0")


def _pytest(*selection: str) -> Argv:
    return lambda root: [_py(), *_PYTEST, *selection]


def _collect(*selection: str) -> Argv:
    return lambda root: [_py(), "-m", "pytest", "--collect-only", "-q", "-p",
                         "no:cacheprovider", *selection]


def _pytest_ids(root: Path, ids: list[str]) -> list[str]:
    return [_py(), *_PYTEST, *ids]


def _tests(selection: tuple[str, ...], why: str) -> Check:
    return Check(name="tests", argv=_pytest(*selection),
                 shown="pytest -x " + " ".join(selection), why=why,
                 units=_collect(*selection), run_units=_pytest_ids, pytest=True)


DIFFTEST_EXAMPLES, DIFFTEST_SEED = 50, 1
_DIFFTEST_ARGS = ("difftest", "--examples", str(DIFFTEST_EXAMPLES), "--seed",
                  str(DIFFTEST_SEED), "--quiet")
_DIFFTEST = Check(
    name="difftest",
    argv=_nodeport(*_DIFFTEST_ARGS),
    shown=f"nodeport difftest --examples {DIFFTEST_EXAMPLES} --seed {DIFFTEST_SEED} --quiet",
    why="the model and the byte-level datapath walked side by side on generated programs "
        "(fixed seed: the same programs for every mutant)",
    units=lambda root: [
        _py(), "-c", "from datapath.adapter import load_factory\n"
        "from datapath.diffgen import plan, program_version\n"
        f"for u in plan({DIFFTEST_EXAMPLES}, {DIFFTEST_SEED}, "
        "program_version(load_factory(None, None))): print(u.index)"],
    run_units=lambda root, units: [_py(), "-m", "nodeport.cli", *_DIFFTEST_ARGS, "--no-shrink",
                                   "--units", ",".join(units)],
)

# A prove cell in this process, as `nodeport prove --cell` runs it in its forked worker
# (cmd_prove.execute -> run_many(workers=1)); exit 1 on an unexpected result, 3 on unknown.
_PROVE_RECORD = ("import sys\n"
                 "from properties.prove import UNKNOWN, run_many, suite\n"
                 "jobs = [(p.id, c, frozenset()) for p, c in suite()\n"
                 "        if c.label() in sys.argv[1:]]\n"
                 "rs = run_many(jobs, 20.0)\n"
                 "sys.exit(3 if any(r.result == UNKNOWN for r in rs) else 0 if jobs and "
                 "all(r.ok for r in rs) else 1)")
_PROVE_CELLS = ("from properties.prove import suite\n"
                "print(*dict.fromkeys(c.label() for _p, c in suite()), sep='\\n')")

# Tests that exercise model/ directly; the CLI-validation suite (scenario.py's input
# errors), the prove suite (already the prove check), docs/lint tests and the seeded-fault
# kill tables (slow, about registered faults, not source) are left out.
MODEL_TESTS = (
    "tests/test_model_backends.py", "tests/test_model_dispatch.py", "tests/test_model_done.py",
    "tests/test_model_drops.py", "tests/test_model_matrix.py",
    "tests/test_model_properties.py", "tests/test_model_maps.py", "tests/test_no_backend.py",
    "tests/test_tunnel_snat.py", "tests/test_model_network.py", "tests/test_model_snat.py",
    "tests/test_diagrams_lifecycle.py", "tests/test_cli_trace.py::test_example_traces",
    "tests/test_model_dsr_stale.py", "tests/test_ct_seen_flags.py",
    "tests/test_abstraction_icmp.py", "tests/test_diffgen_reach.py", "tests/test_model_gaps.py",
    "tests/test_model_gaps_2.py", "tests/test_model_affinity.py", "tests/test_icmp_errors.py",
    "tests/test_masquerade.py",
    "tests/test_dsr_mtu.py",
    "tests/test_model_fragments.py", "tests/test_model_xdp.py",
    "tests/test_eastwest.py", "tests/test_ipip.py", "tests/test_model_maglev.py",
    "tests/test_model_survivors.py",
)
# Tests of datapath/ and its bridge (of the ICMP tests, the byte-level ones); the two
# seeded-fault kill tables (57 s and 13 s, they re-run vectors and difftest per registered
# fault) and the CLI loader test (the vectors and difftest checks run that CLI already) are
# deselected.
DATAPATH_TESTS = (
    "tests/test_datapath_edges.py", "tests/test_datapath_maps.py", "tests/test_datapath_packet.py",
    "tests/test_datapath_robust.py", "tests/test_datapath_rewrite.py",
    "tests/test_datapath_vectors.py",
    "tests/test_difftest_abstraction.py", "tests/test_difftest_engine.py",
    "tests/test_datapath_gaps.py", "tests/test_ct_seen_flags.py", "tests/test_ct_accounting.py",
    "tests/test_abstraction_icmp.py", "tests/test_tunnel_snat.py", "tests/test_no_backend.py",
    "tests/test_diffgen_reach.py", "tests/test_dsr_mtu.py",
    "tests/test_nat_icmp_bytes.py", "tests/test_nat_icmp6_bytes.py",
    "tests/test_datapath_wire_edges.py", "tests/test_datapath_survivors.py",
    "tests/test_datapath_parse_edges.py",
    "tests/test_csum.py", "tests/test_constants_are_ciliums.py",
    "tests/test_datapath_maps_survivors.py", "tests/test_lxc_survivors.py",
    "tests/test_ipip_survivors.py",
    "tests/test_eastwest.py", "tests/test_ipip.py",
    *(f"tests/test_icmp_errors.py::{t}" for t in (
        "test_datapath_matches_ciliums_expected_packet_in_v120",
        "test_datapath_v118_leaves_the_icmp_checksum_stale",
        "test_datapath_without_masquerade_and_with_the_fault",
        "test_abstraction_reads_and_writes_the_quote", "test_difftest_icmp_program_agrees",
        "test_datapath_ipv6_packet_too_big_keeps_every_checksum_valid")),
    "tests/test_datapath_xdp.py",
    "--deselect", "tests/test_datapath_xdp.py::test_real_bpf_xdp_both_trees",
    "--deselect", "tests/test_datapath_xdp.py::test_fault_killed_by_vectors_and_difftest",
    "--deselect", "tests/test_datapath_vectors.py::test_every_fault_killed",
    "--deselect", "tests/test_difftest_engine.py::test_every_fault_killed_by_difftest_or_vectors",
    "--deselect", "tests/test_difftest_abstraction.py::test_cli_runs_and_vectors_share_the_loader",
)

MODEL = Target(
    name="model",
    files=("model/nodeport.py", "model/hooks.py", "model/lbselect.py", "model/snat.py",
           "model/conntrack.py", "model/network.py", "model/maps.py", "model/masq.py",
           "model/fragments.py", "model/xdp.py",
           "model/eastwest.py", "model/ipip.py"),
    checks=(
        Check(name="prove", argv=_nodeport("prove", "--jobs", "1", "--fail-fast"),
              shown="nodeport prove --jobs 1",
              why="the default property suite (stopping at its first unexpected result); run "
                  "on every mutant whose lines it executes, so that its kill rate alone is "
                  "known",
              units=lambda root: [_py(), "-c", _PROVE_CELLS],
              run_units=lambda root, cells: [_py(), "-m", "nodeport.cli", "prove", "--jobs",
                                             "1", "--fail-fast",
                                             *(a for c in cells for a in ("--cell", c))],
              record_unit=lambda root, cells: [_py(), "-c", _PROVE_RECORD, *cells]),
        _DIFFTEST,
        _tests(MODEL_TESTS, "the model's unit and scenario tests, and every example traced "
                            "through the CLI"),
    ),
    immutable_writes=True,
    report="docs/mutation-model.md",
    results="mutation/results/model.json",
    classifications="mutation/classifications.yaml",
)

DATAPATH = Target(
    name="datapath",
    files=tuple(f"datapath/{m}.py" for m in (
        "lb", "conntrack", "nat", "nodeport", "host", "packet", "build", "csum", "maps",
        "fragments", "lxc", "ipip")),
    checks=(
        Check(name="vectors", argv=_vectors, shown="nodeport vectors vectors/*.yaml",
              why="golden packet vectors taken from Cilium's bpf/tests (about 1 s)",
              units=_vector_files,
              run_units=lambda root, files: [_py(), "-m", "nodeport.cli", "vectors", *files]),
        _DIFFTEST,
        _tests(DATAPATH_TESTS, "the datapath's parser, map, robustness, vector-format and "
                               "difftest-engine tests"),
    ),
    immutable_writes=False,
    report="docs/mutation-datapath.md",
    results="mutation/results/datapath.json",
    classifications="mutation/classifications.yaml",
)

TARGETS = {t.name: t for t in (MODEL, DATAPATH)}
