"""Containers in the background: ids, ``ps``, ``logs``, ``stop``, ``rm`` and ``exec``.

Each container has a directory ``$SOCKER_HOME/containers/<id>/`` (``spec.state_dir``) with
``state.json``, written by ``container.start``::

    {"id", "name", "image", "command", "pid" (host pid of the container's PID 1),
     "supervisor", "created", "status": "running"|"exited", "exit_code", "finished"}

and ``log`` (the container's stdout and stderr). A pid alone does not say that the container
still runs (pids are reused), so the start time of the process (``/proc/<pid>/stat`` field
22, in clock ticks since boot) is kept as ``pid_start`` and compared each time (recorded
here the first time a running container is looked at, when state.json lacks it).

``find``/``list_containers`` return state.json plus ``"running"`` (bool) and ``"dir"``; a
container whose process is gone without a recorded exit shows ``"status": "exited"``.
``stop`` returns the exit code the supervisor records, or None when none is known.

``exec_in`` enters a running container the way ``nsenter`` does, with ctypes ``setns``:
the helper forked first joins the container's cgroups, enters its namespaces (the user
namespace first, only when it differs from ours) and its root, then forks again so that the
command is inside the pid namespace; the command gets the container's environment, user,
working directory, capability bounding set and no_new_privs, and the seccomp filters it
has beyond ours (read with ``PTRACE_SECCOMP_GET_FILTER``, which needs root).

Rootless (a container started by an unprivileged user, exec'd into by the same user): joining
its user namespace first gives the helper every capability in it, so the other ``setns``
calls, ``chroot`` and the switch to its uid 0 (the mapped user) succeed; ``setgroups`` is
denied in such a namespace and skipped. The filter cannot be read without ``CAP_SYS_ADMIN``
in the initial namespace (EPERM/EACCES), so socker's default filter is installed instead,
built for the container's capability set: the container was started by socker, so that is
its filter (``_default_seccomp_instead``). The container's cgroups are joined when possible;
groups socker did not make are skipped silently (a rootless container normally has none),
failing to join its own socker group is an error. Errors before the
command runs are ``SockerError`` with ``exit_code`` 127 (not found), 126 (not executable)
or 125. With ``tty`` the command gets a new pseudo-terminal relayed to ours. Standard
library only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

from ..errors import SockerError
from . import linux

STATE = "state.json"
LOG = "log"
NAMESPACES = ("user", "ipc", "uts", "net", "pid", "mnt", "cgroup")  # the order they are entered in
CLONE_FLAGS = {
    "user": linux.CLONE_NEWUSER,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "net": linux.CLONE_NEWNET,
    "pid": linux.CLONE_NEWPID,
    "mnt": linux.CLONE_NEWNS,
    "cgroup": linux.CLONE_NEWCGROUP,
}
POLL = 0.1  # seconds between checks while following logs or waiting without a pidfd


def new_id() -> str:
    """A container id: 64 hex digits (shown shortened to 12, as Docker does)."""
    return os.urandom(32).hex()


def container_dir(home, id: str) -> Path:  # noqa: A002 - the brief's name
    return Path(home) / "containers" / id


# ---------------------------------------------------------------------------------------------
# State


def _read_state(d: Path) -> dict | None:
    try:
        with open(d / STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    state.setdefault("id", d.name)
    return state


def _write_state(d: Path, state: dict) -> None:
    tmp = d / f".{STATE}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, d / STATE)


def _update_state(d: Path, **changes) -> dict | None:
    """Re-read state.json, apply ``changes`` and write it back (never over a newer "exited")."""
    state = _read_state(d)
    if state is None:
        return None
    if state.get("status") == "exited" and changes.get("status") != "exited":
        return state
    state.update(changes)
    try:
        _write_state(d, state)
    except OSError:
        pass
    return state


def _proc_start(pid) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of a live process, None if gone."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            text = f.read()
    except (OSError, ValueError, TypeError):
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


def _epoch(created) -> float | None:
    import datetime  # not on socker run's start-up path

    if isinstance(created, (int, float)):
        return float(created)
    if isinstance(created, str):
        try:
            return float(created)
        except ValueError:
            pass
        try:
            dt = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.astimezone()
        return dt.timestamp()
    return None


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _plausible(state: dict, start_ticks: int) -> bool:
    """Without a recorded start time: did this process start around the container's creation?"""
    created, boot = _epoch(state.get("created")), _boot_time()
    if created is None or boot is None:
        return True
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    return created - 60 <= started <= created + 60


def _running(d: Path, state: dict) -> bool:
    """Is the state's pid still the container's process? Records ``pid_start`` when missing."""
    if state.get("status") == "exited" or not state.get("pid"):
        return False
    found = _proc_start(state["pid"])
    if found is None or found[1] in "ZX":
        return False
    start, _ = found
    if state.get("pid_start") is not None:
        return int(state["pid_start"]) == start
    if not _plausible(state, start):
        return False
    updated = _update_state(d, pid_start=start)
    if updated is not None and updated.get("status") == "exited":
        state.update(updated)
        return False
    state["pid_start"] = start
    return True


def _load(d: Path) -> dict | None:
    state = _read_state(d)
    if state is None:
        return None
    running = _running(d, state)
    state["running"] = running
    if not running and state.get("status") == "running":
        state["status"] = "exited"  # died without its supervisor recording it
    state["dir"] = str(d)
    return state


def _all(home) -> list[dict]:
    root = Path(home) / "containers"
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    states = [s for s in (_load(d) for d in dirs) if s is not None]
    states.sort(key=lambda s: _epoch(s.get("created")) or 0.0, reverse=True)
    return states


def find(home, id_or_name: str) -> dict:
    """The container with this id, name or unique id prefix (in that order, as Docker)."""
    key = (id_or_name or "").strip()
    if not key:
        raise SockerError("no container given", "give a container id (or a prefix of it) or name")
    states = _all(home)
    for match in (
        [s for s in states if s["id"] == key],
        [s for s in states if s.get("name") == key],
        [s for s in states if s["id"].startswith(key.lower())],
    ):
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            ids = ", ".join(s["id"][:12] for s in match)
            raise SockerError(
                f"{key!r} matches several containers: {ids}", "give more characters of the id, or the name"
            )
    raise SockerError(f"no such container: {key}", "list them with: socker ps --all")


def list_containers(home, all: bool = False) -> list[dict]:  # noqa: A002 - the brief's name
    """The running containers (or all), newest first: state.json plus "running" and "dir"."""
    states = _all(home)
    return states if all else [s for s in states if s["running"]]


# ---------------------------------------------------------------------------------------------
# logs, stop, rm


def logs(home, id_or_name: str, follow: bool = False, out=None) -> None:
    """Copy the container's log to ``out``; with ``follow``, keep copying until it exits."""
    out = out if out is not None else sys.stdout.buffer
    state = find(home, id_or_name)
    d = Path(state["dir"])
    try:
        f = open(d / LOG, "rb")
    except FileNotFoundError:
        if not follow:
            return
        f = None
    try:
        while True:
            if f is None:
                try:
                    f = open(d / LOG, "rb")
                except FileNotFoundError:
                    pass
            got = _copy(f, out) if f is not None else 0
            if not follow:
                return
            if got:
                continue
            current = _read_state(d)
            if current is None or not _running(d, current):
                if f is None:
                    try:
                        f = open(d / LOG, "rb")
                    except FileNotFoundError:
                        return
                _copy(f, out)  # what was written before it ended
                return
            time.sleep(POLL)
    finally:
        if f is not None:
            f.close()


def _copy(f, out) -> int:
    total = 0
    while True:
        chunk = f.read(65536)
        if not chunk:
            break
        out.write(chunk)
        total += len(chunk)
    if total:
        out.flush()
    return total


def _wait_gone(pid: int, start: int, timeout: float, pidfd: int | None) -> bool:
    """Wait until the process (pid with this start time) has exited; False on timeout."""
    deadline = time.monotonic() + max(timeout, 0)
    while True:
        found = _proc_start(pid)
        if found is None or found[0] != start or found[1] in "ZX":
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if pidfd is not None:
            import select

            select.select([pidfd], [], [], min(left, 1.0))
        else:
            time.sleep(min(left, POLL))


def _pidfd(pid: int, start: int) -> int | None:
    """A pidfd for the process, only if it is still the one that started at ``start``."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    found = _proc_start(pid)
    if found is None or found[0] != start:
        os.close(fd)
        return None
    return fd


def _signal(pid: int, pidfd: int | None, sig: int) -> None:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _exit_code(d: Path, state: dict, wait: float = 3.0) -> int | None:
    """The exit code the supervisor records, waiting for it a little while it still runs."""
    supervisor = state.get("supervisor")
    sup_start = _proc_start(supervisor) if supervisor else None
    deadline = time.monotonic() + wait
    while True:
        current = _read_state(d) or {}
        if current.get("status") == "exited":
            return current.get("exit_code")
        now = _proc_start(supervisor) if supervisor else None
        alive = sup_start is not None and now is not None and now[0] == sup_start[0] and now[1] not in "ZX"
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if current and current.get("status") == "running":
        import datetime

        finished = datetime.datetime.now(datetime.timezone.utc).isoformat()
        _update_state(d, status="exited", exit_code=None, finished=finished)
    return None


def stop(home, id_or_name: str, timeout: float = 10) -> int | None:
    """SIGTERM to the container's PID 1, SIGKILL after ``timeout`` seconds; its exit code when
    known (recorded by the supervisor), else None."""
    state = find(home, id_or_name)
    d = Path(state["dir"])
    if not state["running"]:
        return state.get("exit_code")
    pid, start = int(state["pid"]), int(state["pid_start"])
    pidfd = _pidfd(pid, start)  # None when pidfds are not supported, or it is gone
    found = _proc_start(pid)
    if pidfd is None and (found is None or found[0] != start):
        return _exit_code(d, state)  # gone already (its pid may be someone else's now)
    try:
        _signal(pid, pidfd, signal.SIGTERM)
        if not _wait_gone(pid, start, timeout, pidfd):
            _signal(pid, pidfd, signal.SIGKILL)
            if not _wait_gone(pid, start, 10, pidfd):
                raise SockerError(
                    f"container {state['id'][:12]} (pid {pid}) did not die from SIGKILL",
                    f"it may be stuck in the kernel (D state, e.g. on a hung mount); see /proc/{pid}/stack",
                )
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return _exit_code(d, state)


def _mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mp = fields[4].replace("\\040", " ")
                if mp.startswith(prefix):
                    found.append(mp)
    except OSError:
        pass
    return found


def remove(home, id_or_name: str, force: bool = False) -> None:
    """Delete an exited container's directory; ``force`` kills a running one first."""
    state = find(home, id_or_name)
    d = Path(state["dir"])
    if state["running"]:
        if not force:
            raise SockerError(
                f"container {state['id'][:12]} is running",
                f"stop it first (socker stop {state.get('name') or state['id'][:12]}) or force the removal",
            )
        stop(home, state["id"], timeout=0)
    mounted = _mounts_under(str(d))
    if mounted:
        raise SockerError(
            f"cannot remove container {state['id'][:12]}: {mounted[0]} is still mounted",
            f"unmount it first: umount {mounted[0]}",
        )
    from ..store import remove_tree

    try:
        remove_tree(d)
    except OSError as e:
        raise SockerError(f"cannot remove {d}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------
# exec


def _status(pid) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _same_ns(pid: int, ns: str) -> bool:
    try:
        a, b = os.stat(f"/proc/{pid}/ns/{ns}"), os.stat(f"/proc/self/ns/{ns}")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _Fail(Exception):
    """A setup failure inside the exec helpers: (exit code, message) for the caller."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def exec_in(
    home,
    id_or_name: str,
    args: list[str],
    *,
    env: list[str] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    tty: bool = False,
    stdin: bool = False,
) -> int:
    """Run ``args`` inside a running container; its exit code (128+N when killed by signal N)."""
    if not args:
        raise SockerError("no command given to exec", "e.g. socker exec CONTAINER sh")
    # imported here, before the helpers chroot into the container (where they could not be)
    from . import cgroups, container, seccomp  # noqa: F401

    state = find(home, id_or_name)
    if not state["running"]:
        raise SockerError(
            f"container {state['id'][:12]} is not running", "start a new one with socker run -d"
        )
    pid, start = int(state["pid"]), int(state["pid_start"])
    return _exec_pid(
        pid, start, args, env=env, cwd=cwd, user=user, tty=tty, stdin=stdin, label=state["id"][:12]
    )


def _exec_pid(pid, start, args, *, env, cwd, user, tty, stdin, label) -> int:
    fds: list[int] = []
    try:
        try:
            ns_fds = []
            for ns in NAMESPACES:
                if not _same_ns(pid, ns):
                    fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                    fds.append(fd)
                    ns_fds.append((ns, fd))
            root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(root_fd)
            cwd_fd = None
            if cwd is None:
                cwd_fd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fds.append(cwd_fd)
            if env is None:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = [e.decode(errors="surrogateescape") for e in f.read().split(b"\0") if e]
            status = _status(pid)
        except PermissionError:
            raise SockerError(
                f"cannot enter container {label}: permission denied",
                "exec needs the same privileges as the container (run as root, or as its rootless owner)",
            ) from None
        except OSError as e:
            raise SockerError(
                f"cannot enter container {label}: {e.strerror or e}", "is it still running?"
            ) from None
        found = _proc_start(pid)
        if found is None or found[0] != start:
            raise SockerError(f"container {label} has just exited")
        caps = {
            "bnd": int(status.get("CapBnd", "0"), 16),
            "inh": int(status.get("CapInh", "0"), 16),
            "nnp": status.get("NoNewPrivs", "0").strip() == "1",
        }
        # seccomp filters the container has beyond ours (ours the command inherits anyway)
        extra = int(status.get("Seccomp_filters", "0") or 0) - int(
            _status("self").get("Seccomp_filters", "0") or 0
        )
        caps["seccomp"] = _seccomp_filters(pid, extra, label) if extra > 0 else []
        caps["default_seccomp"] = False
        if caps["seccomp"] is None:  # not readable without CAP_SYS_ADMIN: rootless exec
            caps["seccomp"] = []
            caps["default_seccomp"] = _default_seccomp_instead(extra, caps["bnd"], label)
        return _spawn(pid, ns_fds, root_fd, cwd_fd, args, env, cwd, user, tty, stdin, caps)
    finally:
        for fd in fds:
            os.close(fd)


def _spawn(pid, ns_fds, root_fd, cwd_fd, args, env, cwd, user, tty, stdin, caps) -> int:
    err_r, err_w = os.pipe()  # setup errors travel back here; closed on exec (O_CLOEXEC)
    master = slave = None
    if tty:
        master, slave = os.openpty()
    stdin_fd = None if stdin or tty else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the child
        code = 125
        try:
            os.close(err_r)
            if master is not None:
                os.close(master)
            code = _helper(pid, ns_fds, root_fd, cwd_fd, args, env, cwd, user, slave, stdin_fd, caps, err_w)
        except _Fail as e:
            _report(err_w, e.code, str(e))
            code = e.code
        except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
            _report(err_w, 125, f"{type(e).__name__}: {e}")
        finally:
            os._exit(code)
    os.close(err_w)
    if slave is not None:
        os.close(slave)
    if stdin_fd is not None:
        os.close(stdin_fd)
    forward = _forward_signals(helper, tty)
    try:
        report = b""
        while True:
            chunk = os.read(err_r, 4096)
            if not chunk:
                break
            report += chunk
        os.close(err_r)
        if report:
            _, status = os.waitpid(helper, 0)
            code_s, _, message = report.decode(errors="replace").partition("\t")
            e = SockerError(message.strip() or "exec failed")
            e.exit_code = int(code_s) if code_s.isdigit() else 125
            raise e
        if master is not None:
            _relay(master, stdin, helper)
        _, status = os.waitpid(helper, 0)
    finally:
        forward()
        if master is not None:
            os.close(master)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _report(fd: int, code: int, message: str) -> None:
    try:
        os.write(fd, f"{code}\t{message}".encode(errors="replace"))
    except OSError:
        pass


def _helper(pid, ns_fds, root_fd, cwd_fd, args, env, cwd, user, slave, stdin_fd, caps, err_w) -> int:
    """First child: join cgroups and namespaces, fork the command, wait for it."""
    from . import cgroups  # already loaded by exec_in

    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    # cgroups first, through the host's /sys/fs/cgroup. Rootless, writing to groups we do not
    # own fails: join_like skips that for groups socker did not make (a rootless container
    # normally has none and shares its starter's) and fails for the container's own socker
    # group, where its limits are (the command must not escape them)
    try:
        cgroups.join_like(os.getpid(), pid)
    except SockerError as e:
        hint = f" ({e.hint})" if e.hint and os.geteuid() != 0 else ""
        raise _Fail(125, f"cannot join the container's cgroups: {e.message}{hint}") from None
    # the container process's ids as its user namespace sees them: read through the host's
    # /proc (before entering the mount namespace) and after entering the user namespace
    ids = None
    for ns, fd in ns_fds:
        if ns == "mnt" and ids is None:
            ids = _container_ids(_status(pid))
        try:
            linux.setns(fd, CLONE_FLAGS[ns])
        except OSError as e:
            raise _Fail(125, f"cannot enter the container's {ns} namespace: {e.strerror}") from None
        if ns == "user":
            ids = _container_ids(_status(pid))
            caps["setgroups"] = _setgroups_allowed()
    if ids is None:
        ids = _container_ids(_status(pid))
    try:
        os.fchdir(root_fd)
        os.chroot(".")
    except OSError as e:
        raise _Fail(125, f"cannot enter the container's root: {e.strerror}") from None
    child = os.fork()
    if child == 0:
        code = 125
        try:
            code = _command(args, env, cwd, cwd_fd, user, ids, slave, stdin_fd, caps)
        except _Fail as e:
            _report(err_w, e.code, str(e))
            code = e.code
        except BaseException as e:  # noqa: BLE001
            _report(err_w, 125, f"{type(e).__name__}: {e}")
        finally:
            os._exit(code)
    for fd in (err_w, slave, stdin_fd):
        if fd is not None:
            os.close(fd)  # the command has them; the pty must close when the command is gone

    def forward(sig, _frame):
        try:
            os.kill(child, sig)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    _, status = os.waitpid(child, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _command(args, env, cwd, cwd_fd, user, ids, slave, stdin_fd, caps) -> int:
    """Second child, inside the pid namespace: credentials, capabilities, then exec."""
    from . import container  # already loaded by exec_in: nothing is read from the container

    env = list(env)
    if slave is not None:
        os.setsid()
        fcntl.ioctl(slave, linux.TIOCSCTTY, 0)
        for n in (0, 1, 2):
            os.dup2(slave, n)
        os.close(slave)
    elif stdin_fd is not None:
        os.dup2(stdin_fd, 0)
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError as e:
            raise _Fail(125, f"cannot change to directory {cwd} in the container: {e.strerror}") from None
    elif cwd_fd is not None:
        os.fchdir(cwd_fd)
    if user is not None:
        try:
            uid, gid, groups, home = container.resolve_user(user)  # the container's /etc/passwd
        except SockerError as e:
            raise _Fail(125, e.message) from None
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={home}")
    else:
        uid, gid, groups = ids  # the same as the container's process
    try:
        if not caps["nnp"]:
            # needs CAP_SYS_ADMIN (in our user namespace) without no_new_privs: now
            _install_seccomp(caps["seccomp"], caps["default_seccomp"], caps["bnd"])
        if caps.get("setgroups", True):
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        for cap in range(linux.last_cap() + 1):
            if not caps["bnd"] >> cap & 1:
                try:
                    linux.prctl(linux.PR_CAPBSET_DROP, cap)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
        try:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError:
            pass
        if uid == 0:
            # uid 0 as the container's user namespace sees it: root joining a rootless
            # container's namespace is unmapped there until it switches to the mapped user
            # (which keeps its capabilities in the namespace)
            os.setresuid(0, 0, 0)
            linux.capset(caps["bnd"], caps["bnd"], caps["inh"] & caps["bnd"])
        else:
            os.setresuid(uid, uid, uid)  # without keepcaps this clears every capability
        if caps["nnp"]:
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            _install_seccomp(caps["seccomp"], caps["default_seccomp"], caps["bnd"])  # as late as possible
    except OSError as e:
        raise _Fail(125, f"cannot switch to the container's user and capabilities: {e.strerror}") from None
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    envmap = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    try:
        path = container.lookup_executable(args[0], envmap.get("PATH"))
    except SockerError as e:  # ExecError: 127 not found, 126 not executable
        raise _Fail(getattr(e, "exit_code", 127), e.message) from None
    try:
        os.execve(path, args, envmap)
    except OSError as e:
        raise _Fail(126 if e.errno != errno.ENOENT else 127, f"cannot run {args[0]}: {e.strerror}") from None
    return 125


PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
__WALL = 0x40000000


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp_filters(pid: int, count: int, label: str) -> list[bytes] | None:
    """The newest ``count`` seccomp filters of ``pid`` (classic BPF programs), oldest first;
    None when we may not read them (EPERM/EACCES: no ``CAP_SYS_ADMIN`` in the initial user
    namespace, as for a rootless exec, or no ptrace permission).

    Read with ``PTRACE_SECCOMP_GET_FILTER``: the process is seized and interrupted for the
    moment it takes (as CRIU does), then let go."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def fail(what: str) -> SockerError:
        e = ctypes.get_errno()
        return SockerError(
            f"cannot copy the seccomp filter of container {label} ({what}: {os.strerror(e)})",
            "exec copies the container's seccomp filter with ptrace, which needs root (CAP_SYS_ADMIN) "
            "and ptrace permission (kernel.yama.ptrace_scope < 3)",
        )

    if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
        if ctypes.get_errno() in (errno.EPERM, errno.EACCES):
            return None
        raise fail("PTRACE_SEIZE")
    programs = []
    try:
        if libc.ptrace(PTRACE_INTERRUPT, pid, None, None) != 0:
            raise fail("PTRACE_INTERRUPT")
        os.waitpid(pid, __WALL)
        for index in range(count):
            n = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, None)
            if n < 0:
                if ctypes.get_errno() in (errno.EPERM, errno.EACCES):
                    return None
                raise fail("PTRACE_SECCOMP_GET_FILTER")
            buf = ctypes.create_string_buffer(n * 8)  # struct sock_filter: 8 bytes
            if libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, buf) != n:
                raise fail("PTRACE_SECCOMP_GET_FILTER")
            programs.append(buf.raw)
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    return programs[::-1]


def _default_seccomp_instead(extra: int, bnd: int, label: str) -> bool:
    """When the container's filter cannot be read: can socker's default filter stand in for it?

    A container socker started (not privileged) has exactly one filter beyond its starter's:
    ``seccomp.install_default_filter(caps)`` with its capability set, which is also its
    bounding set (``container`` drops every other capability from it). So the same filter,
    built again from the container's CapBnd, is the one the container has. Anything else (more
    filters than that, or an architecture socker has no filter for) cannot be reproduced, and
    exec refuses rather than run the command less confined than the container."""
    from . import seccomp

    if extra == 1 and seccomp.default_program(bnd) is not None:
        return True
    raise SockerError(
        f"cannot copy the seccomp filters of container {label}: reading them needs CAP_SYS_ADMIN, "
        f"and they are not socker's default filter ({extra} filter(s) beyond ours)",
        "run socker exec as root",
    )


def _install_seccomp(programs: list[bytes], default: bool = False, caps: int = 0) -> None:
    """Install the container's filters (oldest first), or socker's default filter (``default``,
    built for the capability set ``caps``) when they could not be read."""
    if default:
        from . import seccomp  # already loaded by exec_in

        if not seccomp.install_default_filter(caps):
            raise OSError(errno.ENOSYS, "no default seccomp filter for this architecture")
    for program in programs:
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def _setgroups_allowed() -> bool:
    """May setgroups() be called in our (just joined) user namespace? A rootless container's
    namespace, which maps a single user, denies it to every process in it, the container's
    own included: the command then keeps the supplementary groups it has, as the container
    kept its starter's. Read before entering the mount namespace (the host's /proc)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _container_ids(status: dict) -> tuple[int, int, list[int]]:
    """The effective uid and gid and the groups in /proc/<pid>/status."""
    uid = int(status["Uid"].split()[1])
    gid = int(status["Gid"].split()[1])
    groups = [int(g) for g in status.get("Groups", "").split()]
    return uid, gid, groups


def _forward_signals(helper: int, tty: bool):
    """In the caller: pass SIGTERM/SIGHUP on to the helper (which passes them on to the
    command); without a tty ignore SIGINT/SIGQUIT, which the terminal sends the command
    itself. Returns the undo."""
    old = {}

    def forward(sig, _frame):
        try:
            os.kill(helper, sig)
        except OSError:
            pass

    wanted = [(signal.SIGTERM, forward), (signal.SIGHUP, forward)]
    if not tty:
        wanted += [(signal.SIGINT, signal.SIG_IGN), (signal.SIGQUIT, signal.SIG_IGN)]
    for sig, handler in wanted:
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def undo():
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return undo


def _relay(master: int, stdin: bool, helper: int) -> None:
    """Copy between our terminal and the pty until the command closes it."""
    import select
    import termios
    import tty as ttymod

    in_fd, out_fd = 0, 1
    saved = None
    if stdin and os.isatty(in_fd):
        saved = termios.tcgetattr(in_fd)
        ttymod.setraw(in_fd)

    def resize(*_):
        try:
            size = fcntl.ioctl(out_fd if os.isatty(out_fd) else in_fd, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    resize()
    old_winch = None
    try:
        old_winch = signal.signal(signal.SIGWINCH, resize)
    except ValueError:
        pass
    try:
        watch = [master] + ([in_fd] if stdin else [])
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the command and its children closed the pty
                    break
                if not data:
                    break
                _write_all(out_fd, data)
            if in_fd in ready:
                data = os.read(in_fd, 65536)
                if not data:
                    watch.remove(in_fd)
                    _write_all(master, b"\x04")  # EOF for the command's line discipline
                else:
                    _write_all(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def container_env(home, id_or_name: str) -> list[str]:
    """The environment of a running container's main process (what ``exec`` starts from)."""
    state = find(home, id_or_name)
    try:
        with open(f"/proc/{state['pid']}/environ", "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SockerError(
            f"cannot read the environment of container {state['id'][:12]}: {e.strerror}",
            "is it still running? see socker ps",
        ) from None
    return [item.decode("utf-8", "surrogateescape") for item in raw.split(b"\0") if item]


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with ``extra`` KEY=VALUE items added or replacing, as ``docker exec -e`` does."""
    out = {item.partition("=")[0]: item for item in base}
    for item in extra:
        out[item.partition("=")[0]] = item
    return list(out.values())
