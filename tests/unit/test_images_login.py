"""Docker's config.json as procview login and logout edit it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from procview.runtime.images import login
from procview.runtime.images.registry import RegistryError, credentials


@pytest.mark.parametrize("server, names", [
    ("127.0.0.1:5000", ("127.0.0.1:5000", "127.0.0.1:5000")),
    ("https://Reg.Example:443/v2/", ("reg.example:443", "reg.example:443")),
    ("docker.io", (login.HUB_KEY, "registry-1.docker.io")),
    ("https://index.docker.io/v1/", (login.HUB_KEY, "registry-1.docker.io")),
    ("registry-1.docker.io", (login.HUB_KEY, "registry-1.docker.io")),
])
def test_server_names(server, names):
    assert login.server_names(server) == names


def test_server_names_refuses_nothing():
    with pytest.raises(RegistryError):
        login.server_names("https:///")


def test_with_login_keeps_the_rest_and_replaces_other_spellings():
    config = {"auths": {"https://reg.example/v1/": {"auth": "b2xkOm9sZA=="}, "other.example": {"auth": "eDp5"}},
              "credHelpers": {"gcr.io": "gcloud"}}
    new = login.with_login(config, "reg.example", "alice", "pw:with:colons")
    assert new["credHelpers"] == {"gcr.io": "gcloud"}
    assert set(new["auths"]) == {"reg.example", "other.example"}
    assert credentials("reg.example", new) == ("alice", "pw:with:colons")
    assert config["auths"]["https://reg.example/v1/"]  # the input is not changed


def test_hub_login_is_keyed_as_docker_keys_it():
    new = login.with_login({}, login.HUB_KEY, "bob", "pw")
    assert list(new["auths"]) == ["https://index.docker.io/v1/"]
    assert credentials("registry-1.docker.io", new) == ("bob", "pw")


def test_without_login():
    config = {"auths": {"reg.example": {"auth": "eDp5"}, "keep.example": {"auth": "eDp5"}}, "psFormat": "x"}
    new, removed = login.without_login(config, "reg.example")
    assert removed and new == {"auths": {"keep.example": {"auth": "eDp5"}}, "psFormat": "x"}
    assert login.without_login(new, "reg.example") == (new, False)
    assert login.without_login({}, "reg.example") == ({"auths": {}}, False)


def test_write_config_is_0600_json_and_follows_a_symlink(tmp_path):
    real = tmp_path / "real" / "config.json"
    real.parent.mkdir()
    real.write_text("{}")
    os.chmod(real, 0o644)
    link_dir = tmp_path / "docker"
    link_dir.mkdir()
    (link_dir / "config.json").symlink_to(real)
    login.write_config(str(link_dir / "config.json"), {"auths": {"a": {"auth": "eDp5"}}})
    assert (link_dir / "config.json").is_symlink()
    assert json.loads(real.read_text()) == {"auths": {"a": {"auth": "eDp5"}}}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(os.listdir(real.parent)) == ["config.json"]  # no temporary left


def test_write_config_makes_the_directory(tmp_path):
    path = tmp_path / "new" / "config.json"
    login.write_config(str(path), {"auths": {}})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and json.loads(path.read_text()) == {"auths": {}}


def test_read_config(tmp_path):
    assert login.read_config(str(tmp_path / "none.json")) == {}
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(RegistryError, match="not a JSON object"):
        login.read_config(str(bad))
    bad.write_text("{")
    with pytest.raises(RegistryError, match="cannot read"):
        login.read_config(str(bad))


def test_logout_without_a_file_changes_nothing(tmp_path):
    environ = {"DOCKER_CONFIG": str(tmp_path / "dc")}
    assert login.logout("reg.example", environ) is False
    assert not (tmp_path / "dc").exists()
