"""Catalogue of named seeded faults and a mutation-style check of which the vectors kill."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datapath.errors import VectorFileError

FAULTS: dict[str, str] = {
    "dsr_opt_every_tcp_packet": "IPv4/IPv6 DSR option added to every TCP packet, not just SYN",
    "dsr_opt_wrong_offset": "IPv4 DSR option appended after existing options, not first",
    "dsr_opt_network_order": "IPv4 DSR option port/addr written in network order (no LE quirk)",
    "ipv4_csum_not_updated_on_opt": "IP header checksum not adjusted after option insertion",
    "dsr_ipv6_port_le": "IPv6 DSR dest-opt port written byte-swapped like the IPv4 option",
    "dsr_udp_opt_first_only": "UDP gets DSR info only on the first datagram of a flow",
    "dsr_ct_no_nat_info": "backend DSR CT entry lacks nat_addr/nat_port (reply not revNATed)",
    "dsr_keep_flag_on_plain_syn": "a SYN without DSR info does not clear dsr_internal",
    "skip_revnat_to_netdev": "to-netdev never reverse-DNATs local/DSR backend replies",
    "snat_ignore_reverse_entry": "SNAT allocation overwrites existing reverse entries",
    "snat_no_reverse_recreate": "reused forward SNAT entry does not restore a lost reverse one",
    "snat_keep_port_out_of_range": "SNAT keeps a client port below NODEPORT_PORT_MIN_NAT",
    "snat_port_clamp_modulo": "v1.13 modulo port clamp instead of multiply-shift",
    "rev_snat_skip_range_check": "reverse SNAT does not punt dports outside the NAT range",
    "revnat_index_not_updated_shared_backend": "GH#10983: stale nodeport CT rev_nat_index kept",
    "ipv6_ext_len_off_by_8": "IPv6 extension header length taken as hdrlen*8",
    "no_csum_update_after_dnat": "L4 checksum not updated after DNAT",
    "etp_local_forwards_offnode": "eTP=Local service slots also hold remote backends",
    "hybrid_udp_as_dsr": "hybrid mode marks UDP frontends as DSR",
    "geneve_wrong_vni": "Geneve encapsulation uses VNI 0 instead of the sender's identity",
    "geneve_opt_every_tcp": "Geneve DSR option added to every TCP packet",
    "no_ttl_decrement": "forwarding/local redirect does not decrement the TTL",
    "ct_service_not_reused": "CT_SERVICE entry ignored: every packet re-selects a backend",
    "no_clusterip_check": "N-S traffic to a non-routable ClusterIP is load-balanced",
    "lru_no_refresh_on_lookup": "LRU maps do not refresh recency on lookup",
    "affinity_expiry_inverted": "a fresh session affinity entry counts as expired (timeout "
                                "compared the wrong way)",
    "icmp_error_quote_kept": "reverse SNAT of an ICMP error leaves the quoted source SNATed",
    "dsr_mtu_keeps_overhead": "the DSR frag-needed / packet-too-big reports the device MTU, "
                              "not the MTU less the DSR overhead",
    "frag_first_not_recorded": "the first fragment does not record its ports in "
                               "cilium_ipv4/6_frag_datagrams (later fragments not found)",
    "xdp_etp_punt_no_svc": "XDP hands a punted eTP=Local packet to tc with XFER_PKT_NO_SVC, "
                           "so tc skips the service",
    "maglev_hash_daddr": "the Maglev hash takes the destination (the VIP) for the client address",
    "hairpin_no_loopback": "bpf_lxc keeps a hairpinned pod's own address as the source (no "
                           "service loopback SNAT)",
    "ew_revnat_skipped": "the client pod's to-container skips the reverse translation of a "
                         "service reply",
}
# DSR dispatch ipip (datapath/ipip.py), kept in a block of their own.
FAULTS.update({
    "ipip_dnats_inner": "IPIP dispatch also DNATs the inner request (nodeport_skip_xlate4 "
                        "ignored)",
    "ipip_outer_src_client": "the IPIP outer header takes the client's address as its source",
})


# Faults only an endpoint change can show: golden vectors hold no reprogramming, so these
# are left out of FAULTS (whose every entry a vector must kill) and caught by difftest
# (tests/test_difftest_engine.py).
REPROGRAM_FAULTS: dict[str, str] = {
    "terminating_backend_kept_for_syn": "a SYN keeps a terminating backend (no drain-only check)",
}


def default_vector_files() -> list[Path]:
    """The golden vectors shipped in the repository's top-level vectors/ directory."""
    root = Path(__file__).resolve().parent.parent / "vectors"
    return sorted(root.glob("*.yaml"))


def faults_killed(vector_files: Iterable[str | Path] | None = None
                  ) -> dict[str, list[str]]:
    """For each fault, the vector files that fail with it enabled (empty list = survives)."""
    from datapath.vectors import run_vector_file

    files = [str(f) for f in (vector_files if vector_files is not None
                              else default_vector_files())]
    for f in files:
        if not run_vector_file(f).ok:
            raise VectorFileError(f, "<baseline>", "fails without faults; fix it first")
    out: dict[str, list[str]] = {}
    for name in FAULTS:
        fs = frozenset({name})
        out[name] = [Path(f).name for f in files if not run_vector_file(f, faults=fs).ok]
    return out


def main() -> int:
    """python -m datapath.faults: print the kill matrix."""
    killed = faults_killed()
    for name, files in killed.items():
        print(f"{'KILLED ' if files else 'SURVIVES'} {name:42s} {', '.join(files)}")
    n = sum(1 for v in killed.values() if v)
    print(f"{n}/{len(killed)} faults killed by the vectors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# Faults of the difftest harness's bpf_sock stand-in (datapath/lxc.py sock_rewrite): no
# vector loads bpf_sock, difftest kills them (tests/test_eastwest.py).
HARNESS_FAULTS: dict[str, str] = {
    "ew_sock_rev_skipped": "socket-LB's recvmsg/getpeername shows the backend, not the frontend",
}
