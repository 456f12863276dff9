// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* nodeport-model harness for the user's bpf_host.c (cil_from_netdev, cil_to_netdev).
 * Configuration comes as -D defines rendered by ciliumbpf/programming.py. */
#include <bpf/ctx/skb.h>
#include <bpf/api.h>

#include "harness.h"

#include <bpf_host.c>

#include "config.h"
