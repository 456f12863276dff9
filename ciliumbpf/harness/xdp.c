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

#include <bpf_xdp.c>

#include "config.h"
