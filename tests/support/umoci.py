"""Reference unpacking with umoci, the tool whose result socker's flat images are compared to.

umoci 0.4.7 (Debian 12) unpacks OCI layouts with gzip or uncompressed layers only: it refuses
zstd (``blob is not correct mediatype``) and Docker media types, and a tag that points at an
index with several manifests. ``skopeo_to_layout`` therefore recompresses to gzip by default
and converts Docker manifests to OCI (skopeo's ``oci:`` destination does that by itself).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def umoci_unpack(layout_dir, tag: str, bundle_dir, *, rootless: bool | None = None) -> Path:
    """``umoci unpack --image LAYOUT:TAG BUNDLE``; returns ``BUNDLE/rootfs``.

    As root (the normal case) ownership, devices and all xattrs are restored. ``rootless``
    (default: when not root) passes ``--rootless``.
    """
    if rootless is None:
        rootless = os.geteuid() != 0
    cmd = ["umoci", "unpack", *(["--rootless"] if rootless else []), "--image", f"{layout_dir}:{tag}"]
    cmd.append(str(bundle_dir))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"umoci unpack failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return Path(bundle_dir) / "rootfs"


def skopeo_to_layout(
    registry_ref: str,
    layout_dir,
    tag: str,
    *,
    authfile=None,
    tls_verify: bool = False,
    compress_format: str | None = "gzip",
    platform: str | None = None,
    all_platforms: bool = False,
) -> Path:
    """Copy ``registry_ref`` (``HOST/REPO:TAG``, ``HOST/REPO@DIGEST`` or ``docker://...``) into
    the OCI layout ``layout_dir`` under ``tag``; returns ``layout_dir``.

    ``compress_format``: layers are recompressed to this (default gzip, which umoci needs;
    None keeps them as they are). ``platform`` (``os/arch[/variant]``) picks an instance of an
    index instead of the host's; ``all_platforms`` copies the whole index (``--all``).
    """
    src = registry_ref if registry_ref.startswith("docker://") else "docker://" + registry_ref
    cmd = ["skopeo", "--insecure-policy"]
    if platform:
        os_, arch, *variant = platform.split("/")
        cmd += ["--override-os", os_, "--override-arch", arch]
        if variant:
            cmd += ["--override-variant", variant[0]]
    cmd += ["copy", "--quiet", "--retry-times", "0", f"--src-tls-verify={str(tls_verify).lower()}"]
    if authfile:
        cmd += ["--authfile", str(authfile)]
    if compress_format:
        cmd += ["--dest-compress-format", compress_format]
    if all_platforms:
        cmd.append("--all")
    cmd += [src, f"oci:{layout_dir}:{tag}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo copy failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return Path(layout_dir)
