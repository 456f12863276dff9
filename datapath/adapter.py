"""One interface for any datapath under test: the reference model, an eBPF build, a kernel.

A datapath implementation is reached through a factory `(NodeConfig, faults) -> Datapath`.
The reference datapath (datapath.host.Node) is the first implementation; a
bpf_prog_test_run-driven build or a real kernel path plug in through the same protocol and
are chosen on the command line with `--datapath module:factory` (shared by `nodeport
vectors` and `nodeport difftest`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from typing import Any, Protocol, runtime_checkable

from datapath.config import NodeConfig
from datapath.errors import ConfigError, VectorFileError
from datapath.host import HookResult, Node

# `bpftool map dump`-like snapshot: Cilium map name -> rows of (key fields, value fields),
# addresses as text, ports/flags as ints (datapath.maps.NodeMaps.dump() is the reference).
MapDump = dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]

DEFAULT_FACTORY = "datapath.host:make_node"
# Short names for --datapath; `cilium-bpf` runs the user's Cilium tree (--cilium-src).
SHORT_NAMES = {"reference": DEFAULT_FACTORY, "cilium-bpf": "ciliumbpf.adapter:make_node"}


@runtime_checkable
class Datapath(Protocol):
    """One node's BPF programs and maps (bpf_host.o/bpf_overlay.o + pinned cilium_* maps).

    * configure: the factory receives the NodeConfig the agent would program (services and
      frontends with rev_nat_index, backends with ids, local endpoints, node addresses,
      mode/dispatch, NAT range, tunnel, eTP flags...); `reprogram` rewrites the LB,
      endpoint and ipcache maps later (backend changes) keeping CT and NAT state.
    * run: one hook ("from-netdev", "to-netdev", "from-overlay") on one packet's bytes
      starting at the IP header; returns the TC verdict, the bytes as left, the drop
      reason and the redirect target ("netdev", "cilium_geneve", "lxc:<ifindex>", "stack").
      `backend` pins the backend chosen on CT_NEW (so two implementations agree).
      Under XDP acceleration the hook "xdp" (cil_xdp_entry) returns an XdpVerdict and the
      XFER flags it hands to tc (HookResult.xfer); `xfer` gives them to "from-netdev"
      (passed only when non-zero, so a datapath without XDP may omit the parameter).
    * dump: read every map (or only the named ones) back for the abstraction function.
    """

    def run(self, hook: str, pkt: bytes | bytearray, backend: int | None = None,
            xfer: int = 0) -> HookResult: ...

    def advance(self, seconds: int) -> None: ...

    def gc(self) -> int: ...

    def dump(self, maps: Collection[str] | None = None) -> MapDump: ...

    def reprogram(self, config: NodeConfig) -> None: ...


DatapathFactory = Callable[[NodeConfig, frozenset[str]], Any]


def reference_factory(config: NodeConfig, faults: frozenset[str] = frozenset()) -> Datapath:
    """The reference (pure Python) datapath."""
    return Node(config, faults)


def load_factory(spec: str | None, cilium_src: str | None = None) -> DatapathFactory:
    """Resolve `module:factory` or a short name; a bad spec is bad input: one line, exit 2.

    Importing runs the user's module: whatever it raises (a syntax error, an exception at
    import time) is reported against --datapath, and so is a factory that raises or builds
    something that is not a Datapath."""
    if not spec:
        return reference_factory
    if spec == "cilium-bpf":
        mod: Any = importlib.import_module("ciliumbpf.adapter")
        real: DatapathFactory = mod.factory(cilium_src)
        return real
    spec = SHORT_NAMES.get(spec, spec)
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise VectorFileError("--datapath", "module:factory",
                              f"expected module:factory, got {spec!r}")
    if mod_name.startswith("."):
        raise VectorFileError("--datapath", spec, "relative module names cannot be imported "
                              "here; give the absolute module path (package.module:factory)")
    try:
        module = importlib.import_module(mod_name)
    except SyntaxError as e:
        raise VectorFileError("--datapath", spec, f"cannot import {mod_name}: syntax error "
                              f"in {e.filename}, line {e.lineno}: {e.msg}") from None
    except ImportError as e:
        raise VectorFileError("--datapath", spec, f"cannot import {mod_name}: {e}") from None
    except Exception as e:  # the user's module failed while importing
        raise VectorFileError("--datapath", spec, f"importing {mod_name} raised "
                              f"{type(e).__name__}: {e}") from None
    obj: Any = getattr(module, attr, None)
    if obj is None:
        raise VectorFileError("--datapath", spec, f"module {mod_name} has no attribute {attr!r}")
    if not callable(obj) or (isinstance(obj, type) and not hasattr(obj, "run")):
        raise VectorFileError("--datapath", spec, f"{attr} is not a factory "
                              "(a callable taking (NodeConfig, faults))")
    return _guarded(obj, spec)


def _guarded(factory: Callable[..., Any], spec: str) -> DatapathFactory:
    """The user's factory, with what it raises or returns checked and named."""
    def make(config: NodeConfig, faults: frozenset[str]) -> Any:
        try:
            obj = factory(config, faults)
        except (VectorFileError, ConfigError):
            raise
        except TypeError as e:
            raise VectorFileError("--datapath", spec, f"calling the factory failed ({e}); it "
                                  "must take (NodeConfig, faults)") from None
        except Exception as e:
            raise VectorFileError("--datapath", spec, f"the factory raised "
                                  f"{type(e).__name__}: {e}") from None
        return check_datapath(obj, spec)
    return make


def check_datapath(obj: object, spec: str) -> Datapath:
    """A factory's product must speak the protocol; otherwise it is a bad --datapath."""
    missing = [m for m in ("run", "advance", "gc", "dump", "reprogram")
               if not callable(getattr(obj, m, None))]
    if missing:
        raise VectorFileError("--datapath", spec,
                              f"the factory returned a {type(obj).__name__}, which lacks the "
                              f"Datapath protocol: {', '.join(missing)}")
    dp: Datapath = obj  # type: ignore[assignment]
    return dp
