"""What every hook shares: attach points, verdicts, steps, a node's context and CT keys."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from model.config import MTU_DEFAULT, CiliumConfig
from model.drops import DropReason
from model.faults import ModelFault
from model.maglev import FlowPicker, JhashPicker
from model.maps import CtTuple, NatTuple, TupleFlags
from model.snat import RandomSource
from model.values import Endpoint, IPAddress, Packet, Proto


class Hook(enum.Enum):
    """The attach points the NodePort path runs at."""

    FROM_NETDEV = "from-netdev"
    TO_NETDEV = "to-netdev"
    FROM_OVERLAY = "from-overlay"
    TO_CONTAINER = "to-container"
    FROM_CONTAINER = "from-container"
    XDP = "xdp"  # cil_xdp_entry (bpf_xdp.c) under loadBalancer.acceleration, before from-netdev
    SOCK_CONNECT = "sock-connect"  # bpf_sock's cgroup/connect4/6 (socket-LB, model/eastwest.py)
    SOCK_RECVMSG = "sock-recvmsg"  # bpf_sock's cgroup/recvmsg4/6, getpeername4/6


class Verdict(enum.Enum):
    """Where a hook sends the packet next."""

    FORWARD = "forward"  # CTX_ACT_REDIRECT / out of the node onto the wire
    DELIVER = "deliver"  # into a local pod
    TO_STACK = "to-stack"  # CTX_ACT_OK up the host stack, no further forwarding
    DROP = "drop"  # CTX_ACT_DROP
    REJECT = "reject"  # dropped, and an ICMP error goes back out (tail_no_service_ipv4)


class Step(enum.Enum):
    """What the hook did to the packet, for traces and diagrams."""

    PASS = "pass"
    DNAT = "dnat"
    SNAT = "dnat+snat"
    DSR = "dnat+dsr"
    DSR_INGRESS = "dsr-ingress"
    IPIP = "ipip"  # DSR dispatch ipip: encapsulated to the backend, no DNAT (docs/ipip.md)
    IPIP_DNAT = "ipip-decap+dnat"  # v1.20 IPIP termination, DNAT to the outer destination
    REV_DNAT = "rev-dnat"
    REV_SNAT = "rev-snat"
    DROP = "drop"
    REJECT = "icmp-reject"
    SOCK_XLATE = "sock-xlate"  # socket-LB: connect()'s peer becomes the backend
    SOCK_REV = "sock-rev"  # socket-LB: recvmsg/getpeername show the frontend again
    MASQ = "masq"  # bpf.masquerade: a pod's egress SNATed to IPV4_MASQUERADE (model/masq.py)


@attrs.frozen(kw_only=True)
class NodeCtx:
    """What a node's programs know besides their maps: config, own IP, ipcache, clock."""

    cfg: CiliumConfig
    name: str
    ip: IPAddress
    ipcache: Mapping[IPAddress, IPAddress]  # pod/node IP -> tunnel endpoint (a node's IP)
    now: int = 0
    pinned: IPAddress | None = None  # scenario's backend pin, honoured on CT_NEW
    router_ip: IPAddress | None = None  # IPV4_GATEWAY: cilium_host, the tunnel SNAT source
    masq_ip: IPAddress | None = None  # IPV4_MASQUERADE when it is not `ip`
    faults: frozenset[ModelFault] = frozenset()
    mtu: int = MTU_DEFAULT  # the device MTU (CONFIG(device_mtu); v1.18 THIS_MTU)
    rand: RandomSource  # get_prandom_u32(): seeded (SeededRandom), or a prover's choice
    picker: FlowPicker = attrs.field(factory=JhashPicker)  # Maglev: hash, or a prover's

    def has(self, fault: ModelFault) -> bool:
        """Whether a seeded fault is switched on for this run."""
        return fault in self.faults


@attrs.frozen(kw_only=True)
class HookResult:
    """A hook's verdict, the packet it emits and the reason for a drop."""

    verdict: Verdict
    packet: Packet
    step: Step = Step.PASS
    reason: DropReason | None = None


def ct_tuple(pkt: Packet, flags: TupleFlags) -> CtTuple:
    """lb4_extract_tuple: addresses as in the packet, ports crossed over."""
    return CtTuple(daddr=pkt.dst.addr, saddr=pkt.src.addr, dport=pkt.src.port,
                   sport=pkt.dst.port, nexthdr=pkt.proto, flags=flags)


def egress_key(client: Endpoint, backend: Endpoint, proto: Proto) -> CtTuple:
    """The nodeport CT_EGRESS / DSR key {saddr=b, daddr=c, sport=c_port, dport=b_port, OUT}."""
    return CtTuple(saddr=backend.addr, daddr=client.addr, sport=client.port,
                   dport=backend.port, nexthdr=proto, flags=TupleFlags.OUT)


def dsr_snat_key(client: Endpoint, backend: Endpoint, proto: Proto) -> NatTuple:
    """snat_v4_create_dsr's key (v1.14-v1.18 keep the DSR frontend in the SNAT map)."""
    return NatTuple(saddr=backend.addr, daddr=client.addr, sport=backend.port,
                    dport=client.port, nexthdr=proto, flags=TupleFlags.OUT)
