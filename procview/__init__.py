"""procview: container resource views.

Layout of the package (read in this order):

- ``procview.cgroups``: the cgroup model. Discovers the host's hierarchies
  (v1, hybrid, v2) from ``/proc/self/mountinfo`` and gives one interface,
  with a v1 and a v2 backend behind it, to read limits and usage and to
  write limits (the runtime uses the same model).
- ``procview.host``: small pure parsers for the host's ``/proc`` files.
- ``procview.identity``: who is asking: caller pid -> pid-namespace init ->
  container cgroup, cached per pid namespace.
- ``procview.views``: one pure renderer per virtual file, plus ``cpuview``,
  the single CPU view every file uses.
- ``procview.engine``: ties them together: (path, caller pid) -> file text,
  and the ``sysinfo``/``sched_getaffinity`` answers from the same values.
- ``procview.fs`` and ``procview.daemon``: the FUSE filesystem and the
  ``procview serve`` daemon; ``procview.supervisor`` (with the kernel layer
  ``procview.seccomp_notify``, the protocol ``procview.seccomp_agent`` and
  ``procview.listener_holder``, which keeps the listeners while the daemon
  restarts): the syscalls no file can fix.

Pure functions in the middle; file reads at the edges (``cgroups``,
``host``, ``identity``, ``engine``).
"""

__version__ = "0.1.0"

# Where runtimes hand their containers' seccomp listeners over: the
# listener holder's socket, which passes them to ``procview serve``'s
# supervisor (procview/listener_holder.py, procview/supervisor.py).
DEFAULT_SECCOMP_SOCKET = "/run/procview/seccomp.sock"
