"""Run a ``ContainerSpec``: namespaces, a private root filesystem, and the process as PID 1.

API::

    run(spec) -> int              # foreground; the process's exit code, 128+N if killed by signal N
    start(spec, *, log_path) -> int   # background (socker run -d); returns the container's host pid
    capabilities(spec) -> int     # the capability set the process gets, as a bit mask
    resolve_user(user, passwd, group) -> (uid, gid, supplementary gids, home)
    lookup_executable(name, path_env) -> path   # Go's exec.LookPath; raises ExecError
    ExecError                     # SockerError with exit_code 127 (not found) or 126 (not executable)

Only the standard library is imported (``socker run`` start-up is measured against runc).

Processes. The caller (the *supervisor*) never changes its own namespaces. It forks a helper
that ``unshare``\\ s the user (rootless), mount, UTS, IPC, PID and, with ``network="none"``, the
network namespaces, and forks the container process, which is PID 1 of the new PID namespace.
The helper reports that process's host pid, waits for it and reports its wait status, all over a
pipe; errors before ``execve`` come back on a close-on-exec pipe and are raised as
``SockerError`` (``ExecError`` for a missing or non-executable command). Both children die with
the supervisor (``PR_SET_PDEATHSIG``). ``SIGINT``, ``SIGTERM``, ``SIGHUP``, ``SIGQUIT``,
``SIGUSR1``, ``SIGUSR2`` and ``SIGWINCH`` received by the supervisor are forwarded to the
container (PID 1 ignores signals it has no handler for, as under Docker without ``--init``);
with a tty, ``SIGWINCH`` resizes the pseudo-terminal instead.

Root filesystem, in the container process (its mount namespace is private: ``MS_REC|MS_PRIVATE``
on ``/`` first, so nothing reaches the host's mount table):

- The image directory is bind-mounted on itself; ``ephemeral``: an overlay on it instead
  (lower: the image; upper and work: ``STATE_DIR/overlay-PID``, or a tmpfs private to the
  container if that filesystem cannot hold an upper layer), removed after exit.
- Every mountpoint is resolved inside the new root (``openat2(RESOLVE_IN_ROOT)``) and mounted on
  through ``/proc/self/fd/N``: a symlink in the image cannot send a mount onto the host.
- ``/proc`` (new procfs) with Docker's masked paths (``/dev/null`` over files, an empty read-only
  tmpfs over directories) and read-only paths; ``/sys`` read-only sysfs (when sysfs cannot be
  mounted, i.e. rootless without a network namespace: the host's ``/sys``, recursively read-only);
  ``/dev`` a new tmpfs (755) with null, zero, full, random, urandom and tty, ``pts`` (devpts
  ``newinstance,ptmxmode=0666,mode=0620,gid=5``), ``ptmx -> pts/ptmx``, ``shm`` (tmpfs 1777),
  ``mqueue``, and the ``fd``, ``stdin``, ``stdout``, ``stderr``, ``core`` symlinks; with a tty,
  ``/dev/console`` is the terminal.
- ``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf`` are generated in the state directory
  and bind-mounted over the image's files.
- ``spec.mounts`` (bind, recursively; read-only ones recursively read-only; tmpfs), then
  ``readonly_rootfs``, then ``pivot_root`` (the old root detached, nothing created for it).

What a run writes into the image directory (non-ephemeral runs): only what the process writes,
plus the mountpoint of a ``spec.mounts`` entry whose target is missing -- the one place a
mountpoint is created, as Docker does. Missing ``/proc``, ``/dev``, ``/sys`` or ``/etc`` (an image
``FROM scratch``) are never created in the image: the root is then a read-only tmpfs holding a
bind mount of each top-level entry of the image plus those directories (what bubblewrap does),
so writes below ``/bin``, ``/tmp``... still land in the image, but a new entry directly in ``/``
fails with EROFS. A missing ``/etc/hostname``, ``/etc/hosts`` or ``/etc/resolv.conf`` in an image
that has ``/etc`` is skipped (the file would have to be created in the image); ephemeral runs
create it on the overlay.

Devices. Without ``privileged``, every mount the process can write to is ``nodev`` and the
device nodes in ``/dev`` are bind mounts of the host's (as rootless runtimes do): a node made
with ``mknod`` cannot be opened, which is what Docker's device cgroup achieves. ``privileged``
(and only it) ``mknod``\\ s the nodes and drops ``nodev``.

The process: ``spec.args`` (``args[0]`` looked up in the container's ``PATH`` like Go's
``exec.LookPath``, which runc uses), ``spec.env`` exactly (plus ``HOME`` from ``/etc/passwd`` if
missing), ``spec.cwd``, ``spec.user`` resolved against the image's ``/etc/passwd`` and
``/etc/group`` with runc's rules, all file descriptors but 0-2 closed, signal dispositions and
mask reset, umask 022. Capabilities: Docker's default bounding/effective/permitted set, adjusted
by ``cap_add``/``cap_drop`` as Docker does (``ALL`` included); no inheritable or ambient
capabilities; a non-root user gets none in its effective/permitted sets (Docker >= 20.10);
``PR_SET_NO_NEW_PRIVS`` and the default seccomp filter (``socker_lib.runtime.seccomp``) unless
privileged.

Rootless (``spec.rootless``, or ``None`` and a non-zero euid): a user namespace mapping the
caller's uid and gid to 0 (one id each: ``setgroups`` is denied and only uid/gid 0 exist inside,
so ``--user`` other than root is refused). Device nodes are bind-mounted from the host; sysfs
falls back as above; ``/dev/pts`` has no ``gid=5``; overlays use ``userxattr``.

Resources: ``socker_lib.runtime.cgroups.create_cgroup(spec)`` (imported only when a limit is
set); the container process is added to it before it execs and the cgroup namespace is
unshared after that, so the container sees its own cgroup as its root.

Differences from Docker, on purpose: a denylist seccomp filter (not Docker's allowlist; see
``seccomp``) and no AppArmor/SELinux profile;
``no_new_privs`` on by default (Docker: off, so ``su``/``sudo``/file capabilities do not work
here unless privileged); no devices cgroup (``nodev`` instead, above); ``/sys/fs/cgroup`` is not
mounted; ``privileged`` still gets only the standard ``/dev`` nodes (Docker: all the host's); no
container layer unless ephemeral, hence the mountpoint rules above. As under Docker, the root
field of ``/proc/self/mountinfo`` shows the host path of bind-mounted sources (the image
directory for ``/``, the state directory for ``/etc/hosts``...); no host mount point is visible.
The old root is detached with runc's ``pivot_root(".", ".")``, so no directory is made for it.

``start`` (detached): the caller forks; the child calls ``setsid`` and forks the supervisor,
which runs the container with stdin ``/dev/null`` and stdout and stderr appended to
``log_path`` (``spec.tty`` is ignored), and keeps ``STATE_DIR/state.json`` (written atomically:
temporary file + rename)::

    {"id": spec.id, "name": spec.name, "image": spec.image, "command": spec.args,
     "pid": <host pid of the container process, PID 1 inside>,
     "supervisor": <host pid of the supervisor>,
     "created": "2024-05-01T12:00:00.123456Z", "status": "running"}

and when the container exits adds ``"status": "exited"``, ``"exit_code": N`` (128+N for signal
N) and ``"finished": <time>``. Sending SIGTERM/SIGKILL to ``pid`` stops the container; SIGTERM
etc. to ``supervisor`` are forwarded to it. A container that fails to start raises
``SockerError`` from ``start`` and leaves no state.json behind.
"""

from __future__ import annotations

import errno
import fcntl
import gc as _gc
import os
import signal
import stat
import struct
import time

from ..errors import SockerError
from . import linux as L
from . import seccomp
from .spec import ContainerSpec, Mount

__all__ = ["ExecError", "capabilities", "lookup_executable", "resolve_user", "run", "start"]

DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")  # fmt: skip
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"))  # fmt: skip
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH)  # fmt: skip
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# top-level directories a root filesystem needs; an image without them runs on a tmpfs root
ROOT_DIRS = ("proc", "dev", "sys", "etc")

_TMPFS_FLAGS = {"ro": L.MS_RDONLY, "nosuid": L.MS_NOSUID, "nodev": L.MS_NODEV, "noexec": L.MS_NOEXEC,
                "noatime": L.MS_NOATIME, "nodiratime": L.MS_NODIRATIME, "relatime": L.MS_RELATIME,
                "strictatime": L.MS_STRICTATIME, "sync": L.MS_SYNCHRONOUS, "dirsync": L.MS_DIRSYNC}  # fmt: skip
_TMPFS_CLEAR = {"rw": L.MS_RDONLY, "suid": L.MS_NOSUID, "dev": L.MS_NODEV, "exec": L.MS_NOEXEC,
                "atime": L.MS_NOATIME, "diratime": L.MS_NODIRATIME}  # fmt: skip
_USERNS_HINT = ("unprivileged user namespaces may be disabled: check the sysctls user.max_user_namespaces "
                "and kernel.unprivileged_userns_clone, or run socker as root")  # fmt: skip


class ExecError(SockerError):
    """The command could not be executed: exit code 127 (not found) or 126 (not executable)."""

    code = "exec-failed"

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 127):
        super().__init__(message, hint)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# Public entry points


def run(spec: ContainerSpec) -> int:
    """Run the container in the foreground; its exit code (128+N if killed by signal N)."""
    launch = _Launch(spec)
    handlers = _install_forwarding(launch)
    try:
        launch.prepare()
        launch.launch()
        return launch.wait()
    finally:
        _restore_handlers(handlers)
        launch.cleanup()


def start(spec: ContainerSpec, *, log_path: str) -> int:
    """Start the container in the background (see the module docstring); its host pid."""
    if not spec.state_dir:
        raise SockerError("a background container needs a state directory", "this is a bug in socker")
    os.makedirs(spec.state_dir, exist_ok=True)
    r, w = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first == 0:
        _gc.disable()
        code = 0
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            code = _detached_supervisor(spec, log_path, w)
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(first, 0)
    data = _read_all(r)
    os.close(r)
    if data.startswith(b"ok "):
        return int(data[3:])
    raise _decode_error(data or b"1\0the background supervisor died before starting the container\0")


def capabilities(spec: ContainerSpec) -> int:
    """The process's capability set as a bit mask, with Docker's rules for --cap-add/--cap-drop."""
    last = L.last_cap()
    every = (1 << (last + 1)) - 1
    if spec.privileged:
        return every

    def parse(names: list[str]) -> set[str]:
        out = set()
        for raw in names:
            name = raw.strip().upper()
            name = name[4:] if name.startswith("CAP_") else name
            if name != "ALL" and name not in L.CAP_NAMES:
                raise SockerError(
                    f"unknown capability {raw!r}", "use names like NET_ADMIN or CAP_NET_ADMIN, or ALL"
                )
            out.add(name)
        return out

    adds, drops = parse(spec.cap_add), parse(spec.cap_drop)
    if "ALL" in adds:
        names = [n for n in L.CAP_NAMES if n not in drops]
    elif "ALL" in drops:
        names = list(adds)
    else:
        names = [n for n in DEFAULT_CAPS if n not in drops] + list(adds)
    mask = 0
    for name in names:
        mask |= 1 << L.CAP_NAMES.index(name)
    return mask & every


def resolve_user(user: str | None, passwd: str = "/etc/passwd", group: str = "/etc/group"):
    """``user`` ("name", "uid", "name:group", "uid:gid"; None: root) -> (uid, gid, groups, home).

    runc's rules (libcontainer/user ``GetExecUser``): a name must be in passwd; a numeric uid
    need not be (then gid 0 and home ``/``); a passwd entry gives gid and home; an explicit group
    (name or gid; a gid need not exist) replaces the primary gid and then there are no
    supplementary groups, otherwise they are the groups listing the user's name as a member.
    """
    spec = user or "0"
    user_arg, _, group_arg = spec.partition(":")
    uid_num = int(user_arg) if user_arg.isdigit() else None
    entry = None
    for fields in _read_db(passwd, 7):
        if (fields[2] == str(uid_num)) if uid_num is not None else (fields[0] == user_arg):
            entry = fields
            break
    if entry is None:
        if uid_num is None:
            raise SockerError(f"unable to find user {user_arg}: no matching entries in passwd file",
                              "use a user of the image's /etc/passwd, or a numeric uid")  # fmt: skip
        uid, gid, home, name = uid_num, 0, "/", None
    else:
        try:
            uid, gid = int(entry[2]), int(entry[3])
        except ValueError:
            raise SockerError(f"the image's passwd entry for {user_arg} is malformed") from None
        home, name = entry[5] or "/", entry[0]
    groups: list[int] = []
    if group_arg:
        gid_num = int(group_arg) if group_arg.isdigit() else None
        for fields in _read_db(group, 4):
            if (fields[2] == str(gid_num)) if gid_num is not None else (fields[0] == group_arg):
                gid = int(fields[2])
                break
        else:
            if gid_num is None:
                raise SockerError(f"unable to find group {group_arg}: no matching entries in group file",
                                  "use a group of the image's /etc/group, or a numeric gid")  # fmt: skip
            gid = gid_num
    elif name is not None:
        for fields in _read_db(group, 4):
            if name in fields[3].split(",") and fields[2].isdigit():
                groups.append(int(fields[2]))
    return uid, gid, groups, home


def _read_db(path: str, nfields: int) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= 3:
            out.append((fields + [""] * nfields)[:nfields])
    return out


def lookup_executable(name: str, path_env: str | None) -> str:
    """``args[0]`` -> the file to execute, as Go's ``exec.LookPath`` (which runc uses) finds it."""
    if "/" in name:
        _check_executable(name, name)
        return name
    for d in (path_env if path_env is not None else DEFAULT_PATH).split(":"):
        candidate = os.path.join(d or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH',
                    "check the command, and the PATH and files of the image", 127)  # fmt: skip


def _check_executable(name: str, path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ExecError(f'exec: "{name}": no such file or directory', "check the command", 127) from None
    except OSError as e:
        raise ExecError(f'exec: "{name}": {e.strerror.lower()}', None, 126) from None
    if stat.S_ISDIR(st.st_mode):
        raise ExecError(f'exec: "{name}": is a directory', None, 126)
    if not st.st_mode & 0o111:
        raise ExecError(f'exec: "{name}": permission denied', "the file is not executable", 126)


# ---------------------------------------------------------------------------------------------
# The supervisor's side


class _Launch:
    """One container: prepared and forked by the supervisor, set up by the container process."""

    def __init__(self, spec: ContainerSpec, *, detached: bool = False):
        self.spec = spec
        self.detached = detached
        self.tty = spec.tty and not detached
        self.rootless = spec.rootless if spec.rootless is not None else os.geteuid() != 0
        self.pid: int | None = None  # host pid of the container process
        self.helper: int | None = None
        self.pending: list[int] = []  # signals that arrived before the pid was known
        self.remove: list[str] = []  # directories to delete after exit
        self.cg = None
        self.master: int | None = None
        self.fds: list[int] = []
        self.status: int | None = None

    # -- before the fork

    def prepare(self) -> None:
        spec = self.spec
        if not spec.args:
            raise SockerError("no command to run", "give one after the image, or use an image with a Cmd")
        self.rootfs = os.path.realpath(spec.rootfs)
        if not os.path.isdir(self.rootfs):
            raise SockerError(f"the image directory {spec.rootfs} does not exist")
        if not spec.cwd.startswith("/"):
            raise SockerError(f"the working directory {spec.cwd!r} is not an absolute path")
        for m in spec.mounts:
            if not m.target.startswith("/"):
                raise SockerError(f"mount target {m.target!r} is not an absolute path")
            if m.kind == "bind":
                if not m.source or not os.path.exists(m.source):
                    raise SockerError(f"bind source path does not exist: {m.source}",
                                      "create it first (socker does not create host directories)")  # fmt: skip
            elif m.kind != "tmpfs":
                raise SockerError(f"unknown mount type {m.kind!r} for {m.target}", "use bind or tmpfs")
        if spec.network not in ("host", "none"):
            raise SockerError(
                f"unknown network mode {spec.network!r}", "use --network host or --network none"
            )
        self.caps = capabilities(spec)
        if spec.state_dir:
            os.makedirs(spec.state_dir, exist_ok=True)
            self.state_dir = spec.state_dir
        else:
            base = os.environ.get("TMPDIR") or "/tmp"
            self.state_dir = f"{base}/socker-{os.getpid()}-{time.monotonic_ns()}"
            os.mkdir(self.state_dir, 0o700)
            self.remove.append(self.state_dir)
        self._write_etc_files()
        if spec.ephemeral:
            self.overlay = f"{self.state_dir}/overlay-{os.getpid()}-{time.monotonic_ns() % 1000000}"
            os.mkdir(self.overlay, 0o700)
            self.remove.insert(0, self.overlay)
            os.mkdir(f"{self.overlay}/upper", 0o755)
            os.mkdir(f"{self.overlay}/work", 0o700)
        if spec.memory is not None or spec.cpus is not None or spec.pids_limit is not None:
            from .cgroups import create_cgroup

            self.cg = create_cgroup(spec)
        self.winsize = None
        if self.tty:
            for fd in (0, 1):
                if os.isatty(fd):
                    self.winsize = fcntl.ioctl(fd, L.TIOCGWINSZ, b"\0" * 8)
                    break

    def _write_etc_files(self) -> None:
        spec = self.spec
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
                 "ff02::2\tip6-allrouters"]  # fmt: skip
        for entry in spec.extra_hosts:
            name, _, ip = entry.partition(":")
            if not ip:
                raise SockerError(f"bad --add-host {entry!r}", "write NAME:IP")
            hosts.append(f"{ip}\t{name}")
        hostname = spec.hostname or "socker"
        hosts.append(f"127.0.1.1\t{hostname}")
        if spec.dns:
            resolv = "".join(f"nameserver {ip}\n" for ip in spec.dns)
        elif spec.network == "none":
            resolv = "# no network (--network none): no name servers\n"
        else:
            try:
                with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
                    resolv = f.read()
            except OSError:
                resolv = ""
        for name, text in (("hostname", hostname + "\n"), ("hosts", "\n".join(hosts) + "\n"),
                           ("resolv.conf", resolv)):  # fmt: skip
            path = f"{self.state_dir}/{name}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, text.encode())
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)

    # -- the fork and the start-up handshake

    def launch(self, stdio: tuple[int, int, int] | None = None) -> int:
        """Fork, set up, exec; returns the container's host pid once it has exec'd."""
        self.sup_pid = os.getpid()
        info_r, self.info_w = os.pipe2(os.O_CLOEXEC)
        err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        self.fds += [info_r, err_r]
        self.go_r = go_w = None
        if self.cg is not None:
            self.go_r, go_w = os.pipe2(os.O_CLOEXEC)
            self.fds.append(go_w)
        self.sock = sock = None
        if self.tty:
            import socket

            self._socket = socket
            sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock = child_sock.detach()
        self.devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.stdio = stdio or (None, None, None)
        child_fds = [self.info_w, self.err_w, self.go_r, self.sock, self.devnull]
        try:
            pid = os.fork()
        except BaseException:
            for fd in child_fds:
                if fd is not None:
                    os.close(fd)
            raise
        if pid == 0:
            self._helper_main()  # never returns
        self.helper = pid
        for fd in child_fds:
            if fd is not None:
                os.close(fd)
        try:
            data = _read_exact(info_r, 4)
            if len(data) < 4:
                raise self._startup_error(err_r)
            self.pid = struct.unpack("i", data)[0]
            if self.cg is not None:
                self.cg.add(self.pid)
                os.write(go_w, b"g")  # EPIPE if the process died: its error is on err_r
            if sock is not None:
                msg, fds, _flags, _addr = self._socket.recv_fds(sock, 16, 1)
                sock.close()
                if fds:
                    self.master = fds[0]
                    self.fds.append(self.master)
            data = _read_all(err_r)  # EOF without data: the process has exec'd
            if data:
                raise _decode_error(data)
        except BaseException as e:
            self._kill()
            if not isinstance(e, SockerError) or self.pid is not None:
                data = _read_all(err_r)  # everyone is dead: EOF after what they reported
                if data:
                    raise _decode_error(data) from None
            raise
        for sig in self.pending:
            self.forward(sig)
        self.pending.clear()
        return self.pid

    def _startup_error(self, err_r: int) -> SockerError:
        data = _read_all(err_r)
        return _decode_error(data or b"1\0the container process died during set-up\0")

    def _kill(self) -> None:
        for pid in (self.pid, self.helper):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.helper:
            try:
                os.waitpid(self.helper, 0)
            except ChildProcessError:
                pass
            self.helper = None

    def forward(self, signum: int) -> None:
        if self.pid is None or self.status is not None:
            self.pending.append(signum)
            return
        if signum == signal.SIGWINCH and self.master is not None:
            self._resize()
            return
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass

    def _resize(self) -> None:
        for fd in (0, 1):
            if os.isatty(fd):
                try:
                    fcntl.ioctl(self.master, L.TIOCSWINSZ, fcntl.ioctl(fd, L.TIOCGWINSZ, b"\0" * 8))
                except OSError:
                    pass
                return

    # -- waiting

    def wait(self) -> int:
        info_r = self.fds[0]
        if self.master is not None:
            self._copy_tty()
        data = _read_exact(info_r, 4)
        if self.helper:
            os.waitpid(self.helper, 0)
            self.helper = None
        if len(data) < 4:
            raise SockerError("the container's helper process died", "this is a bug in socker")
        self.status = struct.unpack("i", data)[0]
        return _exit_code(self.status)

    def _copy_tty(self) -> None:
        import select

        master = self.master
        stdin = 0 if self.spec.stdin else None
        saved = None
        if stdin is not None and os.isatty(0):
            import termios
            import tty

            saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)
        try:
            watch = [master] + ([stdin] if stdin is not None else [])
            while True:
                ready, _, _ = select.select(watch, [], [])
                if master in ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError as e:
                        if e.errno != errno.EIO:
                            raise
                        data = b""
                    if not data:
                        return  # every process holding the terminal has gone
                    _write_all(1, data)
                if stdin is not None and stdin in ready:
                    data = os.read(stdin, 65536)
                    if data:
                        _write_all(master, data)
                    else:
                        watch.remove(stdin)
                        _write_all(master, b"\x04")  # end of input: ^D, as a terminal would send
                        stdin = None
        finally:
            if saved is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, saved)

    def cleanup(self) -> None:
        if self.helper:
            self._kill()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        if self.cg is not None:
            try:
                self.cg.remove()
            finally:
                self.cg = None
        for path in self.remove:
            _rmtree(path)
        self.remove = []

    # -- the helper process: new namespaces, then the container process as PID 1

    def _helper_main(self) -> None:
        _gc.disable()
        code = 1
        err_w = self.err_w
        try:
            keep = [0, 1, 2, self.info_w, err_w, self.devnull]
            keep += [fd for fd in (self.go_r, self.sock) if fd is not None]
            keep += [fd for fd in self.stdio if fd is not None]
            _close_fds_except(keep)
            os.setsid()  # out of the terminal's process group: only the supervisor gets ^C
            L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != self.sup_pid:
                os._exit(1)
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            flags = L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | L.CLONE_NEWPID
            if self.spec.network == "none":
                flags |= L.CLONE_NEWNET
            uid, gid = os.geteuid(), os.getegid()
            if self.rootless:
                flags |= L.CLONE_NEWUSER
                # after a change of uid /proc/self would belong to root: we write our id maps there
                L.prctl(L.PR_SET_DUMPABLE, 1)
            try:
                L.unshare(flags)
            except OSError as e:
                hint = _USERNS_HINT if self.rootless else None
                raise SockerError(f"cannot create the container's namespaces: {e.strerror}", hint) from None
            if self.rootless:
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
                _write_file("/proc/self/gid_map", f"0 {gid} 1\n")
            pid = os.fork()
            if pid == 0:
                self._container_main()  # never returns
            for fd in (err_w, self.go_r, self.sock, self.devnull, *self.stdio):
                if fd is not None and fd > 2:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            err_w = None
            os.write(self.info_w, struct.pack("i", pid))
            while True:
                wpid, status = os.waitpid(pid, 0)
                if wpid == pid:
                    break
            os.write(self.info_w, struct.pack("i", status))
            code = 0
        except BaseException as e:
            if err_w is not None:
                _report(err_w, e)
        finally:
            os._exit(code)

    # -- the container process (PID 1): everything below runs between fork and execve

    def _container_main(self) -> None:
        code = 1
        try:
            self._setup_container()
        except BaseException as e:
            code = e.exit_code if isinstance(e, SockerError) else 1
            _report(self.err_w, e)
        os._exit(code)

    def _setup_container(self) -> None:
        spec = self.spec
        os.umask(0)
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        L.sethostname(spec.hostname or "socker")
        if spec.network == "none":
            L.loopback_up()
        self._setup_rootfs()
        slave = self._open_tty() if self.tty else None
        if self.go_r is not None:
            _read_exact(self.go_r, 1)  # the supervisor has put us in the cgroup
            os.close(self.go_r)
        if os.path.exists("/proc/self/ns/cgroup"):
            try:
                L.unshare(L.CLONE_NEWCGROUP)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EPERM):
                    raise
        uid, gid, groups, home = resolve_user(spec.user)
        if self.rootless and (uid != 0 or gid != 0):
            raise SockerError(f"user {spec.user!r} is not root, and a rootless container maps only root",
                              "run socker as root to use --user, or leave --user out")  # fmt: skip
        env: dict[str, str] = {}
        for item in spec.env:
            key, sep, value = item.partition("=")
            if sep and key:
                env[key] = value
        env.setdefault("HOME", home)
        cwd_later = False
        try:
            os.chdir(spec.cwd)
        except PermissionError:
            cwd_later = True
        except OSError as e:
            raise SockerError(f"the working directory {spec.cwd} cannot be used: {e.strerror}",
                              "use -w with a directory that exists in the image") from None  # fmt: skip
        if slave is not None:
            os.fchown(slave, uid, gid)
        # identity and capabilities (runc's order: bounding set, user, then the other sets)
        _, permitted, _ = L.capget()
        caps = self.caps & permitted
        for cap in range(L.last_cap() + 1):
            if not caps & (1 << cap) and L.prctl(L.PR_CAPBSET_READ, cap) == 1:
                L.prctl(L.PR_CAPBSET_DROP, cap)
        if not self.rootless:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if cwd_later:
            try:
                os.chdir(spec.cwd)
            except OSError as e:
                raise SockerError(f"the working directory {spec.cwd} cannot be used: {e.strerror}") from None
        args0 = spec.args[0]
        path = lookup_executable(args0, env.get("PATH"))
        if uid == 0:
            L.capset(caps, caps, 0)
        else:
            L.capset(0, 0, 0)
        try:
            L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
        except OSError:
            pass
        if not spec.privileged:
            L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
            try:
                seccomp.install_default_filter(caps)
            except OSError as e:
                raise SockerError(f"cannot install the seccomp filter: {e.strerror}",
                                  "the kernel needs CONFIG_SECCOMP_FILTER; or run with --privileged") from None  # fmt: skip
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the change of user
        # standard streams
        if slave is not None:
            fcntl.ioctl(slave, L.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
        else:
            stdin, stdout, stderr = self.stdio
            if self.detached or not spec.stdin:
                stdin = self.devnull
            for fd, src in ((0, stdin), (1, stdout), (2, stderr)):
                if src is not None and src != fd:
                    os.dup2(src, fd)
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.umask(0o022)
        _close_fds_except([0, 1, 2, self.err_w])
        try:
            os.execve(path, spec.args, env)
        except OSError as e:
            code = 127 if e.errno == errno.ENOENT else 126
            raise ExecError(f'exec: "{args0}": {e.strerror.lower()}', None, code) from None

    # -- the root filesystem

    def _setup_rootfs(self) -> None:
        spec = self.spec
        img = self.rootfs
        privileged = spec.privileged
        L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        self.shim_made: set[str] = set()
        shim_binds: list[int] = []
        if spec.ephemeral:
            self._mount_overlay(img)
        else:
            missing = self._missing_root_dirs(img)
            if missing:
                shim_binds = self._mount_shim(img, missing)
            else:
                L.mount(img, img, None, L.MS_BIND | L.MS_REC)
        root = os.open(img, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root = root
        if not privileged:
            L.set_mount_attr(root, L.MOUNT_ATTR_NODEV, recursive=True)

        # /proc
        fd = self._target("/proc", "dir", create=True)
        _mount("proc", fd, "proc", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
        os.close(fd)

        # /dev
        fd = self._target("/dev", "dir", create=True)
        _mount("tmpfs", fd, "tmpfs", L.MS_NOSUID | L.MS_STRICTATIME | (0 if privileged else L.MS_NODEV),
               "mode=755,size=65536k")  # fmt: skip
        os.close(fd)
        self._populate_dev()

        # /sys
        fd = self._target("/sys", "dir", create=True)
        sys_flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | (0 if privileged else L.MS_RDONLY)
        try:
            _mount("sysfs", fd, "sysfs", sys_flags)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES):
                raise
            # sysfs needs a network namespace of our own: the host's /sys instead, read-only
            L.mount("/sys", L.fd_path(fd), None, L.MS_BIND | L.MS_REC)
            if not privileged:
                top = L.open_in_root(root, "/sys")
                L.set_mount_attr(top, L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR_NOSUID | L.MOUNT_ATTR_NODEV
                                 | L.MOUNT_ATTR_NOEXEC, recursive=True)  # fmt: skip
                os.close(top)
        os.close(fd)

        if not privileged:
            self._mask_paths()

        # /etc/hostname, /etc/hosts, /etc/resolv.conf
        for name in ("hostname", "hosts", "resolv.conf"):
            target = f"/etc/{name}"
            try:
                fd = self._target(target, "file", create=self._may_create(target))
            except (FileNotFoundError, NotADirectoryError):
                continue  # not in the image, and creating it would write into the image
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    L.mount(f"{self.state_dir}/{name}", L.fd_path(fd), None, L.MS_BIND)
            finally:
                os.close(fd)

        for m in spec.mounts:
            self._user_mount(m)

        if self.shim_made:
            L.set_mount_attr(root, L.MOUNT_ATTR_RDONLY)
        if spec.readonly_rootfs:
            for fd in shim_binds or [root]:
                L.set_mount_attr(fd, L.MOUNT_ATTR_RDONLY)
        for fd in shim_binds:
            os.close(fd)
        self._pivot(root)

    def _missing_root_dirs(self, img: str) -> list[str]:
        fd = os.open(img, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            missing = []
            for name in ROOT_DIRS:
                try:
                    os.close(L.open_in_root(fd, name))
                except FileNotFoundError:
                    missing.append(name)
            return missing
        finally:
            os.close(fd)

    def _mount_shim(self, img: str, missing: list[str]) -> list[int]:
        """A tmpfs root with a bind mount of each top-level entry of the image, plus ``missing``."""
        src = os.open(img, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(src)
        owner = "" if self.rootless else f",uid={st.st_uid},gid={st.st_gid}"
        L.mount("tmpfs", img, "tmpfs", L.MS_NOSUID, f"mode={st.st_mode & 0o7777:o},size=64k{owner}")
        root = os.open(img, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        src_path, root_path = L.fd_path(src), L.fd_path(root)
        binds = []
        for name in sorted(os.listdir(src_path)):
            entry = f"{src_path}/{name}"
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(entry), name, dir_fd=root)
                continue
            if stat.S_ISDIR(mode):
                os.mkdir(name, 0o755, dir_fd=root)
            else:
                os.close(
                    os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=root)
                )
            L.mount(entry, f"{root_path}/{name}", None, L.MS_BIND | L.MS_REC)
            binds.append(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root))
        for name in missing:
            try:
                os.mkdir(name, 0o555 if name in ("proc", "sys") else 0o755, dir_fd=root)
            except FileExistsError:  # a dangling symlink in the image: left as it is
                continue
            self.shim_made.add(name)
        os.close(root)
        os.close(src)
        return binds

    def _mount_overlay(self, img: str) -> None:
        ov = self.overlay
        data = (f"lowerdir={_ovl_escape(img)},upperdir={_ovl_escape(ov)}/upper,"
                f"workdir={_ovl_escape(ov)}/work")  # fmt: skip
        if self.rootless:
            data += ",userxattr"
        flags = 0 if self.spec.privileged else L.MS_NODEV
        try:
            L.mount("overlay", img, "overlay", flags, data)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise SockerError(f"cannot mount the ephemeral overlay on {img}: {e.strerror}") from None
            # the state directory's filesystem cannot hold an upper layer: a private tmpfs
            L.mount("tmpfs", ov, "tmpfs", 0, "mode=700")
            os.mkdir(f"{ov}/upper", 0o755)
            os.mkdir(f"{ov}/work", 0o700)
            try:
                L.mount("overlay", img, "overlay", flags, data)
            except OSError as e2:
                raise SockerError(f"cannot mount the ephemeral overlay on {img}: {e2.strerror}",
                                  "the kernel needs overlayfs (rootless: Linux >= 5.11)") from None  # fmt: skip

    def _may_create(self, target: str) -> bool:
        """May a missing mountpoint at ``target`` be created without writing into the image?"""
        if self.spec.ephemeral:
            return True
        return target.strip("/").split("/", 1)[0] in self.shim_made

    def _target(self, path: str, kind: str, *, create: bool) -> int:
        if create:
            return L.make_in_root(self.root, path, kind)
        return L.open_in_root(self.root, path)

    def _populate_dev(self) -> None:
        dev = L.open_in_root(self.root, "/dev", os.O_PATH | os.O_DIRECTORY)
        dev_path = L.fd_path(dev)
        make_nodes = self.spec.privileged and not self.rootless
        for name, major, minor in DEVICES:
            if make_nodes:
                os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev)
            elif os.path.exists(f"/dev/{name}"):
                os.close(
                    os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=dev)
                )
                L.mount(f"/dev/{name}", f"{dev_path}/{name}", None, L.MS_BIND)
        os.mkdir("pts", 0o755, dir_fd=dev)
        pts_opts = "newinstance,ptmxmode=0666,mode=0620" + ("" if self.rootless else ",gid=5")
        L.mount("devpts", f"{dev_path}/pts", "devpts", L.MS_NOSUID | L.MS_NOEXEC, pts_opts)
        os.mkdir("shm", 0o1777, dir_fd=dev)
        L.mount(
            "shm", f"{dev_path}/shm", "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=1777,size=65536k"
        )
        os.mkdir("mqueue", 0o755, dir_fd=dev)
        try:
            L.mount("mqueue", f"{dev_path}/mqueue", "mqueue", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
        except OSError:
            pass  # not essential
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=dev)
        os.close(dev)

    def _mask_paths(self) -> None:
        for path in MASKED_PATHS:
            try:
                fd = L.open_in_root(self.root, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    _mount(
                        "tmpfs", fd, "tmpfs", L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "size=0"
                    )
                else:
                    L.mount("/dev/null", L.fd_path(fd), None, L.MS_BIND)
            finally:
                os.close(fd)
        for path in READONLY_PATHS:
            try:
                fd = L.open_in_root(self.root, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            L.mount(L.fd_path(fd), L.fd_path(fd), None, L.MS_BIND | L.MS_REC)
            os.close(fd)
            fd = L.open_in_root(self.root, path)
            L.set_mount_attr(fd, L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR_NOSUID | L.MOUNT_ATTR_NODEV
                             | L.MOUNT_ATTR_NOEXEC, recursive=True)  # fmt: skip
            os.close(fd)

    def _user_mount(self, m: Mount) -> None:
        try:
            if m.kind == "bind":
                kind = "dir" if os.path.isdir(m.source) else "file"
                fd = L.make_in_root(self.root, m.target, kind)
                L.mount(m.source, L.fd_path(fd), None, L.MS_BIND | L.MS_REC)
                os.close(fd)
                attrs = (L.MOUNT_ATTR_RDONLY if m.readonly else 0) | (
                    0 if self.spec.privileged else L.MOUNT_ATTR_NODEV
                )
                if attrs:
                    fd = L.open_in_root(self.root, m.target)
                    L.set_mount_attr(fd, attrs, recursive=True)
                    os.close(fd)
            else:
                flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | (L.MS_RDONLY if m.readonly else 0)
                data = []
                for opt in filter(None, (o.strip() for o in m.options.split(","))):
                    if opt in _TMPFS_FLAGS:
                        flags |= _TMPFS_FLAGS[opt]
                    elif opt in _TMPFS_CLEAR:
                        flags &= ~_TMPFS_CLEAR[opt]
                    else:
                        data.append(opt)
                fd = L.make_in_root(self.root, m.target, "dir")
                _mount("tmpfs", fd, "tmpfs", flags, ",".join(data) or None)
                os.close(fd)
        except OSError as e:
            what = f"{m.source} on {m.target}" if m.kind == "bind" else f"a tmpfs on {m.target}"
            raise SockerError(f"cannot mount {what}: {e.strerror}") from None

    def _pivot(self, root: int) -> None:
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        os.fchdir(root)
        try:
            L.pivot_root(".", ".")
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # the host's root cannot be pivoted (an initramfs): move the new root over it
            L.mount(".", "/", None, L.MS_MOVE)
            os.chroot(".")
        else:
            os.fchdir(old)
            L.umount2(".", L.MNT_DETACH)
        os.close(old)
        os.close(root)
        os.chdir("/")

    def _open_tty(self) -> int:
        master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        fcntl.ioctl(master, L.TIOCSPTLCK, struct.pack("i", 0))
        n = struct.unpack("I", fcntl.ioctl(master, L.TIOCGPTN, b"\0" * 4))[0]
        slave = os.open(f"/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if self.winsize is not None:
            fcntl.ioctl(slave, L.TIOCSWINSZ, self.winsize)
        os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        L.mount(f"/dev/pts/{n}", "/dev/console", None, L.MS_BIND)
        self._socket.send_fds(self._socket.socket(fileno=self.sock), [b"m"], [master])
        os.close(master)
        return slave


# ---------------------------------------------------------------------------------------------
# Detached containers


def _detached_supervisor(spec: ContainerSpec, log_path: str, result_w: int) -> int:
    """The background supervisor (already in its own session): start, record, wait, record."""
    launch = _Launch(spec, detached=True)
    state_path = os.path.join(spec.state_dir, "state.json")
    try:
        null = os.open("/dev/null", os.O_RDONLY)
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir("/")
        _install_forwarding(launch)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        launch.prepare()
        pid = launch.launch()
    except BaseException as e:
        _report(result_w, e)
        launch.cleanup()
        return 1
    state = {"id": spec.id, "name": spec.name, "image": spec.image, "command": list(spec.args),
             "pid": pid, "supervisor": os.getpid(), "created": _now(), "status": "running"}  # fmt: skip
    try:
        _write_json(state_path, state)
        os.write(result_w, b"ok %d" % pid)
        os.close(result_w)
        code = launch.wait()
    except BaseException as e:  # the container is gone or the record failed: say so in the log
        os.write(2, f"socker: supervisor: {e}\n".encode())
        code = 255
    finally:
        launch.cleanup()
    state = _read_json(state_path) or state
    state.update(status="exited", exit_code=code, finished=_now())
    _write_json(state_path, state)
    return 0


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _write_json(path: str, data: dict) -> None:
    import json

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Helpers


def _install_forwarding(launch: _Launch) -> dict:
    saved = {}
    try:
        for sig in FORWARDED_SIGNALS:
            saved[sig] = signal.signal(sig, lambda signum, _frame: launch.forward(signum))
    except ValueError:  # not the main thread: no forwarding
        pass
    return saved


def _restore_handlers(saved: dict) -> None:
    for sig, handler in saved.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _mount(source: str, fd: int, fstype: str, flags: int, data: str | None = None) -> None:
    L.mount(source, L.fd_path(fd), fstype, flags, data)


def _ovl_escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _report(fd: int, exc: BaseException) -> None:
    """Send an error over a pipe as ``code NUL message NUL hint`` (``_decode_error`` reads it)."""
    if isinstance(exc, SockerError):
        code, message, hint = exc.exit_code, exc.message, exc.hint or ""
    elif isinstance(exc, OSError):
        code, message, hint = (
            1,
            f"setting up the container: {exc.strerror}" + (f": {exc.filename}" if exc.filename else ""),
            "",
        )
    else:
        code, message, hint = 1, f"setting up the container: {type(exc).__name__}: {exc}", ""
    try:
        os.write(fd, f"{code}\0{message}\0{hint}".encode(errors="replace"))
    except OSError:
        pass


def _decode_error(data: bytes) -> SockerError:
    code, message, hint = (data.decode(errors="replace").split("\0") + ["", ""])[:3]
    code_n = int(code) if code.isdigit() else 1
    if code_n in (126, 127):
        return ExecError(message, hint or None, code_n)
    err = SockerError(message, hint or None)
    return err


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _close_fds_except(keep: list[int]) -> None:
    low = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(os.sysconf("SC_OPEN_MAX"), 1024))


def _rmtree(path: str) -> None:
    """Delete a tree the container wrote (an overlay's work dir is mode 000: chmod and retry)."""
    import shutil

    def retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)
