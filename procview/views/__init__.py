"""One pure renderer per virtual file.

Each module turns plain values (``_inputs``, ``cpuview``, the cgroup
model's values) and the host's own text into the container's text. None of
them reads a file: the engine gathers the inputs at the edge.

- ``meminfo``, ``swaps``, ``sys_node``: memory (one set of numbers, so the
  three files and later ``sysinfo(2)`` agree).
- ``cpuview``: the one CPU view; ``cpuinfo``, ``stat``, ``sys_cpu`` use it.
- ``uptime``, ``loadavg``, ``diskstats``.
"""
