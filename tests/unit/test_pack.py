"""Unit tests of socker_lib.pack: one deterministic layer blob from a root filesystem directory.

Trees are built on disk by ``make_tree`` (also used by the umoci integration test): every entry
type, hard links, xattrs (binary ones too), setuid/setgid/sticky, nanosecond and pre-1970
mtimes, long, unicode and non-UTF-8 names, a socket, and symlinks that point out of the tree.
With ``privileged`` (root) it adds owners, device nodes, ``trusted.*`` xattrs and a file
capability.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from socker_lib import pack
from socker_lib.compression import open_layer
from socker_lib.errors import ConfigError, SockerError
from socker_lib.layers import RootfsWriter
from socker_lib.pack import PackedLayer, pack_layer
from tests.conftest import needs_root
from tests.support.oci import file_capability
from tests.support.tree import diff_trees, snapshot

T = 1_600_000_000
NS = 1_000_000_000
LONG_DIR = "long/" + "/".join(["d" * 60, "e" * 60, "f" * 60])
LONG_FILE = f"{LONG_DIR}/{'n' * 120}"
UNICODE = "uni/ünïcødé — 日本語.txt"
NON_UTF8_DIR = b"raw/\xff\xfe"
NON_UTF8_FILE = b"raw/caf\xe9"
SECRET = b"socker-pack-secret-outside-the-tree"
SOCKET = "run/app.sock"
BIG = (
    random.Random(0).randbytes(1 << 20)
    + b"\0" * (1 << 20)
    + b"text " * 100_000
    + random.Random(1).randbytes(70_001)
)


def _spec(privileged: bool) -> list[tuple]:
    """(kind, path, payload, metadata): the tree of ``make_tree``, parents before children."""
    owner = {"uid": 1000, "gid": 1000} if privileged else {}
    trusted = {"trusted.dirtrust": b"t\x00\xff"} if privileged else {}
    spec = [
        ("dir", "bin", None, {}),
        ("file", "bin/busybox", b"#!busybox\n" * 10, {"mode": 0o755}),
        ("symlink", "bin/sh", "busybox", {"ns": 2}),
        ("file", "bin/su", b"su", {"mode": 0o4755}),
        ("file", "bin/wall", b"wall", {"mode": 0o2755, **({"gid": 5} if privileged else {})}),
        ("file", "bin/sticky", b"sticky", {"mode": 0o1644}),
        ("dir", "etc", None, {"xattrs": {"user.dir": b"d", **trusted}, "ns": 111_111_111}),
        ("file", "etc/hostname", b"socker\n", {"ns": 123_456_789}),
        ("file", "etc/half", b"half\n", {"ns": 500_000_000}),
        ("file", "etc/empty", b"", {"mode": 0o600}),
        ("file", "etc/old", b"before 1970\n", {"t": -2, "ns": 500_000_000}),
        (
            "file",
            "etc/xattrs",
            b"x",
            {"xattrs": {"user.text": b"hello", "user.bin": b"\xff\x00\x80\n=", "user.empty": b""}},
        ),
        ("symlink", "etc/mtab", "/proc/self/mounts", {}),
        ("symlink", "etc/dangling", "../nowhere/at/all", {}),
        ("symlink", "etc/longlink", "x" * 150 + "/y", {}),
        ("symlink", "etc/unilink", "../" + UNICODE, {}),
        ("fifo", "etc/initctl", None, {"mode": 0o600, "ns": 7}),
        ("dir", "tmp", None, {"mode": 0o1777}),
        ("dir", "srv", None, {"mode": 0o2775}),
        ("dir", "home", None, {}),
        ("dir", "home/user", None, {"mode": 0o700, **owner, "ns": 999_999_999}),
        ("file", "home/user/.profile", b"PS1=$\n", owner),
        ("dir", "long", None, {}),
        ("dir", "long/" + "d" * 60, None, {}),
        ("dir", "long/" + "d" * 60 + "/" + "e" * 60, None, {}),
        ("dir", LONG_DIR, None, {}),
        ("file", LONG_FILE, b"long name\n", {}),
        ("dir", "uni", None, {}),
        ("file", UNICODE, "ünïcødé\n".encode(), {}),
        ("dir", "uni/日本", None, {}),
        ("dir", "raw", None, {}),
        ("file", NON_UTF8_FILE, b"latin-1 name\n", {}),
        ("dir", NON_UTF8_DIR, None, {}),
        ("file", NON_UTF8_DIR + b"/inner", b"inner\n", {}),
        ("dir", "order", None, {}),
        *[("file", f"order/{n}", n.encode(), {}) for n in ("a-b", "a.b", "a0", "B", "Z", "é")],
        ("dir", "order/a", None, {}),
        ("file", "order/a/b", b"a/b", {}),
        ("dir", "var", None, {}),
        ("dir", "var/lib", None, {"mode": 0o750}),
        ("file", "var/lib/big", BIG, {"mode": 0o600, "ns": 1}),
        ("dir", "links", None, {}),
        ("file", "links/a", b"hard linked\n", {"mode": 0o640, "xattrs": {"user.shared": b"inode"}}),
        ("hardlink", "links/b", "links/a", {}),
        # Sorts before links/a: this path must carry the data, the others link to it.
        ("hardlink", "bin/zz-first", "links/a", {}),
        ("symlink", "links/sym", "a", {}),
        ("hardlink", "links/sym2", "links/sym", {}),
        ("fifo", "links/fifo", None, {}),
        ("hardlink", "links/fifo2", "links/fifo", {}),
        ("dir", "run", None, {}),
        ("socket", SOCKET, None, {}),
        # Symlinks out of the tree: packed as links, never followed.
        ("symlink", "esc", "../outside", {}),
        ("symlink", "escfile", "../outside/secret", {}),
    ]
    if privileged:
        spec += [
            ("dir", "dev", None, {}),
            ("chardev", "dev/null", (1, 3), {"mode": 0o666}),
            ("chardev", "dev/maxdev", (4095, 1048575), {"mode": 0o600}),
            ("blockdev", "dev/sda", (8, 0), {"mode": 0o660, "gid": 6}),
            (
                "file",
                "bin/ping",
                b"ping",
                {"mode": 0o755, "xattrs": {"security.capability": file_capability(13)}},
            ),
            ("file", "bin/newgrp", b"newgrp", {"mode": 0o4711, "uid": 1001, "gid": 1001}),
            ("file", "etc/bigid", b"big ids\n", {"uid": 3_000_000, "gid": 4_000_000}),
            ("symlink", "etc/trustlink", "hostname", {"xattrs": {"trusted.onlink": b"1"}}),
            ("fifo", "dev/trustfifo", None, {"xattrs": {"trusted.fifo": b"\xff"}}),
        ]
    return spec


def make_tree(root, *, privileged: bool, reverse: bool = False) -> Path:
    """Build the test tree at ``root`` (which must not exist); ``reverse`` creates the same tree
    in another order (other inodes, other directory order, other xattr order)."""
    root = Path(root)
    root.mkdir(parents=True)
    (root.parent / "outside").mkdir(exist_ok=True)
    (root.parent / "outside" / "secret").write_bytes(SECRET)
    spec = _spec(privileged)
    dirs = [e for e in spec if e[0] == "dir"]
    nodes = [e for e in spec if e[0] not in ("dir", "hardlink")]
    links = [e for e in spec if e[0] == "hardlink"]
    if reverse:
        nodes.reverse()
    for _, rel, _, _ in dirs:
        os.mkdir(_at(root, rel))
    for kind, rel, payload, _ in nodes:
        _create(_at(root, rel), kind, payload)
    for _, rel, target, _ in links:
        os.link(_at(root, target), _at(root, rel), follow_symlinks=False)
    for kind, rel, _, meta in nodes + sorted(dirs, key=lambda e: -len(os.fsencode(e[1]))):
        _set_meta(_at(root, rel), kind, meta, reverse)
    return root


def _at(root: Path, rel: str | bytes) -> bytes:
    return os.fsencode(root) + b"/" + os.fsencode(rel)


def _create(path: bytes, kind: str, payload) -> None:
    if kind == "file":
        with open(path, "wb") as f:
            f.write(payload)
    elif kind == "symlink":
        os.symlink(payload, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind in ("chardev", "blockdev"):
        mode = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
        os.mknod(path, mode | 0o600, os.makedev(*payload))
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)


def _set_meta(path: bytes, kind: str, meta: dict, reverse: bool) -> None:
    nofollow = {"follow_symlinks": False}
    if "uid" in meta or "gid" in meta:
        os.chown(path, meta.get("uid", 0), meta.get("gid", 0), **nofollow)
    if kind != "symlink":
        os.chmod(path, meta.get("mode", 0o755 if kind == "dir" else 0o644))
    xattrs = list(meta.get("xattrs", {}).items())
    for name, value in reversed(xattrs) if reverse else xattrs:
        os.setxattr(path, name, value, **nofollow)
    mtime = meta.get("t", T) * NS + meta.get("ns", 0)
    os.utime(path, ns=(mtime, mtime), **nofollow)


# -- helpers ------------------------------------------------------------------------------------


def _tar_bytes(layer: PackedLayer) -> bytes:
    data = layer.path.read_bytes()
    if layer.compression == "gzip":
        return gzip.decompress(data)
    if layer.compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def _members(layer: PackedLayer) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(_tar_bytes(layer)), mode="r:") as tf:
        return {m.name: m for m in tf.getmembers()}


def _names(layer: PackedLayer) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(_tar_bytes(layer)), mode="r:") as tf:
        return tf.getnames()


def _xattr(member: tarfile.TarInfo, name: str) -> bytes:
    return member.pax_headers["SCHILY.xattr." + name].encode("utf-8", "surrogateescape")


def _apply(layer: PackedLayer, rootfs: Path) -> None:
    reader = open_layer(layer.path, layer.compression)
    writer = RootfsWriter(rootfs)
    writer.apply(reader)
    writer.finish()
    assert reader.digest == layer.diff_id


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "tree", privileged=os.geteuid() == 0)


# -- determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_packing_twice_gives_the_same_bytes(tree, tmp_path, compression):
    one = pack_layer(tree, tmp_path / "one", compression=compression)
    two = pack_layer(tree, tmp_path / "two", compression=compression)
    assert one.path.read_bytes() == two.path.read_bytes()
    assert (one.digest, one.diff_id, one.size) == (two.digest, two.diff_id, two.size)


def test_the_same_tree_built_another_way_gives_the_same_bytes(tmp_path):
    privileged = os.geteuid() == 0
    a = make_tree(tmp_path / "a" / "tree", privileged=privileged)
    b = make_tree(tmp_path / "b" / "tree", privileged=privileged, reverse=True)
    assert snapshot(a).keys() == snapshot(b).keys()
    assert pack_layer(a, tmp_path / "a.tgz").digest == pack_layer(b, tmp_path / "b.tgz").digest


def test_touched_but_equal_tree_gives_the_same_bytes(tree, tmp_path):
    before = pack_layer(tree, tmp_path / "before")
    # Replace a file by an identical copy (new inode, new ctime), as an editor's save would.
    target = tree / "etc" / "hostname"
    st, etc = target.lstat(), (tree / "etc").lstat()
    copy = tree / "etc" / ".hostname.new"
    copy.write_bytes(target.read_bytes())
    os.chmod(copy, stat.S_IMODE(st.st_mode))
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, target)
    os.utime(tree / "etc", ns=(etc.st_atime_ns, etc.st_mtime_ns))
    # Re-set xattrs in another order, and read everything (atimes change).
    xattrs = tree / "etc" / "xattrs"
    for name in sorted(os.listxattr(xattrs), reverse=True):
        value = os.getxattr(xattrs, name)
        os.removexattr(xattrs, name)
        os.setxattr(xattrs, name, value)
    for path in (tree / "var/lib/big", tree / "bin/busybox"):
        os.utime(path, ns=(12345, path.lstat().st_mtime_ns))
    after = pack_layer(tree, tmp_path / "after")
    assert (after.digest, after.diff_id) == (before.digest, before.diff_id)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_output_does_not_depend_on_the_number_of_threads(tree, tmp_path, monkeypatch, compression):
    digests = set()
    for workers in (1, 2, 3, 5):
        monkeypatch.setattr(pack, "_workers", lambda n=workers: n)
        digests.add(pack_layer(tree, tmp_path / f"w{workers}", compression=compression).digest)
    assert len(digests) == 1


def test_source_date_epoch_clamps_newer_mtimes(tree, tmp_path, monkeypatch):
    epoch = T - 1  # every mtime in the tree is later, but the pre-1970 one
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    members = _members(pack_layer(tree, tmp_path / "clamped"))
    assert members["etc/hostname"].mtime == epoch
    assert "mtime" not in members["etc/hostname"].pax_headers
    assert members["etc/old"].pax_headers["mtime"] == "-1.5"
    assert {m.mtime for name, m in members.items() if name != "etc/old"} == {epoch}
    # An explicit value wins over the environment.
    members = _members(pack_layer(tree, tmp_path / "explicit", source_date_epoch=T + 10))
    assert members["etc/hostname"].pax_headers["mtime"] == f"{T}.123456789"
    assert members["bin/busybox"].mtime == T


def test_source_date_epoch_makes_newer_trees_pack_alike(tmp_path, monkeypatch):
    privileged = os.geteuid() == 0
    a = make_tree(tmp_path / "a" / "tree", privileged=privileged)
    b = make_tree(tmp_path / "b" / "tree", privileged=privileged)
    os.utime(b / "etc/hostname", ns=(0, (T + 3600) * NS + 17))
    assert pack_layer(a, tmp_path / "a.tgz").digest != pack_layer(b, tmp_path / "b.tgz").digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T))
    assert pack_layer(a, tmp_path / "a.tgz").digest == pack_layer(b, tmp_path / "b.tgz").digest


def test_malformed_source_date_epoch_is_an_error(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        pack_layer(tree, tmp_path / "x")


# -- the tar ------------------------------------------------------------------------------------


def test_entries_are_sorted_parents_first(tree, tmp_path):
    names = _names(pack_layer(tree, tmp_path / "l"))
    keys = [tuple(os.fsencode(n).split(b"/")) for n in names]
    assert keys == sorted(keys)
    order = [n for n in names if n.startswith("order/")]
    assert order == [
        "order/B",
        "order/Z",
        "order/a",
        "order/a/b",
        "order/a-b",
        "order/a.b",
        "order/a0",
        "order/é",
    ]
    assert "." not in names and "./" not in names and not any(n.startswith("./") for n in names)


def test_every_path_is_packed_once_and_nothing_outside(tree, tmp_path):
    layer = pack_layer(tree, tmp_path / "l", compression="none")
    expected = {os.fsdecode(p) for p in snapshot(tree)} - {SOCKET}
    names = _names(layer)
    assert len(names) == len(set(names)) == layer.entries
    assert set(names) == expected
    assert SECRET not in layer.path.read_bytes()
    members = _members(layer)
    assert members["esc"].issym() and members["esc"].linkname == "../outside"
    assert members["escfile"].issym()


def test_headers_are_pax_with_numeric_owners(tree, tmp_path):
    raw = _tar_bytes(pack_layer(tree, tmp_path / "l"))
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        members = tf.getmembers()
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert raw[257:265] == b"ustar\x0000"  # POSIX ustar magic and version, never GNU's
    # What fits in ustar gets no PAX header at all; the end is two zero blocks.
    busybox = next(m for m in members if m.name == "bin/busybox")
    assert busybox.pax_headers == {} and busybox.mtime == T
    assert len(raw) % 512 == 0 and raw[-1024:] == b"\0" * 1024 and raw[-1536:-1024] != b"\0" * 512
    assert b"atime" not in raw and b"ctime" not in raw


def test_modes_and_times(tree, tmp_path):
    members = _members(pack_layer(tree, tmp_path / "l"))
    assert members["bin/su"].mode == 0o4755
    assert members["bin/wall"].mode == 0o2755
    assert members["bin/sticky"].mode == 0o1644
    assert members["tmp"].mode == 0o1777 and members["tmp"].isdir()
    assert members["srv"].mode == 0o2775
    assert members["etc/hostname"].pax_headers["mtime"] == f"{T}.123456789"
    assert members["etc/half"].pax_headers["mtime"] == f"{T}.5"
    assert members["var/lib/big"].pax_headers["mtime"] == f"{T}.000000001"
    assert members["etc/old"].pax_headers["mtime"] == "-1.5"
    assert members["bin/sh"].pax_headers["mtime"] == f"{T}.000000002"


def test_hard_links_point_at_the_first_path_in_order(tree, tmp_path):
    members = _members(pack_layer(tree, tmp_path / "l"))
    first = members["bin/zz-first"]
    assert first.isfile() and first.size == len(b"hard linked\n")
    assert _xattr(first, "user.shared") == b"inode"
    for name in ("links/a", "links/b"):
        assert members[name].islnk() and members[name].linkname == "bin/zz-first"
        assert members[name].size == 0
    assert members["links/sym"].issym() and members["links/sym2"].islnk()
    assert members["links/sym2"].linkname == "links/sym"
    assert members["links/fifo"].isfifo() and members["links/fifo2"].linkname == "links/fifo"


def test_xattrs_are_written_byte_for_byte(tree, tmp_path):
    layer = pack_layer(tree, tmp_path / "l")
    members = _members(layer)
    assert _xattr(members["etc/xattrs"], "user.bin") == b"\xff\x00\x80\n="
    assert _xattr(members["etc/xattrs"], "user.text") == b"hello"
    assert _xattr(members["etc/xattrs"], "user.empty") == b""
    assert _xattr(members["etc"], "user.dir") == b"d"
    keys = [k for k in members["etc/xattrs"].pax_headers if k.startswith("SCHILY.xattr.")]
    assert keys == sorted(keys)


def test_long_unicode_and_non_utf8_names(tree, tmp_path):
    members = _members(pack_layer(tree, tmp_path / "l"))
    assert members[LONG_FILE].isfile() and len(LONG_FILE.encode()) > 255
    assert members[UNICODE].isfile()
    assert members["uni/日本"].isdir()
    assert members[os.fsdecode(NON_UTF8_FILE)].isfile()
    assert members[os.fsdecode(NON_UTF8_DIR + b"/inner")].isfile()
    assert members["etc/longlink"].linkname == "x" * 150 + "/y"
    assert members["etc/unilink"].linkname == "../" + UNICODE


def test_sockets_are_left_out_and_counted(tree, tmp_path):
    layer = pack_layer(tree, tmp_path / "l")
    assert SOCKET not in _names(layer)
    assert layer.sockets_skipped == 1
    assert layer.skipped == [f"{SOCKET}: a socket, left out (tar cannot hold one)"]


def test_devices_and_fifos(tmp_path):
    needs_root()
    tree = make_tree(tmp_path / "tree", privileged=True)
    members = _members(pack_layer(tree, tmp_path / "l"))
    null, sda, maxdev = members["dev/null"], members["dev/sda"], members["dev/maxdev"]
    assert null.ischr() and (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)
    assert sda.isblk() and (sda.devmajor, sda.devminor, sda.gid) == (8, 0, 6)
    assert (maxdev.devmajor, maxdev.devminor) == (4095, 1048575)
    assert members["etc/initctl"].isfifo() and members["etc/initctl"].mode == 0o600
    assert _xattr(members["dev/trustfifo"], "trusted.fifo") == b"\xff"


def test_privileged_metadata(tmp_path):
    needs_root()
    tree = make_tree(tmp_path / "tree", privileged=True)
    members = _members(pack_layer(tree, tmp_path / "l"))
    assert _xattr(members["bin/ping"], "security.capability") == file_capability(13)
    assert (members["bin/newgrp"].uid, members["bin/newgrp"].mode) == (1001, 0o4711)
    assert (members["etc/bigid"].uid, members["etc/bigid"].gid) == (3_000_000, 4_000_000)
    assert members["etc/bigid"].pax_headers["uid"] == "3000000"
    assert _xattr(members["etc/trustlink"], "trusted.onlink") == b"1"
    assert _xattr(members["etc"], "trusted.dirtrust") == b"t\x00\xff"


def test_mounted_filesystems_are_not_entered(tree, tmp_path):
    needs_root()
    mnt = tree / "srv"
    os.utime(mnt, ns=(0, T * NS))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=2775", "socker-pack-test", str(mnt)], check=True)
    try:
        (mnt / "host-file").write_bytes(b"from another filesystem")
        layer = pack_layer(tree, tmp_path / "l")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    names = _names(layer)
    assert "srv" in names and "srv/host-file" not in names
    assert any(line.startswith("srv: another filesystem") for line in layer.skipped)


# -- the blob -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_digests_and_sizes(tree, tmp_path, compression):
    layer = pack_layer(tree, tmp_path / "blob", compression=compression)
    blob = layer.path.read_bytes()
    assert layer.path == tmp_path / "blob" and layer.compression == compression
    assert layer.size == len(blob)
    assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.diff_id == "sha256:" + hashlib.sha256(_tar_bytes(layer)).hexdigest()
    assert layer.entries == len(_names(layer))


def test_gzip_header_has_no_time_and_no_name(tree, tmp_path):
    blob = pack_layer(tree, tmp_path / "blob.tar.gz").path.read_bytes()
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0  # no FNAME, FCOMMENT, FEXTRA or FHCRC
    assert blob[4:8] == b"\0\0\0\0"  # mtime
    # Python's gzip checks the CRC and size of the trailer.
    assert len(gzip.decompress(blob)) == int.from_bytes(blob[-4:], "little")


def test_zstd_magic(tree, tmp_path):
    blob = pack_layer(tree, tmp_path / "blob", compression="zstd").path.read_bytes()
    assert blob[:4] == b"\x28\xb5\x2f\xfd"


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
def test_gzip_levels(tree, tmp_path, level):
    plain = pack_layer(tree, tmp_path / "plain", compression="none")
    layer = pack_layer(tree, tmp_path / f"l{level}", level=level)
    assert gzip.decompress(layer.path.read_bytes()) == plain.path.read_bytes()
    assert layer.diff_id == plain.diff_id == plain.digest


def test_bad_compression_or_level(tree, tmp_path):
    for kwargs in ({"compression": "bzip2"}, {"level": 10}, {"compression": "none", "level": 1}):
        with pytest.raises(ConfigError):
            pack_layer(tree, tmp_path / "x", **kwargs)


def test_progress_counts_uncompressed_bytes(tree, tmp_path):
    calls = []
    layer = pack_layer(tree, tmp_path / "l", progress=calls.append)
    assert sum(calls) == len(_tar_bytes(layer))
    assert len(calls) > 2  # the 3 MiB file alone spans several blocks


def test_empty_tree(tmp_path):
    (tmp_path / "empty").mkdir()
    layer = pack_layer(tmp_path / "empty", tmp_path / "l")
    assert _tar_bytes(layer) == b"\0" * 1024 and layer.entries == 0
    _apply(layer, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_missing_rootfs(tmp_path):
    with pytest.raises(SockerError, match="cannot pack"):
        pack_layer(tmp_path / "nothing", tmp_path / "l")


# -- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_round_trip_through_rootfs_writer(tree, tmp_path, compression):
    layer = pack_layer(tree, tmp_path / "blob", compression=compression)
    _apply(layer, tmp_path / "out")
    assert diff_trees(tree, tmp_path / "out", ignore=[SOCKET]) == []


def test_an_unpacked_layer_packs_to_the_same_blob(tree, tmp_path):
    layer = pack_layer(tree, tmp_path / "blob")
    _apply(layer, tmp_path / "out")
    again = pack_layer(tmp_path / "out", tmp_path / "again")
    assert (again.digest, again.diff_id) == (layer.digest, layer.diff_id)


def test_round_trip_of_the_privileged_tree(tmp_path):
    needs_root()
    tree = make_tree(tmp_path / "tree", privileged=True)
    layer = pack_layer(tree, tmp_path / "blob")
    _apply(layer, tmp_path / "out")
    out = snapshot(tmp_path / "out")
    assert diff_trees(tree, out, ignore=[SOCKET]) == []
    assert out["bin/ping"].xattrs == (("security.capability", file_capability(13)),)
    assert out["dev/sda"].rdev == (8, 0)
    assert out["links/a"].hardlinks == ("bin/zz-first", "links/a", "links/b")


# -- edge cases and errors ----------------------------------------------------------------------


def test_values_beyond_ustar_go_to_pax_records():
    from socker_lib.tarstream import TarReader

    size, uid = (8 << 30) + 5, 1 << 40
    header = pack._header(b"huge", b"0", 0o644, uid, 7, size, -NS // 2, b"", (0, 0), [])
    member = TarReader(io.BytesIO(header)).next()
    assert (member.name, member.size, member.uid, member.gid) == ("huge", size, uid, 7)
    assert member.pax_headers["mtime"] == "-0.5"


def test_a_file_that_shrinks_while_packed_is_an_error(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "readv", lambda fd, buffers: 0)
    with pytest.raises(SockerError, match="shrank while being packed"):
        pack_layer(tree, tmp_path / "l")


def test_unwritable_destination(tree, tmp_path):
    with pytest.raises(SockerError, match="cannot write the layer blob"):
        pack_layer(tree, tmp_path / "no-such-dir" / "l")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_full_disk_is_reported_not_hung(tree, tmp_path, compression):
    needs_root()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "socker-pack-full", str(small)], check=True)
    try:
        with pytest.raises(SockerError, match="No space left"):
            pack_layer(tree, small / "l", compression=compression)
    finally:
        subprocess.run(["umount", str(small)], check=True)
