"""``/proc/swaps``: the container's swap as one virtual device.

The kernel lists every active swap area (``swap_show`` in
``mm/swapfile.c``): a header, then per area its path, ``partition`` or
``file``, size and use in kB, and priority. A container has no swap
devices of its own, only a share of the host's that its cgroup may fill,
so this file shows that share as a single device named ``none`` of type
``virtual`` (the LXCFS convention; ``swapon --show`` lists it like any
other area):

- Size = SwapTotal and Used = SwapTotal - SwapFree, both from
  ``meminfo_values``, so this file and ``/proc/meminfo`` always agree.
- Priority 0.
- No line at all when SwapTotal is 0 (no swap, or swap not accounted):
  the file then looks like a machine with swap off.

The host's own devices are never listed: their paths and sizes describe
the host, not the container.
"""

from __future__ import annotations

# The kernel's header line (mm/swapfile.c, swap_show).
KERNEL_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"

VIRTUAL_DEVICE = "none"
VIRTUAL_TYPE = "virtual"


def swap_line(path: str, kind: str, size_kb: int, used_kb: int, priority: int) -> str:
    """One swap area in the kernel's layout: the path padded with spaces to
    40 columns, then tab-separated columns, with an extra tab after numbers
    of fewer than 8 digits so short numbers still reach the next column."""
    padding = " " * (40 - len(path) if len(path) < 40 else 1)
    size_tab = "\t" if size_kb < 10_000_000 else ""
    used_tab = "\t" if used_kb < 10_000_000 else ""
    return f"{path}{padding}{kind}\t{size_kb}\t{size_tab}{used_kb}\t{used_tab}{priority}"


def render_swaps(host_text: str, values: dict[str, int]) -> str:
    """The container's ``/proc/swaps`` from ``values`` (the result of
    ``meminfo.meminfo_values``). The header is the host's first line when
    it is the usual ``Filename ...`` header, else the kernel's."""
    lines = host_text.splitlines()
    header = lines[0] if lines and lines[0].startswith("Filename") else KERNEL_HEADER
    out = [header]
    size_kb = max(0, values.get("SwapTotal", 0))
    if size_kb > 0:
        free_kb = min(max(0, values.get("SwapFree", 0)), size_kb)
        out.append(swap_line(VIRTUAL_DEVICE, VIRTUAL_TYPE, size_kb, size_kb - free_kb, 0))
    return "\n".join(out) + "\n"


__all__ = ["KERNEL_HEADER", "render_swaps", "swap_line"]
