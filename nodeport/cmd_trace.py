"""`nodeport trace`: run a scenario's flows through the model and show every leg."""

from __future__ import annotations

import argparse
import json
from typing import Any

from model.flows import run_flows, trace_json
from model.scenario import load


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the trace subcommand."""
    p = sub.add_parser("trace", help="trace a scenario's flows leg by leg")
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
    if pkt.get("dsr"):
        text += f" {mark('dsr')}dsr={pkt['dsr']} ({pkt['dsr_kind']})"
    if pkt.get("outer"):
        o = pkt["outer"]
        text += f" {mark('outer')}outer=geneve {o['src']}->{o['dst']} vni={o['vni']}"
    return text


def render(flow: dict[str, Any]) -> str:
    """The human trace of one flow: a line per leg, rewritten fields starred."""
    head = f"flow {flow['name']}: {flow['outcome']}"
    if flow["backend"]:
        head += f" (backend {flow['backend']})"
    if flow["drop"]:
        head += f" — dropped at {flow['drop']['at']}: {flow['drop']['reason']}"
    lines = [head]
    for i, h in enumerate(flow["hops"], 1):
        arrow = "<-" if h["direction"] == "reply" else "->"
        lines.append(f"  {i:>2} {arrow} {h['at']:<10} {h['hook'] or '':<14} {h['action']:<12} "
                     f"{_fmt(h['packet'], h['changed'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Trace each scenario given; exit 0 when all loaded."""
    docs = []
    for path in args.scenario:
        scenario = load(path)
        _, traces = run_flows(scenario.world, scenario.flows)
        docs.append({"scenario": path, "flows": [trace_json(t) for t in traces]})
    if args.json:
        out = docs[0] if len(docs) == 1 else {"scenarios": docs}
        print(json.dumps(out, indent=2))
    else:
        for doc in docs:
            print(f"# {doc['scenario']}")
            for flow in doc["flows"]:
                print(render(flow))
    return 0
