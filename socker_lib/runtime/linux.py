"""The Linux system calls the runtime needs and Python 3.11's ``os`` lacks, through ``ctypes``.

Every wrapper raises ``OSError`` (errno, strerror, path) on failure, like ``os`` does. Only the
standard library is imported: this module is on ``socker run``'s start-up path.

- Namespaces: ``unshare``, ``setns`` and the ``CLONE_NEW*`` flags.
- Mounts: ``mount``, ``umount2``, ``pivot_root``, ``mount_setattr`` (``set_mount_attr``:
  read-only / nodev on a mount or a whole tree without knowing its other flags).
- Paths inside a root: ``open_in_root`` resolves a path as if ``rootfd`` were ``/`` (symlinks
  and ``..`` never leave it, magic links are refused): ``openat2(RESOLVE_IN_ROOT)``, with a
  pure-Python walk on kernels older than 5.6. ``fd_path(fd)`` is the ``/proc/self/fd/N`` path
  through which ``mount`` reaches what such a descriptor refers to (runc does the same).
- Identity: ``sethostname``, ``prctl``, ``capget``/``capset`` (capability sets as bit masks),
  ``CAP_NAMES`` and ``last_cap()``.
- Network: ``loopback_up()`` sets ``IFF_UP`` on ``lo`` of the current network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import posixpath
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_c_long = ctypes.c_long

# clone(2) / unshare(2) flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# mount_setattr(2)
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# openat2(2) resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# tty ioctls
TIOCSCTTY = 0x540E
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431

CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip

# System call numbers for what older glibc does not wrap. openat2 and mount_setattr have the
# same number on every architecture (the unified table, Linux >= 5.1).
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "i686": 217, "i386": 217,
                   "armv7l": 218, "ppc64le": 203, "s390x": 217}  # fmt: skip


def _err(what: str, path: str | None = None) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{os.strerror(e)} ({what})", path)


def _b(s: str | bytes | None) -> bytes | None:
    return os.fsencode(s) if s is not None else None


def _syscall(number: int, *args) -> int:
    _libc.syscall.restype = _c_long
    return _libc.syscall(_c_long(number), *args)


# ---------------------------------------------------------------------------------------------
# Namespaces


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _err("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _err("setns")


# ---------------------------------------------------------------------------------------------
# Mounts


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        raise _err(f"mount {fstype or 'bind'}", target)


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), ctypes.c_int(flags)) != 0:
        raise _err("umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    fn = getattr(_libc, "pivot_root", None)
    if fn is not None:
        ret = fn(_b(new_root), _b(put_old))
    else:
        ret = _syscall(_SYS_PIVOT_ROOT[os.uname().machine], _b(new_root), _b(put_old))
    if ret != 0:
        raise _err("pivot_root", new_root)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def mount_setattr(fd: int, attr_set: int, *, recursive: bool = False, attr_clr: int = 0) -> None:
    """Set ``MOUNT_ATTR_*`` on the mount whose root ``fd`` is (and every mount below it)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    ret = _syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(flags),
                   ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))  # fmt: skip
    if ret != 0:
        raise _err("mount_setattr")


# statvfs f_flag bits -> the mount flags a bind remount must repeat (else EPERM in a user ns)
_ST_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
             (2048, MS_NODIRATIME), (4096, MS_RELATIME))  # fmt: skip


def set_mount_attr(fd: int, attr: int, *, recursive: bool = False) -> None:
    """Add ``MOUNT_ATTR_RDONLY``/``NODEV``/``NOSUID``/``NOEXEC`` to the mount rooted at ``fd``.

    ``mount_setattr`` (Linux >= 5.12) changes only those bits, recursively if asked. Older
    kernels: a bind remount of that one mount that repeats its current flags.
    """
    try:
        mount_setattr(fd, attr, recursive=recursive)
        return
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
    path = fd_path(fd)
    st = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | attr  # MOUNT_ATTR_RDONLY..NOEXEC == MS_RDONLY..MS_NOEXEC
    for st_bit, ms in _ST_TO_MS:
        if st & st_bit:
            flags |= ms
    mount(None, path, None, flags)


def fd_path(fd: int) -> str:
    """The path through which system calls taking paths reach what ``fd`` refers to."""
    return f"/proc/self/fd/{fd}"


# ---------------------------------------------------------------------------------------------
# Paths resolved inside a root

_openat2_missing = False


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    fd = _syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), _b(path), ctypes.byref(how), ctypes.c_size_t(24))
    if fd < 0:
        raise _err("openat2", path)
    return fd


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open ``path`` as if ``rootfd`` were ``/``: nothing (symlink, ``..``) leads out of it.

    The final component is followed too (a symlink mountpoint is mounted on what it points
    to, inside the root, as Docker's securejoin does). Raises ``FileNotFoundError`` etc.
    """
    global _openat2_missing
    rel = posixpath.normpath("/" + path).lstrip("/") or "."
    flags |= os.O_CLOEXEC
    if not _openat2_missing:
        try:
            return openat2(rootfd, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            _openat2_missing = True
    return _open_in_root_walk(rootfd, rel, flags)


def _open_in_root_walk(rootfd: int, rel: str, flags: int) -> int:
    """``open_in_root`` by hand: one component at a time, symlinks expanded against the root."""
    todo = [c for c in rel.split("/") if c not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        try:  # every component in done is a plain name, checked not to be a symlink
            target = os.readlink("/".join([*done, name]), dir_fd=rootfd)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: not a symlink
                raise
            done.append(name)
            continue
        hops += 1
        if hops > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
        if target.startswith("/"):
            done = []
        todo[:0] = [c for c in target.split("/") if c not in ("", ".")]
    return os.open("/".join(done) or ".", flags | os.O_NOFOLLOW, dir_fd=rootfd)


def make_in_root(rootfd: int, path: str, kind: str = "dir", mode: int = 0o755, *, _hops: int = 0) -> int:
    """``open_in_root``, creating ``path`` first if it is missing (parents as directories).

    ``kind`` is ``dir`` or ``file`` (an empty file). Every component is created in a parent
    opened with ``open_in_root``, so creation cannot be redirected out of the root either; a
    dangling symlink is followed (inside the root) and what it names is created, as Docker's
    securejoin + MkdirAll do.
    """
    try:
        return open_in_root(rootfd, path)
    except FileNotFoundError:
        pass
    if _hops > 40:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    rel = posixpath.normpath("/" + path).lstrip("/")
    parent, name = posixpath.split(rel)
    pfd = make_in_root(rootfd, parent, "dir", _hops=_hops) if parent else os.dup(rootfd)
    try:
        try:
            link = os.readlink(name, dir_fd=pfd)
        except OSError:
            link = None
        if link is not None:
            if not link.startswith("/"):  # relative to where the parent really is in the root
                root_path, parent_path = os.readlink(fd_path(rootfd)), os.readlink(fd_path(pfd))
                base = parent_path[len(root_path) :] if parent_path.startswith(root_path) else "/"
                link = posixpath.join("/", base, link)
            return make_in_root(rootfd, link, kind, mode, _hops=_hops + 1)
        if kind == "dir":
            os.mkdir(name, mode, dir_fd=pfd)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(name, flags, mode, dir_fd=pfd))
    finally:
        os.close(pfd)
    return open_in_root(rootfd, path)


# ---------------------------------------------------------------------------------------------
# Identity: host name, prctl, capabilities


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
        raise _err("sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                      ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))  # fmt: skip
    if ret < 0:
        raise _err(f"prctl {option}")
    return ret


_CAP_V3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of ``pid`` (0: this thread) as 64-bit masks."""
    hdr = _CapHeader(_CAP_V3, pid)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        raise _err("capget")
    e, p, i = (
        (getattr(data[0], f) | getattr(data[1], f) << 32) for f in ("effective", "permitted", "inheritable")
    )
    return e, p, i


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise _err("capset")


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return min(int(f.read()), len(CAP_NAMES) - 1)
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


# ---------------------------------------------------------------------------------------------
# Network

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (what ``ip link set lo up`` does)."""
    fd = _libc.socket(ctypes.c_int(2), ctypes.c_int(2 | 0o2000000), ctypes.c_int(0))  # AF_INET, DGRAM|CLOEXEC
    if fd < 0:
        raise _err("socket")
    try:
        ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(fd, _SIOCGIFFLAGS, ifreq)
        flags = struct.unpack_from("H", ifreq, 16)[0] | _IFF_UP
        fcntl.ioctl(fd, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags))
    finally:
        os.close(fd)
