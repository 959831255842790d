"""``socker run``'s command line and Docker's Entrypoint/Cmd/Env/WorkingDir/User rules."""

import pytest

from socker_lib.runtime.options import (
    UsageError,
    build_spec,
    command_line,
    env_lines,
    hostname_for,
    parse_args,
    parse_size,
)


def test_everything_after_the_image_is_the_command():
    o = parse_args(
        [
            "-it",
            "--rm",
            "-e",
            "A=1",
            "-eB=2",
            "--env=C=3",
            "-v",
            "/h:/c:ro",
            "alpine",
            "sh",
            "-c",
            "echo -e hi --rm",
        ]
    )
    assert o.image == "alpine" and o.command == ["sh", "-c", "echo -e hi --rm"]
    assert o.interactive and o.tty and o.ephemeral and o.env == ["A=1", "B=2", "C=3"]
    assert o.volume == ["/h:/c:ro"]


def test_double_dash_after_image_and_before_it():
    assert parse_args(["alpine", "--", "ls", "-l"]).command == ["ls", "-l"]
    assert parse_args(["-d", "--", "alpine", "ls"]).image == "alpine"


def test_unknown_option_and_missing_image():
    with pytest.raises(UsageError, match="unknown option --bogus"):
        parse_args(["--bogus", "alpine"])
    with pytest.raises(UsageError, match="needs an image"):
        parse_args(["-d"])
    with pytest.raises(UsageError, match="needs a value"):
        parse_args(["alpine"][:0] + ["--name"])


def test_entrypoint_and_cmd_rules():
    cfg = {"Entrypoint": ["/ep"], "Cmd": ["default"]}
    assert command_line(parse_args(["img"]), cfg) == ["/ep", "default"]
    assert command_line(parse_args(["img", "x", "y"]), cfg) == ["/ep", "x", "y"]
    # --entrypoint replaces the entrypoint and drops the image's Cmd
    assert command_line(parse_args(["--entrypoint", "/other", "img"]), cfg) == ["/other"]
    assert command_line(parse_args(["--entrypoint", "/other", "img", "a"]), cfg) == ["/other", "a"]
    assert command_line(parse_args(["--entrypoint=", "img", "ls"]), cfg) == ["ls"]
    with pytest.raises(UsageError, match="no command"):
        command_line(parse_args(["img"]), {})


def test_env_rules():
    o = parse_args(["-e", "A=override", "-e", "FROM_HOST", "-e", "GONE", "-e", "EMPTY=", "img"])
    env = env_lines(o, ["A=image", "B=image", "GONE=x"], host_env={"FROM_HOST": "h"})
    assert env == [
        "A=override",
        "B=image",
        "FROM_HOST=h",
        "EMPTY=",
        f"PATH={'/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}",
    ]


def test_env_file(tmp_path):
    f = tmp_path / "env"
    f.write_text("# comment\n\nX=1\nZ=a=b\n")
    env = env_lines(parse_args(["--env-file", str(f), "-e", "X=2", "img"]), [])
    assert "X=2" in env and "Z=a=b" in env
    f.write_text("Y = spaced\n")
    with pytest.raises(UsageError, match="invalid environment variable"):
        env_lines(parse_args(["--env-file", str(f), "img"]), [])


def test_sizes_and_hostnames():
    assert parse_size("512m") == 512 << 20 and parse_size("1g") == 1 << 30 and parse_size("100") == 100
    assert parse_size("1.5G") == int(1.5 * (1 << 30))
    with pytest.raises(UsageError):
        parse_size("lots")
    assert hostname_for("library/alpine:3.19") == "alpine"
    assert hostname_for("127.0.0.1:5000/me/my_app@sha256:" + "a" * 64) == "my-app"


def test_spec_from_image_config(tmp_path):
    config = {"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/srv", "User": "nobody"}}
    o = parse_args(
        [
            "-w",
            "/tmp",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "20",
            "-v",
            f"{tmp_path}/data:/data",
            "--tmpfs",
            "/run:size=1m",
            "--network",
            "none",
            "me/app:1",
        ]
    )
    spec = build_spec(o, "/rootfs", config, state_dir=str(tmp_path / "st"), cid="c" * 64)
    assert spec.args == ["sh"] and spec.cwd == "/tmp" and spec.user == "nobody" and spec.hostname == "app"
    assert "A=1" in spec.env and "PATH=/bin" in spec.env and "HOSTNAME=app" in spec.env
    assert spec.memory == 64 << 20 and spec.cpus == 0.5 and spec.pids_limit == 20 and spec.network == "none"
    assert spec.mounts[0].source == str(tmp_path / "data") and spec.mounts[0].target == "/data"
    assert (tmp_path / "data").is_dir()
    assert spec.mounts[1].kind == "tmpfs" and spec.mounts[1].options == "size=1m"


def test_bad_volumes_and_network():
    for v in ["rel:/c", "/h:rel", "/h", "/h:/c:bogus"]:
        with pytest.raises(UsageError):
            build_spec(parse_args(["-v", v, "img", "x"]), "/r", {}, state_dir="/tmp/x", cid="1")
    with pytest.raises(UsageError, match="network"):
        build_spec(parse_args(["--network", "bridge", "img", "x"]), "/r", {}, state_dir="/tmp/x", cid="1")
