"""Terminal manners: progress only on a terminal, no Python None in output, wording."""

from __future__ import annotations

import io
from typing import Any

import pytest

from nodeport.cli import main
from nodeport.cmd_prove import _legs
from nodeport.cmd_trace import render
from nodeport.term import Progress, paint, plural


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress(3, "proving 3 jobs", stream)
        p.step()
        p.step(2)
        p.close()
    assert "proving 3 jobs: 1/3" in tty.getvalue() and "3/3" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_plural_and_paint() -> None:
    assert plural(1, "step") == "1 step" and plural(2, "step") == "2 steps"
    assert paint("x", "red", False) == "x" and paint("x", "red", True) == "\033[31mx\033[0m"


def _hop(action: str, packet: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    return {"at": "node1", "hook": None, "action": action, "direction": "request",
            "changed": changed, "packet": packet}


def test_no_python_none_in_counterexample_legs() -> None:
    pkt = {"src": "1.2.3.4:1", "dst": "5.6.7.8:2", "proto": "UDP", "flags": None,
           "dsr": None, "outer": None}
    lines = _legs({"hops": [_hop("send", pkt, []), _hop("dnat", pkt, ["dst", "dsr"])]}, 1)
    assert lines and not any("None" in line for line in lines)
    assert "dsr=none" in lines[1] and "<== violation" in lines[1]


def test_drop_wording() -> None:
    flow: dict[str, Any] = {"name": "f", "outcome": "dropped", "backend": None,
                            "drop": {"at": "node1", "reason": "DROP_NO_SERVICE", "code": 158},
                            "hops": []}
    head = render(flow)
    assert head == "flow f: dropped at node1: DROP_NO_SERVICE"


def test_difftest_examples_zero_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["difftest", "--examples", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nodeport: error: --examples")
