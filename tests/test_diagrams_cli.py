"""`nodeport diagram`: exit 0 with a file written, exit 2 with one line on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagrams.catalogue import STANDARD_DIR
from nodeport.cli import main

ETP = str(STANDARD_DIR / "etp-local.yaml")
DSR = str(STANDARD_DIR / "dsr-remote.yaml")


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_draws_a_named_flow(tmp_path: Path) -> None:
    out = tmp_path / "f.svg"
    assert main(["diagram", ETP, "--flow", "etp-local-no-backend", "-o", str(out)]) == 0
    assert "DROP_NO_SERVICE" in out.read_text()


def test_several_flows_without_flow_draws_the_first_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.dot"
    assert main(["diagram", ETP, "-o", str(out)]) == 0
    assert "etp-local-has-backend" in capsys.readouterr().err
    assert "flow etp-local-has-backend" in out.read_text()


def test_all_writes_one_file_per_flow(tmp_path: Path) -> None:
    assert main(["diagram", ETP, "--all", "-o", str(tmp_path / "etp.dot")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "etp-etp-local-has-backend.dot", "etp-etp-local-no-backend.dot"]


def test_highlight_is_a_leg_number(tmp_path: Path) -> None:
    out = tmp_path / "f.dot"
    assert main(["diagram", DSR, "--highlight", "2", "-o", str(out)]) == 0
    assert 'a1 -> b1 [color="#E0001B", penwidth=3.0]' in out.read_text()


def test_state_and_lifecycle(tmp_path: Path) -> None:
    assert main(["diagram", "--state", "dsr", "-o", str(tmp_path / "s.dot")]) == 0
    assert "dsr_internal=1" in (tmp_path / "s.dot").read_text()
    assert main(["diagram", DSR, "--lifecycle", "-o", str(tmp_path / "l.dot")]) == 0
    assert "CT_EGRESS dsr_internal" in (tmp_path / "l.dot").read_text()


@pytest.mark.parametrize(("argv", "needle"), [
    (["diagram", ETP, "--flow", "nope", "-o", "x.svg"], "no flow named 'nope'"),
    (["diagram", ETP, "-o", "x.pdf"], "must end in .svg, .png or .dot"),
    (["diagram", "--state", "ipip", "-o", "x.svg"], "unknown mode 'ipip'"),
    (["diagram", "-o", "x.svg"], "give a SCENARIO"),
    (["diagram", "missing.yaml", "-o", "x.svg"], "missing.yaml"),
    (["diagram", DSR, "--highlight", "99", "-o", "x.svg"], "--highlight 99"),
    (["diagram", ETP, "--flow", "a", "--all", "-o", "x.svg"], "exclude each other"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], needle: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert line.startswith("nodeport: error: ") and needle in line
    assert list(tmp_path.iterdir()) == []


def test_standard_writes_svg_and_dot(tmp_path: Path) -> None:
    assert main(["diagram", "--standard", "-o", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"01-snat-inbound.svg", "02-snat-reply.dot", "03-dsr.svg"} <= names
    assert len(names) == 2 * len({p.stem for p in tmp_path.iterdir()})
