"""The bad-input corpus (tests/badinput) through the CLI: exit 2, one stderr line naming the
key path, no traceback; the accepted odd inputs trace with their documented meaning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nodeport.cli import main
from tests.conftest import ROOT, run_cli

CORPUS = ROOT / "tests" / "badinput"


def _expectations(kind: str) -> list[tuple[str, str]]:
    rows = []
    for line in (CORPUS / kind / "EXPECT.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, fragment = line.split("\t")
            rows.append((name, fragment))
    return rows


def _one_error_line(capsys: pytest.CaptureFixture[str], rc: int, fragment: str) -> str:
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("nodeport: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def test_corpus_is_complete() -> None:
    """Every corpus file has an expectation and every expectation a file."""
    for kind in ("scenarios", "vectors"):
        listed = {name for name, _ in _expectations(kind)}
        present = {p.name for p in (CORPUS / kind).iterdir() if p.name != "EXPECT.tsv"}
        assert listed == present, kind


@pytest.mark.parametrize(("name", "fragment"), _expectations("scenarios"))
def test_bad_scenario(name: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "scenarios" / name
    line = _one_error_line(capsys, main(["trace", str(path)]), fragment)
    assert str(path) in line


@pytest.mark.parametrize(("name", "fragment"), _expectations("vectors"))
def test_bad_vector_file(name: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "vectors" / name
    line = _one_error_line(capsys, main(["vectors", str(path)]), fragment)
    assert str(path) in line


def test_trace_goes_on_past_a_refused_file(capsys: pytest.CaptureFixture[str]) -> None:
    good = str(ROOT / "examples" / "dsr-remote-backend.yaml")
    bad = str(CORPUS / "scenarios" / "dup-nodeport.yaml")
    rc = main(["trace", bad, good])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.count("\n") == 1 and "services[1].nodePort" in err
    assert f"# {good}" in out and "flow to-web: delivered" in out


def test_accepted_protocol_choice(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trace", "--json", str(CORPUS / "accepted" / "protocol-choice.yaml")])
    flow = json.loads(capsys.readouterr().out)["flows"][0]
    assert rc == 0 and flow["outcome"] == "delivered" and flow["backend"] == "dns-1"
    assert flow["hops"][0]["packet"]["proto"] == "UDP"


def test_accepted_merge_keys(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trace", "--json", str(CORPUS / "accepted" / "merge-keys.yaml")])
    flows = json.loads(capsys.readouterr().out)["flows"]
    assert rc == 0 and [f["name"] for f in flows] == ["first", "second"]
    assert flows[1]["client"].endswith(":40001") and flows[1]["frontend"] == flows[0]["frontend"]


ARGS: list[tuple[list[str], str]] = [
    (["prove", "--timeout", "nan"], "--timeout"),
    (["prove", "--timeout", "inf"], "--timeout"),
    (["prove", "--timeout", "-1"], "--timeout"),
    (["prove", "--jobs", "0"], "--jobs"),
    (["prove", "--property", "P-NOPE"], "--property"),
    (["prove", "--diagrams", "README.md"], "--diagrams"),
    (["prove", "--save-counterexamples", "README.md"], "--save-counterexamples"),
    (["diagram", "examples/dsr-remote-backend.yaml", "-o", "docs"], "-o docs"),
    (["diagram", "examples/dsr-remote-backend.yaml", "-o", "README.md/x.svg"], "README.md"),
    (["diagram", "examples/dsr-remote-backend.yaml", "-o", "x.pdf"], "x.pdf"),
    (["trace"], "trace"),
    (["frobnicate"], "COMMAND"),
    (["vectors", "vectors/lb4_nat_fwd.yaml", "--datapath", ".relative:make"], "--datapath"),
    (["vectors", "vectors/lb4_nat_fwd.yaml", "--datapath", "datapath.host:HOOKS"],
     "--datapath"),
    (["vectors", "vectors/lb4_nat_fwd.yaml", "--datapath", "datapath.config:NodeConfig"],
     "--datapath"),
]


@pytest.mark.parametrize(("argv", "fragment"), ARGS, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else a)
def test_bad_arguments(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        rc = int(exc.code or 0)
    _one_error_line(capsys, rc, fragment)


def test_diagram_without_flows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = (CORPUS / "accepted" / "merge-keys.yaml").read_text()
    path = tmp_path / "noflows.yaml"
    path.write_text(src[:src.index("flows:")] + "flows: []\n")
    _one_error_line(capsys, main(["diagram", str(path), "-o", str(tmp_path / "x.svg")]),
                    "flows")


BAD_MODULES = {
    "dp_syntax": "def make(:\n",
    "dp_raises": "raise RuntimeError('no kernel here')\n",
    "dp_factory_raises": "def make(config, faults):\n    raise OSError('no bpffs')\n",
    "dp_wrong_product": "def make(config, faults):\n    return 42\n",
    "dp_wrong_signature": "def make():\n    return None\n",
}


@pytest.mark.parametrize("module", sorted(BAD_MODULES))
def test_bad_datapath_module(module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"{module}.py").write_text(BAD_MODULES[module])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    rc = main(["vectors", str(ROOT / "vectors" / "lb4_nat_fwd.yaml"), "--datapath",
               f"{module}:make"])
    _one_error_line(capsys, rc, f"--datapath: {module}:make")


def test_real_binary_refuses_in_one_line() -> None:
    """The installed entry point behaves as in-process: a bomb and a binary file."""
    for name, fragment in (("billion-laughs.yaml", "alias"), ("binary.yaml", "offset")):
        res = run_cli("trace", str(CORPUS / "scenarios" / name))
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and fragment in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_version_help_and_bare_command() -> None:
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("nodeport ")
    bare = run_cli()
    assert bare.returncode == 0 and "usage: nodeport" in bare.stdout
    for cmd in ("trace", "prove", "diagram", "vectors", "difftest"):
        text = run_cli(cmd, "--help").stdout
        assert "exit status:" in text and "2  bad input" in text, cmd


def test_no_colour_when_piped_or_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from nodeport.term import colour_on

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert colour_on(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_on(Tty())  # type: ignore[arg-type]
    res = run_cli("trace", "examples/dsr-remote-backend.yaml")
    assert "\033[" not in res.stdout


def test_accepted_external_ip_on_a_node_address(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trace", "--json", str(CORPUS / "accepted" / "externalip-on-node-ip.yaml")])
    flow = json.loads(capsys.readouterr().out)["flows"][0]
    assert rc == 0 and flow["outcome"] == "delivered" and flow["backend"] == "web-0"
    assert flow["frontend"] == "192.168.2.3:8443"
    assert all(p["src"] == "192.168.2.3:8443" for p in flow["client_saw"])
