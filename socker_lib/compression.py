"""Opening layer blobs as uncompressed tar streams (gzip, zstd or none), with the
uncompressed bytes hashed on the way so the ``diff_id`` can be checked."""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from .errors import UnsupportedError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 1 << 20


def sniff(path) -> str:
    """Compression by magic bytes: ``gzip``, ``zstd`` or ``none``."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head == ZSTD_MAGIC:
        return "zstd"
    return "none"


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes everything read through it."""

    def __init__(self, raw: BinaryIO, on_read=None):
        self._raw = raw
        self._on_read = on_read
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        self.size += n
        if self._on_read:
            self._on_read(n)
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n) if n is not None and n >= 0 else self._raw.read()
        self.hash.update(data)
        self.size += len(data)
        if self._on_read:
            self._on_read(len(data))
        return data

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_uncompressed(path, declared: str) -> BinaryIO:
    """Open a layer blob for reading its tar. ``declared`` is the media type's compression;
    the magic bytes must agree (an uncompressed layer may not start with a gzip magic)."""
    actual = sniff(path)
    if declared != actual and not (declared == "none" and actual == "none"):
        raise UnsupportedError(
            f"layer {path.name} is declared {declared} but its content is {actual}",
            "the image's manifest lies about its layer media type; rebuild or re-push the image",
        )
    if actual == "gzip":
        from isal import igzip_threaded

        # decompression runs in its own thread, overlapping with tar parsing and file writes
        return igzip_threaded.open(path, "rb", threads=1, block_size=READ_SIZE)
    if actual == "zstd":
        import zstandard

        raw = open(path, "rb")
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=READ_SIZE, read_across_frames=True,
                                                          closefd=True)
    return open(path, "rb", buffering=READ_SIZE)
