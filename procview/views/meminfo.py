"""``/proc/meminfo``: the machine's memory file, told from the container's side.

The container's "RAM" is its memory cgroup: MemTotal is the effective limit
(the smallest over the cgroup and its ancestors) and MemFree is what the
cgroup may still charge before it hits that limit. Everything else follows
from three rules, so that no line contradicts the limit and no line leaks
what the host or its other tenants are doing:

1. **From the cgroup.** Where ``memory.stat`` counts a quantity for the
   cgroup (page cache, anon, slab, dirty, kernel stacks, ...), the line
   shows the cgroup's number, converted to kB.
2. **Derived the kernel's way.** Totals the cgroup does not keep (Active,
   Slab, CommitLimit, ...) are computed from rule-1 numbers with the
   kernel's own formula (``fs/proc/meminfo.c``, ``mm/util.c``).
3. **Clamped.** A line the cgroup cannot answer keeps the host's value,
   capped at the container's MemTotal, so it never claims more memory than
   the container has. Unknown future fields get this rule too.

``meminfo_values`` computes the numbers once per request; ``/proc/swaps``,
the NUMA node's ``meminfo`` and the ``sysinfo(2)`` answer reuse them, so
every tool that asks about memory gets the same answer.

A note on "unknown" in ``memory.stat``: a field is None when this kernel or
cgroup version does not report it (cgroup v1 has no kernel_stack, percpu,
vmalloc, ... counters). Such a line shows 0. That is exactly what the
cgroup knows it has charged there, it can never exceed the limit, and it
reveals nothing about the host; copying the host's value instead is the
LXCFS leak we avoid (its host CommitLimit next to a 256 MiB MemTotal).
"""

from __future__ import annotations

from procview.cgroups import UNLIMITED, MemoryLimits, MemoryStat, MemoryUsage
from procview.host import replace_meminfo_values, scan_meminfo
from procview.views._inputs import ContainerMemory

# Properties of the machine, not amounts of memory the container holds: the
# size of one huge page and the size of the kernel's vmalloc address space.
MACHINE_CONSTANTS = frozenset({"Hugepagesize", "VmallocTotal"})

# meminfo lines that are plain memory.stat counters (or sums of them).
# A None part counts as 0: the cgroup charged nothing it reports there.
STAT_FIELDS: dict[str, tuple[str, ...]] = {
    # Page cache, shmem/tmpfs included, as the kernel's Cached.
    "Cached": ("file",),
    "SwapCached": ("swapcached",),
    # The LRU lists. Shmem pages sit on the *anon* lists (they can only be
    # swapped, not dropped), so Active(file)+Inactive(file) is cache that
    # could be dropped.
    "Active": ("active_anon", "active_file"),
    "Inactive": ("inactive_anon", "inactive_file"),
    "Active(anon)": ("active_anon",),
    "Inactive(anon)": ("inactive_anon",),
    "Active(file)": ("active_file",),
    "Inactive(file)": ("inactive_file",),
    "Unevictable": ("unevictable",),
    "Dirty": ("file_dirty",),
    "Writeback": ("file_writeback",),
    "Mapped": ("file_mapped",),
    "Shmem": ("shmem",),
    # The kernel's KReclaimable is reclaimable slab plus a few other
    # reclaimable kernel caches that cgroups do not count separately.
    "KReclaimable": ("slab_reclaimable",),
    "Slab": ("slab_reclaimable", "slab_unreclaimable"),
    "SReclaimable": ("slab_reclaimable",),
    "SUnreclaim": ("slab_unreclaimable",),
    "KernelStack": ("kernel_stack",),
    "PageTables": ("pagetables",),
    "SecPageTables": ("sec_pagetables",),
    "Percpu": ("percpu",),
    "VmallocUsed": ("vmalloc",),
    "AnonHugePages": ("anon_thp",),
    "ShmemHugePages": ("shmem_thp",),
    "FileHugePages": ("file_thp",),
    "Zswap": ("zswap",),
}

# Lines that are a part of another line and so may not exceed it.
PART_OF = {"ShmemPmdMapped": "ShmemHugePages", "FilePmdMapped": "FileHugePages"}


def kib(n_bytes: int | None) -> int | None:
    """Bytes to whole kB (the unit of meminfo), None stays None, and a
    garbled negative count reads as 0."""
    if n_bytes is None:
        return None
    return max(0, int(n_bytes)) // 1024


def effective_memory_kb(limit, host_total_kb: int) -> int:
    """MemTotal in kB: the cgroup's effective memory limit, capped at the
    host's RAM (a container can never use more than the machine has).

    UNLIMITED, unknown (None), 0 and any limit of host size or more all mean
    "no limit below the machine's own": the host's MemTotal. (A v2
    ``memory.max`` of 0 is a cgroup that may not allocate at all; showing
    a 0 kB machine would make tools divide by zero, so it reads as no
    limit, as LXCFS reads it.)
    """
    if limit is None or limit is UNLIMITED:
        return host_total_kb
    limit_kb = kib(limit)
    if limit_kb <= 0 or limit_kb >= host_total_kb:
        return host_total_kb
    return limit_kb


def _stat_kb(stat: MemoryStat | None, field: str) -> int | None:
    if stat is None:
        return None
    return kib(getattr(stat, field))


def _stat_sum_kb(stat: MemoryStat | None, fields: tuple[str, ...]) -> int:
    return sum(_stat_kb(stat, field) or 0 for field in fields)


def _stat_in_kb(stat: MemoryStat | None) -> dict[str, int]:
    """The fields ``stat`` has, in kB (as ``kib``); unknown ones left out."""
    if stat is None:
        return {}
    fields = zip(stat._fields, stat)
    return {field: int(value) >> 10 if value > 0 else 0 for field, value in fields if value is not None}


def _anon_pages_kb(stat: MemoryStat | None) -> int:
    """AnonPages: ``anon`` (v1 ``total_rss``). If a kernel leaves it out,
    the anon LRU lists minus shmem (which lives on them) give nearly the
    same number; LXCFS computes it that way."""
    anon = _stat_kb(stat, "anon")
    if anon is not None:
        return anon
    on_anon_lists = _stat_sum_kb(stat, ("active_anon", "inactive_anon"))
    return max(0, on_anon_lists - (_stat_kb(stat, "shmem") or 0))


def ram_fields(host: dict[str, int], total_kb: int, usage_kb: int | None, stat: MemoryStat | None) -> dict[str, int]:
    """MemTotal, MemFree and MemAvailable.

    MemFree = MemTotal - usage (the cgroup's usage includes its page cache
    and kernel memory, which are not free either), never below 0 (usage
    can briefly exceed the limit while the kernel reclaims). When usage is unknown, MemFree is
    the host's MemFree capped at MemTotal: a number that is at least
    possible.

    MemAvailable = MemFree + Active(file) + Inactive(file) + SReclaimable:
    what the kernel could hand out by dropping clean cache and shrinking
    slab. Shmem/tmpfs is *not* counted: those pages can only move to swap.
    (LXCFS 5.0 counted the whole cache, tmpfs included.) The kernel's own
    estimate also subtracts the zone watermarks and counts up to half the
    cache as lost; a cgroup has no watermarks, and at its limit the kernel
    reclaims the cgroup's cache before the OOM killer runs, so all of the
    cache counts. The result is
    kept between MemFree and MemTotal.
    """
    if usage_kb is None:
        free = min(max(0, host.get("MemFree", 0)), total_kb)
    else:
        free = max(0, total_kb - usage_kb)
    reclaimable = _stat_sum_kb(stat, ("active_file", "inactive_file", "slab_reclaimable"))
    available = min(free + reclaimable, total_kb)
    return {"MemTotal": total_kb, "MemFree": free, "MemAvailable": available}


def stat_fields(host: dict[str, int], total_kb: int, stat: MemoryStat | None) -> dict[str, int]:
    """The lines read from ``memory.stat`` (see ``STAT_FIELDS``), each
    capped at MemTotal, plus:

    - Buffers = 0: block-device buffers are page cache to a cgroup, which
      does not count them separately; they are inside Cached.
    - AnonPages = ``anon`` (see ``_anon_pages_kb``).
    - Mlocked = min(host Mlocked, Unevictable): the cgroup does not count
      mlocked pages, but they are all on its unevictable list, so its own
      Unevictable bounds them; the host's number bounds them from the
      other side.
    - ShmemPmdMapped, FilePmdMapped: not counted per cgroup; the host's
      value, capped at the huge pages they are part of.
    """
    # memory.stat in kB once, not once per line, and plain loops: meminfo
    # is read on every open.
    in_kb = _stat_in_kb(stat).get
    fields = {}
    for name, parts in STAT_FIELDS.items():
        kb = 0
        for part in parts:
            kb += in_kb(part, 0)
        fields[name] = kb if kb < total_kb else total_kb
    fields["Buffers"] = 0
    fields["AnonPages"] = min(_anon_pages_kb(stat), total_kb)
    fields["Mlocked"] = min(max(0, host.get("Mlocked", 0)), fields["Unevictable"])
    for name, whole in PART_OF.items():
        fields[name] = min(max(0, host.get(name, 0)), fields[whole])
    return fields


def swap_fields(
    host: dict[str, int], limits: MemoryLimits, usage: MemoryUsage, stat: MemoryStat | None
) -> dict[str, int]:
    """SwapTotal, SwapFree and Zswapped.

    SwapTotal = the cgroup's swap limit (swap alone; on v1 the backend has
    already taken the memory limit out of ``memsw``), capped at the host's
    swap: UNLIMITED gives the host's SwapTotal, and unknown (None: swap is
    not accounted, e.g. v1 booted with ``swapaccount=0``) gives 0, since
    the cgroup then cannot say what share is its own. SwapFree is
    SwapTotal minus swap used, never below 0 and never wrapped; swap used
    unknown counts as 0. Swappiness plays no part (LXCFS shows a 100 %-full device when it
    is 0).

    Zswapped (the uncompressed size of pages held by zswap) is swapped-out
    data, so it is capped at SwapTotal rather than at MemTotal.
    """
    host_swap_kb = max(0, host.get("SwapTotal", 0))
    if limits.swap is None:
        swap_total = 0
    elif limits.swap is UNLIMITED:
        swap_total = host_swap_kb
    else:
        swap_total = min(kib(limits.swap), host_swap_kb)
    swap_used = min(kib(usage.swap) or 0, swap_total)
    zswapped = min(_stat_kb(stat, "zswapped") or 0, swap_total)
    return {"SwapTotal": swap_total, "SwapFree": swap_total - swap_used, "Zswapped": zswapped}


def hugepage_fields(host: dict[str, int], total_kb: int) -> dict[str, int]:
    """HugePages_Total/Free/Rsvd/Surp (page counts) and Hugetlb (kB).

    The huge page pool is the machine's and is not charged to the memory
    cgroup, but a pool bigger than the container's RAM contradicts the
    limit. So the pool is kept if HugePages_Total * Hugepagesize fits in
    MemTotal, and otherwise scaled down to as many pages as fit, with
    Free, Rsvd and Surp scaled by the same factor. Hugetlb (the kB of all
    pools, of every page size) is that default pool plus the host's pools
    of other page sizes, capped at MemTotal.
    """
    size_kb = max(0, host.get("Hugepagesize", 0))
    host_pages = max(0, host.get("HugePages_Total", 0))
    pages = min(host_pages, total_kb // size_kb) if size_kb else host_pages

    def scaled(name: str) -> int:
        count = max(0, host.get(name, 0))
        if pages != host_pages:
            count = count * pages // host_pages
        return min(count, pages)

    pool_kb = pages * size_kb
    other_pools_kb = max(0, host.get("Hugetlb", 0) - host_pages * size_kb)
    return {
        "HugePages_Total": pages,
        "HugePages_Free": scaled("HugePages_Free"),
        "HugePages_Rsvd": scaled("HugePages_Rsvd"),
        "HugePages_Surp": scaled("HugePages_Surp"),
        "Hugetlb": min(pool_kb + other_pools_kb, total_kb),
    }


def commit_fields(fields: dict[str, int], swap_used_kb: int, overcommit_ratio: int) -> dict[str, int]:
    """CommitLimit and Committed_AS, from already computed ``fields``.

    CommitLimit is what the kernel would allow under
    ``vm.overcommit_memory=2`` on a machine of this size
    (``vm_commit_limit``): (MemTotal - Hugetlb) * overcommit_ratio / 100 +
    SwapTotal.

    Committed_AS (memory promised to mappings) is not tracked per cgroup.
    What the container certainly uses is a lower bound for it: AnonPages +
    Shmem + swap used (private and shared memory that can only live in RAM
    or swap). Capped at MemTotal + SwapTotal, all the container can hold.

    A garbled ``overcommit_ratio`` (negative, not an int) reads as the
    kernel's default, 50.
    """
    ram_kb = max(0, fields["MemTotal"] - fields["Hugetlb"])
    ratio = overcommit_ratio if isinstance(overcommit_ratio, int) and overcommit_ratio >= 0 else 50
    commit_limit = ram_kb * ratio // 100 + fields["SwapTotal"]
    known_use = fields["AnonPages"] + fields["Shmem"] + swap_used_kb
    committed = min(known_use, fields["MemTotal"] + fields["SwapTotal"])
    return {"CommitLimit": commit_limit, "Committed_AS": committed}


def direct_map_fields(host: dict[str, int], total_kb: int) -> dict[str, int]:
    """DirectMap4k/2M/1G: how much of the machine's physical memory the
    kernel maps with each page size. They describe the host's RAM (their
    sum is the RAM plus firmware holes, a bit more than MemTotal), so each
    is scaled by the same factor, MemTotal / (sum of the host's DirectMap
    lines), which keeps the host's proportions and makes the lines add up
    to exactly MemTotal (rounding leftovers go to the lines with the
    largest fractions).
    """
    # ("in" first: a cheap operator that rules out almost every name.)
    host_map = {
        name: max(0, value) for name, value in host.items() if "DirectMap" in name and name.startswith("DirectMap")
    }
    host_sum = sum(host_map.values())
    if host_sum == 0:
        return host_map
    scaled = {name: value * total_kb // host_sum for name, value in host_map.items()}
    leftover = total_kb - sum(scaled.values())
    by_fraction = sorted(host_map, key=lambda name: host_map[name] * total_kb % host_sum, reverse=True)
    for name in by_fraction[:leftover]:
        scaled[name] += 1
    return scaled


def meminfo_values(host: dict[str, int], memory: ContainerMemory, overcommit_ratio: int = 50) -> dict[str, int]:
    """The container's meminfo numbers, for every field of ``host``.

    ``host`` is the host's ``/proc/meminfo`` parsed by
    ``procview.host.parse_meminfo``; the result has the same keys, in kB
    (HugePages_* as page counts). All memory amounts are capped at
    MemTotal except SwapTotal/SwapFree/Zswapped (capped at SwapTotal),
    CommitLimit/Committed_AS (which include swap) and the machine constants
    Hugepagesize and VmallocTotal (kept: they are not memory the container
    holds). No value is negative. Where each number comes from:

    - MemTotal: the effective limit capped at host RAM
      (``effective_memory_kb``); MemFree, MemAvailable: ``ram_fields``.
    - Buffers, Cached ... Zswap, AnonPages, Mlocked, ShmemPmdMapped,
      FilePmdMapped: ``memory.stat`` (``STAT_FIELDS``, ``stat_fields``).
    - SwapTotal, SwapFree, Zswapped: ``swap_fields``.
    - HugePages_*, Hugetlb: ``hugepage_fields``.
    - CommitLimit, Committed_AS: ``commit_fields`` (``overcommit_ratio`` is
      the host's ``vm.overcommit_ratio``).
    - DirectMap*: ``direct_map_fields``.
    - Anything else: min(host value, MemTotal). NFS_Unstable, Bounce,
      WritebackTmp, VmallocChunk, CmaTotal, Unaccepted, Balloon and the
      fields of future kernels: the cgroup cannot answer them, and this
      generic clamp keeps them from contradicting the limit.

    Without the host's MemTotal there is no machine to compare with: the
    host's numbers are returned unchanged (negatives read as 0).
    """
    if "MemTotal" not in host:
        return {name: max(0, value) for name, value in host.items()}
    limits = memory.limits or MemoryLimits(None, None)
    usage = memory.usage or MemoryUsage(None, None)
    stat = memory.stat
    total_kb = effective_memory_kb(limits.memory, max(0, host["MemTotal"]))

    fields = ram_fields(host, total_kb, kib(usage.memory), stat)
    fields.update(stat_fields(host, total_kb, stat))
    fields.update(swap_fields(host, limits, usage, stat))
    fields.update(hugepage_fields(host, total_kb))
    fields.update(commit_fields(fields, fields["SwapTotal"] - fields["SwapFree"], overcommit_ratio))
    fields.update(direct_map_fields(host, total_kb))

    # Every host line clamped, in the host's order; then the machine
    # constants and the lines computed above replace theirs (a
    # comprehension and set operations: fewer Python steps per line).
    values = {name: (value if value < total_kb else total_kb) if value > 0 else 0 for name, value in host.items()}
    for name in MACHINE_CONSTANTS & values.keys():
        values[name] = max(0, host[name])
    for name in fields.keys() & values.keys():
        values[name] = fields[name]
    return values


# The lines ``sysinfo(2)`` reports (totalram, freeram, sharedram, bufferram,
# totalswap, freeswap).
SYSINFO_FIELDS = ("MemTotal", "MemFree", "Shmem", "Buffers", "SwapTotal", "SwapFree")


def sysinfo_memory(host: dict[str, int], memory: ContainerMemory) -> dict[str, int]:
    """``SYSINFO_FIELDS`` of ``meminfo_values(host, memory)``, computed by
    the same functions but without the other fifty lines (sysinfo is
    called far more often than meminfo is read)."""
    if "MemTotal" not in host:
        return {name: max(0, host.get(name, 0)) for name in SYSINFO_FIELDS}
    limits = memory.limits or MemoryLimits(None, None)
    usage = memory.usage or MemoryUsage(None, None)
    total_kb = effective_memory_kb(limits.memory, max(0, host["MemTotal"]))
    fields = ram_fields(host, total_kb, kib(usage.memory), memory.stat)
    fields["Shmem"] = min(_stat_sum_kb(memory.stat, STAT_FIELDS["Shmem"]), total_kb)
    fields["Buffers"] = 0  # as stat_fields: buffers are page cache to a cgroup
    fields.update(swap_fields(host, limits, usage, memory.stat))
    return {name: fields[name] for name in SYSINFO_FIELDS}


def swap_values(host: dict[str, int], memory: ContainerMemory) -> dict[str, int]:
    """SwapTotal and SwapFree of ``meminfo_values(host, memory)``, by the
    same function (``swap_fields``) but without the rest: ``/proc/swaps``
    needs no ``memory.stat`` and none of the other fifty lines."""
    if "MemTotal" not in host:
        return {name: max(0, host.get(name, 0)) for name in ("SwapTotal", "SwapFree")}
    limits = memory.limits or MemoryLimits(None, None)
    usage = memory.usage or MemoryUsage(None, None)
    fields = swap_fields(host, limits, usage, None)  # memory.stat feeds only Zswapped
    return {"SwapTotal": fields["SwapTotal"], "SwapFree": fields["SwapFree"]}


def render_meminfo(host_text: str, memory: ContainerMemory, overcommit_ratio: int = 50) -> str:
    """The container's ``/proc/meminfo``: the host's text with the numbers
    of ``meminfo_values``. Every host line stays, in the host's order and
    column alignment, so parsers that expect this kernel's layout (psutil,
    procps ``free``, Node ``os.freemem``) read it unchanged."""
    scan = scan_meminfo(host_text)
    values = meminfo_values(scan.values, memory, overcommit_ratio)
    return replace_meminfo_values(host_text, values, scan=scan)


__all__ = [
    "MACHINE_CONSTANTS",
    "STAT_FIELDS",
    "SYSINFO_FIELDS",
    "swap_values",
    "sysinfo_memory",
    "effective_memory_kb",
    "meminfo_values",
    "render_meminfo",
]
