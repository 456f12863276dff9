"""Sequence diagrams of one traced flow: a lane per host, a numbered arrow per leg.

The layout is computed here, not by a Graphviz layout engine: every node carries a pinned
position (points, `inputscale=72`) and the graph asks for `layout=neato`, so the DOT text
alone fixes the picture and is byte-for-byte deterministic. Any `dot`/`neato` renders it;
only font metrics differ between Graphviz builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from diagrams.style import (
    ACTION_KIND,
    COLOURS,
    DROP,
    ENCAP,
    FONT,
    FONT_SIZE,
    HIGHLIGHT,
    LABEL_FILL,
    LANE_FILL,
    LIFELINE,
    MONO,
    MONO_EM,
    MUTED,
    SANS_EM,
    SMALL,
    TITLE_SIZE,
    PathKind,
    esc,
)
from model.values import GENEVE_PORT

WALK_STARTS = ("send", "reply")
FABRIC = "fabric"
ARROW = "\u2192"
CROSS = "\u2717"
CHECK = "\u2713"

LANE_MIN_GAP = 150.0
LABEL_MARGIN = 28.0  # free space between a label's edges and the two lanes it spans
ROW_GAP = 14.0  # vertical air between one row's label and the previous row's arrow
LINE_H = FONT_SIZE + 5.0
MARKER_H = 26.0


@attrs.frozen(kw_only=True)
class Line:
    """One text line of a label: the HTML we emit and the plain text we measure."""

    html: str
    text: str
    mono: bool = True
    size: int = FONT_SIZE

    def width(self) -> float:
        """Estimated rendered width in points."""
        return len(self.text) * self.size * (MONO_EM if self.mono else SANS_EM)


@attrs.frozen(kw_only=True)
class Leg:
    """One hop of the trace as drawn: an arrow between two lanes, or a marker on one lane."""

    index: int  # into trace["hops"]; shown as index + 1, like `nodeport trace`
    hop: Mapping[str, Any]
    kind: PathKind
    lane: int
    to_lane: int | None  # None: the walk ends at this hop (received, dropped, lost)
    drop: Mapping[str, Any] | None  # trace["drop"] when this hop is where it happened
    highlight: bool
    same_lane: bool = False  # the walk goes on in another program of the same host


def _walk_end(hops: Sequence[Mapping[str, Any]], i: int) -> int:
    """Index of the last hop of the walk hop i belongs to."""
    j = i
    while j + 1 < len(hops) and hops[j + 1]["action"] not in WALK_STARTS:
        j += 1
    return j


def path_kinds(hops: Sequence[Mapping[str, Any]]) -> list[PathKind]:
    """Each hop's path: a request walk's first LB action decides it, its reply inherits it."""
    kinds: list[PathKind] = []
    current = PathKind.PLAIN
    for i, h in enumerate(hops):
        if h["action"] == "send":
            current = PathKind.PLAIN
            for k in range(i, _walk_end(hops, i) + 1):
                if hops[k]["action"] in ACTION_KIND:
                    current = ACTION_KIND[hops[k]["action"]]
                    break
            kinds.append(PathKind.PLAIN)  # the client's leg: before any load balancing
            continue
        kinds.append(current)
    return kinds


def lanes_of(trace: Mapping[str, Any]) -> list[str]:
    """Hosts in order of first appearance (client, LB node, backend node, pod), fabric last."""
    order: list[str] = []
    for h in trace["hops"]:
        if h["at"] not in order and h["at"] != FABRIC:
            order.append(h["at"])
    if any(h["at"] == FABRIC for h in trace["hops"]):
        order.append(FABRIC)
    return order


def _drop_index(trace: Mapping[str, Any]) -> int | None:
    drop = trace.get("drop")
    if not drop:
        return None
    hits = [i for i, h in enumerate(trace["hops"]) if h["at"] == drop["at"]]
    return hits[-1] if hits else None


def legs(trace: Mapping[str, Any], highlight: int | None = None,
         direction: str | None = None) -> list[Leg]:
    """The hops to draw (all, or one direction), each resolved to lanes and a path kind."""
    hops = trace["hops"]
    if highlight is not None and not 0 <= highlight < len(hops):
        raise ValueError(f"highlight {highlight} is not a hop index (0..{len(hops) - 1})")
    lanes = lanes_of(trace)
    kinds = path_kinds(hops)
    dropped = _drop_index(trace)
    out = []
    for i, h in enumerate(hops):
        if direction is not None and h["direction"] != direction:
            continue
        nxt = hops[i + 1] if i + 1 < len(hops) else None
        to_lane = None
        same = False
        if nxt is not None and nxt["action"] not in WALK_STARTS:
            to_lane = lanes.index(nxt["at"])
            if to_lane == lanes.index(h["at"]):
                to_lane, same = None, True
        out.append(Leg(index=i, hop=h, kind=kinds[i], lane=lanes.index(h["at"]),
                       to_lane=to_lane, drop=trace["drop"] if i == dropped else None,
                       highlight=i == highlight, same_lane=same))
    return out


def _mark(text: str, on: bool, col: str) -> str:
    """A rewritten field: bold and in the path's colour."""
    return f'<B><FONT COLOR="{col}">{esc(text)}</FONT></B>' if on else esc(text)


def packet_lines(pkt: Mapping[str, Any], changed: Sequence[str], col: str) -> list[Line]:
    """The packet as it is on a leg: tuple, flags, DSR metadata, rewritten fields marked."""
    proto = pkt["proto"]
    src = _mark(pkt["src"], "src" in changed, col)
    dst = _mark(pkt["dst"], "dst" in changed, col)
    html = f"{esc(proto)} {src} {ARROW} {dst}"
    text = f"{proto} {pkt['src']} {ARROW} {pkt['dst']}"
    if pkt.get("flags"):
        html += " [" + _mark(pkt["flags"], "flags" in changed, col) + "]"
        text += f" [{pkt['flags']}]"
    if pkt.get("icmp"):
        html += f" {esc(pkt['icmp'])}"
        text += f" {pkt['icmp']}"
    if pkt.get("mtu"):
        html += f" mtu {pkt['mtu']}"
        text += f" mtu {pkt['mtu']}"
    if pkt.get("size"):
        html += f" ({pkt['size']} bytes)"
        text += f" ({pkt['size']} bytes)"
    lines = [Line(html=html, text=text)]
    if pkt.get("fragment"):
        f = pkt["fragment"]
        body = (f"fragment id {f['id']}, offset {f['offset']}{', MF' if f['more'] else ''}"
                + ("" if f["offset"] == 0 else " (no L4 header)"))
        lines.append(Line(html=esc(body), text=body))
    if pkt.get("quote"):
        q = pkt["quote"]
        body = f"quoting {q['proto']} {q['src']} {ARROW} {q['dst']}"
        lines.append(Line(html=_mark(body, "quote" in changed, col), text=body))
    if pkt.get("dsr"):
        kind = pkt.get("dsr_kind", "dsr")
        body = f"DSR {kind}: frontend {pkt['dsr']}"
        lines.append(Line(html=_mark(body, "dsr" in changed, col)
                          if "dsr" in changed else
                          f'<FONT COLOR="{COLOURS[PathKind.DSR]}">{esc(body)}</FONT>',
                          text=body))
    elif "dsr" in changed:
        body = "DSR metadata removed"
        lines.append(Line(html=_mark(body, True, col), text=body))
    if "outer" in changed and not pkt.get("outer"):
        body = "outer header removed (decapsulated)"
        lines.append(Line(html=_mark(body, True, col), text=body))
    return lines


def outer_line(pkt: Mapping[str, Any], changed: Sequence[str]) -> Line | None:
    """The outer header of an encapsulated packet, or None."""
    o = pkt.get("outer")
    if not o:
        return None
    if o["type"] == "ipip":
        body = f"IPIP {o['src']} {ARROW} {o['dst']}"
    else:
        body = (f"{o['type'].capitalize()} {o['src']} {ARROW} {o['dst']} UDP/{GENEVE_PORT} "
                f"VNI {o['vni']}")
    html = esc(body)
    if "outer" in changed:
        html = f"<B>{html}</B>"
    return Line(html=f'<FONT COLOR="{ENCAP}">{html}</FONT>', text=body)


def _header(leg: Leg, col: str) -> Line:
    h = leg.hop
    text = str(h["action"])  # the hook is named by the tag at the arrow's tail
    if leg.drop is not None:
        text += f"  {CROSS} {leg.drop['reason']}"
        if leg.drop.get("code") is not None:
            text += f" ({leg.drop['code']})"
    if leg.highlight:
        text += "  \u25c0 violation"
    return Line(html=f'<B><FONT COLOR="{col}">{esc(text)}</FONT></B>', text=text, mono=False)


@attrs.frozen(kw_only=True)
class Label:
    """An HTML-like label with its estimated size in points."""

    html: str
    width: float
    height: float


def _table(rows: list[str], col: str, border: int) -> str:
    return (f'<TABLE BORDER="{border}" COLOR="{col}" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="2" BGCOLOR="{LABEL_FILL}">' + "".join(rows) + "</TABLE>")


def _font(line: Line) -> str:
    face = MONO if line.mono else FONT
    return f'<FONT FACE="{face}" POINT-SIZE="{line.size}">{line.html}</FONT>'


def leg_label(leg: Leg, col: str) -> Label:
    """Number badge, hook and action, then the packet (inside its outer header if any)."""
    h = leg.hop
    badge = (f'<TD BGCOLOR="{col}" VALIGN="TOP"><FONT FACE="{FONT}" COLOR="white" '
             f'POINT-SIZE="{FONT_SIZE}"><B> {leg.index + 1} </B></FONT></TD>')
    head = _header(leg, col)
    pkt_lines = packet_lines(h["packet"], h["changed"], col)
    outer = outer_line(h["packet"], h["changed"])
    body = [f'<TR><TD ALIGN="LEFT">{_font(x)}</TD></TR>' for x in pkt_lines]
    width = max(x.width() for x in pkt_lines)
    height = LINE_H * len(pkt_lines)
    if outer is not None:
        inner = _table(body, ENCAP, 0)
        body = [f'<TR><TD ALIGN="LEFT">{_font(outer)}</TD></TR>',
                f'<TR><TD ALIGN="LEFT">{inner}</TD></TR>']
        width = max(width + 8, outer.width())
        height += LINE_H + 8
        content = _table(body, ENCAP, 1)
    else:
        content = _table(body, col, 0)
    rows = [f'<TR>{badge}<TD ALIGN="LEFT">{_font(head)}</TD></TR>',
            f'<TR><TD></TD><TD ALIGN="LEFT">{content}</TD></TR>']
    border = 2 if leg.highlight else 0
    html = (f'<<TABLE BORDER="{border}" COLOR="{col}" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="1" BGCOLOR="{LABEL_FILL}">' + "".join(rows) + "</TABLE>>")
    width = max(width, head.width()) + 34 + 2 * border
    return Label(html=html, width=width, height=height + LINE_H + 10 + 2 * border)


def marker_label(leg: Leg, col: str) -> Label:
    """A walk's end on a lane: received, dropped with its reason, or lost on the fabric."""
    h = leg.hop
    n = leg.index + 1
    if leg.drop is not None or h["action"] in ("drop", "fabric-drop"):
        reason = leg.drop["reason"] if leg.drop is not None else h["action"]
        text = f"{n} {CROSS} {reason}"
        if leg.drop is not None and leg.drop.get("code") is not None:
            text += f" ({leg.drop['code']})"
        if h["hook"]:
            text += f" at {h['hook']}"
        fg = DROP
    elif h["action"] == "receive":
        text = f"{n} {CHECK} received"
        fg = col
    elif h["hook"] == "xdp":  # XDP_PASS: the node's tc from-netdev takes over
        text = f"{n} xdp: {h['action']}, XDP_PASS to tc"
        fg = col
    elif leg.same_lane and h["hook"]:  # the same host's next program (a pod's node)
        text = f"{n} {h['hook']}: {h['action']}, same node"
        fg = col
    else:
        text = f"{n} {h['hook'] + ': ' if h['hook'] else ''}{h['action']} (walk ends)"
        fg = col
    if leg.highlight:
        text += "  \u25c0 violation"
        fg = HIGHLIGHT
    line = Line(html=f'<B><FONT COLOR="{fg}">{esc(text)}</FONT></B>', text=text, mono=False)
    border = 2 if leg.highlight else 1
    html = (f'<<TABLE BORDER="{border}" COLOR="{fg}" CELLBORDER="0" CELLPADDING="3" '
            f'BGCOLOR="{LABEL_FILL}" STYLE="ROUNDED"><TR><TD>{_font(line)}</TD></TR></TABLE>>')
    return Label(html=html, width=line.width() + 14, height=MARKER_H)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _node(name: str, x: float, y: float, attrs_: Mapping[str, str]) -> str:
    parts = [f'pos="{_fmt(x)},{_fmt(y)}!"'] + [f"{k}={v}" for k, v in attrs_.items()]
    return f"  {name} [{', '.join(parts)}];"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def trace_dot(trace: Mapping[str, Any], highlight: int | None = None, *,
              direction: str | None = None, hosts: Mapping[str, str] | None = None,
              title: str | None = None) -> str:
    """DOT source of one flow's sequence diagram (deterministic; see the module docstring).

    highlight: index into trace["hops"] drawn as the violating leg. direction: "request" or
    "reply" to draw only that half (numbers stay those of the full trace). hosts: a subtitle
    per lane (e.g. its IP). title: replaces the default first title line.
    """
    if direction not in (None, "request", "reply"):
        raise ValueError(f"direction must be request or reply, not {direction!r}")
    drawn = legs(trace, highlight, direction)
    if highlight is not None and all(not leg.highlight for leg in drawn):
        raise ValueError(f"highlight {highlight} is not among the drawn ({direction}) hops")
    lanes = lanes_of(trace)
    used = sorted({leg.lane for leg in drawn} | {leg.to_lane for leg in drawn
                                                  if leg.to_lane is not None})
    subtitles = dict(hosts or {})
    subtitles.setdefault(FABRIC, "the network between hosts")

    def leg_colour(leg: Leg) -> str:
        return HIGHLIGHT if leg.highlight else COLOURS[leg.kind]

    labels = {leg.index: (leg_label(leg, leg_colour(leg)) if leg.to_lane is not None
                          else marker_label(leg, leg_colour(leg))) for leg in drawn}

    # Lane x positions: headers must not touch, each arrow's label must fit in its span.
    header_w = {i: max(len(lanes[i]) * 13 * SANS_EM,
                       len(subtitles.get(lanes[i], "")) * SMALL * SANS_EM) + 24 for i in used}
    xs: dict[int, float] = {}
    prev: int | None = None
    for i in used:
        x = 0.0 if prev is None else xs[prev] + max(
            LANE_MIN_GAP, (header_w[prev] + header_w[i]) / 2 + 20)
        for leg in drawn:
            if leg.to_lane is None:
                continue
            lo, hi = sorted((leg.lane, leg.to_lane))
            if hi == i and lo in xs:
                x = max(x, xs[lo] + labels[leg.index].width + 2 * LABEL_MARGIN)
        xs[i] = x
        prev = i
    left = min(xs.values()) - max(header_w.values()) / 2 - 20
    right = max(xs.values()) + max(header_w.values()) / 2 + 20
    for leg in drawn:
        if leg.to_lane is None:
            half = labels[leg.index].width / 2 + 10
            left = min(left, xs[leg.lane] - half)
            right = max(right, xs[leg.lane] + half)

    # Rows, top to bottom (y grows downwards here, flipped when written).
    y = 0.0
    title_lines = [title or f"flow {trace['name']}: {trace['outcome']}"]
    sub = [f"client {trace['client']} {ARROW} frontend {trace['frontend']}"]
    if trace.get("backend"):
        sub.append(f"backend {trace['backend']}")
    if trace.get("drop"):
        sub.append(f"dropped at {trace['drop']['at']}: {trace['drop']['reason']}")
    if direction is not None:
        sub.append(f"{direction} legs only")
    title_y = y + 18
    y += 52
    head_y = y + 18
    y += 48
    rows: dict[int, float] = {}
    for leg in drawn:
        lab = labels[leg.index]
        if leg.to_lane is None:
            y += ROW_GAP + lab.height / 2
            rows[leg.index] = y
            y += lab.height / 2
        else:
            y += ROW_GAP + lab.height + 8
            rows[leg.index] = y
    bottom = y + 26
    legend_y = bottom + 34
    height = legend_y + 30

    def gy(v: float) -> float:
        return height - v

    out = ["digraph flow {",
           '  graph [layout=neato, inputscale=72, notranslate=true, splines=false, '
           'outputorder=edgesfirst, bgcolor="white", pad="0.3"];',
           f'  node [fontname="{FONT}", fontsize={FONT_SIZE}, margin=0];',
           '  edge [arrowsize=0.8];']
    mid = (left + right) / 2
    title_html = (f'<<FONT POINT-SIZE="{TITLE_SIZE}"><B>{esc(title_lines[0])}</B></FONT>'
                  f'<BR/><FONT POINT-SIZE="{SMALL + 1}" COLOR="{MUTED}">'
                  f'{esc("  ·  ".join(sub))}</FONT>>')
    out.append(_node("title", mid, gy(title_y), {"shape": "plain", "label": title_html}))
    for i in used:
        name = lanes[i]
        fill = "white" if name == FABRIC else LANE_FILL
        style = '"rounded,filled,dashed"' if name == FABRIC else '"rounded,filled"'
        html = f"<<B>{esc(name)}</B>"
        if subtitles.get(name):
            html += (f'<BR/><FONT POINT-SIZE="{SMALL}" COLOR="{MUTED}">'
                     f"{esc(subtitles[name])}</FONT>")
        html += ">"
        out.append(_node(f"lane{i}", xs[i], gy(head_y),
                         {"shape": "box", "style": style, "fillcolor": _q(fill),
                          "color": _q(LIFELINE), "fontsize": "13", "label": html,
                          "width": _fmt(header_w[i] / 72), "height": "0.5", "fixedsize": "true"}))
        out.append(_node(f"end{i}", xs[i], gy(bottom),
                         {"shape": "point", "width": "0.01", "color": _q(LIFELINE)}))
        out.append(f'  lane{i} -> end{i} [style=dashed, color="{LIFELINE}", arrowhead=none];')
    for leg in drawn:
        n = leg.index
        col = leg_colour(leg)
        yy = gy(rows[n])
        lab = labels[n]
        x0 = xs[leg.lane]
        if leg.to_lane is None:
            out.append(_node(f"m{n}", x0, yy, {"shape": "plain", "label": lab.html}))
            continue
        x1 = xs[leg.to_lane]
        tail = f"a{n}"
        if leg.hop["hook"]:
            tag = esc(str(leg.hop["hook"]))
            out.append(_node(tail, x0, yy, {
                "shape": "box", "style": '"rounded,filled"', "fillcolor": '"white"',
                "color": _q(col), "penwidth": "1.2", "fontsize": str(SMALL),
                "fontcolor": _q(col), "height": "0.22", "margin": '"0.04,0.01"',
                "label": _q(tag)}))
        else:
            out.append(_node(tail, x0, yy, {"shape": "point", "width": "0.06",
                                            "color": _q(col)}))
        out.append(_node(f"b{n}", x1, yy, {"shape": "point", "width": "0.03",
                                           "color": _q(col)}))
        out.append(_node(f"l{n}", (x0 + x1) / 2, gy(rows[n] - 8 - lab.height / 2),
                         {"shape": "plain", "label": lab.html}))
        width = "3.0" if leg.highlight else "1.6"
        out.append(f'  {tail} -> b{n} [color="{col}", penwidth={width}];')
    out.append(_node("legend", mid, gy(legend_y), {"shape": "plain",
                                                   "label": legend_html(highlight is not None)}))
    out.append("}")
    return "\n".join(out) + "\n"


def legend_html(with_highlight: bool) -> str:
    """The colour key shared by all flow diagrams."""
    cells = []
    for kind in (PathKind.SNAT, PathKind.DSR, PathKind.LOCAL, PathKind.PLAIN):
        cells.append(f'<TD><FONT COLOR="{COLOURS[kind]}"><B>\u2501\u2501</B></FONT> '
                     f"{esc(kind.value)}</TD>")
    cells.append(f'<TD><FONT COLOR="{ENCAP}"><B>\u25ad</B></FONT> outer header</TD>')
    cells.append(f'<TD><FONT COLOR="{DROP}"><B>{CROSS}</B></FONT> drop (reason, code)</TD>')
    if with_highlight:
        cells.append(f'<TD><FONT COLOR="{HIGHLIGHT}"><B>\u2501\u2501</B></FONT> '
                     "violating leg</TD>")
    cells.append("<TD><B>bold</B>: rewritten on this leg</TD>")
    return (f'<<TABLE BORDER="0" CELLSPACING="8" CELLPADDING="0"><TR>'
            f'{"".join(cells)}</TR></TABLE>>').replace("<TD>", f'<TD><FONT POINT-SIZE="{SMALL}">'
                                                       ).replace("</TD>", "</FONT></TD>")
