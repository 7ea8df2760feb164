"""Pure parts of the runtime: path resolution inside a rootfs, generated
/etc files, exit codes."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from procview.runtime import process
from procview.runtime.rootfs import host_resolv_text, hosts_file, init_layer, prepare_bundle, resolv_conf, secure_join


def test_secure_join_keeps_every_path_inside_the_root(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/shadow", root / "etc/hosts")  # absolute: must resolve inside root
    os.symlink("../../../../outside", root / "etc/up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert secure_join(str(root), "/etc/hosts") == str(root / "etc/shadow")
    assert secure_join(str(root), "etc/up/x") == str(root / "outside/x")
    assert secure_join(str(root), "../../x") == str(root / "x")
    assert secure_join(str(root), "/a/./b/../c") == str(root / "a/c")
    from procview.runtime.rootfs import RootfsError

    with pytest.raises(RootfsError, match="too many levels"):
        secure_join(str(root), "loop1/x")


def test_resolv_conf_drops_loopback_resolvers_in_a_private_network():
    host = "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\noptions edns0\n"
    assert resolv_conf(host, net_host=False) == "search example.org\nnameserver 10.0.0.2\noptions edns0\n"
    assert resolv_conf(host, net_host=True) == host


def test_resolv_conf_with_no_reachable_resolver_names_dockers_fallback():
    assert resolv_conf("search lan\nnameserver 127.0.0.53\n", net_host=False) == (
        "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n")
    assert resolv_conf("", net_host=False) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_behind_systemd_resolved_the_hosts_real_upstreams_are_used():
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
    upstreams = "nameserver 192.168.1.1\nsearch lan\n"
    assert host_resolv_text(stub, upstreams) == upstreams
    assert host_resolv_text(stub, None) == stub  # no resolved: the stub (then the fallback)
    mixed = "nameserver 127.0.0.53\nnameserver 10.0.0.2\n"
    assert host_resolv_text(mixed, upstreams) == mixed  # one the container can reach already


def test_resolv_conf_on_a_user_network_names_its_responder_only_with_dockers_ndots():
    host = "# by hand\nsearch example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n"
    assert resolv_conf(host, False, nameserver="10.90.0.1") == (
        "search example.org\nnameserver 10.90.0.1\noptions edns0\noptions ndots:0\n")
    # The host's own ndots is kept; with nothing of the host's, the responder alone.
    assert resolv_conf("options ndots:2 rotate\n", False, "10.90.0.1") == "nameserver 10.90.0.1\noptions ndots:2 rotate\n"
    assert resolv_conf("", False, "10.90.0.1") == "nameserver 10.90.0.1\noptions ndots:0\n"


def test_hosts_file_has_dockers_lines_and_the_hostname():
    text = hosts_file("abc123", net_host=False)
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert "\tabc123\n" in text


def test_the_shared_init_layer_holds_placeholders_and_the_bundle_the_rest(tmp_path):
    (tmp_path / "containers").mkdir()
    init = init_layer(str(tmp_path))
    assert init_layer(str(tmp_path)) == init  # made once
    for name in ("dev/pts", "dev/shm", "proc", "sys"):
        assert os.path.isdir(os.path.join(init, name))
    for name in ("etc/hosts", "etc/hostname", "etc/resolv.conf"):
        assert os.path.getsize(os.path.join(init, name)) == 0
    assert os.readlink(os.path.join(init, "etc/mtab")) == "/proc/mounts"
    assert os.listdir(tmp_path / "containers") == []  # no staging left
    bundle = prepare_bundle(str(tmp_path / "containers" / "c"), init, "h", "hosts\n", "resolv\n")
    assert bundle.init == init
    assert sorted(os.listdir(bundle.path)) == ["hostname", "hosts", "merged", "resolv.conf", "upper", "work"]
    assert open(bundle.file("hostname")).read() == "h\n"
    bundle.remove()
    assert not os.path.exists(bundle.path) and os.path.isdir(init)


def test_a_lost_race_to_make_the_init_layer_is_no_failure(tmp_path, monkeypatch):
    (tmp_path / "containers").mkdir()
    real_rename = os.rename

    def rename_after_another_run(src, dst):
        init_layer_by_another_run = str(tmp_path / "other")
        os.makedirs(os.path.join(init_layer_by_another_run, "proc"))
        real_rename(init_layer_by_another_run, dst)
        real_rename(src, dst)  # fails: dst exists and is not empty

    monkeypatch.setattr(os, "rename", rename_after_another_run)
    path = init_layer(str(tmp_path))
    assert os.listdir(path) == ["proc"]  # the other run's
    assert os.listdir(tmp_path / "containers") == []


def test_exit_codes_follow_docker():
    assert process.exit_code_of(3 << 8) == 3
    assert process.exit_code_of(signal.SIGKILL) == 137
    assert process.exit_code_of(signal.SIGTERM) == 143
    assert process.exec_exit_code(errno.ENOENT) == 127
    assert process.exec_exit_code(errno.EACCES) == 126
    assert process.exec_exit_code(errno.ENOEXEC) == 126


def test_reports_travel_as_one_json_line():
    r, w = os.pipe()
    process.report(w, "exec", 'exec: "nope": executable file not found in $PATH', 127)
    os.close(w)
    assert process.read_report(r) == {"stage": "exec", "message": 'exec: "nope": executable file not found in $PATH', "code": 127}
    r, w = os.pipe()
    os.close(w)
    assert process.read_report(r) is None


def test_remove_tree_removes_everything_below_and_follows_no_symlink(tmp_path):
    from procview._io import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "a" / "locked").mkdir(mode=0)  # like overlayfs's work/work
    (tree / "link-to-dir").symlink_to(outside)
    (tree / "a" / "link-to-file").symlink_to(outside / "keep")
    os.mkfifo(tree / "fifo")
    remove_tree(str(tree))
    assert not tree.exists()
    assert (outside / "keep").read_text() == "x"


def test_remove_tree_of_a_missing_path_or_a_symlink_does_nothing(tmp_path):
    from procview._io import remove_tree

    remove_tree(str(tmp_path / "missing"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    remove_tree(str(tmp_path / "link"))
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "dir" / "file").exists()
