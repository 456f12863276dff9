"""Flow sequence diagrams: committed DOT is current, every leg drawn, highlight, drops, layout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import graphviz
import pytest

from diagrams import draw_trace, trace_dot
from diagrams.catalogue import PICTURES, STANDARD_DIR, standard_dots
from diagrams.sequence import lanes_of
from diagrams.style import COLOURS, HIGHLIGHT, PathKind
from model.flows import run_flows, trace_json
from model.scenario import load, parse

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "diagrams"
POS = re.compile(r'^\s+(\w+) \[pos="(-?[\d.]+),(-?[\d.]+)!"', re.M)


def _traces(name: str) -> list[dict[str, Any]]:
    sc = load(STANDARD_DIR / name)
    _, traces = run_flows(sc.world, sc.flows)
    return [trace_json(t) for t in traces]


def _positions(dot: str) -> dict[str, tuple[float, float]]:
    return {m[1]: (float(m[2]), float(m[3])) for m in POS.finditer(dot)}


@pytest.fixture(scope="module")
def standard() -> dict[str, str]:
    return standard_dots()


def test_committed_dot_is_regenerated_exactly(standard: dict[str, str]) -> None:
    committed = {p.stem: p.read_text() for p in COMMITTED.glob("*.dot")}
    assert sorted(committed) == sorted(standard), "docs/diagrams/*.dot out of step: rerun " \
        "`nodeport diagram --standard -o docs/diagrams`"
    stale = [name for name in standard if committed[name] != standard[name]]
    assert stale == [], f"regenerate docs/diagrams: {stale} differ"
    assert all((COMMITTED / f"{name}.svg").exists() for name in standard)


def test_dot_is_deterministic() -> None:
    trace = _traces("hybrid.yaml")[1]
    assert trace_dot(trace) == trace_dot(trace)


@pytest.mark.parametrize("scenario", sorted({p.scenario for p in PICTURES}))
def test_every_leg_is_drawn_numbered_between_the_right_lanes(scenario: str) -> None:
    for trace in _traces(scenario):
        dot = trace_dot(trace)
        pos = _positions(dot)
        lanes = lanes_of(trace)
        hops = trace["hops"]
        drawn = set()
        last_y = float("inf")
        for i, hop in enumerate(hops):
            lane_x = pos[f"lane{lanes.index(hop['at'])}"][0]
            if f"l{i}" in pos:  # an arrow from this hop's host to the next hop's host
                nxt = hops[i + 1]
                assert pos[f"a{i}"][0] == lane_x
                assert pos[f"b{i}"][0] == pos[f"lane{lanes.index(nxt['at'])}"][0]
                assert f"a{i} -> b{i} [" in dot
                assert f"<B> {i + 1} </B>" in dot
                y = pos[f"a{i}"][1]
            else:  # where a walk ends (received, dropped, lost), or XDP hands over to tc
                assert f"m{i}" in pos, f"hop {i} of {trace['name']} not drawn"
                assert pos[f"m{i}"][0] == lane_x
                assert re.search(rf'>{i + 1} ([\u2713\u2717]|xdp: .*XDP_PASS to tc|'
                                 rf'[a-z-]+: [a-z+-]+, same node)', dot)
                y = pos[f"m{i}"][1]
            assert y < last_y, "legs must go down the page in trace order"
            last_y = y
            drawn.add(i)
        assert drawn == set(range(len(hops)))


def test_rewritten_fields_are_bold_in_the_path_colour() -> None:
    trace = _traces("snat-remote.yaml")[0]
    snat = COLOURS[PathKind.SNAT]
    dot = trace_dot(trace, direction="request")
    leg = trace["hops"][1]
    assert leg["changed"] == ["src", "dst"]
    for field in ("src", "dst"):
        assert f'<B><FONT COLOR="{snat}">{leg["packet"][field]}</FONT></B>' in dot
    # The unchanged client leg is not marked.
    assert f'<FONT COLOR="{snat}">{trace["hops"][0]["packet"]["src"]}' not in dot


def test_direction_keeps_numbers_and_drops_the_other_half() -> None:
    trace = _traces("snat-remote.yaml")[0]
    reply = trace_dot(trace, direction="reply")
    pos = _positions(reply)
    req = [i for i, h in enumerate(trace["hops"]) if h["direction"] == "request"]
    rep = [i for i, h in enumerate(trace["hops"]) if h["direction"] == "reply"]
    assert not any(f"l{i}" in pos or f"m{i}" in pos for i in req)
    assert all(f"l{i}" in pos or f"m{i}" in pos for i in rep)
    assert f"<B> {rep[0] + 1} </B>" in reply


def test_highlight_marks_exactly_one_leg() -> None:
    trace = _traces("dsr-remote.yaml")[0]
    plain = trace_dot(trace)
    assert HIGHLIGHT not in plain
    for i, hop in enumerate(trace["hops"]):
        dot = trace_dot(trace, highlight=i)
        assert dot.count("violation") == 1
        if f"a{i} -> b{i}" in dot:
            assert f'a{i} -> b{i} [color="{HIGHLIGHT}", penwidth=3.0]' in dot
            assert dot.count("penwidth=3.0") == 1
        else:
            assert re.search(rf'>{i + 1} [^<]*\u25c0 violation', dot), hop
    with pytest.raises(ValueError, match="not a hop index"):
        trace_dot(trace, highlight=len(trace["hops"]))


def test_drops_are_labelled_with_reason_and_code() -> None:
    reject = _traces("etp-local.yaml")[1]
    assert reject["drop"]["reason"] == "DROP_NO_SERVICE"
    assert "icmp-reject  \u2717 DROP_NO_SERVICE (-158)" in trace_dot(reject)
    doc = (STANDARD_DIR / "dsr-remote.yaml").read_text().replace(
        "nodes:", "fabric: {dropsIPOptions: true}\nnodes:", 1)
    import yaml

    sc = parse(yaml.safe_load(doc), "fabric-test")
    _, traces = run_flows(sc.world, sc.flows)
    lost = trace_json(traces[0])
    assert lost["drop"]["at"] == "fabric"
    dot = trace_dot(lost)
    assert "fabric" in lanes_of(lost)
    assert re.search(r">3 \u2717 FABRIC_DROPS_IP_OPTIONS<", dot)


def test_draw_trace_writes_by_extension(tmp_path: Path) -> None:
    trace = _traces("local-backend.yaml")[0]
    draw_trace(trace, tmp_path / "f.dot", highlight=1)
    assert (tmp_path / "f.dot").read_text() == trace_dot(trace, 1)
    draw_trace(trace, tmp_path / "f.svg")
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    draw_trace(trace, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _boxes(dot: str) -> list[tuple[str, float, float, float, float]]:
    """Rendered node boxes (name, x0, y0, x1, y1) in points, from Graphviz's own layout."""
    data = json.loads(graphviz.pipe("neato", "json", dot.encode(), quiet=True))
    out = []
    for o in data["objects"]:
        if "pos" not in o or o.get("shape") == "point":
            continue
        x, y = (float(v) for v in o["pos"].split(","))
        w, h = float(o["width"]) * 72 / 2, float(o["height"]) * 72 / 2
        out.append((o["name"], x - w, y - h, x + w, y + h))
    return out


def test_standard_pictures_have_no_overlapping_labels(standard: dict[str, str]) -> None:
    for name, dot in standard.items():
        boxes = _boxes(dot)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                overlap = min(a[3], b[3]) - max(a[1], b[1]), min(a[4], b[4]) - max(a[2], b[2])
                assert overlap[0] <= 0.5 or overlap[1] <= 0.5, f"{name}: {a[0]} overlaps {b[0]}"
