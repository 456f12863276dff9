"""cilium-bpf with loadBalancer.algorithm maglev: the defines per release, the table rows,
the reference refusing a table of the wrong size, and the Maglev vectors on both trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciliumbpf import programming as prog
from datapath.config import BackendConfig, NodeConfig, ServiceConfig
from datapath.errors import ConfigError
from datapath.host import Node
from datapath.vectors import run_vector_file
from tests.test_ciliumbpf_adapter import TREE, TREE_118, VECTORS, real

ROOT = Path(__file__).resolve().parent.parent
TABLE = (124, 125) * 10


def _cfg(table: tuple[int, ...] = TABLE, **kw: object) -> NodeConfig:
    svc = ServiceConfig(frontend="172.16.10.2", port=80, rev_nat_index=7, backends=(124, 125),
                        maglev=table)
    base: dict[str, object] = dict(
        ipv4="10.0.10.1", services=(svc,), selection="maglev", maglev_table_size=20,
        hash_seed4=0xCAFE, hash_seed6=0xEB9F,
        backends=(BackendConfig(id=124, address="192.168.0.2", port=8080),
                  BackendConfig(id=125, address="192.168.0.3", port=8080)))
    base.update(kw)
    return NodeConfig(**base)  # type: ignore[arg-type]


def test_defines_select_maglev_with_size_and_seeds() -> None:
    for version in ("1.18.0-dev", "1.20.0-dev"):
        d = prog.defines(_cfg(), version=version)
        assert d["LB_SELECTION"] == d["LB_SELECTION_MAGLEV"] == "2"
        assert d["NPH_LB_MAGLEV_LUT_SIZE"] == "20"
        assert (d["NPH_HASH_INIT4_SEED"], d["NPH_HASH_INIT6_SEED"]) == ("51966", "60319")
    plain = prog.defines(_cfg(selection="random"), version="1.20.0-dev")
    assert "NPH_LB_MAGLEV_LUT_SIZE" not in plain and "LB_SELECTION" not in plain


def test_rows_carry_the_table_per_rev_nat_index() -> None:
    rows = [(k, v) for n, k, v in prog.Entries(_cfg()).rows() if n == "cilium_lb4_maglev"]
    assert rows == [(7, TABLE)]
    assert not [n for n, _k, _v in prog.Entries(_cfg(selection="random", services=(
        ServiceConfig(frontend="172.16.10.2", port=80, rev_nat_index=7,
                      backends=(124,)),))).rows() if n == "cilium_lb4_maglev"]


def test_a_table_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="LB_MAGLEV_LUT_SIZE"):
        Node(_cfg(table=(124,) * 19))


@real
@pytest.mark.parametrize("name", ["maglev.yaml", "session_affinity_maglev.yaml"])
def test_real_bpf_maglev_vectors_both_trees(name: str) -> None:
    """The picks of the reference's jhash (and, for 1.20 with affinity, Cilium's own test)
    are those of both releases' compiled lb4/lb6_select_backend_id_maglev."""
    from ciliumbpf.adapter import factory

    for tree in (TREE, TREE_118):
        if not tree.is_dir():
            pytest.skip(f"no Cilium tree at {tree}")
        f = factory(str(tree))
        rep = run_vector_file(VECTORS / name, f, version=f.cilium_version)
        assert rep.ok and not rep.skipped, rep.format()
