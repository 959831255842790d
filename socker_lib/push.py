"""``push``: a flat image directory → one deterministic layer → config → manifest → registry.

An unchanged directory is not packed twice: the tree's fingerprint and the layer it gave are
kept in the image's metadata, and the layer blob in the blob cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from . import reference as reference_mod
from .blobs import BlobCache, LiveBlob
from .errors import DigestMismatchError, ImageNotFoundError, ReferenceError_, UnsupportedError
from .imageconfig import canonical, digest_of, flattened_config, manifest
from .progress import Reporter, human
from .registry.push import check_access, put_manifest, upload_blob, upload_streaming
from .registry.transport import Transport
from .settings import Settings
from .store import Store, snapshot, write_json

FORMATS = ("docker", "oci")
COMPRESSIONS = ("gzip", "zstd", "none")


@dataclass
class PushResult:
    reference: str
    digest: str
    layer_digest: str
    layer_size: int
    diff_id: str
    uploaded: str  # "uploaded", "mounted" or "exists" for the layer
    packed: bool


def push(
    ref_text: str,
    settings: Settings | None = None,
    *,
    source: str | None = None,
    fmt: str = "docker",
    compression: str = "gzip",
    reporter: Reporter | None = None,
) -> PushResult:
    """Push ``images/<source or ref>`` to ``ref`` as a single-layer image."""
    settings = settings or Settings.load()
    reporter = reporter or Reporter()
    dst = reference_mod.parse(ref_text)
    src = reference_mod.parse(source) if source else dst
    _check_options(dst, fmt, compression)
    store = Store(settings.home)
    if not store.exists(src):
        raise ImageNotFoundError(
            f"no local image {src} (looked in {store.image_dir(src)})",
            f"pull it, or create one with: socker new {src}",
        )
    with store.lock(src, on_wait=lambda: reporter.info(f"waiting for another operation on {src} ...")):
        meta = _read_meta(store, src)
        base_config = _read_json(store.meta_dir(src) / "config.json")
        cache = BlobCache(settings.home)
        t = Transport(dst.registry, dst.api_host, settings)
        snap = snapshot(store.image_dir(src))
        fp = _fingerprint(snap, compression)
        check_access(t, dst)  # wrong credentials fail here, before any packing or upload
        last = _packed_before(store, meta, fp)
        if last:
            layer, packed = last, False
            reporter.info(f"pushing {dst} (1 layer, {human(layer['size'])}, unchanged since last packed)")
            bar = reporter.bar(f"layer {layer['digest'][7:19]}", layer["size"])
            how = upload_blob(
                t,
                dst,
                cache.path(layer["digest"]),
                layer["digest"],
                mount_from=_known_sources(store, dst, layer["digest"]),
                progress=bar.advance,
            )
            bar.finish(how)
        else:
            reporter.info(f"packing and pushing {dst}")
            _prefetch(store.image_dir(src), snap)
            layer, how, packed = _pack_and_upload(store, src, t, dst, compression, reporter), "uploaded", True
            layer.update(fingerprint=fp, created=_created(snap))
        meta["lastPacked"] = layer
        note = f"flattened by socker from {meta['digest']}" if meta.get("digest") else "created by socker"
        config_bytes = canonical(flattened_config(base_config, layer["diffID"], layer["created"], note))
        manifest_bytes, media = manifest(config_bytes, layer["digest"], layer["size"], compression, fmt)
        upload_blob(t, dst, _cache_bytes(cache, config_bytes), digest_of(config_bytes))
        digest = digest_of(manifest_bytes)
        answered = put_manifest(t, dst, dst.tag, manifest_bytes, media)
        if answered and answered.startswith("sha256:") and answered != digest:
            raise DigestMismatchError(f"{dst.registry} stored the manifest as {answered}, expected {digest}")
        _record_push(store, src, meta, dst, digest)
    return PushResult(str(dst), digest, layer["digest"], layer["size"], layer["diffID"], how, packed)


def _check_options(dst, fmt: str, compression: str) -> None:
    if dst.digest:
        raise ReferenceError_(f"cannot push to a digest reference {dst}", "push to a tag: name:tag")
    if fmt not in FORMATS:
        raise UnsupportedError(f"unknown manifest format {fmt!r}", "use --format docker or --format oci")
    if compression not in COMPRESSIONS:
        raise UnsupportedError(f"unknown compression {compression!r}", "use gzip, zstd or none")
    if fmt == "docker" and compression == "zstd":
        raise UnsupportedError("Docker schema2 manifests cannot carry zstd layers", "add --format oci")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def _read_meta(store: Store, ref) -> dict:
    return _read_json(store.meta_dir(ref) / "image.json") or {}


def _fingerprint(snap: dict, compression: str) -> str:
    sde = os.environ.get("SOURCE_DATE_EPOCH", "")
    data = json.dumps(snap, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return "sha256:" + hashlib.sha256(data + f"|{compression}|{sde}".encode()).hexdigest()


def _created(snap: dict) -> int:
    """The image's creation time: its newest file (clamped to SOURCE_DATE_EPOCH), so that an
    unchanged tree gives an unchanged config."""
    newest = max((v[4] for v in snap.values()), default=0) // 1_000_000_000
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    return min(newest, int(sde)) if sde and sde.isdigit() else newest


def _prefetch(root: Path, snap: dict) -> None:
    """Ask the kernel to start reading the tree's files in the order the packer will want
    them, so that packing a tree that is not in the page cache does not wait on each file."""

    def run() -> None:
        for rel in sorted(p for p, v in snap.items() if stat.S_ISREG(v[0]) and v[3] > 0):
            try:
                fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    threading.Thread(target=run, name="prefetch", daemon=True).start()


def _packed_before(store: Store, meta: dict, fp: str) -> dict | None:
    """A layer already packed from an identical tree (this image's, or a tagged copy's)."""
    cache = BlobCache(store.home)

    def usable(layer: dict | None) -> bool:
        return (
            bool(layer)
            and layer.get("fingerprint") == fp
            and cache.has(layer.get("digest", ""), layer.get("size"))
        )

    if usable(meta.get("lastPacked")):
        return meta["lastPacked"]
    if store.meta_root.is_dir():
        for path in store.meta_root.rglob("image.json"):
            layer = (_read_json(path) or {}).get("lastPacked")
            if usable(layer):
                return layer
    return None


def _pack_and_upload(store: Store, ref, t: Transport, dst, compression: str, reporter: Reporter) -> dict:
    """Pack the tree into a layer and upload it at the same time (the upload follows the blob
    as it grows); the finished blob goes into the blob cache."""
    from .pack import pack_layer

    rootfs = store.image_dir(ref)
    cache = BlobCache(store.home)
    with store.staging("pack-") as staged:
        blob = staged.dir / "layer"
        live = LiveBlob()
        live.start(blob)
        result: dict = {}
        bar = reporter.bar(f"pack+upload {ref}", None)

        def pack() -> None:
            try:
                result["packed"] = pack_layer(
                    rootfs, blob, compression=compression, progress=lambda n: live.progress(n)
                )
                live.finish(blob)
            except BaseException as e:
                live.fail(e)
                result["error"] = e

        worker = threading.Thread(target=pack, name="pack", daemon=True)
        worker.start()

        def digest_when_done() -> str:
            worker.join()
            if "error" in result:
                raise result["error"]
            return result["packed"].digest

        try:
            upload_streaming(t, dst, blob, live.reader(), digest_when_done, progress=bar.advance)
        finally:
            worker.join()
        if "error" in result:
            raise result["error"]
        packed = result["packed"]
        bar.finish(f"{packed.entries} entries, {human(packed.size)}")
        final = cache.path(packed.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(blob, final)
    return {
        "digest": packed.digest,
        "size": packed.size,
        "diffID": packed.diff_id,
        "compression": compression,
    }


def _cache_bytes(cache: BlobCache, data: bytes) -> Path:
    path = cache.path(digest_of(data))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _known_sources(store: Store, dst, digest: str) -> list[str]:
    """Repositories of the same registry known to hold ``digest`` (for a cross-repo mount)."""
    found = []
    if not store.meta_root.is_dir():
        return found
    for path in store.meta_root.rglob("image.json"):
        meta = _read_json(path) or {}
        for pushed in meta.get("pushedTo") or []:
            if pushed.get("registry") == dst.registry and pushed.get("layer") == digest:
                found.append(pushed["repository"])
        if meta.get("registry") == dst.registry and any(
            x.get("digest") == digest for x in meta.get("layers") or []
        ):
            found.append(meta["repository"])
    return [r for r in dict.fromkeys(found) if r != dst.repository]


def _record_push(store: Store, src, meta: dict, dst, digest: str) -> None:
    meta_dir = store.meta_dir(src)
    meta_dir.mkdir(parents=True, exist_ok=True)
    pushed = [p for p in meta.get("pushedTo") or [] if p.get("reference") != str(dst)]
    layer = meta.get("lastPacked", {}).get("digest")
    pushed.append(
        {
            "reference": str(dst),
            "registry": dst.registry,
            "repository": dst.repository,
            "digest": digest,
            "layer": layer,
        }
    )
    meta["pushedTo"] = pushed[-50:]
    write_json(meta_dir / "image.json", meta)
