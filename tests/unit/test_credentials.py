import base64
import json
import os
import stat

from socker_lib.registry import credentials


def write_config(tmp_path, monkeypatch, data):
    d = tmp_path / "docker"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(data))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.delenv("DOCKER_USERNAME", raising=False)
    monkeypatch.delenv("DOCKER_PASSWORD", raising=False)
    return d


def test_env_wins(monkeypatch, tmp_path):
    write_config(tmp_path, monkeypatch, {"auths": {"r.io": {"auth": base64.b64encode(b"a:b").decode()}}})
    monkeypatch.setenv("DOCKER_USERNAME", "envuser")
    monkeypatch.setenv("DOCKER_PASSWORD", "envpass")
    c = credentials.lookup("r.io")
    assert (c.username, c.password) == ("envuser", "envpass")


def test_auths_and_docker_hub_key(monkeypatch, tmp_path):
    write_config(
        tmp_path,
        monkeypatch,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw:with:colons").decode()},
                "127.0.0.1:5000": {"auth": base64.b64encode(b"loc:pw").decode()},
                "tok.io": {"identitytoken": "IDT"},
            }
        },
    )
    c = credentials.lookup("docker.io")
    assert (c.username, c.password) == ("hub", "pw:with:colons")
    assert credentials.lookup("127.0.0.1:5000").username == "loc"
    assert credentials.lookup("tok.io").identity_token == "IDT"
    assert credentials.lookup("other.io") is None


def test_cred_helper_wins_over_store(monkeypatch, tmp_path):
    d = write_config(tmp_path, monkeypatch, {"credHelpers": {"r.io": "fake"}, "credsStore": "other"})
    helper = d / "docker-credential-fake"
    helper.write_text(
        '#!/bin/sh\nread url\necho "{\\"ServerURL\\":\\"$url\\",\\"Username\\":\\"h\\",\\"Secret\\":\\"s\\"}"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    c = credentials.lookup("r.io")
    assert (c.username, c.password) == ("h", "s")


def test_secret_not_in_repr():
    c = credentials.Credentials("u", "hunter2")
    assert "hunter2" not in repr(c) and "hunter2" not in str(c)
