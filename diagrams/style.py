"""One palette and one set of fonts for every diagram, so SNAT is always orange, DSR blue."""

from __future__ import annotations

import enum


class PathKind(enum.Enum):
    """Which NodePort path a leg belongs to; decides its colour in every diagram."""

    SNAT = "SNAT (reverse via LB node)"
    DSR = "DSR (direct server return)"
    LOCAL = "local backend"
    REJECT = "rejected / dropped"
    PLAIN = "before load balancing"


# Colour-blind-safe hues (Okabe-Ito) plus grey; each is readable on white.
COLOURS: dict[PathKind, str] = {
    PathKind.SNAT: "#D55E00",
    PathKind.DSR: "#0072B2",
    PathKind.LOCAL: "#009E73",
    PathKind.REJECT: "#8B1A1A",
    PathKind.PLAIN: "#3C3C3C",
}
HIGHLIGHT = "#E0001B"  # the violating leg of a counterexample
ENCAP = "#7A3E9D"  # outer (Geneve) header
DROP = "#8B1A1A"
LIFELINE = "#9A9A9A"
LANE_FILL = "#F2F2F2"
LABEL_FILL = "#FFFFFF"
MUTED = "#6B6B6B"

FONT = "DejaVu Sans"
MONO = "DejaVu Sans Mono"
FONT_SIZE = 11  # packet text
SMALL = 9  # hook tags, legend
TITLE_SIZE = 15
# Average advance of DejaVu Sans Mono is 0.602 em; proportional text is narrower on average.
MONO_EM = 0.61
SANS_EM = 0.58

# Actions (model.nodeport.Step values) and the path they put a packet on.
ACTION_KIND: dict[str, PathKind] = {
    "dnat+snat": PathKind.SNAT,
    "rev-snat": PathKind.SNAT,
    "masq": PathKind.SNAT,  # bpf.masquerade: the same SNAT map and range
    "dnat+dsr": PathKind.DSR,
    "ipip": PathKind.DSR,  # DSR dispatch ipip: encapsulated, no DNAT
    "ipip-decap+dnat": PathKind.DSR,
    "dsr-ingress": PathKind.DSR,
    "dnat": PathKind.LOCAL,
    "icmp-reject": PathKind.REJECT,
    "drop": PathKind.REJECT,
}


def colour(kind: PathKind) -> str:
    """The colour of a path kind."""
    return COLOURS[kind]


def esc(text: str) -> str:
    """Escape text for a Graphviz HTML-like label."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
