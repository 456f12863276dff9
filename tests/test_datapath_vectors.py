"""Golden vectors pass, fault kills, and malformed vector files are rejected in one line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from datapath.errors import VectorFileError
from datapath.faults import FAULTS, default_vector_files, faults_killed
from datapath.vectors import run_vector_file
from nodeport import cmd_vectors

VECTORS = default_vector_files()


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_vector_passes(path: Path) -> None:
    rep = run_vector_file(path)
    assert rep.ok, rep.format()
    assert rep.steps > 0


def test_vectors_cite_cilium_sources() -> None:
    assert len(VECTORS) >= 10
    for p in VECTORS:
        assert "cilium" in run_vector_file(p).source


def test_every_fault_killed() -> None:
    killed = faults_killed()
    assert len(FAULTS) >= 15
    survivors = [f for f, files in killed.items() if not files]
    assert survivors == []


def test_fault_shows_field_diff() -> None:
    rep = run_vector_file(VECTORS[0].parent / "lb4_dsr_fwd.yaml",
                          faults=frozenset({"dsr_opt_network_order"}))
    assert not rep.ok
    assert any("dsr4.port" in f or "first differing byte" in f for f in rep.failures)


@pytest.mark.parametrize(("text", "key"), [
    ("steps: []\nsource: x\n", "steps"),
    ("source: x\nsteps:\n  - {hook: nowhere, packet: {hex: ''}}\n", "steps[0].hook"),
    ("steps:\n  - {hook: from-netdev, packet: {hex: ''}}\n", "source"),
    ("source: x\nsteps:\n  - {hook: from-netdev, packet: "
     "{ip: {src: 1.2.3.4}, tcp: {sport: 1, dport: 2}}}\n",
     "steps[0].packet.ip.dst"),
    ("source: x\nservices:\n  - {frontend: 1.2.3.4, port: 80}\nsteps:\n  - {gc: true}\n",
     "services[0].rev_nat_index"),
    ("source: x\nnode: {mode: bogus}\nsteps:\n  - {gc: true}\n", "node.mode"),
    (": : :\n", "line 1: not valid YAML"),
])
def test_malformed_vector_file(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(VectorFileError) as ei:
        run_vector_file(f)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(f) in msg
    assert key in msg


def test_cli_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd_vectors.register(sub)
    args = parser.parse_args(["vectors", str(VECTORS[0])])
    assert args.func(args) == 0
    assert "PASS" in capsys.readouterr().out
    args = parser.parse_args(["vectors", str(VECTORS[0]), "--datapath", "datapath.host:make_node"])
    assert args.func(args) == 0
    bad = tmp_path / "b.yaml"
    bad.write_text("source: x\nsteps: 3\n")
    args = parser.parse_args(["vectors", str(bad)])
    with pytest.raises(VectorFileError):
        args.func(args)
    args = parser.parse_args(["vectors", str(VECTORS[0]), "--datapath", "nope"])
    with pytest.raises(VectorFileError):
        args.func(args)


_REPROGRAM = """\
cilium: ["1.18", "1.20"]
source: "test: reprogram between steps"
node: {name: lb, ipv4: 10.0.10.1, mode: snat, no_backend_response: reject}
services:
  - {frontend: 172.16.10.2, port: 80, proto: tcp, rev_nat_index: 1, backends: [124]}
backends:
  - {id: 124, address: 192.168.0.2, port: 8080, proto: tcp}
steps:
  - hook: from-netdev
    packet: {ip: {src: 110.0.11.1, dst: 172.16.10.2}, tcp: {sport: 111, dport: 80}}
    expect: {verdict: CTX_ACT_REDIRECT, fields: {ip.dst: 192.168.0.2}}
  - reprogram:
      services:
        - {frontend: 172.16.10.2, port: 80, proto: tcp, rev_nat_index: 1, backends: []}
  - name: the established flow keeps its backend (CT_SERVICE survives)
    hook: from-netdev
    packet: {ip: {src: 110.0.11.1, dst: 172.16.10.2}, tcp: {sport: 111, dport: 80, flags: A}}
    expect:
      verdict: CTX_ACT_REDIRECT
      fields: {ip.dst: 192.168.0.2}
      maps: [{map: cilium_lb4_services_v2, count: 1}, {map: cilium_ct4_global, count: 2}]
  - name: a new flow finds no backend
    hook: from-netdev
    packet: {ip: {src: 110.0.11.1, dst: 172.16.10.2}, tcp: {sport: 112, dport: 80}}
    expect: {verdict: CTX_ACT_REDIRECT, drop_reason: DROP_NO_SERVICE, fields: {icmp.type: 3}}
  - name: only for another release
    cilium: ["1.18"]
    hook: from-netdev
    packet: {ip: {src: 110.0.11.1, dst: 172.16.10.2}, tcp: {sport: 113, dport: 80}}
    expect: {verdict: CTX_ACT_DROP}
"""


def test_reprogram_and_step_versions(tmp_path: Path) -> None:
    """`reprogram` replaces the LB maps and keeps CT; a step tagged with other Cilium
    versions is skipped against a tree of this version; the reference datapath runs the
    file once per listed version, with that version's profile and steps."""
    f = tmp_path / "reprogram.yaml"
    f.write_text(_REPROGRAM)
    rep = run_vector_file(f, version="1.20.0-dev")
    assert rep.ok, rep.format()
    assert rep.steps == 4
    everywhere = run_vector_file(f)
    assert everywhere.steps == 5 + 4
    assert [x.partition(".verdict")[0] for x in everywhere.failures] == [
        "[1.18] steps[4](only for another release)"]


def test_file_needing_what_a_datapath_lacks_is_skipped(tmp_path: Path) -> None:
    from datapath.host import make_node

    class NoReprogram:
        def __init__(self, cfg: object, faults: frozenset[str]) -> None:
            self._n = make_node(cfg, faults)  # type: ignore[arg-type]
            self.maps = self._n.maps

        def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None
                ) -> object:
            return self._n.run(hook, pkt, backend)

        def advance(self, seconds: int) -> None:
            self._n.advance(seconds)

        def gc(self) -> int:
            return self._n.gc()

    f = tmp_path / "reprogram.yaml"
    f.write_text(_REPROGRAM)
    rep = run_vector_file(f, NoReprogram)  # type: ignore[arg-type]
    assert rep.skipped == "the datapath under test has no reprogram()"
    assert rep.format().startswith("SKIP ")
    assert run_vector_file(f, make_node, version="1.20.0-dev").ok
