"""The content-addressed blob cache under ``$SOCKER_HOME/blobs``.

A blob is downloaded into ``partial/<hex>`` (kept across interruptions so the next pull
resumes it), verified, and renamed to ``sha256/<hex>``. A per-blob lock lets two pulls
share one download. Pulling the same image again downloads nothing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import UnsupportedError


class BlobCache:
    def __init__(self, home: Path):
        self.root = Path(home) / "blobs"
        self.done = self.root / "sha256"
        self.partial_dir = self.root / "partial"

    def path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
            raise UnsupportedError(f"unsupported or malformed digest {digest!r}")
        return self.done / hexpart

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def ensure(self, digest: str, size: int | None, download: Callable[[Path], None]) -> Path:
        """Return the cached blob, calling ``download(partial_path)`` if it is missing.

        ``download`` must leave a complete, verified file at ``partial_path`` or raise.
        """
        final = self.path(digest)
        if self.has(digest, size):
            return final
        self.done.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        hexpart = final.name
        with open(self.partial_dir / f"{hexpart}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.has(digest, size):  # another pull finished it while we waited
                return final
            partial = self.partial_dir / hexpart
            download(partial)
            os.replace(partial, final)
        return final


class StreamRestart(Exception):
    """The download under a follower started over; the follower's bytes are void."""


class LiveBlob:
    """A blob that may still be downloading. ``reader()`` follows the partial file as it grows,
    so a layer can be unpacked while it arrives; it reaches EOF only once the download has been
    verified and renamed into the cache. A download error is raised in the reader too."""

    def __init__(self):
        self._cond = threading.Condition()
        self.partial: Path | None = None
        self.written = 0
        self.final: Path | None = None
        self.error: BaseException | None = None
        self.restarted = False

    # -- the downloading side ---------------------------------------------------------------
    def start(self, partial: Path) -> None:
        with self._cond:
            self.partial = partial
            self._cond.notify_all()

    def progress(self, n: int) -> None:
        with self._cond:
            if n < 0:
                self.restarted = True
            else:
                self.written += n
            self._cond.notify_all()

    def finish(self, path: Path) -> None:
        with self._cond:
            self.final = path
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self.error = error
            self._cond.notify_all()

    # -- the reading side -------------------------------------------------------------------
    def reader(self) -> _Follower:
        return _Follower(self)


class _Follower:
    def __init__(self, live: LiveBlob):
        self._live = live
        self._fd: int | None = None
        self._pos = 0

    def _open(self) -> bool:
        live = self._live
        for path in (live.partial, live.final):
            if path is None:
                continue
            try:
                self._fd = os.open(path, os.O_RDONLY)
                return True
            except FileNotFoundError:
                continue
        return False

    def read(self, n: int = -1) -> bytes:
        n = n if n and n > 0 else 1 << 20
        live = self._live
        while True:
            if self._fd is None and not self._open():
                with live._cond:
                    self._check()
                    if live.final is None and (live.partial is None or live.written == 0):
                        live._cond.wait(0.5)
                    continue
            data = os.read(self._fd, n)
            if data:
                self._pos += len(data)
                return data
            with live._cond:
                self._check()
                if live.final is not None:
                    if self._pos >= os.fstat(self._fd).st_size:
                        return b""
                    continue
                # at the end of what is written so far: wait for the writer's next progress
                live._cond.wait(0.05)

    def _check(self) -> None:
        live = self._live
        if live.error is not None:
            raise live.error
        if live.restarted:
            raise StreamRestart()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
