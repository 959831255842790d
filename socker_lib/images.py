"""Local image management: ``new``, ``add``, ``tag``, ``rm`` and ``images``.

Every change goes through the image's lock; ``new`` and ``tag`` build in staging and swap in,
so a failure leaves nothing half-made.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import reference as reference_mod
from .errors import ImageNotFoundError, SockerError
from .imageconfig import canonical, default_config
from .reference import Reference
from .settings import Settings
from .store import META_VERSION, Store, changed_paths, read_snapshot, remove_tree, write_json, write_snapshot


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_image(
    ref_text: str, settings: Settings | None = None, *, platform: str | None = None, force: bool = False
) -> Path:
    """Create an empty image (scratch) with default metadata."""
    settings = settings or Settings.load()
    ref = reference_mod.parse(ref_text)
    store = Store(settings.home)
    with store.lock(ref):
        if store.exists(ref) and not force:
            raise SockerError(
                f"image {ref} already exists at {store.image_dir(ref)}",
                "pick another name, or remove it first: socker rm " + str(ref),
            )
        with store.staging("new-") as staged:
            config = default_config(platform or settings.platform)
            (staged.meta / "config.json").write_bytes(canonical(config))
            write_json(staged.meta / "image.json", _meta(ref, config, origin="socker new"))
            write_snapshot(staged.rootfs, staged.meta / "tree.json.gz")
            return store.commit(ref, staged)


def _meta(ref: Reference, config: dict, origin: str, **extra) -> dict:
    plat = f"{config.get('os', 'linux')}/{config.get('architecture', '?')}"
    if config.get("variant"):
        plat += "/" + config["variant"]
    return {
        "schemaVersion": META_VERSION,
        "reference": str(ref),
        "registry": ref.registry,
        "repository": ref.repository,
        "tag": ref.tag,
        "digest": None,
        "platform": plat,
        "createdAt": _now(),
        "origin": origin,
        "layers": [],
        **extra,
    }


def add_files(ref_text: str, paths: list[str], settings: Settings | None = None) -> list[str]:
    """Copy host executables (with their shared libraries and loader) into an image."""
    from .elfdeps import copy_into, resolve

    if not paths:
        raise SockerError(
            "no paths given to add", "name host files, e.g. socker add me/img:1 /bin/bash /bin/ls"
        )
    settings = settings or Settings.load()
    ref = reference_mod.parse(ref_text)
    store = Store(settings.home)
    if not store.exists(ref):
        raise ImageNotFoundError(f"no local image {ref}", f"create one first: socker new {ref}")
    with store.lock(ref):
        needed = resolve([os.path.abspath(p) for p in paths])  # fails before anything is copied
        return copy_into(store.image_dir(ref), needed)


def tag_image(src_text: str, dst_text: str, settings: Settings | None = None) -> Path:
    """Copy a local image (tree and metadata) to a new name."""
    settings = settings or Settings.load()
    src, dst = reference_mod.parse(src_text), reference_mod.parse(dst_text)
    store = Store(settings.home)
    if not store.exists(src):
        raise ImageNotFoundError(f"no local image {src}", f"pull it first: socker pull {src}")
    if src.store_path == dst.store_path:
        return store.image_dir(dst)
    first, second = sorted((src, dst), key=lambda r: r.store_path)  # one order: no deadlock
    with store.lock(first), store.lock(second), store.staging("tag-") as staged:
        copy_tree(store.image_dir(src), staged.rootfs)
        src_meta = store.meta_dir(src)
        if src_meta.is_dir():
            for name in ("config.json", "manifest.json", "tree.json.gz"):
                if (src_meta / name).exists():
                    shutil.copy2(src_meta / name, staged.meta / name)
        meta = json.loads((src_meta / "image.json").read_text()) if (src_meta / "image.json").exists() else {}
        meta.update(
            reference=str(dst),
            registry=dst.registry,
            repository=dst.repository,
            tag=dst.tag,
            taggedFrom=str(src),
            taggedAt=_now(),
            pushedTo=[],
        )
        meta.setdefault("schemaVersion", META_VERSION)
        write_json(staged.meta / "image.json", meta)
        return store.commit(dst, staged)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy an image tree with everything (hard links, xattrs, owners, devices): ``cp -a``."""
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", f"{src}/.", str(dst)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SockerError(f"copying {src} failed: {proc.stderr.strip()}", "check free space and permissions")


def remove_image(ref_text: str, settings: Settings | None = None) -> Path:
    settings = settings or Settings.load()
    ref = reference_mod.parse(ref_text)
    store = Store(settings.home)
    if not store.exists(ref) and not store.meta_dir(ref).exists():
        raise ImageNotFoundError(f"no local image {ref}", "list local images with: socker images")
    with store.lock(ref):
        path = store.image_dir(ref)
        for d in (path, store.meta_dir(ref)):
            if d.exists():
                # move aside first so a half-deleted tree is never visible under the name
                aside = store.tmp / f"rm-{os.getpid()}-{d.name}"
                store.tmp.mkdir(parents=True, exist_ok=True)
                os.rename(d, aside)
                remove_tree(aside)
        _prune_empty(path.parent, store.images)
        _prune_empty(store.meta_dir(ref).parent, store.meta_root)
        return path


def _prune_empty(d: Path, stop: Path) -> None:
    while d != stop and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


@dataclass
class ImageInfo:
    reference: str
    path: Path
    size: int
    digest: str | None
    modified: bool | None
    origin: str


def list_images(settings: Settings | None = None, *, check_modified: bool = True) -> list[ImageInfo]:
    settings = settings or Settings.load()
    store = Store(settings.home)
    out: list[ImageInfo] = []
    if not store.meta_root.is_dir():
        return out
    for meta_file in sorted(store.meta_root.rglob("image.json")):
        rel = meta_file.parent.relative_to(store.meta_root).as_posix()
        image = store.images / rel
        if not image.is_dir():
            continue
        meta = json.loads(meta_file.read_text())
        snap = meta_file.parent / "tree.json.gz"
        modified = None
        if check_modified and snap.exists():
            modified = any(changed_paths(image, read_snapshot(snap)))
        out.append(
            ImageInfo(
                meta.get("reference") or rel,
                image,
                _tree_size(image),
                meta.get("digest"),
                modified,
                meta.get("origin") or "pull",
            )
        )
    return out


def _tree_size(root: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
