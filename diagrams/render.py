"""Write DOT text to a file, rendered by Graphviz according to the file's extension."""

from __future__ import annotations

import re
from pathlib import Path

import graphviz

from model.errors import InputError

FORMATS = {".svg": "svg", ".png": "png", ".dot": None, ".gv": None}
PNG_DPI = 110  # crisp on a laptop screen without being huge


def output_format(path: str | Path) -> str | None:
    """The Graphviz format for a file name (None: write DOT); unknown suffixes are refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: output must end in .svg, .png or .dot (got {suffix or 'none'})")
    return FORMATS[suffix]


def render_bytes(dot: str, fmt: str) -> bytes:
    """Run Graphviz on DOT text with the layout engine the graph names (default dot)."""
    m = re.search(r"\blayout=(\w+)", dot)
    engine = m.group(1) if m else "dot"
    source = dot
    if fmt == "png":
        source = dot.replace("graph [", f"graph [dpi={PNG_DPI}, ", 1)
    data: bytes = graphviz.pipe(engine, fmt, source.encode(), quiet=True)
    return data


def write(dot: str, path: str | Path) -> None:
    """Write `dot` to path as .svg, .png or .dot."""
    fmt = output_format(path)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        p.write_text(dot)
    else:
        p.write_bytes(render_bytes(dot, fmt))
