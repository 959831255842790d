"""Build test images as OCI image layouts, in pure Python (``tarfile``, ``gzip``, ``zstandard``).

Entries are described with the small helpers below (``file``, ``dir``, ``symlink``...), turned
into deterministic PAX tars by ``tar_bytes`` and written as an OCI image layout by
``build_layout``: ``oci-layout``, ``index.json`` (the tag as annotation
``org.opencontainers.image.ref.name``) and ``blobs/sha256/*``.  Entries are written in the order
given (never sorted), so tests control ordering, and paths are written as given (never
normalised), so hostile layers (``../x``, ``/abs``, links out of the rootfs) can be built too.
A layer may also be raw ``bytes``: an uncompressed tar made some other way.

Pushing a layout exactly with skopeo 1.9 (what ``tests.support.registry.skopeo_push`` does)::

    skopeo --insecure-policy copy --preserve-digests [--all] --dest-tls-verify=false \\
        oci:DIR:TAG docker://HOST/REPO:TAG

- ``--preserve-digests`` is needed: without it skopeo gzips *uncompressed* layers on the way to a
  registry (new layer and manifest digests). With it, anything that would change
  a digest is an error instead. zstd layers, OCI indexes and Docker lists survive either way.
- ``--all`` (= ``--multi-arch all``) copies an index/list with every instance, the attestation
  manifest included; without it skopeo copies only the host platform's image manifest.
- Never ``--format`` or ``--dest-compress-format``: both convert.
- Docker media types (``docker=True``): skopeo 1.9's ``oci:`` source only looks at index.json
  descriptors with OCI media types ("no descriptor found for reference"), so such a tag is
  re-staged as skopeo's ``dir:`` transport (``registry.layout_to_dir_transport``), from which
  ``--preserve-digests [--all]`` pushes schema2 manifests and manifest lists byte for byte.

``umoci unpack`` (0.4.7) accepts single-manifest OCI tags with gzip or uncompressed layers. It
refuses zstd layers ("blob is not correct mediatype"), Docker media types, and a tag on an index
with several manifests ("tag is ambiguous"); see ``tests.support.umoci.skopeo_to_layout``.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import platform as _platform
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"  # == DEFAULT_MTIME, so configs are reproducible

# Media types
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

REF_NAME = "org.opencontainers.image.ref.name"
ATTESTATION_TYPE = "attestation-manifest"

LAYER_MEDIA_TYPES = {
    (False, "none"): OCI_LAYER,
    (False, "gzip"): OCI_LAYER_GZIP,
    (False, "zstd"): OCI_LAYER_ZSTD,
    (True, "none"): DOCKER_LAYER,
    (True, "gzip"): DOCKER_LAYER_GZIP,
}


# ---------------------------------------------------------------------------------------------
# Entries


@dataclass
class Entry:
    """One tar entry. ``kind`` is file, dir, symlink, hardlink, fifo, chardev or blockdev."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int | float = DEFAULT_MTIME
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes | str] | None = None
    uname: str = ""
    gname: str = ""
    pax: dict[str, str] = field(default_factory=dict)  # extra PAX records, written verbatim

    def tarinfo(self) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.path)
        ti.type = _TAR_TYPES[self.kind]
        ti.mode = self.mode & 0o7777
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname, ti.gname = self.uname, self.gname
        ti.mtime = self.mtime
        ti.linkname = self.linkname
        ti.devmajor, ti.devminor = self.devmajor, self.devminor
        ti.size = len(self.data) if self.kind == "file" else 0
        pax = dict(self.pax)
        for name, value in (self.xattrs or {}).items():
            if isinstance(value, bytes):
                # tarfile writes non-UTF-8 PAX values byte for byte (with hdrcharset=BINARY)
                value = value.decode("utf-8", "surrogateescape")
            pax["SCHILY.xattr." + name] = value
        ti.pax_headers = pax
        return ti


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


def file(path, data=b"", mode=0o644, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, **kw) -> Entry:
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", data, mode, uid, gid, mtime, xattrs=xattrs, **kw)


def dir(path, mode=0o755, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, **kw) -> Entry:  # noqa: A001
    return Entry(path, "dir", b"", mode, uid, gid, mtime, xattrs=xattrs, **kw)


def symlink(path, target, uid=0, gid=0, mtime=DEFAULT_MTIME, mode=0o777, xattrs=None, **kw) -> Entry:
    return Entry(path, "symlink", b"", mode, uid, gid, mtime, linkname=target, xattrs=xattrs, **kw)


def hardlink(path, target, uid=0, gid=0, mtime=DEFAULT_MTIME, mode=0o644, xattrs=None, **kw) -> Entry:
    """A tar hardlink (type 1) to ``target``, a path inside the image as written in the tar."""
    return Entry(path, "hardlink", b"", mode, uid, gid, mtime, linkname=target, xattrs=xattrs, **kw)


def fifo(path, mode=0o644, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, **kw) -> Entry:
    return Entry(path, "fifo", b"", mode, uid, gid, mtime, xattrs=xattrs, **kw)


def chardev(path, major, minor, mode=0o666, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, **kw) -> Entry:
    return Entry(
        path, "chardev", b"", mode, uid, gid, mtime, devmajor=major, devminor=minor, xattrs=xattrs, **kw
    )


def blockdev(path, major, minor, mode=0o660, uid=0, gid=0, mtime=DEFAULT_MTIME, xattrs=None, **kw) -> Entry:
    return Entry(
        path, "blockdev", b"", mode, uid, gid, mtime, devmajor=major, devminor=minor, xattrs=xattrs, **kw
    )


def whiteout(path, mtime=DEFAULT_MTIME) -> Entry:
    """Delete ``path`` from lower layers: an empty file ``parent/.wh.name``."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o644, mtime=mtime)


def opaque(dirpath, mtime=DEFAULT_MTIME) -> Entry:
    """Hide every lower child of ``dirpath``: an empty file ``dirpath/.wh..wh..opq``."""
    return file(f"{dirpath.rstrip('/')}/.wh..wh..opq", mode=0o644, mtime=mtime)


def file_capability(*bits: int, effective: bool = True) -> bytes:
    """A valid ``security.capability`` value (VFS_CAP_REVISION_2) granting ``bits`` permitted.

    The kernel refuses malformed values with EINVAL, so tests cannot use arbitrary bytes.
    E.g. ``file_capability(10)`` is ``cap_net_bind_service+ep``.
    """
    permitted = 0
    for bit in bits:
        permitted |= 1 << bit
    magic = 0x02000000 | (1 if effective else 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = (
    "sh", "ls", "cat", "echo", "true", "false", "id", "hostname", "sleep", "env", "pwd",
    "mount", "umount", "mkdir", "rm", "rmdir", "cp", "mv", "ln", "chmod", "chown", "stat",
    "touch", "test", "[", "grep", "sed", "head", "tail", "wc", "uname", "whoami", "printf",
    "ps", "kill", "readlink", "find", "tar", "sync", "date", "dd", "getfattr", "setfattr",
    "mknod", "cut", "sort", "xargs", "which", "basename", "dirname",
)  # fmt: skip
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"
_busybox_cache: bytes | None = None


def busybox_bytes() -> bytes:
    global _busybox_cache
    if _busybox_cache is None:
        _busybox_cache = Path(BUSYBOX).read_bytes()
    return _busybox_cache


def busybox_entries(prefix: str = "") -> list[Entry]:
    """A minimal runnable rootfs: the host's static busybox, applet symlinks, passwd and group.

    ``prefix`` (e.g. ``"sub/"``) is put in front of every path.
    """
    p = prefix
    entries = [
        dir(f"{p}bin"),
        file(f"{p}bin/busybox", busybox_bytes(), mode=0o755),
        *[symlink(f"{p}bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS],
        dir(f"{p}etc"),
        file(f"{p}etc/passwd", PASSWD),
        file(f"{p}etc/group", GROUP),
        dir(f"{p}root", mode=0o700),
        dir(f"{p}tmp", mode=0o1777),
    ]
    return entries


# ---------------------------------------------------------------------------------------------
# Tars and blobs


def tar_bytes(entries) -> bytes:
    """A deterministic PAX tar (uncompressed) of ``entries``, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for entry in entries:
            ti = entry.tarinfo()
            tar.addfile(ti, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    """``gzip`` (header mtime 0, no file name), ``zstd`` or ``none``; deterministic."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(layout_dir, data: bytes, media_type: str, **extra) -> dict:
    """Store ``data`` under ``blobs/sha256/`` and return its descriptor (plus ``extra`` keys)."""
    digest = sha256_digest(data)
    path = Path(layout_dir, "blobs", "sha256", digest.split(":", 1)[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=None, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Platforms


def parse_platform(spec: str) -> dict:
    """``"linux/arm64/v8"`` -> ``{"os": "linux", "architecture": "arm64", "variant": "v8"}``."""
    parts = spec.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"bad platform {spec!r}: want os/arch[/variant]")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def host_platform() -> str:
    machine = _platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm/v7",
        "armv6l": "arm/v6",
        "i686": "386",
        "i386": "386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)
    return f"linux/{arch}"


# ---------------------------------------------------------------------------------------------
# Layouts


def _layer_blob(layout_dir, layer, compression: str, docker: bool) -> tuple[dict, str]:
    raw = layer if isinstance(layer, bytes | bytearray) else tar_bytes(layer)
    try:
        media_type = LAYER_MEDIA_TYPES[(docker, compression)]
    except KeyError:
        raise ValueError(f"no layer media type for compression={compression!r} docker={docker}") from None
    desc = write_blob(layout_dir, compress(bytes(raw), compression), media_type)
    return desc, sha256_digest(bytes(raw))


def _write_image(layout_dir, layers, compressions, config, docker, plat: dict, annotations) -> dict:
    descs, diff_ids = [], []
    for layer, compression in zip(layers, compressions, strict=True):
        desc, diff_id = _layer_blob(layout_dir, layer, compression, docker)
        descs.append(desc)
        diff_ids.append(diff_id)
    image_config = {
        "created": CREATED,
        "architecture": plat["architecture"],
        "os": plat["os"],
        **({"variant": plat["variant"]} if "variant" in plat else {}),
        "config": copy.deepcopy(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": f"socker-tests layer {i}", "comment": "tests.support.oci"}
            for i in range(len(diff_ids))
        ],
    }
    config_desc = write_blob(layout_dir, json_bytes(image_config), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_desc,
        "layers": descs,
    }
    if annotations and not docker:
        manifest["annotations"] = dict(annotations)
    manifest_desc = write_blob(layout_dir, json_bytes(manifest), manifest["mediaType"])
    return {
        "platform": plat,
        "media_type": manifest["mediaType"],
        "manifest_digest": manifest_desc["digest"],
        "manifest_size": manifest_desc["size"],
        "descriptor": manifest_desc,
        "config_digest": config_desc["digest"],
        "config": image_config,
        "layers": [d["digest"] for d in descs],
        "layer_media_types": [d["mediaType"] for d in descs],
        "diff_ids": diff_ids,
    }


def _write_attestation(layout_dir, subject_digest: str) -> dict:
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "socker-test", "digest": {"sha256": subject_digest.split(":", 1)[1]}}],
        "predicate": {"builder": {"id": "tests.support.oci"}},
    }
    layer = write_blob(
        layout_dir,
        json_bytes(statement),
        IN_TOTO,
        annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
    )
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    config_desc = write_blob(layout_dir, json_bytes(config), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer]}
    desc = write_blob(layout_dir, json_bytes(manifest), OCI_MANIFEST)
    desc["platform"] = {"architecture": "unknown", "os": "unknown"}
    desc["annotations"] = {
        "vnd.docker.reference.digest": subject_digest,
        "vnd.docker.reference.type": ATTESTATION_TYPE,
    }
    return desc


def _tag_in_index(layout_dir: Path, tag: str, desc: dict) -> None:
    (layout_dir / "oci-layout").write_bytes(json_bytes({"imageLayoutVersion": "1.0.0"}))
    index_path = layout_dir / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
    entry = dict(desc)
    entry["annotations"] = {**(desc.get("annotations") or {}), REF_NAME: tag}
    index["manifests"].append(entry)
    index_path.write_bytes(json_bytes(index))


def platform_file_layer(platform: str) -> list[Entry]:
    """The extra top layer a multi-platform image gets: ``etc/platform`` = the platform string."""
    return [dir("etc"), file("etc/platform", platform + "\n")]


def build_layout(
    layout_dir,
    tag: str,
    layers: list,
    *,
    compression: str | list[str] = "gzip",
    config: dict | None = None,
    docker: bool = False,
    platforms: list[str] | None = None,
    attestation: bool = True,
    annotations: dict | None = None,
) -> dict:
    """Write an image (or an index of images) into the OCI layout ``layout_dir`` under ``tag``.

    ``layers``: bottom first; each a list of ``Entry`` or raw uncompressed tar ``bytes``.
    ``compression``: ``gzip``, ``zstd`` or ``none``, or one per layer. ``config``: the config's
    ``config`` section. ``docker``: Docker schema2 media types (no zstd there).
    ``platforms``: build an OCI index (Docker manifest list with ``docker``) with one image per
    platform; each gets an extra top layer ``etc/platform`` (see ``platform_file_layer``) and,
    with ``attestation``, the index gets an attestation manifest entry (``unknown/unknown``)
    referring to the first platform's manifest. Without ``platforms``: one manifest for the
    host's platform, tagged directly. Several tags may share one layout; retagging replaces.

    Returns ``{"tag", "layout", "media_type", "digest", "size"`` (of what the tag points at),
    ``"index_digest"`` (None for one manifest), ``"manifest_digest", "config_digest", "layers",
    "layer_media_types", "diff_ids", "config"`` (of the single/first image), ``"platforms"``:
    ``{platform string: the same keys per image, plus "platform" dict and "descriptor"}``,
    ``"attestation_digest"`` (or None)``}``.
    """
    layout_dir = Path(layout_dir)
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    n = len(layers) + (1 if platforms else 0)
    if isinstance(compression, str):
        compressions = [compression] * n
    else:
        compressions = list(compression)
        if len(compressions) == len(layers) and platforms:
            compressions.append(compressions[-1] if compressions else "gzip")
        if len(compressions) != n:
            raise ValueError(f"{len(compressions)} compressions for {len(layers)} layers")

    per_platform: dict[str, dict] = {}
    if not platforms:
        spec = host_platform()
        per_platform[spec] = _write_image(
            layout_dir, layers, compressions, config, docker, parse_platform(spec), annotations
        )
        first = per_platform[spec]
        _tag_in_index(layout_dir, tag, first["descriptor"])
        top = first["descriptor"]
        index_digest = attestation_digest = None
    else:
        for spec in platforms:
            image_layers = [*layers, platform_file_layer(spec)]
            per_platform[spec] = _write_image(
                layout_dir, image_layers, compressions, config, docker, parse_platform(spec), annotations
            )
        first = per_platform[platforms[0]]
        manifests = [{**info["descriptor"], "platform": info["platform"]} for info in per_platform.values()]
        attestation_digest = None
        if attestation:
            att = _write_attestation(layout_dir, first["manifest_digest"])
            attestation_digest = att["digest"]
            manifests.append(att)
        index_type = DOCKER_LIST if docker else OCI_INDEX
        index = {"schemaVersion": 2, "mediaType": index_type, "manifests": manifests}
        if annotations and not docker:
            index["annotations"] = dict(annotations)
        top = write_blob(layout_dir, json_bytes(index), index_type)
        index_digest = top["digest"]
        _tag_in_index(layout_dir, tag, top)

    return {
        "tag": tag,
        "layout": str(layout_dir),
        "media_type": top["mediaType"],
        "digest": top["digest"],
        "size": top["size"],
        "index_digest": index_digest,
        "manifest_digest": first["manifest_digest"],
        "config_digest": first["config_digest"],
        "config": first["config"],
        "layers": first["layers"],
        "layer_media_types": first["layer_media_types"],
        "diff_ids": first["diff_ids"],
        "platforms": per_platform,
        "attestation_digest": attestation_digest,
    }


def read_blob(layout_dir, digest: str) -> bytes:
    return Path(layout_dir, "blobs", *digest.split(":", 1)).read_bytes()
