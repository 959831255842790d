"""Image config and manifest documents for a flat, single-layer image.

Output is canonical JSON (sorted keys, no spaces), so the same tree and settings always give
the same config and manifest digests.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json

from .registry import mediatypes as mt
from .settings import host_platform

#: the "config" keys Docker and OCI define; anything else the image had is kept too
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def iso(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_config(platform: str | None = None) -> dict:
    """What ``socker new`` gives an image made from scratch."""
    os_, arch, *variant = (platform or host_platform()).split("/")
    cfg = {
        "architecture": arch,
        "os": os_,
        "config": {"Env": list(DEFAULT_ENV)},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    if variant:
        cfg["variant"] = variant[0]
    return cfg


def flattened_config(base: dict | None, diff_id: str, created: int, note: str) -> dict:
    """The pushed image's config: the base image's settings, one layer, a history saying so."""
    base = dict(base or default_config())
    cfg = {
        k: v
        for k, v in base.items()
        if k
        not in (
            "rootfs",
            "history",
            "created",
            "container",
            "container_config",
            "docker_version",
            "id",
            "parent",
        )
    }
    cfg.setdefault("architecture", default_config()["architecture"])
    cfg.setdefault("os", "linux")
    cfg["config"] = dict(base.get("config") or {})
    cfg["created"] = iso(created)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
    cfg["history"] = [{"created": iso(created), "created_by": note, "comment": "flattened by socker"}]
    return cfg


def manifest(
    config_bytes: bytes, layer_digest: str, layer_size: int, compression: str, fmt: str
) -> tuple[bytes, str]:
    """(manifest bytes, media type) in Docker schema2 (``fmt="docker"``) or OCI (``"oci"``)."""
    if fmt == "oci":
        layer_type = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}[compression]
        media, config_type = mt.OCI_MANIFEST, mt.OCI_CONFIG
    else:
        layer_type = {"gzip": mt.DOCKER_LAYER_GZIP, "none": "application/vnd.docker.image.rootfs.diff.tar"}[
            compression
        ]
        media, config_type = mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG
    doc = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": config_type, "digest": digest_of(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer_size}],
    }
    return canonical(doc), media
