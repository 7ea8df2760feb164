"""procview's main job, end to end, on this machine.

1. Mount the view: use the procview already serving /var/lib/procview if
   there is one, else start `procview serve` on a temporary mount point.
2. Make a container the way a runtime does: a child cgroup with 512 MiB and
   1 CPU (a CFS quota of one CPU and a one-CPU cpuset, as `procview run
   --cpus 1` will do), new pid and mount namespaces, and the view's files
   bind-mounted over /proc and /sys inside, exactly as LXCFS users do with
   `docker run -v /var/lib/lxcfs/proc/meminfo:/proc/meminfo ...`.
3. Run the real tools there, next to the host's.

(`procview run`, the runtime with the built-in busybox image, will take over
step 2 when it lands.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from procview import cgroups
from procview.host import HostFiles

MEMORY = 512 * 1024 * 1024
CPUS = 1
SYSTEM_MOUNT = "/var/lib/procview"

# Inside the container: bind the view over /proc and /sys, then run the
# tools. busybox `free` asks sysinfo(2), which no file can answer (the
# syscall work will), so show /proc/meminfo's first lines as well.
INSIDE = r"""
set -e
for f in meminfo cpuinfo stat uptime loadavg swaps diskstats; do
    mount --bind "$VIEW/proc/$f" /proc/$f
done
mount --bind "$VIEW/sys/devices/system/cpu" /sys/devices/system/cpu
mount --bind "$VIEW/sys/devices/system/node" /sys/devices/system/node
echo '$ free -m'; free -m
echo '$ nproc'; nproc
echo '$ head -3 /proc/meminfo'; head -3 /proc/meminfo
echo '$ uptime'; uptime
"""


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_on_host() -> None:
    section("host")
    for argv in (["free", "-m"], ["nproc"], ["head", "-3", "/proc/meminfo"], ["uptime"]):
        print("$ " + " ".join(argv), flush=True)
        subprocess.run(argv, check=False)


def live_procview(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == path and " - fuse.procview " in line for line in f)
    return mounted and os.path.exists(os.path.join(path, "proc", "meminfo"))


def start_view(stack: list) -> str:
    """The mount point of a procview that answers (ours or the system's)."""
    if live_procview(SYSTEM_MOUNT):
        print(f"using the procview already serving {SYSTEM_MOUNT}")
        return SYSTEM_MOUNT
    mountpoint = tempfile.mkdtemp(prefix="procview-demo-")
    pidfile = mountpoint + ".pid"
    daemon = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "procview"), "serve", mountpoint, "--pidfile", pidfile,
         "--log-level", "warning"],
    )
    stack.append(lambda: _stop(daemon, mountpoint))
    for _ in range(3000):  # the pidfile appears once the mount answers
        if os.path.exists(pidfile):
            print(f"procview serve {mountpoint} (pid {daemon.pid})")
            return mountpoint
        if daemon.poll() is not None:
            raise SystemExit(f"procview serve exited with {daemon.returncode}")
        time.sleep(0.01)
    raise SystemExit("procview serve did not become ready")


def _stop(daemon: subprocess.Popen, mountpoint: str) -> None:
    daemon.terminate()
    daemon.wait(timeout=30)
    os.rmdir(mountpoint)


def main() -> int:
    if os.geteuid() != 0:
        print("dev/demo.py: must run as root (it mounts FUSE, creates a cgroup and namespaces)", file=sys.stderr)
        return 1
    run_on_host()
    cleanup: list = []
    try:
        view = start_view(cleanup)
        cg = cgroups.discover().cgroup(f"/procview-demo-{uuid.uuid4().hex[:8]}")
        cg.create()
        cleanup.append(lambda: _remove(cg))
        cg.set_cpuset(frozenset({min(HostFiles().online_cpus())}))
        cg.set_memory_limit(MEMORY)
        cg.set_cpu_quota(cgroups.CpuQuota(CPUS * 100000, 100000))
        section(f"container: --memory 512M --cpus {CPUS} (cgroup {cg.path})")
        container = subprocess.run(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc",
             "sh", "-c", INSIDE],
            env={**os.environ, "VIEW": view},
            preexec_fn=lambda: cg.add_process(os.getpid()),
        )
        return container.returncode
    finally:
        for undo in reversed(cleanup):
            undo()


def _remove(cg) -> None:
    for _ in range(200):  # processes leave a cgroup just after they are reaped
        try:
            cg.remove()
            return
        except cgroups.CgroupError:
            time.sleep(0.05)
    cg.remove()


if __name__ == "__main__":
    sys.exit(main())
