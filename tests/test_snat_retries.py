"""The model's 32 SNAT collision retries against Cilium 1.18's 128 (nat.h:38): the same
outcome wherever the clamp's +1 steps cycle within the first 32 candidates (the default
NodePort range included), and where they do not, the reference datapath follows Cilium."""

from __future__ import annotations

import attrs
import pytest

from model.config import SNAT_COLLISION_RETRIES, CiliumConfig, CiliumVersion
from model.snat import clamp_port

CILIUM_118_RETRIES = 128  # v1.18 bpf/lib/nat.h:38


def _tails_agree(nodeport_max: int) -> bool:
    """For every second candidate (the random one), the ports the model's retries try
    are all the ports 128 retries would try: a later one repeats an earlier failure."""
    cfg = attrs.evolve(CiliumConfig(), version=CiliumVersion.V1_18,
                       nodeport_max=nodeport_max)
    lo, hi = cfg.nat_min, cfg.nat_max_port
    succ = {p: clamp_port(cfg, p + 1) for p in range(lo, hi + 1)}
    for first in range(lo, hi + 1):
        seq = [first]
        for _ in range(CILIUM_118_RETRIES - 2):
            seq.append(succ[seq[-1]])
        if set(seq[:SNAT_COLLISION_RETRIES - 1]) != set(seq):
            return False
    return True


@pytest.mark.parametrize("nodeport_max", [32767, 31576, 40000, 65533])
def test_model_retries_match_118_where_documented(nodeport_max: int) -> None:
    assert _tails_agree(nodeport_max)


def test_model_retries_differ_from_118_below_the_documented_bound() -> None:
    """One port more in the NAT range and some start needs a 32nd or later distinct port:
    the documented bound (docs/concepts.md) is the exact one."""
    assert not _tails_agree(31575)
