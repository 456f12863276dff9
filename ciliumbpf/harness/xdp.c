// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* nodeport-model harness for the user's bpf_xdp.c (cil_xdp_entry) under
 * loadBalancer.acceleration: the same stubs as host.c (harness.h), an XDP context, and
 * ENABLE_NODEPORT_ACCELERATION as the agent renders it for the XDP object. */
#include <bpf/ctx/xdp.h>
#include <bpf/api.h>

#define NPH_XDP 1
#ifndef ENABLE_NODEPORT_ACCELERATION
# define ENABLE_NODEPORT_ACCELERATION 1
#endif

#include "harness.h"

#if NPH_CILIUM_MINOR < 120 && defined(TUNNEL_MODE)
/* 1.18: the tunnel protocol and port are defines (the tree's test node_config.h says
 * VXLAN on 8472); the model's tunnel routing is Geneve on 6081. */
# undef TUNNEL_PROTOCOL
# define TUNNEL_PROTOCOL TUNNEL_PROTOCOL_GENEVE
# undef TUNNEL_PORT
# define TUNNEL_PORT 6081
#endif

#include <bpf_xdp.c>

#include "config.h"
