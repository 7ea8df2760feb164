"""procview's main job, end to end, on this machine.

1. Mount the view: use the procview already serving /var/lib/procview if
   there is one, else start `procview serve` on a temporary mount point.
2. Start a container limited to 512 MiB and 1 CPU on the built-in busybox
   image with `procview run`, which binds the view over its /proc and /sys.
3. Run the tools there, next to the host's.

busybox `free` and `uptime` ask sysinfo(2) and `nproc` asks
sched_getaffinity(2), which no file can change: procview serve answers
them for the container (seccomp user notification). The container also
shows the first lines of its /proc/meminfo, which `free` from procps,
`top`, psutil and every other /proc reader use: both agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from procview.mounts import is_live_procview

SYSTEM_MOUNT = "/var/lib/procview"
SYSTEM_SECCOMP_SOCKET = "/run/procview/seccomp.sock"
PROCVIEW = os.path.join(os.path.dirname(sys.executable), "procview")
INSIDE = "echo '$ free -m'; free -m; echo '$ nproc'; nproc; echo '$ head -3 /proc/meminfo'; head -3 /proc/meminfo; echo '$ uptime'; uptime"


def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run_on_host() -> None:
    section("host")
    for argv in (["free", "-m"], ["nproc"], ["head", "-3", "/proc/meminfo"], ["uptime"]):
        print("$ " + " ".join(argv), flush=True)
        subprocess.run(argv, check=False)


def start_view(cleanup: list) -> tuple[str, str]:
    """The mount point and supervisor socket of a procview that answers
    (the system's or ours)."""
    if is_live_procview(SYSTEM_MOUNT):
        print(f"using the procview already serving {SYSTEM_MOUNT}")
        return SYSTEM_MOUNT, SYSTEM_SECCOMP_SOCKET
    mountpoint = tempfile.mkdtemp(prefix="procview-demo-")
    pidfile = mountpoint + ".pid"
    socket_path = mountpoint + ".sock"
    daemon = subprocess.Popen(
        [PROCVIEW, "serve", mountpoint, "--pidfile", pidfile, "--seccomp-socket", socket_path, "--log-level", "warning"]
    )

    def stop():
        daemon.terminate()
        daemon.wait(timeout=30)
        os.rmdir(mountpoint)

    cleanup.append(stop)
    for _ in range(3000):  # the pidfile appears once the mount answers
        if os.path.exists(pidfile):
            print(f"$ procview serve {mountpoint} --seccomp-socket {socket_path}")
            return mountpoint, socket_path
        if daemon.poll() is not None:
            raise SystemExit(f"procview serve exited with {daemon.returncode}")
        time.sleep(0.01)
    raise SystemExit("procview serve did not become ready")


def main() -> int:
    if os.geteuid() != 0:
        print("dev/demo.py: must run as root (it mounts FUSE and starts a container)", file=sys.stderr)
        return 1
    run_on_host()
    cleanup: list = []
    try:
        section("view")
        view, socket_path = start_view(cleanup)
        # --network none: the demo is about the view, and the default
        # network (bridge) would change the host's (a bridge, a firewall
        # table, IPv4 forwarding) for a container that needs none.
        argv = [PROCVIEW, "run", "--rm", "--network", "none", "--view", view, "--seccomp-socket", socket_path,
                "--memory", "512M", "--cpus", "1", "busybox", "sh", "-c", INSIDE]
        section("container: " + " ".join(["procview"] + argv[1:-1]) + " '...'")
        return subprocess.run(argv).returncode
    finally:
        for undo in reversed(cleanup):
            undo()


if __name__ == "__main__":
    sys.exit(main())
