"""Real cgroups and namespaces for integration tests.

``sandbox`` creates child cgroups with limits (through procview's own cgroup
model, so v1, hybrid and v2 hosts all work) and starts processes in them,
optionally as the init of a new pid namespace (``unshare --pid --fork``),
the way a container runtime would. Everything it makes is removed at the
end of the test, even when the test fails: processes are killed, then the
cgroups are removed deepest first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from procview import cgroups

ROOT_REASON = "needs root (creates cgroups and namespaces)"


def _require_root():
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


class Started:
    """A process started in a cgroup: ``pid`` is the host pid of the
    process the test cares about (the namespace init when ``pidns``)."""

    def __init__(self, popen: subprocess.Popen, pid: int):
        self.popen = popen
        self.pid = pid


class Sandbox:
    def __init__(self):
        self.hierarchies = cgroups.discover()
        self.base = f"/procview-pytest-{uuid.uuid4().hex[:8]}"
        self._cgroups: list[cgroups.Cgroup] = []
        self._procs: list[subprocess.Popen] = []

    def cgroup(self, name: str, memory=None, swap=None, cpus: float | None = None, cpuset=None, period: int = 100000):
        """Create ``<base>/<name>`` with the given limits (bytes, CPUs)."""
        cg = self.hierarchies.cgroup(f"{self.base}/{name}")
        cg.create()
        self._cgroups.append(cg)
        if cpuset is not None:
            cg.set_cpuset(frozenset(cpuset))
        if memory is not None:
            cg.set_memory_limit(memory)
        if swap is not None:
            cg.set_swap_limit(swap)
        if cpus is not None:
            cg.set_cpu_quota(cgroups.CpuQuota(int(cpus * period), period))
        return cg

    def start(self, cg: cgroups.Cgroup, argv: list[str], pidns: bool = False, mountns: bool = False, **kwargs) -> Started:
        """Start ``argv`` inside ``cg``; with ``pidns`` it runs as pid 1 of a
        new pid namespace and ``Started.pid`` is that init's host pid."""
        prefix = []
        if pidns or mountns:
            prefix = ["unshare", "--fork", "--kill-child"]
            if pidns:
                prefix += ["--pid", "--mount-proc"]
            elif mountns:
                prefix += ["--mount"]

        def enter_cgroup():
            cg.add_process(os.getpid())

        popen = subprocess.Popen(prefix + argv, preexec_fn=enter_cgroup, start_new_session=True, **kwargs)
        self._procs.append(popen)
        pid = popen.pid
        if prefix:
            pid = _wait_for_child(popen.pid)
        return Started(popen, pid)

    def close(self) -> None:
        for popen in self._procs:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()
        # Processes leave their cgroups asynchronously after they are reaped.
        for cg in reversed(self._cgroups):
            _remove_with_retry(cg)
        _remove_with_retry(self.hierarchies.cgroup(self.base))


def _wait_for_child(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} started no child")


def _remove_with_retry(cg: cgroups.Cgroup, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cg.remove()
            return
        except cgroups.CgroupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def sandbox():
    _require_root()
    for tool in ("unshare",):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (not a timing
    assertion: the timeout only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
