// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* nodeport-model harness for the user's bpf_host.c (cil_from_netdev, cil_to_netdev).
 * Configuration comes as -D defines rendered by ciliumbpf/programming.py. */
#include <bpf/ctx/skb.h>
#include <bpf/api.h>

#if NPH_CILIUM_MINOR < 120
/* bpf_host.c includes the tree's ep_config.h, which names the CT maps again: take it in
 * first, so the harness's map names (harness.h) are the last word. */
# include <node_config.h>
# include <ep_config.h>
#endif

#include "harness.h"

#include <bpf_host.c>

#include "config.h"

#if defined(TUNNEL_MODE) && defined(NPH_POD_EGRESS)
/* The pod's own bpf_lxc (cil_from_container) is not loaded. With tunnel routing, the one
 * thing it does to a backend's reply that the model's to-netdev hook folds in is the
 * encapsulation towards a remote tunnel endpoint; this program makes that decision with
 * Cilium's own code (bpf_lxc.c handle_ipv4_from_lxc / handle_ipv6_from_lxc: ipcache
 * lookup, encap_and_redirect_lxc with the pod's identity as SECLABEL). CTX_ACT_OK means
 * "not tunnelled": the adapter continues with cil_to_netdev. */
__section_entry
int nph_from_container(struct __ctx_buff *ctx)
{
	const struct remote_endpoint_info *info = NULL;
	struct trace_ctx trace = {};
	void *data, *data_end;
	__be16 proto = 0;

	if (!validate_ethertype(ctx, &proto))
		return CTX_ACT_OK;
	switch (proto) {
# ifdef ENABLE_IPV4
	case bpf_htons(ETH_P_IP): {
		struct iphdr *ip4;

		if (!revalidate_data(ctx, &data, &data_end, &ip4))
			return DROP_INVALID;
		info = lookup_ip4_remote_endpoint(ip4->daddr, 0);
		break;
	}
# endif
# ifdef ENABLE_IPV6
	case bpf_htons(ETH_P_IPV6): {
		struct ipv6hdr *ip6;

		if (!revalidate_data(ctx, &data, &data_end, &ip6))
			return DROP_INVALID;
		info = lookup_ip6_remote_endpoint((union v6addr *)&ip6->daddr, 0);
		break;
	}
# endif
	default:
		return CTX_ACT_OK;
	}
#if NPH_CILIUM_MINOR >= 120
	if (info && info->flag_has_tunnel_ep)
		return encap_and_redirect_lxc(ctx, info, NPH_POD_EGRESS, info->sec_identity,
					      &trace, proto);
#else
	/* v1.18 passes the ipcache's tunnel_endpoint (0: none) and a tunnel-map key that
	 * is only read without one (bpf_lxc.c handle_ipv4_from_lxc, lib/encap.h). */
	if (info && info->tunnel_endpoint && !info->flag_skip_tunnel) {
		struct tunnel_key key = {};

		return encap_and_redirect_lxc(ctx, info->tunnel_endpoint, 0, 0, 0, &key,
					      NPH_POD_EGRESS, info->sec_identity, &trace);
	}
#endif
	return CTX_ACT_OK;
}
#endif

/* cil_from_netdev for a packet XDP passed with XFER_PKT_NO_SVC. The kernel hands XDP's
 * metadata to the skb, which BPF_PROG_TEST_RUN cannot; this entry does what
 * cil_from_netdev does with the flag (bpf_host.c:1292-1293, v1.18 :1265-1266): it sets
 * skip-nodeport and goes on to do_netdev as cil_from_netdev ends (the VLAN, IPsec and tcx
 * early-hook steps in between do nothing in these configurations). */
__section_entry
int nph_from_netdev_no_svc(struct __ctx_buff *ctx)
{
	__be16 proto = 0;

	bpf_clear_meta(ctx);
	ctx_skip_nodeport_clear(ctx);
	ctx_skip_nodeport_set(ctx);
	if (!validate_ethertype(ctx, &proto))
		return CTX_ACT_OK;
	return do_netdev(ctx, proto, UNKNOWN_ID, TRACE_FROM_NETWORK, false);
}
