"""``/proc/cpuinfo`` as a container sees it.

The kernel writes one block of ``name<tabs>: value`` lines per online CPU,
blocks separated by a blank line. The block's first line names the CPU:
``processor\\t: 3`` on x86, arm64, ppc64, riscv and most others. Some
architectures add blocks that describe no single CPU: arm64 and ppc64 may
end with ``Hardware``/``Revision``/``timebase`` lines, and s390x starts with
a summary block (``# processors : 4`` and one ``processor 3: version = ...``
line per CPU) before its per-CPU blocks, which begin ``cpu number : 3``.

Tools read it for the model name and flags (``lscpu``, Node's
``os.cpus()``), and some count its ``processor`` lines as the CPU count
(psutil's fallback, many scripts), so the blocks must be exactly the
container's view CPUs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from procview.views.cpuview import CpuView

BLOCK_SEPARATOR = "\n\n"

# The line that names a CPU's block: "processor\t: 3" (most architectures)
# or "cpu number      : 3" (s390x). Groups: label, number, trailing space.
_CPU_BLOCK_LINE = re.compile(r"^((?:processor|cpu number)\s*:\s*)(\d+)(\s*)$")
# s390x's summary block: "processor 3: version = 00, ..." and its count.
_SUMMARY_CPU_LINE = re.compile(r"^(processor )(\d+)(:.*)$")
_SUMMARY_COUNT_LINE = re.compile(r"^(# processors\s*:\s*)(\d+)(\s*)$")


def render_cpuinfo(host_text: str, view: CpuView) -> str:
    """Render ``/proc/cpuinfo`` for one container.

    - CPU blocks: exactly the blocks of real CPUs ``view.cpus``, in view
      order, with their number rewritten to the view number 0..n-1 (the
      numbering of ``/proc/stat`` and ``cpu/online``). The others are
      dropped.
    - ``siblings`` (logical CPUs in the package) = number of kept blocks
      with the same ``physical id``; ``cpu cores`` (cores in the package) =
      number of distinct ``core id`` among them. LXCFS keeps the host's
      values, so a 1-CPU view says ``siblings: 4`` (D10). Blocks without a
      ``physical id`` keep theirs.
    - Every other field (model, flags, MHz, ``core id``, ``apicid``) is the
      host's: it describes the real CPU the container runs on.
    - Blocks that are not about one CPU (arm64's ``Hardware`` lines,
      s390x's summary) stay in place; in s390x's summary the
      ``processor N:`` lines are filtered and renumbered the same way and
      ``# processors`` is the number of CPUs shown.
    - The host's formatting (tabs, blank lines, trailing newline) is kept.

    Host text with no CPU blocks at all (an unknown format), or none of the
    view's CPUs (the host's numbering disagrees with its online mask), is
    returned unchanged: better the host's CPUs than no CPU at all.
    """
    # The file's last newlines belong to the file, not to its last block
    # (which may be dropped): x86 and arm64 end "\n\n", s390x "\n".
    body = host_text.rstrip("\n")
    ending = host_text[len(body):]
    blocks = body.split(BLOCK_SEPARATOR)
    shown = _keep_view_cpus(blocks, _block_cpu_number, _renumber_blocks, view)
    if shown is None:
        return host_text
    shown_count = sum(1 for block in shown if _block_cpu_number(block) is not None)
    shown = [_rewrite_summary(block, view, shown_count) for block in shown]
    return BLOCK_SEPARATOR.join(shown) + ending


def _keep_view_cpus(
    items: list[str],
    cpu_number: Callable[[str], int | None],
    renumber: Callable[[list[str]], list[str]],
    view: CpuView,
) -> list[str] | None:
    """Replace the items that name a CPU (``cpu_number`` is not None) by
    those of the view's CPUs, in view order, passed through ``renumber``;
    they go where the first CPU item was. Items naming no CPU stay.

    Returns None when there are CPU items but none of the view's.
    """
    view_index = view.real_to_view()
    numbered = [(item, cpu_number(item)) for item in items]
    in_view = sorted(
        ((view_index[number], item) for item, number in numbered if number in view_index),
        key=lambda pair: pair[0],
    )
    has_cpus = any(number is not None for _, number in numbered)
    if has_cpus and not in_view:
        return None
    kept = renumber([item for _, item in in_view])
    result: list[str] = []
    kept_placed = False
    for item, number in numbered:
        if number is None:
            result.append(item)
        elif not kept_placed:
            result.extend(kept)
            kept_placed = True
    return result


# -- per-CPU blocks -------------------------------------------------------


def _block_cpu_number(block: str) -> int | None:
    """The real CPU a block describes, or None for other blocks."""
    for line in block.split("\n"):
        match = _CPU_BLOCK_LINE.match(line)
        if match:
            return int(match.group(2))
    return None


def _renumber_blocks(blocks: list[str]) -> list[str]:
    """Blocks in view order -> numbered 0..k-1, topology made consistent."""
    renumbered = [_renumber_block(block, index) for index, block in enumerate(blocks)]
    return _consistent_topology(renumbered)


def _renumber_block(block: str, number: int) -> str:
    lines = block.split("\n")
    for i, line in enumerate(lines):
        match = _CPU_BLOCK_LINE.match(line)
        if match:
            lines[i] = f"{match.group(1)}{number}{match.group(3)}"
            break
    return "\n".join(lines)


def _consistent_topology(blocks: list[str]) -> list[str]:
    """Rewrite ``siblings`` and ``cpu cores`` to count the kept blocks only."""
    package_of = [_field_value(block, "physical id") for block in blocks]
    core_of = [_field_value(block, "core id") for block in blocks]
    result = []
    for block, package in zip(blocks, package_of):
        if package is not None:
            same_package = [i for i, other in enumerate(package_of) if other == package]
            cores = {core_of[i] for i in same_package if core_of[i] is not None}
            block = _set_number_field(block, "siblings", len(same_package))
            if cores:
                block = _set_number_field(block, "cpu cores", len(cores))
        result.append(block)
    return result


def _field_value(block: str, name: str) -> str | None:
    for line in block.split("\n"):
        field, colon, value = line.partition(":")
        if colon and field.strip() == name:
            return value.strip()
    return None


def _set_number_field(block: str, name: str, value: int) -> str:
    """Replace the number of field ``name``, keeping the host's spacing; a
    field whose value is not a number is left alone."""
    pattern = re.compile(r"^(" + re.escape(name) + r"\s*:\s*)(\d+)(\s*)$")
    lines = block.split("\n")
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            lines[i] = f"{match.group(1)}{value}{match.group(3)}"
    return "\n".join(lines)


# -- s390x summary block --------------------------------------------------


def _rewrite_summary(block: str, view: CpuView, shown_count: int) -> str:
    """s390x's summary block: keep the view's ``processor N:`` lines,
    renumbered, and set ``# processors`` to the CPUs shown. Any other block
    comes back unchanged."""
    lines = block.split("\n")
    kept = _keep_view_cpus(lines, _summary_cpu_number, _renumber_summary_lines, view)
    if kept is None:  # none of the view's CPUs listed: leave the summary
        return block
    if shown_count == 0:  # old s390x kernels: no per-CPU blocks
        shown_count = sum(1 for line in kept if _summary_cpu_number(line) is not None)
    return "\n".join(_set_summary_count(line, shown_count) for line in kept)


def _summary_cpu_number(line: str) -> int | None:
    match = _SUMMARY_CPU_LINE.match(line)
    return int(match.group(2)) if match else None


def _renumber_summary_lines(lines: list[str]) -> list[str]:
    return [_SUMMARY_CPU_LINE.sub(rf"\g<1>{index}\g<3>", line) for index, line in enumerate(lines)]


def _set_summary_count(line: str, count: int) -> str:
    match = _SUMMARY_COUNT_LINE.match(line)
    return f"{match.group(1)}{count}{match.group(3)}" if match else line
