"""`prove --json` shape (schema, summary, 1-based hops), --save-counterexamples replayed by
`nodeport trace`, and counterexamples that do not depend on --jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeport.cli import main
from nodeport.cmd_prove import SCHEMA


def _prove(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    rc = main(["prove", "--property", "P-DSR-01", "--mode", "snat", "--family", "ipv4",
               "--json", *extra])
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    assert rc == 0
    return doc


def test_prove_json_saved_counterexample_replays(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    one = _prove(capsys, "--jobs", "1", "--save-counterexamples", str(tmp_path / "cex"))
    two = _prove(capsys, "--jobs", "2")
    assert one["schema"] == SCHEMA
    summary = one["summary"]
    assert isinstance(summary, dict) and summary["ok"] is True and summary["unexpected"] == 0
    rows = one["results"]
    assert isinstance(rows, list) and summary["results"] == len(rows)
    assert sum(summary["by_result"].values()) == len(rows)
    cex = [r for r in rows if r["result"] == "counterexample"]
    assert cex, "P-DSR-01 under SNAT loses the client IP: an expected counterexample"
    row = cex[0]
    hop = row["violating_hop"]
    assert isinstance(hop, int) and 1 <= hop <= len(row["counterexample"]["hops"])
    assert row["counterexample"]["hops"][hop - 1]["action"] == "receive"
    # the same counterexample whatever the number of worker processes
    rows2 = two["results"]
    assert isinstance(rows2, list)
    assert [(r["id"], r["config"], r["scenario"], r["counterexample"]) for r in rows] == \
        [(r["id"], r["config"], r["scenario"], r["counterexample"]) for r in rows2]
    # the saved scenario replays through `nodeport trace` to the same trace
    saved = Path(row["saved"])
    assert saved.exists() and saved.read_text().startswith("# P-DSR-01")
    assert main(["trace", "--json", str(saved)]) == 0
    replay = json.loads(capsys.readouterr().out)
    assert row["counterexample"] in replay["flows"]
