"""`nodeport trace`: run a scenario's flows through the model and show every leg."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from model.errors import InputError
from model.flows import run_flows, trace_json
from model.scenario import load
from nodeport.term import colour_on, paint


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the trace subcommand."""
    p = sub.add_parser("trace", help="trace a scenario's flows leg by leg",
                       description="Trace each scenario's flows through the model. A file "
                       "that is refused is reported on stderr and the others still run; "
                       "the exit status is then 2.")
    p.add_argument("scenario", nargs="+", help="scenario file(s), YAML or JSON")
    p.add_argument("--json", action="store_true", help="machine-readable trace JSON")
    p.set_defaults(func=run)


def _fmt(pkt: dict[str, Any], changed: list[str]) -> str:
    def mark(field: str) -> str:
        return "*" if field in changed else ""

    text = f"{pkt['proto']:<4} {mark('src')}{pkt['src']} -> {mark('dst')}{pkt['dst']}"
    if pkt.get("flags"):
        text += f" [{mark('flags')}{pkt['flags']}]"
    if pkt.get("icmp"):
        text += f" icmp={pkt['icmp']}"
    if pkt.get("mtu"):
        text += f" mtu={pkt['mtu']}"
    if pkt.get("quote"):
        q = pkt["quote"]
        text += f" {mark('quote')}quote=[{q['proto']} {q['src']} -> {q['dst']}]"
    if pkt.get("fragment"):
        f = pkt["fragment"]
        text += f" frag=[id {f['id']} off {f['offset']}{' MF' if f['more'] else ''}]"
    if pkt.get("dsr"):
        text += f" {mark('dsr')}dsr={pkt['dsr']} ({pkt['dsr_kind']})"
    if pkt.get("size"):
        text += f" len={pkt['size']}"
    if pkt.get("ip_options"):
        text += f" ipopts={pkt['ip_options']}"
    if pkt.get("outer"):
        o = pkt["outer"]
        vni = f" vni={o['vni']}" if "vni" in o else ""
        text += f" {mark('outer')}outer={o['type']} {o['src']}->{o['dst']}{vni}"
    return text


def render(flow: dict[str, Any], colour: bool = False) -> str:
    """The human trace of one flow: a line per leg, rewritten fields starred."""
    ok = flow["outcome"] == "delivered"
    head = f"flow {flow['name']}: " + paint(flow["outcome"], "green" if ok else "red", colour)
    if flow["drop"]:
        head += f" at {flow['drop']['at']}: {flow['drop']['reason']}"
    if flow["backend"]:
        head += f" (backend {flow['backend']})"
    lines = [head]
    for i, h in enumerate(flow["hops"], 1):
        arrow = "<-" if h["direction"] == "reply" else "->"
        lines.append(f"  {i:>2} {arrow} {h['at']:<10} {h['hook'] or '':<14} {h['action']:<12} "
                     f"{_fmt(h['packet'], h['changed'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Trace each scenario given; a refused file is reported and the rest still run (exit 2)."""
    from nodeport.cli import fail

    docs = []
    refused = 0
    for path in args.scenario:
        try:
            scenario = load(path)
        except InputError as exc:
            fail(str(exc))
            refused += 1
            continue
        _, traces = run_flows(scenario.world, scenario.flows)
        docs.append({"scenario": path, "flows": [trace_json(t) for t in traces]})
    if args.json:
        if docs:
            out = docs[0] if len(args.scenario) == 1 else {"scenarios": docs}
            print(json.dumps(out, indent=2))
    else:
        colour = colour_on(sys.stdout)
        for doc in docs:
            print(paint(f"# {doc['scenario']}", "bold", colour))
            for flow in doc["flows"]:
                print(render(flow, colour))
    return 2 if refused else 0
