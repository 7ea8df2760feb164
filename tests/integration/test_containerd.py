"""``procview-runc`` under Debian's containerd 1.6 (its ``ctr``,
``containerd-shim-runc-v2`` and runc), with a private containerd for this
module (containerd_helpers.py): its own configuration, socket, root and
state, no CRI plugin, containers in a parent cgroup of its own.

The containerd gets ``PROCVIEW_VIEW`` / ``PROCVIEW_SECCOMP_SOCKET`` (a
``procview serve`` of this module, with its own supervisor socket) in its
environment, which reaches the shim through containerd-shim-runc-v2. The
image is the built-in busybox, from ``procview image export`` and ``ctr
images import`` (no registry). Containers get no network flag: a new
network namespace with only ``lo``.

Inside ``ctr run --runc-binary <venv>/bin/procview-runc``: busybox
``free`` (sysinfo, the supervisor) and ``/proc/meminfo`` give the memory
limit, ``nproc`` (sched_getaffinity) and ``/sys/devices/system/cpu/online``
the CPUs, with no seccomp profile (ctr's default) and with containerd's
default profile (``--seccomp``). Without ``--runc-binary`` a container is
unchanged; exit codes pass through.

The path a Kubernetes ``RuntimeClass`` takes is tested in two halves:
``deploy/kubernetes/containerd-procview.toml`` is what a real containerd's
CRI plugin loads (in config.toml, and as the ``imports`` drop-in its
header describes), and the runc v2 shim with the ``BinaryName`` option it
sets starts containers under procview-runc (``ctr run --runtime
io.containerd.runc.v2 --runc-binary``, see
``test_the_runtime_the_kubernetes_snippet_registers``). No CRI client runs
here (crictl is not in Debian 12), so no pod is started. Timeouts only
bound hangs.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from .containerd_helpers import CONTAINERD, CRI_PLUGIN, PrivateContainerd, cri_section, have_containerd
from .engine_helpers import (PROBE, REPO, RUN_TIMEOUT, SHIM, assert_host_values, module_dir, running,  # noqa: F401
                             values, view)
from .serve_helpers import no_leftovers  # noqa: F401 (fixture)

_why_not = have_containerd()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

MiB = 1 << 20
LIMITS = ("--memory-limit", str(512 * MiB), "--cpus", "1")
VIEW_OF_LIMITS = {"free": "512", "nproc": "1", "meminfo": str(512 * 1024), "online": "0"}
SNIPPET = REPO / "deploy" / "kubernetes" / "containerd-procview.toml"
NODE_SHIM = "/opt/procview/bin/procview-runc"  # where the DaemonSet installs it on a node
# A node's runc runtime, as `containerd config default` writes it.
RUNC_RUNTIME = (f'[plugins."{CRI_PLUGIN}".containerd.runtimes.runc]\n'
                '  runtime_type = "io.containerd.runc.v2"\n')


@pytest.fixture(scope="module")
def containerd(module_dir, view, tmp_path_factory):
    daemon = PrivateContainerd(module_dir / "containerd",
                               {"PROCVIEW_VIEW": view.mount, "PROCVIEW_SECCOMP_SOCKET": view.seccomp_socket})
    with running(daemon):
        daemon.load_busybox(str(tmp_path_factory.mktemp("procview-root")))
        yield daemon


def probe(containerd, *options: str) -> tuple[str, dict[str, str]]:
    """Runs PROBE in a new container; its id and the values it printed."""
    container_id, result = containerd.run(*options, command=("sh", "-c", PROBE))
    assert result.returncode == 0, result.stderr + containerd.describe()
    return container_id, values(result.stdout)


def supervised(view, container_id: str) -> bool:
    """The view's supervisor took this container's seccomp listener (the
    shim found it through containerd's environment)."""
    return f"supervising container {container_id} (" in view.log()


def test_runc_binary_gives_a_container_its_limits(containerd, view):
    container_id, got = probe(containerd, "--runc-binary", SHIM, *LIMITS)
    assert got == VIEW_OF_LIMITS
    # The shim found view and supervisor through containerd's environment.
    assert supervised(view, container_id), view.log()


def test_containerd_s_default_seccomp_profile_keeps_the_supervisor(containerd, view):
    # --seccomp: containerd's default profile, into which the shim merges its notify entry.
    container_id, got = probe(containerd, "--seccomp", "--runc-binary", SHIM, *LIMITS)
    assert got == VIEW_OF_LIMITS
    assert supervised(view, container_id), view.log()


def test_a_cpu_quota_and_a_smaller_limit(containerd, view):
    container_id, got = probe(containerd, "--runc-binary", SHIM, "--memory-limit", str(256 * MiB),
                              "--cpu-quota", "50000", "--cpu-period", "100000")
    assert got == {"free": "256", "nproc": "1", "meminfo": str(256 * 1024), "online": "0"}
    assert supervised(view, container_id), view.log()


def test_without_runc_binary_the_container_is_unchanged(containerd, view):
    container_id, got = probe(containerd, *LIMITS)
    assert_host_values(got)
    assert not supervised(view, container_id), view.log()


@pytest.mark.parametrize("runtime", [("--runc-binary", SHIM), ()], ids=["procview-runc", "runc"])
def test_exit_codes_pass_through(containerd, view, runtime):
    assert containerd.run(*runtime, command=("sh", "-c", "exit 3"))[1].returncode == 3
    assert containerd.run(*runtime, command=("true",))[1].returncode == 0


# -- the runtime a Kubernetes RuntimeClass selects ----------------------------------------


def snippet_runtime() -> dict:
    """The ``procview`` runtime of the snippet, as TOML reads it."""
    config = tomllib.loads(SNIPPET.read_text())
    return config["plugins"][CRI_PLUGIN]["containerd"]["runtimes"]["procview"]


def default_runc_options() -> dict:
    """The runc shim's options as ``containerd config default`` lists them
    (every field of its options type)."""
    default = subprocess.run([CONTAINERD, "config", "default"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert default.returncode == 0, default.stderr
    return tomllib.loads(default.stdout)["plugins"][CRI_PLUGIN]["containerd"]["runtimes"]["runc"]["options"]


def test_the_runtime_the_kubernetes_snippet_registers(containerd, view):
    """The CRI plugin turns a runtime's TOML into the container's runtime
    (name = ``runtime_type``, options = the ``options`` table decoded into
    the runc shim's options type) and containerd hands both to the shim
    it starts; ``ctr run --runtime io.containerd.runc.v2 --runc-binary
    PATH`` puts exactly that on the container: the runc shim's options
    with ``BinaryName`` = PATH. The shim then runs PATH instead of runc.
    (ctr's ``--runtime-config-path`` is no way to read the snippet: ctr
    1.6 sends it only to runtimes other than io.containerd.runc.v2, as a
    ``ConfigPath`` option the runc shim does not read.) PATH is the venv's
    procview-runc here, the node's /opt/procview/bin/procview-runc in the
    snippet."""
    runtime = snippet_runtime()
    assert runtime == {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": NODE_SHIM}}
    # An option name the runc shim does not have would be dropped silently by the CRI plugin.
    assert set(runtime["options"]) <= set(default_runc_options())
    container_id, got = probe(containerd, "--runtime", runtime["runtime_type"], "--runc-binary", SHIM, *LIMITS)
    assert got == VIEW_OF_LIMITS
    assert supervised(view, container_id), view.log()


def cri_runtimes(log: str) -> dict[str, tuple[str, str]]:
    """name -> (runtime type, options) of the runtimes the CRI plugin
    started with, from its log line ``Start cri plugin with config
    {...}`` (Go's ``%+v`` of its configuration)."""
    started = [line for line in log.splitlines() if "Start cri plugin with config" in line]
    assert started, log
    runtimes = started[0].split("Runtimes:map[", 1)[1]
    return {name: (kind, options)
            for name, kind, options in re.findall(r"(\w+):\{Type:(\S*) .*?Options:map\[([^\]]*)\]", runtimes)}


@pytest.mark.parametrize("placement", ["config.toml", "drop-in"])
def test_containerd_s_cri_plugin_loads_the_snippet(module_dir, placement):
    """As the snippet's header says: appended to config.toml next to the
    node's runc runtime, or as the one drop-in that holds the node's whole
    CRI configuration (``imports = ["DIR/conf.d/*.toml"]``)."""
    directory = module_dir / f"cri-{placement}"
    node_cri = cri_section(directory) + RUNC_RUNTIME + "\n" + SNIPPET.read_text()
    if placement == "config.toml":
        daemon = PrivateContainerd(directory, cri=True, tables=node_cri)
    else:
        daemon = PrivateContainerd(directory, cri=True, drop_ins={"procview.toml": node_cri})
    with running(daemon):
        assert daemon.plugin_status(CRI_PLUGIN) == "ok", daemon.describe()
        runtimes = cri_runtimes(daemon.log())
        assert runtimes["procview"] == ("io.containerd.runc.v2", f"BinaryName:{NODE_SHIM}"), daemon.describe()
        assert runtimes["runc"] == ("io.containerd.runc.v2", ""), daemon.describe()


def test_without_a_runc_runtime_the_cri_plugin_does_not_load(module_dir):
    """Why the header says to keep the node's runc runtime: a ``runtimes``
    table replaces containerd's built-in list, and the default runtime,
    runc, must be in it."""
    directory = module_dir / "cri-no-runc"
    daemon = PrivateContainerd(directory, cri=True, tables=cri_section(directory) + "\n" + SNIPPET.read_text())
    with running(daemon):
        assert daemon.plugin_status(CRI_PLUGIN) == "error", daemon.describe()
        refusal = [line for line in daemon.log().splitlines() if "no corresponding runtime configured" in line]
        assert refusal and "default_runtime_name" in refusal[0], daemon.describe()


def test_a_drop_in_replaces_config_toml_s_whole_cri_section(module_dir):
    """Why the header says a drop-in must hold all of the node's CRI
    settings: with the snippet alone as a drop-in, config.toml's CRI
    settings (here its CNI directory and its runc runtime) are gone."""
    directory = module_dir / "dump"
    daemon = PrivateContainerd(directory, cri=True, tables=cri_section(directory) + RUNC_RUNTIME,
                               drop_ins={"procview.toml": SNIPPET.read_text()})
    try:
        alone = daemon.config_dump()["plugins"][CRI_PLUGIN]
    finally:
        problems = daemon.close()
    assert not problems, problems
    assert list(alone["containerd"]["runtimes"]) == ["procview"], alone["containerd"]["runtimes"]
    assert alone["containerd"]["runtimes"]["procview"]["options"] == {"BinaryName": NODE_SHIM}
    assert alone["cni"]["conf_dir"] == "/etc/cni/net.d"  # containerd's default, not config.toml's
