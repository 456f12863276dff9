"""Cilium's verdicts and drop reasons (bpf/lib/common.h, pkg/monitor/api/drop.go)."""

from __future__ import annotations

import enum


class Verdict(enum.IntEnum):
    """TC return codes as Cilium's bpf/include/bpf/ctx/skb.h defines them."""

    CTX_ACT_OK = 0
    CTX_ACT_DROP = 2
    CTX_ACT_REDIRECT = 7


class XdpVerdict(enum.Enum):
    """XDP return codes (include/uapi/linux/bpf.h; Cilium's bpf/include/bpf/ctx/xdp.h maps
    CTX_ACT_OK/DROP/TX/REDIRECT onto them). A plain Enum: never equal to a TC Verdict."""

    XDP_ABORTED = 0
    XDP_DROP = 1
    XDP_PASS = 2
    XDP_TX = 3
    XDP_REDIRECT = 4


# XFER flags XDP hands to tc in the packet's metadata (bpf/lib/common.h:48-53).
XFER_PKT_NO_SVC = 1 << 0  # skip the service handling in cil_from_netdev
XFER_PKT_SNAT_DONE = 1 << 2  # reverse SNAT done (ctx_snat_done_set; at XDP, in the xfer)
XFER_FLAGS = {"XFER_PKT_NO_SVC": XFER_PKT_NO_SVC, "XFER_PKT_SNAT_DONE": XFER_PKT_SNAT_DONE}


def verdict_named(name: str) -> Verdict | XdpVerdict:
    """A TC or XDP verdict by its name (KeyError if neither)."""
    if name in XdpVerdict.__members__:
        return XdpVerdict[name]
    return Verdict[name]


def xfer_value(v: str | int) -> int:
    """XFER flags as a vector writes them: an int, a flag name, or names joined by '|'."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    out = 0
    for part in str(v).split("|"):
        out |= XFER_FLAGS[part.strip()]
    return out


class DropReason(enum.IntEnum):
    """Negative drop codes from bpf/lib/common.h (DROP_*), kept as Cilium numbers them."""

    DROP_INVALID = -134
    DROP_CT_INVALID_HDR = -135
    DROP_FRAG_NEEDED = -136
    DROP_WRITE_ERROR = -141
    DROP_UNKNOWN_L4 = -142
    DROP_UNKNOWN_ICMP4_CODE = -143
    DROP_NO_TUNNEL_KEY = -147
    DROP_CSUM_L3 = -153
    DROP_CSUM_L4 = -154
    DROP_CT_CREATE_FAILED = -155
    DROP_INVALID_EXTHDR = -156
    DROP_FRAG_NOSUPPORT = -157
    DROP_NO_SERVICE = -158
    DROP_UNSUPP_SERVICE_PROTO = -159
    DROP_NO_TUNNEL_ENDPOINT = -160
    DROP_UNKNOWN_CT = -163
    DROP_NAT_NO_MAPPING = -167
    DROP_NAT_UNSUPP_PROTO = -168
    DROP_NO_FIB = -169
    DROP_NAT_NOT_NEEDED = -173
    DROP_IS_CLUSTER_IP = -174
    DROP_FRAG_NOT_FOUND = -175
    DROP_NOT_IN_SRC_RANGE = -177
    DROP_DSR_ENCAP_UNSUPP_PROTO = -193
    DROP_RATE_LIMITED = -198

    @classmethod
    def parse(cls, text: str | int) -> DropReason:
        """Accept names ('DROP_NO_SERVICE') or codes (-158 / 158) so vectors can use either."""
        if isinstance(text, int):
            return cls(-abs(text))
        t = text.strip()
        if t.lstrip("-").isdigit():
            return cls(-abs(int(t)))
        return cls[t]


class DatapathDrop(Exception):
    """Raised inside the pipeline to unwind to the hook entry, like a BPF `return DROP_*`."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.name)
        self.reason = reason
