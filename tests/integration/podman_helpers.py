"""A private Podman for the integration tests (Debian's podman 4.3, its
conmon and runc).

Podman has no daemon: ``PrivatePodman(DIR, view_env, runtimes)`` is a set
of roots and configuration files under DIR, and ``.podman(*args)`` runs
one podman command that keeps its state there and changes nothing of the
host (but for runc's state root, below):

- every command gets its own ``--root`` (images, containers, its BoltDB
  state), ``--runroot``, ``--tmpdir`` (locks, exit files, the events log),
  ``--storage-driver overlay``, ``--cgroup-manager cgroupfs`` (no systemd),
  ``--events-backend file`` (no journald) and ``--network-config-dir``
  (where the CNI backend would keep its lock file; containers run with
  ``--network none``, so no network is ever set up);
- the environment names private ``CONTAINERS_CONF``,
  ``CONTAINERS_STORAGE_CONF`` and ``CONTAINERS_REGISTRIES_CONF`` (no search
  registries; images are local and ``podman run --pull never`` never
  contacts a registry) and a private ``TMPDIR``. ``CONTAINERS_CONF`` is
  the only containers.conf podman then reads; it sets ``lock_type =
  "file"`` (podman's default, shm, would create ``/dev/shm/libpod_lock``),
  the image copy's temporary directory, and the runtimes (below);
- containers get ``--cgroup-parent`` a cgroup of its own (conmon's cgroup,
  ``conmon``, goes below it too), removed at the end.

How the shim gets ``PROCVIEW_VIEW`` and ``PROCVIEW_SECCOMP_SOCKET``:
podman starts conmon with an environment of its own making, not podman's:
containers.conf's ``conmon_env_vars`` (default: just ``PATH``) and a few
variables podman adds (its ``PATH`` and ``HOME``, ``CONTAINERS_CONF``,
``XDG_RUNTIME_DIR``, ``_OCI_*`` pipes). conmon runs the runtime's
``create`` with that environment, so the two variables go into
``conmon_env_vars`` here (``test_podman.py`` checks that podman's own
environment does not reach the shim). podman runs the runtime's other
commands itself with next to no environment: ``start`` with
``XDG_RUNTIME_DIR`` and ``PATH``, ``kill`` and ``delete`` with
``XDG_RUNTIME_DIR`` alone (the shim then finds runc at /usr/sbin/runc).

Runtimes: the default ``runc``, and ``[engine.runtimes]`` entries
(``procview`` = the shim, plus the ``runtimes`` given), all listed in
``runtime_supports_json`` so that podman passes ``--log-format=json --log
FILE`` as it does for runc (the shim's warnings go there). ``--runtime``
also takes the shim's absolute path.

Two of podman 4.3's defaults cannot work on this machine, whose root lacks
CAP_SYS_RESOURCE: containers get ``RLIMIT_NOFILE`` 1048576, which runc sets
from outside with prlimit and may not raise above podman's own hard limit
(``error setting rlimit type 7: operation not permitted``), and podman sets
its own ``RLIMIT_NPROC`` to ``kernel.pid_max`` at start. containers.conf's
``default_ulimits`` gives containers this process's own limits instead.

Host paths podman writes whatever its roots are:

- ``/run/runc``: podman passes runc no ``--root`` (and ``--runtime-flag
  root=...`` is not passed on to the ``podman container cleanup`` that
  conmon runs when a container exits), so runc keeps its state in its
  default root; each container's entry goes when podman deletes it, and
  the directory is removed at the end if it did not exist before;
- ``/var/lib/containers/cache/blob-info-cache-v1.boltdb``: podman 4.3's
  image copy (``podman load``) records blobs there whatever ``--root`` is
  (podman 4.4 moved it below the root). ``load_busybox`` therefore runs
  ``podman load`` in a mount namespace of its own whose ``/var/lib`` is an
  empty tmpfs, gone when the load ends.

``start`` checks that podman answers (``podman info``) with all this.
``close`` removes every container (``podman rm -af``), then everything
else of the roots (``podman system reset -f``, which only knows the
private roots), deletes runc's state of any container of DIR still in
``/run/runc`` (which kills it), then sweeps as for the engine daemons
(``engine_helpers.sweep``: what still names DIR, conmon or a container
cleanup, killed; mounts below DIR unmounted lazily; the cgroup emptied and
removed; DIR removed). Timeouts only bound hangs.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import uuid
from pathlib import Path

from .engine_helpers import RUN_TIMEOUT, SHIM, HostPaths, export_busybox, missing_tool, sweep

PODMAN = shutil.which("podman") or "/usr/bin/podman"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
# runc's state root when it is given no --root (podman gives it none).
RUNC_ROOT = "/run/runc"
HOST_PATHS = {RUNC_ROOT: set()}
# What podman's load may write below /var/lib whatever its roots are: the
# load gets an empty /var/lib of its own.
LOAD_NAMESPACE = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                  'mount -t tmpfs -o mode=0755 procview-pytest /var/lib && exec "$@"', "sh"]
# conmon_env_vars' default, kept in the list that replaces it.
CONMON_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def have_podman() -> str | None:
    """None if the tests can run, else why not."""
    if os.geteuid() != 0:
        return "needs root (podman with its own roots)"
    return missing_tool((PODMAN, "conmon", RUNC), "podman") or missing_tool(("unshare",), "util-linux")


def container_ulimits() -> list[str]:
    """``default_ulimits`` for containers.conf: this process's nofile, and
    its nproc capped at ``kernel.pid_max`` (podman's own, see above)."""
    nofile_soft, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc_soft, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())

    def capped(limit: int) -> int:
        return pid_max if limit == resource.RLIM_INFINITY else min(limit, pid_max)

    return [f"nofile={nofile_soft}:{nofile_hard}", f"nproc={capped(nproc_soft)}:{capped(nproc_hard)}"]


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def containers_conf(tmp_dir: str, view_env: dict[str, str], runtimes: dict[str, str]) -> str:
    """The private containers.conf (see the module's docstring)."""
    conmon_env = [CONMON_PATH] + [f"{name}={value}" for name, value in view_env.items()]
    lines = [
        "[containers]",
        f"default_ulimits = {toml_list(container_ulimits())}",
        "",
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        'lock_type = "file"',
        f"image_copy_tmp_dir = {json.dumps(tmp_dir)}",
        f"conmon_env_vars = {toml_list(conmon_env)}",
        f"runtime_supports_json = {toml_list(['runc', 'procview-runc', *runtimes])}",
        "",
        "[engine.runtimes]",
    ]
    lines += [f"{json.dumps(name)} = {toml_list([path])}" for name, path in runtimes.items()]
    return "\n".join(lines) + "\n"


class PrivatePodman:
    def __init__(self, directory: Path, view_env: dict[str, str], runtimes: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.root = str(self.dir / "root")
        self.runroot = str(self.dir / "runroot")
        self.tmp = str(self.dir / "tmp")
        self.network_dir = str(self.dir / "networks")
        self.cgroup_parent = f"procview-pytest-podman-{uuid.uuid4().hex[:8]}"
        self.host_paths = HostPaths(HOST_PATHS)
        etc = self.dir / "etc"
        for path in (etc, self.tmp, self.network_dir):
            os.makedirs(path, exist_ok=True)
        (etc / "containers.conf").write_text(containers_conf(self.tmp, view_env, {"procview": SHIM, **(runtimes or {})}))
        (etc / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = {json.dumps(self.root)}\nrunroot = {json.dumps(self.runroot)}\n')
        (etc / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith(("CONTAINER_", "CONTAINERS_", "PROCVIEW_"))}
        self.env.update(CONTAINERS_CONF=str(etc / "containers.conf"), CONTAINERS_STORAGE_CONF=str(etc / "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=str(etc / "registries.conf"), TMPDIR=self.tmp)
        self.global_args = [
            "--root", self.root, "--runroot", self.runroot, "--tmpdir", self.tmp, "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--network-config-dir", self.network_dir,
        ]

    def start(self) -> None:
        self.podman("info", "--format", "{{.Host.OCIRuntime.Name}}")

    def argv(self, *args: str) -> list[str]:
        return [PODMAN, *self.global_args, *args]

    def podman(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True, env: dict[str, str] | None = None,
               prefix: list[str] = ()) -> subprocess.CompletedProcess:
        """One podman command; ``env`` is added to the private environment."""
        result = subprocess.run([*prefix, *self.argv(*args)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=timeout, env={**self.env, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
        return result

    def run(self, *args: str, env: dict[str, str] | None = None, remove: bool = True) -> subprocess.CompletedProcess:
        """``podman run`` (``--rm`` unless not ``remove``) with no network,
        no pull, in the cgroup of this podman; ``args``: run's options, the
        image and the command."""
        return self.podman("run", *(["--rm"] if remove else []), "--network", "none", "--pull", "never",
                           "--cgroup-parent", f"/{self.cgroup_parent}", *args, check=False, env=env)

    def load_busybox(self, state_root: str) -> None:
        """The built-in busybox image of ``procview image export``, loaded
        (as ``localhost/busybox``) with /var/lib hidden (see above)."""
        archive = str(self.dir / "busybox.tar")
        export_busybox(archive, state_root)
        self.podman("load", "-i", archive, prefix=LOAD_NAMESPACE)
        os.unlink(archive)

    def close(self) -> list[str]:
        """Removes everything; returns what had to be cleaned up by force."""
        problems = []
        for args in (("rm", "-af", "-t", "0"), ("system", "reset", "-f")):
            try:
                result = self.podman(*args, timeout=300, check=False)
                if result.returncode != 0:
                    problems.append(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
            except subprocess.TimeoutExpired:
                problems.append(f"podman {' '.join(args)} hung")
        problems += self._delete_runc_states()
        return problems + sweep(self.dir, self.cgroup_parent, self.host_paths, "podman")

    def _delete_runc_states(self) -> list[str]:
        """``runc delete -f`` (kills the container) for what runc still
        knows of this podman's containers (their bundles are below DIR)."""
        listing = subprocess.run([RUNC, "--root", RUNC_ROOT, "list", "-f", "json"], capture_output=True, text=True,
                                 timeout=120)
        if listing.returncode != 0:
            return [f"runc list: exit {listing.returncode}\n{listing.stderr}"]
        ours = [c["id"] for c in json.loads(listing.stdout or "null") or []
                if c.get("bundle", "").startswith(str(self.dir) + "/")]
        for container in ours:
            subprocess.run([RUNC, "--root", RUNC_ROOT, "delete", "-f", container], capture_output=True, timeout=120)
        return [f"runc state of containers left in {RUNC_ROOT}: {ours}"] if ours else []
