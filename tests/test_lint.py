"""The tree stays ruff- and mypy --strict-clean; both run as part of the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_clean() -> None:
    res = _run(str(BIN / "ruff"), "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_clean() -> None:
    res = _run(str(BIN / "mypy"), "--no-error-summary")
    assert res.returncode == 0, res.stdout + res.stderr


# The only datapath modules that may see both worlds: the abstraction function and the
# differential-testing engine/generator.  The reference datapath itself never imports model.
DATAPATH_MODEL_BRIDGE = frozenset({"datapath/abstraction.py", "datapath/mapstate.py",
                                   "datapath/difftest.py", "datapath/diffwalk.py",
                                   "datapath/diffgen.py", "datapath/ewdiff.py"})


def test_layering() -> None:
    """model/ imports neither z3 nor graphviz; z3 only in properties/, graphviz in diagrams/."""
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT)
        top = rel.parts[0]
        if top in (".venv", "tests"):
            continue
        text = path.read_text()
        z3 = "import z3" in text or "from z3" in text
        gv = "import graphviz" in text or "from graphviz" in text
        if z3 and top != "properties":
            offenders.append(f"{rel}: z3")
        if gv and top != "diagrams":
            offenders.append(f"{rel}: graphviz")
        bridge = rel.as_posix() in DATAPATH_MODEL_BRIDGE
        if top == "datapath" and not bridge and ("from model" in text or "import model" in text):
            offenders.append(f"{rel}: datapath imports model")
    assert offenders == []
