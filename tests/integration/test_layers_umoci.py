"""socker_lib.layers against the referee: ``umoci unpack`` of the same OCI image layout.

The test builds a small multi-layer image itself (gzip layers, and a twin whose second layer
is zstd), unpacks it with umoci and with ``RootfsWriter``, and compares the two trees file by
file: type, mode, owner, content, link target, device numbers, xattrs, hard-link groups and
mtimes to the nanosecond (umoci keeps PAX nanoseconds: ``system.Lutimes`` uses utimensat).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from socker_lib.layers import ApplyOptions, RootfsWriter
from tests.conftest import needs_root, needs_tool

pytestmark = [pytest.mark.integration, pytest.mark.root]

_T = 1_600_000_000
_CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")  # v2, cap_net_raw+ep
_LONG = "long/" + "/".join(["d" * 60, "e" * 60, "f" * 60]) + "/" + "n" * 120
_GNU_LONG = "gnu/" + "g" * 150
_UNICODE = "uni/ünïcødé — 日本語.txt"
# Directories whose mtime umoci leaves at "now": made implicitly (no entry of their own), or
# emptied of lower content by a whiteout of their parent after this layer re-added them.
_MTIME_NOW = {"implicit", "implicit/made", "implicit/made/on-the-way", "wh/redir"}
_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


# -- layer contents ---------------------------------------------------------------------------


def _ti(name, kind, mode, *, uid=0, gid=0, t=_T, ns=0, xattrs=None, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, t, link
    if ns:
        info.pax_headers["mtime"] = f"{t}.{ns:09d}"
    for key, value in (xattrs or {}).items():
        info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return info


def _d(name, mode=0o755, **kw):
    return _ti(name, tarfile.DIRTYPE, mode, **kw), None


def _f(name, data=b"", mode=0o644, **kw):
    info = _ti(name, tarfile.REGTYPE, mode, **kw)
    info.size = len(data)
    return info, data


def _sym(name, target, **kw):
    return _ti(name, tarfile.SYMTYPE, 0o777, link=target, **kw), None


def _hard(name, target):
    # Metadata of its own, which umoci ignores: a hard link shares its target's inode.
    return _ti(name, tarfile.LNKTYPE, 0o600, uid=5, gid=5, t=_T + 77, link=target), None


def _node(name, kind, mode, major=0, minor=0, **kw):
    info = _ti(name, kind, mode, **kw)
    info.devmajor, info.devminor = major, minor
    return info, None


def _tar(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _layer_base() -> bytes:
    big = hashlib.sha256(b"seed").digest() * 40_000
    return _tar(
        [
            _d("./", t=_T - 1, ns=5),
            _d("bin/", ns=111_111_111),
            _f("bin/busybox", b"#!busybox\n", 0o755, ns=1),
            _sym("bin/sh", "busybox", ns=2),
            _f("bin/su", b"su", 0o4755, uid=0, gid=0),
            _f("bin/newgrp", b"newgrp", 0o4711, uid=1001, gid=1001),
            _f("bin/wall", b"wall", 0o2755, gid=5),
            _f("bin/ping", b"ping", 0o755, xattrs={"security.capability": _CAP_NET_RAW}),
            _hard("bin/hl", "bin/busybox"),
            _hard("bin/hl_to_sym", "bin/sh"),
            _d("dev/"),
            _node("dev/null", tarfile.CHRTYPE, 0o666, 1, 3),
            _node("dev/sda", tarfile.BLKTYPE, 0o660, 8, 0, gid=6),
            _node("dev/initctl", tarfile.FIFOTYPE, 0o600),
            _d("etc/", xattrs={"user.dirattr": b"1", "trusted.dirtrust": b"t"}),
            _f("etc/hostname", b"one\n", ns=123_456_789),
            _f("etc/owned", b"mine", 0o640, uid=1000, gid=1000),
            _f("etc/xattrs", b"x", xattrs={"trusted.t": b"v", "user.u": b"w", "user.bin": b"\xff\x00\x80"}),
            _sym("etc/mtab", "/proc/self/mounts", xattrs={"trusted.onlink": b"1"}),
            _d("tmp/", 0o1777),
            _d("var/"),
            _sym("var/run", "/run"),
            _d("var/lib/", 0o750, uid=7, gid=8),
            _f("var/lib/big", big, 0o600),
            _d("home/"),
            _d("home/user/", 0o700, uid=1000, gid=1000, ns=999_999_999),
            _f("home/user/.profile", b"PS1=$\n", uid=1000, gid=1000),
            _d("wh/"),
            _f("wh/gone.txt", b"gone"),
            _d("wh/gonedir/"),
            _f("wh/gonedir/a", b"a"),
            _d("wh/gonedir/sub/"),
            _f("wh/gonedir/sub/b", b"b"),
            _sym("wh/link", "gone-target"),
            _f("wh/gone-target", b"target of a whited-out link stays"),
            _f("wh/readd", b"old"),
            _f("wh/keep", b"keep"),
            _d("wh/redir/"),
            _f("wh/redir/lower", b"lower"),
            _d("opq/", 0o711),
            _f("opq/a", b"a"),
            _d("opq/sub/"),
            _f("opq/sub/c", b"c"),
            _sym("opq/lowerlink", "a"),
            _d("rep/"),
            _f("rep/file2dir", b"file"),
            _d("rep/dir2file/"),
            _f("rep/dir2file/child", b"child"),
            _sym("rep/link2dir", "../etc"),
            _d("rep/dir2link/"),
            _f("rep/dir2link/child", b"child"),
            _f("rep/file2link", b"file"),
            _sym("rep/link2file", "nowhere"),
            _d("rep/samedir/", 0o755, uid=1, gid=1, xattrs={"user.old": b"1"}),
            _f("rep/samedir/child", b"kept"),
            _d("long/"),
            _d("long/" + "d" * 60 + "/"),
            _d("long/" + "d" * 60 + "/" + "e" * 60 + "/"),
            _d("long/" + "d" * 60 + "/" + "e" * 60 + "/" + "f" * 60 + "/"),
            _f(_LONG, b"long name"),
            _d("uni/"),
            _f(_UNICODE, "ünïcødé".encode()),
            _d("uni/💾/", 0o700),
        ]
    )


def _layer_changes() -> bytes:
    return _tar(
        [
            _f("wh/.wh.gone.txt"),
            _f("wh/.wh.gonedir"),
            _f("wh/.wh.link"),
            _f("wh/readd", b"new, same layer as its whiteout"),
            _f("wh/.wh.readd"),
            _f("wh/.wh.never-existed"),
            _d("wh/redir/", 0o700),
            _f("wh/redir/upper", b"upper"),
            _f("wh/.wh.redir"),
            _f("opq/new", b"added before the opaque whiteout"),
            _f("opq/.wh..wh..opq"),
            _d("opq/sub2/"),
            _f("opq/sub2/d", b"d"),
            _d("rep/file2dir/", 0o750, ns=7),
            _f("rep/file2dir/inner", b"inner"),
            _f("rep/dir2file", b"now a file"),
            _d("rep/link2dir/"),
            _sym("rep/dir2link", "../bin"),
            _sym("rep/file2link", "../etc/hostname"),
            _f("rep/link2file", b"now a file"),
            _d("rep/samedir/", 0o700, uid=2, gid=3, t=_T + 50, xattrs={"user.new": b"2"}),
            _d("etc/", 0o750, t=_T + 100, ns=42, xattrs={"user.dirattr2": b"2"}),
            _f("etc/hostname", b"two\n", t=_T + 100),
            _f("bin/newprog", b"added under a lower directory", 0o755),
            _d("data/"),
            _hard("data/hl_lower", "bin/busybox"),
            _f("uni/💾/.wh..wh..opq"),
        ]
    )


def _layer_gnu() -> bytes:
    return _tar(
        [
            _d("gnu/"),
            _f(_GNU_LONG, b"gnu long name"),
            _sym("gnu/ln_long", "../" + _GNU_LONG),
            _hard("gnu/hl_long", _GNU_LONG),
            _f("gnu/empty"),
            _d("implicit/"),
            _f("implicit/made/on-the-way/file", b"parents made implicitly"),
        ],
        fmt=tarfile.GNU_FORMAT,
    )


def _layer_empty() -> bytes:
    return _tar([])


def _layers() -> list[bytes]:
    return [_layer_base(), _layer_changes(), _layer_gnu(), _layer_empty()]


# -- the OCI image layout ---------------------------------------------------------------------


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _compress(data: bytes, media_type: str) -> bytes:
    if media_type == _ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    return gzip.compress(data, mtime=0)


def _write_layout(layout: Path, images: dict[str, list[str]], layers: list[bytes]) -> None:
    """One image per tag, each with the same layers compressed as its media types say."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **_blob(layout, json.dumps(config).encode()),
    }
    manifests = []
    for tag, media_types in images.items():
        layer_descs = [
            {"mediaType": mt, **_blob(layout, _compress(layer, mt))}
            for mt, layer in zip(media_types, layers, strict=True)
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        }
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(layout, json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def _layer_streams(layout: Path, tag: str):
    """The uncompressed layers of an image, read back from the layout as the pull code would."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads(_blob_path(layout, desc).read_bytes())
    for layer in manifest["layers"]:
        raw = _blob_path(layout, layer).open("rb")
        if layer["mediaType"] == _ZSTD:
            yield zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            yield gzip.GzipFile(fileobj=raw)


def _blob_path(layout: Path, desc: dict) -> Path:
    return layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]


def _umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    run = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], capture_output=True, text=True
    )
    assert run.returncode == 0, f"umoci unpack failed:\n{run.stderr}"
    return bundle / "rootfs"


def _socker_unpack(layout: Path, tag: str, rootfs: Path) -> None:
    writer = RootfsWriter(rootfs, ApplyOptions(rootless=False))
    for stream in _layer_streams(layout, tag):
        report = writer.apply(stream)
        assert stream.read() == b"", "apply() must read the layer to its end"
        assert report.skipped == []
    writer.finish()


def _umoci_reads_zstd(layout: Path, tmp_path: Path) -> bool:
    run = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:zstd", str(tmp_path / "zstd-probe")],
        capture_output=True,
        text=True,
    )
    if run.returncode == 0:
        return True
    # umoci before 0.5 knows only tar and tar+gzip layers.
    assert "mediatype" in run.stderr.lower(), run.stderr
    return False


# -- snapshots and their comparison -----------------------------------------------------------


def _snapshot(root: Path) -> tuple[dict[str, dict], set[tuple[str, ...]]]:
    """Every path under root with its metadata, and the hard-link groups (paths sharing an inode)."""
    files: dict[str, dict] = {}
    inodes: dict[int, list[str]] = {}
    for rel, full in _walk(root):
        st = os.lstat(full)
        files[rel] = _describe(full, st)
        if not stat.S_ISDIR(st.st_mode):
            inodes.setdefault(st.st_ino, []).append(rel)
    return files, {tuple(sorted(paths)) for paths in inodes.values() if len(paths) > 1}


def _walk(root: Path):
    yield ".", str(root)
    stack = [(str(root), "")]
    while stack:
        full, rel = stack.pop()
        for entry in os.scandir(full):
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            yield child_rel, entry.path
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, child_rel))


def _describe(full: str, st: os.stat_result) -> dict:
    info = {
        "type": stat.filemode(st.st_mode)[0],
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "owner": f"{st.st_uid}:{st.st_gid}",
        "mtime_ns": st.st_mtime_ns,
        "xattrs": {
            n: os.getxattr(full, n, follow_symlinks=False).hex()
            for n in os.listxattr(full, follow_symlinks=False)
        },
    }
    if stat.S_ISREG(st.st_mode):
        info["sha256"] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        info["link"] = os.readlink(full)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info["device"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return info


def _differences(expected: tuple, actual: tuple, started_ns: int) -> list[str]:
    (want, want_links), (got, got_links) = expected, actual
    lines = [f"only in umoci:  {p}" for p in sorted(want.keys() - got.keys())]
    lines += [f"only in socker: {p}" for p in sorted(got.keys() - want.keys())]
    for path in sorted(want.keys() & got.keys()):
        for key in sorted(want[path].keys() | got[path].keys()):
            a, b = want[path].get(key), got[path].get(key)
            if key == "mtime_ns" and path in _MTIME_NOW:
                a, b = a >= started_ns, b >= started_ns
            if a != b:
                lines.append(f"{path}: {key}: umoci={a!r} socker={b!r}")
    for group in sorted(want_links ^ got_links):
        side = "umoci" if group in want_links else "socker"
        lines.append(f"hard-link group only in {side}: {' = '.join(group)}")
    return lines


def _assert_same_tree(umoci_root: Path, socker_root: Path, started_ns: int) -> dict[str, dict]:
    expected, actual = _snapshot(umoci_root), _snapshot(socker_root)
    diff = _differences(expected, actual, started_ns)
    assert not diff, "rootfs differs from umoci's:\n  " + "\n  ".join(diff)
    return expected[0]


def _assert_the_case_is_covered(tree: dict[str, dict]) -> None:
    """Guards against a vacuous comparison: the referee's tree has what the layers describe."""
    assert "wh/gone.txt" not in tree and "wh/gonedir" not in tree and "wh/link" not in tree
    assert tree["wh/gone-target"]["type"] == "-"
    assert tree["wh/readd"]["sha256"] == hashlib.sha256(b"new, same layer as its whiteout").hexdigest()
    assert {p for p in tree if p.startswith("wh/redir")} == {"wh/redir", "wh/redir/upper"}
    assert {p for p in tree if p.startswith("opq/")} == {"opq/new", "opq/sub2", "opq/sub2/d"}
    assert [
        tree[p]["type"] for p in ("rep/file2dir", "rep/dir2file", "rep/link2dir", "rep/dir2link")
    ] == list("d-dl")
    assert tree["rep/samedir/child"]["type"] == "-"
    assert tree["bin/su"]["mode"] == "0o4755" and tree["bin/newgrp"]["mode"] == "0o4711"
    assert tree["bin/ping"]["xattrs"] == {"security.capability": _CAP_NET_RAW.hex()}
    assert tree["dev/null"]["device"] == "1:3" and tree["dev/initctl"]["type"] == "p"
    assert tree["etc/hostname"]["mtime_ns"] == (_T + 100) * 10**9
    assert tree["bin"]["mtime_ns"] == _T * 10**9 + 111_111_111
    assert tree["."]["mtime_ns"] == (_T - 1) * 10**9 + 5
    assert _LONG in tree and _GNU_LONG in tree and _UNICODE in tree and "uni/💾" in tree


# -- the tests --------------------------------------------------------------------------------


def _prepare(tmp_path: Path, images: dict[str, list[str]]) -> Path:
    needs_root()
    needs_tool("umoci")
    layout = tmp_path / "layout"
    _write_layout(layout, images, _layers())
    return layout


def test_rootfs_matches_umoci_unpack(tmp_path):
    layout = _prepare(tmp_path, {"gz": [_GZIP] * 4})
    started_ns = time.time_ns()
    umoci_root = _umoci_unpack(layout, "gz", tmp_path / "bundle")
    _socker_unpack(layout, "gz", tmp_path / "socker")
    tree = _assert_same_tree(umoci_root, tmp_path / "socker", started_ns)
    _assert_the_case_is_covered(tree)


def test_zstd_layers_match_umoci_unpack(tmp_path):
    layout = _prepare(tmp_path, {"gz": [_GZIP] * 4, "zstd": [_GZIP, _ZSTD, _ZSTD, _GZIP]})
    referee = "zstd" if _umoci_reads_zstd(layout, tmp_path) else "gz"
    started_ns = time.time_ns()
    umoci_root = _umoci_unpack(layout, referee, tmp_path / "bundle")
    _socker_unpack(layout, "zstd", tmp_path / "socker")
    _assert_same_tree(umoci_root, tmp_path / "socker", started_ns)
