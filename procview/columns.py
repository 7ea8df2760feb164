"""Numbers kept per container, in columns rather than in objects.

The daemon keeps a few numbers for every container it serves (when its
limits were read and what they were, when it was last read, ...). Kept as
an object per container (a tuple, a float, an int each), a thousand
containers are tens of thousands of Python's small objects; those come
from 16 KiB pools in 1 MiB arenas, and an arena goes back to the kernel
only when every object in it is gone. After a burst of containers leaves,
the few objects made meanwhile (a sleeping task's state, a counter) keep
the burst's arenas: the daemon's RSS stays at its peak.

``Columns`` keeps those numbers in ``array``s, one per column, each
container's at its *slot*. An array's numbers are unboxed, in one block
that ``malloc`` gives (and takes back, ``return_free_heap``) once it is
past 512 bytes. What is left per container is its key's entry in one
dict and the slot number.

Slots are renumbered by ``drop_spare_room``: a slot is good for the
length of one request, never to be kept.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Iterator



class Columns:
    """Columns of numbers indexed by a key's slot.

    ``Columns(taken=("d", NAN), memory=("q", -1), view=(None, None))``: a
    column ``taken`` of doubles, a column ``memory`` of int64s and a column
    ``view`` of references (a list: for objects many keys share, which cost
    a key nothing but the reference), each column an attribute; a new
    slot's values start at the column's fill value.

    A column may hold a fixed number of values per slot, its *width*:
    ``Columns(loads=("q", 0, 3))`` gives each slot three int64s, slot
    ``s``'s at ``loads[s * 3 : s * 3 + 3]`` (numbers that belong together,
    for a key, without a tuple of them).
    """

    def __init__(self, **columns: tuple):
        # A column's fills: one row of ``width`` fill values, copied into
        # each new slot.
        self._fills: dict[str, array | list] = {}
        self._references: list[str] = []
        for name, (typecode, fill, *width) in columns.items():
            self._fills[name] = _column(typecode, [fill] * (width[0] if width else 1))
            if typecode is None:
                self._references.append(name)
            setattr(self, name, _column(typecode, []))
        self._slot_of: dict[Hashable, int] = {}
        self._free: list[int] = []  # slots of removed keys, used again first
        self._slots = 0  # the columns' length: slots in use and free

    def slot(self, key: Hashable) -> int:
        """``key``'s slot, -1 when it has none."""
        return self._slot_of.get(key, -1)

    def add(self, key: Hashable) -> int:
        """A slot for ``key`` (which has none), its numbers at their fills."""
        if self._free:
            slot = self._free.pop()
            for name, fills in self._fills.items():
                start = slot * len(fills)
                getattr(self, name)[start : start + len(fills)] = fills
        else:
            slot = self._slots
            self._slots += 1
            for name, fills in self._fills.items():
                getattr(self, name).extend(fills)
        self._slot_of[key] = slot
        return slot

    def slot_or_add(self, key: Hashable) -> int:
        slot = self._slot_of.get(key, -1)
        return slot if slot >= 0 else self.add(key)

    def slot_as_latest(self, key: Hashable) -> int:
        """``key``'s slot, -1 when it has none; the key moved last in the
        keys' order (which is then the order of their last use: a
        least-recently-used order, oldest first)."""
        slot = self._slot_of.pop(key, -1)
        if slot >= 0:
            self._slot_of[key] = slot
        return slot

    def add_column(self, name: str, typecode: str | None, fill: object) -> None:
        """A new column ``name`` of one value a slot, every slot's value at
        ``fill``: for columns only known as they come (a file procview
        reads for the first time)."""
        if name in self._fills or hasattr(self, name):
            raise ValueError(f"column {name!r} exists or names a method")
        self._fills[name] = fills = _column(typecode, [fill])
        if typecode is None:
            self._references.append(name)
        setattr(self, name, fills * self._slots)

    def refill(self, name: str) -> None:
        """Every slot's value in column ``name`` back to the column's fill."""
        getattr(self, name)[:] = self._fills[name] * self._slots

    def remove(self, key: Hashable) -> None:
        slot = self._slot_of.pop(key, -1)
        if slot >= 0:
            self._free.append(slot)
            for name in self._references:  # what only this key held goes now
                fills = self._fills[name]
                getattr(self, name)[slot * len(fills) : (slot + 1) * len(fills)] = fills

    def clear(self) -> None:
        for name in self._fills:
            del getattr(self, name)[:]
        self._slot_of.clear()
        self._free.clear()
        self._slots = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slot_of

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._slot_of)

    def items(self):
        """(key, slot) pairs."""
        return self._slot_of.items()

    def drop_spare_room(self) -> None:
        """Columns sized for the keys left (after a burst of containers,
        for periodic maintenance): the slots are numbered again from 0, the
        arrays copied short. A no-op when no slot is free."""
        if not self._free:
            return
        # In place: the same column and dict objects, their contents packed
        # (an array or a list given fewer items gives its memory back, and
        # a dict emptied and filled again is sized for what it holds), so
        # whoever holds a column (KeptFiles) holds it still.
        old = list(self._slot_of.items())
        for name, fills in self._fills.items():
            column, width = getattr(self, name), len(fills)
            packed = fills[:0]  # an empty column of the same kind
            for _key, slot in old:
                packed += column[slot * width : slot * width + width]
            column[:] = packed
        self._slot_of.clear()
        self._slot_of.update((key, new) for new, (key, _old) in enumerate(old))
        self._free.clear()
        self._slots = len(old)


def _column(typecode: str | None, values: list):
    """A column holding ``values``: an array of ``typecode``, or a list of
    references when ``typecode`` is None."""
    return values if typecode is None else array(typecode, values)
