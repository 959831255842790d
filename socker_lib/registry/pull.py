"""The pull side of the distribution protocol: manifests (all four kinds), platform choice,
and verified, resumable blob downloads."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ..errors import DigestMismatchError, NotFoundError, RegistryError, UnreachableError, UnsupportedError
from ..reference import Reference
from ..settings import is_loopback
from . import mediatypes as mt
from .transport import NET_ERRORS, Transport, _short

CHUNK = 1 << 20
MAX_MANIFEST = 4 << 20


@dataclass
class ResolvedImage:
    """One platform's image manifest and config, verified."""

    reference: Reference
    manifest_digest: str
    manifest_bytes: bytes
    manifest: dict
    config_bytes: bytes
    config: dict
    platform: str
    index_digest: str | None = None
    layers: list[dict] = field(default_factory=list)

    @property
    def media_type(self) -> str:
        return self.manifest.get("mediaType") or mt.OCI_MANIFEST


def _scope(ref: Reference) -> str:
    return f"repository:{ref.repository}:pull"


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _verify(data: bytes, digest: str, what: str) -> None:
    algo, _, hexpart = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        raise UnsupportedError(f"unsupported digest algorithm {algo!r} for {what}")
    actual = hashlib.new(algo, data).hexdigest()
    if actual != hexpart:
        raise DigestMismatchError(
            f"{what} does not match its digest {digest} (got {algo}:{actual})",
            "the registry served corrupt or tampered content; try again or report it",
        )


def fetch_manifest(t: Transport, ref: Reference, reference: str) -> tuple[bytes, str, str]:
    """GET a manifest by tag or digest; return (bytes, media type, verified digest)."""
    resp = t.request(
        "GET",
        f"/v2/{ref.repository}/manifests/{reference}",
        scope=_scope(ref),
        headers={"Accept": mt.ACCEPT},
        what=f"for {ref.repository}:{reference}",
    )
    data = resp.content
    if len(data) > MAX_MANIFEST:
        raise RegistryError(f"manifest of {ref} is larger than {MAX_MANIFEST} bytes; refusing it")
    if reference.startswith("sha"):
        _verify(data, reference, f"manifest {ref.repository}@{reference}")
        digest = reference
    else:
        digest = _digest_of(data)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatchError(
                f"manifest of {ref} does not match Docker-Content-Digest {header}",
                "the registry served corrupt content; try again",
            )
    try:
        body = json.loads(data)
    except ValueError as e:
        raise RegistryError(f"manifest of {ref} is not valid JSON") from e
    media = body.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0].strip()
    if not body.get("mediaType"):
        media = mt.OCI_INDEX if "manifests" in body else mt.OCI_MANIFEST if "layers" in body else media
    if media in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED) or body.get("schemaVersion") == 1:
        raise UnsupportedError(
            f"{ref} only has a Docker schema 1 manifest, which is deprecated",
            "push the image again with a current client",
        )
    return data, media, digest


def _norm_platform(p: str) -> tuple[str, str, str]:
    parts = p.split("/")
    if len(parts) < 2:
        raise UnsupportedError(f"invalid platform {p!r}", "use os/arch[/variant], e.g. linux/amd64")
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) > 2 else ""
    arch = {
        "x86_64": "amd64",
        "x86-64": "amd64",
        "aarch64": "arm64",
        "armhf": "arm",
        "armel": "arm",
        "i386": "386",
    }.get(arch, arch)
    if parts[1] == "armhf" and not variant:
        variant = "v7"
    if parts[1] == "armel" and not variant:
        variant = "v6"
    if arch == "arm64" and variant == "v8":
        variant = ""
    return os_, arch, variant


def _platform_str(d: dict) -> str:
    s = f"{d.get('os', '?')}/{d.get('architecture', '?')}"
    return s + (f"/{d['variant']}" if d.get("variant") else "")


def _is_attestation(desc: dict) -> bool:
    plat = desc.get("platform") or {}
    ann = desc.get("annotations") or {}
    return (
        plat.get("os") == "unknown" and plat.get("architecture") == "unknown"
    ) or "vnd.docker.reference.type" in ann


def choose_platform(index: dict, want: str, ref: Reference) -> dict:
    """Pick the index entry for ``want``; a missing variant matches any (prefer none/lowest)."""
    w_os, w_arch, w_var = _norm_platform(want)
    candidates = []
    available = []
    for desc in index.get("manifests") or []:
        if _is_attestation(desc) or desc.get("mediaType") not in (*mt.MANIFESTS, None):
            continue
        plat = desc.get("platform") or {}
        p_os, p_arch, p_var = _norm_platform(_platform_str(plat)) if plat else ("", "", "")
        available.append(_platform_str(plat))
        if p_os == w_os and p_arch == w_arch and (not w_var or p_var == w_var):
            candidates.append(desc)
    if not candidates:
        raise NotFoundError(
            f"{ref} has no image for platform {want} (it has: {', '.join(available) or 'none'})",
            "choose one with --platform os/arch[/variant]",
        )
    return candidates[0]


def resolve(t: Transport, ref: Reference, platform: str) -> ResolvedImage:
    """Follow tag/digest → (index →) manifest → config, verifying every step."""
    data, media, digest = fetch_manifest(t, ref, ref.reference)
    index_digest = None
    body = json.loads(data)
    chosen_platform = None
    if media in mt.INDEXES:
        index_digest = digest
        desc = choose_platform(body, platform, ref)
        data, media, digest = fetch_manifest(t, ref, desc["digest"])
        if desc.get("size") is not None and desc["size"] != len(data):
            raise DigestMismatchError(f"manifest {desc['digest']} of {ref} has the wrong size")
        body = json.loads(data)
        chosen_platform = _platform_str(desc.get("platform") or {})
    if media not in mt.MANIFESTS:
        raise UnsupportedError(f"{ref} has unsupported manifest media type {media!r}")
    cdesc = body.get("config") or {}
    config_bytes = fetch_small_blob(t, ref, cdesc, "config")
    config = json.loads(config_bytes)
    plat = chosen_platform or _platform_str(config)
    if chosen_platform is None and config.get("architecture"):
        c_os, c_arch, _ = _norm_platform(_platform_str(config))
        w_os, w_arch, _ = _norm_platform(platform)
        if (c_os, c_arch) != (w_os, w_arch):
            raise NotFoundError(
                f"{ref} is a single-platform image for {plat}, not {platform}",
                f"pass --platform {plat} to pull it anyway",
            )
    layers = body.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(f"config of {ref} lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    for layer in layers:
        if layer.get("mediaType") not in mt.LAYER_COMPRESSION:
            raise UnsupportedError(
                f"layer {layer.get('digest')} of {ref} has unsupported media type {layer.get('mediaType')!r}"
            )
    return ResolvedImage(ref, digest, data, body, config_bytes, config, plat, index_digest, layers)


def fetch_small_blob(t: Transport, ref: Reference, desc: dict, what: str) -> bytes:
    if not desc.get("digest"):
        raise RegistryError(f"manifest of {ref} has no {what} descriptor")
    if int(desc.get("size") or 0) > MAX_MANIFEST:
        raise RegistryError(f"{what} of {ref} is too large ({desc['size']} bytes)")
    resp = t.request(
        "GET",
        f"/v2/{ref.repository}/blobs/{desc['digest']}",
        scope=_scope(ref),
        what=f"{what} {desc['digest']}",
    )
    data = resp.content
    _verify(data, desc["digest"], f"{what} of {ref}")
    return data


def download_blob(
    t: Transport, ref: Reference, desc: dict, partial: Path, progress: Callable[[int], None] | None = None
) -> None:
    """Stream a blob into ``partial`` (resuming what is there with ``Range``) and verify it.

    The sha256 is computed while the bytes arrive. On a mismatch the partial file is removed
    and ``DigestMismatchError`` raised. ``progress(n)`` gets byte counts; ``progress(-1)``
    means "start again from zero".
    """
    digest = desc["digest"]
    if not digest.startswith("sha256:"):
        raise UnsupportedError(f"unsupported digest algorithm in {digest}")
    path = f"/v2/{ref.repository}/blobs/{digest}"

    def from_registry(hdrs):
        return t.request(
            "GET",
            path,
            scope=_scope(ref),
            headers=hdrs,
            stream=True,
            ok=(200, 206),
            what=f"blob {digest[:19]}",
        )

    try:
        h = _stream_resumable(from_registry, desc, partial, progress, t.retries)
    except NotFoundError:
        if not desc.get("urls"):
            raise
        h = _download_foreign(t, desc, desc["urls"], partial, progress)
    actual = "sha256:" + h.hexdigest()
    got = partial.stat().st_size
    size = desc.get("size")
    if actual != digest or (size is not None and got != size):
        partial.unlink(missing_ok=True)
        raise DigestMismatchError(
            f"blob {digest} of {ref} failed verification (got {actual}, {got} bytes)",
            "the registry served corrupt data; run the command again",
        )


def _download_foreign(t: Transport, desc: dict, urls: list[str], partial: Path, progress):
    last: Exception | None = None
    for url in urls:
        if not url.startswith("https://") and not (
            url.startswith("http://") and is_loopback(urlsplit(url).netloc)
        ):
            last = UnsupportedError(f"refusing non-HTTPS foreign layer URL {url}")
            continue

        def get(hdrs, url=url):
            # foreign URLs are other hosts: never send the registry's Authorization there
            resp = t.session.get(url, headers=hdrs, stream=True, timeout=60, verify=t.verify)
            if resp.status_code not in (200, 206):
                resp.close()
                raise NotFoundError(f"foreign layer URL {url} answered HTTP {resp.status_code}")
            return resp

        try:
            return _stream_resumable(get, desc, partial, progress, t.retries)
        except (NotFoundError, UnreachableError, requests.exceptions.RequestException) as e:
            last = e
    raise NotFoundError(f"foreign layer {desc['digest']} is not available from its URLs: {_short(last)}")


# mid-stream, any requests error counts as a dropped connection (resumed with Range)
_NET_ERRORS = (requests.exceptions.RequestException, *NET_ERRORS)


def _hash_existing(partial: Path):
    h = hashlib.sha256()
    if partial.exists():
        with open(partial, "rb") as f:
            while chunk := f.read(CHUNK * 4):
                h.update(chunk)
    return h


def _stream_resumable(get, desc: dict, partial: Path, progress, retries: int):
    """Append the blob to ``partial`` until complete; resume after dropped connections."""
    size = desc.get("size")
    if size is not None and partial.exists() and partial.stat().st_size > size:
        partial.unlink()
    h = _hash_existing(partial)
    have = partial.stat().st_size if partial.exists() else 0
    if progress and have:
        progress(have)
    attempts = 0
    while size is None or have < size:
        hdrs = {"Accept-Encoding": "identity"}
        if have:
            hdrs["Range"] = f"bytes={have}-"
        resp = get(hdrs)
        if resp.status_code == 200 and have:
            # the server ignored Range: start over
            have, h = 0, hashlib.sha256()
            partial.unlink(missing_ok=True)
            if progress:
                progress(-1)
        try:
            with open(partial, "ab") as f:
                for chunk in resp.raw.stream(CHUNK, decode_content=False):
                    f.write(chunk)
                    h.update(chunk)
                    have += len(chunk)
                    if progress:
                        progress(len(chunk))
            if size is None:
                break
        except _NET_ERRORS:
            pass  # resumed below from what arrived
        finally:
            resp.close()
        if size is not None and have < size:
            attempts += 1
            if attempts > retries:
                raise UnreachableError(
                    f"download of {desc['digest'][:19]} kept failing after {attempts} attempts",
                    "check the network, then run the command again: it resumes where it stopped",
                )
            time.sleep(min(0.25 * 2**attempts, 5))
    return h
