"""Pack a root filesystem directory into one deterministic, compressed layer blob.

The inverse of ``socker_lib.layers``: ``pack_layer(rootfs, dest)`` walks the tree once and
streams tar bytes -> sha256 (the ``diff_id``) -> compressor -> ``dest``, hashing the compressed
bytes (the layer ``digest``) as they are written. Only a few 1 MiB blocks are ever in memory.

The tar is a pure function of the tree (the same directory packs to the same bytes, always;
a tree unpacked from the layer packs to it again):

* every entry below the root (no ``./`` entry, as Docker layers), depth first with each
  directory's children in byte order of their names, so ``a`` < ``a/b`` < ``a-b``
  (GNU tar's ``--sort=name``);
* PAX format with Go's ``archive/tar`` conventions: ustar headers with numeric uid/gid and
  empty uname/gname, PAX records only where ustar cannot say it (``path``/``linkpath`` longer
  than 100 bytes or not ASCII, large ``size``/``uid``/``gid``, an ``mtime`` with a non-zero
  nanosecond fraction or before 1970, ``SCHILY.xattr.NAME`` byte for byte), and
  ``hdrcharset=BINARY`` before a name that is not UTF-8, as bsdtar and ``tarfile`` write it
  (bsdtar refuses such names without it; GNU tar notes it does not know it and reads on);
* mode with setuid/setgid/sticky; mtimes clamped to ``SOURCE_DATE_EPOCH`` when it is set;
  no atime or ctime;
* the first path of an inode (in that order) carries the data, later paths are hard links to
  it; sockets are left out; a directory on another filesystem (a mount point) is packed
  without its content, as ``tar --one-file-system`` would;
* xattrs sorted by name, minus the host-specific ones umoci neither packs nor unpacks. An
  empty xattr value is written too, but POSIX reads an empty PAX record as "delete", so Go
  tools (umoci, containerd) drop it; GNU tar, bsdtar and socker keep it;
* the end is two zero blocks, with no padding to a 10 KiB record (as Go's writer).

Directories are opened relative to their parent with ``O_NOFOLLOW`` and files are read through
a descriptor opened the same way and checked with ``fstat`` against what was listed, so no
symlink is followed and nothing outside the root is read, even if the tree changes meanwhile.

Compression::

    gzip  levels 0-3: ISA-L (``isal``), default 1; 4-9: zlib (7x slower, ~7 % smaller)
    zstd  default level 3, with zstd's own worker threads
    none

gzip is the default because every registry and client takes it (Docker Hub, old containerd,
umoci 0.4, WSL's bsdtar). It is made in pigz's way: the tar is cut into 1 MiB blocks, each
deflated on its own on a thread pool with the previous 32 KiB as its dictionary and ended with
a sync flush, and the results are written in order under one gzip header (mtime 0, no file
name, OS "unknown") and trailer. A block's bytes depend only on the block, its dictionary and
the level, so the output is the same whatever the number of threads or their timing (tested
with 1 to 5). zstd's multithreaded output likewise depends on neither the number of workers
nor how the input is fed (checked with 1, 2 and 4 workers and 64 KiB to 3 MiB writes); its
single-threaded mode gives other bytes, so it is never used. A walking thread reads the tree,
the pool compresses, and one writing thread hashes the tar, hashes and writes the blob.

Measured on the 2-CPU build machine (AMD EPYC with SHA-NI and AVX-512) with a Debian 12
minbase tree in the page cache (206 MB, 6,767 entries, a 204 MB tar). Compressors alone, one
thread, on that tar::

    isal 0   369 MB/s  116.0 MB   (level 0 swells incompressible data)
    isal 1   437 MB/s   99.5 MB
    isal 2   385 MB/s   98.8 MB
    isal 3   228 MB/s   97.5 MB
    zlib 1    65 MB/s   98.9 MB
    zlib 6    30 MB/s   92.5 MB   (gzip -6)
    zstd 3   256 MB/s   82.9 MB   (2 workers: 527 MB/s, 83.8 MB)

Packing the tree, wall time, best of 5 on a quiet machine::

    pack_layer gzip 1   0.53 s   99.5 MB
    pack_layer gzip 2   0.55 s   98.8 MB
    pack_layer zstd 3   0.66 s   83.6 MB
    pack_layer none     0.32 s  204.8 MB
    tar --sort=name -cf - . | gzip -6   6.74 s   92.6 MB
    tar --sort=name -cf - . | pigz -6   3.06 s   92.5 MB
    umoci repack (whole tree as one new layer)   2.35 s   95.1 MB

Level 1 is the default gzip level: its compressor is 12 % faster than level 2's for 0.7 %
more bytes, and level 0 would swell incompressible files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import stat
import struct
import threading
import typing
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from socker_lib.errors import ConfigError, SockerError
from socker_lib.layers import _HOST_XATTRS

__all__ = ["PackedLayer", "pack_layer"]

BLOCK_SIZE = 1 << 20  # tar bytes per compression block and per hash update
_DICT_SIZE = 1 << 15  # deflate's window: what a block may refer back to in the one before
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown
_ISAL_LEVELS = range(0, 4)  # higher gzip levels are zlib's
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}

_TAR_BLOCK = 512
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_MAX_OCTAL_7 = 0o7777777  # largest value of an 8-byte numeric field
_MAX_OCTAL_11 = 0o77777777777  # of a 12-byte one
_PAX_NAME = b"././@PaxHeader"  # what tarfile calls its PAX headers: constant, unlike GNU tar's
_NON_ASCII = bytes(range(128)) + b"?" * 128  # ustar fields are ASCII; PAX says the real name
_END = b"\0" * (2 * _TAR_BLOCK)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a fifo replace a listed file, opening it must not wait for a writer.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass
class PackedLayer:
    """One layer blob written by ``pack_layer``."""

    path: Path  # the compressed blob written
    digest: str  # "sha256:..." of the compressed bytes (the layer digest)
    size: int  # compressed size
    diff_id: str  # "sha256:..." of the uncompressed tar
    compression: str  # "gzip" | "zstd" | "none"
    entries: int  # tar entries written (PAX headers not counted)
    sockets_skipped: int = 0  # sockets found in the tree and left out, as every tar does
    skipped: list[str] = field(default_factory=list)  # what was left out, one line each


def pack_layer(
    rootfs: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    compression: str = "gzip",
    level: int | None = None,
    source_date_epoch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PackedLayer:
    """Pack everything below ``rootfs`` into one layer blob at ``dest`` (a temporary path the
    caller renames; on error it may hold a partial blob).

    ``level``: compression level (default gzip 1, zstd 3; see the module docstring).
    ``source_date_epoch``: clamp every mtime to it; ``None`` reads ``SOURCE_DATE_EPOCH`` from
    the environment (unset or empty: no clamping). ``progress`` is called with the number of
    uncompressed tar bytes done since its last call.
    """
    level = _check_level(compression, level)
    clamp = _clamp_ns(source_date_epoch)
    root_fd = _open_root(rootfs)
    workers = _workers()
    try:
        with open(dest, "wb") as out:
            writer = _BlobWriter(out, _encoder(compression, level, workers), depth=2 * workers + 2)
            walker = _Walker(root_fd, os.fsencode(rootfs), _TarStream(writer, progress), clamp)
            try:
                walker.walk()
                walker.tar.close()
            except BaseException:
                writer.close(check=False)
                raise
            writer.close()
    except OSError as err:
        # The walk reports its own errors: these are the blob's (open, write, close).
        raise SockerError(
            f"cannot write the layer blob {os.fspath(dest)!r}: {err.strerror or err}",
            "check free space and permissions where the blob is written",
        ) from err
    finally:
        os.close(root_fd)
    return PackedLayer(
        path=Path(dest),
        digest=writer.digest,
        size=writer.size,
        diff_id=writer.diff_id,
        compression=compression,
        entries=walker.entries,
        sockets_skipped=walker.sockets,
        skipped=walker.skipped,
    )


def _open_root(rootfs: str | os.PathLike) -> int:
    # The root itself may be reached through a symlink (the caller named it); nothing below.
    try:
        return os.open(os.fspath(rootfs), _OPEN_DIR & ~os.O_NOFOLLOW)
    except OSError as err:
        raise SockerError(
            f"cannot pack {os.fspath(rootfs)!r}: {err.strerror}", "give the image's root directory"
        ) from err


def _check_level(compression: str, level: int | None) -> int | None:
    if compression not in ("gzip", "zstd", "none"):
        raise ConfigError(f"unknown layer compression {compression!r}", "use gzip, zstd or none")
    if compression == "none":
        if level is not None:
            raise ConfigError("an uncompressed layer takes no compression level")
        return None
    if level is None:
        return DEFAULT_LEVELS[compression]
    if compression == "gzip" and level not in range(0, 10):
        raise ConfigError(f"gzip level {level} is out of range", "use 0-3 (ISA-L, fast) or 4-9 (zlib)")
    if compression == "zstd" and not -7 <= level <= 22:
        raise ConfigError(f"zstd level {level} is out of range", "use 1-22 (or -7..-1, faster)")
    return level


def _clamp_ns(source_date_epoch: int | None) -> int | None:
    """SOURCE_DATE_EPOCH in ns, or None (reproducible-builds.org: malformed is an error)."""
    if source_date_epoch is None:
        text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        if not text:
            return None
        if not text.isdigit():
            raise ConfigError(
                f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds",
                "set it to a Unix time in seconds (e.g. $(git log -1 --format=%ct)) or unset it",
            )
        source_date_epoch = int(text)
    return int(source_date_epoch) * 1_000_000_000


# -- the walk -----------------------------------------------------------------------------------


class _Walker:
    """Walks the tree below ``root_fd`` in tar order and writes one entry per path."""

    def __init__(self, root_fd: int, root_path: bytes, tar: _TarStream, clamp_ns: int | None):
        self.root_fd = root_fd
        self.root_path = root_path.rstrip(b"/") or b"/"
        self.tar = tar
        self.clamp_ns = clamp_ns
        self.root_dev = os.fstat(root_fd).st_dev
        # (st_dev, st_ino) of every multiply linked non-directory -> its first path.
        self.inodes: dict[tuple[int, int], bytes] = {}
        self.entries = 0
        self.sockets = 0
        self.skipped: list[str] = []
        self._proc = os.path.isdir(b"/proc/self/fd/%d" % root_fd)

    def walk(self) -> None:
        # One open descriptor per directory level, closed on the way out.
        stack: list[tuple[int, bytes, typing.Iterator[bytes]]] = []
        try:
            stack.append((self.root_fd, b"", iter(self._children(self.root_fd, b""))))
            while stack:
                dir_fd, prefix, names = stack[-1]
                for name in names:
                    child = self._entry(dir_fd, name, prefix + name)
                    if child is not None:
                        try:
                            below = self._children(child, prefix + name)
                        except BaseException:
                            os.close(child)
                            raise
                        stack.append((child, prefix + name + b"/", iter(below)))
                        break
                else:
                    stack.pop()
                    if dir_fd != self.root_fd:
                        os.close(dir_fd)
        finally:
            for dir_fd, _, _ in stack:
                if dir_fd != self.root_fd:
                    os.close(dir_fd)

    def _children(self, dir_fd: int, path: bytes) -> list[bytes]:
        try:
            with os.scandir(dir_fd) as it:
                return sorted(os.fsencode(e.name) for e in it)
        except OSError as err:
            raise self._failed(path, err) from err

    def _entry(self, dir_fd: int, name: bytes, path: bytes) -> int | None:
        """Write the entry for ``path``; a directory whose content comes next returns its fd."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFDIR:
                return self._directory(dir_fd, name, path, st)
            if st.st_nlink > 1:
                first = self.inodes.get((st.st_dev, st.st_ino))
                if first is not None:
                    self._write(path, st, b"1", linkname=first, xattrs=())
                    return None
                self.inodes[st.st_dev, st.st_ino] = path
            if kind == stat.S_IFREG:
                self._file(dir_fd, name, path, st)
            elif kind == stat.S_IFLNK:
                target = os.readlink(name, dir_fd=dir_fd)
                self._write(path, st, b"2", linkname=target, xattrs=self._xattrs_at(dir_fd, name, path))
            elif kind in _NODE_TYPES:
                self._write(path, st, _NODE_TYPES[kind], xattrs=self._xattrs_at(dir_fd, name, path))
            elif kind == stat.S_IFSOCK:
                self.sockets += 1
                self.skipped.append(f"{_show(path)}: a socket, left out (tar cannot hold one)")
            else:
                self.skipped.append(f"{_show(path)}: unknown file type {kind:#o}, left out")
        except FileNotFoundError as err:
            raise self._failed(path, err, "the tree changed while it was packed; pack it again") from err
        except OSError as err:
            raise self._failed(path, err) from err
        return None

    def _directory(self, dir_fd: int, name: bytes, path: bytes, st: os.stat_result) -> int | None:
        fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
        try:
            now = os.fstat(fd)
            _same_inode(st, now, path)
            self._write(path + b"/", now, b"5", xattrs=self._xattrs(fd))
            if now.st_dev != self.root_dev:
                self.skipped.append(
                    f"{_show(path)}: another filesystem is mounted here; its content is left out"
                )
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _file(self, dir_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
        try:
            now = os.fstat(fd)
            _same_inode(st, now, path)
            self._write(path, now, b"0", size=now.st_size, xattrs=self._xattrs(fd))
            if now.st_size:
                self.tar.copy_file(fd, now.st_size, path)
        finally:
            os.close(fd)

    def _write(
        self,
        path: bytes,
        st: os.stat_result,
        typeflag: bytes,
        *,
        size: int = 0,
        linkname: bytes = b"",
        xattrs: typing.Iterable[tuple[bytes, bytes]],
    ) -> None:
        mtime_ns = st.st_mtime_ns
        if self.clamp_ns is not None and mtime_ns > self.clamp_ns:
            mtime_ns = self.clamp_ns
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if typeflag in (b"3", b"4") else (0, 0)
        self.tar.add(
            _header(
                path,
                typeflag,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                size,
                mtime_ns,
                linkname,
                dev,
                xattrs,
            )
        )
        self.entries += 1

    # -- xattrs ---------------------------------------------------------------------------------

    def _xattrs(self, target: int | bytes) -> list[tuple[bytes, bytes]]:
        """The xattrs of an open file or directory (or of a path, never followed), sorted."""
        nofollow = {} if isinstance(target, int) else {"follow_symlinks": False}
        try:
            names = os.listxattr(target, **nofollow)
        except OSError as err:
            if err.errno in _XATTRS_UNSUPPORTED:
                return []
            raise
        out = []
        for xname in names:
            if xname in _HOST_XATTRS:
                continue
            try:
                value = os.getxattr(target, xname, **nofollow)
            except OSError as err:
                if err.errno == errno.ENODATA:  # removed since it was listed
                    continue
                raise
            out.append((os.fsencode(xname), value))
        out.sort()
        return out

    def _xattrs_at(self, dir_fd: int, name: bytes, path: bytes) -> list[tuple[bytes, bytes]]:
        """xattrs of a symlink, fifo or device node, which cannot be opened to read them."""
        if self._proc:
            # The directory is pinned by its descriptor; only the last component is looked up.
            return self._xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name))
        return self._xattrs(self.root_path + b"/" + path)

    def _failed(self, path: bytes, err: OSError, hint: str | None = None) -> SockerError:
        return SockerError(
            f"cannot pack {_show(path) or '/'}: {err.strerror or err}",
            hint or "packing reads every file of the image: run as root, or fix the permissions",
        )


_NODE_TYPES = {stat.S_IFIFO: b"6", stat.S_IFCHR: b"3", stat.S_IFBLK: b"4"}


_XATTRS_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})


def _same_inode(listed: os.stat_result, opened: os.stat_result, path: bytes) -> None:
    if (listed.st_dev, listed.st_ino) != (opened.st_dev, opened.st_ino) or stat.S_IFMT(
        listed.st_mode
    ) != stat.S_IFMT(opened.st_mode):
        raise SockerError(
            f"cannot pack {_show(path)}: it was replaced while being packed",
            "the tree changed while it was packed; pack it again when nothing writes to it",
        )


def _show(path: bytes) -> str:
    return os.fsdecode(path).rstrip("/")


# -- tar headers --------------------------------------------------------------------------------


def _header(
    path: bytes,
    typeflag: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime_ns: int,
    linkname: bytes,
    dev: tuple[int, int],
    xattrs: typing.Iterable[tuple[bytes, bytes]],
) -> bytes:
    """One entry's header blocks: a PAX header when ustar cannot hold everything, then ustar."""
    pax: list[tuple[bytes, bytes]] = []
    name_field = _ustar_string(path, b"path", pax)
    link_field = _ustar_string(linkname, b"linkpath", pax)
    size = _ustar_number(size, _MAX_OCTAL_11, b"size", pax)
    uid = _ustar_number(uid, _MAX_OCTAL_7, b"uid", pax)
    gid = _ustar_number(gid, _MAX_OCTAL_7, b"gid", pax)
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    if nanos or not 0 <= seconds <= _MAX_OCTAL_11:
        pax.append((b"mtime", _pax_time(mtime_ns)))
        if not 0 <= seconds <= _MAX_OCTAL_11:
            seconds = 0
    for xname, value in xattrs:
        pax.append((b"SCHILY.xattr." + xname, value))
    ustar = _ustar(name_field, typeflag, mode, uid, gid, size, seconds, link_field, dev)
    if not pax:
        return ustar
    return _pax_header(pax) + ustar


def _ustar(
    name: bytes,
    typeflag: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    linkname: bytes,
    dev: tuple[int, int],
) -> bytes:
    block = _USTAR.pack(
        name,
        b"%07o\0" % mode,
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",
        typeflag,
        linkname,
        b"ustar\0",
        b"00",
        b"",
        b"",
        b"%07o\0" % dev[0],
        b"%07o\0" % dev[1],
        b"",
    )
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _ustar_string(value: bytes, key: bytes, pax: list[tuple[bytes, bytes]]) -> bytes:
    if len(value) <= 100 and value.isascii():
        return value
    pax.append((key, value))
    return value.translate(_NON_ASCII)[:100]


def _ustar_number(value: int, limit: int, key: bytes, pax: list[tuple[bytes, bytes]]) -> int:
    if 0 <= value <= limit:
        return value
    pax.append((key, b"%d" % value))
    return 0


def _pax_time(ns: int) -> bytes:
    """Go's formatPAXTime: seconds, then the fraction without trailing zeros."""
    sign = b"-" if ns < 0 else b""
    seconds, nanos = divmod(abs(ns), 1_000_000_000)
    if not nanos:
        return b"%s%d" % (sign, seconds)
    return b"%s%d.%s" % (sign, seconds, (b"%09d" % nanos).rstrip(b"0"))


def _pax_header(records: list[tuple[bytes, bytes]]) -> bytes:
    if not all(_is_utf8(value) for key, value in records if key in (b"path", b"linkpath")):
        # bsdtar (WSL's importer) refuses names that are not UTF-8 without it; GNU tar warns
        # that it does not know it but reads the name right. xattr values are binary anyway.
        records.insert(0, (b"hdrcharset", b"BINARY"))
    data = b"".join(_pax_record(key, value) for key, value in records)
    head = _ustar(_PAX_NAME, b"x", 0o644, 0, 0, len(data), 0, b"", (0, 0))
    return head + data + b"\0" * (-len(data) % _TAR_BLOCK)


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"%d %s=%s\\n"`` where the leading number is the record's length, itself included."""
    body = b" %s=%s\n" % (key, value)
    length = len(body) + len(str(len(body)))
    if len(str(length)) > len(str(len(body))):
        length += 1
    return b"%d%s" % (length, body)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the tar byte stream ------------------------------------------------------------------------


class _TarStream:
    """Cuts the tar into BLOCK_SIZE blocks and hands each to the blob writer."""

    def __init__(self, writer: _BlobWriter, progress: Callable[[int], None] | None):
        self.writer = writer
        self.progress = progress
        self._block = bytearray(BLOCK_SIZE)
        self._view = memoryview(self._block)
        self._pos = 0

    def add(self, data: bytes) -> None:
        pos, end = self._pos, self._pos + len(data)
        if end < BLOCK_SIZE:
            self._block[pos:end] = data
            self._pos = end
            return
        view = memoryview(data)
        while view:
            take = min(len(view), BLOCK_SIZE - self._pos)
            self._block[self._pos : self._pos + take] = view[:take]
            self._pos += take
            view = view[take:]
            if self._pos == BLOCK_SIZE:
                self._emit()

    def copy_file(self, fd: int, size: int, path: bytes) -> None:
        """The file's ``size`` bytes, read straight into the block, then the padding."""
        left = size
        while left:
            take = min(left, BLOCK_SIZE - self._pos)
            got = os.readv(fd, [self._view[self._pos : self._pos + take]])
            if not got:
                raise SockerError(
                    f"cannot pack {_show(path)}: it shrank while being packed",
                    "the tree changed while it was packed; pack it again when nothing writes to it",
                )
            self._pos += got
            left -= got
            if self._pos == BLOCK_SIZE:
                self._emit()
        pad = -size % _TAR_BLOCK
        if pad:
            self.add(b"\0" * pad)

    def close(self) -> None:
        self.add(_END)
        self._emit(last=True)

    def _emit(self, last: bool = False) -> None:
        block = self._block if self._pos == BLOCK_SIZE else self._block[: self._pos]
        self.writer.put(block, last)
        if self.progress and block:
            self.progress(len(block))
        # The writer and the compressors still read the old block: never write into it again.
        self._block = bytearray(BLOCK_SIZE)
        self._view = memoryview(self._block)
        self._pos = 0


# -- compression and writing ------------------------------------------------------------------------


class _Encoder:
    """How tar blocks become blob bytes. ``start`` runs in the walking thread and ``finish`` in
    the writing thread, each once per block in order (``last`` only for the final block)."""

    header = b""
    compresses = False

    def start(self, block: bytearray, last: bool) -> object:
        return block

    def finish(self, job: object, last: bool) -> bytes:
        return job

    def close(self) -> None:
        pass


class _ParallelGzip(_Encoder):
    """pigz's scheme: independent deflate blocks, each primed with the previous block's tail."""

    header = _GZIP_HEADER
    compresses = True

    def __init__(self, level: int, workers: int):
        if level in _ISAL_LEVELS:
            from isal import isal_zlib as zlib_module
        else:
            import zlib as zlib_module
        self._zlib = zlib_module
        self._level = level
        self._crc = 0
        self._size = 0
        self._dict = b""
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="socker-gzip")

    def start(self, block: bytearray, last: bool) -> Future:
        self._crc = self._zlib.crc32(block, self._crc)
        self._size += len(block)
        job = self._pool.submit(self._deflate, block, self._dict, last)
        self._dict = bytes(block[-_DICT_SIZE:])
        return job

    def finish(self, job: Future, last: bool) -> bytes:
        data = job.result()
        if last:
            data += struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return data

    def _deflate(self, block: bytearray, zdict: bytes, last: bool) -> bytes:
        z = self._zlib
        args = (self._level, z.DEFLATED, -15)
        compressor = z.compressobj(*args, zdict=zdict) if zdict else z.compressobj(*args)
        # A sync flush ends the block on a byte boundary, so the next one can simply follow.
        return compressor.compress(block) + compressor.flush(z.Z_FINISH if last else z.Z_SYNC_FLUSH)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Zstd(_Encoder):
    compresses = True

    def __init__(self, level: int, workers: int):
        import zstandard

        # threads >= 1 always: zstd's multithreaded output does not depend on their number,
        # but differs from its single-threaded output.
        params = zstandard.ZstdCompressor(level=level, threads=workers, write_checksum=True)
        self._compressor = params.compressobj()

    def finish(self, job: bytearray, last: bool) -> bytes:
        data = self._compressor.compress(job)
        if last:
            data += self._compressor.flush()
        return data


class _BlobWriter:
    """The ordered end of the pipeline, in a thread of its own: hashes the tar (the diff_id),
    finishes each block's compression, hashes (the digest) and writes what comes out.

    The queue is bounded, so at most a few blocks are in memory. After an error the thread
    keeps taking blocks (and drops them) so that ``put`` never waits forever; the error is
    raised in the walking thread by the next ``put`` or by ``close``.
    """

    def __init__(self, out: typing.BinaryIO, encoder: _Encoder, depth: int):
        self.out = out
        self.encoder = encoder
        self.tar_hash = hashlib.sha256()
        # Uncompressed, the blob is the tar: one hash is enough.
        self.blob_hash = hashlib.sha256() if encoder.compresses else None
        self.size = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="socker-pack-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def put(self, block: bytearray, last: bool) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((block, self.encoder.start(block, last), last))

    def close(self, check: bool = True) -> None:
        """Wait until everything is written; raise what went wrong in the writing thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            self.encoder.close()
        if check and self.error is not None:
            raise self.error

    @property
    def digest(self) -> str:
        return "sha256:" + (self.blob_hash or self.tar_hash).hexdigest()

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.tar_hash.hexdigest()

    def _run(self) -> None:
        self._write(self.encoder.header)
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue
            block, job, last = item
            try:
                self.tar_hash.update(block)
                self._write(self.encoder.finish(job, last))
            except BaseException as err:
                self.error = err

    def _write(self, data: bytes) -> None:
        if self.blob_hash is not None:
            self.blob_hash.update(data)
        self.out.write(data)
        self.size += len(data)


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _encoder(compression: str, level: int | None, workers: int) -> _Encoder:
    if compression == "gzip":
        return _ParallelGzip(level, workers)
    if compression == "zstd":
        return _Zstd(level, workers)
    return _Encoder()
