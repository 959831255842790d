"""Apply image layers to a flat root filesystem, with the semantics of ``umoci unpack``.

A layer is an uncompressed tar stream; applying an image's layers in order onto one directory
gives its root filesystem. ``RootfsWriter.apply`` reads each stream strictly sequentially and
to its very end, so that the caller's diff_id hash sees every byte. What it does (image-spec
``layer.md``, umoci's ``oci/layer/tar_extract.go``):

* ``.wh.NAME`` removes NAME of lower layers; ``.wh..wh..opq`` empties its directory of lower
  content. Neither touches what the same layer adds, wherever it stands in the tar.
* A directory over a directory changes attributes only; any other entry replaces the old path.
* Ownership (before the mode, since chown clears setuid), mode, ``SCHILY.xattr.*`` xattrs and
  times to the nanosecond. A directory keeps the times it was given when children change.

Every path is resolved as if the root filesystem were ``/`` (the "secure join" of umoci and
filepath-securejoin): ``..`` stops at the root, symlinks in parent components are followed
inside the root, the final component is never followed. Entries that cannot be contained
(invalid whiteouts, hard links to what is not in the image, device numbers out of range, ...)
raise ``UnsafeLayerError``; the caller then discards the half-built directory.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import tarfile
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field

from socker_lib.errors import SockerError, UnsafeLayerError
from socker_lib.tarstream import TarReader

__all__ = ["ApplyOptions", "ApplyReport", "RootfsWriter", "apply_layers"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"

_COPY_CHUNK = 1 << 20
# filepath-securejoin gives up after this many symlink expansions in one path.
_MAX_LINK_HOPS = 255
# Linux dev_t as mknod(2) takes it: 12-bit major, 20-bit minor.
_MAX_MAJOR = (1 << 12) - 1
_MAX_MINOR = (1 << 20) - 1
# (uid_t)-1 means "leave unchanged" to chown(2), so it is no owner a layer may ask for.
_MAX_ID = (1 << 32) - 2
_PAX_XATTR = "SCHILY.xattr."
# Host-specific xattrs that umoci neither takes from a layer nor clears (oci/layer/tar_generate.go).
_HOST_XATTRS = frozenset(
    {
        "security.selinux",
        "system.nfs4_acl",
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "trusted.overlay.origin",
        "trusted.overlay.impure",
        "trusted.overlay.nlink",
        "trusted.overlay.upper",
        "trusted.overlay.metacopy",
    }
)
_PRIVILEGED_XATTR_NAMESPACES = ("trusted.", "security.")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ABSENT = (FileNotFoundError, NotADirectoryError)
_LAYER_HINT = "the image is broken or hostile; socker will not unpack it"

# An open file descriptor, or a path whose last component is never followed.
Target = int | str


@dataclass
class ApplyOptions:
    """How layers are applied.

    ``rootless``: ``None`` decides from the effective uid. Rootless leaves ownership alone, skips
    device nodes and ``trusted.``/``security.`` xattrs, tolerates xattr failures (each noted in
    the report) and keeps directories writable by their owner until ``finish()``.
    """

    rootless: bool | None = None

    def is_rootless(self) -> bool:
        return os.geteuid() != 0 if self.rootless is None else self.rootless


@dataclass
class ApplyReport:
    """What applying one layer (or several, from ``apply_layers``) did."""

    entries: int = 0
    skipped: list[str] = field(default_factory=list)


class _Privileged:
    """As root: ownership, device nodes and every xattr as the layer says (umoci's fseval.Default)."""

    def __init__(self) -> None:
        self.xattrs_unsupported = False

    def chown(self, target: Target, uid: int, gid: int) -> None:
        os.chown(target, uid, gid, **_nofollow(target))

    def dir_mode_now(self, mode: int) -> int:
        return mode

    def make_device(self, path: str, m: tarfile.TarInfo, report: ApplyReport) -> bool:
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        return True

    def xattr_refusal(self, name: str) -> str | None:
        return "host-specific, never taken from a layer" if name in _HOST_XATTRS else None

    def xattr_failed(self, err: OSError, name: str, m: tarfile.TarInfo, report: ApplyReport) -> None:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            # umoci warns once and goes on: the filesystem has no xattrs at all.
            if not self.xattrs_unsupported:
                report.skipped.append(f"{m.name}: xattrs not supported by the filesystem, none set")
            self.xattrs_unsupported = True
        elif err.errno == errno.EPERM and name.startswith("user.") and not (m.isfile() or m.isdir()):
            # Linux allows user.* xattrs only on files and directories (containerd ignores these too).
            report.skipped.append(f"{m.name}: xattr {name} not set (not allowed on this file type)")
        else:
            raise err

    def layer_done(self, report: ApplyReport) -> None:
        self.xattrs_unsupported = False


class _Rootless(_Privileged):
    """Without privileges: degrade gracefully and say what could not be done."""

    def __init__(self) -> None:
        super().__init__()
        self.foreign_owners = 0

    def chown(self, target: Target, uid: int, gid: int) -> None:
        if uid or gid:
            self.foreign_owners += 1

    def dir_mode_now(self, mode: int) -> int:
        # Later entries and layers still write into this directory; finish() sets the real mode.
        return mode | 0o700

    def make_device(self, path: str, m: tarfile.TarInfo, report: ApplyReport) -> bool:
        kind = "character" if m.ischr() else "block"
        report.skipped.append(f"{m.name}: {kind} device {m.devmajor}:{m.devminor} not created (rootless)")
        return False

    def xattr_refusal(self, name: str) -> str | None:
        if name.startswith(_PRIVILEGED_XATTR_NAMESPACES):
            return "needs root"
        return super().xattr_refusal(name)

    def xattr_failed(self, err: OSError, name: str, m: tarfile.TarInfo, report: ApplyReport) -> None:
        report.skipped.append(f"{m.name}: xattr {name} not set ({err.strerror}, rootless)")

    def layer_done(self, report: ApplyReport) -> None:
        super().layer_done(report)
        if self.foreign_owners:
            report.skipped.append(
                f"{self.foreign_owners} entries owned by other users than root belong to you instead (rootless)"
            )
        self.foreign_owners = 0


class RootfsWriter:
    """Applies successive layers to one rootfs; call apply(...) once per layer in order, then finish()."""

    def __init__(self, rootfs: str | os.PathLike, options: ApplyOptions | None = None):
        self.root = os.path.realpath(os.fspath(rootfs))
        self.options = options or ApplyOptions()
        self._fs = _Rootless() if self.options.is_rootless() else _Privileged()
        # Entry directory (as named in the tar) -> its in-root path with all links resolved.
        # Only real directories are cached; any removal of a directory or symlink clears it.
        self._resolved: dict[str, str] = {"": ""}
        # Directory (host path) -> (atime_ns, mtime_ns) it gets back when the layer is done.
        self._dir_times: dict[str, tuple[int, int]] = {}
        # Rootless: directory (host path) -> mode held back until finish().
        self._dir_modes: dict[str, int] = {}
        # In-root paths the current layer created, with their ancestors (umoci's upperPaths).
        self._upper: set[str] = set()
        self._entry = ""
        self._prepare_root()

    def apply(self, tar_stream: typing.BinaryIO) -> ApplyReport:
        """Apply one uncompressed layer tar, read sequentially and drained to EOF."""
        report = ApplyReport()
        self._upper = set()
        self._entry = ""
        head = _read_block(tar_stream)
        if head.strip(b"\0"):
            self._apply_tar(_Prepended(head, tar_stream), report)
        _drain(tar_stream)
        self._restore_dir_times()
        self._fs.layer_done(report)
        return report

    def finish(self) -> None:
        """Give directories their final modes (held back when rootless) and times."""
        self._restore_dir_times()
        # Deepest first, so that a parent stays searchable while its children change.
        for path in sorted(self._dir_modes, key=lambda p: p.count("/"), reverse=True):
            os.chmod(path, self._dir_modes[path])
        self._dir_modes.clear()

    # -- the tar loop -------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        try:
            os.mkdir(self.root, 0o755)
        except FileExistsError:
            if os.listdir(self.root):
                return
        # As umoci does: a new root starts at the epoch, so images without "./" unpack reproducibly.
        os.utime(self.root, ns=(0, 0))

    def _apply_tar(self, stream: _Prepended, report: ApplyReport) -> None:
        try:
            # tarstream parses headers several times faster than tarfile, with the same names
            with TarReader(stream) as tf:
                while (member := tf.next()) is not None:
                    # A streaming TarFile keeps every header it has read; thousands add up.
                    tf.members.clear()
                    report.entries += 1
                    self._apply_entry(tf, member, report)
        except tarfile.TarError as err:
            where = f" (last entry read: {self._entry!r})" if self._entry else ""
            raise UnsafeLayerError(f"layer is not a readable tar stream{where}: {err}", _LAYER_HINT) from err

    def _apply_entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo, report: ApplyReport) -> None:
        self._entry = m.name
        try:
            self._unpack(tf, m, report)
        except (UnsafeLayerError, tarfile.TarError):
            raise
        except (ValueError, OverflowError) as err:
            raise UnsafeLayerError(f"layer entry {m.name!r} is malformed: {err}", _LAYER_HINT) from err
        except RecursionError as err:
            raise UnsafeLayerError(
                f"layer entry {m.name!r} nests directories too deeply", _LAYER_HINT
            ) from err
        except OSError as err:
            raise SockerError(
                f"cannot apply layer entry {m.name!r}: {err}",
                "check free space and permissions where the image is unpacked",
            ) from err

    def _unpack(self, tf: tarfile.TarFile, m: tarfile.TarInfo, report: ApplyReport) -> None:
        name = _clean(m.name)
        if not name:
            return self._apply_root(m, report)
        unsafe_dir, _, base = name.rpartition("/")
        parent, parent_is_dir = self._resolve_dir(unsafe_dir)
        host_parent = self._host(parent)
        if parent_is_dir:
            self._keep_dir_times(host_parent)
        if base.startswith(WHITEOUT_PREFIX):
            return self._whiteout(parent, base, host_parent)
        self._check(m)
        if not parent_is_dir:
            self._make_dirs(parent)
            self._resolved[unsafe_dir] = parent
        inroot = f"{parent}/{base}" if parent else base
        path = f"{host_parent}/{base}"
        kept_dir = self._clear(path, m.isdir())
        self._create(tf, m, report, path, kept_dir)
        if m.isdir():
            self._resolved[name] = inroot
        self._mark_upper(inroot)

    def _check(self, m: tarfile.TarInfo) -> None:
        if m.ischr() or m.isblk():
            if not (0 <= m.devmajor <= _MAX_MAJOR and 0 <= m.devminor <= _MAX_MINOR):
                self._refuse(f"has device number {m.devmajor}:{m.devminor}, out of range")
        elif not (m.isfile() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            self._refuse(f"has an unsupported type {m.type!r}")
        if not (0 <= m.uid <= _MAX_ID and 0 <= m.gid <= _MAX_ID):
            self._refuse(f"has owner {m.uid}:{m.gid}, out of range")

    def _refuse(self, problem: str) -> typing.NoReturn:
        raise UnsafeLayerError(f"layer entry {self._entry!r} {problem}", _LAYER_HINT)

    # -- creating entries ---------------------------------------------------------------------

    def _create(
        self, tf: tarfile.TarFile, m: tarfile.TarInfo, report: ApplyReport, path: str, kept_dir: bool
    ) -> None:
        if m.isfile():
            self._write_file(tf, m, report, path)
        elif m.isdir():
            self._write_dir(m, report, path, kept_dir)
        elif m.issym():
            os.symlink(m.linkname, path)
            self._set_node_meta(path, m, report, is_symlink=True)
        elif m.islnk():
            self._hardlink(m, path)
        elif m.isfifo():
            os.mknod(path, stat.S_IFIFO | 0o600)
            self._set_node_meta(path, m, report, is_symlink=False)
        elif self._fs.make_device(path, m, report):
            self._set_node_meta(path, m, report, is_symlink=False)

    def _write_file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, report: ApplyReport, path: str) -> None:
        fd = os.open(path, _NEW_FILE, 0o600)
        try:
            if m.size:
                _copy_to_fd(tf.extractfile(m), fd)
            self._set_meta(fd, m, report)
        finally:
            os.close(fd)

    def _write_dir(self, m: tarfile.TarInfo, report: ApplyReport, path: str, kept_dir: bool) -> None:
        if not kept_dir:
            os.mkdir(path, 0o700)
        fd = os.open(path, _OPEN_DIR)
        try:
            self._set_meta(fd, m, report, dir_path=path)
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, path: str) -> None:
        target = _clean(m.linkname)
        if not target:
            self._refuse("is a hard link to the root directory")
        unsafe_dir, _, base = target.rpartition("/")
        source = f"{self._host(self._resolve_dir(unsafe_dir)[0])}/{base}"
        try:
            # Not following the source: a hard link to a symlink links the symlink itself.
            os.link(source, path, follow_symlinks=False)
        except _ABSENT:
            self._refuse(f"is a hard link to {m.linkname!r}, which is not in the image")
        except (PermissionError, IsADirectoryError):
            if not stat.S_ISDIR(os.lstat(source).st_mode):
                raise
            self._refuse(f"is a hard link to {m.linkname!r}, which is a directory")

    def _apply_root(self, m: tarfile.TarInfo, report: ApplyReport) -> None:
        if not m.isdir():
            # It could turn the root into a symlink that later entries would follow (umoci refuses too).
            self._refuse("would change the type of the root directory")
        self._check(m)
        fd = os.open(self.root, _OPEN_DIR)
        try:
            self._set_meta(fd, m, report, dir_path=self.root)
        finally:
            os.close(fd)

    # -- metadata -----------------------------------------------------------------------------

    def _set_meta(
        self, fd: int, m: tarfile.TarInfo, report: ApplyReport, dir_path: str | None = None
    ) -> None:
        """Owner, mode, xattrs, times of a file or directory, through its open descriptor."""
        self._fs.chown(fd, m.uid, m.gid)
        mode = m.mode & 0o7777
        if dir_path is not None:
            now = self._fs.dir_mode_now(mode)
            if now != mode:
                self._dir_modes[dir_path] = mode
            mode = now
        os.chmod(fd, mode)
        self._set_xattrs(fd, m, report)
        times = _times_ns(m)
        os.utime(fd, ns=times)
        if dir_path is not None:
            self._dir_times[dir_path] = times

    def _set_node_meta(self, path: str, m: tarfile.TarInfo, report: ApplyReport, is_symlink: bool) -> None:
        """The same for a symlink, fifo or device node just created at path."""
        self._fs.chown(path, m.uid, m.gid)
        if not is_symlink:
            # Safe to follow: path is the node made a moment ago, not a link (Linux has no lchmod).
            os.chmod(path, m.mode & 0o7777)
        self._set_xattrs(path, m, report)
        os.utime(path, ns=_times_ns(m), follow_symlinks=False)

    def _set_xattrs(self, target: Target, m: tarfile.TarInfo, report: ApplyReport) -> None:
        """Make the xattrs exactly those of the entry (umoci clears, then sets)."""
        wanted = _layer_xattrs(m)
        nofollow = _nofollow(target)
        try:
            present = os.listxattr(target, **nofollow)
        except OSError as err:
            self._fs.xattr_failed(err, "(listing)", m, report)
            present = []
        for name in present:
            if name not in wanted and name not in _HOST_XATTRS:
                try:
                    os.removexattr(target, name, **nofollow)
                except OSError as err:
                    self._fs.xattr_failed(err, name, m, report)
        for name, value in wanted.items():
            refusal = self._fs.xattr_refusal(name)
            if refusal:
                report.skipped.append(f"{m.name}: xattr {name} not set ({refusal})")
                continue
            try:
                os.setxattr(target, name, value, **nofollow)
            except OSError as err:
                self._fs.xattr_failed(err, name, m, report)

    def _keep_dir_times(self, host_dir: str) -> None:
        """Remember a directory's times before an entry changes it (umoci restores them after)."""
        if host_dir not in self._dir_times:
            st = os.lstat(host_dir)
            self._dir_times[host_dir] = (st.st_atime_ns, st.st_mtime_ns)

    def _restore_dir_times(self) -> None:
        for path, times in self._dir_times.items():
            os.utime(path, ns=times, follow_symlinks=False)
        self._dir_times.clear()

    # -- whiteouts ----------------------------------------------------------------------------

    def _whiteout(self, parent: str, base: str, host_parent: str) -> None:
        if base == OPAQUE_WHITEOUT:
            target, opaque = parent, True
        else:
            hidden = base[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                # umoci would remove the directory itself, or its parent: the root's parent.
                self._refuse("is an invalid whiteout")
            target, opaque = (f"{parent}/{hidden}" if parent else hidden), False
        host = self._host(target)
        try:
            st = os.lstat(host)
        except _ABSENT:
            return
        self._hide(target, host, st, opaque, host_parent)

    def _hide(self, inroot: str, host: str, st: os.stat_result, keep: bool, whiteout_dir: str) -> None:
        """Remove what lower layers put at inroot, keeping what this layer added (umoci's walk)."""
        if inroot not in self._upper and not keep:
            self._remove(host, st)
            parent = host.rpartition("/")[0]
            if parent != whiteout_dir:
                # umoci restores only the whiteout's own directory; a deeper one keeps the change.
                self._dir_times.pop(parent, None)
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        for child in os.listdir(host):
            child_host = f"{host}/{child}"
            try:
                child_st = os.lstat(child_host)
            except FileNotFoundError:
                continue
            self._hide(f"{inroot}/{child}" if inroot else child, child_host, child_st, False, whiteout_dir)

    def _mark_upper(self, inroot: str) -> None:
        upper = self._upper
        # Ancestors of a marked path are marked already, so stop at the first one.
        while inroot and inroot not in upper:
            upper.add(inroot)
            inroot = inroot.rpartition("/")[0]

    # -- paths --------------------------------------------------------------------------------

    def _host(self, inroot: str) -> str:
        return f"{self.root}/{inroot}" if inroot else self.root

    def _resolve_dir(self, unsafe: str) -> tuple[str, bool]:
        """In-root path of the directory an entry names, links resolved inside the root; and
        whether a real directory is there now."""
        hit = self._resolved.get(unsafe)
        if hit is not None:
            return hit, True
        # Start from the nearest cached ancestor ("" , the root, always is).
        names: list[str] = []
        above = unsafe
        while hit is None:
            above, _, name = above.rpartition("/")
            names.append(name)
            hit = self._resolved.get(above)
        resolved, is_dir = hit, True
        for name in reversed(names):
            above = f"{above}/{name}" if above else name
            if not is_dir:
                # Below a missing or non-directory component nothing exists, so nothing is a link.
                resolved = f"{resolved}/{name}" if resolved else name
                continue
            resolved = self._follow(resolved, name)
            is_dir = self._is_dir(resolved)
            if is_dir:
                self._resolved[above] = resolved
        return resolved, is_dir

    def _is_dir(self, inroot: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self._host(inroot)).st_mode)
        except _ABSENT:
            return False

    def _follow(self, start: str, tail: str) -> str:
        """filepath-securejoin's walk: `..` stops at the root and absolute link targets start there."""
        parts = start.split("/") if start else []
        todo = tail.split("/")[::-1]
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
            host = self._host("/".join(parts))
            try:
                st = os.lstat(host)
            except _ABSENT:
                continue
            if not stat.S_ISLNK(st.st_mode):
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS:
                self._refuse("goes through too many levels of symbolic links")
            target = os.readlink(host)
            parts.pop()
            if target.startswith("/"):
                parts = []
            todo.extend(target.split("/")[::-1])
        return "/".join(parts)

    def _make_dirs(self, inroot: str) -> None:
        """Create the missing directories of a resolved (link-free) in-root path, as MkdirAll."""
        missing = []
        while inroot:
            try:
                st = os.lstat(self._host(inroot))
            except FileNotFoundError:
                missing.append(inroot)
                inroot = inroot.rpartition("/")[0]
                continue
            except NotADirectoryError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._refuse(f"needs a directory where the image has a non-directory: {inroot!r}")
            break
        for directory in reversed(missing):
            host = self._host(directory)
            os.mkdir(host, 0o777)
            # A directory made on the way has no entry: umoci leaves its parent's changed times.
            self._dir_times.pop(host.rpartition("/")[0], None)

    def _clear(self, path: str, entry_is_dir: bool) -> bool:
        """Remove what is at path unless both it and the entry are directories; say if one is kept."""
        try:
            old = os.lstat(path)
        except _ABSENT:
            return False
        if entry_is_dir and stat.S_ISDIR(old.st_mode):
            return True
        self._remove(path, old)
        return False

    def _remove(self, path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self._forget_tree(path)
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self._resolved = {"": ""}

    def _forget_tree(self, path: str) -> None:
        self._resolved = {"": ""}
        inside = path + "/"
        for table in (self._dir_times, self._dir_modes):
            for key in [k for k in table if k == path or k.startswith(inside)]:
                del table[key]


def apply_layers(
    rootfs: str | os.PathLike, tar_streams: Iterable[typing.BinaryIO], options: ApplyOptions | None = None
) -> ApplyReport:
    """Apply uncompressed layer tars in order to rootfs and finish it; one report for all."""
    writer = RootfsWriter(rootfs, options)
    total = ApplyReport()
    for stream in tar_streams:
        report = writer.apply(stream)
        total.entries += report.entries
        total.skipped.extend(report.skipped)
    writer.finish()
    return total


class _Prepended:
    """A reader that returns bytes already read from a stream, then the rest of the stream."""

    def __init__(self, head: bytes, stream: typing.BinaryIO):
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            out, self._head = self._head + self._stream.read(), b""
        else:
            out, self._head = self._head[:size], self._head[size:]
        return out


def _read_block(stream: typing.BinaryIO) -> bytes:
    """The first tar block, or less at EOF: an empty stream is an empty layer, as for Go's reader."""
    head = b""
    while len(head) < tarfile.BLOCKSIZE:
        more = stream.read(tarfile.BLOCKSIZE - len(head))
        if not more:
            break
        head += more
    return head


def _drain(stream: typing.BinaryIO) -> None:
    # Padding and junk after the end marker are part of the diff_id the caller checks.
    while stream.read(_COPY_CHUNK):
        pass


def _copy_to_fd(src: typing.BinaryIO, fd: int) -> None:
    while chunk := src.read(_COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _clean(name: str) -> str:
    """An entry name as a path inside the root, '' for the root itself (umoci's CleanPath)."""
    return posixpath.normpath("/" + name).lstrip("/")


def _nofollow(target: Target) -> dict[str, bool]:
    return {} if isinstance(target, int) else {"follow_symlinks": False}


def _layer_xattrs(m: tarfile.TarInfo) -> dict[str, bytes]:
    if not m.pax_headers:
        return {}
    return {
        key[len(_PAX_XATTR) :]: value.encode("utf-8", "surrogateescape")
        for key, value in m.pax_headers.items()
        if key.startswith(_PAX_XATTR)
    }


def _times_ns(m: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns: PAX times are exact to the ns; a missing atime is the mtime (as umoci)."""
    pax = m.pax_headers
    mtime = _pax_time_ns(pax["mtime"]) if "mtime" in pax else int(m.mtime) * 1_000_000_000
    atime = _pax_time_ns(pax["atime"]) if "atime" in pax else mtime
    return atime, mtime


def _pax_time_ns(text: str) -> int:
    """Parse a PAX time such as "1700000000.123456789" like Go's archive/tar (digits past ns cut)."""
    secs, _, frac = text.partition(".")
    whole = int(secs) * 1_000_000_000
    if not frac:
        return whole
    if not frac.isdigit():
        raise ValueError(f"invalid PAX time {text!r}")
    nanos = int(frac[:9].ljust(9, "0"))
    return whole - nanos if secs.startswith("-") else whole + nanos
