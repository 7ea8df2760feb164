"""``procview-runc`` with the real runc: a busybox bundle as Docker would
hand it over (a 512 MiB limit, a 1-CPU quota, Docker's default seccomp
profile in OCI form), started through the shim from the venv's bin.

Inside, the view's files and the supervisor's answers: busybox ``free``
(sysinfo) says 512 MiB, ``nproc`` (sched_getaffinity) 1, ``/proc/meminfo``
524288 kB, ``/sys/devices/system/cpu/online`` 0. Then the fallbacks: no
view and no supervisor (the container starts, with warnings, on the host's
values, config.json untouched), a config.json that is not JSON (runc's own
error and status), a profile that denies sysinfo (still denied), and the
pass-through subcommands. Each test uses its own runc ``--root`` under its
tmp dir and deletes its containers and their cgroups, even on failure.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .engine_helpers import host_free_mib, values
from .serve_helpers import host_meminfo_kib, no_leftovers, serve_daemons  # noqa: F401 (fixtures)
from .test_run import state_root  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
SHIM = str(REPO / ".venv" / "bin" / "procview-runc")
FIXTURE = REPO / "tests" / "fixtures" / "oci" / "docker-20.10-config.json"
MiB = 1 << 20
LIMIT_KB = 512 * 1024
TIMEOUT = 600  # bounds a hang only (the cgroup2 VM emulates its CPU)

pytestmark = pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)")

PROBE = ("busybox free -m | busybox awk '/^Mem:/{print \"free=\" $2}'; "
         "echo nproc=$(busybox nproc); "
         "echo meminfo=$(busybox head -1 /proc/meminfo | busybox awk '{print $2}'); "
         "echo online=$(busybox cat /sys/devices/system/cpu/online)")


class Runc:
    """Bundles and containers of one test, under its tmp dir; ``close``
    deletes every container (and so its cgroup) and checks none is left."""

    def __init__(self, tmp_path: Path, image_layer: str):
        self.tmp_path = tmp_path
        self.root = str(tmp_path / "runc-root")
        self.image_layer = image_layer
        self.ids: list[str] = []
        self.cgroups: list[str] = []
        self._count = 0

    def bundle(self, args: list[str], seccomp="docker") -> Path:
        self._count += 1
        bundle = self.tmp_path / f"bundle{self._count}"
        rootfs = bundle / "rootfs"
        shutil.copytree(self.image_layer, rootfs, symlinks=True)
        for directory in ("proc", "sys", "dev", "tmp"):
            (rootfs / directory).mkdir(exist_ok=True)
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = args
        config["root"]["readonly"] = False
        cgroup = f"procview-pytest-shim-{os.getpid()}-{self._count}"
        self.cgroups.append(cgroup)
        config["linux"]["cgroupsPath"] = f"/{cgroup}"
        config["linux"]["resources"] = {"memory": {"limit": 512 * MiB},
                                        "cpu": {"quota": 100000, "period": 100000}}
        if seccomp == "docker":
            config["linux"]["seccomp"] = json.loads(FIXTURE.read_text())["linux"]["seccomp"]
            if os.uname().machine != "x86_64":
                config["linux"]["seccomp"]["architectures"] = []
        elif seccomp is None:
            config["linux"].pop("seccomp", None)
        else:
            config["linux"]["seccomp"] = seccomp
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        return bundle

    def shim(self, *args: str, env: dict | None = None, global_args: tuple = ()) -> subprocess.CompletedProcess:
        """The shim's run; its output through files, not pipes: a created
        container's ``runc init`` inherits them and holds them open."""
        self._count += 1
        out, err = self.tmp_path / f"shim{self._count}.out", self.tmp_path / f"shim{self._count}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            result = subprocess.run([SHIM, "--root", self.root, *global_args, *args], stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr, timeout=TIMEOUT, env={**os.environ, **(env or {})})
        return subprocess.CompletedProcess(result.args, result.returncode, out.read_text(), err.read_text())

    def run(self, bundle: Path, env: dict | None = None, global_args: tuple = ()) -> subprocess.CompletedProcess:
        self._count += 1
        name = f"procview-pytest-shim-{os.getpid()}-{self._count}"
        self.ids.append(name)
        try:
            return self.shim("run", "--bundle", str(bundle), name, env=env, global_args=global_args)
        finally:
            self.delete(name)

    def delete(self, name: str) -> None:
        subprocess.run(["runc", "--root", self.root, "delete", "--force", name], capture_output=True, timeout=TIMEOUT)

    def close(self) -> None:
        for name in self.ids:
            self.delete(name)
        left = subprocess.run(["runc", "--root", self.root, "list", "-q"], capture_output=True, text=True).stdout.split()
        stray = []
        for cgroup in self.cgroups:
            for path in glob.glob(f"/sys/fs/cgroup/{cgroup}") + glob.glob(f"/sys/fs/cgroup/*/{cgroup}"):
                stray.append(path)
                for _ in range(50):
                    try:
                        os.rmdir(path)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
        assert not left, f"runc containers left behind: {left}"
        assert not stray, f"container cgroups left behind: {stray}"


@pytest.fixture
def runc(tmp_path, state_root):
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    from procview.runtime.images import ImageStore

    image = ImageStore(state_root).ensure_busybox()
    box = Runc(tmp_path, image.layers[-1])
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def served(serve_daemons):
    daemon = serve_daemons.start()
    env = {"PROCVIEW_VIEW": daemon.mount, "PROCVIEW_SECCOMP_SOCKET": daemon.seccomp_socket}
    return daemon, env


def test_a_runc_container_sees_its_own_limits(runc, served):
    daemon, env = served
    bundle = runc.bundle(["sh", "-c", PROBE])
    result = runc.run(bundle, env=env)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == {"free": "512", "nproc": "1", "meminfo": str(LIMIT_KB), "online": "0"}, result.stdout + result.stderr
    assert result.stderr == ""  # nothing to warn about
    log = daemon.log()
    assert "supervising container" in log, log
    assert "probe" not in log and "dropped" not in log, log  # the shim's liveness check is silent
    # The edit: the view's mounts and the notify entry, nothing else.
    config = json.loads((bundle / "config.json").read_text())
    mounts = [m["destination"] for m in config["mounts"] if m["source"].startswith(daemon.mount)]
    assert mounts == [f"/proc/{n}" for n in ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")] + [
        "/sys/devices/system/cpu", "/sys/devices/system/node"]
    seccomp = config["linux"]["seccomp"]
    assert seccomp["listenerPath"] == daemon.seccomp_socket
    assert seccomp["syscalls"][-1] == {"names": ["sysinfo", "sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]  # no temporary file left


def test_an_unconfined_container_gets_the_view_too(runc, served):
    daemon, env = served
    bundle = runc.bundle(["sh", "-c", PROBE], seccomp=None)
    result = runc.run(bundle, env=env)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == {"free": "512", "nproc": "1", "meminfo": str(LIMIT_KB), "online": "0"}, result.stdout + result.stderr


def test_without_view_and_supervisor_the_container_starts_on_host_values(runc, tmp_path):
    bundle = runc.bundle(["sh", "-c", PROBE])
    before = (bundle / "config.json").read_bytes()
    (tmp_path / "not-a-view").mkdir()
    env = {"PROCVIEW_VIEW": str(tmp_path / "not-a-view"), "PROCVIEW_SECCOMP_SOCKET": str(tmp_path / "none.sock")}
    log = tmp_path / "runc-log.json"
    result = runc.run(bundle, env=env, global_args=("--log", str(log), "--log-format", "json"))
    assert result.returncode == 0, result.stderr
    got = values(result.stdout)
    assert abs(int(got["free"]) - host_free_mib()) <= 1, result.stdout  # busybox rounds
    assert got["meminfo"] == str(host_meminfo_kib()), result.stdout
    assert (bundle / "config.json").read_bytes() == before  # runc got it unchanged
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    ours = [line for line in lines if line["msg"].startswith("procview-runc: ")]
    assert [line["level"] for line in ours] == ["warning", "warning"], lines
    assert "no live procview view" in ours[0]["msg"] and "no procview supervisor" in ours[1]["msg"], ours
    assert result.stderr == ""  # with --log, warnings go to the log only

    # Without --log: the same warnings as text on stderr.
    result = runc.run(bundle, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("procview-runc: ") == 2, result.stderr


def test_a_config_that_is_not_json_gets_runcs_own_error(runc, served, tmp_path):
    daemon, env = served
    bundle = runc.bundle(["true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    before = (bundle / "config.json").read_bytes()
    direct = subprocess.run(["runc", "--root", runc.root, "run", "--bundle", str(bundle), "procview-pytest-shim-direct"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    runc.delete("procview-pytest-shim-direct")
    result = runc.run(bundle, env=env)
    assert direct.returncode != 0
    assert result.returncode == direct.returncode, result.stderr
    runc_error = [line for line in direct.stderr.splitlines() if line][-1].split("msg=")[-1]
    assert runc_error in result.stderr, (direct.stderr, result.stderr)
    assert "procview-runc: " in result.stderr and "not JSON" in result.stderr
    assert (bundle / "config.json").read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]  # no temporary file


def test_a_profile_that_denies_sysinfo_keeps_it_denied(runc, served):
    daemon, env = served
    seccomp = json.loads(FIXTURE.read_text())["linux"]["seccomp"]
    if os.uname().machine != "x86_64":
        seccomp["architectures"] = []
    seccomp["syscalls"][0]["names"].remove("sysinfo")
    seccomp["syscalls"].append({"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})  # ENOSYS
    # The host's Python, bound in read-only, asks sysinfo and reports errno.
    code = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); buf = ctypes.create_string_buffer(512); "
            "print('sysinfo=%d,%d' % (libc.sysinfo(buf), ctypes.get_errno())); "
            "print('affinity=%d' % len(os.sched_getaffinity(0)))")
    bundle = runc.bundle(["/usr/bin/python3", "-I", "-S", "-c", code], seccomp=seccomp)
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"] += [{"destination": d, "type": "bind", "source": s, "options": ["rbind", "ro"]}
                         for d, s in (("/usr", "/usr"), ("/lib", "/usr/lib"), ("/lib64", "/usr/lib64")) if os.path.isdir(s)]
    (bundle / "config.json").write_text(json.dumps(config))
    result = runc.run(bundle, env=env)
    assert result.returncode == 0, result.stderr
    assert values(result.stdout) == {"sysinfo": "-1,38", "affinity": "1"}, result.stdout + result.stderr
    assert "does not allow sysinfo" in result.stderr, result.stderr
    edited = json.loads((bundle / "config.json").read_text())["linux"]["seccomp"]
    assert edited["syscalls"][-1] == {"names": ["sched_getaffinity"], "action": "SCMP_ACT_NOTIFY"}
    assert {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in edited["syscalls"]


def test_other_subcommands_pass_straight_through(runc, served):
    daemon, env = served
    version = runc.shim("--version", env=env)
    assert version.returncode == 0 and version.stdout == subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    # create, state, start, delete: runc's own output and statuses.
    bundle = runc.bundle(["true"])
    name = f"procview-pytest-shim-{os.getpid()}-cs"
    runc.ids.append(name)
    created = runc.shim("create", "--bundle", str(bundle), name, env=env)
    assert created.returncode == 0, created.stderr
    state = runc.shim("state", name, env=env)
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["status"] == "created"
    assert json.loads(state.stdout)["bundle"] == str(bundle)
    deleted = runc.shim("delete", "--force", name, env=env)
    assert deleted.returncode == 0, deleted.stderr
    missing = runc.shim("state", name, env=env)
    direct = subprocess.run(["runc", "--root", runc.root, "state", name], capture_output=True, text=True)
    assert (missing.returncode, missing.stdout, missing.stderr.split("msg=")[-1]) == (
        direct.returncode, direct.stdout, direct.stderr.split("msg=")[-1])
    assert missing.returncode != 0


def test_an_unknown_flag_gets_runcs_own_error_and_no_edit(runc, served):
    daemon, env = served
    bundle = runc.bundle(["true"])
    before = (bundle / "config.json").read_bytes()
    name = f"procview-pytest-shim-{os.getpid()}-flag"
    runc.ids.append(name)
    result = runc.shim("run", "--no-such-flag", "--bundle", str(bundle), name, env=env)
    direct = subprocess.run(["runc", "--root", runc.root, "run", "--no-such-flag", "--bundle", str(bundle), name],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == direct.returncode != 0, result.stderr
    assert "flag provided but not defined" in result.stderr and "unknown flag --no-such-flag" in result.stderr, result.stderr
    assert (bundle / "config.json").read_bytes() == before
