"""Compare directory trees exactly: what a rootfs holds, as the kernel reports it.

``snapshot`` maps each path (relative, POSIX, never following symlinks) to a ``Node``: type, full
``st_mode`` (setuid/setgid/sticky included), owner, size, content hash, link target, xattrs,
mtime in ns, device numbers and hardlink group (the sorted paths sharing its inode within the
tree). ``diff_trees`` lists differences one per line; ``assert_same_tree`` fails with them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from typing import NamedTuple

IGNORED_XATTRS = ("security.selinux",)  # set by the host's LSM, not by the image


class Node(NamedTuple):
    type: str  # file, dir, symlink, fifo, chardev, blockdev, socket
    mode: int  # full st_mode
    uid: int
    gid: int
    size: int  # file: bytes; symlink: target length; others 0
    sha256: str | None  # files only
    link: str | None  # symlink target
    xattrs: tuple[tuple[str, bytes], ...]
    mtime_ns: int
    rdev: tuple[int, int] | None  # (major, minor) of devices
    hardlinks: tuple[str, ...] | None  # every path of the tree sharing this inode, if more than one


def _type(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in names:
        if name in IGNORED_XATTRS:
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(sorted(out))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root, *, include_root: bool = False) -> dict[str, Node]:
    """Every path under ``root`` -> ``Node`` (``"."`` is the root itself, with ``include_root``)."""
    root = os.fspath(root)
    raw: dict[str, os.stat_result] = {}

    def walk(rel: str) -> None:
        full = os.path.join(root, rel) if rel else root
        with os.scandir(full) as it:
            for entry in sorted(it, key=lambda e: e.name):
                child = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                raw[child] = st
                if stat.S_ISDIR(st.st_mode):
                    walk(child)

    if include_root:
        raw["."] = os.lstat(root)
    walk("")

    inodes: dict[tuple[int, int], list[str]] = {}
    for rel, st in raw.items():
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)

    nodes = {}
    for rel, st in raw.items():
        full = root if rel == "." else os.path.join(root, rel)
        kind = _type(st.st_mode)
        group = inodes.get((st.st_dev, st.st_ino))
        link = os.readlink(full) if kind == "symlink" else None
        nodes[rel] = Node(
            type=kind,
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind in ("file", "symlink") else 0,
            sha256=_sha256(full) if kind == "file" else None,
            link=link,
            xattrs=_xattrs(full),
            mtime_ns=st.st_mtime_ns,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chardev", "blockdev") else None,
            hardlinks=tuple(sorted(group)) if group and len(group) > 1 else None,
        )
    return nodes


def _fmt(field: str, value) -> str:
    if field == "mode":
        return f"{value:#o}"
    if field == "mtime_ns":
        return f"{value} ({value / 1e9:.9f})"
    return repr(value)


def diff_trees(
    a, b, mtime: bool = True, *, dir_mtime: bool = True, xattrs: bool = True, ignore=()
) -> list[str]:
    """Human-readable differences between two trees (paths or ``snapshot`` dicts).

    ``mtime=False`` ignores every mtime, ``dir_mtime=False`` only directories'; ``ignore`` is a
    list of glob patterns of relative paths to leave out.
    """
    sa = a if isinstance(a, dict) else snapshot(a)
    sb = b if isinstance(b, dict) else snapshot(b)

    def kept(path: str) -> bool:
        return not any(fnmatch.fnmatchcase(path, pat) for pat in ignore)

    out = []
    for path in sorted(set(sa) | set(sb)):
        if not kept(path):
            continue
        if path not in sb:
            out.append(f"only in a: {path} ({sa[path].type})")
            continue
        if path not in sa:
            out.append(f"only in b: {path} ({sb[path].type})")
            continue
        na, nb = sa[path], sb[path]
        for fld in Node._fields:
            if fld == "mtime_ns" and (not mtime or (na.type == "dir" and not dir_mtime)):
                continue
            if fld == "xattrs" and not xattrs:
                continue
            va, vb = getattr(na, fld), getattr(nb, fld)
            if va != vb:
                out.append(f"{path}: {fld} {_fmt(fld, va)} != {_fmt(fld, vb)}")
    return out


def assert_same_tree(a, b, mtime: bool = True, **kw) -> None:
    """Fail with the list of differences if trees ``a`` and ``b`` differ (see ``diff_trees``)."""
    diffs = diff_trees(a, b, mtime, **kw)
    if diffs:
        shown = "\n  ".join(diffs[:60])
        more = f"\n  ... and {len(diffs) - 60} more" if len(diffs) > 60 else ""
        raise AssertionError(f"trees differ ({len(diffs)} differences):\n  {shown}{more}")
