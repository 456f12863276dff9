/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* nodeport-model harness: stubs around Cilium's own bpf_host.c / bpf_overlay.c.
 *
 * Included by host.c / overlay.c after <bpf/ctx/skb.h> and <bpf/api.h> (so the
 * helper prototypes already exist) and before the Cilium program, whose calls to
 * the helpers below then reach these stubs instead. Everything that
 * BPF_PROG_TEST_RUN cannot observe, or the test must control, goes through two
 * maps the adapter reads and writes:
 *
 *   nph_control: the clock (CT timeouts under `advance`), the random source
 *                (the adapter's backend pin, then a seeded xorshift), and the
 *                tunnel key/option a Geneve device would hand to cil_from_overlay;
 *   nph_capture: where the program redirected the packet (redirect,
 *                redirect_neigh, redirect_peer) and the tunnel key/option it set
 *                for the Geneve device (ctx_set_tunnel_key/opt).
 *
 * Cilium's own tests stub the same helpers the same way (bpf/tests/
 * tc_nodeport_lb4_nat_lb.c: mock_fib_lookup, mock_ctx_redirect).
 */
#pragma once

#include <node_config.h>

/* The tuple-hash seeds (Maglev, XDP's tunnel source port): defines in 1.18; 1.20 reads
 * CONFIG(hash_init4/6_seed), set in config.h. */
#if defined(NPH_HASH_INIT4_SEED) && NPH_CILIUM_MINOR < 120
# undef HASH_INIT4_SEED
# define HASH_INIT4_SEED NPH_HASH_INIT4_SEED
# undef HASH_INIT6_SEED
# define HASH_INIT6_SEED NPH_HASH_INIT6_SEED
#endif

/* loadBalancer.algorithm=maglev: the agent's table size (LB_MAGLEV_LUT_SIZE), in 1.18 also
 * the maps under the names 1.20 gives them. */
#ifdef NPH_LB_MAGLEV_LUT_SIZE
# undef LB_MAGLEV_LUT_SIZE
# define LB_MAGLEV_LUT_SIZE NPH_LB_MAGLEV_LUT_SIZE
# if NPH_CILIUM_MINOR < 120
#  undef LB4_MAGLEV_MAP_OUTER
#  define LB4_MAGLEV_MAP_OUTER cilium_lb4_maglev
#  undef LB6_MAGLEV_MAP_OUTER
#  define LB6_MAGLEV_MAP_OUTER cilium_lb6_maglev
# endif
#endif

/* The NAT port range the agent renders (NODEPORT_PORT_MIN_NAT is nodeport-port-max + 1). */
#ifdef NPH_NAT_PORT_MAX
# undef NODEPORT_PORT_MAX_NAT
# define NODEPORT_PORT_MAX_NAT NPH_NAT_PORT_MAX
#endif

#if NPH_CILIUM_MINOR < 120
/* Before the maps were renamed, the tree's node_config.h names them test_cilium_*; the
 * agent names them as later releases do, and so does the adapter. */
# undef CT_MAP_TCP4
# define CT_MAP_TCP4 cilium_ct4_global
# undef CT_MAP_ANY4
# define CT_MAP_ANY4 cilium_ct_any4_global
# undef CT_MAP_TCP6
# define CT_MAP_TCP6 cilium_ct6_global
# undef CT_MAP_ANY6
# define CT_MAP_ANY6 cilium_ct_any6_global
# undef SNAT_MAPPING_IPV4
# define SNAT_MAPPING_IPV4 cilium_snat_v4_external
# undef SNAT_MAPPING_IPV6
# define SNAT_MAPPING_IPV6 cilium_snat_v6_external
# undef ENDPOINTS_MAP
# define ENDPOINTS_MAP cilium_lxc
# undef IPCACHE_MAP
# define IPCACHE_MAP cilium_ipcache_v2
# undef LB4_SERVICES_MAP_V2
# define LB4_SERVICES_MAP_V2 cilium_lb4_services_v2
# undef LB4_BACKEND_MAP
# define LB4_BACKEND_MAP cilium_lb4_backends_v3
# undef LB4_REVERSE_NAT_MAP
# define LB4_REVERSE_NAT_MAP cilium_lb4_reverse_nat
# undef LB6_SERVICES_MAP_V2
# define LB6_SERVICES_MAP_V2 cilium_lb6_services_v2
# undef LB6_BACKEND_MAP
# define LB6_BACKEND_MAP cilium_lb6_backends_v3
# undef LB6_REVERSE_NAT_MAP
# define LB6_REVERSE_NAT_MAP cilium_lb6_reverse_nat
# undef LB4_SRC_RANGE_MAP
# define LB4_SRC_RANGE_MAP cilium_lb4_source_range
# undef LB6_SRC_RANGE_MAP
# define LB6_SRC_RANGE_MAP cilium_lb6_source_range
# undef RATELIMIT_MAP
# define RATELIMIT_MAP cilium_ratelimit
# undef LB4_AFFINITY_MAP
# define LB4_AFFINITY_MAP cilium_lb4_affinity
# undef LB6_AFFINITY_MAP
# define LB6_AFFINITY_MAP cilium_lb6_affinity
# undef LB_AFFINITY_MATCH_MAP
# define LB_AFFINITY_MATCH_MAP cilium_lb_affinity_match
# undef IPV4_FRAG_DATAGRAMS_MAP
# define IPV4_FRAG_DATAGRAMS_MAP cilium_ipv4_frag_datagrams
/* NODEPORT_PORT_MIN_NAT is NODEPORT_PORT_MAX + 1 here (a define, not CONFIG()). */
# ifdef NPH_NAT_PORT_MAX_MIN1
#  undef NODEPORT_PORT_MAX
#  define NODEPORT_PORT_MAX NPH_NAT_PORT_MAX_MIN1
# endif
# ifdef NPH_NATIVE_IFINDEX
#  undef DIRECT_ROUTING_DEV_IFINDEX
#  define DIRECT_ROUTING_DEV_IFINDEX NPH_NATIVE_IFINDEX
# endif
#endif

#if NPH_CILIUM_MINOR < 120
/* bpf.ctAccounting: a compile-time switch in 1.18 (lib/conntrack.h:311, 997, 1053), which
 * the tree's test node_config.h:235 and ep_config.h:60 always define; the agent renders it
 * only when the option is on. */
# undef CONNTRACK_ACCOUNTING
# ifdef NPH_CT_ACCOUNTING
#  define CONNTRACK_ACCOUNTING
# endif
#endif

#define NPH_OPT_MAX 64

struct nph_control {
	__u64 now_sec;		/* bpf_mono_now() in seconds */
	__u32 pin_valid;	/* next get_prandom_u32() returns pin_value */
	__u32 pin_value;
	__u32 tun_valid;	/* cil_from_overlay: a tunnel key is present */
	__u32 tun_v6;		/* the outer header (tunnel info family) is IPv6 */
	__u32 tun_id;		/* VNI (the source identity) */
	__u32 tun_remote4;	/* host order, as bpf_tunnel_key.remote_ipv4 */
	__u32 tun_remote6[4];
	__u32 tun_opt_len;
	__u8 tun_opt[NPH_OPT_MAX];
};

struct nph_capture {
	__u32 kind;		/* 0 none, 1 redirect, 2 redirect_neigh, 3 redirect_peer */
	__u32 ifindex;
	__u32 flags;
	__u32 fib_calls;
	__u32 self;		/* redirected back out the receiving device (redirect_self) */
	__u32 tun_set;		/* ctx_set_tunnel_key was called */
	__u32 tun_id;
	__u32 tun_v6;
	__u32 tun_remote4;
	__u32 tun_remote6[4];
	__u32 tun_opt_len;
	__u8 tun_opt[NPH_OPT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nph_control);
	__uint(max_entries, 1);
} nph_control __section_maps_btf;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nph_capture);
	__uint(max_entries, 1);
} nph_capture __section_maps_btf;

/* xorshift64 state, seeded once from NodeConfig.seed, then advanced by the program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} nph_rng __section_maps_btf;

static __always_inline struct nph_control *nph_ctl(void)
{
	__u32 zero = 0;

	return map_lookup_elem(&nph_control, &zero);
}

static __always_inline struct nph_capture *nph_cap(void)
{
	__u32 zero = 0;

	return map_lookup_elem(&nph_capture, &zero);
}

/* -- clock: bpf_mono_now() = ktime_get_ns() / NSEC_PER_SEC (lib/time.h) ------------ */
static __always_inline __u64 nph_ktime_get_ns(void)
{
	struct nph_control *c = nph_ctl();

	return c ? c->now_sec * 1000000000ULL : 0;
}
#define ktime_get_ns nph_ktime_get_ns

/* -- random: lb4_select_backend_id_random() and the SNAT port pick (lib/lb.h,
 * lib/nat.h). The adapter pins the backend by making the first draw after the pin
 * select its slot; every other draw is a seeded xorshift64. */
static __always_inline __u32 nph_get_prandom_u32(void)
{
	struct nph_control *c = nph_ctl();
	__u32 zero = 0;
	__u64 *st, x;

	if (c && c->pin_valid) {
		c->pin_valid = 0;
		return c->pin_value;
	}
	st = map_lookup_elem(&nph_rng, &zero);
	if (!st)
		return 0;
	x = *st ? *st : 0x9E3779B97F4A7C15ULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*st = x;
	return (__u32)(x >> 32);
}
#define get_prandom_u32 nph_get_prandom_u32

/* -- routing: a FIB that always answers "out the native device" ----------------- */
#ifndef NPH_NATIVE_IFINDEX
# define NPH_NATIVE_IFINDEX 2
#endif

static __always_inline long
nph_fib_lookup(void *ctx __maybe_unused, struct bpf_fib_lookup *params,
	       int plen __maybe_unused, __u32 flags __maybe_unused)
{
	struct nph_capture *cap = nph_cap();
	const __u8 smac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
	const __u8 dmac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};

	if (!params)
		return BPF_FIB_LKUP_RET_BLACKHOLE;
	if (cap)
		cap->fib_calls++;
	params->ifindex = NPH_NATIVE_IFINDEX;
	__bpf_memcpy_builtin(params->smac, smac, 6);
	__bpf_memcpy_builtin(params->dmac, dmac, 6);
	return BPF_FIB_LKUP_RET_SUCCESS;
}
#define fib_lookup nph_fib_lookup

static __always_inline void nph_record(__u32 kind, int ifindex, __u32 flags)
{
	struct nph_capture *cap = nph_cap();

	if (cap) {
		cap->kind = kind;
		cap->ifindex = (__u32)ifindex;
		cap->flags = flags;
	}
}

#ifdef NPH_XDP
/* bpf_xdp.c runs on the native device: a FIB answer out of it is XDP_TX. ctx/xdp.h's
 * ctx_redirect compares with ctx->ingress_ifindex, which a test run leaves 0, so the harness
 * takes both 0 (1.18's redirect to ctx_get_ifindex(), `self`) and the native device's index
 * for the receiving device; another device would be XDP_REDIRECT. */
static __always_inline int
nph_xdp_redirect(const struct xdp_md *ctx, int ifindex, __u32 flags)
{
	struct nph_capture *cap = nph_cap();
	bool here = (__u32)ifindex == ctx->ingress_ifindex;

	nph_record(1, ifindex, flags);
	if (cap)
		cap->self = here;
	return here || (__u32)ifindex == NPH_NATIVE_IFINDEX ? XDP_TX : XDP_REDIRECT;
}
#define ctx_redirect nph_xdp_redirect
#else /* tc: bpf_host, bpf_overlay */
static __always_inline int
nph_ctx_redirect(const struct __sk_buff *ctx __maybe_unused, int ifindex, __u32 flags)
{
	struct nph_capture *cap = nph_cap();

	nph_record(1, ifindex, flags);
	if (cap)
		cap->self = (__u32)ifindex == ctx->ifindex;
	return CTX_ACT_REDIRECT;
}
#define ctx_redirect nph_ctx_redirect

static __always_inline int
nph_ctx_redirect_peer(const struct __sk_buff *ctx __maybe_unused, int ifindex, __u32 flags)
{
	nph_record(3, ifindex, flags);
	return CTX_ACT_REDIRECT;
}
#define ctx_redirect_peer nph_ctx_redirect_peer

static __always_inline int  /* int, as helpers_skb.h declares redirect_neigh */
nph_redirect_neigh(int ifindex, struct bpf_redir_neigh *params __maybe_unused,
		   int plen __maybe_unused, __u32 flags)
{
	nph_record(2, ifindex, flags);
	return CTX_ACT_REDIRECT;
}
#define redirect_neigh nph_redirect_neigh

/* -- the Geneve device's tunnel metadata ----------------------------------------- */
static __always_inline int
nph_set_tunnel_key(struct __sk_buff *ctx __maybe_unused, const struct bpf_tunnel_key *key,
		   __u32 size __maybe_unused, __u32 flags)
{
	struct nph_capture *cap = nph_cap();

	if (!cap)
		return -1;
	cap->tun_set = 1;
	cap->tun_id = key->tunnel_id;
	cap->tun_v6 = (flags & BPF_F_TUNINFO_IPV6) ? 1 : 0;
	cap->tun_remote4 = key->remote_ipv4;
	cap->tun_remote6[0] = key->remote_ipv6[0];
	cap->tun_remote6[1] = key->remote_ipv6[1];
	cap->tun_remote6[2] = key->remote_ipv6[2];
	cap->tun_remote6[3] = key->remote_ipv6[3];
	return 0;
}
#undef ctx_set_tunnel_key
#define ctx_set_tunnel_key nph_set_tunnel_key

static __always_inline int
nph_set_tunnel_opt(struct __sk_buff *ctx __maybe_unused, void *opt, __u32 len)
{
	struct nph_capture *cap = nph_cap();

	if (!cap || len > NPH_OPT_MAX)
		return -1;
	/* Cilium's options are 12 (IPv4) or 24 (IPv6) bytes: copy in 4-byte words. */
	if (len >= 4)
		__bpf_memcpy_builtin(cap->tun_opt, opt, 4);
	if (len >= 8)
		__bpf_memcpy_builtin(cap->tun_opt + 4, opt + 4, 4);
	if (len >= 12)
		__bpf_memcpy_builtin(cap->tun_opt + 8, opt + 8, 4);
	if (len >= 16)
		__bpf_memcpy_builtin(cap->tun_opt + 12, opt + 12, 4);
	if (len >= 20)
		__bpf_memcpy_builtin(cap->tun_opt + 16, opt + 16, 4);
	if (len >= 24)
		__bpf_memcpy_builtin(cap->tun_opt + 20, opt + 20, 4);
	cap->tun_opt_len = len;
	return 0;
}
#undef ctx_set_tunnel_opt
#define ctx_set_tunnel_opt nph_set_tunnel_opt

static __always_inline int
nph_get_tunnel_key(struct __sk_buff *ctx __maybe_unused, struct bpf_tunnel_key *key,
		   __u32 size __maybe_unused, __u32 flags)
{
	struct nph_control *c = nph_ctl();

	/* bpf_skb_get_tunnel_key: -EINVAL without tunnel info, or when the family the
	 * caller asks for (BPF_F_TUNINFO_IPV6) is not the tunnel's. */
	if (!c || !c->tun_valid)
		return -22;
	if (!!(flags & BPF_F_TUNINFO_IPV6) != !!c->tun_v6)
		return -22;
	key->tunnel_id = c->tun_id;
	if (flags & BPF_F_TUNINFO_IPV6) {
		key->remote_ipv6[0] = c->tun_remote6[0];
		key->remote_ipv6[1] = c->tun_remote6[1];
		key->remote_ipv6[2] = c->tun_remote6[2];
		key->remote_ipv6[3] = c->tun_remote6[3];
	} else {
		key->remote_ipv4 = c->tun_remote4;
	}
	return 0;
}
#undef ctx_get_tunnel_key
#define ctx_get_tunnel_key nph_get_tunnel_key

/* One 4-byte word of bpf_skb_get_tunnel_opt's copy: the option's bytes up to its length,
 * zeros after it (the kernel zero-fills the rest of the buffer, and all of it on error). */
#define NPH_OPT_WORD(k)							\
	do {								\
		if (len >= (k)) {					\
			if (n >= (k))					\
				__bpf_memcpy_builtin(opt + (k) - 4,	\
						     c->tun_opt + (k) - 4, 4); \
			else						\
				__bpf_memset_builtin(opt + (k) - 4, 0, 4); \
		}							\
	} while (0)

static __always_inline int
nph_get_tunnel_opt(struct __sk_buff *ctx __maybe_unused, void *opt, __u32 len)
{
	struct nph_control *c = nph_ctl();
	__u32 n = 0;
	int ret;

	if (!c || !c->tun_valid || !c->tun_opt_len) {
		ret = -2; /* -ENOENT: no option on this packet */
	} else if (c->tun_opt_len > len) {
		ret = -12; /* -ENOMEM: the buffer is shorter than the options */
	} else {
		n = c->tun_opt_len;
		ret = (int)n;
	}
	if (!c)
		return ret;
	NPH_OPT_WORD(4);
	NPH_OPT_WORD(8);
	NPH_OPT_WORD(12);
	NPH_OPT_WORD(16);
	NPH_OPT_WORD(20);
	NPH_OPT_WORD(24);
	return ret;
}
#undef ctx_get_tunnel_opt
#define ctx_get_tunnel_opt nph_get_tunnel_opt

#endif /* NPH_XDP */

/* cilium_host's address (the SNAT source towards tunnel endpoints) from NodeConfig. */
/* bpf.masquerade: the native-routing CIDR the agent renders (IPV4_SNAT_EXCLUSION_DST_CIDR,
 * lib/nat.h:729), in place of the tree's test value; v1.18's IPV4_MASQUERADE define (1.20
 * has the load-time nat_ipv4_masquerade, config.h). */
#ifdef NPH_SNAT_EXCL_CIDR4
# undef IPV4_SNAT_EXCLUSION_DST_CIDR
# undef IPV4_SNAT_EXCLUSION_DST_CIDR_LEN
# define IPV4_SNAT_EXCLUSION_DST_CIDR NPH_SNAT_EXCL_CIDR4
# define IPV4_SNAT_EXCLUSION_DST_CIDR_LEN NPH_SNAT_EXCL_CIDR4_LEN
#endif
#ifdef NPH_SNAT_EXCL_CIDR6
# undef IPV6_SNAT_EXCLUSION_DST_CIDR
# undef IPV6_SNAT_EXCLUSION_DST_CIDR_MASK
# define IPV6_SNAT_EXCLUSION_DST_CIDR NPH_SNAT_EXCL_CIDR6
# define IPV6_SNAT_EXCLUSION_DST_CIDR_MASK NPH_SNAT_EXCL_CIDR6_MASK
#endif
#if NPH_CILIUM_MINOR < 120 && defined(NPH_IPV4_MASQUERADE)
# undef IPV4_MASQUERADE
# define IPV4_MASQUERADE NPH_IPV4_MASQUERADE
#endif
/* v1.18 reads IPV6_MASQUERADE as two load-time halves (BPF_V6 -> fetch_ipv6, nat.h:1449),
 * which lib/stubs.h fills with zeros unless IPV6_MASQUERADE_V says they exist. */
#if NPH_CILIUM_MINOR < 120 && defined(NPH_IPV6_MASQUERADE_BYTES)
# define NPH_DEFINE_IPV6(name, ...) DEFINE_IPV6(name, __VA_ARGS__)
NPH_DEFINE_IPV6(IPV6_MASQUERADE, NPH_IPV6_MASQUERADE_BYTES);
# define IPV6_MASQUERADE_V
#endif

#ifdef NPH_IPV4_GATEWAY
# undef IPV4_GATEWAY
# define IPV4_GATEWAY NPH_IPV4_GATEWAY
#endif

/* -- local delivery: the pod's policy program (cilium_call_policy[lxc_id]) ----------
 * With BPF host routing, delivery to a pod ends in a tail call into that pod's
 * bpf_lxc policy program. The harness stands in for it the way Cilium's own tests do
 * (tc_nodeport_lb4_nat_lb.c: mock_policy_call_map): it records the endpoint id and
 * lets a one-line program accept the packet. */
__section_entry
int nph_policy_accept(struct __ctx_buff *ctx __maybe_unused)
{
	return CTX_ACT_REDIRECT;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 1);
	__array(values, int());
} nph_policy_calls __section(".maps") = {
	.values = {
		[0] = &nph_policy_accept,
	},
};

static __always_inline __maybe_unused void
nph_tail_call_dynamic(struct __ctx_buff *ctx, const void *map __maybe_unused, __u32 slot)
{
	nph_record(4, (int)slot, 0);
	tail_call(ctx, &nph_policy_calls, 0);
}
#define tail_call_dynamic nph_tail_call_dynamic

/* CT timeouts as the agent renders them from its flags (bpf-ct-timeout-regular-tcp and
 * -service-tcp default 2h13m20s = 8000 s since v1.15, -syn 1m, -fin 10s, -any 1m);
 * the tree's node_config.h carries compile-test values (21600 s). */
#ifdef NPH_CT_LIFETIME_TCP
# undef CT_CONNECTION_LIFETIME_TCP
# define CT_CONNECTION_LIFETIME_TCP NPH_CT_LIFETIME_TCP
# undef CT_SERVICE_LIFETIME_TCP
# define CT_SERVICE_LIFETIME_TCP NPH_CT_LIFETIME_TCP
# undef CT_CONNECTION_LIFETIME_NONTCP
# define CT_CONNECTION_LIFETIME_NONTCP NPH_CT_LIFETIME_ANY
# undef CT_SERVICE_LIFETIME_NONTCP
# define CT_SERVICE_LIFETIME_NONTCP NPH_CT_LIFETIME_ANY
# undef CT_SYN_TIMEOUT
# define CT_SYN_TIMEOUT NPH_CT_SYN_TIMEOUT
# undef CT_CLOSE_TIMEOUT
# define CT_CLOSE_TIMEOUT NPH_CT_CLOSE_TIMEOUT
#endif
