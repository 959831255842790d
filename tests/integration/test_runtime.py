"""The container runtime for real: namespaces, mounts, identity and signals (needs root).

Each test runs real containers (fork, unshare, pivot_root, execve) on busybox root filesystems
built with ``tests.support.oci`` and ``apply_layers``. Output is read with ``capfd``: without a
tty the container writes straight to the supervisor's file descriptors. Tests that need the
supervisor in its own process (signals, tty, rootless) fork it or run ``_RUNNER``.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from socker_lib.errors import SockerError
from socker_lib.layers import apply_layers
from socker_lib.runtime import container
from socker_lib.runtime.container import ExecError, run, start
from socker_lib.runtime.spec import ContainerSpec, Mount
from tests.conftest import needs_root
from tests.support import oci
from tests.support.rootless import as_nobody
from tests.support.tree import assert_same_tree, snapshot

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
EXTRA_APPLETS = ("tty", "stty", "tr", "mknod", "chown", "sysctl")
GROUP = "root:x:0:\ndaemon:x:1:\nstaff:x:50:daemon,other\nusers:x:100:other\nnogroup:x:65534:\n"
ENV = ["PATH=/usr/bin:/bin"]
# the supervisor in a process of its own: spec as JSON in argv[1], exit code = the container's
_RUNNER = (
    "import json, sys\n"
    "from socker_lib.runtime.container import run\n"
    "from socker_lib.runtime.spec import ContainerSpec\n"
    "sys.exit(run(ContainerSpec(**json.loads(sys.argv[1]))))\n"
)


@pytest.fixture(autouse=True)
def _root():
    needs_root()


def make_image(path, *extra, root_dirs: bool = True) -> str:
    """A busybox root filesystem at ``path`` (with /proc, /dev, /sys unless ``root_dirs=False``)."""
    entries = oci.busybox_entries()
    entries = [e if e.path != "etc/group" else oci.file("etc/group", GROUP) for e in entries]
    entries += [oci.symlink(f"bin/{a}", "busybox") for a in EXTRA_APPLETS if a not in oci.BUSYBOX_APPLETS]
    if root_dirs:
        entries += [oci.dir("proc", mode=0o555), oci.dir("dev"), oci.dir("sys", mode=0o555)]
    entries += list(extra)
    os.makedirs(path, exist_ok=True)
    apply_layers(path, [io.BytesIO(oci.tar_bytes(entries))])
    return str(path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One image for tests whose containers write nothing into it."""
    return make_image(tmp_path_factory.mktemp("shared") / "rootfs")


@pytest.fixture
def image(tmp_path):
    return make_image(tmp_path / "rootfs")


def spec(rootfs, *args, **kw) -> ContainerSpec:
    kw.setdefault("env", list(ENV))
    return ContainerSpec(rootfs=str(rootfs), args=list(args), **kw)


def sh(rootfs, script, **kw) -> ContainerSpec:
    return spec(rootfs, "sh", "-c", script, **kw)


def output(capfd, s: ContainerSpec) -> tuple[int, str, str]:
    capfd.readouterr()
    code = run(s)
    out, err = capfd.readouterr()
    return code, out, err


def ok(capfd, s: ContainerSpec) -> str:
    code, out, err = output(capfd, s)
    assert code == 0, (code, out, err)
    return out


def mountinfo_points(text: str) -> list[str]:
    return [line.split()[4] for line in text.splitlines() if line.strip()]


def run_in_process(s: ContainerSpec, **popen) -> subprocess.Popen:
    data = {k: v for k, v in s.__dict__.items() if k != "mounts"}
    return subprocess.Popen([sys.executable, "-c", _RUNNER, json.dumps(data)], cwd=REPO, **popen)


# ---------------------------------------------------------------------------------------------
# Namespaces and processes


def test_pid_1_and_only_the_containers_processes(capfd, shared):
    out = ok(capfd, sh(shared, "echo $$; ls /proc | grep '^[0-9]*$'"))
    lines = out.split()
    assert lines[0] == "1"
    pids = {int(p) for p in re.findall(r"^\d+$", out, re.M)}
    assert 1 in pids and max(pids) < 10  # sh, ls, grep: nothing of the host


def test_hostname_and_generated_etc_files(capfd, image):
    s = sh(image, "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf", hostname="box-1",
           ephemeral=True, extra_hosts=["db:10.1.2.3", "v6:fd00::1"], dns=["192.0.2.53"])  # fmt: skip
    out = ok(capfd, s)
    assert out.startswith("box-1\nbox-1\n")
    assert "127.0.0.1\tlocalhost" in out and "::1\tlocalhost ip6-localhost ip6-loopback" in out
    assert "10.1.2.3\tdb" in out and "fd00::1\tv6" in out and "\tbox-1" in out
    assert "nameserver 192.0.2.53" in out


def test_exit_codes(capfd, shared):
    assert output(capfd, sh(shared, "exit 3"))[0] == 3
    assert output(capfd, sh(shared, "true"))[0] == 0
    # a process of the container killed by a signal: the shell reports 128+9; PID 1 itself below
    assert output(capfd, sh(shared, 'sh -c "kill -9 \\$\\$"; exit $?'))[0] == 137


def _container_pid(supervisor: int, timeout: float = 10) -> int:
    """The container's PID 1, grandchild of ``supervisor`` (through the helper process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            helper = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
            if helper:
                kids = Path(f"/proc/{helper[0]}/task/{helper[0]}/children").read_text().split()
                if kids and "sleep" in Path(f"/proc/{kids[0]}/cmdline").read_text():
                    return int(kids[0])
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError("the container process did not start")


def test_killed_by_a_signal_is_128_plus_n(shared):
    proc = run_in_process(spec(shared, "sleep", "30"))
    try:
        pid = _container_pid(proc.pid)
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(10) == 137
    finally:
        proc.kill()


def test_sigterm_is_forwarded(shared):
    s = sh(shared, 'trap "exit 42" TERM; echo ready; sleep 30 & wait')
    proc = run_in_process(s, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 42
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()


def test_sigusr1_and_sighup_are_forwarded(shared):
    s = sh(shared, 'trap "echo usr1" USR1; trap "exit 7" HUP; echo ready; while :; do sleep 0.05; done')
    proc = run_in_process(s, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout.readline() == b"usr1\n"
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(10) == 7
    finally:
        proc.kill()


def test_the_container_dies_with_its_supervisor(shared, tmp_path):
    # a SIGKILLed supervisor cleans nothing up: its state directory is the test's
    proc = run_in_process(spec(shared, "sleep", "30", state_dir=str(tmp_path / "state")))
    try:
        pid = _container_pid(proc.pid)
        proc.kill()
        proc.wait(10)
        _wait_for(
            lambda: (
                not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
        )
    finally:
        proc.kill()


def test_the_process_gets_exactly_the_environment_given(capfd, shared, monkeypatch):
    monkeypatch.setenv("HOST_ONLY", "leak")
    out = ok(capfd, spec(shared, "env", env=["PATH=/bin", "A=one two", "EMPTY="]))
    assert sorted(out.splitlines()) == ["A=one two", "EMPTY=", "HOME=/root", "PATH=/bin"]
    out = ok(capfd, spec(shared, "env", env=["HOME=/x"]))
    assert out.splitlines() == ["HOME=/x"]


def test_working_directory(capfd, shared):
    assert ok(capfd, spec(shared, "pwd", cwd="/tmp")) == "/tmp\n"
    with pytest.raises(SockerError, match="working directory /nowhere"):
        run(spec(shared, "pwd", cwd="/nowhere"))


def _ids(out: str) -> dict[str, str]:
    return {k: v.split() for k, v in re.findall(r"^(Uid|Gid|Groups):\t?(.*)$", out, re.M)}


def test_user_by_name_with_supplementary_groups(capfd, shared):
    out = ok(
        capfd, sh(shared, "grep -E '^(Uid|Gid|Groups)' /proc/self/status; echo HOME=$HOME", user="daemon")
    )
    ids = _ids(out)
    assert ids["Uid"] == ["1"] * 4 and ids["Gid"] == ["1"] * 4 and ids["Groups"] == ["50"]
    assert "HOME=/usr/sbin" in out


def test_user_by_uid_gid_and_explicit_group(capfd, shared):
    out = ok(
        capfd, sh(shared, "grep -E '^(Uid|Gid|Groups)' /proc/self/status; echo HOME=$HOME", user="1234:50")
    )
    ids = _ids(out)
    assert ids["Uid"][0] == "1234" and ids["Gid"][0] == "50" and ids.get("Groups", []) == []
    assert "HOME=/" in out
    out = ok(capfd, sh(shared, "grep -E '^(Uid|Gid|Groups)' /proc/self/status", user="daemon:users"))
    ids = _ids(out)
    assert ids["Uid"][0] == "1" and ids["Gid"][0] == "100" and ids.get("Groups", []) == []
    # the default user is root, with root's groups (none here) instead of the host's
    ids = _ids(ok(capfd, sh(shared, "grep -E '^(Uid|Gid|Groups)' /proc/self/status")))
    assert ids["Uid"][0] == "0" and ids.get("Groups", []) == []
    with pytest.raises(SockerError, match="unable to find user nosuchuser"):
        run(spec(shared, "true", user="nosuchuser"))


def test_missing_or_not_executable_command(capfd, shared):
    with pytest.raises(ExecError, match=r'exec: "nosuch": executable file not found in \$PATH') as e:
        run(spec(shared, "nosuch"))
    assert e.value.exit_code == 127
    with pytest.raises(ExecError, match="no such file or directory") as e:
        run(spec(shared, "/bin/nosuch"))
    assert e.value.exit_code == 127
    with pytest.raises(ExecError, match="permission denied") as e:
        run(spec(shared, "/etc/passwd"))
    assert e.value.exit_code == 126


def test_stdin_is_dev_null_and_no_descriptor_leaks(capfd, shared):
    leak = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        out = ok(capfd, sh(shared, "cat; ls /proc/self/fd; readlink /proc/self/fd/0"))
    finally:
        os.close(leak)
    lines = out.split()
    assert lines[-1] == "/dev/null"
    assert set(lines[:-1]) <= {"0", "1", "2", "3"}  # 3: ls's own directory


def test_stdin_is_passed_with_spec_stdin(shared):
    proc = run_in_process(sh(shared, "tr a-z A-Z", stdin=True), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(b"hello\n", timeout=10)
    assert out == b"HELLO\n" and proc.returncode == 0


# ---------------------------------------------------------------------------------------------
# Mounts


def test_bind_mounts_rw_and_ro_and_tmpfs(capfd, image, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "f").write_text("read me")
    (tmp_path / "single").write_text("one file")
    mounts = [
        Mount("/data", "bind", str(rw)),
        Mount("/conf", "bind", str(ro), readonly=True),
        Mount("/etc/single", "bind", str(tmp_path / "single"), readonly=True),
        Mount("/scratch", "tmpfs", options="size=1m,mode=1777"),
    ]
    script = ("echo w > /data/new && cat /conf/f && echo; touch /conf/x || echo ro-ok; cat /etc/single; echo;"
              "echo s > /scratch/s && grep ' /scratch ' /proc/mounts")  # fmt: skip
    out = ok(capfd, sh(image, script, mounts=mounts))
    assert (rw / "new").read_text() == "w\n"
    assert "read me" in out and "ro-ok" in out and "one file" in out
    assert re.search(r"^tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k", out, re.M), out
    assert sorted(os.listdir(ro)) == ["f"]
    # the one place socker creates a mountpoint in the image: a missing mount target
    assert os.path.isdir(f"{image}/data") and os.path.isdir(f"{image}/scratch")


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "fallback-walk"])
def test_a_symlink_in_the_image_cannot_redirect_a_mount_onto_the_host(capfd, tmp_path, monkeypatch, openat2):
    monkeypatch.setattr(container.L, "_openat2_missing", not openat2)
    host_target = tmp_path / "host-side"
    rootfs = make_image(tmp_path / "rootfs", oci.symlink("evil", str(host_target)),
                        oci.symlink("up", "../../../../../../../.."))  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker").write_text("m")
    mounts = [
        Mount("/evil/sub", "bind", str(src)),
        Mount("/up/tmp/x", "tmpfs"),
        Mount("/tmp/../../../y", "tmpfs"),
    ]
    ok(capfd, sh(rootfs, "cat /evil/sub/marker", mounts=mounts))
    assert not os.path.exists("/y") and (Path(rootfs) / "y").is_dir()
    assert not host_target.exists()  # created inside the image instead
    assert (Path(rootfs) / str(host_target).lstrip("/") / "sub").is_dir()
    assert (Path(rootfs) / "tmp/x").is_dir()


def test_read_only_root(capfd, image):
    out = ok(capfd, sh(image, "touch /x || echo root-ro; touch /tmp/x || echo tmp-ro; touch /dev/shm/x && echo shm-rw",
                       readonly_rootfs=True, mounts=[Mount("/run", "tmpfs")]))  # fmt: skip
    assert "root-ro" in out and "tmp-ro" in out and "shm-rw" in out
    assert not os.path.exists(f"{image}/x")


def test_network_none_has_only_lo_and_it_is_up(capfd, shared):
    out = ok(capfd, sh(shared, "ls /sys/class/net; cat /sys/class/net/lo/flags; tail -n +3 /proc/net/dev | cut -d: -f1",
                       network="none"))  # fmt: skip
    lines = out.split()
    assert lines[0] == "lo" and int(lines[1], 16) & 1  # IFF_UP
    assert lines[2:] == ["lo"]


def test_host_mounts_are_not_visible_and_the_host_mount_table_is_unchanged(capfd, image, tmp_path):
    before = Path("/proc/self/mountinfo").read_text()
    src = tmp_path / "vol"
    src.mkdir()
    out = ok(capfd, sh(image, "cat /proc/self/mountinfo", ephemeral=True, network="none", mounts=[
        Mount("/vol", "bind", str(src)), Mount("/t", "tmpfs")]))  # fmt: skip
    assert Path("/proc/self/mountinfo").read_text() == before
    points = mountinfo_points(out)
    allowed = re.compile(r"^/(|proc(/.*)?|sys(/.*)?|dev(/.*)?|etc/(hostname|hosts|resolv\.conf)|vol|t)$")
    assert all(allowed.match(p) for p in points), points
    assert points[0] == "/" and not any(
        p.startswith(("/work", "/tmp", "/mnt", "/sys/fs/cgroup")) for p in points
    )
    out = ok(capfd, sh(image, "cat /proc/self/mountinfo"))
    assert all(allowed.match(p) for p in mountinfo_points(out))
    assert Path("/proc/self/mountinfo").read_text() == before


def test_ephemeral_leaves_the_image_identical(capfd, image, tmp_path):
    before = snapshot(image, include_root=True)
    state = tmp_path / "state"
    script = ("/bin/busybox rm /etc/passwd /bin/ls; echo new > /tmp/new; echo x >> /etc/group; mkdir -p /a/b;"
              "chmod 700 /tmp; rmdir /root; touch /bin/busybox; /bin/busybox cat /etc/group")  # fmt: skip
    out = ok(capfd, sh(image, script, ephemeral=True, state_dir=str(state)))
    assert out.endswith("x\n")
    assert_same_tree(before, snapshot(image, include_root=True))
    assert sorted(os.listdir(state)) == ["hostname", "hosts", "resolv.conf"]  # the overlay is gone


def test_a_run_writes_into_the_image_only_what_the_process_writes(capfd, tmp_path):
    # an image with /etc/hosts (bind-mounted over) but without /etc/hostname (skipped)
    rootfs = make_image(tmp_path / "rootfs", oci.file("etc/hosts", "image's hosts\n"))
    before = snapshot(rootfs, include_root=True)
    out = ok(capfd, sh(rootfs, "cat /etc/hosts; ls /proc/1 >/dev/null; cat /dev/null", hostname="h"))
    assert "127.0.1.1\th" in out
    assert_same_tree(before, snapshot(rootfs, include_root=True))
    ok(capfd, sh(rootfs, "echo kept > /tmp/kept; rm /etc/passwd"))
    assert (Path(rootfs) / "tmp/kept").read_text() == "kept\n"
    assert not (Path(rootfs) / "etc/passwd").exists()
    assert (Path(rootfs) / "etc/hosts").read_text() == "image's hosts\n"


def test_an_image_without_proc_dev_sys_etc_runs_without_them_being_created(capfd, tmp_path):
    rootfs = str(tmp_path / "rootfs")
    os.makedirs(rootfs)
    entries = [oci.dir("bin"), oci.file("bin/busybox", oci.busybox_bytes(), mode=0o755), oci.symlink("bin/sh", "busybox"),
               oci.dir("tmp", mode=0o1777)]  # fmt: skip
    apply_layers(rootfs, [io.BytesIO(oci.tar_bytes(entries))])
    before = snapshot(rootfs, include_root=True)
    script = ("/bin/busybox cat /etc/hostname; /bin/busybox ls /proc/1/exe /dev/null /sys/kernel >/dev/null && echo seen;"
              "echo y > /tmp/y; /bin/busybox touch /new || echo root-ro")  # fmt: skip
    out = ok(capfd, sh(rootfs, script, hostname="scratchy", env=[]))
    assert out.split() == ["scratchy", "seen", "root-ro"]
    assert (Path(rootfs) / "tmp/y").read_text() == "y\n"
    os.unlink(Path(rootfs) / "tmp/y")
    assert_same_tree(before, snapshot(rootfs, include_root=True), dir_mtime=False)


# ---------------------------------------------------------------------------------------------
# Security defaults


def test_masked_and_read_only_paths(capfd, shared):
    masked = [
        p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug") if os.path.exists(p)
    ]
    assert masked
    script = (f"for f in {' '.join(masked)}; do echo \"$f:$(cat $f | wc -c)\"; done; ls -A /proc/acpi /sys/firmware;"
              "echo 1 > /proc/sys/kernel/domainname || echo sys-ro; touch /sys/x || echo sysfs-ro;"
              "grep -E ' /(sys|proc/sys) ' /proc/mounts")  # fmt: skip
    out = ok(capfd, sh(shared, script))
    for path in masked:
        assert f"{path}:0" in out
    assert "sys-ro" in out and "sysfs-ro" in out
    assert re.search(r"^sysfs /sys sysfs ro,", out, re.M) and re.search(
        r"^proc /proc/sys proc ro,", out, re.M
    )
    assert "/proc/acpi:\n\n" in out or "/proc/acpi:\n/sys" in out
    out = ok(capfd, sh(shared, f"cat {masked[0]} | wc -c; grep ' /sys ' /proc/mounts", privileged=True))
    assert int(out.split()[0]) > 0 and "sysfs /sys sysfs rw," in out


def test_mount_needs_privileged(capfd, shared):
    code, out, err = output(capfd, sh(shared, "mount -t tmpfs none /tmp && echo mounted"))
    assert code != 0 and "mounted" not in out
    out = ok(capfd, sh(shared, "mount -t tmpfs none /tmp && echo mounted", privileged=True))
    assert "mounted" in out


def _caps(out: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in re.findall(r"^(Cap\w+):\t([0-9a-f]+)$", out, re.M)}


def test_capabilities_default_add_drop(capfd, image):
    default = sum(1 << container.L.CAP_NAMES.index(n) for n in container.DEFAULT_CAPS)
    caps = _caps(ok(capfd, sh(image, "grep Cap /proc/self/status")))
    assert caps["CapBnd"] == default and caps["CapEff"] == default and caps["CapPrm"] == default
    assert caps["CapInh"] == 0 and caps["CapAmb"] == 0
    out = ok(capfd, sh(image, "grep -E 'Cap|NoNewPrivs' /proc/self/status; touch /tmp/f; chown 1 /tmp/f || echo no-chown",
                       cap_drop=["chown"], cap_add=["CAP_NET_ADMIN"]))  # fmt: skip
    caps = _caps(out)
    assert caps["CapEff"] == default & ~1 | 1 << 12 and "no-chown" in out
    assert re.search(r"^NoNewPrivs:\t1$", out, re.M)
    caps = _caps(ok(capfd, sh(image, "grep Cap /proc/self/status", cap_drop=["ALL"], cap_add=["KILL"])))
    assert caps["CapEff"] == 1 << 5
    # a non-root user has no effective capabilities, only the bounding set
    caps = _caps(ok(capfd, sh(image, "grep Cap /proc/self/status", user="daemon")))
    assert caps["CapEff"] == 0 and caps["CapPrm"] == 0 and caps["CapBnd"] == default
    with pytest.raises(SockerError, match="unknown capability"):
        run(sh(image, "true", cap_add=["NOPE"]))


def test_dev_is_a_private_tmpfs_where_made_nodes_do_not_work(capfd, shared):
    script = ("ls /dev; grep ' /dev ' /proc/mounts; echo x > /dev/null && head -c 4 /dev/zero | wc -c;"
              "head -c 4 /dev/urandom | wc -c; mknod /dev/shm/mem c 1 1 && cat /dev/shm/mem || echo nodev")  # fmt: skip
    out = ok(capfd, sh(shared, script))
    names = set(out.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd"} <= names
    assert re.search(r"^tmpfs /dev tmpfs rw,nosuid,nodev", out, re.M)
    assert "devtmpfs /dev " not in out and "nodev" in out.split()[-1]
    assert out.split().count("4") == 2


def test_cgroup_is_joined_before_exec_and_removed(capfd, shared, monkeypatch):
    from socker_lib.runtime import cgroups

    calls = []

    class FakeCgroup:
        def add(self, pid):
            calls.append(("add", pid, Path(f"/proc/{pid}/exe").resolve().name))

        def remove(self):
            calls.append(("remove",))

    monkeypatch.setattr(
        cgroups, "create_cgroup", lambda s: calls.append(("create", s.memory)) or FakeCgroup()
    )
    out = ok(capfd, sh(shared, "echo ok", memory=64 << 20))
    assert out == "ok\n"
    assert calls[0] == ("create", 64 << 20) and calls[1][0] == "add" and calls[2] == ("remove",)
    assert calls[1][2] != "busybox"  # not exec'd yet when added


# ---------------------------------------------------------------------------------------------
# Terminal


def _under_pty(s: ContainerSpec, send: bytes = b"", winsize=(33, 99)) -> tuple[int, bytes]:
    """Run the supervisor with a pseudo-terminal as its stdin/stdout (like a shell would)."""
    import fcntl
    import struct
    import termios

    pid, master = pty.fork()
    if pid == 0:
        try:
            os._exit(run(s))
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"runner: {e!r}\n".encode())
            os._exit(99)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *winsize, 0, 0))
    out = b""
    if send:
        time.sleep(0.3)
        os.write(master, send)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_tty(shared):
    code, out = _under_pty(sh(shared, "tty; stty size; ls -l /dev/console | cut -c1", tty=True))
    assert code == 0, out
    lines = out.decode().split()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]) and lines[1:3] == ["33", "99"] and lines[3] == "c"


def test_tty_window_size_follows_the_terminal(shared):
    import fcntl
    import struct
    import termios

    script = 'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.05; done'
    pid, master = pty.fork()
    if pid == 0:
        try:
            os._exit(run(sh(shared, script, tty=True)))
        except BaseException:  # noqa: BLE001
            os._exit(99)
    out = b""
    deadline = time.monotonic() + 10
    while b"ready" not in out and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            out += os.read(master, 4096)
    # resizing the supervisor's terminal sends it SIGWINCH; it resizes the container's
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 111, 0, 0))
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.close(master)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and b"44 111" in out, out


def test_tty_with_stdin(shared):
    code, out = _under_pty(sh(shared, "read x; echo got:$x; exit 4", tty=True, stdin=True), send=b"abc\r")
    assert code == 4 and b"got:abc" in out, out


# ---------------------------------------------------------------------------------------------
# Rootless


def _as_nobody(s: ContainerSpec, out_path: str) -> int:
    return as_nobody(lambda: run(s), out_path)


def test_rootless(capfd):
    base = Path(tempfile.mkdtemp(prefix="socker-rootless-"))  # pytest's tmp dirs are root-only
    try:
        base.chmod(0o755)
        rootfs = make_image(base / "rootfs")
        subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
        out_file = str(base / "out")
        script = ("id -u; id -g; echo hi > /tmp/owned; grep -E ' /(sys|dev|proc) ' /proc/mounts; hostname;"
                  "cat /proc/self/uid_map; ls /dev")  # fmt: skip
        s = sh(rootfs, script, hostname="rl", state_dir=str(base / "state"), network="host")
        code = _as_nobody(s, out_file)
        out = Path(out_file).read_text()
        assert code == 0, out
        lines = out.splitlines()
        assert lines[:2] == ["0", "0"] and "rl" in lines
        assert os.stat(f"{rootfs}/tmp/owned").st_uid == 65534
        assert re.search(r"^proc /proc proc", out, re.M) and re.search(r"^tmpfs /dev tmpfs", out, re.M)
        assert re.search(r" /sys \w+ ro,", out, re.M)  # the host's /sys, read-only (no network namespace)
        assert re.search(r"^\s*0\s+65534\s+1$", out, re.M)
        assert {"null", "zero", "urandom", "tty", "pts"} <= set(out.split())
        # ephemeral and network none, rootless
        before = snapshot(rootfs)
        s = sh(rootfs, "rm /etc/passwd; echo x > /tmp/y; cat /sys/class/net/lo/flags", ephemeral=True, network="none",
               state_dir=str(base / "state2"))  # fmt: skip
        code = _as_nobody(s, out_file)
        assert code == 0, Path(out_file).read_text()
        assert_same_tree(before, snapshot(rootfs))
        assert sorted(os.listdir(base / "state2")) == ["hostname", "hosts", "resolv.conf"]  # overlay removed
        # only root exists in a rootless container
        code = _as_nobody(sh(rootfs, "true", user="daemon", state_dir=str(base / "state3")), out_file)
        assert code == 99 and "rootless container maps only root" in Path(out_file).read_text()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


# ---------------------------------------------------------------------------------------------
# Background containers


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_start_in_the_background(shared, tmp_path):
    state_dir = tmp_path / "c1"
    s = sh(shared, "echo out; echo err >&2; read x || echo stdin-eof; sleep 0.3; exit 5", state_dir=str(state_dir),
           id="abc123", name="web", image="busybox:latest")  # fmt: skip
    pid = start(s, log_path=str(state_dir / "log"))
    state = json.loads((state_dir / "state.json").read_text())
    assert state["pid"] == pid and state["status"] == "running" and state["id"] == "abc123"
    assert state["name"] == "web" and state["image"] == "busybox:latest" and state["command"] == s.args
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", state["created"])
    nspid = re.search(r"^NSpid:\t(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M).group(1).split()
    assert nspid[-1] == "1"
    final = _wait_for(
        lambda: (st := json.loads((state_dir / "state.json").read_text()))["status"] == "exited" and st
    )
    assert (
        final["exit_code"] == 5
        and final["finished"] >= final["created"]
        and final["supervisor"] != os.getpid()
    )
    assert sorted((state_dir / "log").read_text().split()) == ["err", "out", "stdin-eof"]


def test_start_failure_raises_and_leaves_no_state(shared, tmp_path):
    with pytest.raises(ExecError, match="executable file not found") as e:
        start(spec(shared, "nosuch", state_dir=str(tmp_path / "c2")), log_path=str(tmp_path / "c2" / "log"))
    assert e.value.exit_code == 127
    assert not (tmp_path / "c2" / "state.json").exists()


def test_stopping_a_background_container(shared, tmp_path):
    state_dir = tmp_path / "c3"
    pid = start(sh(shared, 'trap "exit 9" TERM; sleep 30 & wait', state_dir=str(state_dir)),
                log_path=str(state_dir / "log"))  # fmt: skip
    time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    final = _wait_for(
        lambda: (st := json.loads((state_dir / "state.json").read_text()))["status"] == "exited" and st
    )
    assert final["exit_code"] == 9
