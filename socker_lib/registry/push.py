"""The push side of the distribution protocol, one function per step (as crane does):
``blob_exists`` (HEAD), ``start_upload`` (POST, with a cross-repository mount),
``upload_monolithic`` (PUT), ``upload_chunked`` (PATCH…, resumable), ``commit_upload``
(PUT ?digest=) and ``put_manifest``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests

from ..errors import RegistryError
from ..reference import Reference
from .transport import NET_ERRORS, Transport

MONOLITHIC_MAX = 32 << 20
CHUNK = 64 << 20


def push_scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull,push"


def check_access(t: Transport, ref: Reference) -> None:
    """Authenticate for ``pull,push`` up front, so bad credentials fail before any work."""
    t.request("GET", "/v2/", scope=push_scope(ref), what=f"logging in to push {ref.repository}")


def blob_exists(t: Transport, ref: Reference, digest: str) -> bool:
    resp = t.request(
        "HEAD",
        f"/v2/{ref.repository}/blobs/{digest}",
        scope=push_scope(ref),
        ok=(200, 404),
        what=f"checking blob {digest[:19]}",
    )
    return resp.status_code == 200


def start_upload(
    t: Transport, ref: Reference, digest: str | None = None, mount_from: str | None = None
) -> tuple[bool, str]:
    """POST an upload; with ``mount_from`` try a cross-repository mount first.

    Returns ``(mounted, location)``: a 201 means the blob is already there.
    """
    path = f"/v2/{ref.repository}/blobs/uploads/"
    scope = push_scope(ref)
    if mount_from and digest:
        path += "?" + urlencode({"mount": digest, "from": mount_from})
        scope = f"{scope} repository:{mount_from}:pull"
    resp = t.request(
        "POST",
        path,
        scope=scope,
        ok=(201, 202),
        what="starting an upload",
        headers={"Content-Length": "0"},
        data=b"",
    )
    location = _location(t, resp, path)
    return resp.status_code == 201, location


def _location(t: Transport, resp: requests.Response, request_path: str) -> str:
    loc = resp.headers.get("Location")
    if not loc:
        if resp.status_code == 201:
            return ""
        raise RegistryError(f"{t.registry} started an upload without a Location header")
    return urljoin(t.url(request_path), loc)  # Location may be relative


def with_digest(location: str, digest: str) -> str:
    """Add ``digest=`` to an upload URL, keeping its query state (``_state=…``)."""
    parts = urlsplit(location)
    query = parts.query + ("&" if parts.query else "") + urlencode({"digest": digest})
    return urlunsplit(parts._replace(query=query))


def upload_monolithic(
    t: Transport,
    ref: Reference,
    location: str,
    path: Path,
    digest: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    size = path.stat().st_size

    def body():
        if progress:
            progress(-1)
        return _FileBody(path, 0, size, progress)

    try:
        t.request(
            "PUT",
            with_digest(location, digest),
            scope=push_scope(ref),
            data=body,
            ok=(201, 204),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            what=f"uploading blob {digest[:19]}",
            timeout=300,
        )
    except (RegistryError, *NET_ERRORS):
        # the answer may be what got lost: the blob can be there already
        if not blob_exists(t, ref, digest):
            raise


def upload_chunked(
    t: Transport,
    ref: Reference,
    location: str,
    path: Path,
    digest: str,
    progress: Callable[[int], None] | None = None,
    chunk: int | None = None,
    offset: int = 0,
) -> None:
    """PATCH the blob in chunks; after a dropped connection ask the registry how much it has
    (GET on the upload URL → ``Range: 0-N``) and go on from there."""
    size = path.stat().st_size
    chunk = chunk or CHUNK
    failures = 0
    while offset < size:
        end = min(offset + chunk, size)
        try:
            resp = t.request(
                "PATCH",
                location,
                scope=push_scope(ref),
                ok=(202,),
                retry=False,
                data=_FileBody(path, offset, end, progress),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end - 1}",
                    "Content-Length": str(end - offset),
                },
                what=f"uploading blob {digest[:19]}",
                timeout=300,
            )
        except (RegistryError, *NET_ERRORS) as e:
            if isinstance(e, RegistryError) and e.status and e.status < 500 and e.status != 429:
                raise
            failures += 1
            time.sleep(min(0.25 * 2**failures, 5))
            if failures > t.retries:
                raise
            location, offset = _recover(t, ref, location)
            if progress:
                progress(-1)
                progress(offset)
            continue
        location = _location(t, resp, location) or location
        offset = _range_end(resp, end)
    commit_upload(t, ref, location, digest)


def _recover(t: Transport, ref: Reference, location: str) -> tuple[str, int]:
    """After a failed chunk: resume where the registry stands, or start the blob over if the
    session is gone (distribution cancels an upload whose state token no longer matches)."""
    try:
        return upload_status(t, ref, location)
    except RegistryError as e:
        if e.status not in (400, 404, 416):
            raise
    _, location = start_upload(t, ref)
    return location, 0


def upload_streaming(
    t: Transport,
    ref: Reference,
    path: Path,
    reader,
    digest_when_done: Callable[[], str],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Upload a blob while it is still being written: one streamed ``PATCH`` fed by ``reader``
    (which blocks until more bytes exist and ends when the writer is done), then the ``PUT``
    with the digest. If the stream breaks, finish from the complete file with ``upload_chunked``."""
    _, location = start_upload(t, ref)

    def body():
        while chunk := reader.read(1 << 20):
            if progress:
                progress(len(chunk))
            yield chunk

    try:
        resp = t.request(
            "PATCH",
            location,
            scope=push_scope(ref),
            ok=(202,),
            retry=False,
            data=body(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=300,
            what="streaming a blob",
        )
        location = _location(t, resp, location) or location
    except (RegistryError, *NET_ERRORS) as e:
        if isinstance(e, RegistryError) and e.status and e.status < 500 and e.status not in (404, 416, 429):
            raise
        digest = digest_when_done()  # the writer must have finished (or raised) before we go on
        location, offset = _recover(t, ref, location)
        if progress:
            progress(-1)
            progress(offset)
        upload_chunked(t, ref, location, path, digest, progress, offset=offset)
        return
    commit_upload(t, ref, location, digest_when_done())


def upload_status(t: Transport, ref: Reference, location: str) -> tuple[str, int]:
    """Where an interrupted upload stands: (newest location, bytes received)."""
    resp = t.request("GET", location, scope=push_scope(ref), ok=(204,), what="asking for upload status")
    return _location(t, resp, location) or location, _range_end(resp, 0)


def _range_end(resp: requests.Response, default: int) -> int:
    rng = resp.headers.get("Range")
    if not rng:
        return default
    try:
        return int(rng.split("-")[-1]) + 1
    except ValueError:
        return default


def commit_upload(t: Transport, ref: Reference, location: str, digest: str) -> None:
    t.request(
        "PUT",
        with_digest(location, digest),
        scope=push_scope(ref),
        ok=(201, 204),
        data=b"",
        headers={"Content-Length": "0"},
        what=f"committing blob {digest[:19]}",
    )


def put_manifest(t: Transport, ref: Reference, tag: str, data: bytes, media_type: str) -> str:
    resp = t.request(
        "PUT",
        f"/v2/{ref.repository}/manifests/{tag}",
        scope=push_scope(ref),
        ok=(201,),
        data=data,
        headers={"Content-Type": media_type},
        what=f"pushing manifest {tag}",
    )
    return resp.headers.get("Docker-Content-Digest", "")


class _FileBody:
    """A file range as a request body that reports progress (requests streams it)."""

    def __init__(self, path: Path, start: int, end: int, progress):
        self._f = open(path, "rb")  # noqa: SIM115 - closed when fully read
        self._f.seek(start)
        self._left = end - start
        self._progress = progress
        self.len = self._left

    def __len__(self) -> int:
        return self.len

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            self._f.close()
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left, 1 << 20)
        data = self._f.read(n)
        self._left -= len(data)
        if self._progress and data:
            self._progress(len(data))
        return data

    def __del__(self):
        try:
            self._f.close()
        except Exception:
            pass


def upload_blob(
    t: Transport,
    ref: Reference,
    path: Path,
    digest: str,
    *,
    mount_from: list[str] = (),
    progress: Callable[[int], None] | None = None,
) -> str:
    """Make sure the registry has the blob: ``"exists"``, ``"mounted"`` or ``"uploaded"``."""
    if blob_exists(t, ref, digest):
        return "exists"
    location = None
    for source in mount_from:
        if source == ref.repository:
            continue
        mounted, location = start_upload(t, ref, digest, source)
        if mounted:
            return "mounted"
        break  # a 202 is a normal upload session: use it
    if location is None:
        _, location = start_upload(t, ref)
    if os.path.getsize(path) <= MONOLITHIC_MAX:
        upload_monolithic(t, ref, location, path, digest, progress)
    else:
        upload_chunked(t, ref, location, path, digest, progress)
    return "uploaded"
