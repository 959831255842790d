"""tarstream reads what tarfile reads, for every format tar writers produce."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest

from socker_lib.tarstream import ReadError, TarReader


def entries():
    out = []

    def add(name, type_=tarfile.REGTYPE, data=b"", **kw):
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.size = len(data) if type_ == tarfile.REGTYPE else 0
        for k, v in kw.items():
            setattr(ti, k, v)
        out.append((ti, data))

    add("dir", tarfile.DIRTYPE, mode=0o755, mtime=1_700_000_000)
    add("dir/file", data=b"hello" * 300, mode=0o4755, uid=1000, gid=1001, uname="u", gname="g")
    add("dir/" + "n" * 120, data=b"long")
    add("a" * 80 + "/" + "b" * 80, data=b"prefix split")
    add("dir/link", tarfile.SYMTYPE, linkname="file")
    add("dir/hard", tarfile.LNKTYPE, linkname="dir/file")
    add("dir/" + "l" * 130, tarfile.SYMTYPE, linkname="t" * 150)
    add("dir/fifo", tarfile.FIFOTYPE)
    add("dir/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    add("dir/loop", tarfile.BLKTYPE, devmajor=7, devminor=1)
    add("dir/ünïcødé", data=b"u")
    add("dir/big-uid", data=b"b", uid=3_000_000, gid=2_097_152)
    add("dir/empty")
    return out


def build(fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tf:
        for ti, data in entries():
            if fmt == tarfile.USTAR_FORMAT and (
                len(ti.linkname) > 100 or ti.uid > 0o7777777 or not ti.name.isascii() or "n" * 120 in ti.name
            ):
                continue
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def read_both(raw: bytes):
    ours = []
    r = TarReader(io.BytesIO(raw))
    while (m := r.next()) is not None:
        data = r.extractfile(m).read() if m.isfile() else b""
        ours.append(
            (
                m.name,
                m.linkname,
                m.type,
                m.mode,
                m.uid,
                m.gid,
                m.size if m.isfile() else 0,
                int(m.mtime),
                m.devmajor,
                m.devminor,
                data,
                dict(m.pax_headers),
            )
        )
    theirs = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            data = tf.extractfile(m).read() if m.isfile() else b""
            theirs.append(
                (
                    m.name,
                    m.linkname,
                    m.type,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.size if m.isfile() else 0,
                    int(m.mtime),
                    m.devmajor,
                    m.devminor,
                    data,
                    dict(m.pax_headers),
                )
            )
    return ours, theirs


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_same_as_tarfile(fmt):
    ours, theirs = read_both(build(fmt))
    assert ours == theirs and len(ours) >= 9


def test_pax_xattrs_binary_and_global_headers():
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}
    ) as tf:
        ti = tarfile.TarInfo("f")
        ti.pax_headers = {
            "SCHILY.xattr.security.capability": b"\x01\x00\xff".decode("utf-8", "surrogateescape"),
            "mtime": "1700000000.123456789",
        }
        tf.addfile(ti)
    ours, theirs = read_both(buf.getvalue())
    assert ours == theirs
    assert (
        ours[0][-1]["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == b"\x01\x00\xff"
    )
    assert ours[0][-1]["comment"] == "global"


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_reads_gnu_tar_output(tmp_path, fmt):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_bytes(os.urandom(5000))
    (src / "d/l").symlink_to("f")
    os.link(src / "d/f", src / "d/h")
    if fmt != "v7":
        (src / "d" / ("x" * 90)).write_text("long")
    raw = subprocess.run(
        ["tar", f"--format={fmt}", "-C", str(src), "-cf", "-", "d"], capture_output=True, check=True
    ).stdout
    ours, theirs = read_both(raw)
    assert ours == theirs


def test_corrupt_header_is_refused():
    raw = bytearray(build(tarfile.GNU_FORMAT))
    raw[10] ^= 0xFF
    with pytest.raises(ReadError, match="checksum"):
        TarReader(io.BytesIO(bytes(raw))).next()


def test_truncated_data_is_refused():
    raw = build(tarfile.GNU_FORMAT)[:1200]
    r = TarReader(io.BytesIO(raw))
    with pytest.raises(ReadError):
        while (m := r.next()) is not None:
            if m.isfile():
                r.extractfile(m).read()


def test_sparse_is_refused():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("s")
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tf.addfile(ti)
    with pytest.raises(ReadError, match="sparse"):
        TarReader(io.BytesIO(buf.getvalue())).next()
