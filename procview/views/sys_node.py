"""``/sys/devices/system/node/nodeN/meminfo``: the container as one NUMA node.

On a NUMA machine the kernel splits RAM into nodes and reports each node's
share in its own ``meminfo`` (``node_read_meminfo`` in
``drivers/base/node.c``), every line prefixed ``Node N``::

    Node 0 MemTotal:        4810528 kB

procps (``top``, ``vmstat``, through libnuma) and ``lscpu`` read these files,
so a container that saw the host's nodes would learn the host's RAM after
all. A container is shown as a single node that holds all of its memory:
the node's numbers are the container's ``/proc/meminfo`` numbers (the
``values`` of ``meminfo.meminfo_values``), so both files always agree.

- MemTotal, MemFree and every line that ``/proc/meminfo`` also has (Active,
  Inactive, the LRU lists, Dirty, Shmem, Slab, HugePages_*, SwapCached,
  ...): the container's value.
- MemUsed = MemTotal - MemFree (the kernel's definition for a node).
- FilePages = Cached + Buffers + SwapCached: the node's count of all file
  pages, of which ``/proc/meminfo`` shows Cached after taking out swap
  cache and buffers (``fs/proc/meminfo.c``).
- Any other line (fields only nodes have, fields of future kernels): the
  host node's value capped at MemTotal, the same generic clamp as in
  ``/proc/meminfo``.
"""

from __future__ import annotations

import re

from procview.host import parse_meminfo, replace_meminfo_values

_NODE_PREFIX = re.compile(r"^Node \d+ ")


def renumber_node(text: str, node: int) -> str:
    """Give every ``Node K`` line the prefix ``Node {node}`` (the host
    file names the host's node, which need not be the one asked for)."""
    lines = [_NODE_PREFIX.sub(f"Node {node} ", line, count=1) for line in text.splitlines()]
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def parse_node_meminfo(text: str) -> dict[str, int]:
    """A node's meminfo as {name: value}, the ``Node N`` prefixes removed."""
    return parse_meminfo("\n".join(_NODE_PREFIX.sub("", line, count=1) for line in text.splitlines()))


def node_values(host_node: dict[str, int], values: dict[str, int]) -> dict[str, int]:
    """The node's numbers for every field of ``host_node`` (see the module
    docstring), from the container's meminfo ``values``."""
    total = max(0, values.get("MemTotal", host_node.get("MemTotal", 0)))
    free = min(max(0, values.get("MemFree", host_node.get("MemFree", 0))), total)
    file_pages = sum(max(0, values.get(name, 0)) for name in ("Cached", "Buffers", "SwapCached"))
    node_only = {
        "MemTotal": total,
        "MemFree": free,
        "MemUsed": total - free,
        "FilePages": min(file_pages, total),
    }
    result = {}
    for name, host_value in host_node.items():
        if name in node_only:
            result[name] = node_only[name]
        elif name in values:
            result[name] = max(0, values[name])
        else:
            result[name] = min(max(0, host_value), total)
    return result


def render_node_meminfo(host_node_text: str, node: int, values: dict[str, int]) -> str:
    """The container's ``nodeN/meminfo`` for node number ``node``: the host
    node's text, lines in the host's order and alignment, each prefixed
    ``Node {node}``, with the numbers of ``node_values``."""
    host_node = parse_node_meminfo(host_node_text)
    text = renumber_node(host_node_text, node)
    return replace_meminfo_values(text, node_values(host_node, values), prefix=f"Node {node} ")


__all__ = ["node_values", "parse_node_meminfo", "render_node_meminfo", "renumber_node"]
