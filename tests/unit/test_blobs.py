import threading
import time

import pytest

from socker_lib.blobs import BlobCache, LiveBlob, StreamRestart
from socker_lib.errors import DigestMismatchError


def writer(live, path, chunks, delay=0.01, final=None):
    live.start(path)
    for c in chunks:
        with open(path, "ab") as f:
            f.write(c)
        live.progress(len(c))
        time.sleep(delay)
    if final is not None:
        path.rename(final)
        live.finish(final)


def read_all(r):
    out = b""
    while chunk := r.read(7):
        out += chunk
    return out


def test_follower_reads_a_growing_file_to_the_end(tmp_path):
    live = LiveBlob()
    chunks = [bytes([i]) * 1000 for i in range(20)]
    t = threading.Thread(target=writer, args=(live, tmp_path / "p", chunks, 0.005, tmp_path / "final"))
    r = live.reader()
    t.start()
    data = read_all(r)
    t.join()
    assert data == b"".join(chunks)


def test_follower_raises_the_download_error(tmp_path):
    live = LiveBlob()

    def fail():
        writer(live, tmp_path / "p", [b"abc"])
        live.fail(DigestMismatchError("bad blob"))

    t = threading.Thread(target=fail)
    t.start()
    with pytest.raises(DigestMismatchError):
        read_all(live.reader())
    t.join()


def test_follower_notices_a_restart(tmp_path):
    live = LiveBlob()
    live.start(tmp_path / "p")
    (tmp_path / "p").write_bytes(b"x" * 10)
    live.progress(10)
    r = live.reader()
    assert r.read(5) == b"xxxxx"
    live.progress(-1)
    with pytest.raises(StreamRestart):
        read_all(r)


def test_cached_blob_follower_reads_final(tmp_path):
    live = LiveBlob()
    final = tmp_path / "f"
    final.write_bytes(b"cached")
    live.finish(final)
    assert read_all(live.reader()) == b"cached"


def test_ensure_downloads_once(tmp_path):
    cache = BlobCache(tmp_path)
    digest = "sha256:" + "a" * 64
    calls = []

    def download(partial):
        calls.append(partial)
        partial.write_bytes(b"data")

    p1 = cache.ensure(digest, 4, download)
    p2 = cache.ensure(digest, 4, download)
    assert p1 == p2 and p1.read_bytes() == b"data" and len(calls) == 1
