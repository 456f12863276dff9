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
