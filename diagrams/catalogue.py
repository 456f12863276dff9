"""The standard set: which scenario, flow and half of it each committed picture shows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from diagrams.render import write
from diagrams.sequence import trace_dot
from model.flows import run_flows, trace_json
from model.network import World
from model.scenario import Scenario, load

STANDARD_DIR = Path(__file__).resolve().parent / "standard"


@attrs.frozen(kw_only=True)
class Picture:
    """One standard flow diagram: a flow of a scenario under diagrams/standard/."""

    name: str  # output file stem
    scenario: str  # file name under diagrams/standard/
    flow: str
    title: str
    direction: str | None = None  # "request" / "reply": one half only


PICTURES: tuple[Picture, ...] = (
    Picture(name="01-snat-inbound", scenario="snat-remote.yaml", flow="snat-remote",
            direction="request",
            title="SNAT mode, backend on another node: inbound (article picture 1)"),
    Picture(name="02-snat-reply", scenario="snat-remote.yaml", flow="snat-remote",
            direction="reply",
            title="SNAT mode, backend on another node: reply (article picture 2)"),
    Picture(name="03-dsr", scenario="dsr-remote.yaml", flow="dsr-remote",
            title="DSR mode, IPv4 option dispatch (article picture 3)"),
    Picture(name="04-local-backend", scenario="local-backend.yaml", flow="local-backend",
            title="Backend on the node the client contacted (any mode)"),
    Picture(name="05-etp-local-has-backend", scenario="etp-local.yaml",
            flow="etp-local-has-backend",
            title="externalTrafficPolicy=Local, node with a local backend"),
    Picture(name="06-etp-local-no-backend", scenario="etp-local.yaml",
            flow="etp-local-no-backend",
            title="externalTrafficPolicy=Local, node without a local backend"),
    Picture(name="07-hybrid-tcp", scenario="hybrid.yaml", flow="hybrid-tcp",
            title="Hybrid mode: TCP takes the DSR path"),
    Picture(name="08-hybrid-udp", scenario="hybrid.yaml", flow="hybrid-udp",
            title="Hybrid mode: UDP takes the SNAT path"),
    Picture(name="09-geneve-dsr", scenario="geneve-dsr.yaml", flow="geneve-dsr",
            title="DSR with Geneve dispatch in tunnel mode"),
    Picture(name="10-ipv6-dsr", scenario="ipv6-dsr.yaml", flow="ipv6-dsr",
            title="IPv6 DSR: the frontend in a Destination Options header"),
    Picture(name="15-xdp-remote", scenario="xdp.yaml", flow="xdp-remote",
            title="XDP acceleration, backend on another node: served at XDP both ways"),
    Picture(name="16-xdp-local", scenario="xdp.yaml", flow="xdp-local",
            title="XDP acceleration, local backend: DNAT at XDP, hand-over to tc"),
    Picture(name="20-pod-clusterip", scenario="eastwest.yaml", flow="pod-clusterip",
            title="A pod calls a ClusterIP, socket-LB off: per-packet DNAT at from-container"),
    Picture(name="21-pod-clusterip-socklb", scenario="eastwest-socklb.yaml",
            flow="pod-clusterip-socklb",
            title="A pod calls a ClusterIP, socket-LB on: translated at connect()"),
    Picture(name="22-hairpin", scenario="eastwest.yaml", flow="hairpin",
            title="Hairpin: a backend calls its own ClusterIP (service loopback source)"),
)
# DSR dispatch ipip (docs/ipip.md), numbered apart from the pictures other features add.
PICTURES += (
    Picture(name="21-ipip-dsr", scenario="ipip-dsr.yaml", flow="ipip-dsr",
            title="DSR with IPIP dispatch: no DNAT on the LB node, IPIP terminated on the "
                  "backend's node (v1.20)"),
)


def hosts_of(world: World) -> dict[str, str]:
    """Lane subtitles: every host's address, and a pod's node."""
    c = world.cluster
    out = {n.name: f"node {n.ip}" for n in c.nodes}
    out.update({p.name: f"pod {p.ip} on {p.node}" for p in c.pods})
    out.update({cl.name: f"client {cl.ip}" for cl in c.clients})
    return out


def flow_dots(scenario: Scenario) -> dict[str, str]:
    """DOT of every flow of a scenario, by flow name (flows share node state, in order)."""
    _, traces = run_flows(scenario.world, scenario.flows)
    hosts = hosts_of(scenario.world)
    return {t.spec.name: trace_dot(trace_json(t), hosts=hosts) for t in traces}


def picture_dot(pic: Picture, scenarios: Mapping[str, Scenario] | None = None) -> str:
    """DOT of one standard picture."""
    sc = (scenarios or {}).get(pic.scenario) or load(STANDARD_DIR / pic.scenario)
    _, traces = run_flows(sc.world, sc.flows)
    trace = next(t for t in traces if t.spec.name == pic.flow)
    return trace_dot(trace_json(trace), direction=pic.direction, hosts=hosts_of(sc.world),
                     title=pic.title)


def standard_dots() -> dict[str, str]:
    """Every standard flow picture and lifecycle diagram as DOT, by output stem."""
    from diagrams.lifecycle import STATE_PICTURES, state_dot

    cache: dict[str, Scenario] = {}
    out = {}
    for pic in PICTURES:
        if pic.scenario not in cache:
            cache[pic.scenario] = load(STANDARD_DIR / pic.scenario)
        out[pic.name] = picture_dot(pic, cache)
    for name, mode in STATE_PICTURES:
        out[name] = state_dot(mode)
    return out


def draw_standard(outdir: str | Path, formats: Iterable[str] = ("svg", "dot")) -> list[Path]:
    """Write the standard set into outdir, one file per picture and format."""
    written = []
    for name, dot in standard_dots().items():
        for fmt in formats:
            path = Path(outdir) / f"{name}.{fmt}"
            write(dot, path)
            written.append(path)
    return written
