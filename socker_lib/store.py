"""The flat image store under ``$SOCKER_HOME``.

::

    images/<store path>/        the image: exactly its root filesystem, nothing else
    meta/<store path>/          image.json (versioned), manifest.json, config.json, tree.json.gz
    blobs/                      the content-addressed blob cache (see ``blobs``)
    tmp/                        staging: new images are built here and swapped in at the end
    locks/                      one lock file per image

A new image is built in ``tmp/`` and exchanged with the old one in one ``renameat2``
call, so an interrupted or failed operation leaves the previous image as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageNotFoundError, SockerError
from .reference import Reference

META_VERSION = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass
class Staged:
    """A new image being built: ``rootfs`` and ``meta`` directories inside ``tmp/``."""

    dir: Path
    rootfs: Path
    meta: Path


class Store:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.images = self.home / "images"
        self.meta_root = self.home / "meta"
        self.tmp = self.home / "tmp"
        self.locks = self.home / "locks"

    # -- paths ---------------------------------------------------------------
    def image_dir(self, ref: Reference) -> Path:
        return self.images / ref.store_path

    def meta_dir(self, ref: Reference) -> Path:
        return self.meta_root / ref.store_path

    def exists(self, ref: Reference) -> bool:
        return self.image_dir(ref).is_dir()

    def read_meta(self, ref: Reference) -> dict:
        try:
            return json.loads((self.meta_dir(ref) / "image.json").read_text())
        except FileNotFoundError:
            raise ImageNotFoundError(f"no local image {ref}", f"pull it first: socker pull {ref}") from None

    # -- locking -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, ref: Reference, on_wait=None) -> Iterator[None]:
        """Hold the image's exclusive lock (``on_wait()`` is called if we have to wait)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(ref.store_path.encode()).hexdigest()[:32]
        with open(self.locks / f"{name}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- staging and the atomic swap ------------------------------------------
    @contextlib.contextmanager
    def staging(self, prefix: str = "new-") -> Iterator[Staged]:
        """A private build directory in ``tmp/``, removed again unless committed."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))
        with open(d / ".lock", "w") as lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            staged = Staged(d, d / "rootfs", d / "meta")
            staged.rootfs.mkdir(mode=0o755)
            staged.meta.mkdir(mode=0o700)
            try:
                yield staged
            finally:
                remove_tree(d)

    def commit(self, ref: Reference, staged: Staged) -> Path:
        """Swap the staged image and metadata into place; the old ones are deleted."""
        target = self.image_dir(ref)
        meta = self.meta_dir(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta.parent.mkdir(parents=True, exist_ok=True)
        _swap_in(staged.rootfs, target)
        _swap_in(staged.meta, meta)
        return target

    def cleanup_stale(self, min_age: float = 60.0) -> None:
        """Remove build directories left by a process that died (their lock is free).

        Only directories older than ``min_age`` seconds are touched: a new one may belong to a
        process that has created it but not locked it yet.
        """
        if not self.tmp.is_dir():
            return
        now = time.time()
        for d in self.tmp.iterdir():
            try:
                if now - d.lstat().st_mtime < min_age:
                    continue
                with open(d / ".lock") as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    remove_tree(d)
            except FileNotFoundError:
                remove_tree(d)
            except (BlockingIOError, NotADirectoryError):
                continue


def _swap_in(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; whatever was at ``target`` ends up at ``new`` (to be deleted)."""
    if target.exists() or target.is_symlink():
        if _exchange(new, target):
            return
        # no renameat2 (old kernel/libc, or a filesystem without it): two renames
        aside = new.with_name(new.name + ".old")
        os.rename(target, aside)
        os.rename(new, target)
        os.rename(aside, new)
    else:
        os.rename(new, target)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_tree(path: Path) -> None:
    """Delete a tree without following symlinks, fixing modes that forbid deletion."""

    def onerror(func, p, exc_info):
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            parent = os.path.dirname(p)
            with contextlib.suppress(OSError):
                os.chmod(parent, 0o700)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
            func(p)
            return
        raise exc

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)


# -- tree snapshots (for "modified since pull" and diff) ------------------------


def snapshot(root: Path) -> dict[str, list]:
    """path → [mode, uid, gid, size, mtime_ns, link target or None] for every entry."""
    out: dict[str, list] = {}
    stack = [(os.fspath(root), "")]
    while stack:
        top, rel = stack.pop()
        with os.scandir(top) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                key = rel + e.name
                link = os.readlink(e.path) if stat.S_ISLNK(st.st_mode) else None
                out[key] = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link]
                if stat.S_ISDIR(st.st_mode):
                    stack.append((e.path, key + "/"))
    return out


def write_snapshot(root: Path, dest: Path) -> None:
    data = json.dumps(snapshot(root), separators=(",", ":")).encode("utf-8", "surrogateescape")
    dest.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))


def read_snapshot(path: Path) -> dict[str, list]:
    return json.loads(gzip.decompress(path.read_bytes()).decode("utf-8", "surrogateescape"))


def changed_paths(root: Path, snap: dict[str, list]) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, modified) relative to a snapshot, by metadata (like rsync's quick check)."""
    now = snapshot(root)
    added = sorted(set(now) - set(snap))
    removed = sorted(set(snap) - set(now))
    modified = sorted(
        p
        for p in set(now) & set(snap)
        if now[p] != snap[p] and not (stat.S_ISDIR(now[p][0]) and now[p][:3] == snap[p][:3])
    )
    return added, removed, modified


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class DiskFullError(SockerError):
    code = "disk-full"
