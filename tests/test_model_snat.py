"""__snat_clamp_port_range at the edges of the NAT range, against the reference datapath's."""

from __future__ import annotations

import attrs
import pytest

from datapath.nat import snat_clamp_port_range
from model.config import CiliumConfig, CiliumVersion
from model.snat import clamp_port


@pytest.mark.parametrize("version", [CiliumVersion.V1_13, CiliumVersion.V1_20])
@pytest.mark.parametrize("nodeport_max", [32767, 65533, 65534])
def test_clamped_ports_stay_in_the_nat_range(version: CiliumVersion, nodeport_max: int) -> None:
    # nodePort.range up to 65534 leaves a one-port NAT range (65535): v1.13's modulo has
    # span 0 there and must still answer the range's only port.
    cfg = attrs.evolve(CiliumConfig(), version=version, nodeport_max=nodeport_max)
    for val in (0, 1, 2, 0x7FFF, 0xFFFF, 0x12345):
        port = clamp_port(cfg, val)
        assert cfg.nat_min <= port <= cfg.nat_max_port, (val, port)
        assert port == snat_clamp_port_range(cfg.nat_min, cfg.nat_max_port, val,
                                             modulo=version is CiliumVersion.V1_13)
