"""Resource limits (``--memory``, ``--cpus``, ``--pids-limit``) with cgroups, v2 or v1.

Where each controller lives is found at run time from ``/proc/self/mountinfo`` and
``/proc/self/cgroup``: a controller that the cgroup v2 hierarchy offers is used there,
otherwise its cgroup v1 hierarchy is used. Hosts come in three layouts:

- unified (v2 only): ``/sys/fs/cgroup`` is the cgroup2 mount;
- hybrid: v1 hierarchies under ``/sys/fs/cgroup/<controller>`` and a v2 hierarchy at
  ``/sys/fs/cgroup/unified`` to which usually no controller is bound;
- legacy (v1 only).

Layout of what socker creates (as root: at the top of each hierarchy, like Docker):

- v2: ``<v2>/socker/<id>``; ``socker/`` is a parent with no processes of its own, so the
  "no internal processes" rule holds, and the controllers are enabled in the
  ``cgroup.subtree_control`` of the top and of ``socker/``;
- v1: ``<hierarchy>/socker/<id>`` in each hierarchy that carries a needed controller
  (``cpu,cpuacct`` mounted together share one directory).

On a hybrid host the container also joins ``<v2>/socker/<id>`` even when no limit lives
there (as runc does): ``cgroup.kill`` then ends every leftover process at once.

Without root only a delegated cgroup v2 subtree can be used (the topmost ancestor of our own
cgroup that we own, e.g. ``user@1000.service``). A limit that cannot be applied is an error,
never silently dropped. Only the standard library is used: this is on ``socker run``'s path.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field

from ..errors import SockerError
from .spec import ContainerSpec

MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"
PARENT = "socker"  # the group that holds every container's group
CPU_PERIOD = 100_000  # microseconds
MIN_MEMORY = 6 * 1024 * 1024  # as Docker: below this a container cannot even start
CLEANUP_TIMEOUT = 5.0  # seconds to wait for leftovers to die and directories to go

V1_CONTROLLERS = frozenset(
    "cpu cpuacct cpuset memory devices freezer net_cls net_prio blkio perf_event hugetlb pids rdma misc".split()
)

_NO_LIMITS_HINT = "or run without --memory/--cpus/--pids-limit"


@dataclass
class Hierarchy:
    """One mounted cgroup hierarchy as this process sees it."""

    version: int  # 1 or 2
    mountpoint: str
    root: str = "/"  # the part of the hierarchy the mount shows
    controllers: frozenset[str] = frozenset()  # v1: bound to it; v2: offered at the mountpoint
    own: str | None = None  # this process's cgroup, as /proc/self/cgroup says
    readonly: bool = False

    def own_dir(self) -> str | None:
        """The directory of this process's cgroup, or None when the mount does not show it."""
        if self.own is None:
            return None
        own, root = self.own, self.root.rstrip("/")
        if root and own != root and not own.startswith(root + "/"):
            return None
        rel = own[len(root) :].strip("/")
        return os.path.join(self.mountpoint, rel) if rel else self.mountpoint


@dataclass
class Layout:
    v2: Hierarchy | None = None
    v1: dict[str, Hierarchy] = field(default_factory=dict)  # controller -> its hierarchy

    @property
    def kind(self) -> str:
        if self.v2 is not None and not self.v1:
            return "unified"
        return "hybrid" if self.v2 is not None else "legacy"


# ---------------------------------------------------------------------------------------------
# Detection


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str, list[str]]]:
    """(fstype, root, mountpoint, mount options, super options) of every cgroup mount."""
    found = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        found.append(
            (rfields[0], _unescape(fields[3]), _unescape(fields[4]), fields[5], rfields[2].split(","))
        )
    return found


def parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """(v2 path, {v1 controller: path}) from the text of /proc/<pid>/cgroup."""
    v2, v1 = None, {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        else:
            for c in ctrls.split(","):
                if c:
                    v1[c] = path
    return v2, v1


def detect() -> Layout:
    """Where each controller is, from this process's mountinfo and cgroup membership."""
    try:
        mounts = parse_mountinfo(_read(MOUNTINFO))
        own_v2, own_v1 = parse_proc_cgroup(_read(PROC_CGROUP))
    except OSError as e:
        raise SockerError(
            f"cannot read the cgroup layout of this system: {e.strerror}",
            "is /proc mounted? " + _NO_LIMITS_HINT,
        ) from None
    layout = Layout()
    # a hierarchy may be mounted more than once (bind mounts): prefer a mount of its top
    mounts.sort(key=lambda m: m[1] != "/")
    for fstype, root, mountpoint, opts, superopts in mounts:
        readonly = "ro" in opts.split(",")
        if fstype == "cgroup2":
            if layout.v2 is None:
                try:
                    offered = frozenset(_read(os.path.join(mountpoint, "cgroup.controllers")).split())
                except OSError:
                    offered = frozenset()
                layout.v2 = Hierarchy(2, mountpoint, root, offered, own_v2, readonly)
            continue
        ctrls = frozenset(o for o in superopts if o in V1_CONTROLLERS)
        if not ctrls or any(c in layout.v1 for c in ctrls):
            continue
        own = next((own_v1[c] for c in ctrls if c in own_v1), None)
        h = Hierarchy(1, mountpoint, root, ctrls, own, readonly)
        for c in ctrls:
            layout.v1[c] = h
    return layout


# ---------------------------------------------------------------------------------------------
# Errors


def _fail(action: str, path: str, err: OSError, rootless: bool) -> SockerError:
    code = err.errno
    if code == errno.EROFS:
        return SockerError(
            f"cannot {action} {path}: the cgroup filesystem is mounted read-only",
            "resource limits need a writable cgroup filesystem (inside a container: give it a "
            "writable /sys/fs/cgroup, e.g. --privileged or a private cgroup namespace), " + _NO_LIMITS_HINT,
        )
    if code in (errno.EACCES, errno.EPERM):
        if rootless:
            hint = (
                "without root, resource limits need a delegated cgroup v2 subtree: run socker "
                "in one (systemd-run --user -p Delegate=yes --pty socker run ...), or as root, "
                + _NO_LIMITS_HINT
            )
        else:
            hint = (
                "is the cgroup filesystem delegated to this (possibly containerized) root? " + _NO_LIMITS_HINT
            )
        return SockerError(f"cannot {action} {path}: permission denied", hint)
    if code == errno.EBUSY and path.endswith("cgroup.subtree_control"):
        return SockerError(
            f"cannot {action} {path}: that group has processes of its own (cgroup v2 allows "
            "controllers only below groups without processes)",
            "move the processes of that group into a child group first (as Docker-in-Docker "
            "does), or run socker from a delegated unit (systemd-run -p Delegate=yes), " + _NO_LIMITS_HINT,
        )
    return SockerError(
        f"cannot {action} {path}: {err.strerror or err}", "run without --memory/--cpus/--pids-limit"
    )


def _write(path: str, value: str, action: str, rootless: bool) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise _fail(action, path, e, rootless) from None


# ---------------------------------------------------------------------------------------------
# Limits


def _limits(spec: ContainerSpec) -> dict[str, dict[int, list[tuple[str, str, bool]]]]:
    """controller -> {cgroup version: [(file, value, required)]} in writing order."""
    limits: dict[str, dict[int, list[tuple[str, str, bool]]]] = {}
    if spec.memory is not None:
        m = int(spec.memory)
        if m < MIN_MEMORY:
            raise SockerError(
                f"memory limit {m} bytes is too small: the minimum is 6 MiB", "give e.g. --memory 64m"
            )
        limits["memory"] = {
            # swap.max = 0 / memsw = limit: without them the limit only pushes the process into swap
            2: [("memory.max", str(m), True), ("memory.swap.max", "0", False)],
            1: [("memory.limit_in_bytes", str(m), True), ("memory.memsw.limit_in_bytes", str(m), False)],
        }
    if spec.cpus is not None:
        ncpu = os.cpu_count() or 1
        quota = int(round(float(spec.cpus) * CPU_PERIOD))
        if quota < 1000 or spec.cpus > ncpu:
            raise SockerError(
                f"--cpus {spec.cpus} is out of range: this machine takes 0.01 to {ncpu}",
                "give a fraction of the CPUs, e.g. --cpus 0.5",
            )
        limits["cpu"] = {
            2: [("cpu.max", f"{quota} {CPU_PERIOD}", True)],
            1: [("cpu.cfs_period_us", str(CPU_PERIOD), True), ("cpu.cfs_quota_us", str(quota), True)],
        }
    if spec.pids_limit is not None:
        n = int(spec.pids_limit)
        if n < 1:
            raise SockerError(f"--pids-limit {n} must be at least 1", "give e.g. --pids-limit 100")
        limits["pids"] = {v: [("pids.max", str(n), True)] for v in (1, 2)}
    return limits


_WHAT = {
    "memory": "memory (--memory)",
    "cpu": "CPU time (--cpus)",
    "pids": "the number of processes (--pids-limit)",
}


def _delegated(h: Hierarchy) -> str | None:
    """The topmost group from ours upward that we own and may move processes into."""
    d = h.own_dir()
    uid, best = os.geteuid(), None
    while d is not None:
        try:
            if os.stat(d).st_uid != uid or not os.access(os.path.join(d, "cgroup.procs"), os.W_OK):
                break
        except OSError:
            break
        best = d
        if os.path.normpath(d) == os.path.normpath(h.mountpoint):
            break
        d = os.path.dirname(d)
    return best


def _v2_base(layout: Layout, rootless: bool) -> str | None:
    h = layout.v2
    if h is None:
        return None
    return _delegated(h) if rootless else h.mountpoint


def _v2_offered(base: str, h: Hierarchy) -> frozenset[str]:
    if base == h.mountpoint:
        return h.controllers
    try:
        return frozenset(_read(os.path.join(base, "cgroup.controllers")).split())
    except OSError:
        return frozenset()


# ---------------------------------------------------------------------------------------------
# The group of one container


class Cgroup:
    """The cgroup directories of one container (one per hierarchy used)."""

    def __init__(self, name: str, rootless: bool = False):
        self.name = name
        self.rootless = rootless
        self.paths: dict[str, str] = {}  # controller -> its directory ("memory", "cpu", "pids")
        self.dirs: list[str] = []  # every directory created, v2 first
        self.optional: set[str] = set()  # directories joined on a best-effort basis
        self.version: dict[str, int] = {}  # controller -> 1 or 2

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {self.paths})"

    # -- setup

    def _mkdir(self, path: str, *, exist_ok: bool = False) -> None:
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not exist_ok:
                raise SockerError(
                    f"cgroup {path} already exists", f"another container with id {self.name} is running?"
                ) from None
            return
        except OSError as e:
            raise _fail("create cgroup", path, e, self.rootless) from None
        if not exist_ok:
            self.dirs.append(path)

    def _enable(self, group: str, controllers: list[str]) -> None:
        path = os.path.join(group, "cgroup.subtree_control")
        try:
            current = set(_read(path).split())
        except OSError:
            current = set()
        missing = [c for c in controllers if c not in current]
        if missing:
            action = "enable the " + ", ".join(missing) + " controller(s) in"
            _write(path, " ".join("+" + c for c in missing), action, self.rootless)

    def _setup(self, layout: Layout, limits: dict) -> None:
        rootless = self.rootless
        v2_base = _v2_base(layout, rootless)
        offered = _v2_offered(v2_base, layout.v2) if v2_base and layout.v2 else frozenset()
        on_v2, on_v1 = [], {}
        for c in limits:
            if c in offered:
                on_v2.append(c)
            elif c in layout.v1 and not rootless:
                on_v1.setdefault(layout.v1[c].mountpoint, (layout.v1[c], []))[1].append(c)
            elif rootless:
                where = (
                    "no delegated cgroup v2 subtree was found"
                    if v2_base is None
                    else f"the delegated cgroup v2 group {v2_base} does not offer the {c} controller"
                )
                raise SockerError(
                    f"cannot limit {_WHAT.get(c, c)} without root: {where}",
                    "run socker as root, or inside a delegated cgroup v2 subtree (systemd-run --user "
                    "-p Delegate=yes --pty socker run ...), " + _NO_LIMITS_HINT,
                )
            else:
                raise SockerError(
                    f"cannot limit {_WHAT.get(c, c)}: the {c} cgroup controller is not available "
                    f"(cgroup layout: {layout.kind})",
                    "enable the controller in the kernel/boot configuration, " + _NO_LIMITS_HINT,
                )
        for h in [layout.v2] * bool(on_v2) + [h for h, _ in on_v1.values()]:
            if h is not None and h.readonly:
                raise _fail(
                    "use the cgroup hierarchy", h.mountpoint, OSError(errno.EROFS, "read-only"), rootless
                )

        if (
            v2_base is not None
            and layout.v2 is not None
            and (on_v2 or (layout.v1 and not layout.v2.readonly))
        ):
            parent = os.path.join(v2_base, PARENT)
            group = os.path.join(parent, self.name)
            if on_v2:
                self._enable(v2_base, on_v2)
                self._mkdir(parent, exist_ok=True)
                self._enable(parent, on_v2)
                self._mkdir(group)
                for c in on_v2:
                    self._apply(group, c, 2, limits[c][2])
            else:
                # hybrid host, every limit on v1: join v2 too for cgroup.kill (best effort)
                try:
                    os.makedirs(group, 0o755)
                    self.dirs.append(group)
                    self.optional.add(group)
                except OSError:
                    pass
        for h, ctrls in on_v1.values():
            parent = os.path.join(h.mountpoint, PARENT)
            group = os.path.join(parent, self.name)
            self._mkdir(parent, exist_ok=True)
            self._mkdir(group)
            for c in ctrls:
                self._apply(group, c, 1, limits[c][1])

    def _apply(self, group: str, controller: str, version: int, files: list[tuple[str, str, bool]]) -> None:
        self.paths[controller] = group
        self.version[controller] = version
        for name, value, required in files:
            path = os.path.join(group, name)
            if not required and not os.path.exists(path):
                continue  # e.g. no swap accounting: nothing to limit there
            _write(path, value, f"set {name} = {value} in", self.rootless)

    # -- use

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the container's groups."""
        for group in self.dirs:
            path = os.path.join(group, "cgroup.procs")
            if group in self.optional:
                try:
                    _write(path, str(pid), "", self.rootless)
                except SockerError:
                    pass
                continue
            _write(path, str(pid), f"move process {pid} into", self.rootless)

    def pids(self) -> set[int]:
        """Processes in any of the container's groups."""
        found: set[int] = set()
        for group in self.dirs:
            found |= _procs(group)
        return found

    def remove(self) -> None:
        """Kill what is left in the groups, then remove them (``socker/`` itself stays)."""
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        for group in self.dirs:
            if os.path.isdir(group):
                kill = os.path.join(group, "cgroup.kill")
                if os.path.exists(kill):
                    try:
                        _write(kill, "1", "", self.rootless)
                    except SockerError:
                        pass
        for group in self.dirs:
            while os.path.isdir(group):
                left = _procs(group)
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    os.rmdir(group)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        if group in self.optional:
                            break
                        raise SockerError(
                            f"cannot remove cgroup {group}: {e.strerror}"
                            + (f" (processes still in it: {sorted(left)})" if left else ""),
                            f"remove it by hand once its processes are gone: rmdir {group}",
                        ) from None
                time.sleep(0.01)
        self.dirs = []
        self.paths = {}


def _procs(group: str) -> set[int]:
    try:
        return {int(p) for p in _read(os.path.join(group, "cgroup.procs")).split()}
    except (OSError, ValueError):
        return set()


def create_cgroup(spec: ContainerSpec, layout: Layout | None = None) -> Cgroup | None:
    """The groups with the spec's limits applied, or None when it sets no limit.

    Call ``add(pid)`` for the container's process before it execs (and before it unshares a
    cgroup namespace), and ``remove()`` once it has exited.
    """
    if spec.memory is None and spec.cpus is None and spec.pids_limit is None:
        return None
    limits = _limits(spec)
    rootless = spec.rootless if spec.rootless is not None else os.geteuid() != 0
    cg = Cgroup(spec.id or f"pid-{os.getpid()}", rootless)
    try:
        cg._setup(layout if layout is not None else detect(), limits)
    except BaseException:
        try:
            cg.remove()
        except SockerError:
            pass
        raise
    return cg


def join_like(pid: int, like: int) -> None:
    """Move ``pid`` into the groups process ``like`` is in (``socker exec`` joins the container's
    limits). Only hierarchies where the two differ are touched; failing to join a group socker
    made (``.../socker/<id>``, where the limits are) is an error, other groups are best effort
    (a container without limits shares the groups its ``socker run`` was started in)."""
    try:
        want_v2, want_v1 = parse_proc_cgroup(_read(f"/proc/{like}/cgroup"))
        have_v2, have_v1 = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup"))
    except OSError as e:
        raise SockerError(f"cannot read the cgroups of process {like}: {e.strerror}") from None
    layout = detect()
    rootless = os.geteuid() != 0
    todo = []
    if layout.v2 is not None and want_v2 is not None and want_v2 != have_v2:
        todo.append(Hierarchy(2, layout.v2.mountpoint, layout.v2.root, own=want_v2))
    seen = set()
    for c, h in layout.v1.items():
        if h.mountpoint in seen or c not in want_v1 or want_v1.get(c) == have_v1.get(c):
            continue
        seen.add(h.mountpoint)
        todo.append(Hierarchy(1, h.mountpoint, h.root, own=want_v1[c]))
    for h in todo:
        ours = os.path.basename(os.path.dirname(h.own.rstrip("/"))) == PARENT
        d = h.own_dir()
        if d is None:
            if ours:
                raise SockerError(f"the cgroup {h.own} of process {like} is not visible here")
            continue
        try:
            _write(os.path.join(d, "cgroup.procs"), str(pid), f"move process {pid} into", rootless)
        except SockerError:
            if ours:
                raise
