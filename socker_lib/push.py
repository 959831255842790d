"""``push``: a flat image directory → one deterministic layer → config → manifest → registry.

An unchanged directory is not packed twice: the tree's fingerprint and the layer it gave are
kept in the image's metadata, and the layer blob in the blob cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import reference as reference_mod
from .blobs import BlobCache
from .errors import DigestMismatchError, ImageNotFoundError, ReferenceError_, UnsupportedError
from .imageconfig import canonical, digest_of, flattened_config, manifest
from .progress import Reporter, human
from .registry.push import put_manifest, upload_blob
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


def push(ref_text: str, settings: Settings | None = None, *, source: str | None = None, fmt: str = "docker",
         compression: str = "gzip", reporter: Reporter | None = None) -> PushResult:
    """Push ``images/<source or ref>`` to ``ref`` as a single-layer image."""
    settings = settings or Settings.load()
    reporter = reporter or Reporter()
    dst = reference_mod.parse(ref_text)
    src = reference_mod.parse(source) if source else dst
    _check_options(dst, fmt, compression)
    store = Store(settings.home)
    if not store.exists(src):
        raise ImageNotFoundError(f"no local image {src} (looked in {store.image_dir(src)})",
                                 f"pull it, or create one with: socker new {src}")
    with store.lock(src, on_wait=lambda: reporter.info(f"waiting for another operation on {src} ...")):
        meta = _read_meta(store, src)
        base_config = _read_json(store.meta_dir(src) / "config.json")
        layer, packed = _layer_for(store, src, meta, compression, reporter)
        meta["lastPacked"] = layer
        created = layer["created"]
        note = f"socker push: {src} flattened into one layer"
        config_bytes = canonical(flattened_config(base_config, layer["diffID"], created, note))
        manifest_bytes, media = manifest(config_bytes, layer["digest"], layer["size"], compression, fmt)
        cache = BlobCache(settings.home)
        config_path = _cache_bytes(cache, config_bytes)
        t = Transport(dst.registry, dst.api_host, settings)
        reporter.info(f"pushing {dst} (1 layer, {human(layer['size'])})")
        bar = reporter.bar(f"layer {layer['digest'][7:19]}", layer["size"])
        how = upload_blob(t, dst, cache.path(layer["digest"]), layer["digest"],
                          mount_from=_known_sources(store, dst, layer["digest"]), progress=bar.advance)
        bar.finish(how)
        upload_blob(t, dst, config_path, digest_of(config_bytes))
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


def _layer_for(store: Store, ref, meta: dict, compression: str, reporter: Reporter) -> tuple[dict, bool]:
    """The layer for the tree as it is now: reused if the tree has not changed, else packed."""
    from .pack import pack_layer

    rootfs = store.image_dir(ref)
    snap = snapshot(rootfs)
    fp = _fingerprint(snap, compression)
    cache = BlobCache(store.home)
    last = meta.get("lastPacked") or {}
    if last.get("fingerprint") == fp and cache.has(last.get("digest", ""), last.get("size")):
        return last, False
    bar = reporter.bar(f"pack {ref}", None)
    with store.staging("pack-") as staged:
        blob = staged.dir / "layer"
        packed = pack_layer(rootfs, blob, compression=compression, progress=bar.advance)
        bar.finish(f"{packed.entries} entries, {human(packed.size)}")
        final = cache.path(packed.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(blob, final)
    if snapshot(rootfs) != snap:
        reporter.warn(f"{ref} changed while it was being packed; the pushed layer may mix old and new files")
    layer = {"fingerprint": fp, "digest": packed.digest, "size": packed.size, "diffID": packed.diff_id,
             "compression": compression, "created": _created(snap)}
    return layer, True


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
        if meta.get("registry") == dst.registry and any(x.get("digest") == digest for x in meta.get("layers") or []):
            found.append(meta["repository"])
    return [r for r in dict.fromkeys(found) if r != dst.repository]


def _record_push(store: Store, src, meta: dict, dst, digest: str) -> None:
    meta_dir = store.meta_dir(src)
    meta_dir.mkdir(parents=True, exist_ok=True)
    pushed = [p for p in meta.get("pushedTo") or [] if p.get("reference") != str(dst)]
    layer = meta.get("lastPacked", {}).get("digest")
    pushed.append({"reference": str(dst), "registry": dst.registry, "repository": dst.repository,
                   "digest": digest, "layer": layer})
    meta["pushedTo"] = pushed[-50:]
    write_json(meta_dir / "image.json", meta)
