"""Background containers: find, ps, logs, stop, rm and exec (root).

Most tests use fake containers: a state directory whose "pid" is a process started by
``unshare --fork --pid --mount-proc --uts --ipc --mount`` (the inner process, PID 1 of its
own pid namespace), so that manage.py is tested apart from container.py.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from socker_lib.errors import SockerError
from socker_lib.runtime import cgroups, manage
from socker_lib.runtime.spec import ContainerSpec
from tests.conftest import needs_root, needs_tool
from tests.support.rootless import as_nobody


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def inner_pid(outer: int, timeout: float = 10) -> int:
    """The child of ``unshare --fork`` (PID 1 of the new pid namespace), as a host pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{outer}/task").glob("*"):
            kids = (task / "children").read_text().split()
            if kids:
                return int(kids[0])
        time.sleep(0.01)
    raise AssertionError(f"unshare {outer} started no child")


def wait_comm(pid: int, comm: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not become {comm}")


class Fakes:
    """Makes fake containers in ``home``; kills them at the end."""

    def __init__(self, home: Path, tmp: Path):
        self.home, self.tmp = home, tmp
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        script: str = "exec sleep 60",
        *,
        name: str | None = None,
        cid: str | None = None,
        env: dict | None = None,
        cwd: str | None = None,
        supervisor: int | None = None,
        ready: str = "sleep",
    ) -> dict:
        args = ["unshare", "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--mount"]
        args += ["sh", "-c", script]
        proc = subprocess.Popen(args, env=env, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        pid = inner_pid(proc.pid)
        wait_comm(pid, ready)
        return self.state(
            cid=cid,
            name=name,
            pid=pid,
            supervisor=supervisor if supervisor is not None else proc.pid,
            proc=proc,
        )

    def state(
        self, *, cid=None, name=None, pid=None, status="running", exit_code=None, supervisor=None, proc=None
    ):
        cid = cid or manage.new_id()
        d = manage.container_dir(self.home, cid)
        d.mkdir(parents=True)
        state = {
            "id": cid,
            "name": name,
            "image": "fake:latest",
            "command": ["sleep", "60"],
            "pid": pid,
            "supervisor": supervisor,
            "created": now_iso(),
            "status": status,
            "exit_code": exit_code,
            "finished": None if status == "running" else now_iso(),
        }
        (d / "state.json").write_text(json.dumps(state))
        state["dir"] = d
        state["proc"] = proc
        return state

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def fakes(tmp_path):
    needs_root()
    needs_tool("unshare")
    home = tmp_path / "home"
    home.mkdir()
    f = Fakes(home, tmp_path)
    yield f
    f.cleanup()


def read_state(c) -> dict:
    return json.loads((Path(c["dir"]) / "state.json").read_text())


def exec_out(home, target, args, **kw) -> tuple[int, str]:
    """exec_in with stdout captured through a pipe."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    os.close(w)
    try:
        code = manage.exec_in(home, target, args, **kw)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    return code, b"".join(chunks).decode()


# ---------------------------------------------------------------------------------------------


def test_new_id_and_container_dir(tmp_path):
    a, b = manage.new_id(), manage.new_id()
    assert len(a) == 64 and int(a, 16) >= 0 and a != b
    assert manage.container_dir(tmp_path, a) == tmp_path / "containers" / a


def test_find_by_id_prefix_and_name(fakes):
    web = fakes.start(name="web", cid="abc1" + "0" * 60)
    other = fakes.start(cid="abc2" + "0" * 60)
    home = fakes.home
    assert manage.find(home, web["id"])["id"] == web["id"]
    assert manage.find(home, "web")["id"] == web["id"]
    assert manage.find(home, "abc2")["id"] == other["id"]
    assert manage.find(home, "ABC1")["id"] == web["id"]  # ids are hex: any case
    with pytest.raises(SockerError, match="several containers"):
        manage.find(home, "abc")
    with pytest.raises(SockerError, match="no such container"):
        manage.find(home, "nope")
    with pytest.raises(SockerError, match="no container given"):
        manage.find(home, "")
    # a name wins over an id prefix
    named = fakes.start(name="abc2")
    assert manage.find(home, "abc2")["id"] == named["id"]


def test_list_running_and_all_and_pid_start(fakes):
    running = fakes.start(name="up")
    dead = subprocess.Popen(["true"])
    dead.wait()
    exited = fakes.state(name="down", pid=dead.pid, status="exited", exit_code=3)
    crashed = fakes.state(name="crashed", pid=dead.pid)  # says running, but its process is gone
    home = fakes.home

    ps = manage.list_containers(home)
    assert [c["id"] for c in ps] == [running["id"]]
    assert ps[0]["running"] is True and ps[0]["status"] == "running"
    # the start time is recorded the first time, and compared afterwards
    stat = Path(f"/proc/{running['pid']}/stat").read_text()
    start = int(stat[stat.rfind(")") + 2 :].split()[19])
    assert read_state(running)["pid_start"] == start

    everything = {c["id"]: c for c in manage.list_containers(home, all=True)}
    assert set(everything) == {running["id"], exited["id"], crashed["id"]}
    assert everything[exited["id"]]["exit_code"] == 3 and not everything[exited["id"]]["running"]
    assert everything[crashed["id"]]["status"] == "exited"

    # a reused pid (another start time) is not the container any more
    state = read_state(running)
    state["pid_start"] = start - 1
    (Path(running["dir"]) / "state.json").write_text(json.dumps(state))
    assert manage.list_containers(home) == []


def test_list_skips_directories_without_state(fakes):
    (fakes.home / "containers" / "halfmade").mkdir(parents=True)
    assert manage.list_containers(fakes.home, all=True) == []


def test_exec_enters_the_namespaces(fakes, tmp_path):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "FOO": "from-the-container"}
    c = fakes.start("hostname inner; exec sleep 60", name="box", env=env, cwd=str(workdir))
    home = fakes.home
    assert open("/proc/sys/kernel/hostname").read().strip() != "inner"

    assert exec_out(home, "box", ["hostname"]) == (0, "inner\n")
    code, out = exec_out(home, "box", ["sh", "-c", "echo $$; echo $FOO; pwd; ls /proc | grep -c '^[0-9]'"])
    pid, foo, pwd, nprocs = out.split("\n")[:4]
    assert code == 0
    assert 1 < int(pid) < 10  # a small pid: inside the container's pid namespace
    assert foo == "from-the-container"  # the container's environment
    assert pwd == str(workdir)  # and its working directory
    assert int(nprocs) <= 4  # sleep, sh, ls (and grep): only the container's processes
    for ns in ("uts", "ipc", "mnt", "pid"):
        assert os.readlink(f"/proc/{c['pid']}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")

    # explicit env, cwd, user
    code, out = exec_out(
        home,
        "box",
        ["sh", "-c", 'echo "[$FOO]" $BAR; pwd; id -u; id -g'],
        env=["BAR=x", "PATH=/usr/bin:/bin"],
        cwd="/tmp",
        user="nobody",
    )
    assert (code, out.split("\n")[:4]) == (0, ["[] x", "/tmp", "65534", "65534"])
    code, out = exec_out(home, "box", ["id", "-u"], user="1234:5678")
    assert (code, out) == (0, "1234\n")


def test_exec_exit_codes_and_errors(fakes):
    fakes.start(name="box")
    home = fakes.home
    assert exec_out(home, "box", ["sh", "-c", "exit 7"])[0] == 7
    assert exec_out(home, "box", ["sh", "-c", "kill -TERM $$"])[0] == 128 + signal.SIGTERM
    with pytest.raises(SockerError, match="not found") as e:
        manage.exec_in(home, "box", ["no-such-command"])
    assert e.value.exit_code == 127
    with pytest.raises(SockerError, match="unable to find user"):
        manage.exec_in(home, "box", ["true"], user="no-such-user")
    with pytest.raises(SockerError, match="/nonexistent"):
        manage.exec_in(home, "box", ["true"], cwd="/nonexistent")


def test_exec_gets_the_container_capabilities_and_no_new_privs(fakes):
    needs_tool("setpriv")
    caps = "-all,+chown,+kill,+setuid,+setgid,+sys_chroot,+setpcap"
    c = fakes.start(f"exec setpriv --bounding-set {caps} --no-new-privs sleep 60", name="box")
    status = manage._status(c["pid"])
    code, out = exec_out(
        fakes.home, "box", ["grep", "-E", "^(CapBnd|CapEff|NoNewPrivs)", "/proc/self/status"]
    )
    assert code == 0
    got = dict(line.split(":\t") for line in out.splitlines())
    assert got["CapBnd"] == status["CapBnd"] != open("/proc/self/status").read().split("CapBnd:\t")[1][:16]
    assert got["CapEff"] == status["CapBnd"]
    assert got["NoNewPrivs"] == "1"
    # a non-root user keeps no capability
    code, out = exec_out(fakes.home, "box", ["grep", "^CapEff", "/proc/self/status"], user="nobody")
    assert out == "CapEff:\t0000000000000000\n"


def test_exec_joins_the_container_cgroups(fakes):
    c = fakes.start(name="box")
    cg = cgroups.create_cgroup(ContainerSpec("/", ["x"], pids_limit=20, id="test-" + c["id"][:20]))
    try:
        cg.add(c["pid"])
        code, out = exec_out(fakes.home, "box", ["cat", "/proc/self/cgroup"])
        assert code == 0
        assert out == Path(f"/proc/{c['pid']}/cgroup").read_text()
        assert f"socker/{cg.name}" in out
    finally:
        cg.remove()


def test_exec_into_an_exited_container_is_refused(fakes):
    dead = subprocess.Popen(["true"])
    dead.wait()
    fakes.state(name="gone", pid=dead.pid, status="exited", exit_code=0)
    with pytest.raises(SockerError, match="not running"):
        manage.exec_in(fakes.home, "gone", ["true"])


def test_exec_with_a_tty(fakes):
    fakes.start(name="box")
    code, out = exec_out(fakes.home, "box", ["sh", "-c", "tty; test -t 0 && test -t 1 && echo yes"], tty=True)
    assert code == 0
    lines = out.replace("\r\n", "\n").split("\n")
    assert lines[0].startswith("/dev/pts/") and lines[1] == "yes"


# ---------------------------------------------------------------------------------------------
# logs, stop, rm


def test_logs(fakes):
    c = fakes.start(name="box")
    log = Path(c["dir"]) / "log"
    log.write_bytes(b"one\ntwo\n")
    out = io.BytesIO()
    manage.logs(fakes.home, "box", out=out)
    assert out.getvalue() == b"one\ntwo\n"


def test_logs_follow_returns_when_the_container_exits(fakes):
    c = fakes.start(name="box")
    log = Path(c["dir"]) / "log"
    log.write_bytes(b"start\n")

    def writer():
        with open(log, "ab", buffering=0) as f:
            for i in range(5):
                time.sleep(0.1)
                f.write(f"line {i}\n".encode())
        os.kill(c["pid"], signal.SIGKILL)

    out = io.BytesIO()
    t = threading.Thread(target=writer)
    t.start()
    began = time.monotonic()
    manage.logs(fakes.home, "box", follow=True, out=out)
    t.join()
    assert time.monotonic() - began < 10
    assert out.getvalue() == b"start\n" + b"".join(f"line {i}\n".encode() for i in range(5))


def test_stop_falls_back_to_sigkill(fakes):
    c = fakes.start(name="stubborn")  # sleep as PID 1 of a pid namespace: SIGTERM is ignored
    began = time.monotonic()
    assert manage.stop(fakes.home, "stubborn", timeout=1) is None  # no supervisor recorded a code
    took = time.monotonic() - began
    assert 0.9 < took < 5
    assert not Path(f"/proc/{c['pid']}").exists() or manage._proc_start(c["pid"])[1] == "Z"
    c["proc"].wait(timeout=5)
    state = read_state(c)
    assert state["status"] == "exited"
    assert manage.list_containers(fakes.home) == []


def test_stop_returns_the_exit_code_the_supervisor_records(fakes):
    # the test plays the supervisor: it writes the exit code once unshare reports it
    c = fakes.start(
        "trap 'exit 3' TERM; while :; do sleep 0.05; done", name="polite", supervisor=os.getpid(), ready="sh"
    )

    def supervise():
        code = c["proc"].wait()
        state = read_state(c)
        state.update(status="exited", exit_code=code, finished=now_iso())
        (Path(c["dir"]) / "state.json").write_text(json.dumps(state))

    t = threading.Thread(target=supervise)
    t.start()
    began = time.monotonic()
    assert manage.stop(fakes.home, "polite", timeout=10) == 3
    assert time.monotonic() - began < 5
    t.join()
    assert manage.stop(fakes.home, "polite") == 3  # stopping an exited container: its code


def test_remove(fakes):
    c = fakes.start(name="box")
    with pytest.raises(SockerError, match="is running"):
        manage.remove(fakes.home, "box")
    assert Path(c["dir"]).exists()
    manage.remove(fakes.home, "box", force=True)
    assert not Path(c["dir"]).exists()
    assert c["proc"].wait(timeout=5) != 0

    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = fakes.state(name="gone", pid=dead.pid, status="exited", exit_code=0)
    (Path(gone["dir"]) / "log").write_text("x")
    manage.remove(fakes.home, gone["id"][:12])
    assert not Path(gone["dir"]).exists()
    with pytest.raises(SockerError, match="no such container"):
        manage.remove(fakes.home, "gone")


def test_remove_refuses_a_directory_with_a_mount_inside(fakes):
    dead = subprocess.Popen(["true"])
    dead.wait()
    c = fakes.state(name="gone", pid=dead.pid, status="exited", exit_code=0)
    mnt = Path(c["dir"]) / "rootfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "precious").write_text("keep")
        with pytest.raises(SockerError, match="still mounted"):
            manage.remove(fakes.home, "gone")
        assert (mnt / "precious").read_text() == "keep"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    manage.remove(fakes.home, "gone")
    assert not Path(c["dir"]).exists()


SECCOMP_NO_MKDIR = r"""
import ctypes, os, platform, struct
# deny mkdir and mkdirat with EPERM, allow the rest (x86_64 numbers)
prog = [(0x20, 0, 0, 4), (0x15, 0, 4, 0xC000003E), (0x20, 0, 0, 0), (0x15, 1, 0, 83),
        (0x15, 0, 1, 258), (0x06, 0, 0, 0x00050001), (0x06, 0, 0, 0x7FFF0000)]
raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(raw, len(raw))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(22, ctypes.c_ulong(2), ctypes.c_ulong(ctypes.addressof(fprog)), 0, 0) == 0, os.strerror(ctypes.get_errno())
os.execvp("sleep", ["sleep", "60"])
"""


def test_exec_copies_the_container_seccomp_filter(fakes, tmp_path):
    if os.uname().machine != "x86_64":
        pytest.skip("the test filter uses x86_64 system call numbers")
    import shlex
    import sys

    c = fakes.start(f"exec {shlex.quote(sys.executable)} -c {shlex.quote(SECCOMP_NO_MKDIR)}", name="filtered")
    assert manage._status(c["pid"])["Seccomp"] == "2"
    target = tmp_path / "made-by-exec"
    code, out = exec_out(
        fakes.home, "filtered", ["sh", "-c", f"grep ^Seccomp /proc/self/status; mkdir {target}"]
    )
    assert code != 0 and not target.exists()
    assert "Seccomp:\t2" in out and "Seccomp_filters:\t1" in out
    # the process itself is fine after being looked at
    assert manage.find(fakes.home, "filtered")["running"]
    assert exec_out(fakes.home, "filtered", ["true"])[0] == 0


# ---------------------------------------------------------------------------------------------
# End to end, with container.start


def test_end_to_end_with_a_real_background_container(tmp_path):
    needs_root()
    from socker_lib.layers import apply_layers
    from socker_lib.runtime import container
    from tests.support import oci

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    apply_layers(rootfs, [io.BytesIO(oci.tar_bytes(oci.busybox_entries()))])
    home = tmp_path / "home"
    cid = manage.new_id()
    d = manage.container_dir(home, cid)
    d.mkdir(parents=True)
    script = "echo hello; trap 'echo bye; exit 4' TERM; while :; do sleep 0.1; done"
    spec = ContainerSpec(
        rootfs=str(rootfs),
        args=["sh", "-c", script],
        env=["PATH=/bin", "GREETING=hi"],
        cwd="/tmp",
        hostname="e2e-box",
        id=cid,
        name="e2e",
        image="busybox:test",
        state_dir=str(d),
        pids_limit=40,
    )
    pid = container.start(spec, log_path=str(d / "log"))
    try:
        ps = manage.list_containers(home)
        assert [(c["id"], c["name"], c["pid"]) for c in ps] == [(cid, "e2e", pid)]
        assert manage.find(home, cid[:5])["name"] == "e2e"

        code, out = exec_out(
            home,
            "e2e",
            [
                "sh",
                "-c",
                "hostname; echo $$ $GREETING; pwd; id -u; cat /proc/self/cgroup; echo; cat /proc/1/cgroup",
            ],
        )
        assert code == 0, out
        hostname, pid_and_env, pwd, uid, *cgroup_lines = out.splitlines()
        mine, theirs = cgroup_lines[: cgroup_lines.index("")], cgroup_lines[cgroup_lines.index("") + 1 :]
        assert hostname == "e2e-box"
        ns_pid, greeting = pid_and_env.split()
        assert 1 < int(ns_pid) < 20 and greeting == "hi"
        assert (pwd, uid) == ("/tmp", "0")
        assert mine == theirs  # the same groups as the container's PID 1
        assert f"/socker/{cid}" in Path(f"/proc/{pid}/cgroup").read_text()  # which are its own
        assert exec_out(home, "e2e", ["ls", "/bin/busybox"]) == (0, "/bin/busybox\n")  # the image's root
        code, out = exec_out(home, "e2e", ["id"], user="nobody")
        assert code == 0 and out.startswith("uid=65534")
        code, out = exec_out(home, "e2e", ["grep", "-E", "^(CapBnd|NoNewPrivs)", "/proc/self/status"])
        assert out == "".join(
            f"{k}:\t{v}\n" for k, v in manage._status(pid).items() if k in ("CapBnd", "NoNewPrivs")
        )

        deadline = time.monotonic() + 10
        while b"hello" not in (d / "log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = io.BytesIO()
        manage.logs(home, "e2e", out=out)
        assert out.getvalue() == b"hello\n"

        follow = io.BytesIO()
        t = threading.Thread(target=manage.logs, args=(home, "e2e"), kwargs={"follow": True, "out": follow})
        t.start()
        assert manage.stop(home, "e2e", timeout=10) == 4
        t.join(timeout=10)
        assert not t.is_alive() and follow.getvalue() == b"hello\nbye\n"
        state = manage.find(home, "e2e")
        assert state["status"] == "exited" and state["exit_code"] == 4 and not state["running"]
        assert manage.list_containers(home) == []
        with pytest.raises(SockerError, match="not running"):
            manage.exec_in(home, "e2e", ["true"])
        manage.remove(home, "e2e")
        assert not d.exists()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------------
# Rootless: a container started by an unprivileged user, exec'd into by the same user


def test_exec_into_a_rootless_container(tmp_path):
    needs_root()
    import shutil
    import tempfile

    from socker_lib.layers import apply_layers
    from socker_lib.runtime import container
    from tests.support import oci

    base = Path(tempfile.mkdtemp(prefix="socker-rootless-exec-"))  # pytest's tmp dirs are root-only
    pid = None
    try:
        base.chmod(0o755)
        rootfs = base / "rootfs"
        rootfs.mkdir()
        entries = oci.busybox_entries() + [
            oci.dir("proc", mode=0o555),
            oci.dir("dev"),
            oci.dir("sys", mode=0o555),
            oci.file("etc/marker", "from the image\n"),
        ]
        apply_layers(rootfs, [io.BytesIO(oci.tar_bytes(entries))])
        home = base / "home"
        cid = manage.new_id()
        d = manage.container_dir(home, cid)
        d.mkdir(parents=True)
        subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
        spec = ContainerSpec(
            rootfs=str(rootfs),
            args=["sh", "-c", "echo made > /tmp/made-by-pid1; exec sleep 60"],
            env=["PATH=/bin"],
            hostname="rootless-box",
            id=cid,
            name="rl",
            image="busybox:test",
            state_dir=str(d),
            network="none",
        )
        out = base / "out"

        def start():
            os.write(1, f"{container.start(spec, log_path=str(d / 'log'))}\n".encode())
            return 0

        assert as_nobody(start, str(out)) == 0, out.read_text()
        pid = int(out.read_text().split()[-1])
        assert os.stat(f"/proc/{pid}").st_uid == 65534  # rootless: the host sees nobody
        wait_comm(pid, "sleep")
        script = "id -u; hostname; cat /etc/marker /tmp/made-by-pid1; grep ^Seccomp /proc/self/status"

        def run_exec():
            return manage.exec_in(home, "rl", ["sh", "-c", script])

        code = as_nobody(run_exec, str(out))
        text = out.read_text()
        assert code == 0, text
        assert text.splitlines()[:4] == ["0", "rootless-box", "from the image", "made"], text
        assert "Seccomp:\t2" in text and "Seccomp_filters:\t1" in text, text
        # run as root, the container's filter itself is copied (the same filter: one of them)
        code, text = exec_out(home, "rl", ["sh", "-c", "id -u; grep ^Seccomp_filters /proc/self/status"])
        assert (code, text) == (0, "0\nSeccomp_filters:\t1\n")

        def missing():
            try:
                return manage.exec_in(home, "rl", ["no-such-command"])
            except SockerError as e:
                os.write(2, f"{e.message}\n".encode())
                return e.exit_code

        assert as_nobody(missing, str(out)) == 127, out.read_text()
        # filters that are not socker's default one cannot be stood in for
        with pytest.raises(SockerError, match="seccomp"):
            manage._default_seccomp_instead(2, 0, "box")
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)
