"""Opening layer blobs as uncompressed tar streams (gzip, zstd or none), decompressed and
hashed in a background thread so the ``diff_id`` can be checked at the end."""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Iterator

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


def _gzip_chunks(f) -> Iterator[bytes]:
    from isal import isal_zlib

    d = isal_zlib.decompressobj(wbits=31)
    while True:
        block = f.read(READ_SIZE)
        if not block:
            break
        while block:
            out = d.decompress(block)
            if out:
                yield out
            if not d.eof:
                break
            # a gzip stream may hold several members; zero padding after the last is tolerated
            block = d.unused_data
            if not block or not block.startswith(GZIP_MAGIC):
                if block.strip(b"\0"):
                    raise UnsupportedError("garbage after the end of a gzip layer")
                return _drain_rest(f)
            d = isal_zlib.decompressobj(wbits=31)
    if not d.eof:
        raise UnsupportedError("gzip layer is truncated", "the blob is incomplete; pull again")


def _drain_rest(f) -> None:
    while chunk := f.read(READ_SIZE):
        if chunk.strip(b"\0"):
            raise UnsupportedError("garbage after the end of a gzip layer")


def _zstd_chunks(f) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=READ_SIZE, read_across_frames=True)
    while chunk := reader.read(READ_SIZE * 4):
        yield chunk


def _plain_chunks(f) -> Iterator[bytes]:
    while chunk := f.read(READ_SIZE * 4):
        yield chunk


_CHUNKERS = {"gzip": _gzip_chunks, "zstd": _zstd_chunks, "none": _plain_chunks}


def _is_codec_error(e: BaseException) -> bool:
    module = type(e).__module__ or ""
    return isinstance(e, (EOFError, ValueError)) or module.startswith(("isal", "zstandard", "zlib"))


class PipelinedReader(io.RawIOBase):
    """Decompresses and hashes a layer in a background thread; the reader sees plain tar bytes.

    zlib/zstd and sha256 release the GIL, so on a multi-core machine the tar parsing and
    file writing in the main thread overlap with decompression and the ``diff_id`` hash.
    ``digest`` is valid once the stream has been read to its end.
    """

    def __init__(self, source, compression: str, on_read=None):
        self._q: queue.Queue = queue.Queue(maxsize=8)
        self._hash = hashlib.sha256()
        self._buf = memoryview(b"")
        self._done = False
        self._stop = threading.Event()
        self._on_read = on_read
        self.size = 0
        self._thread = threading.Thread(target=self._produce, args=(source, compression), daemon=True)
        self._thread.start()

    def _produce(self, source, compression: str) -> None:
        try:
            with source if hasattr(source, "read") else open(source, "rb") as f:
                for chunk in _CHUNKERS[compression](f):
                    self._hash.update(chunk)
                    while not self._stop.is_set():
                        try:
                            self._q.put(chunk, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
            self._q.put(None)
        except BaseException as e:  # handed to the reading thread
            self._q.put(e)

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        if self._done:
            return False
        item = self._q.get()
        if item is None:
            self._done = True
            return False
        if isinstance(item, BaseException):
            self._done = True
            if _is_codec_error(item):
                raise UnsupportedError(
                    f"cannot decompress layer: {item}", "the blob may be corrupt; pull again"
                ) from item
            raise item
        self._buf = memoryview(item)
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            if not self._next():
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.size += n
        if self._on_read:
            self._on_read(n)
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        while not self._buf:
            if not self._next():
                return b""
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        self.size += len(out)
        if self._on_read:
            self._on_read(len(out))
        return out

    def drain(self) -> None:
        self._buf = memoryview(b"")
        while self._next():
            self.size += len(self._buf)
            self._buf = memoryview(b"")

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        self._stop.set()
        super().close()


class _Prefixed:
    """A reader that returns ``head`` first, then the rest of ``f``."""

    def __init__(self, head: bytes, f):
        self._head, self._f = head, f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(out) :]
            return out
        return self._f.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close = getattr(self._f, "close", None)
        if close:
            close()
        return False


def _sniff_stream(f) -> tuple[str, _Prefixed]:
    head = b""
    while len(head) < 4:
        more = f.read(4 - len(head))
        if not more:
            break
        head += more
    kind = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head == ZSTD_MAGIC else "none"
    return kind, _Prefixed(head, f)


def open_layer(source, declared: str, on_read=None, name: str = "") -> PipelinedReader:
    """Open a layer blob (a path, or a file object that may still be growing) as a pipelined,
    hashing tar stream; the magic bytes must agree with the ``declared`` compression."""
    if hasattr(source, "read"):
        actual, source = _sniff_stream(source)
    else:
        actual = sniff(source)
        name = name or getattr(source, "name", str(source))
    if declared != actual:
        if hasattr(source, "__exit__"):
            source.__exit__(None, None, None)
        raise UnsupportedError(
            f"layer {name} is declared {declared} but its content is {actual}",
            "the image's manifest lies about its layer media type; rebuild or re-push the image",
        )
    return PipelinedReader(source, actual, on_read)
