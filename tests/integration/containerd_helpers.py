"""A private ``containerd`` for the integration tests (Debian's containerd
1.6, its ``ctr`` and ``containerd-shim-runc-v2``).

``PrivateContainerd(DIR, env)`` starts one containerd that shares nothing
with a system containerd and changes nothing of the host:

- its own configuration file (version 2), written here to DIR/config.toml:
  ``root``, ``state``, the gRPC ``address`` (a unix socket in DIR, which
  must be short: a socket path holds at most 107 bytes) and the "opt"
  plugin's ``path`` (default ``/opt/containerd``) all in DIR;
- ``disabled_plugins``: the CRI plugin, unless ``cri=True`` (the tests of
  the Kubernetes configuration), and the aufs, btrfs, zfs and devmapper
  snapshotters (aufs would ``modprobe``; overlayfs is the one used);
- its log (``--log-level info``) in DIR/containerd.log;
- ``env`` (``PROCVIEW_VIEW``, ``PROCVIEW_SECCOMP_SOCKET``) in its
  environment, which containerd passes to ``containerd-shim-runc-v2`` and
  the shim to the runtime binary (``test_containerd.py`` checks it);
- containers from ``run``: ``ctr run --rm`` in the namespace
  ``procview-test``, with ``--fifo-dir`` and ``--runc-root`` in DIR (their
  defaults are ``/run/containerd/fifo`` and ``/run/containerd/runc``) and
  ``--cgroup /<parent>/<id>``, below a parent cgroup of this daemon; no
  network flag, so each container gets a new network namespace with only
  ``lo``.

With ``cri=True`` the CRI plugin's own paths must be put in DIR too, by the
caller, with ``cri_section`` in the configuration; the plugin then listens
on 127.0.0.1 only (its streaming server; no TCP service).

One path outside DIR is written, because containerd 1.6 hard-codes it:
``/run/containerd/s/<hash>``, the runc v2 shims' sockets, each removed by
its shim when it exits (and by ``close`` if the shim had to be killed).
``close`` removes ``/run/containerd`` again if it did not exist before the
daemon started (and holds no file).

``close`` kills and deletes every task and container, stops containerd
with SIGTERM (SIGKILL if it hangs), kills the shims that survived (they
name the socket in DIR), unmounts whatever is left below DIR (lazily), and
removes the cgroups and DIR (``engine_helpers.sweep``). Timeouts here only
bound hangs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Sequence

from .engine_helpers import (
    RUN_TIMEOUT, HostPaths, export_busybox, kill_naming, missing_tool, start_daemon, stop_daemon, sweep,
    wait_until_ready,
)
from .serve_helpers import read_log

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
NAMESPACE = "procview-test"
BUSYBOX = "docker.io/library/busybox:latest"  # the name `ctr images import` gives procview's busybox
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
# Snapshotters the tests do not use: aufs would try `modprobe aufs`, the
# others only log why they cannot work here.
UNUSED_SNAPSHOTTERS = [f"io.containerd.snapshotter.v1.{name}" for name in ("aufs", "btrfs", "zfs", "devmapper")]
# Host paths containerd 1.6 creates whatever its configuration says, and the
# files they may hold afterwards (see the module's docstring).
HOST_PATHS = {"/run/containerd": set()}


def shim_socket(address: str, container_id: str) -> Path:
    """Where the runc v2 shim of a container listens: containerd 1.6 names
    the socket by the sha256 of "ADDRESS/NAMESPACE/ID", in /run/containerd/s
    whatever its state directory is."""
    digest = hashlib.sha256(f"{address}/{NAMESPACE}/{container_id}".encode()).hexdigest()
    return Path("/run/containerd/s") / digest


def have_containerd() -> str | None:
    """None if the tests can run, else why not."""
    if os.geteuid() != 0:
        return "needs root (containerd)"
    return missing_tool((CONTAINERD, CTR, "containerd-shim-runc-v2", "runc"), "containerd")


def toml_string(value: str | os.PathLike) -> str:
    """A TOML basic string (its escapes are JSON's)."""
    return json.dumps(str(value))


def cri_section(directory: Path) -> str:
    """The CRI plugin's settings that keep it in ``directory``: its CNI
    directories (the defaults, /etc/cni/net.d and /opt/cni/bin, are the
    host's; the plugin creates the configuration directory). Its root and
    state directories are below containerd's."""
    return (f'[plugins."{CRI_PLUGIN}".cni]\n'
            f'  bin_dir = {toml_string(directory / "cni" / "bin")}\n'
            f'  conf_dir = {toml_string(directory / "cni" / "conf")}\n')


def config_toml(directory: Path, socket: str, cri: bool, imports: Sequence[str], tables: str) -> str:
    """containerd's configuration (version 2): every path in ``directory``;
    ``tables`` (TOML tables) are appended, after the top-level keys."""
    disabled = UNUSED_SNAPSHOTTERS + ([] if cri else [CRI_PLUGIN])
    lines = [
        "version = 2",
        f"root = {toml_string(directory / 'root')}",
        f"state = {toml_string(directory / 'state')}",
        f"disabled_plugins = [{', '.join(toml_string(name) for name in disabled)}]",
    ]
    if imports:
        lines.append(f"imports = [{', '.join(toml_string(path) for path in imports)}]")
    lines += [
        "",
        "[grpc]",
        f"  address = {toml_string(socket)}",
        "",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {toml_string(directory / 'opt')}",
        "",
    ]
    return "\n".join(lines) + tables


class PrivateContainerd:
    """``tables``: more of config.toml (TOML tables); ``drop_ins``: files
    (name -> text) written to DIR/conf.d and imported with
    ``imports = ["DIR/conf.d/*.toml"]``, as a node does."""

    def __init__(self, directory: Path, env: dict[str, str] | None = None, cri: bool = False, tables: str = "",
                 drop_ins: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "containerd.sock")
        self.fifo_dir = str(self.dir / "fifo")
        self.runc_root = str(self.dir / "runc")
        self.log_path = str(self.dir / "containerd.log")
        self.config_path = str(self.dir / "config.toml")
        self.cgroup_parent = f"procview-pytest-containerd-{uuid.uuid4().hex[:8]}"
        self.host_paths = HostPaths(HOST_PATHS)
        imports = []
        if drop_ins:
            (self.dir / "conf.d").mkdir()
            for name, text in drop_ins.items():
                (self.dir / "conf.d" / name).write_text(text)
            imports.append(str(self.dir / "conf.d" / "*.toml"))
        Path(self.config_path).write_text(config_toml(self.dir, self.socket, cri, imports, tables))
        self.argv = [CONTAINERD, "--config", self.config_path, "--log-level", "info"]
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen | None = None
        self.container_ids: set[str] = set()

    # -- life ------------------------------------------------------------------

    def start(self) -> None:
        self.popen = start_daemon(self.argv, self.env, self.log_path)
        wait_until_ready(self.popen, self._answers, "containerd", self.describe)

    def _answers(self) -> bool:
        return os.path.exists(self.socket) and self.ctr("version", timeout=60, check=False).returncode == 0

    def log(self) -> str:
        return read_log(self.log_path)

    def describe(self) -> str:
        return (f"containerd: {' '.join(self.argv)}\n--- {self.config_path} ---\n{Path(self.config_path).read_text()}"
                "--- its log (last 60 lines) ---\n" + "\n".join(self.log().splitlines()[-60:]))

    def ctr(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        # ctr reads CONTAINERD_ADDRESS, _NAMESPACE and _SNAPSHOTTER: none of the caller's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        result = subprocess.run([CTR, "--address", self.socket, "--namespace", NAMESPACE, *args],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: exit {result.returncode}\n{result.stderr}\n{self.describe()}")
        return result

    def load_busybox(self, state_root: str) -> None:
        """The built-in busybox image of ``procview image export``, imported
        (and unpacked) as ``BUSYBOX``."""
        archive = str(self.dir / "busybox.tar")
        export_busybox(archive, state_root)
        self.ctr("images", "import", archive)
        os.unlink(archive)

    def run(self, *options: str, command: Sequence[str], image: str = BUSYBOX) -> tuple[str, subprocess.CompletedProcess]:
        """``ctr run --rm OPTIONS IMAGE ID COMMAND``, in a cgroup below this
        daemon's parent; returns the container's id and ctr's result (its
        exit status is the container's)."""
        container_id = f"pv-{len(self.container_ids) + 1}"  # the supervisor logs 12 characters of an id
        self.container_ids.add(container_id)
        result = self.ctr("run", "--rm", "--fifo-dir", self.fifo_dir, "--runc-root", self.runc_root,
                          "--cgroup", f"/{self.cgroup_parent}/{container_id}", *options, image, container_id, *command,
                          check=False)
        return container_id, result

    def plugin_status(self, plugin_id: str) -> str | None:
        """``ok``, ``error`` or ``skip`` for a plugin of ``ctr plugins ls``."""
        for line in self.ctr("plugins", "ls").stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and f"{fields[0]}.{fields[1]}" == plugin_id:
                return fields[-1]
        return None

    def config_dump(self) -> dict:
        """``containerd config dump`` of this configuration (no daemon
        needed): what containerd makes of it, its imports merged in."""
        dump = subprocess.run([CONTAINERD, "--config", self.config_path, "config", "dump"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert dump.returncode == 0, dump.stderr
        return tomllib.loads(dump.stdout)

    def close(self) -> list[str]:
        """Stops everything; returns what had to be cleaned up by force."""
        problems = []
        if self.popen is not None and self.popen.poll() is None:
            try:
                listed = self.ctr("containers", "ls", "-q", timeout=120, check=False).stdout.split()
                self.container_ids.update(listed)
                for container_id in listed:
                    self.ctr("tasks", "rm", "--force", container_id, timeout=300, check=False)
                    self.ctr("containers", "rm", container_id, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                problems.append("containerd did not answer `ctr tasks rm`/`ctr containers rm` at the end")
        problems += stop_daemon(self.popen, "containerd")
        # A shim that had to be killed leaves its socket behind.
        problems += kill_naming(str(self.dir), "this containerd's directory")
        for container_id in self.container_ids:
            shim_socket(self.socket, container_id).unlink(missing_ok=True)
        return problems + sweep(self.dir, self.cgroup_parent, self.host_paths, "this containerd")
