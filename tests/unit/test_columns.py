"""Columns: per-key numbers in arrays, at a slot per key."""

from __future__ import annotations

import math
from array import array

import pytest

from procview.columns import Columns


def _columns() -> Columns:
    return Columns(taken=("d", math.nan), memory=("q", -1), view=(None, ()))


def test_a_new_slot_starts_at_each_columns_fill():
    columns = _columns()
    slot = columns.add("a")
    assert math.isnan(columns.taken[slot]) and columns.memory[slot] == -1
    assert columns.slot("a") == slot and columns.slot("b") == -1
    assert "a" in columns and len(columns) == 1


def test_a_removed_keys_slot_is_used_again_and_refilled():
    columns = _columns()
    columns.add("a")
    columns.add("b")
    columns.memory[columns.slot("a")] = 512
    columns.remove("a")
    slot = columns.add("c")
    assert len(columns.memory) == 2  # no new row
    assert columns.memory[slot] == -1  # not a's number
    assert columns.slot("a") == -1 and len(columns) == 2


def test_slot_or_add_keeps_an_existing_slot():
    columns = _columns()
    slot = columns.add("a")
    columns.memory[slot] = 7
    assert columns.slot_or_add("a") == slot and columns.memory[slot] == 7


def test_drop_spare_room_packs_the_slots_and_keeps_every_keys_numbers():
    columns = _columns()
    for n in range(1000):
        columns.memory[columns.add(n)] = n * 10
    for n in range(1000):
        if n % 100:
            columns.remove(n)
    columns.drop_spare_room()
    assert len(columns.memory) == len(columns.taken) == 10
    assert sorted(columns) == list(range(0, 1000, 100))
    for key, slot in columns.items():
        assert columns.memory[slot] == key * 10
    slot = columns.add("new")  # after the packed slots, not over one
    assert slot == 10 and len(columns.memory) == 11


def test_clear_forgets_every_key_and_row():
    columns = _columns()
    columns.add("a")
    columns.remove("a")
    columns.clear()
    assert len(columns) == 0 and len(columns.memory) == 0
    assert columns.add("b") == 0


def test_a_reference_column_is_a_list_that_packs_and_refills_like_the_others():
    columns = _columns()
    shared = ("cpu0", "cpu1")
    for n in range(4):
        slot = columns.add(n)
        columns.view[slot], columns.memory[slot] = shared, n
    columns.remove(1)
    columns.drop_spare_room()
    assert isinstance(columns.view, list) and len(columns.view) == 3
    assert all(columns.view[slot] is shared for _key, slot in columns.items())
    columns.refill("view")
    columns.refill("memory")
    assert columns.view == [(), (), ()] and list(columns.memory) == [-1, -1, -1]
    assert columns.memory.typecode == "q"


def test_a_removed_key_lets_go_of_what_its_references_held():
    import weakref

    class View:
        pass

    columns = _columns()
    view = View()
    columns.view[columns.add("a")] = view
    gone = weakref.ref(view)
    del view
    columns.remove("a")
    assert gone() is None


def test_a_column_of_width_three_gives_each_slot_three_numbers():
    columns = Columns(loads=("q", 7, 3), taken=("d", 0.0))
    a, b = columns.add("a"), columns.add("b")
    assert list(columns.loads) == [7] * 6 and len(columns.taken) == 2
    columns.loads[a * 3 : a * 3 + 3] = array("q", [1, 2, 3])
    columns.loads[b * 3 : b * 3 + 3] = array("q", [4, 5, 6])
    columns.remove("a")
    assert columns.add("c") == a and list(columns.loads) == [7, 7, 7, 4, 5, 6]  # a's row refilled, b's kept


def test_drop_spare_room_packs_each_slots_whole_row():
    columns = Columns(row=("q", 0, 4))
    for n in range(100):
        slot = columns.add(n)
        columns.row[slot * 4 : slot * 4 + 4] = array("q", [n, n + 1, n + 2, n + 3])
    for n in range(100):
        if n % 10:
            columns.remove(n)
    columns.drop_spare_room()
    assert len(columns.row) == 10 * 4
    for key, slot in columns.items():
        assert list(columns.row[slot * 4 : slot * 4 + 4]) == [key, key + 1, key + 2, key + 3]


def test_a_reference_column_of_width_two_lets_go_of_a_removed_keys_row():
    columns = Columns(pair=(None, None, 2))
    a, b = columns.add("a"), columns.add("b")
    columns.pair[a * 2 : a * 2 + 2] = ["a0", "a1"]
    columns.pair[b * 2 : b * 2 + 2] = ["b0", "b1"]
    columns.remove("a")
    assert columns.pair == [None, None, "b0", "b1"]
    columns.drop_spare_room()
    assert columns.pair == ["b0", "b1"] and columns.slot("b") == 0
    columns.refill("pair")
    assert columns.pair == [None, None]


def test_a_column_added_later_has_a_value_for_every_slot_and_packs_like_the_others():
    columns = _columns()
    for n in range(3):
        columns.add(n)
    columns.remove(1)  # a free slot gets the new column's fill too
    columns.add_column("fd", "i", -1)
    assert list(columns.fd) == [-1, -1, -1] and columns.fd.typecode == "i"
    columns.fd[columns.slot(2)] = 9
    slot = columns.add("new")  # the free slot, its new column at the fill
    assert columns.fd[slot] == -1
    columns.remove(0)
    columns.drop_spare_room()
    assert len(columns.fd) == 2 and columns.fd[columns.slot(2)] == 9
    columns.add_column("names", None, ())
    assert columns.names == [(), ()]


def test_a_column_may_not_take_an_existing_name_or_a_methods():
    columns = _columns()
    for name in ("memory", "add", "items"):
        with pytest.raises(ValueError):
            columns.add_column(name, "q", 0)


def test_slot_as_latest_moves_its_key_last_in_the_order():
    columns = _columns()
    for key in "abc":
        columns.add(key)
    assert columns.slot_as_latest("a") == 0
    assert list(columns) == ["b", "c", "a"]
    assert columns.slot_as_latest("z") == -1 and "z" not in columns
    columns.remove("b")
    columns.drop_spare_room()  # renumbered in that order
    assert list(columns.items()) == [("c", 0), ("a", 1)]


def test_drop_spare_room_packs_the_same_column_objects():
    """Whoever holds a column (KeptFiles holds its fd columns) still holds
    the packed one."""
    columns = _columns()
    held = columns.memory, columns.view
    for n in range(100):
        columns.memory[columns.add(n)] = n
    for n in range(99):
        columns.remove(n)
    columns.drop_spare_room()
    assert (columns.memory, columns.view) == held and columns.memory is held[0] and columns.view is held[1]
    assert list(columns.memory) == [99]
