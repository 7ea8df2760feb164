"""procview's main job, end to end, on this machine.

Today: the view engine. It makes a container the way a runtime does (a child
cgroup with 512 MiB and 1 CPU, new pid and mount namespaces), renders the
view for that container's init, bind-mounts the files over /proc and /sys
inside the container's mount namespace, and runs the real tools there next
to the host's. (`procview serve`, the live FUSE view, and `procview run`,
the runtime with the built-in busybox image, take over these steps as they
land.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from procview import cgroups
from procview.engine import ViewEngine

MEMORY = 512 * 1024 * 1024
CPUS = 1

# Inside the container: wait for the view, bind it over /proc and /sys, then
# run the tools. busybox `free` asks sysinfo(2), which no file can answer, so
# show /proc/meminfo's first lines as well.
INSIDE = r"""
read _ready
for f in meminfo cpuinfo stat uptime loadavg swaps diskstats; do
    mount --bind "$VIEW/proc/$f" /proc/$f
done
for f in online possible present; do
    mount --bind "$VIEW/sys/devices/system/cpu/$f" /sys/devices/system/cpu/$f
done
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


def main() -> int:
    if os.geteuid() != 0:
        print("dev/demo.py: must run as root (it creates a cgroup and namespaces)", file=sys.stderr)
        return 1
    run_on_host()
    hierarchies = cgroups.discover()
    cg = hierarchies.cgroup(f"/procview-demo-{uuid.uuid4().hex[:8]}")
    view_dir = tempfile.mkdtemp(prefix="procview-demo-")
    proc = None
    try:
        cg.create()
        first_cpu = min(ViewEngine().host.online_cpus())
        cg.set_cpuset(frozenset({first_cpu}))  # as `procview run --cpus 1` will
        cg.set_memory_limit(MEMORY)
        cg.set_cpu_quota(cgroups.CpuQuota(CPUS * 100000, 100000))
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc",
             "sh", "-c", INSIDE],
            stdin=subprocess.PIPE, text=True, env={**os.environ, "VIEW": view_dir},
            preexec_fn=lambda: cg.add_process(os.getpid()),
        )
        init_pid = _wait_for_child(proc.pid)
        engine = ViewEngine()
        for path in list(engine.FILES):
            target = os.path.join(view_dir, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(engine.render(path, init_pid))
        section(f"container: --memory 512M --cpus {CPUS} (cgroup {cg.path})")
        proc.communicate("go\n")
        return proc.returncode
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _remove(cg)
        shutil.rmtree(view_dir, ignore_errors=True)


def _wait_for_child(pid: int) -> int:
    import time

    for _ in range(3000):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
            if children:
                return int(children[0])
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("the container did not start")


def _remove(cg) -> None:
    import time

    for _ in range(200):
        try:
            cg.remove()
            return
        except cgroups.CgroupError:
            time.sleep(0.05)
    cg.remove()


if __name__ == "__main__":
    sys.exit(main())
