"""socker_lib.pack against the tools that read layers: umoci, GNU tar and bsdtar.

A rich tree (every entry type, hard links across directories, xattrs with binary values and a
file capability, setuid/setgid/sticky, device nodes, owners beyond ustar's range, nanosecond
and pre-1970 mtimes, long, unicode and non-UTF-8 names: ``tests.unit.test_pack.make_tree``)
is packed into one layer, wrapped in a one-layer OCI image layout and unpacked by
``umoci unpack``; the result must equal the source tree, mtimes included. GNU tar and bsdtar
(what ``wsl --import`` runs) must list and extract the same blob.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from socker_lib.pack import PackedLayer, pack_layer
from tests.conftest import needs_root, needs_tool
from tests.support import oci
from tests.support.tree import diff_trees, snapshot
from tests.support.umoci import umoci_unpack
from tests.unit.test_pack import SOCKET, make_tree

pytestmark = [pytest.mark.integration, pytest.mark.root]

_MEDIA_TYPES = {"gzip": oci.OCI_LAYER_GZIP, "none": oci.OCI_LAYER}
# GNU tar 1.34 does not know the POSIX keyword that bsdtar needs for names that are not UTF-8.
_GNU_TAR_NOTICE = "tar: Ignoring unknown extended header keyword 'hdrcharset'"
_EMPTY_XATTR_FILE = "etc/xattrs"  # has user.empty=""


def _pack_into_layout(tree: Path, layout: Path, tag: str, compression: str) -> PackedLayer:
    """Pack ``tree`` straight into the layout's blob store, as socker's own callers do."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = pack_layer(tree, blobs / "layer.partial", compression=compression)
    final = blobs / layer.digest.split(":", 1)[1]
    os.replace(layer.path, final)
    platform = oci.parse_platform(oci.host_platform())
    config = {
        "created": oci.CREATED,
        **platform,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": oci.CREATED, "created_by": "socker_lib.pack"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": oci.write_blob(layout, oci.json_bytes(config), oci.OCI_CONFIG),
        "layers": [{"mediaType": _MEDIA_TYPES[compression], "digest": layer.digest, "size": layer.size}],
    }
    descriptor = oci.write_blob(layout, oci.json_bytes(manifest), oci.OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [{**descriptor, "annotations": {oci.REF_NAME: tag}}],
    }
    (layout / "oci-layout").write_bytes(oci.json_bytes({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(oci.json_bytes(index))
    return PackedLayer(final, layer.digest, layer.size, layer.diff_id, compression, layer.entries)


@pytest.fixture
def tree(tmp_path) -> Path:
    needs_root()
    return make_tree(tmp_path / "tree", privileged=True)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_umoci_unpacks_the_tree_that_was_packed(tree, tmp_path, compression):
    needs_tool("umoci")
    layout = tmp_path / "layout"
    _pack_into_layout(tree, layout, "packed", compression)
    rootfs = umoci_unpack(layout, "packed", tmp_path / "bundle")
    source, unpacked = snapshot(tree), snapshot(rootfs)
    assert diff_trees(source, unpacked, ignore=[SOCKET, _EMPTY_XATTR_FILE]) == []
    # POSIX: a PAX record with an empty value deletes the key, and Go's archive/tar does just
    # that, so Go tools drop empty xattr values (GNU tar, bsdtar and socker keep them).
    want = source[_EMPTY_XATTR_FILE]
    want = want._replace(xattrs=tuple(x for x in want.xattrs if x[1] != b""))
    assert unpacked[_EMPTY_XATTR_FILE] == want
    # The case is covered: what the comparison saw really is there.
    assert unpacked["bin/ping"].xattrs == (("security.capability", oci.file_capability(13)),)
    assert unpacked["bin/newgrp"].mode & 0o7777 == 0o4711
    assert unpacked["dev/maxdev"].rdev == (4095, 1048575)
    assert unpacked["etc/bigid"].uid == 3_000_000
    assert unpacked["links/b"].hardlinks == ("bin/zz-first", "links/a", "links/b")
    assert unpacked["etc/hostname"].mtime_ns % 1_000_000_000 == 123_456_789
    assert os.fsdecode(b"raw/\xff\xfe/inner") in unpacked


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape", cwd=cwd, timeout=120)


def test_gnu_tar_and_bsdtar_list_the_blob(tree, tmp_path):
    needs_tool("tar", "bsdtar")
    layer = pack_layer(tree, tmp_path / "layer.tar.gz")
    for cmd in (["tar", "-tvf", str(layer.path)], ["bsdtar", "-tvf", str(layer.path)]):
        run = _run(cmd)
        assert run.returncode == 0, run.stderr
        assert [line for line in run.stderr.splitlines() if line != _GNU_TAR_NOTICE] == [], cmd
        assert len(run.stdout.splitlines()) == layer.entries, cmd
        assert "links/a link to bin/zz-first" in run.stdout, cmd


def test_gnu_tar_extracts_the_tree(tree, tmp_path):
    needs_tool("tar")
    layer = pack_layer(tree, tmp_path / "layer.tar.gz")
    out = tmp_path / "gnu"
    out.mkdir()
    cmd = [
        "tar",
        "-C",
        str(out),
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-xpf",
        str(layer.path),
    ]
    run = _run(cmd)
    assert run.returncode == 0, run.stderr
    assert diff_trees(tree, out, ignore=[SOCKET]) == []


def test_bsdtar_extracts_the_tree_as_wsl_import_does(tree, tmp_path):
    needs_tool("bsdtar")
    layer = pack_layer(tree, tmp_path / "layer.tar.gz")
    out = tmp_path / "bsd"
    out.mkdir()
    run = _run(["bsdtar", "-C", str(out), "-x", "-p", "--xattrs", "-f", str(layer.path)])
    assert run.returncode == 0, run.stderr
    # libarchive reads the PAX time "-1.5" as -0.5 s (Go, GNU tar and tarfile agree on -1.5 s).
    assert diff_trees(tree, out, ignore=[SOCKET, "etc/old"]) == []
    assert diff_trees(tree, out, mtime=False, ignore=[SOCKET]) == []
