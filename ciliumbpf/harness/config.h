/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Load-time configuration values (NODE_CONFIG) that the agent would assign. */
#pragma once

#if NPH_CILIUM_MINOR >= 120
#ifdef NPH_NAT_PORT_MAX_MIN1
/* NODEPORT_PORT_MIN_NAT is nodeport_port_max + 1 (lib/nat.h). */
ASSIGN_CONFIG(__u16, nodeport_port_min, 30000)
ASSIGN_CONFIG(__u16, nodeport_port_max, NPH_NAT_PORT_MAX_MIN1)
#endif
#ifdef NPH_NATIVE_IFINDEX
ASSIGN_CONFIG(__u32, direct_routing_dev_ifindex, NPH_NATIVE_IFINDEX)
#endif
#endif
#ifdef NPH_NATIVE_IFINDEX
ASSIGN_CONFIG(__u32, interface_ifindex, NPH_NATIVE_IFINDEX)
#endif

#if NPH_CILIUM_MINOR >= 120
/* maglev.hashSeed: the loader's SeedJhash0 / SeedJhash1 (include/bpf/config/node.h:69-70). */
#ifdef NPH_HASH_INIT4_SEED
ASSIGN_CONFIG(__u32, hash_init4_seed, NPH_HASH_INIT4_SEED)
ASSIGN_CONFIG(__u32, hash_init6_seed, NPH_HASH_INIT6_SEED)
#endif
/* bpf.masquerade: IPV4_MASQUERADE / IPV6_MASQUERADE as the agent assigns them. */
#ifdef NPH_IPV4_MASQUERADE
ASSIGN_CONFIG(union v4addr, nat_ipv4_masquerade, { .be32 = NPH_IPV4_MASQUERADE })
#endif
#ifdef NPH_IPV6_MASQUERADE
ASSIGN_CONFIG(union v6addr, nat_ipv6_masquerade, NPH_IPV6_MASQUERADE)
#endif
#ifdef NPH_ROUTER_IPV6
ASSIGN_CONFIG(union v6addr, router_ipv6, NPH_ROUTER_IPV6)
#endif

/* The device MTU the agent assigns per attached device (nodeport.h:33). */
#ifdef NPH_DEVICE_MTU
ASSIGN_CONFIG(__u16, device_mtu, NPH_DEVICE_MTU)
#endif

/* enable-no-service-endpoints-routable (agent default true): a frontend without
 * backends drops with DROP_NO_SERVICE instead of passing the packet on. */
ASSIGN_CONFIG(bool, enable_no_service_endpoints_routable, true)

/* bpf.ctAccounting (agent default off): CT entries count packets and frame bytes
 * (lib/conntrack.h:376-378, 1104-1106, 1159-1161). */
#ifdef NPH_CT_ACCOUNTING
ASSIGN_CONFIG(bool, enable_conntrack_accounting, true)
#endif

/* --enable-ipip-termination: cil_from_netdev strips IPIP addressed to a local endpoint
 * (bpf_host.c:1149-1175, include/bpf/config/node.h:44). */
#ifdef NPH_IPIP_TERMINATION
ASSIGN_CONFIG(bool, enable_ipip_termination, true)
#endif

/* --enable-ipv4/6-fragment-tracking (agent default on; off unless the node says so, as
 * the tree's bpf/tests compile it): lib/ipv4.h:38, lib/ipv6.h:65. */
#ifdef NPH_FRAGMENTS
ASSIGN_CONFIG(bool, enable_ipv4_fragments, true)
ASSIGN_CONFIG(bool, enable_ipv6_fragments, true)
#endif
#endif

/* bpf_xdp.c builds the tunnel headers itself (ctx/xdp ctx_set_encap_info4/6): the agent's
 * tunnel protocol and port, Geneve on 6081 as the model's tunnel routing has it. */
#if defined(NPH_XDP) && defined(TUNNEL_MODE)
# if NPH_CILIUM_MINOR >= 120
ASSIGN_CONFIG(__u8, tunnel_protocol, TUNNEL_PROTOCOL_GENEVE)
ASSIGN_CONFIG(__u16, tunnel_port, 6081)
# endif
#endif
