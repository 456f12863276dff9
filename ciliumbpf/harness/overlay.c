// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* nodeport-model harness for the user's bpf_overlay.c (cil_from_overlay). */
#include <bpf/ctx/skb.h>
#include <bpf/api.h>

#include "harness.h"

#include <bpf_overlay.c>

#include "config.h"
