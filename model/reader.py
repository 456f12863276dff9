"""The strict reader every scenario section goes through: key paths, names, addresses, ports."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TypeVar

from model.errors import ScenarioError
from model.values import IPAddress

T = TypeVar("T")
E = TypeVar("E")


class _Reader:
    """Walks the parsed document, naming the key path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, path, message)

    def mapping(self, value: Any, path: str, allowed: set[str],
                required: set[str] = frozenset()) -> Mapping[str, Any]:  # type: ignore[assignment]
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                shown = key if isinstance(key, str) and key.isprintable() else repr(key)
                raise self.fail(f"{path}.{shown}" if path else shown,
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                raise self.fail(f"{path}.{key}" if path else key, "required key is missing")
        return value

    def seq(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_shown(value)}")
        if not value.isprintable():
            raise self.fail(path, f"{value!r} contains control characters (they would forge "
                            "output lines)")
        return value

    def name(self, value: Any, path: str, kind: str) -> str:
        """A name as Kubernetes spells it (services: DNS-1035 label; pods, nodes: DNS-1123
        subdomain) or, for the model's own clients and flows, a file-name-safe word."""
        text = self.string(value, path)
        pattern, rule = _NAME_RULES[kind]
        if not pattern.fullmatch(text):
            raise self.fail(path, f"{text!r} is not a valid {kind} name ({rule})")
        return text

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_shown(value)}")
        if not lo <= value <= hi:
            raise self.fail(path, f"{value} is out of range {lo}-{hi}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_shown(value)}")
        return value

    def addr(self, value: Any, path: str) -> IPAddress:
        """An address written as text: numbers and booleans are not addresses (ip: true
        would be 0.0.0.1), nor are IPv6 zone IDs, which no BPF map key carries."""
        if not isinstance(value, str):
            raise self.fail(path, f"expected an IP address as a string, got {_shown(value)}")
        if "%" in value:
            raise self.fail(path, f"{value!r}: IPv6 zone IDs (%...) are not allowed")
        try:
            return ip_address(value.strip())
        except ValueError:
            raise self.fail(path, f"{value!r} is not an IP address") from None

    def host(self, value: Any, path: str) -> IPAddress:
        """A unicast address a host or a frontend can own."""
        a = self.addr(value, path)
        why = _not_unicast(a)
        if why:
            raise self.fail(path, f"{a} is {why}; a host or frontend needs a unicast address")
        return a

    def enum(self, value: Any, path: str, kind: type[E]) -> E:
        choices = [m.value for m in kind]  # type: ignore[attr-defined]
        if value not in choices:
            raise self.fail(path, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return kind(value)  # type: ignore[call-arg]

    def opt(self, m: Mapping[str, Any], key: str, path: str, conv: Callable[[Any, str], T],
            default: T) -> T:
        return conv(m[key], f"{path}.{key}" if path else key) if key in m else default


_NAME_RULES = {
    "service": (re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"),
                "Kubernetes DNS-1035 label: lower-case letters, digits, '-', starting with a "
                "letter, at most 63"),
    "pod": (re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                       r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"),
            "Kubernetes DNS-1123 subdomain: lower-case letters, digits, '-' and '.'"),
    "client": (re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"),
               "letters, digits, '.', '_', '-', at most 63, no '/' or spaces"),
}
_NAME_RULES["node"] = _NAME_RULES["pod"]
_NAME_RULES["flow"] = _NAME_RULES["client"]


def _shown(value: Any) -> str:
    """A value in an error line: short, one line, its type named when it is not text."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(value, (str, int, float)) else f"{type(value).__name__} {text}"


def _not_unicast(a: IPAddress) -> str:
    if a.is_unspecified:
        return "the unspecified address"
    if a.is_multicast:
        return "a multicast address"
    if isinstance(a, IPv4Address) and a == IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if a.is_loopback:
        return "a loopback address"
    if isinstance(a, IPv6Address) and a.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    return ""


def _port(r: _Reader) -> Callable[[Any, str], int]:
    return lambda v, p: r.integer(v, p, 1, 65535)


def _pod_list(r: _Reader, value: Any, where: str, known: set[str]) -> tuple[str, ...]:
    """A list of pod names, each one known."""
    names = tuple(r.string(x, f"{where}[{i}]") for i, x in enumerate(r.seq(value, where)))
    for i, pod in enumerate(names):
        if pod not in known:
            raise r.fail(f"{where}[{i}]", f"unknown pod {pod!r}")
    return names


def _named(r: _Reader, doc: Mapping[str, Any], key: str, fields: set[str],
           required: set[str]) -> list[tuple[str, Mapping[str, Any]]]:
    out, seen = [], set()
    kind = key.rstrip("s")
    for i, item in enumerate(r.seq(doc.get(key, []), key)):
        path = f"{key}[{i}]"
        m = r.mapping(item, path, fields, required)
        name = r.name(m["name"], f"{path}.name", kind)
        if name in seen:
            raise r.fail(f"{path}.name", f"duplicate name {name!r}")
        seen.add(name)
        out.append((path, m))
    return out
