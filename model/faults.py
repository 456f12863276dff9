"""Seeded faults in the model: each one is a known way to break a stated property."""

from __future__ import annotations

import enum


class ModelFault(enum.Enum):
    """A deliberate bug the property suite must catch (its value names what it breaks)."""

    SKIP_REVNAT_DSR = "to-netdev skips the reverse NAT of DSR replies"
    SKIP_REVNAT_LOCAL = "to-netdev skips the reverse DNAT of local-backend replies"
    DNAT_KEEPS_FRONTEND_PORT = "DNAT rewrites the address but keeps the frontend port"
    REVSNAT_WRONG_PORT = "reverse SNAT restores the NAT port instead of the client port"
    SNAT_IGNORE_REVERSE_ENTRY = "SNAT allocation overwrites an existing reverse entry"
    NAT_RANGE_OVERLAPS_NODEPORT = "SNAT ports are drawn from the NodePort range too"
    DSR_ALSO_SNATS = "the DSR path also rewrites the source to the node"
    DSR_UDP_FIRST_ONLY = "DSR metadata only on the first UDP datagram"
    DSR_NO_OPT_ON_SYN = "the TCP SYN leaves without DSR metadata"
    DSR_CT_NOT_RECORDED = "the backend node does not record the DSR CT entry"
    ETP_LOCAL_FORWARDS_REMOTE = "eTP=Local still forwards to a remote backend"
    HYBRID_UDP_AS_DSR = "hybrid treats UDP as DSR"
    SNAT_SKIPPED = "the SNAT path forwards with the client's source"
    LB_IGNORES_CT_SERVICE = "every packet picks a backend afresh (CT_SERVICE ignored)"
    TERMINATING_BACKEND_TAKES_SYN = "a SYN stays on a terminating (BE_STATE_TERMINATING) backend"
    GC_PURGES_LIVE_NAT = "CT GC deletes the SNAT entries of live flows too"
    GC_KEEPS_ORPHAN_NAT = "CT GC keeps SNAT entries whose CT entries expired"
    AFFINITY_EXPIRY_INVERTED = ("a session affinity entry counts as expired while it is fresh "
                                "(the timeout compared the wrong way)")
    REVSNAT_ICMP_KEEPS_QUOTE = "reverse SNAT of an ICMP error leaves the quoted source as SNATed"
    MAGLEV_NODE_SEED = "the Maglev flow hash is seeded per node (the node's address mixed in)"
    MAGLEV_SKIP_IGNORED = "the agent's Maglev permutation ignores the skip (every skip is 1)"
    MASQ_IGNORES_REVERSE_ENTRY = ("egress masquerade allocates its reverse entry with put, not "
                                  "put_noexist, overwriting another flow's")
    DSR_MTU_KEEPS_OVERHEAD = ("the DSR frag-needed reports the device MTU itself, not the MTU "
                              "minus the DSR overhead")
    FRAG_FIRST_NOT_RECORDED = ("the first fragment does not record its ports in "
                               "cilium_ipv4/6_frag_datagrams")
    DSR_ICMP_FROM_FRONTEND = ("the DSR frag-needed comes from the frontend's address (what "
                              "cilium/cilium#48053 fixed after these trees), not the backend's")
    REVDNAT_ICMP_QUOTE = ("reverse DNAT also rewrites an ICMP error's quote back to the "
                          "frontend (which no Cilium release does)")
    XDP_ETP_LOCAL_SKIPS_TC = ("XDP hands an eTP=Local packet it punts to tc with "
                              "XFER_PKT_NO_SVC, so tc's from-netdev skips the service")
    EW_REVNAT_SKIPPED = ("the client pod's to-container skips the reverse translation of a "
                         "service reply (lb4_rev_nat)")
    EW_SOCK_REV_SKIPPED = "socket-LB's recvmsg/getpeername does not give the frontend back"
    HAIRPIN_NO_LOOPBACK = ("a pod that is its own backend keeps its own address as the "
                           "source (no service loopback SNAT)")
    IPIP_DNATS_INNER = ("DSR IPIP dispatch also DNATs the inner request to the backend "
                        "(nodeport_skip_xlate4 ignored)")
