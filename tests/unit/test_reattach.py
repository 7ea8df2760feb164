"""Re-attaching the view (procview/reattach.py): the pure decisions on
fixture mount tables, the scan over a fake /proc, and the syscall steps
with a recording fake of ``Linux``. The real thing, with real containers
and a killed daemon: tests/integration/test_reattach.py."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from procview import reattach
from procview.mounts import Mount, mount_at, parse_mountinfo, top_mount, unescape, view_source
from procview.reattach import LiveView, Reattacher, Repair
from procview.runtime import linux as kernel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mountinfo"

RUN_VIEW = LiveView("/var/lib/procview", "procview:/var/lib/procview", "0:71")  # the dead one is 0:68
MIXED_VIEW = LiveView("/srv/my view", "procview:/srv/my view", "0:44")  # the dead one is 0:27


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# -- mountinfo ------------------------------------------------------------------------------


def test_parse_mountinfo_names_every_field_and_undoes_escapes():
    mounts = parse_mountinfo(fixture("unshare-mixed.txt"))
    assert mounts[3] == Mount(51, 48, "0:27", "/", "/srv/my view", "rw,nosuid,nodev,relatime", "fuse.procview",
                              "procview:/srv/my view")
    # Optional fields ("shared:7") come before the separator and are not options.
    assert mounts[5].options == "ro,nosuid,nodev,relatime" and mounts[5].fstype == "fuse.procview"


@pytest.mark.parametrize("line", [
    "",
    "garbage",
    "51 48 0:27 / /mnt rw",  # no separator
    "x 48 0:27 / /mnt rw - tmpfs tmpfs rw",  # ids must be numbers
    "51 48 0:27 / /mnt rw - tmpfs",  # no source
])
def test_parse_mountinfo_skips_lines_it_cannot_read(line):
    assert parse_mountinfo(line + "\n51 48 0:27 / /ok rw - tmpfs tmpfs rw\n") == [
        Mount(51, 48, "0:27", "/", "/ok", "rw", "tmpfs", "tmpfs")]


def test_top_mount_follows_parents_not_the_order_of_lines():
    # 70 was slid beneath 60 (MOVE_MOUNT_BENEATH): listed after it, below it.
    text = ("49 48 0:23 / /proc rw - proc proc rw\n"
            "60 70 0:27 /proc/meminfo /proc/meminfo rw - fuse.procview procview:/v rw\n"
            "70 49 0:44 /proc/meminfo /proc/meminfo rw - fuse.procview procview:/v rw\n")
    assert top_mount(parse_mountinfo(text), "/proc/meminfo").mount_id == 60
    assert top_mount(parse_mountinfo(text), "/proc/cpuinfo") is None


def test_mount_at_reads_this_namespace():
    assert mount_at("/proc").fstype == "proc"


def test_the_source_names_the_mount_point():
    assert view_source("/var/lib/procview") == "procview:/var/lib/procview"


# -- which mounts are stale -----------------------------------------------------------------


def test_every_bind_of_a_procview_run_container_is_stale_after_a_restart():
    binds = reattach.stale_binds(parse_mountinfo(fixture("procview-run-after-restart.txt")), RUN_VIEW)
    assert [(b.root, b.mountpoint) for b in binds] == [(f"/proc/{n}", f"/proc/{n}") for n in (
        "meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats")] + [
        ("/sys/devices/system/cpu", "/sys/devices/system/cpu"), ("/sys/devices/system/node", "/sys/devices/system/node")]


def test_binds_of_the_live_connection_are_not_stale():
    assert reattach.stale_binds(parse_mountinfo(fixture("procview-run-after-restart.txt")), RUN_VIEW._replace(device="0:68")) == []


def test_binds_of_another_view_are_not_ours():
    other = LiveView("/srv/procview", "procview:/srv/procview", "0:71")
    assert reattach.stale_binds(parse_mountinfo(fixture("procview-run-after-restart.txt")), other) == []


def test_only_uncovered_leaves_of_this_view_on_another_connection_are_stale():
    binds = reattach.stale_binds(parse_mountinfo(fixture("unshare-mixed.txt")), MIXED_VIEW)
    # 51: the copy of the view's own mount; 62, 65: binds; 69: one with other options.
    # Not 60 (a tmpfs file covers it), 63 (cpufreq mounted below it), 66
    # (/srv/other's), 67 (the live connection), 68 (not a procview).
    assert [b.mount_id for b in binds] == [51, 62, 65, 69]


def _shard_binds(*indexes: int) -> list[Mount]:
    return [Mount(80 + i, 49, f"0:{40 + i}", "/proc/meminfo", f"/proc/meminfo{i}", "rw", "fuse.procview",
                  f"procview:/var/lib/procview.shards/{i}" if i else "procview:/var/lib/procview") for i in indexes]


def test_shard_0_of_k_adopts_the_binds_of_shards_k_and_above_only():
    binds = _shard_binds(0, 1, 2, 3, 11)
    shard_0_of_2 = RUN_VIEW._replace(shards=2)
    assert [b.mount_id for b in reattach.stale_binds(binds, shard_0_of_2)] == [80, 82, 83, 91]
    assert [b.mount_id for b in reattach.stale_binds(binds, RUN_VIEW._replace(shards=1))] == [80, 81, 82, 83, 91]
    assert [b.mount_id for b in reattach.stale_binds(binds, RUN_VIEW)] == [80], "a shard (no K) keeps to its own"
    other = [m._replace(source=m.source.replace("/var/lib/procview", "/var/lib/procview2")) for m in binds]
    assert reattach.stale_binds(other, shard_0_of_2) == [], "another view's shards are not ours"
    odd = [m._replace(source="procview:/var/lib/procview.shards/x") for m in binds[1:2]]
    assert reattach.stale_binds(odd, RUN_VIEW._replace(shards=1)) == []


def test_the_quick_look_skips_namespaces_without_a_procview_mount():
    assert reattach.may_hold_stale_binds(fixture("unshare-mixed.txt"))
    assert reattach.may_hold_stale_binds(fixture("procview-run-after-restart.txt"))
    assert not reattach.may_hold_stale_binds(fixture("procview-run-after-restart.txt").replace("fuse.procview", "fuse.lxcfs"))


def test_still_stale_after_entering_only_if_nothing_changed():
    mounts = parse_mountinfo(fixture("unshare-mixed.txt"))
    (copy, cpuinfo, node, swaps) = reattach.stale_binds(mounts, MIXED_VIEW)
    assert all(reattach.still_stale(mounts, bind) for bind in (copy, cpuinfo, node, swaps))
    covered = [m for m in mounts if m.mountpoint != "/proc/cpuinfo"] + [Mount(90, cpuinfo.mount_id, "0:35", "/x", "/proc/cpuinfo", "rw", "tmpfs", "t")]
    assert not reattach.still_stale(covered, cpuinfo)
    below = mounts + [Mount(91, node.mount_id, "0:36", "/", "/sys/devices/system/node/x", "rw", "tmpfs", "t")]
    assert not reattach.still_stale(below, node)
    gone = [m for m in mounts if m.mount_id != swaps.mount_id]
    assert not reattach.still_stale(gone, swaps)
    reused = [m._replace(device="0:99") if m.mount_id == swaps.mount_id else m for m in mounts]  # id reused by another mount
    assert not reattach.still_stale(reused, swaps)


# -- with what -------------------------------------------------------------------------------


@pytest.mark.parametrize("root, source", [
    ("/proc/meminfo", "/var/lib/procview/proc/meminfo"),
    ("/sys/devices/system/cpu", "/var/lib/procview/sys/devices/system/cpu"),
    ("/", "/var/lib/procview"),
])
def test_the_clone_is_the_same_path_of_the_live_mount(root, source):
    assert reattach.clone_source("/var/lib/procview", root) == source


@pytest.mark.parametrize("options, attr_set, attr_clr", [
    ("rw,nosuid,nodev,relatime", kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV,
     kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOEXEC | kernel.MOUNT_ATTR_NODIRATIME | kernel.MOUNT_ATTR_NOSYMFOLLOW),
    ("ro,nosuid,nodev,noexec,relatime",
     kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV | kernel.MOUNT_ATTR_NOEXEC,
     kernel.MOUNT_ATTR_NODIRATIME | kernel.MOUNT_ATTR_NOSYMFOLLOW),
    ("rw,noatime", kernel.MOUNT_ATTR_NOATIME, kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV
     | kernel.MOUNT_ATTR_NOEXEC | kernel.MOUNT_ATTR_NODIRATIME | kernel.MOUNT_ATTR_NOSYMFOLLOW),
    ("ro", kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_STRICTATIME, kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV
     | kernel.MOUNT_ATTR_NOEXEC | kernel.MOUNT_ATTR_NODIRATIME | kernel.MOUNT_ATTR_NOSYMFOLLOW),
])
def test_the_clone_gets_the_old_binds_options(options, attr_set, attr_clr):
    # The access-time mode is a field, not a bit: always cleared, then set.
    assert reattach.mount_attributes(options) == (attr_set, attr_clr | kernel.MOUNT_ATTR__ATIME)


def test_without_mount_setattr_the_same_options_by_remount():
    assert reattach.remount_flags("ro,nosuid,nodev,relatime") == (
        kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_RELATIME)
    assert reattach.remount_flags("rw,noexec,noatime") == kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_NOEXEC | kernel.MS_NOATIME


def test_scans_thin_out_until_one_finds_something():
    waits, wait = [], None
    for found in (True, False, False, False, False, False, False, False, False, True, False):
        wait = reattach.next_scan_in(wait, found)
        waits.append(wait)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60, 1, 2]
    assert reattach.next_scan_in(None, False) == 1  # after the first scan


@pytest.mark.parametrize("link, inode", [("mnt:[4026531840]", 4026531840), ("net:[4026531840]", None), ("mnt:[x]", None)])
def test_namespace_inode(link, inode):
    assert reattach.namespace_inode(link) == inode


def test_a_repair_travels_to_the_child_as_json():
    import json

    repair = Repair(4026532174, 888, reattach.stale_binds(parse_mountinfo(fixture("unshare-mixed.txt")), MIXED_VIEW))
    assert Repair.from_json(json.loads(json.dumps(repair.to_json()))) == repair


# -- the scan, over a fake /proc -------------------------------------------------------------


def fake_proc(tmp_path: Path, processes: dict, self_inode: int = 1, host_inode: int = 1) -> str:
    """A /proc with ``pid -> (mnt inode, mountinfo text)``; ``self`` and
    ``1`` point at the given namespaces. readlink works on plain symlinks."""
    proc = tmp_path / "proc"
    for pid, (inode, text) in {**processes, "self": (self_inode, ""), 1: (host_inode, "")}.items():
        (proc / str(pid) / "ns").mkdir(parents=True)
        os.symlink(f"mnt:[{inode}]", proc / str(pid) / "ns" / "mnt")
        (proc / str(pid) / "mountinfo").write_text(text)
        (proc / str(pid) / "comm").write_text("sh\n")
        (proc / str(pid) / "cgroup").write_text("4:memory:/docker/abc\n0::/system.slice/docker-abc.scope\n")
    (proc / "not-a-pid").mkdir()
    return str(proc)


def test_the_scan_reads_each_namespace_once_through_its_lowest_pid(tmp_path):
    dead = fixture("procview-run-after-restart.txt")
    proc = fake_proc(tmp_path, {300: (7, dead), 42: (7, dead), 43: (8, ""), 50: (9, dead)}, self_inode=9)
    assert reattach.mount_namespaces(proc) == {7: 42, 8: 43, 9: 50, 1: 1}
    repairs = reattach.find_repairs(RUN_VIEW, reattach.never_entered(proc), proc)
    # 9 is the daemon's own namespace, 8 has no bind of the view, 1 is the host's.
    assert [(r.inode, r.pid, len(r.binds)) for r in repairs] == [(7, 42, 9)]


def test_the_host_and_the_daemons_own_namespace_are_never_entered(tmp_path):
    dead = fixture("procview-run-after-restart.txt")
    proc = fake_proc(tmp_path, {}, self_inode=5, host_inode=6)
    assert reattach.never_entered(proc) == {5, 6}
    (Path(proc) / "1" / "mountinfo").write_text(dead)
    assert Reattacher(RUN_VIEW, proc).plan() == []


def test_a_container_is_named_by_pid_command_and_cgroup(tmp_path):
    proc = fake_proc(tmp_path, {42: (7, "")})
    assert reattach.describe_process(42, proc) == "pid 42 (sh), cgroup /docker/abc"  # memory's (hybrid)
    (Path(proc) / "42" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    assert reattach.describe_process(42, proc) == "pid 42 (sh), cgroup /system.slice/docker-abc.scope"  # v2
    assert reattach.describe_process(43, proc) == "pid 43 (gone)"


def test_failures_are_logged_once_and_not_retried(tmp_path, caplog):
    proc = fake_proc(tmp_path, {42: (7, fixture("procview-run-after-restart.txt"))})
    reattacher = Reattacher(RUN_VIEW, proc)
    (repair,) = reattacher.plan()
    meminfo = repair.binds[0]
    outcome = {"inode": 7, "pid": 42, "gone": False, "entered": True, "answering": [[repair.binds[1].mount_id, "/proc/cpuinfo"]],
               "repaired": ["/proc/stat"], "failed": [[meminfo.mount_id, "/proc/meminfo", errno.EINVAL, "Invalid argument"]]}
    with caplog.at_level(logging.INFO, logger="procview.reattach"):
        reattacher._report(outcome)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "re-attached the view in mount namespace mnt:[7] (pid 42 (sh), cgroup /docker/abc): /proc/stat",
        "cannot re-attach the view in mount namespace mnt:[7] (pid 42 (sh), cgroup /docker/abc): /proc/meminfo: "
        "Invalid argument",
    ]
    # The failed bind and the one that answered are left out of the next plan.
    (again,) = reattacher.plan()
    assert [b.mountpoint for b in again.binds] == [b.mountpoint for b in repair.binds[2:]]


def test_a_kernel_without_the_new_mount_api_is_said_once_and_scans_stop(tmp_path, caplog):
    proc = fake_proc(tmp_path, {42: (7, fixture("procview-run-after-restart.txt"))})
    reattacher = Reattacher(RUN_VIEW, proc)
    (repair,) = reattacher.plan()
    failed = [[bind.mount_id, bind.mountpoint, errno.ENOSYS, "cloning the live view: Function not implemented"]
              for bind in repair.binds]
    with caplog.at_level(logging.INFO, logger="procview.reattach"):
        reattacher._report({"inode": 7, "pid": 42, "gone": False, "entered": False, "answering": [], "repaired": [],
                            "failed": failed})
    assert len(caplog.records) == 1 and "Linux 5.2 or later" in caplog.records[0].getMessage()
    assert reattacher.plan() == []


def run_child(tmp_path, script: str, timeout: float = 60.0) -> Reattacher:
    """One ``run_once`` with ``sh -c script`` standing in for the child."""
    import trio

    proc = fake_proc(tmp_path, {42: (7, fixture("procview-run-after-restart.txt")),
                                43: (8, fixture("procview-run-after-restart.txt"))})
    reattacher = Reattacher(RUN_VIEW, proc, child=("sh", "-c", script), timeout=timeout)
    assert trio.run(reattacher.run_once) is True
    return reattacher


def test_a_child_that_crashes_after_one_namespace_fails_the_others_once(tmp_path, caplog):
    done = '{"inode": 7, "pid": 42, "gone": false, "entered": true, "answering": [], "repaired": ["/proc/meminfo"], "failed": []}'
    with caplog.at_level(logging.INFO, logger="procview.reattach"):
        reattacher = run_child(tmp_path, f"cat >/dev/null; echo '{done}'; echo 'Traceback: boom' >&2; exit 3")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[0].startswith("re-attached the view in mount namespace mnt:[7]"), messages
    assert messages[1].startswith("cannot re-attach the view in mount namespace mnt:[8]") and messages[1].endswith(
        ": the repair failed (exit 3): Traceback: boom"), messages[1]
    assert [r.inode for r in reattacher.plan()] == [7], "namespace 8 is not tried again"


def test_a_child_that_hangs_is_stopped(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="procview.reattach"):
        reattacher = run_child(tmp_path, "exec sleep 600", timeout=0.5)
    assert [r.getMessage().rsplit(": ", 1)[1] for r in caplog.records] == ["the repair did not finish within 0.5 s"] * 2
    assert reattacher.plan() == []


# -- the syscalls, with a recording fake --------------------------------------------------------


class FakeLinux:
    """Records the calls; ``fail[name] = errno`` makes that call fail."""

    def __init__(self, **fail):
        self.calls = []
        self.fail = fail

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]))

    def open_tree(self, path, flags):
        self._call("open_tree", path, flags)
        return os.open("/dev/null", os.O_RDONLY)

    def mount_setattr(self, fd, attr_set, attr_clr):
        self._call("mount_setattr", attr_set, attr_clr)

    def move_mount(self, fd, target, flags=0):
        self._call("move_mount", target, flags)

    def umount2(self, target, flags=0):
        self._call("umount2", target, flags)

    def mount(self, source, target, fstype, flags=0, data=None):
        self._call("mount", target, flags)


BIND = Mount(101, 92, "0:68", "/proc/meminfo", "/proc/meminfo", "ro,nosuid,nodev,relatime", "fuse.procview",
             "procview:/var/lib/procview")
DETACH = kernel.MNT_DETACH | kernel.UMOUNT_NOFOLLOW


def test_the_clone_slides_beneath_the_dead_bind_then_the_dead_one_goes():
    linux = FakeLinux()
    reattach.replace(linux, 5, BIND)
    assert linux.calls == [("move_mount", "/proc/meminfo", kernel.MOVE_MOUNT_BENEATH), ("umount2", "/proc/meminfo", DETACH)]


class BeneathRefused(FakeLinux):
    def move_mount(self, fd, target, flags=0):
        self.calls.append(("move_mount", target, flags))
        if flags & kernel.MOVE_MOUNT_BENEATH:
            raise OSError(errno.EINVAL, "Invalid argument")


def test_before_linux_6_5_the_dead_bind_goes_first():
    linux = BeneathRefused()
    reattach.replace(linux, 5, BIND)
    assert linux.calls == [("move_mount", "/proc/meminfo", kernel.MOVE_MOUNT_BENEATH), ("umount2", "/proc/meminfo", DETACH),
                           ("move_mount", "/proc/meminfo", 0)]


def test_a_clone_gets_the_options_before_it_is_attached():
    linux = FakeLinux()
    fd, remount = reattach.clone_like(linux, "/var/lib/procview", BIND)
    os.close(fd)
    assert not remount
    assert linux.calls == [("open_tree", "/var/lib/procview/proc/meminfo", reattach.CLONE_FLAGS),
                           ("mount_setattr", *reattach.mount_attributes(BIND.options))]
    assert reattach.CLONE_FLAGS & kernel.AT_SYMLINK_NOFOLLOW


def test_before_linux_5_12_the_options_come_by_remount_after():
    fd, remount = reattach.clone_like(FakeLinux(mount_setattr=errno.ENOSYS), "/var/lib/procview", BIND)
    os.close(fd)
    assert remount


def test_a_clone_that_cannot_get_the_options_is_closed():
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        reattach.clone_like(FakeLinux(mount_setattr=errno.EPERM), "/var/lib/procview", BIND)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_namespace_whose_pid_is_gone_is_not_entered():
    linux = FakeLinux()
    outcome = reattach.repair_namespace(linux, "/var/lib/procview", Repair(1, 2**22 + 1, [BIND]), -1, -1)
    assert outcome["gone"] and not outcome["entered"] and linux.calls == []


def test_a_reused_pid_is_not_entered():
    linux = FakeLinux()
    outcome = reattach.repair_namespace(linux, "/var/lib/procview", Repair(1, os.getpid(), [BIND]), -1, -1)
    assert outcome["gone"] and not outcome["entered"] and linux.calls == []


def test_a_bind_that_is_not_a_dead_fuse_mount_is_not_touched():
    # Our own /proc/meminfo answers statfs: it is not dead, so nothing is
    # cloned and the namespace is not entered.
    own = os.stat("/proc/self/ns/mnt").st_ino
    linux = FakeLinux()
    outcome = reattach.repair_namespace(linux, "/var/lib/procview", Repair(own, os.getpid(), [BIND]), -1, -1)
    assert not outcome["entered"] and outcome["answering"] == [(BIND.mount_id, "/proc/meminfo")] and linux.calls == []
