"""The escape battery's fixtures: the probe binary, and containers run once
per mode with every check in one script (a container start costs ~15x
more in the cgroup v2 VM).

``probe`` builds ``probe.c`` with ``gcc -static`` (Debian's libc6-dev has
``libc.a``); the tests bind it into busybox containers read-only.
``battery(mode)`` runs ``CHECKS`` in one container with the given extra
``procview run`` options and returns {check name: output}.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROCVIEW = os.path.join(os.path.dirname(sys.executable), "procview")
TIMEOUT = 600  # the VM is slow


@pytest.fixture(scope="session")
def probe(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (runs containers)")
    out = tmp_path_factory.mktemp("probe") / "probe"
    build = subprocess.run(["gcc", "-static", "-O2", os.path.join(HERE, "probe.c"), "-o", str(out)],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert build.returncode == 0, f"gcc -static failed (needs libc6-dev): {build.stderr}"
    return str(out)


def procview_run(root, *args, timeout=TIMEOUT):
    return subprocess.run([PROCVIEW, "run", "--root", root, *args], capture_output=True, text=True, timeout=timeout)


def leftovers(root: str) -> list[str]:
    """Container directories and procview cgroups still there."""
    from integration.test_run import _procview_cgroups

    containers = os.path.join(root, "containers")
    return (os.listdir(containers) if os.path.isdir(containers) else []) + _procview_cgroups()


def host_disk() -> str:
    """MAJOR:MINOR of a block device this machine's root can open: a disk
    from /proc/partitions, else loop0 (some sandboxes refuse even root
    their disks)."""
    with open("/proc/partitions") as f:
        for line in f.read().splitlines()[2:]:
            fields = line.split()
            if len(fields) == 4 and _can_open(f"/dev/{fields[3]}"):
                return f"{fields[0]}:{fields[1]}"
    return "7:0"


def _can_open(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY))
        return True
    except OSError:
        return False


def script(checks: dict[str, str]) -> str:
    """One shell script: each check's output between ``##name`` markers."""
    parts = []
    for name, command in checks.items():
        parts.append(f"echo '##{name}'; ( {command} ) 2>&1; echo \"##rc=$?\"")
    return "; ".join(parts)


def parse(stdout: str) -> dict[str, str]:
    results, name, lines = {}, None, []
    for line in stdout.splitlines():
        if line.startswith("##rc="):
            results[name] = ("\n".join(lines) + f"\nrc={line[5:]}").strip()
            name, lines = None, []
        elif line.startswith("##"):
            name, lines = line[2:], []
        elif name is not None:
            lines.append(line)
    return results


class Battery:
    """Runs the checks once per mode (cached for the session)."""

    def __init__(self, root: str, probe: str, checks: dict[str, str]):
        self.root, self.probe, self.checks = root, probe, checks
        self.results: dict[str, dict[str, str]] = {}

    def __call__(self, *options: str) -> dict[str, str]:
        key = " ".join(options)
        if key not in self.results:
            result = procview_run(self.root, "--no-view", "-v", f"{self.probe}:/probe:ro", *options,
                                  "busybox", "sh", "-c", script(self.checks))
            assert result.returncode == 0, (options, result.stderr)
            self.results[key] = parse(result.stdout)
            assert leftovers(self.root) == [], "container left behind"
        return self.results[key]
