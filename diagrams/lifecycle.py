"""Conntrack and SNAT entry lifecycles, read off the model by running a flow to its end.

Nothing here restates Cilium's rules: the flow is driven through model.network.walk packet
by packet, every node's CT and SNAT map is snapshotted after each walk, entries are
classified with model.conntrack.state_of, and time is then advanced past each lifetime with
the agent's GC (model.network.gc_all) until every entry is gone. The picture is a column
per map entry (grouped by node) and a row per event; a box marks each state change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv6Address
from typing import Any

import attrs

from diagrams.sequence import ARROW
from diagrams.style import (
    COLOURS,
    FONT,
    FONT_SIZE,
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
from model import conntrack
from model.conntrack import CtState
from model.errors import InputError
from model.flows import FlowSpec, request
from model.hooks import Step
from model.maps import CtEntry, CtTuple, NatEntry, NatTuple, TupleFlags
from model.network import ClusterState, EndKind, World, gc_all, initial_state, reply_to, walk
from model.scenario import load
from model.values import Proto

# (output stem, mode) of the lifecycle pictures in the standard set.
STATE_PICTURES: tuple[tuple[str, str], ...] = (
    ("11-lifecycle-snat", "snat"), ("12-lifecycle-dsr", "dsr"),
    ("13-lifecycle-hybrid", "hybrid"), ("14-lifecycle-local", "local"))
MODE_SCENARIOS = {"snat": "snat-remote.yaml", "dsr": "dsr-remote.yaml",
                  "hybrid": "hybrid.yaml", "local": "local-backend.yaml"}
TCP_PACKETS = 3  # SYN, ACK, FIN (each answered by the backend)
UDP_PACKETS = 2
MAX_EXPIRY_ROUNDS = 8

EntryId = tuple[str, str, Any]  # (node, "ct" | "snat", key)
Snapshot = dict[EntryId, Any]


@attrs.frozen(kw_only=True)
class Event:
    """A moment in the run: after one walk, at a lifetime's end, or after the CT GC."""

    label: str
    now: int
    kind: PathKind
    entries: Mapping[EntryId, Any]


def _snapshot(state: ClusterState) -> Snapshot:
    snap: Snapshot = {}
    for node in sorted(state.nodes):
        st = state.nodes[node]
        for ck, ce in st.ct.entries.items():
            snap[(node, "ct", ck)] = ce
        for nk, ne in st.snat.entries.items():
            snap[(node, "snat", nk)] = ne
    return snap


def _flow_kind(steps: Sequence[Step]) -> PathKind:
    for s in steps:
        if s is Step.SNAT:
            return PathKind.SNAT
        if s is Step.DSR:
            return PathKind.DSR
        if s is Step.DNAT:
            return PathKind.LOCAL
    return PathKind.REJECT


def _flags_name(pkt_flags: str | None, proto: Proto) -> str:
    names = {"S": "SYN", "SA": "SYN-ACK", "A": "ACK", "FA": "FIN-ACK", "R": "RST"}
    if proto is not Proto.TCP:
        return proto.name
    return names.get(pkt_flags or "", pkt_flags or "")


def run_lifecycle(world: World, specs: Sequence[FlowSpec]) -> list[Event]:
    """Drive the flows packet by packet, then let time and GC remove every entry."""
    state = initial_state(world)
    events = [Event(label="start: maps empty", now=0, kind=PathKind.PLAIN, entries={})]
    for spec in specs:
        kind = PathKind.PLAIN
        for i in range(spec.packets):
            state = attrs.evolve(state, now=state.now + 1)
            pkt = request(spec, i)
            w = walk(world, state, ("client", spec.client), pkt, reply=False, via=spec.via,
                     pinned=world.cluster.pod(spec.backend).ip if spec.backend else None)
            state = w.state
            if kind is PathKind.PLAIN:
                kind = _flow_kind([h.action for h in w.hops if isinstance(h.action, Step)])
            name = _flags_name(pkt.flags.letters(), pkt.proto)
            events.append(Event(label=f"{spec.name} #{i + 1} {ARROW} {name}", now=state.now,
                                kind=kind, entries=_snapshot(state)))
            if w.end is not EndKind.POD:
                break
            answer = reply_to(w.packet)
            r = walk(world, state, ("pod", w.at), answer, reply=True)
            state = r.state
            name = _flags_name(answer.flags.letters(), answer.proto)
            events.append(Event(label=f"{spec.name} #{i + 1} \u2190 {name} (reply)",
                                now=state.now, kind=kind, entries=_snapshot(state)))
    for _ in range(MAX_EXPIRY_ROUNDS):
        lifetimes = [e.lifetime for st in state.nodes.values() for e in st.ct.entries.values()]
        if not lifetimes and not any(len(st.snat) for st in state.nodes.values()):
            break
        start = state.now
        if lifetimes:
            state = attrs.evolve(state, now=min(lifetimes) + 1)
            events.append(Event(label=f"t={state.now} (+{state.now - start} s idle)",
                                now=state.now, kind=PathKind.PLAIN, entries=_snapshot(state)))
        state = gc_all(state)
        events.append(Event(label=f"t={state.now}: agent CT GC", now=state.now,
                            kind=PathKind.PLAIN, entries=_snapshot(state)))
    return events


def mode_specs(specs: Sequence[FlowSpec]) -> list[FlowSpec]:
    """The scenario's flows run to completion: TCP opens, sends data, closes with FIN."""
    return [attrs.evolve(s, packets=TCP_PACKETS, close=True, idle=0) if s.proto is Proto.TCP
            else attrs.evolve(s, packets=UDP_PACKETS, idle=0) for s in specs]


# ---- describing entries -------------------------------------------------------------------

def _a(addr: object) -> str:
    return f"[{addr}]" if isinstance(addr, IPv6Address) else str(addr)


def _ct_map(key: CtTuple) -> str:
    fam = "6" if isinstance(key.daddr, IPv6Address) else "4"
    return f"cilium_ct{fam}_global" if key.nexthdr is Proto.TCP else f"cilium_ct_any{fam}_global"


def entry_title(eid: EntryId, first: Any) -> list[str]:
    """Header lines of an entry's column: node, map, role, key in Cilium's field order."""
    node, which, key = eid
    if which == "ct":
        assert isinstance(key, CtTuple) and isinstance(first, CtEntry)
        if key.flags & TupleFlags.SERVICE:
            role = "CT_SERVICE"
        elif first.dsr_internal:
            role = "CT_EGRESS dsr_internal"
        elif first.node_port:
            role = "CT_EGRESS node_port"
        else:
            role = f"CT {key.flags.name}"
        return [f"{node}: {role}", _ct_map(key),
                f"saddr {_a(key.saddr)} daddr {_a(key.daddr)}",
                f"sport {key.sport} dport {key.dport} {key.nexthdr.name} {key.flags.name}"]
    assert isinstance(key, NatTuple) and isinstance(first, NatEntry)
    fam = "6" if isinstance(key.saddr, IPv6Address) else "4"
    direction = "IN (reverse)" if key.flags is TupleFlags.IN else "OUT"
    to = "to_daddr" if key.flags is TupleFlags.IN else "to_saddr"
    return [f"{node}: SNAT {direction}", f"cilium_snat_v{fam}_external",
            f"{_a(key.saddr)}:{key.sport} {ARROW} {_a(key.daddr)}:{key.dport} {key.nexthdr.name}",
            f"{to} {_a(first.to_addr)}:{first.to_port}"]


def _timeout_name(entry: CtEntry, key: CtTuple, now: int) -> str:
    left = entry.lifetime - now
    if entry.tx_closing and entry.rx_closing:
        return f"+{left} s CT_CLOSE_TIMEOUT"
    if key.nexthdr is not Proto.TCP:
        return f"+{left} s non-TCP lifetime"
    if not entry.seen_non_syn:
        return f"+{left} s CT_SYN_TIMEOUT"
    if key.flags & TupleFlags.SERVICE:
        return f"+{left} s service TCP lifetime"
    return f"+{left} s TCP lifetime"


def ct_flags(entry: CtEntry) -> str:
    """The ct_entry fields the NodePort path reads, as `cilium bpf ct list` would show."""
    parts = []
    if entry.backend_id:
        parts.append(f"backend_id={entry.backend_id}")
    if entry.rev_nat_index:
        parts.append(f"rev_nat_index={entry.rev_nat_index}")
    if entry.node_port:
        parts.append("node_port=1")
    if entry.dsr_internal:
        parts.append("dsr_internal=1")
    if entry.nat_addr is not None:
        parts.append(f"nat={_a(entry.nat_addr)}:{entry.nat_port}")
    if entry.tx_closing:
        parts.append("tx_closing")
    if entry.rx_closing:
        parts.append("rx_closing")
    return " ".join(parts)


def classify(eid: EntryId, value: Any, now: int) -> str:
    """State name of an entry at a moment; SNAT entries have no timer of their own."""
    if value is None:
        return "removed"
    if eid[1] == "ct":
        return str(conntrack.state_of(value, now).value)
    return "present"


@attrs.frozen(kw_only=True)
class Mark:
    """A cell of the picture: an entry's state change, or a use without a change."""

    row: int
    state: str
    lines: tuple[str, ...]
    used: bool = False


def entry_marks(eid: EntryId, events: Sequence[Event]) -> list[Mark]:
    """The rows where this entry is created, changes state, is refreshed, expires, goes."""
    marks: list[Mark] = []
    prev_val: Any = None
    prev_state = "removed"
    for row, ev in enumerate(events):
        val = ev.entries.get(eid)
        state = classify(eid, val, ev.now)
        if state == prev_state and val == prev_val:
            continue
        lines: list[str] = []
        if isinstance(val, CtEntry) and state == CtState.EXPIRED.value:
            lines.append(f"lifetime ended at t={val.lifetime}")
        elif isinstance(val, CtEntry):
            lines.append(f"expires t={val.lifetime} ({_timeout_name(val, eid[2], ev.now)})")
            flags = ct_flags(val)
            if flags and (prev_val is None or ct_flags(prev_val) != flags):
                lines.append(flags)
        elif isinstance(val, NatEntry) and prev_val is None:
            lines.append(f"created t={val.created}")
        if state == prev_state:
            marks.append(Mark(row=row, state=state, lines=tuple(lines), used=True))
        else:
            name = "created" if prev_state == "removed" and eid[1] == "snat" else state
            if state == "removed":
                name = "removed by GC"
            marks.append(Mark(row=row, state=name, lines=tuple(lines)))
        prev_val, prev_state = val, state
    return marks


# ---- drawing ------------------------------------------------------------------------------

STATE_FILL = {"created": "#FFF7E0", CtState.CREATED.value: "#FFF7E0",
              CtState.ESTABLISHED.value: "#FFFFFF", CtState.HALF_CLOSING.value: "#F0F0F0",
              CtState.CLOSING.value: "#E4E4E4", CtState.EXPIRED.value: "#D6D6D6",
              "removed by GC": "#FFFFFF", "present": "#FFFFFF"}


def _w(text: str, size: int, mono: bool) -> float:
    return len(text) * size * (MONO_EM if mono else SANS_EM)


def _pos(x: float, y: float) -> str:
    return f'pos="{x:.1f},{y:.1f}!"'


def lifecycle_dot(events: Sequence[Event], title: str, subtitle: str) -> str:
    """DOT of the lifecycle picture (pinned layout, deterministic like the flow diagrams)."""
    ids: list[EntryId] = []
    for ev in events:
        for eid in ev.entries:
            if eid not in ids:
                ids.append(eid)
    seen = {eid: i for i, eid in enumerate(ids)}
    ids.sort(key=lambda e: (e[0], e[1] != "ct", seen[e]))
    first = {eid: next(ev.entries[eid] for ev in events if eid in ev.entries) for eid in ids}
    kind_of = {eid: next(ev.kind for ev in events if eid in ev.entries) for eid in ids}
    marks = {eid: entry_marks(eid, events) for eid in ids}
    heads = {eid: entry_title(eid, first[eid]) for eid in ids}
    col_w = {eid: max(max(_w(t, SMALL, True) for t in heads[eid][1:]),
                      _w(heads[eid][0], FONT_SIZE, False),
                      *(max([_w(m.state, FONT_SIZE, False)]
                            + [_w(t, SMALL, True) for t in m.lines]) for m in marks[eid]))
             + 28 for eid in ids}
    axis_w = max(_w(ev.label, FONT_SIZE, False) for ev in events) + 30
    xs: dict[EntryId, float] = {}
    x = axis_w + 20
    for eid in ids:
        xs[eid] = x + col_w[eid] / 2
        x += col_w[eid] + 24
    right = x
    row_h = []
    for r in range(len(events)):
        h = 24.0
        for eid in ids:
            for m in marks[eid]:
                if m.row == r:
                    h = max(h, (16 if m.used else 24) + 15 * len(m.lines) + 10)
        row_h.append(h)
    head_h = 4 * 14 + 16
    top = 56 + head_h + 16
    ys: list[float] = []
    y = float(top)
    for rh in row_h:
        ys.append(y + rh / 2)
        y += rh + 6
    height = y + 20

    def gy(v: float) -> float:
        return height - v

    out = ["digraph lifecycle {",
           '  graph [layout=neato, inputscale=72, notranslate=true, splines=false, '
           'outputorder=edgesfirst, bgcolor="white", pad="0.3"];',
           f'  node [fontname="{FONT}", fontsize={FONT_SIZE}, margin=0, shape=plain];',
           '  edge [arrowsize=0.7];']
    out.append(f'  title [{_pos(right / 2, gy(24))}, label=<<FONT POINT-SIZE="{TITLE_SIZE}"><B>'
               f'{esc(title)}</B></FONT><BR/><FONT POINT-SIZE="{SMALL + 1}" COLOR="{MUTED}">'
               f"{esc(subtitle)}</FONT>>];")
    for r, ev in enumerate(events):
        out.append(f'  ev{r} [{_pos(axis_w / 2 + 10, gy(ys[r]))}, label=<<FONT COLOR="'
                   f'{COLOURS[ev.kind]}">{esc(ev.label)}</FONT>>];')
        out.append(f"  g{r}a [{_pos(axis_w + 14, gy(ys[r]))}, shape=point, width=0.01, "
                   f'color="{LIFELINE}"];')
        out.append(f"  g{r}b [{_pos(right, gy(ys[r]))}, shape=point, width=0.01, "
                   f'color="{LIFELINE}"];')
        out.append(f'  g{r}a -> g{r}b [color="#EBEBEB", arrowhead=none];')
    for n, eid in enumerate(ids):
        col = COLOURS[kind_of[eid]]
        head = heads[eid]
        label = (f'<<TABLE BORDER="1" COLOR="{col}" CELLBORDER="0" CELLPADDING="2" '
                 f'BGCOLOR="{LANE_FILL}" STYLE="ROUNDED"><TR><TD><B>{esc(head[0])}</B></TD></TR>'
                 + "".join(f'<TR><TD><FONT FACE="{MONO}" POINT-SIZE="{SMALL}">{esc(t)}'
                           "</FONT></TD></TR>" for t in head[1:]) + "</TABLE>>")
        out.append(f"  h{n} [{_pos(xs[eid], gy(56 + head_h / 2))}, label={label}];")
        prev = f"h{n}"
        for m in marks[eid]:
            name = f"s{n}_{m.row}"
            detail = "".join(f'<TR><TD><FONT FACE="{MONO}" POINT-SIZE="{SMALL}">{esc(t)}'
                             "</FONT></TD></TR>" for t in m.lines)
            if m.used:
                label = (f'<<TABLE BORDER="0" CELLPADDING="1" BGCOLOR="{LABEL_FILL}"><TR><TD>'
                         f'<FONT COLOR="{col}" POINT-SIZE="{SMALL}">\u25cf used</FONT></TD></TR>'
                         f"{detail}</TABLE>>")
            else:
                dashed = ' STYLE="ROUNDED"' if m.state != "removed by GC" else ""
                fill = STATE_FILL.get(m.state, LABEL_FILL)
                fg = MUTED if m.state in ("removed by GC", CtState.EXPIRED.value) else col
                label = (f'<<TABLE BORDER="1" COLOR="{fg}" CELLBORDER="0" CELLPADDING="2" '
                         f'BGCOLOR="{fill}"{dashed}><TR><TD><B><FONT COLOR="{fg}">'
                         f"{esc(m.state)}</FONT></B></TD></TR>{detail}</TABLE>>")
            out.append(f"  {name} [{_pos(xs[eid], gy(ys[m.row]))}, label={label}];")
            style = "dashed" if m.state == "removed by GC" else "solid"
            out.append(f'  {prev} -> {name} [color="{col}", style={style}];')
            prev = name
    out.append("}")
    return "\n".join(out) + "\n"


def state_dot(mode: str) -> str:
    """The lifecycle picture of one mode's standard scenario."""
    from diagrams.catalogue import STANDARD_DIR

    if mode not in MODE_SCENARIOS:
        raise InputError(f"--state: unknown mode {mode!r} (one of {', '.join(MODE_SCENARIOS)})")
    sc = load(STANDARD_DIR / MODE_SCENARIOS[mode])
    return scenario_lifecycle_dot(sc.world, sc.flows, f"CT and SNAT entry lifecycle: {mode}",
                                  f"diagrams/standard/{MODE_SCENARIOS[mode]}")


def scenario_lifecycle_dot(world: World, flows: Sequence[FlowSpec], title: str,
                           source: str) -> str:
    """Run flows to completion (TCP: SYN, ACK, FIN) and draw every entry's life."""
    events = run_lifecycle(world, mode_specs(flows))
    cfg = world.cfg
    sub = (f"{source}  ·  Cilium {cfg.version.value}, loadBalancer.mode={cfg.mode.value}"
           f"  ·  each row is one walk, a lifetime's end or the agent's GC")
    return lifecycle_dot(events, title, sub)
