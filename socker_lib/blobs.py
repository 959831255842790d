"""The content-addressed blob cache under ``$SOCKER_HOME/blobs``.

A blob is downloaded into ``partial/<hex>`` (kept across interruptions so the next pull
resumes it), verified, and renamed to ``sha256/<hex>``. A per-blob lock lets two pulls
share one download. Pulling the same image again downloads nothing.
"""

from __future__ import annotations

import fcntl
import os
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
