"""CT/SNAT lifecycles read off model runs: which entries live where, and how they end."""

from __future__ import annotations

from diagrams.catalogue import STANDARD_DIR
from diagrams.lifecycle import EntryId, Event, entry_marks, mode_specs, run_lifecycle
from model.maps import CtEntry, NatEntry, TupleFlags
from model.scenario import load


def _run(name: str) -> list[Event]:
    sc = load(STANDARD_DIR / name)
    return run_lifecycle(sc.world, mode_specs(sc.flows))


def _ids(events: list[Event]) -> list[EntryId]:
    out: list[EntryId] = []
    for ev in events:
        out += [e for e in ev.entries if e not in out]
    return out


def _first(events: list[Event], eid: EntryId) -> object:
    return next(ev.entries[eid] for ev in events if eid in ev.entries)


def test_snat_mode_keeps_all_state_on_the_lb_node_and_gc_clears_it() -> None:
    events = _run("snat-remote.yaml")
    ids = _ids(events)
    assert {e[0] for e in ids} == {"node1"}  # node2 delivers statelessly
    ct = [e for e in ids if e[1] == "ct"]
    snat = [e for e in ids if e[1] == "snat"]
    assert sorted(e[2].flags for e in ct) == [TupleFlags.OUT, TupleFlags.SERVICE]
    assert sorted(e[2].flags for e in snat) == [TupleFlags.OUT, TupleFlags.IN]
    egress = next(e for e in ct if e[2].flags is TupleFlags.OUT)
    entry = _first(events, egress)
    assert isinstance(entry, CtEntry) and entry.node_port and entry.rev_nat_index
    states = [m.state for m in entry_marks(egress, events) if not m.used]
    assert states == ["created", "established", "half-closing", "closing", "expired",
                      "removed by GC"]
    assert events[-1].entries == {}


def test_dsr_mode_records_the_frontend_on_the_backend_node() -> None:
    events = _run("dsr-remote.yaml")  # Cilium 1.18: frontend kept in the SNAT map
    ids = _ids(events)
    node2 = [e for e in ids if e[0] == "node2"]
    ct = next(e for e in node2 if e[1] == "ct")
    entry = _first(events, ct)
    assert isinstance(entry, CtEntry) and entry.dsr_internal and not entry.node_port
    nat = next(e for e in node2 if e[1] == "snat")
    fe = _first(events, nat)
    assert isinstance(fe, NatEntry) and (str(fe.to_addr), fe.to_port) == ("192.168.2.3", 30080)
    # The LB node keeps only CT_SERVICE for a remote DSR backend: no nodeport CT, no SNAT.
    assert [e[2].flags for e in ids if e[0] == "node1"] == [TupleFlags.SERVICE]


def test_udp_entries_expire_by_lifetime_not_by_close() -> None:
    events = _run("hybrid.yaml")
    udp = [e for e in _ids(events) if e[1] == "ct" and e[2].nexthdr.name == "UDP"]
    assert udp
    for eid in udp:
        states = [m.state for m in entry_marks(eid, events) if not m.used]
        assert "closing" not in states and states[-2:] == ["expired", "removed by GC"]
