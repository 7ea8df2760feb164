"""``/sys/devices/system/cpu/{online,possible,present}`` as a container sees them.

The kernel's three CPU masks (see Documentation/ABI/testing/sysfs-devices-system-cpu):

- ``online``: CPUs the scheduler may use now. glibc's ``get_nprocs`` and
  ``_SC_NPROCESSORS_ONLN`` (so Python's ``os.cpu_count``, ``psutil.cpu_count``)
  read it.
- ``possible``: CPUs that could ever be brought online. glibc's
  ``get_nprocs_conf`` and ``_SC_NPROCESSORS_CONF``, ``nproc --all`` and
  ``lscpu``'s "CPU(s)" read it.
- ``present``: CPUs physically there.

Inside a container all three say ``0-(n-1)``, where n is the CPU view's
count. LXCFS virtualizes ``online`` only (defect D10), so a container with a
1-CPU view there has ``_NPROCESSORS_ONLN`` = 1 but ``_NPROCESSORS_CONF`` = 2,
and ``lscpu`` reports one CPU "off-line". A container cannot hot-plug CPUs,
so the CPUs that could ever be online for it are exactly the ones it has.
"""

from __future__ import annotations

from procview.views.cpuview import CpuView


def render_cpu_list(view: CpuView) -> str:
    """The text of ``online``, ``possible`` and ``present``: the view CPUs'
    numbers, which are always ``0..n-1``, in the kernel's range syntax
    (``"0-3\\n"``; ``"0\\n"`` for one CPU)."""
    return view.online + "\n"
