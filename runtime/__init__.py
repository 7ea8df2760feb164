"""procview's bundled container runtime (``procview run``).

One module per container concept (images, rootfs, namespaces, limits,
security, process), set up in runc's order by ``container.py``. It writes
limits through the same cgroup model the view reads (``procview.cgroups``).
Being built: see docs/architecture.md.
"""
