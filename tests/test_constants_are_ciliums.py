"""Every module constant of model/ and datapath/ named after one of Cilium's is Cilium's value.

A constant that both the reference datapath's writer and its reader use (an SVC_FLAG_ bit, a
tuple flag, a BE_STATE_) hides its own error: both sides agree on the wrong value. So the
values are read from the two trees' headers themselves: the #defines and enums of bpf/lib and
bpf/include, then node_config.h for what they leave to load time. node_config.h holds the
unit tests' load-time settings; where the agent loads another value (LOAD_TIME), ours is the
agent's.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

TREES = {"1.18": ROOT.parent / "shared" / "cilium" / "v1.18.0-dev" / "bpf",
         "1.20": ROOT.parent / "shared" / "cilium" / "v1.20.0-dev" / "bpf"}

# Names whose value differs between the trees, or that the model abstracts on purpose: where
# the project keeps the per-release value, and why a single one is right where it does not.
PER_TREE = {
    "SNAT_COLLISION_RETRIES": "datapath/nat.py keeps both (dict per release); the model uses "
                              "the agent's 32 for both (model/config.py: bounded symbolic "
                              "retries)",
    "NODEPORT_PORT_MAX_NAT": "a load-time setting in v1.20 (the agent's 65535), a define in "
                             "v1.18's nat.h only for its unit tests",
}

# node_config.h's unit-test value where the agent loads another one: ours is the agent's.
LOAD_TIME = {
    "CT_CONNECTION_LIFETIME_TCP": "bpf-ct-timeout-regular-tcp: 8000 s since v1.15 (21600 s in "
                                  "node_config.h)",
    "CT_SERVICE_LIFETIME_TCP": "bpf-ct-timeout-service-tcp: 8000 s since v1.15 (21600 s in "
                               "node_config.h)",
}
# Our name for a constant Cilium spells otherwise.
ALIASES = {"IPPROTO_AUTH": "NEXTHDR_AUTH", "CT_LIFETIME_TCP": "CT_CONNECTION_LIFETIME_TCP",
           "CT_LIFETIME_NONTCP": "CT_CONNECTION_LIFETIME_NONTCP"}

_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Z][A-Z0-9_]*)[ \t]+([^\n]+)$", re.M)
_ENUM = re.compile(r"\benum\b[^{};]*\{([^}]*)\}", re.S)
_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+|\d+|[A-Za-z_]\w*|<<|>>|[-+~|&()*^])")
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _evaluate(expr: str, env: dict[str, int]) -> int | None:
    """A C integer constant expression of literals, known names and bit operators, else None."""
    out: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return None
        tok, pos = m.group(1), m.end()
        if tok[0].isdigit():
            out.append(str(int(tok, 0)))
        elif tok[0].isalpha() or tok[0] == "_":
            if tok in ("U", "UL", "ULL"):  # an integer suffix split off its literal
                continue
            if tok not in env:
                return None
            out.append(f"({env[tok]})")
        else:
            out.append(tok)
    try:
        value = eval(" ".join(out), {"__builtins__": {}}, {})  # digits and operators only
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError):
        return None
    return value if isinstance(value, int) else None


@cache
def cilium_constants(release: str) -> dict[str, int]:
    """Every #define and enum member of the tree's headers with one integer value."""
    headers = [h for h in sorted(TREES[release].rglob("*.h"))
               if "tests" not in h.parts and h.name != "node_config.h"]
    env = _read(headers)
    for name, value in _read([TREES[release] / "node_config.h"], env).items():
        env.setdefault(name, value)  # the datapath's own definitions come first
    return env


@cache
def _source(header: Path) -> str:
    """A header's text without comments, continued lines joined (read once per run)."""
    text = re.sub(r"/\*.*?\*/", " ", header.read_text(errors="replace"), flags=re.S)
    return re.sub(r"//[^\n]*", "", text).replace("\\\n", " ")


def _read(headers: list[Path], known: dict[str, int] | None = None) -> dict[str, int]:
    """The integer #defines and enum members of these headers (names from known usable)."""
    defines: dict[str, set[str]] = {}
    enums: list[str] = []
    for header in headers:
        text = _source(header)
        for m in _DEFINE.finditer(text):
            defines.setdefault(m.group(1), set()).add(m.group(2))
        enums += [m.group(1) for m in _ENUM.finditer(text)]
    env: dict[str, int] = dict(known or {})
    for _ in range(6):  # definitions refer to each other in any order
        for name, bodies in defines.items():
            values = {v for b in bodies if (v := _evaluate(b, env)) is not None}
            if len(values) == 1:
                env[name] = values.pop()
        for body in enums:
            body = re.sub(r"^[ \t]*#[^\n]*", "", body, flags=re.M)  # in-enum #defines
            value = 0
            for item in filter(None, (i.strip() for i in body.split(","))):
                name, _, expr = item.partition("=")
                name = name.strip()
                if not _NAME.fullmatch(name):
                    break
                if expr:
                    got = _evaluate(expr, env)
                    if got is None:
                        break
                    value = got
                env.setdefault(name, value)
                value += 1
    return env


def our_constants() -> dict[str, tuple[str, int | dict[str, int]]]:
    """Module-level UPPER_CASE integers (or per-release dicts) of model/ and datapath/."""
    found: dict[str, tuple[str, int | dict[str, int]]] = {}
    for package in ("model", "datapath"):
        for path in sorted((ROOT / package).glob("*.py")):
            module = importlib.import_module(f"{package}.{path.stem}")
            for node in ast.parse(path.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                for t in targets:
                    if not (isinstance(t, ast.Name) and _NAME.fullmatch(t.id)):
                        continue
                    value = getattr(module, t.id)
                    if (isinstance(value, int) and not isinstance(value, bool)) or (
                            isinstance(value, dict) and set(value) == set(TREES)):
                        found[f"{package}/{path.name}:{t.id}"] = (t.id, value)
    return found


needs_trees = pytest.mark.skipif(not all(p.is_dir() for p in TREES.values()),
                                 reason=f"no Cilium trees at {ROOT.parent / 'shared'}")


@needs_trees
def test_constants_named_after_ciliums_have_its_value() -> None:
    trees = {r: cilium_constants(r) for r in TREES}
    pinned, wrong = 0, []
    for where, (name, ours) in our_constants().items():
        theirs = {r: t.get(ALIASES.get(name, name)) for r, t in trees.items()}
        if all(v is None for v in theirs.values()):
            continue
        if isinstance(ours, dict):
            wrong += [f"{where} {r}: {ours[r]} != {v}" for r, v in theirs.items()
                      if v is not None and ours[r] != v]
        elif len(set(theirs.values())) > 1:
            assert name in PER_TREE, f"{where}: Cilium's value differs per tree {theirs}"
            continue
        elif ALIASES.get(name, name) in LOAD_TIME:
            pass
        elif ours != theirs["1.20"]:
            wrong.append(f"{where} = {ours}, Cilium's is {theirs['1.20']}")
        pinned += 1
    assert not wrong, "\n".join(wrong)
    assert pinned >= 80, pinned  # the header reader still finds what it found when written


@needs_trees
def test_the_header_reader() -> None:
    """#define chains, shifts and enum counting, checked on values known by heart."""
    c = cilium_constants("1.20")
    assert (c["TUPLE_F_IN"], c["TUPLE_F_RELATED"], c["TUPLE_F_SERVICE"]) == (1, 2, 4)
    assert c["AFFINITY_TIMEOUT_MASK"] == (1 << 24) - 1
    assert c["BE_STATE_MAINTENANCE"] == 3 and c["BPF_EXIST"] == 2
    assert c["IPPROTO_TCP"] == 6 and c["DSR_IPV4_OPT_TYPE"] == 0x9A


_MAP = re.compile(r"struct\s*\{([^{}]*)\}\s*(cilium_\w+)\s+__section_maps_btf", re.S)
_MAX = re.compile(r"__uint\(\s*max_entries\s*,\s*([^)]+?)\s*\)")
# Capacities the agent sets per node at load time (NodeMaps' constructor arguments, from the
# node's configuration): node_config.h has the unit tests' small values for them.
_CONFIGURED = ("cilium_ct", "cilium_snat_")


def cilium_map_sizes(release: str) -> dict[str, int]:
    """max_entries of every map the tree's headers define, by the name Cilium pins it as."""
    consts = cilium_constants(release)
    sizes: dict[str, int] = {}
    for header in sorted((TREES[release] / "lib").glob("*.h")):
        for body, name in _MAP.findall(_source(header)):
            m = _MAX.search(body)
            value = None if m is None else _evaluate(m.group(1), consts)
            if value is not None:
                sizes[name] = value
    return sizes


@needs_trees
def test_map_capacities_are_the_trees() -> None:
    """The reference's fixed-size maps hold what Cilium's map definitions say (lib/eps.h,
    lib/lb.h, lib/ipv4.h, lib/ratelimit.h ...): max_entries matters once a map fills."""
    from datapath.config import NodeConfig
    from datapath.host import make_node

    maps = make_node(NodeConfig(ipv4="10.0.10.1")).maps.all_maps()
    ours = {m.name: m.max_entries for m in maps}
    checked = 0
    for release in TREES:
        theirs = cilium_map_sizes(release)
        for name, size in ours.items():
            if name in theirs and not name.startswith(_CONFIGURED):
                assert size == theirs[name], (release, name, size, theirs[name])
                checked += 1
    # v1.18 names most maps by load-time macros (LB4_SERVICES_MAP_V2 ...), so v1.20's
    # definitions carry the check; the reader still finds what it found when written
    assert checked >= 14, checked
