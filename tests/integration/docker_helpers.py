"""A private ``dockerd`` for the integration tests (Debian's docker.io 20.10).

``private_dockerd(tmp_dir, env)`` starts one dockerd that shares nothing
with a system Docker and changes nothing of the host:

- its own API socket (``-H unix://DIR/docker.sock``), ``--data-root``,
  ``--exec-root`` and ``--pidfile`` under DIR;
- no network set-up: ``--bridge=none --iptables=false --ip6tables=false
  --ip-masq=false --userland-proxy=false`` (no docker0, no iptables rule;
  containers run with ``--network none``);
- its own containerd, which dockerd starts itself when ``--containerd`` is
  not given (socket, state and root under the exec and data roots);
- ``--cgroup-parent`` a cgroup of its own, removed at the end;
- the runtime ``procview`` (``<venv>/bin/procview-runc``) registered in
  its own ``daemon.json`` (``reconfigure`` rewrites the file and reloads
  dockerd with SIGHUP, as ``systemctl reload docker`` does); the shim gets
  ``PROCVIEW_VIEW`` and ``PROCVIEW_SECCOMP_SOCKET`` through dockerd's own
  environment (dockerd -> containerd -> containerd-shim-runc-v2 -> runtime
  each pass their environment on; ``test_docker.py`` checks the result);
- logs (dockerd's, with its containerd's) to DIR/dockerd.log.

Four paths outside DIR are written, because dockerd 20.10 and containerd
1.6 hard-code them: ``/run/containerd/s/<hash>`` (the runc v2 shims'
sockets, removed by each shim when it exits), ``/etc/docker/key.json``
(dockerd's trust key), the empty ``/run/docker/plugins`` and the empty
``/opt/containerd/{bin,lib}`` (containerd's "opt" plugin). ``close``
removes each of them again if it did not exist before the daemon started
(and holds nothing else).

``close`` removes every container, stops dockerd with SIGTERM (SIGKILL if
it hangs), kills its containerd and shims if any survived, unmounts
whatever is left below DIR (lazily), and removes DIR and the cgroups
(``engine_helpers.sweep``, shared with the private containerd).
Timeouts here only bound hangs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from .engine_helpers import (
    RUN_TIMEOUT, SHIM, STOP_TIMEOUT, HostPaths, export_busybox, missing_tool, start_daemon, stop_daemon, sweep,
    wait_until_ready,
)
from .serve_helpers import read_log

# Debian's client, not whatever other `docker` PATH finds first.
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else (shutil.which("docker") or "docker")
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"

# Host paths dockerd and containerd create whatever their roots are, and the
# files they may hold afterwards (see the module's docstring).
HOST_PATHS = {"/run/containerd": set(), "/run/docker": set(), "/etc/docker": {"key.json"}, "/opt/containerd": set()}


def have_docker() -> str | None:
    """None if the tests can run, else why not."""
    if os.geteuid() != 0:
        return "needs root (dockerd)"
    return missing_tool((DOCKERD, DOCKER, "containerd", "containerd-shim-runc-v2", "runc"), "docker.io")


class PrivateDockerd:
    def __init__(self, directory: Path, env: dict[str, str], runtimes: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "docker.sock")
        self.host = f"unix://{self.socket}"
        self.data_root = str(self.dir / "data")
        self.exec_root = str(self.dir / "exec")
        self.pidfile = str(self.dir / "dockerd.pid")
        self.log_path = str(self.dir / "dockerd.log")
        self.cgroup_parent = f"procview-pytest-docker-{uuid.uuid4().hex[:8]}"
        self.host_paths = HostPaths(HOST_PATHS)
        self.config_path = self.dir / "daemon.json"
        # The runtimes go in daemon.json, not --add-runtime flags: a test
        # may then change them (and default-runtime) with ``reconfigure``,
        # as an administrator edits the file and reloads.
        self.config = {"runtimes": {name: {"path": path} for name, path in {"procview": SHIM, **(runtimes or {})}.items()}}
        self.argv = [
            DOCKERD, "-H", self.host, "--data-root", self.data_root, "--exec-root", self.exec_root,
            "--pidfile", self.pidfile, "--config-file", str(self.config_path),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false",
            "--storage-driver", "overlay2", "--cgroup-parent", self.cgroup_parent, "--log-level", "info",
        ]
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        self.env = {**os.environ, **env}
        self.env.pop("DOCKER_HOST", None)
        self.popen: subprocess.Popen | None = None

    # -- life ------------------------------------------------------------------

    def start(self) -> None:
        self.popen = start_daemon(self.argv, self.env, self.log_path)
        wait_until_ready(self.popen, self._answers, "dockerd", self.describe)

    def _answers(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        info = self.docker("info", "--format", "{{.ServerVersion}}", timeout=60, check=False)
        return info.returncode == 0 and bool(info.stdout.strip())

    def reconfigure(self, **settings) -> None:
        """Writes ``settings`` over daemon.json's (None removes one) and has
        dockerd reload it (SIGHUP, what ``systemctl reload docker`` sends);
        returns once dockerd has logged the reload."""
        self.config.update(settings)
        self.config = {key: value for key, value in self.config.items() if value is not None}
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        reloads = self.log().count("Reloaded configuration")
        assert self.popen is not None
        self.popen.send_signal(signal.SIGHUP)
        wait_until_ready(self.popen, lambda: self.log().count("Reloaded configuration") > reloads,
                         f"dockerd (reloading {self.config_path})", self.describe)

    def log(self) -> str:
        return read_log(self.log_path)

    def describe(self) -> str:
        return f"dockerd: {' '.join(self.argv)}\n--- its log (last 60 lines) ---\n" + "\n".join(self.log().splitlines()[-60:])

    def docker(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, "-H", self.host, *args], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout, env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
                                **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {result.returncode}\n{result.stderr}\n{self.describe()}")
        return result

    def load_busybox(self, state_root: str) -> None:
        """The built-in busybox image of ``procview image export``, loaded."""
        archive = str(self.dir / "busybox.tar")
        export_busybox(archive, state_root)
        self.docker("load", "-i", archive)
        os.unlink(archive)

    def import_rootfs(self, archive: str, reference: str) -> None:
        """A root file system archive as an image (``docker import``)."""
        self.docker("import", archive, reference)

    def close(self) -> list[str]:
        """Stops everything; returns what had to be cleaned up by force."""
        problems = []
        if self.popen is not None and self.popen.poll() is None:
            try:
                ids = self.docker("ps", "-aq", timeout=120, check=False).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                problems.append("dockerd did not answer `docker ps`/`docker rm` at the end")
        problems += stop_daemon(self.popen, "dockerd", STOP_TIMEOUT)
        # Its containerd and any shim still alive name the exec root, below DIR.
        return problems + sweep(self.dir, self.cgroup_parent, self.host_paths, "this dockerd")
