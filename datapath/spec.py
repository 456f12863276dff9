"""Declarative packet specs (for vectors/tests/bench) and a field decoder for diffs."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from datapath.build import (
    DEFAULT_DATA,
    PKTGEN_SEQ,
    ext_header,
    geneve_dsr_opt,
    geneve_encap,
    icmp4_message,
    icmp6_message,
    ipv4,
    ipv6,
    tcp_segment,
    udp_datagram,
)
from datapath.csum import checksum, pseudo_sum
from datapath.packet import (
    GENEVE_PORT,
    IPPROTO_AUTH,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ip_bytes,
    ip_text,
)

_H = struct.Struct("!H")
_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}
_EXT = {"hop": IPPROTO_HOPOPTS, "routing": IPPROTO_ROUTING, "dest": IPPROTO_DSTOPTS,
        "frag": IPPROTO_FRAGMENT}  # a fragment header needs raw_hex (8 bytes, nexthdr first)


class SpecError(ValueError):
    """A packet spec is malformed; carries the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def tcp_flags(v: Any) -> int:
    """'SA' / 0x12 -> flag bits."""
    if isinstance(v, int):
        return v
    try:
        out = 0
        for ch in str(v):
            out |= _FLAG_BITS[ch]
        return out
    except KeyError as e:
        raise SpecError("tcp.flags", f"unknown TCP flag {e}") from None


def _payload(spec: Mapping[str, Any]) -> bytes:
    if "payload_hex" in spec:
        return bytes.fromhex(str(spec["payload_hex"]))
    if "payload" in spec:
        return str(spec["payload"]).encode()
    return DEFAULT_DATA


def _addr(d: Mapping[str, Any], k: str, ctx: str) -> bytes:
    if k not in d:
        raise SpecError(f"{ctx}.{k}", "missing address")
    try:
        return ip_bytes(str(d[k]))
    except (ValueError, OSError):
        raise SpecError(f"{ctx}.{k}", f"bad address {d[k]!r}") from None


def build_packet(spec: Mapping[str, Any]) -> bytes:
    """Turn a vector/test packet spec into bytes starting at the IP header."""
    if "hex" in spec:
        try:
            return bytes.fromhex(str(spec["hex"]).replace(" ", ""))
        except ValueError:
            raise SpecError("hex", "not valid hex") from None
    if "geneve" in spec:
        g = spec["geneve"]
        inner = build_packet({k: v for k, v in spec.items() if k != "geneve"})
        opts = bytes.fromhex(str(g.get("opts_hex", "")))
        if "dsr" in g:
            d = g["dsr"]
            opts += geneve_dsr_opt(_addr(d, "addr", "geneve.dsr"), int(d["port"]))
        return geneve_encap(_addr(g, "src", "geneve"), _addr(g, "dst", "geneve"), inner,
                            int(g.get("vni", 2)), opts, int(g.get("sport", 40000)),
                            inner_v6=inner[0] >> 4 == 6)
    if "ipip" in spec:
        o = spec["ipip"]
        inner = build_packet({k: v for k, v in spec.items() if k != "ipip"})
        osrc, odst = _addr(o, "src", "ipip"), _addr(o, "dst", "ipip")
        if len(odst) == 16:
            return ipv6(osrc, odst, 41, inner, hlim=int(o.get("ttl", 64)))
        return ipv4(osrc, odst, 4, inner, ttl=int(o.get("ttl", 64)))
    if "ip" in spec:
        l3 = spec["ip"]
        src, dst = _addr(l3, "src", "ip"), _addr(l3, "dst", "ip")
    elif "ip6" in spec:
        l3 = spec["ip6"]
        src, dst = _addr(l3, "src", "ip6"), _addr(l3, "dst", "ip6")
    else:
        raise SpecError("packet", "needs one of hex, ip, ip6, geneve, ipip")
    proto, l4 = _build_l4(spec, src, dst)
    if "ip" in spec:
        return ipv4(src, dst, int(l3.get("proto", proto)), l4, ttl=int(l3.get("ttl", 64)),
                    ident=int(l3.get("id", 0)), tos=int(l3.get("tos", 0)),
                    frag=int(l3.get("frag", 0)),
                    options=bytes.fromhex(str(l3.get("options", ""))),
                    csum_base_only=l3.get("csum", "full") == "base")
    exts = list(l3.get("ext", []))
    nh = int(l3.get("nexthdr", proto))
    body = l4
    for ext in reversed(exts):
        t = _EXT.get(str(ext.get("type")))
        if t is None:
            raise SpecError("ip6.ext.type", f"unknown extension header {ext.get('type')!r}")
        if "raw_hex" in ext:
            body = bytes.fromhex(str(ext["raw_hex"])) + body
        else:
            body = ext_header(nh, bytes.fromhex(str(ext.get("hex", "")))) + body
        nh = t
    return ipv6(src, dst, nh, body, hlim=int(l3.get("hlim", 64)))


def _build_l4(spec: Mapping[str, Any], src: bytes, dst: bytes) -> tuple[int, bytes]:
    pl = _payload(spec)
    if "payload_len" in spec:  # the payload, zero-padded to this many bytes
        pl = pl.ljust(int(spec["payload_len"]), b"\0")
    if "tcp" in spec:
        t = spec["tcp"]
        return IPPROTO_TCP, tcp_segment(src, dst, int(t["sport"]), int(t["dport"]),
                                        tcp_flags(t.get("flags", "S")),
                                        int(t.get("seq", PKTGEN_SEQ)), int(t.get("ack", 0)),
                                        int(t.get("window", 0xFFFF)), pl)
    if "udp" in spec:
        u = spec["udp"]
        return IPPROTO_UDP, udp_datagram(src, dst, int(u["sport"]), int(u["dport"]), pl)
    if "icmp" in spec:
        c = spec["icmp"]
        inner = build_packet(c["inner"]) if "inner" in c else pl
        if len(src) == 16:
            return IPPROTO_ICMPV6, icmp6_message(src, dst, int(c.get("type", 128)),
                                                 int(c.get("code", 0)), b"\0" * 4, inner)
        return IPPROTO_ICMP, icmp4_message(int(c.get("type", 8)), int(c.get("code", 0)),
                                           b"\0" * 4, inner)
    if "raw_l4_hex" in spec:
        return int(spec.get("proto", 253)), bytes.fromhex(str(spec["raw_l4_hex"]))
    raise SpecError("packet", "needs one of tcp, udp, icmp, raw_l4_hex")


def describe(pkt: bytes | bytearray, prefix: str = "") -> dict[str, Any]:
    """Decode a packet into flat named fields (best effort, never raises)."""
    out: dict[str, Any] = {}
    try:
        _describe(bytes(pkt), prefix, out)
    except (IndexError, struct.error, ValueError):
        out[prefix + "truncated"] = True
    return out


def _describe(pkt: bytes, pre: str, out: dict[str, Any]) -> None:
    ver = pkt[0] >> 4
    out[pre + "ip.version"] = ver
    if ver == 4:
        ihl = (pkt[0] & 0xF) * 4
        out.update({pre + "ip.ihl": ihl // 4, pre + "ip.tos": pkt[1],
                    pre + "ip.tot_len": _H.unpack_from(pkt, 2)[0],
                    pre + "ip.id": _H.unpack_from(pkt, 4)[0], pre + "ip.ttl": pkt[8],
                    pre + "ip.proto": pkt[9], pre + "ip.check": _H.unpack_from(pkt, 10)[0],
                    pre + "ip.src": ip_text(pkt[12:16]), pre + "ip.dst": ip_text(pkt[16:20]),
                    pre + "ip.options": pkt[20:ihl].hex(),
                    pre + "ip.csum_ok": checksum(pkt[:ihl]) == 0})
        if ihl >= 28 and pkt[20] == 0x9A:
            out[pre + "dsr4.type"] = pkt[20]
            out[pre + "dsr4.len"] = pkt[21]
            out[pre + "dsr4.port"] = struct.unpack_from("<H", pkt, 22)[0]
            out[pre + "dsr4.addr"] = ip_text(pkt[24:28][::-1])
        proto, off, src, dst = pkt[9], ihl, pkt[12:16], pkt[16:20]
        end = _H.unpack_from(pkt, 2)[0]
    else:
        nh, off = pkt[6], 40
        out.update({pre + "ip6.plen": _H.unpack_from(pkt, 4)[0], pre + "ip6.nexthdr": nh,
                    pre + "ip6.hlim": pkt[7], pre + "ip6.src": ip_text(pkt[8:24]),
                    pre + "ip6.dst": ip_text(pkt[24:40])})
        src, dst = pkt[8:24], pkt[24:40]
        end = 40 + _H.unpack_from(pkt, 4)[0]
        exts: list[int] = []
        while nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
                     IPPROTO_AUTH) and len(exts) < 8:
            hl = 8 if nh == IPPROTO_FRAGMENT else (
                (pkt[off + 1] + 2) * 4 if nh == IPPROTO_AUTH else (pkt[off + 1] + 1) * 8)
            exts.append(nh)
            if nh == IPPROTO_DSTOPTS and hl == 24 and pkt[off + 2] == 0x1B:
                out[pre + "dsr6.opt_type"] = pkt[off + 2]
                out[pre + "dsr6.opt_len"] = pkt[off + 3]
                out[pre + "dsr6.hdrlen"] = pkt[off + 1]
                out[pre + "dsr6.addr"] = ip_text(pkt[off + 4:off + 20])
                out[pre + "dsr6.port"] = _H.unpack_from(pkt, off + 20)[0]
            nh = pkt[off]
            off += hl
        out[pre + "ip6.ext"] = exts
        proto = nh
    out[pre + "l4.proto"] = proto
    if proto in (4, 41) and not pre:  # IPIP / IPv6-in-IP: the encapsulated packet
        _describe(pkt[off:end], "inner.", out)
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        out[pre + "l4.sport"], out[pre + "l4.dport"] = struct.unpack_from("!HH", pkt, off)
        coff = off + (16 if proto == IPPROTO_TCP else 6)
        out[pre + "l4.check"] = _H.unpack_from(pkt, coff)[0]
        seg = pkt[off:end]
        ok = checksum(seg, pseudo_sum(src, dst, proto, len(seg))) == 0
        out[pre + "l4.csum_ok"] = ok or (proto == IPPROTO_UDP and out[pre + "l4.check"] == 0)
        if proto == IPPROTO_TCP:
            out[pre + "tcp.flags"] = pkt[off + 13]
        elif out[pre + "l4.dport"] == GENEVE_PORT and not pre:
            _describe_geneve(pkt, off + 8, out)
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        out[pre + "icmp.type"], out[pre + "icmp.code"] = pkt[off], pkt[off + 1]
        out[pre + "icmp.check"] = _H.unpack_from(pkt, off + 2)[0]
        seg = pkt[off:end]
        seed = pseudo_sum(src, dst, proto, len(seg)) if proto == IPPROTO_ICMPV6 else 0
        out[pre + "icmp.csum_ok"] = checksum(seg, seed) == 0
        if (proto, pkt[off], pkt[off + 1]) in ((IPPROTO_ICMP, 3, 4), (IPPROTO_ICMPV6, 2, 0)):
            # frag-needed's next-hop MTU (RFC 1191), packet-too-big's MTU (RFC 4443)
            out[pre + "icmp.mtu"] = int.from_bytes(
                pkt[off + 6:off + 8] if proto == IPPROTO_ICMP else pkt[off + 4:off + 8], "big")
        if pkt[off] in _ICMP_ERRORS[proto] and not pre:
            quoted: dict[str, Any] = {}
            try:  # an error's quote: the offending packet's header, maybe cut short
                _describe(pkt[off + 8:end], "quote.", quoted)
            except (IndexError, struct.error, ValueError):
                quoted["quote.truncated"] = True
            out.update(quoted)


def _describe_geneve(pkt: bytes, off: int, out: dict[str, Any]) -> None:
    optlen = (pkt[off] & 0x3F) * 4
    out["geneve.opt_len"] = optlen // 4
    out["geneve.proto"] = _H.unpack_from(pkt, off + 2)[0]
    out["geneve.vni"] = int.from_bytes(pkt[off + 4:off + 7], "big")
    o = off + 8
    if optlen >= 4:
        out["geneve.opt_class"] = _H.unpack_from(pkt, o)[0]
        out["geneve.opt_type"] = pkt[o + 2]
        ln = (pkt[o + 3] & 0x1F) * 4
        out["geneve.opt_datalen"] = ln // 4
        if ln in (8, 20):
            out["geneve.dsr_addr"] = ip_text(pkt[o + 4:o + ln])
            out["geneve.dsr_port"] = _H.unpack_from(pkt, o + ln)[0]
    inner = off + 8 + optlen + 14
    _describe(pkt[inner:], "inner.", out)


# Every field name `describe` can produce; vector files may only expect or capture these.
_BASE_FIELDS = (
    "ip.version", "ip.ihl", "ip.tos", "ip.tot_len", "ip.id", "ip.ttl", "ip.proto", "ip.check",
    "ip.src", "ip.dst", "ip.options", "ip.csum_ok", "ip6.plen", "ip6.nexthdr", "ip6.hlim",
    "ip6.src", "ip6.dst", "ip6.ext", "l4.proto", "l4.sport", "l4.dport", "l4.check",
    "l4.csum_ok", "tcp.flags", "icmp.type", "icmp.code", "icmp.check", "icmp.csum_ok", "icmp.mtu",
    "truncated", "dsr4.type", "dsr4.len", "dsr4.port", "dsr4.addr", "dsr6.opt_type",
    "dsr6.opt_len", "dsr6.hdrlen", "dsr6.addr", "dsr6.port")
# ICMP error types whose body quotes the offending packet (RFC 792, RFC 4443).
_ICMP_ERRORS = {IPPROTO_ICMP: frozenset({3, 4, 5, 11, 12}),
                IPPROTO_ICMPV6: frozenset({1, 2, 3, 4})}
FIELD_NAMES = frozenset(
    [*_BASE_FIELDS, *(f"inner.{f}" for f in _BASE_FIELDS),
     *(f"quote.{f}" for f in _BASE_FIELDS),
     *(f"geneve.{f}" for f in ("opt_len", "proto", "vni", "opt_class", "opt_type",
                               "opt_datalen", "dsr_addr", "dsr_port"))])

_L3_KEYS = {"ip": {"src", "dst", "proto", "ttl", "id", "tos", "frag", "options", "csum"},
            "ip6": {"src", "dst", "ext", "nexthdr", "hlim"}}
_L4_KEYS = {"tcp": {"sport", "dport", "flags", "seq", "ack", "window"},
            "udp": {"sport", "dport"}, "icmp": {"type", "code", "inner"}}
_TOP_KEYS = {"hex", "geneve", "ipip", "ip", "ip6", "tcp", "udp", "icmp", "raw_l4_hex", "proto",
             "payload", "payload_hex", "payload_len"}
_RANGES = {"sport": 0xFFFF, "dport": 0xFFFF, "port": 0xFFFF, "ttl": 0xFF, "hlim": 0xFF,
           "tos": 0xFF, "id": 0xFFFF, "frag": 0xFFFF, "proto": 0xFF, "nexthdr": 0xFF,
           "type": 0xFF, "code": 0xFF, "seq": 0xFFFFFFFF, "ack": 0xFFFFFFFF,
           "window": 0xFFFF, "vni": 0xFFFFFF, "payload_len": 0xFFFF}
_HEX_KEYS = {"hex", "raw_l4_hex", "payload_hex", "options", "opts_hex", "raw_hex"}


def _captured(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("$")


def _check_value(key: str, v: Any, path: str) -> None:
    if _captured(v):
        return  # filled in from an earlier step's capture when the step runs
    if key in _HEX_KEYS:
        text = v if isinstance(v, str) else None
        digits = "" if text is None else text.replace(" ", "")
        if text is None or len(digits) % 2 or any(c not in "0123456789abcdefABCDEF"
                                                  for c in digits):
            raise SpecError(path, f"{v!r} is not hex bytes (an even number of hex digits)")
    elif key in ("src", "dst", "addr"):
        if not isinstance(v, str):
            raise SpecError(path, f"expected an IP address as a string, got {v!r}")
        try:
            ip_bytes(v)
        except (ValueError, OSError):
            raise SpecError(path, f"bad address {v!r}") from None
    elif key in _RANGES:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _RANGES[key]:
            raise SpecError(path, f"expected an integer 0-{_RANGES[key]}, got {v!r}")
    elif key == "flags" and not isinstance(v, (str, int)):
        raise SpecError(path, f"expected TCP flag letters (e.g. SA) or a number, got {v!r}")


def _check_keys(d: Any, path: str, allowed: set[str], skip: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise SpecError(path, f"expected a mapping, got {type(d).__name__}")
    for k, v in d.items():
        if k not in allowed:
            raise SpecError(f"{path}.{k}" if path else str(k),
                            f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if k not in skip:
            _check_value(str(k), v, f"{path}.{k}" if path else str(k))
    return d


def check_spec(spec: Any, path: str = "") -> None:
    """Check a packet spec's keys and values before anything is built (SpecError names the
    key path): unknown keys, odd hex, bad addresses and out-of-range numbers."""
    d = _check_keys(spec, path, _TOP_KEYS)

    def sub(k: str) -> str:
        return f"{path}.{k}" if path else k

    if "hex" not in d and not any(k in d for k in ("ip", "ip6", "geneve", "ipip")):
        raise SpecError(path or "packet", "needs one of hex, ip, ip6, geneve, ipip")
    for k in ("ip", "ip6"):
        if k in d:
            l3 = _check_keys(d[k], sub(k), _L3_KEYS[k])
            for need in ("src", "dst"):
                if need not in l3:
                    raise SpecError(f"{sub(k)}.{need}", "missing address")
            for i, ext in enumerate(l3.get("ext", []) or []):
                _check_keys(ext, f"{sub(k)}.ext[{i}]", {"type", "hex", "raw_hex"},
                            frozenset({"type"}))
                if ext.get("type") not in _EXT:
                    raise SpecError(f"{sub(k)}.ext[{i}].type",
                                    f"unknown extension header {ext.get('type')!r}")
    if "ipip" in d:
        o = _check_keys(d["ipip"], sub("ipip"), {"src", "dst", "ttl"})
        for need in ("src", "dst"):
            if need not in o:
                raise SpecError(f"{sub('ipip')}.{need}", "missing address")
    if "geneve" in d:
        g = _check_keys(d["geneve"], sub("geneve"), {"src", "dst", "vni", "opts_hex", "dsr",
                                                     "sport"})
        if "dsr" in g:
            dsr = _check_keys(g["dsr"], sub("geneve.dsr"), {"addr", "port"})
            for need in ("addr", "port"):
                if need not in dsr:
                    raise SpecError(f"{sub('geneve.dsr')}.{need}", "missing")
    if "hex" not in d:
        l4 = [k for k in ("tcp", "udp", "icmp", "raw_l4_hex") if k in d]
        if len(l4) != 1:
            raise SpecError(path or "packet", "needs exactly one of tcp, udp, icmp, raw_l4_hex")
    for k in ("tcp", "udp", "icmp"):
        if k in d:
            l4d = _check_keys(d[k], sub(k), _L4_KEYS[k])
            if k != "icmp":
                for need in ("sport", "dport"):
                    if need not in l4d:
                        raise SpecError(f"{sub(k)}.{need}", "missing port")
            elif "inner" in l4d:
                check_spec(l4d["inner"], f"{sub(k)}.inner")
