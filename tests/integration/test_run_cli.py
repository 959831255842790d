"""``socker run`` / ``ps`` / ``logs`` / ``exec`` / ``stop`` end to end through the command line,
with images pulled from a real registry. Real namespaces: CI is root."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.support import oci
from tests.support.tree import diff_trees, snapshot

pytestmark = pytest.mark.integration

CONFIG = {
    "Env": ["PATH=/bin", "GREETING=hello"],
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo $GREETING from $(pwd) as $(id -u)"],
    "WorkingDir": "/tmp",
    "User": "1:1",
}


def socker(*args, home: Path, check=False, timeout=60, **kw):
    env = dict(os.environ, SOCKER_HOME=str(home))
    return subprocess.run(["socker", *args], capture_output=True, text=True, env=env, timeout=timeout, **kw)


@pytest.fixture
def home(tmp_path):
    needs_root()
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def image(image_factory):
    return image_factory(
        [oci.busybox_entries(), [oci.dir("srv"), oci.file("srv/data", b"image data\n")]], config=CONFIG
    )


def test_run_pulls_if_missing_and_honours_the_image_config(image, home):
    proc = socker("run", image.ref, home=home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from /tmp as 1"
    assert "pulling" in proc.stderr  # the image was not there: pulled first


def test_command_line_overrides(image, home):
    socker("pull", "-q", image.ref, home=home)
    # words after the image replace Cmd (the Entrypoint stays)
    assert socker("run", image.ref, "echo $0", "zero", home=home).stdout.strip() == "zero"
    out = socker(
        "run",
        "-e",
        "GREETING=hi",
        "-w",
        "/srv",
        "-u",
        "0",
        image.ref,
        "echo $GREETING $(pwd) $(id -u)",
        home=home,
    )
    assert out.stdout.strip() == "hi /srv 0", out.stderr
    out = socker("run", "--entrypoint", "/bin/cat", image.ref, "/srv/data", home=home)
    assert out.stdout == "image data\n"
    out = socker("run", image.ref, "--", "echo dashes", home=home)
    assert out.stdout.strip() == "dashes"


def test_exit_codes_and_pid_1(image, home):
    socker("pull", "-q", image.ref, home=home)
    assert socker("run", image.ref, "exit 7", home=home).returncode == 7
    # killed by a signal from the host: 128 + 9
    proc = subprocess.Popen(
        ["socker", "run", image.ref, "sleep 30"],
        env=dict(os.environ, SOCKER_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    inner = None
    for _ in range(100):
        inner = _descendant_running(proc.pid, "sleep")
        if inner:
            break
        time.sleep(0.05)
    assert inner, "the container's process did not show up"
    os.kill(inner, 9)
    assert proc.wait(timeout=20) == 137
    assert socker("run", image.ref, "echo $$", home=home).stdout.strip() == "1"
    missing = socker("run", "--entrypoint", "/no/such", image.ref, home=home)
    assert missing.returncode == 127 and "/no/such" in missing.stderr


def _descendant_running(pid: int, comm: str) -> int | None:
    """The pid of a process named ``comm`` below ``pid`` in the host's process tree."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            children = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        for c in map(int, children):
            try:
                if open(f"/proc/{c}/comm").read().strip() == comm:
                    return c
            except OSError:
                continue
            todo.append(c)
    return None


def test_rm_leaves_the_image_untouched_and_plain_run_modifies_it(image, home):
    path = Path(socker("pull", "-q", image.ref, home=home).stdout.strip())
    before = snapshot(path)
    out = socker(
        "run", "--rm", "-u", "0", image.ref, "rm /srv/data; echo new > /srv/new; mkdir /x", home=home
    )
    assert out.returncode == 0, out.stderr
    assert diff_trees(before, snapshot(path)) == []
    out = socker("run", "-u", "0", image.ref, "echo added > /srv/added", home=home)
    assert out.returncode == 0, out.stderr
    assert (path / "srv/added").read_text() == "added\n"
    changed = diff_trees(before, snapshot(path))
    assert changed and all("srv" in line for line in changed), changed  # nothing else written into the image


def test_errors_are_clear(image, home, registry):
    out = socker("run", f"{registry.host}/no/such:1", "true", home=home)
    assert out.returncode == 125 and out.stderr.count("error:") == 1 and "Traceback" not in out.stderr
    assert "no/such:1" in out.stderr and "hint:" in out.stderr
    out = socker("run", "--bogus", image.ref, home=home)
    assert out.returncode == 125 and "--bogus" in out.stderr
    assert socker("run", "--help", home=home).stdout.startswith("Usage: socker run")


def test_detached_container_ps_logs_exec_stop(image, home):
    socker("pull", "-q", image.ref, home=home)
    out = socker(
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "box",
        image.ref,
        "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        home=home,
    )
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    assert len(cid) == 64
    try:
        ps = socker("ps", home=home).stdout
        assert cid[:12] in ps and "web" in ps
        for _ in range(50):
            if "started" in socker("logs", "web", home=home).stdout:
                break
            time.sleep(0.1)
        assert "started" in socker("logs", cid[:12], home=home).stdout
        ex = socker("exec", "-e", "EXTRA=1", "web", "sh", "-c", "echo $EXTRA $GREETING", home=home)
        assert ex.stdout.strip() == "1 hello", ex.stderr  # -e adds to the container's environment
        ex = socker("exec", "web", "hostname", home=home)
        assert ex.returncode == 0 and ex.stdout.strip() == "box", ex.stderr
        ex = socker("exec", "web", "sh", "-c", "echo $$; cat /srv/data", home=home)
        assert ex.stdout.split("\n")[1] == "image data"
        dup = socker("run", "-d", "--name", "web", image.ref, "true", home=home)
        assert dup.returncode != 0 and "already used" in dup.stderr
    finally:
        stop = socker("stop", "web", home=home, timeout=30)
    assert stop.returncode == 0, stop.stderr
    assert cid[:12] not in socker("ps", home=home).stdout
    assert "bye" in socker("logs", "web", home=home).stdout
    assert cid[:12] in socker("ps", "--all", home=home).stdout


def test_memory_limit_stops_a_process_that_exceeds_it(image, home):
    socker("pull", "-q", image.ref, home=home)
    out = socker(
        "run",
        "-u",
        "0",
        "--memory",
        "16m",
        image.ref,
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; echo rc=$?",
        home=home,
    )
    assert out.returncode == 137 or "rc=137" in out.stdout, (out.returncode, out.stdout, out.stderr)
    ok = socker(
        "run",
        "-u",
        "0",
        "--memory",
        "64m",
        image.ref,
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=8 2>/dev/null; echo fine",
        home=home,
    )
    assert ok.stdout.strip() == "fine", ok.stderr


def test_volume_readonly_and_network_none(image, home, tmp_path):
    socker("pull", "-q", image.ref, home=home)
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in").write_text("from host\n")
    out = socker(
        "run",
        "-u",
        "0",
        "-v",
        f"{host}:/mnt/shared",
        "--network",
        "none",
        image.ref,
        "cat /mnt/shared/in; echo back > /mnt/shared/out; ls /sys/class/net",
        home=home,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["from", "host", "lo"]
    assert (host / "out").read_text() == "back\n"
    out = socker(
        "run",
        "-u",
        "0",
        "-v",
        f"{host}:/mnt/shared:ro",
        "--read-only",
        image.ref,
        "echo x > /mnt/shared/nope || echo ro1; echo x > /srv/nope || echo ro2",
        home=home,
    )
    assert out.stdout.split() == ["ro1", "ro2"], out.stderr
