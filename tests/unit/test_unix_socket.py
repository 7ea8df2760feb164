"""procview.unix_socket: where the daemons listen."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from procview import unix_socket


def test_listens_with_mode_0600_and_refuses_a_second_daemon(tmp_path):
    path = str(tmp_path / "run" / "daemon.sock")
    first = unix_socket.listen(path, "fork server")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(unix_socket.ListenError, match="another fork server is listening there"):
            unix_socket.listen(path, "fork server")
    finally:
        first.close()


def test_a_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "daemon.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # its file stays, nobody listens: what a killed daemon leaves
    unix_socket.listen(path, "supervisor").close()


def test_what_is_not_a_socket_is_left_alone(tmp_path):
    path = tmp_path / "daemon.sock"
    path.write_text("someone's file")
    with pytest.raises(unix_socket.ListenError, match="exists and is not a socket"):
        unix_socket.listen(str(path), "supervisor")
    assert path.read_text() == "someone's file"


def test_a_path_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(unix_socket.ListenError, match="cannot listen"):
        unix_socket.listen(str(tmp_path / "file" / "daemon.sock"), "supervisor")
