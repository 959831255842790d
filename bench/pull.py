#!/usr/bin/env python3
"""Benchmark: how fast ``socker pull`` flattens a realistic image, next to skopeo+umoci and udocker.

One run does everything:

1. a Debian bookworm minbase root filesystem (``debootstrap --variant=minbase``; the mirror is
   read from this machine's apt sources, never written here), cached under ``--cache``;
2. an OCI image of it in three gzip (level 6) layers: everything but ``usr/share``;
   ``usr/share``; a small top layer that edits files and deletes some with whiteouts
   (plain and opaque). Cached too;
3. a fresh ``docker-registry`` on a free loopback port (storage in the run's temp dir) that
   the image is pushed to with skopeo;
4. wall-clock timings, each repeated ``--repeat`` times (median reported), the page cache
   dropped before every run but the up-to-date one when the kernel lets us:

   - ``socker pull -q REF`` with a fresh ``SOCKER_HOME`` (cold), then again in that home
     (up to date) and with ``--force`` (blobs cached, layers extracted again);
   - ``skopeo copy docker://REF oci:DIR:TAG`` + ``umoci unpack`` (cold), and ``umoci
     unpack`` alone from the copied layout (the warm counterpart of ``--force``);
   - ``udocker pull`` + ``udocker create`` (cold; udocker lives in its own venv under
     ``--cache``, runs offline with ``UDOCKER_TARBALL=`` so it never fetches its tools), and
     ``udocker create`` alone from pulled layers;
5. a cheap correctness check: socker's tree against umoci's rootfs (paths, types, sizes,
   modes, owners, hard links, symlink targets; counts and total bytes), udocker's by counts only.

Run as root from the repository: ``python bench/pull.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402 - needs REPO on sys.path
    DEFAULT_CACHE,
    SKIPPED_DIRS,
    Failed,
    Measure,
    drop_caches,
    drop_status,
    ensure_rootfs,
    log,
    machine,
    parse_tools,
    print_errors,
    print_profile,
    run,
    skopeo,
    socker_cmd,
    socker_env,
    support,
    table_header,
    table_row,
    tree_diffs,
    tree_summary,
    tree_totals,
    umoci_unpack_flags,
    work_dir,
)

IMAGE_REPO = "bench/debian"
IMAGE_TAG = "minbase"
LAYOUT_FORMAT = 1  # bump when the image recipe below changes: invalidates cached layouts
ENTRY_MTIME = 1_700_000_000  # of the synthetic top-layer entries


# ---------------------------------------------------------------------------------------------
# The image


def walk(root: Path):
    """Yield ``(relative path, absolute path)`` of everything under ``root``, parents first, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir in SKIPPED_DIRS:
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, os.path.join(dirpath, name)


def rootfs_fingerprint(root: Path) -> str:
    h = hashlib.sha256(f"{LAYOUT_FORMAT} {root.resolve()}".encode())
    for rel, path in walk(root):
        st = os.lstat(path)
        h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class HashingWriter:
    """A write-only file object that hashes and counts what passes through to ``out``."""

    def __init__(self, out):
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.out.flush()


def write_layer(blobs: Path, root: Path, paths: list[str], extra=()) -> tuple[dict, str, int]:
    """A gzip (level 6) PAX tar blob of ``paths`` (relative to ``root``) plus ``extra``
    ``(TarInfo, bytes | None)`` entries. Returns (descriptor, diff_id, entry count)."""
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=blobs)
    count = 0
    with os.fdopen(fd, "wb") as f:
        compressed = HashingWriter(f)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as gz:
            raw = HashingWriter(gz)
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in paths:
                    path = root / rel
                    ti = tar.gettarinfo(str(path), rel)
                    if ti is None:  # a socket
                        continue
                    ti.uname = ti.gname = ""  # numeric ids only: the host's names mean nothing here
                    if ti.isreg():
                        with open(path, "rb") as data:
                            tar.addfile(ti, data)
                    else:
                        tar.addfile(ti)
                    count += 1
                for ti, data in extra:
                    tar.addfile(ti, None if data is None else io.BytesIO(data))
                    count += 1
    digest = "sha256:" + compressed.sha.hexdigest()
    os.replace(tmp, blobs / compressed.sha.hexdigest())
    desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": compressed.size,
    }
    return desc, "sha256:" + raw.sha.hexdigest(), count


def _entry(path: str, data: bytes | None = None, *, mode=0o644, kind=tarfile.REGTYPE) -> tuple:
    ti = tarfile.TarInfo(path)
    ti.type = kind
    ti.mode = mode
    ti.mtime = ENTRY_MTIME
    ti.size = len(data) if data is not None else 0
    return ti, data


def top_layer_plan(root: Path) -> tuple[list[str], list[tuple], list[str]]:
    """The small third layer: (rootfs paths to copy, synthetic entries, what it does, in words)."""
    copy: list[str] = []
    extra: list[tuple] = []
    what: list[str] = []

    def parents(rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p in copy or any(e[0].name == p for e in extra):
                continue
            if (root / p).is_dir() and not (root / p).is_symlink():
                copy.append(p)
            else:
                extra.append(_entry(p, mode=0o755, kind=tarfile.DIRTYPE))

    if (root / "etc/debian_version").is_file():
        parents("etc/debian_version")
        extra.append(_entry("etc/debian_version", b"12.99-socker-bench\n"))
        what.append("modify etc/debian_version")
    parents("etc/socker-bench")
    extra.append(_entry("etc/socker-bench", b"built by bench/pull.py\n"))
    what.append("add etc/socker-bench")
    parents("usr/local/bin/socker-bench-hello")
    extra.append(_entry("usr/local/bin/socker-bench-hello", b"#!/bin/sh\necho hello\n", mode=0o755))
    what.append("add usr/local/bin/socker-bench-hello")
    if (root / "etc/motd").exists():
        extra.append(_entry("etc/.wh.motd"))
        what.append("whiteout etc/motd")
    docs = (
        sorted(p.name for p in (root / "usr/share/doc").iterdir())
        if (root / "usr/share/doc").is_dir()
        else []
    )
    if docs:
        parents(f"usr/share/doc/{docs[0]}")
        extra.append(_entry(f"usr/share/doc/.wh.{docs[0]}"))
        what.append(f"whiteout directory usr/share/doc/{docs[0]} (from layer 2)")
    if (root / "etc/apt/apt.conf.d").is_dir():
        parents("etc/apt/apt.conf.d/x")
        extra.append(_entry("etc/apt/apt.conf.d/.wh..wh..opq"))
        extra.append(_entry("etc/apt/apt.conf.d/99socker-bench", b'APT::Install-Recommends "false";\n'))
        what.append("opaque etc/apt/apt.conf.d, one new file in it")
    return copy, extra, what


def build_image(root: Path, cache: Path, arch: str) -> tuple[Path, dict]:
    """The benchmark image as an OCI layout (cached by rootfs fingerprint). Returns (layout, info)."""
    oci, _ = support()
    key = rootfs_fingerprint(root)
    layout = cache / f"image-{key}"
    info_path = layout / "bench-info.json"
    if info_path.exists():
        return layout, json.loads(info_path.read_text())
    log(f"building the image from {root} (once; cached in {layout}) ...")
    t0 = time.perf_counter()
    tmp = cache / f"image-{key}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = tmp / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    base, share = [], ["usr"]
    for rel, _ in walk(root):
        (share if rel == "usr/share" or rel.startswith("usr/share/") else base).append(rel)
    top_copy, top_extra, top_what = top_layer_plan(root)
    with ThreadPoolExecutor(3) as pool:  # zlib and sha256 release the GIL
        jobs = [
            pool.submit(write_layer, blobs, root, base),
            pool.submit(write_layer, blobs, root, share),
            pool.submit(write_layer, blobs, root, top_copy, top_extra),
        ]
        layers = [j.result() for j in jobs]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Cmd": ["bash"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id, _ in layers]},
        "history": [
            {"created": created, "created_by": f"bench/pull.py: {what}"}
            for what in ("debootstrap minbase, all but usr/share", "usr/share", "; ".join(top_what))
        ],
    }
    config_desc = oci.write_blob(tmp, oci.json_bytes(config), oci.OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": config_desc,
        "layers": [desc for desc, _, _ in layers],
    }
    manifest_desc = oci.write_blob(tmp, oci.json_bytes(manifest), oci.OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [{**manifest_desc, "annotations": {oci.REF_NAME: IMAGE_TAG}}],
    }
    (tmp / "oci-layout").write_bytes(oci.json_bytes({"imageLayoutVersion": "1.0.0"}))
    (tmp / "index.json").write_bytes(oci.json_bytes(index))
    info = {
        "rootfs": str(root),
        "manifest_digest": manifest_desc["digest"],
        "layers": [
            {"digest": d["digest"], "size": d["size"], "diff_id": diff_id, "entries": n}
            for d, diff_id, n in layers
        ],
        "top_layer": top_what,
    }
    (tmp / "bench-info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(layout, ignore_errors=True)
    os.rename(tmp, layout)
    log(f"  built in {time.perf_counter() - t0:.1f} s")
    return layout, info


# ---------------------------------------------------------------------------------------------
# Checks


def compare_trees(name: str, tree: Path, reference: Path, *, full: bool) -> bool:
    """Print counts and sizes of ``tree`` next to ``reference``; with ``full`` also per-path
    differences (type, size, mode, owner, hard links, symlink target). Returns True when they agree."""
    a, b = tree_summary(tree), tree_summary(reference)
    (na, sa), (nb, sb) = tree_totals(a), tree_totals(b)
    ok = na == nb and sa == sb
    diffs: list[str] = []
    if full:
        diffs = tree_diffs(a, b, f"missing in {name}", f"extra in {name}")
        ok = ok and not diffs
    print(
        f"check {name}: {na} entries, {sa} bytes in files; umoci: {nb} entries, {sb} bytes: "
        + ("OK" if ok else "MISMATCH")
    )
    if not ok:
        print("!" * 100)
        print(
            f"!!! MISMATCH between {name} ({tree}) and umoci ({reference}): "
            f"{na - nb:+d} entries, {sa - sb:+d} bytes, {len(diffs)} paths differ"
        )
        for line in diffs[:25]:
            print(line)
        if len(diffs) > 25:
            print(f"  ... and {len(diffs) - 25} more")
        print("!" * 100)
    return ok


# ---------------------------------------------------------------------------------------------
# udocker


def ensure_udocker(args) -> tuple[list[str] | None, str]:
    """The udocker command (from its own venv under the cache), or None and why not."""
    if args.udocker:
        return [args.udocker], "given with --udocker"
    if not shutil.which("curl"):
        try:
            import pycurl  # noqa: F401
        except ImportError:
            return None, "udocker needs curl or pycurl to download, neither is installed"
    venv = args.cache / "udocker-venv"
    exe = venv / "bin" / "udocker"
    if not exe.exists():
        log(f"installing udocker from PyPI into {venv} (once) ...")
        shutil.rmtree(venv, ignore_errors=True)
        try:
            run([sys.executable, "-m", "venv", str(venv)], timeout=300)
            run([str(venv / "bin" / "pip"), "install", "-q", "udocker"], timeout=600)
        except Failed as e:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"could not install udocker into {venv}: {str(e).splitlines()[0]}"
    return [str(exe), "--allow-root"] if os.geteuid() == 0 else [str(exe)], ""


def udocker_env(udocker_dir: Path) -> dict:
    # UDOCKER_TARBALL empty: never download the engines tarball (pull and create need none of it)
    return {**os.environ, "UDOCKER_DIR": str(udocker_dir), "UDOCKER_TARBALL": "", "UDOCKER_LOGLEVEL": "2"}


# ---------------------------------------------------------------------------------------------
# The benchmark


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/pull.py",
        description=(
            "Time `socker pull` of a Debian minbase image (3 gzip layers, ~200 MB unpacked) from a "
            "local docker-registry, cold and warm, next to `skopeo copy` + `umoci unpack` and "
            "`udocker pull` + `udocker create`; print medians, ratios and the goal lines, and check "
            "socker's tree against umoci's. Needs root (ownership, page-cache drops), "
            "docker-registry, skopeo, umoci; debootstrap only if no rootfs is cached."
        ),
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="keeps the debootstrap rootfs, the built image and udocker's venv between runs "
        "(default: %(default)s; a rootfs already in CACHE/rootfs is reused)",
    )
    p.add_argument(
        "--rootfs", help="use this directory as the image's root filesystem instead of debootstrap's"
    )
    p.add_argument("--mirror", help="Debian mirror for debootstrap (default: read from /etc/apt sources)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per measurement; the median is reported (default: %(default)s)",
    )
    p.add_argument(
        "--tools",
        default="socker,umoci,udocker",
        help="comma-separated subset of socker,umoci,udocker to measure (default: all)",
    )
    p.add_argument("--udocker", help="udocker executable to use instead of installing one into the cache")
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="do not drop the page cache before cold and re-extract runs",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run one cold socker pull under cProfile and print where its time goes",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="where registry storage and pulled trees go (default: a temp dir under --cache)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work dir (trees, registry storage) at the end"
    )
    args = p.parse_args(argv)
    tools = set(parse_tools(p, args, ("socker", "umoci", "udocker")))
    if os.geteuid() != 0:
        log("warning: not root: ownership is not kept, page cache is not dropped, umoci runs --rootless")

    args.cache = args.cache.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    oci, registry = support()
    rootfs = ensure_rootfs(args)
    arch = oci.parse_platform(oci.host_platform())["architecture"]
    layout, info = build_image(rootfs, args.cache, arch)

    udocker, udocker_skip = (None, "not asked for (--tools)")
    if "udocker" in tools:
        udocker, udocker_skip = ensure_udocker(args)

    errors: list[str] = []
    with work_dir(args.workdir, "run-", args.cache, args.keep) as work:
        reg = None
        try:
            reg = registry.start_registry(work / "registry")
            t0 = time.perf_counter()
            reg.push_layout(layout, IMAGE_TAG, IMAGE_REPO)
            ref = f"{reg.host}/{IMAGE_REPO}:{IMAGE_TAG}"
            compressed = sum(lay["size"] for lay in info["layers"])
            print(f"image: {ref} {info['manifest_digest'][:19]} from {info['rootfs']}")
            print(
                "  layers: "
                + "; ".join(
                    f"{lay['entries']} entries, {lay['size'] / 1e6:.1f} MB gz" for lay in info["layers"]
                )
                + f" (total {compressed / 1e6:.1f} MB); pushed in {time.perf_counter() - t0:.1f} s"
            )
            print(f"  top layer: {'; '.join(info['top_layer'])}")
            ok = measure(args, tools, ref, work, udocker, udocker_skip, errors)
        finally:
            if reg is not None:
                reg.stop()
    print_errors(errors)
    return 0 if ok and not errors else 1


def measure(
    args, tools: set[str], ref: str, work: Path, udocker, udocker_skip: str, errors: list[str]
) -> bool:
    n = args.repeat
    sock = socker_cmd()
    s_cold = Measure("socker pull (cold)")
    s_warm = Measure("socker pull (warm, up to date)")
    s_force = Measure("socker pull --force (blobs cached)")
    u_cold = Measure("skopeo copy + umoci unpack (cold)")
    u_skopeo = Measure("  of which skopeo copy")
    u_umoci = Measure("  of which umoci unpack")
    u_warm = Measure("umoci unpack alone (layout cached)")
    d_cold = Measure("udocker pull + create (cold)")
    d_pull = Measure("  of which udocker pull")
    d_create = Measure("  of which udocker create")
    d_warm = Measure("udocker create alone (layers cached)")
    socker_tree = umoci_tree = udocker_tree = None
    umoci_layout = udocker_dir = socker_home = None
    cold_env = {"cwd": work}
    umoci_flags = umoci_unpack_flags()

    def fail(m: Measure, e: Exception) -> None:
        if m.error is None:
            m.error = str(e).splitlines()[0][:200]
            errors.append(f"{m.name}: {e}")
        log(f"  {m.name}: FAILED: {str(e).splitlines()[0]}")

    def cold() -> None:
        if not args.no_drop_caches:
            drop_caches()

    if "udocker" in tools and udocker is None:
        d_cold.note = f"skipped ({udocker_skip})"
        print(f"udocker: skipped ({udocker_skip})")

    for i in range(n):
        log(f"cold round {i + 1}/{n} ...")
        if "socker" in tools and s_cold.error is None:
            home = work / f"socker-{i}"
            cold()
            try:
                t, out = run([*sock, "pull", "-q", ref], env=socker_env(home), **cold_env)
                s_cold.times.append(t)
                log(f"  socker pull: {t:.2f} s")
                printed = Path(out.strip().splitlines()[-1]) if out.strip() else None
                if printed is None or not printed.is_dir():
                    raise Failed(f"socker pull -q printed {out!r}, which is not a directory")
                if socker_home is None:
                    socker_home, socker_tree = home, printed
            except Failed as e:
                fail(s_cold, e)
            if home != socker_home:
                shutil.rmtree(home, ignore_errors=True)
        if "umoci" in tools and u_cold.error is None:
            oci_dir, bundle = work / f"oci-{i}", work / f"bundle-{i}"
            cold()
            try:
                t1, _ = run(
                    skopeo(
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        f"docker://{ref}",
                        f"oci:{oci_dir}:{IMAGE_TAG}",
                    ),
                    **cold_env,
                )
                t2, _ = run(
                    ["umoci", "unpack", *umoci_flags, "--image", f"{oci_dir}:{IMAGE_TAG}", str(bundle)],
                    **cold_env,
                )
                u_skopeo.times.append(t1)
                u_umoci.times.append(t2)
                u_cold.times.append(t1 + t2)
                log(f"  skopeo copy {t1:.2f} s + umoci unpack {t2:.2f} s")
                if umoci_tree is None:
                    umoci_tree, umoci_layout = bundle / "rootfs", oci_dir
            except Failed as e:
                fail(u_cold, e)
            if umoci_layout != oci_dir:
                shutil.rmtree(oci_dir, ignore_errors=True)
                shutil.rmtree(bundle, ignore_errors=True)
        if udocker is not None and d_cold.error is None:
            udir = work / f"udocker-{i}"
            env = udocker_env(udir)
            registry_url = "http://" + ref.split("/", 1)[0]
            repo_tag = ref.split("/", 1)[1]
            cold()
            try:
                t1, _ = run([*udocker, "pull", f"--registry={registry_url}", repo_tag], env=env, **cold_env)
                t2, _ = run([*udocker, "create", "--name=bench", repo_tag], env=env, **cold_env)
                d_pull.times.append(t1)
                d_create.times.append(t2)
                d_cold.times.append(t1 + t2)
                log(f"  udocker pull {t1:.2f} s + create {t2:.2f} s")
                if udocker_dir is None:
                    udocker_dir = udir
                    roots = list((udir / "containers").glob("*/ROOT"))
                    udocker_tree = roots[0] if roots else None
            except Failed as e:
                fail(d_cold, e)
            if udocker_dir != udir:
                shutil.rmtree(udir, ignore_errors=True)

    # Warm: everything is on disk already. The up-to-date check runs with warm caches; the
    # re-extract runs drop the page cache first like the cold ones (on a VM, writing a tree
    # while the page cache is full of the previous ones is slower and much noisier).
    log("warm runs ...")
    for i in range(n):
        if socker_home is not None:
            try:
                t, _ = run([*sock, "pull", "-q", ref], env=socker_env(socker_home), **cold_env)
                s_warm.times.append(t)
            except Failed as e:
                fail(s_warm, e)
            cold()
            try:
                t, _ = run([*sock, "pull", "-q", "--force", ref], env=socker_env(socker_home), **cold_env)
                s_force.times.append(t)
            except Failed as e:
                fail(s_force, e)
        if umoci_layout is not None:
            bundle = work / f"bundle-warm-{i}"
            cold()
            try:
                t, _ = run(
                    ["umoci", "unpack", *umoci_flags, "--image", f"{umoci_layout}:{IMAGE_TAG}", str(bundle)],
                    **cold_env,
                )
                u_warm.times.append(t)
            except Failed as e:
                fail(u_warm, e)
            shutil.rmtree(bundle, ignore_errors=True)
        if udocker_dir is not None:
            cold()
            try:
                t, out = run(
                    [*udocker, "create", ref.split("/", 1)[1]], env=udocker_env(udocker_dir), **cold_env
                )
                d_warm.times.append(t)
                container = out.strip().splitlines()[-1] if out.strip() else ""
                if container and "/" not in container:
                    shutil.rmtree(udocker_dir / "containers" / container, ignore_errors=True)
            except Failed as e:
                fail(d_warm, e)
    log("  done")

    # -- the table
    print()
    if not args.no_drop_caches:
        print(f"page cache dropped before cold and re-extract runs: {drop_status()}")
    print(f"runs per measurement: {n} (median shown); socker/peer: socker cold (cached rows: --force) / peer")
    print(machine())
    print()
    table_header(36, 80)
    for m in (s_cold, s_warm, s_force):
        table_row(m, 36)
    for m, to in (
        (u_cold, s_cold),
        (u_skopeo, None),
        (u_umoci, None),
        (u_warm, s_force),
        (d_cold, s_cold),
        (d_pull, None),
        (d_create, None),
        (d_warm, s_force),
    ):
        table_row(m, 36, to)
    print()

    if s_cold.median is not None and u_cold.median is not None:
        r = s_cold.median / u_cold.median
        print(f"goal: socker cold <= 0.5x skopeo+umoci: {r:.2f} {'PASS' if r <= 0.5 else 'FAIL'}")
    else:
        print("goal: socker cold <= 0.5x skopeo+umoci: n/a (a measurement failed or was skipped)")
    warm = []
    if s_warm.median is not None:
        warm.append(f"socker up to date {s_warm.median:.2f} s")
    if s_force.median is not None:
        part = f"socker --force {s_force.median:.2f} s"
        if u_warm.median:
            part += f" ({s_force.median / u_warm.median:.2f}x umoci unpack alone)"
        if u_cold.median:
            part += f" ({s_force.median / u_cold.median:.2f}x skopeo+umoci cold)"
        warm.append(part)
    print("warm: " + ("; ".join(warm) if warm else "n/a"))

    # -- correctness, on the trees of the first cold runs
    ok = True
    print()
    if socker_tree is not None and umoci_tree is not None:
        ok = compare_trees("socker", socker_tree, umoci_tree, full=True)
    elif "socker" in tools and "umoci" in tools:
        print("check socker vs umoci: not done (a pull failed)")
    if udocker_tree is not None and umoci_tree is not None:
        # udocker extracts with --no-same-owner/--no-same-permissions: compare counts and sizes only
        compare_trees("udocker", udocker_tree, umoci_tree, full=False)

    if args.profile and "socker" in tools and s_cold.error is None:
        profile_socker(sock, ref, work)
    return ok and not any(m.error for m in (s_cold, s_warm, s_force))


def profile_socker(sock: list[str], ref: str, work: Path) -> None:
    """One more cold pull under cProfile (main thread only: downloads run in worker threads)."""
    import pstats

    home, out = work / "socker-profile", work / "socker.prof"
    if len(sock) != 1:
        print("profile: needs the installed `socker` script; skipped")
        return
    drop_caches()
    try:
        t, _ = run(
            [sys.executable, "-m", "cProfile", "-o", str(out), sock[0], "pull", "-q", ref],
            env=socker_env(home),
            cwd=work,
        )
    except Failed as e:
        print(f"profile: socker pull failed under cProfile: {e}")
        return
    print()
    print(f"profile: cold socker pull under cProfile took {t:.2f} s (main thread; downloads run in threads)")
    print_profile(pstats.Stats(str(out), stream=sys.stdout), 25, 20)
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
