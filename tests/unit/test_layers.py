"""Unit tests of socker_lib.layers: layer semantics, and hostile layers that must not escape.

Layers are tar streams built in memory. Hostile tests put a ``victim`` directory (and a
``dest-evil`` sibling) next to the rootfs and check that nothing outside the rootfs changed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import traceback
from pathlib import Path

import pytest

from socker_lib.errors import UnsafeLayerError
from socker_lib.layers import ApplyOptions, ApplyReport, RootfsWriter, apply_layers
from tests.conftest import needs_root

T = 1_600_000_000
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
# Names that exist on no host: should a regression let an entry escape, it cannot clobber
# anything, and the leftover is easy to recognise.
PROBE = "socker-escape-probe"
NOBODY = 65534


# -- building layers --------------------------------------------------------------------------


def _info(name, kind, mode, *, uid=0, gid=0, t=T, ns=0, xattrs=None, link="", pax_mtime=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, t, link
    if ns or pax_mtime:
        info.pax_headers["mtime"] = pax_mtime or f"{t}.{ns:09d}"
    for key, value in (xattrs or {}).items():
        info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return info, None


def d(name, mode=0o755, **kw):
    return _info(name, tarfile.DIRTYPE, mode, **kw)


def f(name, data=b"", mode=0o644, **kw):
    info, _ = _info(name, tarfile.REGTYPE, mode, **kw)
    info.size = len(data)
    return info, data


def sym(name, target, **kw):
    return _info(name, tarfile.SYMTYPE, 0o777, link=target, **kw)


def hard(name, target):
    # Metadata of its own, which must not reach the shared inode (umoci ignores it too).
    return _info(name, tarfile.LNKTYPE, 0o600, uid=5, gid=5, t=T + 77, link=target)


def fifo(name, mode=0o600, **kw):
    return _info(name, tarfile.FIFOTYPE, mode, **kw)


def dev(name, kind=tarfile.CHRTYPE, major=1, minor=3, mode=0o666):
    info, _ = _info(name, kind, mode)
    info.devmajor, info.devminor = major, minor
    return info, None


def wh(name):
    return f(name)


def tar(*entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply(rootfs: Path, *layers: bytes, rootless: bool | None = None) -> ApplyReport:
    return apply_layers(rootfs, [io.BytesIO(layer) for layer in layers], ApplyOptions(rootless=rootless))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def mtime_ns(path: Path) -> int:
    return os.lstat(path).st_mtime_ns


# -- the host around the rootfs ---------------------------------------------------------------


class Host:
    """tmp_path with a rootfs and host files next to it that hostile layers aim at."""

    def __init__(self, tmp_path: Path):
        self.base = tmp_path
        self.rootfs = tmp_path / "rootfs"
        self.rootfs.mkdir()
        self.victim = tmp_path / "victim"
        self.victim.mkdir()
        self.hello = self.victim / "hello"
        self.hello.write_bytes(b"hello from the host\n")
        self.hello.chmod(0o640)
        (tmp_path / "dest-evil").mkdir()
        (tmp_path / "dest-evil" / "secret").write_bytes(b"secret\n")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple]:
        state = {}
        for path in [self.base, *self.base.rglob("*")]:
            if self.rootfs in path.parents or path == self.rootfs:
                continue
            st = os.lstat(path)
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            xattrs = sorted(os.listxattr(path, follow_symlinks=False))
            state[str(path)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                st.st_mtime_ns,
                st.st_ctime_ns,
                content,
                link,
                xattrs,
            )
        return state

    def assert_untouched(self) -> None:
        after = self.snapshot()
        assert after.keys() == self.before.keys(), f"host paths changed: {after.keys() ^ self.before.keys()}"
        for path, state in self.before.items():
            assert after[path] == state, f"host path changed: {path}"


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def rootfs(tmp_path) -> Path:
    return tmp_path / "rootfs"


# -- files, directories, links, times ---------------------------------------------------------


def test_files_directories_and_symlinks(rootfs):
    report = apply(
        rootfs,
        tar(
            d("etc/", 0o750, ns=1),
            f("etc/hostname", b"box\n", 0o640, ns=123_456_789),
            sym("etc/localtime", f"/usr/share/zoneinfo/{PROBE}"),
            sym("etc/rel", "../usr/lib/os-release", ns=5),
            f("bin/tool", b"x", 0o755),
        ),
    )
    assert report.entries == 5 and report.skipped == []
    assert (rootfs / "etc/hostname").read_bytes() == b"box\n"
    assert stat.S_IMODE(os.lstat(rootfs / "etc/hostname").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(rootfs / "etc").st_mode) == 0o750
    assert mtime_ns(rootfs / "etc/hostname") == T * 10**9 + 123_456_789
    assert os.readlink(rootfs / "etc/localtime") == f"/usr/share/zoneinfo/{PROBE}"
    assert os.readlink(rootfs / "etc/rel") == "../usr/lib/os-release"
    assert mtime_ns(rootfs / "etc/rel") == T * 10**9 + 5
    assert (rootfs / "bin/tool").read_bytes() == b"x"


def test_pax_times_are_parsed_to_the_nanosecond_like_go(rootfs):
    apply(
        rootfs,
        tar(
            f("cut", pax_mtime="1600000000.1234567891"),
            f("short", pax_mtime="1600000000.5"),
            f("negative", pax_mtime="-1.5"),
        ),
    )
    assert mtime_ns(rootfs / "cut") == 1_600_000_000_123_456_789
    assert mtime_ns(rootfs / "short") == 1_600_000_000_500_000_000
    assert mtime_ns(rootfs / "negative") == -1_500_000_000


def test_directories_keep_their_times_when_children_change(rootfs):
    apply(
        rootfs,
        tar(d("a/", ns=7), f("a/one", b"1"), d("a/sub/", t=T + 1), f("a/sub/x", b"x"), f("a/gone")),
        tar(f("a/two", b"2"), f("a/.wh.gone"), f("a/sub/y", b"y")),
    )
    assert mtime_ns(rootfs / "a") == T * 10**9 + 7
    assert mtime_ns(rootfs / "a/sub") == (T + 1) * 10**9
    assert sorted(os.listdir(rootfs / "a")) == ["one", "sub", "two"]
    # No "./" entry: the new root keeps the epoch, as with umoci.
    assert mtime_ns(rootfs) == 0


def test_root_entry_sets_root_metadata(rootfs):
    apply(rootfs, tar(d("./", 0o700, t=T + 3), f("x")))
    assert stat.S_IMODE(os.lstat(rootfs).st_mode) == 0o700
    assert mtime_ns(rootfs) == (T + 3) * 10**9


@pytest.mark.parametrize("entry", [f("./"), sym("./", "/"), sym("/", f"/{PROBE}"), fifo(".")])
def test_root_entry_must_be_a_directory(rootfs, entry):
    with pytest.raises(UnsafeLayerError, match="root directory"):
        apply(rootfs, tar(entry))
    assert stat.S_ISDIR(os.lstat(rootfs).st_mode)


def test_long_and_unicode_names_pax(rootfs):
    deep = "/".join(["d" * 90] * 3) + "/" + "n" * 200
    name = "uni/ünïcødé — 日本語 💾.txt"
    apply(rootfs, tar(f(deep, b"deep"), f(name, b"u"), sym("uni/l", "ü" * 120), hard("uni/h", deep)))
    assert (rootfs / deep).read_bytes() == b"deep"
    assert (rootfs / name).read_bytes() == b"u"
    assert os.readlink(rootfs / "uni/l") == "ü" * 120
    assert os.lstat(rootfs / "uni/h").st_ino == os.lstat(rootfs / deep).st_ino


def test_gnu_long_names(rootfs):
    name = "gnu/" + "g" * 200
    apply(rootfs, tar(f(name, b"g"), sym("gnu/l", "x" * 150), hard("gnu/h", name), fmt=tarfile.GNU_FORMAT))
    assert (rootfs / name).read_bytes() == b"g"
    assert os.readlink(rootfs / "gnu/l") == "x" * 150
    assert os.lstat(rootfs / "gnu/h").st_ino == os.lstat(rootfs / name).st_ino


def test_non_utf8_names_round_trip(rootfs):
    raw = b"caf\xe9"
    apply(rootfs, tar(f(raw.decode("utf-8", "surrogateescape"), b"latin-1")))
    assert os.listdir(os.fsencode(rootfs)) == [raw]


def test_stream_is_read_to_the_end(rootfs):
    junk = b"\0" * 4096 + b"trailing bytes that are not tar"
    stream = io.BytesIO(tar(f("a", b"a" * 5000)) + junk)
    report = RootfsWriter(rootfs).apply(stream)
    assert report.entries == 1
    assert stream.read() == b""


@pytest.mark.parametrize(
    "layer", [b"", b"\0" * 512, b"\0" * 1024, tar()], ids=["empty", "block", "end", "tarfile"]
)
def test_empty_layers(rootfs, layer):
    stream = io.BytesIO(layer)
    assert RootfsWriter(rootfs).apply(stream).entries == 0
    assert stream.read() == b""
    assert os.listdir(rootfs) == []


def test_garbage_is_refused(rootfs):
    with pytest.raises(UnsafeLayerError, match="tar"):
        apply(rootfs, b"this is not a tar archive".ljust(1024, b"!"))


def test_unknown_entry_type_is_refused(rootfs):
    info, _ = f("volume")
    info.type = b"V"
    with pytest.raises(UnsafeLayerError, match="unsupported type"):
        apply(rootfs, tar((info, None)))
    assert not (rootfs / "volume").exists()


def test_non_directory_parent_is_refused(rootfs):
    with pytest.raises(UnsafeLayerError, match="non-directory"):
        apply(rootfs, tar(f("file", b"x"), f("file/child")))


def test_deeply_nested_directories_work_or_are_refused_cleanly(rootfs):
    deep = "/".join(["a"] * 1200) + "/f"
    try:
        writer = RootfsWriter(rootfs)
        writer.apply(io.BytesIO(tar(f(deep, b"deep"))))
        assert (rootfs / deep).read_bytes() == b"deep"
        try:
            writer.apply(io.BytesIO(tar(wh(".wh.a"))))
        except UnsafeLayerError as err:
            assert "too deeply" in str(err)  # Python 3.11's shutil.rmtree recurses
        else:
            assert not (rootfs / "a").exists()
    finally:
        # shutil.rmtree (and so pytest's cleanup) cannot remove a tree this deep.
        subprocess.run(["rm", "-rf", str(rootfs)], check=True)


@pytest.mark.parametrize("links", [[sym("loop", "loop")], [sym("a", "b"), sym("b", "a")]])
def test_symlink_loops_are_refused(rootfs, links):
    with pytest.raises(UnsafeLayerError, match="symbolic links"):
        apply(rootfs, tar(*links, f("a/x" if len(links) == 2 else "loop/x")))


# -- whiteouts --------------------------------------------------------------------------------


def _lower() -> bytes:
    return tar(
        d("w/"),
        f("w/file", b"f"),
        d("w/dir/"),
        f("w/dir/a"),
        d("w/dir/sub/"),
        f("w/dir/sub/b"),
        sym("w/link", "target"),
        f("w/target", b"t"),
        f("w/keep", b"k"),
    )


def test_whiteout_removes_lower_file_dir_and_link_but_not_its_target(rootfs):
    apply(rootfs, _lower(), tar(wh("w/.wh.file"), wh("w/.wh.dir"), wh("w/.wh.link"), wh("w/.wh.absent")))
    assert sorted(os.listdir(rootfs / "w")) == ["keep", "target"]


@pytest.mark.parametrize("where", ["first", "last", "alone"])
def test_opaque_whiteout_hides_lower_children_wherever_it_stands(rootfs, where):
    new = [] if where == "alone" else [f("w/new", b"n"), d("w/dir/"), f("w/dir/fresh")]
    opaque = [wh("w/.wh..wh..opq")]
    lower = tar(d("w/", 0o750, t=T + 5, xattrs={"user.w": b"1"}), f("w/file"), d("w/dir/"), f("w/dir/a"))
    apply(rootfs, lower, tar(*(opaque + new if where == "first" else new + opaque)))
    assert tree(rootfs / "w") == (set() if where == "alone" else {"new", "dir", "dir/fresh"})
    # The directory itself is not hidden: it keeps what the lower layer gave it.
    st = os.lstat(rootfs / "w")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o750, (T + 5) * 10**9)
    assert os.getxattr(rootfs / "w", "user.w") == b"1"


def test_whiteout_spares_what_the_same_layer_adds(rootfs):
    apply(
        rootfs,
        _lower(),
        tar(f("w/file", b"again"), d("w/dir/"), f("w/dir/mine"), wh("w/.wh.file"), wh("w/.wh.dir")),
    )
    assert (rootfs / "w/file").read_bytes() == b"again"
    assert tree(rootfs / "w/dir") == {"mine"}


def test_whiteout_names_are_never_materialised(rootfs):
    apply(rootfs, tar(wh(".wh.top"), d("x/"), wh("x/.wh..wh..opq"), wh("x/.wh.y")), tar(wh("x/.wh.z")))
    assert tree(rootfs) == {"x"}


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "w/.wh.", "w/.wh..", "w/.wh..."])
def test_invalid_whiteouts_are_refused(host, name):
    # umoci 0.4.7 would remove the directory itself, or for ".wh..." at the top the root's parent.
    with pytest.raises(UnsafeLayerError, match="invalid whiteout"):
        apply(host.rootfs, _lower(), tar(wh(name)))
    assert (host.rootfs / "w/keep").exists()
    host.assert_untouched()


# -- replacing paths --------------------------------------------------------------------------


def test_directory_over_directory_changes_only_attributes(rootfs):
    apply(
        rootfs,
        tar(d("d/", 0o755, xattrs={"user.old": b"1"}), f("d/child", b"c")),
        tar(d("d/", 0o700, t=T + 9, xattrs={"user.new": b"2"})),
    )
    assert (rootfs / "d/child").read_bytes() == b"c"
    st = os.lstat(rootfs / "d")
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime_ns == (T + 9) * 10**9
    assert os.listxattr(rootfs / "d") == ["user.new"]


_KINDS = {
    "file": lambda n: [f(n, b"file")],
    "dir": lambda n: [d(n + "/"), f(n + "/child"), d(n + "/sub/"), f(n + "/sub/deep")],
    "link-to-dir": lambda n: [d("elsewhere/"), sym(n, "elsewhere")],
    "link": lambda n: [sym(n, "nowhere")],
    "fifo": lambda n: [fifo(n)],
}
_TYPE = {
    "file": stat.S_ISREG,
    "dir": stat.S_ISDIR,
    "link-to-dir": stat.S_ISLNK,
    "link": stat.S_ISLNK,
    "fifo": stat.S_ISFIFO,
}


@pytest.mark.parametrize("lower", sorted(_KINDS))
@pytest.mark.parametrize("upper", sorted(_KINDS))
@pytest.mark.parametrize("same_layer", [False, True], ids=["next-layer", "same-layer"])
def test_any_path_can_be_replaced_by_another_type(rootfs, lower, upper, same_layer):
    old, new = _KINDS[lower]("p"), _KINDS[upper]("p")
    apply(rootfs, *([tar(*old, *new)] if same_layer else [tar(*old), tar(*new)]))
    assert _TYPE[upper](os.lstat(rootfs / "p").st_mode)
    if upper == "dir":
        assert tree(rootfs / "p") == {"child", "sub", "sub/deep"}
    if lower == "dir" and upper != "dir":
        assert not any(n.startswith("p/") for n in tree(rootfs))
    if lower == "link-to-dir" and upper == "dir":
        assert tree(rootfs / "elsewhere") == set()


def test_entries_follow_a_directory_that_became_a_symlink(rootfs):
    apply(rootfs, tar(d("a/"), f("a/x"), d("b/")), tar(sym("a", "b"), f("a/y")))
    assert tree(rootfs) == {"a", "b", "b/y"}


def test_entries_follow_a_symlink_that_was_retargeted(rootfs):
    apply(rootfs, tar(d("a/"), d("b/"), sym("l", "a"), f("l/x")), tar(sym("l", "b"), f("l/y")))
    assert tree(rootfs) == {"a", "a/x", "b", "b/y", "l"}


def test_entries_stop_following_a_symlink_that_became_a_directory(rootfs):
    apply(rootfs, tar(d("real/"), sym("a", "real"), f("a/x")), tar(d("a/"), f("a/y")))
    assert tree(rootfs) == {"real", "real/x", "a", "a/y"}


# -- hard links, special files, ownership, xattrs ---------------------------------------------


def test_hardlinks_share_the_inode_of_files_of_this_and_lower_layers(rootfs):
    tool = f"bin/{PROBE}"
    apply(rootfs, tar(f(tool, b"bb", 0o755), hard("bin/ls", tool)), tar(hard("sbin/init", "/" + tool)))
    inodes = {os.lstat(rootfs / p).st_ino for p in (tool, "bin/ls", "sbin/init")}
    st = os.lstat(rootfs / "bin/ls")
    assert len(inodes) == 1 and st.st_nlink == 3
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) == (0o755, 0, T * 10**9)


def test_hardlink_to_a_symlink_links_the_symlink_itself(rootfs):
    apply(rootfs, tar(f("target"), sym("sl", "target"), hard("hl", "sl")))
    assert os.readlink(rootfs / "hl") == "target"
    assert os.lstat(rootfs / "hl").st_ino == os.lstat(rootfs / "sl").st_ino


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([hard("hl", "missing")], "not in the image"),
        ([d("dir/"), hard("hl", "dir")], "directory"),
        ([hard("hl", "/")], "root directory"),
        ([f("hl"), hard("hl", "hl")], "not in the image"),
    ],
)
def test_bad_hardlinks_are_refused(rootfs, entries, problem):
    with pytest.raises(UnsafeLayerError, match=problem):
        apply(rootfs, tar(*entries))


def test_fifo(rootfs):
    apply(rootfs, tar(fifo("run/initctl", 0o620, t=T + 4)))
    st = os.lstat(rootfs / "run/initctl")
    assert (
        stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620 and st.st_mtime_ns == (T + 4) * 10**9
    )


def test_mode_bits_setuid_setgid_sticky(rootfs):
    apply(rootfs, tar(f("su", mode=0o4755), f("wall", mode=0o2755), d("tmp/", 0o1777), d("shared/", 0o2775)))
    modes = {p: stat.S_IMODE(os.lstat(rootfs / p).st_mode) for p in ("su", "wall", "tmp", "shared")}
    assert modes == {"su": 0o4755, "wall": 0o2755, "tmp": 0o1777, "shared": 0o2775}


def test_ownership_is_set_before_the_mode_so_setuid_survives(rootfs):
    needs_root()
    apply(
        rootfs,
        tar(
            f("newgrp", mode=0o4711, uid=1001, gid=1001),
            f("wall", mode=0o2755, gid=5),
            d("home/", 0o700, uid=1000, gid=100),
            sym("home/link", "x", uid=1000, gid=1000),
            fifo("fifo", uid=3, gid=4),
        ),
    )
    owners = {
        p: (os.lstat(rootfs / p).st_uid, os.lstat(rootfs / p).st_gid)
        for p in ("newgrp", "wall", "home", "home/link", "fifo")
    }
    assert owners == {
        "newgrp": (1001, 1001),
        "wall": (0, 5),
        "home": (1000, 100),
        "home/link": (1000, 1000),
        "fifo": (3, 4),
    }
    assert stat.S_IMODE(os.lstat(rootfs / "newgrp").st_mode) == 0o4711
    assert stat.S_IMODE(os.lstat(rootfs / "wall").st_mode) == 0o2755


def test_device_nodes(rootfs):
    needs_root()
    apply(
        rootfs,
        tar(dev("dev/null", tarfile.CHRTYPE, 1, 3, 0o666), dev("dev/sda", tarfile.BLKTYPE, 8, 0, 0o660)),
    )
    null, sda = os.lstat(rootfs / "dev/null"), os.lstat(rootfs / "dev/sda")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(sda.st_mode) and (os.major(sda.st_rdev), os.minor(sda.st_rdev)) == (8, 0)
    assert stat.S_IMODE(null.st_mode) == 0o666


def test_user_xattrs_are_set_and_binary_values_kept(rootfs):
    apply(
        rootfs,
        tar(f("x", xattrs={"user.a": b"1", "user.bin": b"\xff\x00\x80"}), d("dir/", xattrs={"user.d": b""})),
    )
    assert os.getxattr(rootfs / "x", "user.bin") == b"\xff\x00\x80"
    assert os.getxattr(rootfs / "x", "user.a") == b"1"
    assert os.getxattr(rootfs / "dir", "user.d") == b""


def test_privileged_xattrs(rootfs):
    needs_root()
    apply(
        rootfs,
        tar(
            f("ping", mode=0o755, uid=0, xattrs={"security.capability": CAP_NET_RAW}),
            f("t", xattrs={"trusted.t": b"v"}),
            sym("l", "t", xattrs={"trusted.onlink": b"1"}),
        ),
    )
    assert os.getxattr(rootfs / "ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(rootfs / "t", "trusted.t") == b"v"
    assert os.getxattr(rootfs / "l", "trusted.onlink", follow_symlinks=False) == b"1"


def test_host_specific_xattrs_are_not_taken_from_layers(rootfs):
    report = apply(rootfs, tar(f("x", xattrs={"security.selinux": b"system_u:object_r:etc_t:s0"})))
    assert "security.selinux" not in os.listxattr(rootfs / "x")
    assert any("security.selinux" in note for note in report.skipped)


def test_user_xattrs_on_symlinks_are_noted_not_fatal(rootfs):
    report = apply(rootfs, tar(f("t"), sym("l", "t", xattrs={"user.x": b"1"})))
    assert os.path.islink(rootfs / "l")
    assert any("user.x" in note for note in report.skipped)


def _unprivileged(fn) -> ApplyReport:
    """Run fn in a child process, as nobody when the tests run as root, and return its report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            answer = {"report": dataclasses.asdict(fn())}
        except BaseException:
            answer = {"error": traceback.format_exc()}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read() or b'{"error": "child died"}')
    os.waitpid(pid, 0)
    assert "error" not in answer, answer["error"]
    return ApplyReport(**answer["report"])


@pytest.fixture
def shared_rootfs():
    """A rootfs an unprivileged child can reach (pytest's tmp_path is private to root)."""
    work = Path(tempfile.mkdtemp(prefix="socker-rootless-"))
    work.chmod(0o755)
    rootfs = work / "rootfs"
    rootfs.mkdir()
    if os.geteuid() == 0:
        os.chown(rootfs, NOBODY, NOBODY)
    yield rootfs
    shutil.rmtree(work)


def test_rootless_skips_what_needs_root_and_says_so(shared_rootfs):
    rootfs = shared_rootfs
    layers = [
        tar(
            dev("dev/null"),
            dev("dev/sda", tarfile.BLKTYPE, 8, 0),
            f("owned", b"o", 0o4755, uid=1000, gid=1000, xattrs={"trusted.t": b"1", "user.u": b"2"}),
            f("ping", b"p", 0o755, xattrs={"security.capability": CAP_NET_RAW}),
            d("ro/", 0o555),
            f("ro/early", b"e", 0o444),
            d("ro/gone/", 0o500),
            f("ro/gone/x", b"x", 0o400),
        ),
        tar(f("ro/late", b"l"), d("ro/sub/", 0o500), f("ro/sub/x"), wh("ro/.wh.gone")),
    ]
    # ApplyOptions() decides from the effective uid: the child is unprivileged, so rootless.
    report = _unprivileged(
        lambda: apply_layers(rootfs, [io.BytesIO(layer) for layer in layers], ApplyOptions())
    )
    assert not (rootfs / "dev/null").exists() and not (rootfs / "dev/sda").exists()
    notes = "\n".join(report.skipped)
    assert "dev/null: character device 1:3 not created (rootless)" in notes
    assert "dev/sda: block device 8:0 not created (rootless)" in notes
    assert "trusted.t" in notes and "security.capability" in notes and "entries owned by other users" in notes
    st = os.lstat(rootfs / "owned")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.lstat(rootfs).st_uid, 0o4755)
    assert os.listxattr(rootfs / "owned") == ["user.u"]
    assert os.listxattr(rootfs / "ping") == []
    assert tree(rootfs / "ro") == {"early", "late", "sub", "sub/x"}
    assert stat.S_IMODE(os.lstat(rootfs / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(rootfs / "ro/sub").st_mode) == 0o500
    assert report.entries == 12


def test_rootless_default_follows_the_effective_uid():
    assert ApplyOptions().is_rootless() == (os.geteuid() != 0)
    assert ApplyOptions(rootless=True).is_rootless() and not ApplyOptions(rootless=False).is_rootless()


# -- hostile layers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../victim/x", "/../victim/x", "../../x", "./../../victim/hello", "//victim/x"]
)
def test_names_climbing_out_stay_inside(host, name):
    apply(host.rootfs, tar(f(name, b"contained")))
    inside = host.rootfs / os.path.normpath("/" + name).lstrip("/")
    assert inside.read_bytes() == b"contained"
    host.assert_untouched()


def test_dotdot_directory_entry_is_the_root(host):
    apply(host.rootfs, tar(d("..", 0o700, t=T), d("../", 0o711, t=T + 1)))
    assert stat.S_IMODE(os.lstat(host.rootfs).st_mode) == 0o711
    host.assert_untouched()


def test_dotdot_file_entry_is_refused(host):
    with pytest.raises(UnsafeLayerError):
        apply(host.rootfs, tar(f("..", b"x")))
    host.assert_untouched()


def _escapes(host: Host) -> dict[str, tuple[str, str, str]]:
    """Symlink targets pointing out of the rootfs, where entries written through them land, and
    the name of the file to write: the host's victim file where the target is its directory."""
    victim = str(host.victim)
    return {
        "absolute-host-dir": (victim, victim.lstrip("/"), "hello"),
        "absolute-root": ("/", "", PROBE + "-file"),
        "relative-up": ("../../..", "", PROBE + "-file"),
        "relative-sibling": ("../victim", "victim", "hello"),
        "absolute-host-file": (str(host.hello), str(host.hello).lstrip("/"), "hello"),
    }


@pytest.mark.parametrize(
    "escape", ["absolute-host-dir", "absolute-root", "relative-up", "relative-sibling", "absolute-host-file"]
)
@pytest.mark.parametrize("same_layer", [True, False], ids=["same-layer", "later-layer"])
def test_writing_through_a_symlink_that_points_out_stays_inside(host, escape, same_layer):
    target, lands, name = _escapes(host)[escape]
    link = [sym("esc", target)]
    through = [
        f(f"esc/{name}", b"pwned", 0o777),
        d(f"esc/{PROBE}/", 0o777),
        f(f"esc/{PROBE}/newfile", b"pwned"),
    ]
    apply(host.rootfs, *([tar(*link, *through)] if same_layer else [tar(*link), tar(*through)]))
    landed = host.rootfs / lands if lands else host.rootfs
    assert (landed / name).read_bytes() == b"pwned"
    assert (landed / PROBE / "newfile").read_bytes() == b"pwned"
    assert os.readlink(host.rootfs / "esc") == target
    assert not os.path.lexists(f"/{PROBE}") and not os.path.lexists(f"/{PROBE}-file")
    host.assert_untouched()


def test_symlink_chain_stays_inside(host):
    apply(
        host.rootfs,
        tar(
            d("inner/"),
            sym("inner/go_up", ".."),
            sym("inner/go_up/escape", "../victim"),
            f("inner/go_up/escape/newfile", b"chain"),
        ),
    )
    assert os.readlink(host.rootfs / "escape") == "../victim"
    assert (host.rootfs / "victim/newfile").read_bytes() == b"chain"
    host.assert_untouched()


@pytest.mark.parametrize("same_layer", [True, False], ids=["same-layer", "later-layer"])
def test_legitimate_absolute_symlink_resolves_inside(host, same_layer):
    layers = (
        [d("var/"), d("run/", 0o755), sym("var/run", "/run")],
        [f(f"var/run/{PROBE}", b"pid"), d("var/run/sub/")],
    )
    apply(host.rootfs, *([tar(*layers[0], *layers[1])] if same_layer else [tar(*layers[0]), tar(*layers[1])]))
    assert (host.rootfs / "run" / PROBE).read_bytes() == b"pid"
    assert (host.rootfs / "run/sub").is_dir()
    assert os.readlink(host.rootfs / "var/run") == "/run"
    assert not os.path.lexists(f"/run/{PROBE}")
    host.assert_untouched()


@pytest.mark.parametrize("case", ["climbing", "absolute", "through-symlinked-dir", "sibling-prefix"])
def test_hardlinks_to_host_files_are_refused(host, case):
    targets = {
        "climbing": "../victim/hello",
        "absolute": str(host.hello),
        "through-symlinked-dir": "esc/hello",
        "sibling-prefix": "../dest-evil/secret",
    }
    with pytest.raises(UnsafeLayerError, match="not in the image"):
        apply(host.rootfs, tar(sym("esc", str(host.victim)), hard("stolen", targets[case])))
    assert not os.path.lexists(host.rootfs / "stolen")
    host.assert_untouched()


def test_hardlink_by_climbing_name_links_the_image_file(host):
    apply(host.rootfs, tar(d("victim/"), f("victim/hello", b"image"), hard("hl", "../victim/hello")))
    assert os.lstat(host.rootfs / "hl").st_ino == os.lstat(host.rootfs / "victim/hello").st_ino
    host.assert_untouched()


@pytest.mark.parametrize(
    "name", ["../.wh.victim", "../../.wh.victim", "esc/.wh.hello", "esc/.wh..wh..opq", "up/.wh.victim"]
)
def test_whiteouts_that_climb_out_stay_inside(host, name):
    lower = tar(sym("esc", str(host.victim)), sym("up", "../.."), d("victim/"), f("victim/hello"))
    apply(host.rootfs, lower, tar(wh(name)))
    if name.startswith("esc/"):
        assert (host.rootfs / "victim/hello").exists()
    else:
        assert not (host.rootfs / "victim").exists()
    host.assert_untouched()


@pytest.mark.parametrize(("major", "minor"), [(4096, 0), (0, 1 << 20), (1 << 40, 1), (-1, 0), (0, -5)])
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_device_numbers_out_of_range_are_refused(host, major, minor, rootless):
    with pytest.raises(UnsafeLayerError, match="out of range"):
        apply(
            host.rootfs,
            tar(dev("dev/evil", tarfile.BLKTYPE, major, minor), fmt=tarfile.GNU_FORMAT),
            rootless=rootless,
        )
    assert not os.path.lexists(host.rootfs / "dev/evil")
    host.assert_untouched()


@pytest.mark.parametrize("uid", [-1, 2**32 - 1, 2**40])
def test_owners_out_of_range_are_refused(host, uid):
    with pytest.raises(UnsafeLayerError, match="out of range"):
        apply(host.rootfs, tar(f("x", uid=uid), fmt=tarfile.GNU_FORMAT))
    host.assert_untouched()


_OVER_LINK = {
    "file": [f("f", b"new", 0o777, uid=1000, xattrs={"user.x": b"1"})],
    "dir": [d("f/", 0o777, uid=1000, xattrs={"user.x": b"1"}), f("f/child", b"c")],
    "fifo": [fifo("f", 0o777)],
    "symlink": [sym("f", "elsewhere", uid=1000)],
    "hardlink": [f("other", b"o"), hard("f", "other")],
    "root-entry": [d("./", 0o700)],
}


@pytest.mark.parametrize("kind", sorted(_OVER_LINK))
@pytest.mark.parametrize("link_to", ["file", "dir"])
def test_metadata_never_follows_an_existing_symlink_to_the_host(host, kind, link_to):
    target = str(host.hello if link_to == "file" else host.victim)
    apply(host.rootfs, tar(sym("f", target)), tar(*_OVER_LINK[kind]))
    if kind != "root-entry":
        assert not os.path.islink(host.rootfs / "f") or kind == "symlink"
    host.assert_untouched()


def test_metadata_never_follows_an_existing_symlink_as_root(host):
    needs_root()
    apply(
        host.rootfs,
        tar(sym("f", str(host.hello)), sym("g", str(host.victim)), sym("h", str(host.hello))),
        tar(f("f", uid=1000, mode=0o4777), d("g/", uid=1000), dev("h", tarfile.CHRTYPE, 1, 3)),
    )
    assert os.lstat(host.rootfs / "f").st_uid == 1000 and stat.S_ISDIR(os.lstat(host.rootfs / "g").st_mode)
    assert stat.S_ISCHR(os.lstat(host.rootfs / "h").st_mode)
    host.assert_untouched()


def test_directory_replaced_by_symlink_out_in_the_same_layer(host):
    apply(
        host.rootfs,
        tar(d("d/"), f("d/a")),
        tar(f("d/b"), sym("d", str(host.victim)), f("d/c", b"c"), d("d/sub/"), wh("d/.wh.hello")),
    )
    assert (host.rootfs / str(host.victim).lstrip("/") / "c").read_bytes() == b"c"
    host.assert_untouched()
