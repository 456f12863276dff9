"""Graphviz diagrams drawn from the model: flow sequence diagrams and CT/SNAT lifecycles.

The only package that imports graphviz. Every picture is first DOT text built
deterministically from model output, then rendered by extension (.svg, .png, .dot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diagrams.render import write
from diagrams.sequence import trace_dot

__all__ = ["draw_trace", "trace_dot"]


def draw_trace(trace: dict[str, Any], path: str | Path, highlight: int | None = None) -> None:
    """Draw one flow (trace JSON shape of model.flows.trace_json) to .svg, .png or .dot.

    highlight: index into trace["hops"] of a violating leg, drawn red and bold.
    """
    write(trace_dot(trace, highlight), path)
