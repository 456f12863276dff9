"""A fragment's L4 ports on bytes: cilium_ipv4/6_frag_datagrams (ipv4.h, ipv6.h, ipfrag.h)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datapath.drop import DatapathDrop, DropReason
from datapath.maps import FragKey, FragPorts
from datapath.packet import PORT_PROTOS, Parsed

if TYPE_CHECKING:
    from datapath.host import Node

_PORTS = struct.Struct("!HH")


def load_l4_ports(node: Node, p: Parsed) -> None:
    """ipv4_load_l4_ports / ipv6_load_l4_ports (v1.20 ipv4.h:143-158, ipv6.h:430-444).

    Tracking on: the first fragment records its ports under {daddr, saddr, id, proto}
    (ipv4.h:113-134), a later one reads them or is DROP_FRAG_NOT_FOUND (ipv4.h:96-98).
    Tracking off: v1.20 drops a later fragment (DROP_FRAG_NOSUPPORT, ipv4.h:151-152);
    v1.18 reads its first payload bytes as ports (v1.18 ipv4.h:190-191). v1.18 drops any
    IPv6 packet with a fragment header (v1.18 ipv6.h:55-56).
    """
    if not p.is_frag or p.proto not in PORT_PROTOS:
        return
    cfg = node.config
    if p.v6 and cfg.version == "1.18":
        raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT)
    if not cfg.fragment_tracking:
        if p.frag_first:
            return
        if cfg.version != "1.18":
            raise DatapathDrop(DropReason.DROP_FRAG_NOSUPPORT)
        if p.l4_off + 4 > p.l3_len:  # l4_load_ports past the end
            raise DatapathDrop(DropReason.DROP_CT_INVALID_HDR)
        p.sport, p.dport = _PORTS.unpack_from(p.buf, p.l4_off)
        p.frag_ports = True
        return
    frag = node.maps.frag6 if p.v6 else node.maps.frag4
    key = FragKey(p.daddr, p.saddr, p.frag_id, p.proto)
    if not p.frag_first:
        ports = frag.lookup(key)
        if ports is None:
            raise DatapathDrop(DropReason.DROP_FRAG_NOT_FOUND)
        p.sport, p.dport = ports.sport, ports.dport
        p.frag_ports = True
        return
    if "frag_first_not_recorded" not in node.faults:
        frag.update(key, FragPorts(p.sport, p.dport))
