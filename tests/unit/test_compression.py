import gzip
import hashlib
import os

import pytest
import zstandard

from socker_lib.compression import open_layer
from socker_lib.errors import UnsupportedError

DATA = os.urandom(300_000) + b"\0" * 3_000_000 + os.urandom(100_000)


def read_all(path, declared):
    r = open_layer(path, declared)
    out = bytearray()
    while chunk := r.read(70_000):
        out += chunk
    return bytes(out), r.digest


@pytest.mark.parametrize("kind", ["gzip", "gzip-multi", "zstd", "zstd-multi", "none"])
def test_round_trip_and_diff_id(tmp_path, kind):
    p = tmp_path / "blob"
    if kind == "gzip":
        p.write_bytes(gzip.compress(DATA, mtime=0))
    elif kind == "gzip-multi":
        p.write_bytes(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]) + b"\0" * 512)
    elif kind == "zstd":
        p.write_bytes(zstandard.ZstdCompressor().compress(DATA))
    elif kind == "zstd-multi":
        c = zstandard.ZstdCompressor()
        p.write_bytes(c.compress(DATA[:5000]) + c.compress(DATA[5000:]))
    else:
        p.write_bytes(DATA)
    declared = kind.split("-")[0]
    data, digest = read_all(p, declared)
    assert data == DATA
    assert digest == "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_truncated_gzip_is_an_error(tmp_path):
    p = tmp_path / "blob"
    p.write_bytes(gzip.compress(DATA)[:-5000])
    with pytest.raises(UnsupportedError, match="truncated"):
        read_all(p, "gzip")


def test_media_type_must_match_magic(tmp_path):
    p = tmp_path / "blob"
    p.write_bytes(gzip.compress(b"x"))
    with pytest.raises(UnsupportedError, match="declared zstd"):
        open_layer(p, "zstd")
    with pytest.raises(UnsupportedError, match="declared none"):
        open_layer(p, "none")
