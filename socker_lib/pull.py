"""``pull``: reference → registry → blob cache → layers → a flat image in the store.

Layers download in parallel into the blob cache while earlier ones are already being
applied, in order, to a staging directory; the finished image is swapped in at the end.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import reference as reference_mod
from .blobs import BlobCache, LiveBlob, StreamRestart
from .compression import open_layer
from .errors import DigestMismatchError, SockerError
from .progress import Reporter, human
from .registry import mediatypes as mt
from .registry.pull import ResolvedImage, download_blob, resolve
from .registry.transport import Transport
from .settings import Settings, host_platform
from .store import META_VERSION, Store, changed_paths, read_snapshot, write_json, write_snapshot


@dataclass
class PullResult:
    reference: str
    path: Path
    digest: str
    platform: str
    up_to_date: bool = False
    downloaded: int = 0
    skipped: list[str] = field(default_factory=list)


def pull(
    ref_text: str,
    settings: Settings | None = None,
    *,
    platform: str | None = None,
    reporter: Reporter | None = None,
    force: bool = False,
) -> PullResult:
    """Pull an image into ``$SOCKER_HOME/images/…`` and return where it landed."""
    settings = settings or Settings.load()
    reporter = reporter or Reporter()
    ref = reference_mod.parse(ref_text)
    want = platform or settings.platform or host_platform()
    store = Store(settings.home)
    store.cleanup_stale()
    transport = Transport(ref.registry, ref.api_host, settings)
    image = resolve(transport, ref, want)
    with store.lock(ref, on_wait=lambda: reporter.info(f"waiting for another operation on {ref} ...")):
        if not force and _up_to_date(store, ref, image):
            return PullResult(str(ref), store.image_dir(ref), image.manifest_digest, image.platform, True)
        try:
            return _pull_locked(store, transport, ref, image, settings, reporter)
        except (OSError, SockerError) as e:
            full = _disk_full(e)
            if full is not None:
                raise SockerError(
                    f"disk full while pulling {ref} ({full.filename or settings.home})",
                    "free some space (socker keeps blobs in $SOCKER_HOME/blobs) and pull again",
                ) from e
            raise


def _disk_full(e: BaseException | None) -> OSError | None:
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__
    return None


def _up_to_date(store: Store, ref, image: ResolvedImage) -> bool:
    try:
        meta = store.read_meta(ref)
    except SockerError:
        return False
    if meta.get("digest") != image.manifest_digest or not store.exists(ref):
        return False
    snap = store.meta_dir(ref) / "tree.json.gz"
    if not snap.exists():
        return False
    added, removed, modified = changed_paths(store.image_dir(ref), read_snapshot(snap))
    return not (added or removed or modified)


def _pull_locked(
    store: Store, transport: Transport, ref, image: ResolvedImage, settings: Settings, reporter: Reporter
) -> PullResult:
    cache = BlobCache(settings.home)
    layers = image.layers
    missing = sum(int(d.get("size") or 0) for d in layers if not cache.has(d["digest"], d.get("size")))
    reporter.info(
        f"pulling {ref} ({image.platform}, {image.manifest_digest[:19]}, "
        f"{len(layers)} layers, {human(missing)} to download)"
    )
    downloaded = [0]
    cancelled = threading.Event()

    def fetch(desc: dict, live: LiveBlob) -> Path:
        try:
            if cache.has(desc["digest"], desc.get("size")):
                path = cache.path(desc["digest"])
                live.finish(path)
                return path
            bar = reporter.bar(f"layer {desc['digest'][7:19]}", desc.get("size"))

            def progress(n: int) -> None:
                if cancelled.is_set():  # the pull failed or was interrupted: stop downloading now
                    raise _Cancelled()
                bar.advance(n)
                live.progress(n)

            def download(partial: Path) -> None:
                live.start(partial)
                download_blob(transport, ref, desc, partial, progress)

            path = cache.ensure(desc["digest"], desc.get("size"), download)
            downloaded[0] += int(desc.get("size") or 0)
            bar.finish("downloaded")
            live.finish(path)
            return path
        except BaseException as e:
            live.fail(e)
            raise

    with ThreadPoolExecutor(settings.max_concurrent_downloads) as pool:
        lives = [LiveBlob() for _ in layers]
        futures: list[Future] = [pool.submit(fetch, d, live) for d, live in zip(layers, lives, strict=True)]
        try:
            try:
                skipped, path = _unpack_and_commit(store, ref, image, lives, futures, reporter, follow=True)
            except StreamRestart:
                # a download started over under us: unpack again once everything is cached
                for f in futures:
                    f.result()
                skipped, path = _unpack_and_commit(store, ref, image, lives, futures, reporter, follow=False)
        except BaseException:
            cancelled.set()
            for f in futures:
                f.cancel()
            for live in lives:
                live.fail(KeyboardInterrupt())  # wake any follower still waiting
            raise
    return PullResult(str(ref), path, image.manifest_digest, image.platform, False, downloaded[0], skipped)


class _Cancelled(Exception):
    """Raised inside a download thread once the pull has been given up."""


def _unpack_and_commit(
    store: Store,
    ref,
    image: ResolvedImage,
    lives: list[LiveBlob],
    futures: list[Future],
    reporter: Reporter,
    follow: bool,
) -> tuple[list[str], Path]:
    """Apply every layer in order to a staging rootfs (following downloads still under way
    when ``follow``), verify blobs and diff_ids, and swap the result into the store."""
    from .layers import ApplyOptions, RootfsWriter

    diff_ids = image.config["rootfs"]["diff_ids"]
    n = len(image.layers)
    with store.staging("pull-") as staged:
        writer = RootfsWriter(staged.rootfs, ApplyOptions())
        skipped: list[str] = []
        for i, (desc, live, fut) in enumerate(zip(image.layers, lives, futures, strict=True)):
            source = live.reader() if follow else fut.result()
            skipped += _apply_one(writer, source, desc, diff_ids[i], i, n, reporter)
            fut.result()  # the blob itself verified (digest and size) before we go on
        writer.finish()
        _write_meta(staged.meta, ref, image, skipped)
        write_snapshot(staged.rootfs, staged.meta / "tree.json.gz")
        return skipped, store.commit(ref, staged)


def _apply_one(writer, source, desc: dict, diff_id: str, i: int, n: int, reporter: Reporter) -> list[str]:
    compression = mt.LAYER_COMPRESSION[desc["mediaType"]]
    bar = reporter.bar(f"extract {i + 1}/{n}", None)
    reader = open_layer(source, compression, bar.advance, name=desc["digest"])
    try:
        report = writer.apply(reader)
        reader.drain()
    finally:
        reader.close()
    if reader.digest != diff_id:
        raise DigestMismatchError(
            f"layer {desc['digest']} does not match its diff_id: uncompressed it is {reader.digest}, "
            f"the image config says {diff_id}",
            "the image is corrupt in the registry; rebuild or re-push it",
        )
    bar.finish(f"{report.entries} entries")
    return list(report.skipped)


def _write_meta(meta_dir: Path, ref, image: ResolvedImage, skipped: list[str]) -> None:
    (meta_dir / "manifest.json").write_bytes(image.manifest_bytes)
    (meta_dir / "config.json").write_bytes(image.config_bytes)
    write_json(
        meta_dir / "image.json",
        {
            "schemaVersion": META_VERSION,
            "reference": str(ref),
            "registry": ref.registry,
            "repository": ref.repository,
            "tag": ref.tag,
            "digest": image.manifest_digest,
            "indexDigest": image.index_digest,
            "mediaType": image.media_type,
            "platform": image.platform,
            "pulledAt": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "layers": [
                {
                    "digest": d["digest"],
                    "size": d.get("size"),
                    "mediaType": d.get("mediaType"),
                    "diffID": diff,
                }
                for d, diff in zip(image.layers, image.config["rootfs"]["diff_ids"], strict=True)
            ],
            "rootless": os.geteuid() != 0,
            "notApplied": skipped[:1000],
        },
    )
