"""Cilium drop reasons (bpf/lib/common.h, pkg/monitor/api/drop.go) and fabric losses."""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """A datapath drop: the name Hubble shows, with Cilium's negative return code."""

    DROP_INVALID = -134
    DROP_CT_INVALID_HDR = -135
    DROP_FRAG_NEEDED = -136
    DROP_UNKNOWN_L4 = -142
    DROP_CT_CREATE_FAILED = -155
    DROP_INVALID_EXTHDR = -156
    DROP_FRAG_NOSUPPORT = -157
    DROP_NO_SERVICE = -158
    DROP_NO_TUNNEL_ENDPOINT = -160
    DROP_NAT_NO_MAPPING = -167
    DROP_NO_FIB = -169
    DROP_NAT_NOT_NEEDED = -173
    DROP_IS_CLUSTER_IP = -174
    DROP_FRAG_NOT_FOUND = -175
    DROP_NOT_IN_SRC_RANGE = -177
    DROP_RATE_LIMITED = -198
    # Losses outside Cilium: the fabric between hosts (no Cilium code).
    FABRIC_DROPS_IP_OPTIONS = 1
    FABRIC_SOURCE_DEST_CHECK = 2
    FABRIC_NO_ROUTE = 3
    FABRIC_OVER_MTU = 5  # a packet longer than the sending node's device MTU never arrives
    # The packet went up a node's stack untranslated (NAT_PUNT_TO_STACK), never to its peer.
    PUNT_TO_STACK = 4
    # An IPIP packet reached a pod still encapsulated: its stack has no IPIP handler
    # (v1.20 bpf_host.c:1134-1136); no Cilium drop code.
    ENDPOINT_NO_IPIP = 6

    @property
    def code(self) -> int | None:
        """Cilium's return code, None for losses that are not Cilium drops."""
        return self.value if self.value < 0 else None

    @property
    def is_fabric(self) -> bool:
        """True for a loss in the network rather than in a BPF program."""
        return self.name.startswith("FABRIC_")
