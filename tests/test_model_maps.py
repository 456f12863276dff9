"""EqMap's equality-search paths: the ones a proof takes when a key is symbolic (unhashable)."""

from __future__ import annotations

from typing import Any

from model.maps import EqMap, LruMap


class Key:
    """A key that compares by value but cannot be hashed, as a symbolic port cannot."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return self.v == (other.v if isinstance(other, Key) else other)

    def __repr__(self) -> str:
        return f"Key({self.v})"


def test_dict_backed_map_looked_up_with_an_unhashable_key() -> None:
    # Concrete keys live in a dict; an unhashable key falls back to an == search.
    m: EqMap[Any, str] = EqMap({1: "a", 2: "b", 3: "c"})
    assert m[Key(2)] == "b" and m.get(Key(3)) == "c"
    assert Key(1) in m and Key(9) not in m and m.get(Key(9)) is None


def test_pair_backed_map_lookup_insert_delete() -> None:
    # One unhashable key switches the map to a list of pairs searched with ==.
    m: EqMap[Any, str] = EqMap([(Key(1), "a"), (Key(2), "b")])
    assert m[2] == "b" and m[Key(1)] == "a" and 3 not in m and len(m) == 2
    m2 = m.with_item(Key(1), "A")
    assert [(k.v, v) for k, v in m2.items()] == [(2, "b"), (1, "A")]  # re-inserted: newest
    m3 = m2.without(Key(2))
    assert [(k.v, v) for k, v in m3.items()] == [(1, "A")] and Key(2) not in m3
    assert m.without(Key(7)) == m


def test_pair_backed_lru_map_evicts_the_oldest_when_full() -> None:
    lru: LruMap[Any, str] = LruMap(capacity=2, entries=EqMap([(Key(1), "a"), (Key(2), "b")]))
    full = lru.put(Key(3), "c")
    assert [k.v for k in full] == [2, 3] and full.get(Key(1)) is None
    refreshed = lru.put(Key(2), "B")  # an existing key is rewritten, nothing evicted
    assert [(k.v, refreshed.get(k)) for k in refreshed] == [(1, "a"), (2, "B")]
    assert lru.put_noexist(Key(1), "x") is None and lru.delete(Key(1)).get(Key(1)) is None
    assert len(lru.delete(Key(1))) == 1 and lru.delete(Key(5)) == lru
