"""What a piece of procview code leaves in Python's small objects.

Small blocks (at most 512 bytes) come from pymalloc's arenas, which a few
survivors keep after a burst of containers (procview/columns.py): the
per-container cost that has to stay small. Larger blocks are ``malloc``'s
and go back to the kernel.
"""

from __future__ import annotations

import gc
import os
import tracemalloc

import procview

SMALL = 512  # pymalloc serves requests up to this size
PACKAGE = os.path.dirname(procview.__file__) + os.sep


def small_bytes_left_by(work) -> int:
    """Bytes in small blocks allocated in procview's code by ``work()``
    and still allocated after it (and a full garbage collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        work()
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(
        trace.size
        for trace in snapshot.traces
        if trace.size <= SMALL and trace.traceback[0].filename.startswith(PACKAGE)
    )
