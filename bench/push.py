#!/usr/bin/env python3
"""Benchmark: how fast ``socker push`` packs and uploads a flat image directory, next to peers.

One run does everything (the sibling of ``bench/pull.py``; the helpers they share are in
``bench/common.py``):

1. the same Debian bookworm minbase root filesystem as ``bench/pull.py`` (cached under
   ``--cache``, made with debootstrap once), copied once per run into a clean source tree
   without the contents of ``dev/``, ``proc/`` and ``sys/`` (as in docker's images); every tool
   reads that tree or a ``cp -a`` copy of it;
2. ``--repeat`` rounds; each round starts a fresh ``docker-registry`` on a free loopback port
   (storage in the run's work dir, deleted with the round), so no blob is ever "already there"
   and skopeo's blob-info cache (which remembers per registry host where a blob was seen, and
   then mounts it from there) has nothing to reuse. In each round, wall clock, the page cache
   dropped before every cold run when the kernel lets us:

   - ``socker push -q HOST/bench/debian-N:1`` cold: a fresh ``SOCKER_HOME`` made with
     ``socker new`` + ``cp -a SRC/. IMAGE_DIR/`` (untimed), so there is no packed layer in the
     metadata, no blob in the blob cache and no "pushed to" record to mount from;
   - ``socker push`` warm: the same again right after, same home, same repository (the packed
     layer is reused, every blob exists);
   - ``umoci repack`` + ``skopeo copy oci:L:t docker://HOST/bench/peer-N:1``, from a bundle
     unpacked from an empty image (``umoci init``/``new``/``unpack``) and filled with
     ``cp -a`` (untimed);
   - ``tar --sort=name --numeric-owner -C SRC -cf - . | gzip -6`` (hashing the tar stream and
     the gzip file with ``sha256sum``), a Docker schema2 config and manifest, a skopeo ``dir:``
     directory, ``skopeo copy dir:D docker://HOST/bench/tar-N:1``; the same with ``pigz -6``;
3. a correctness check (once): what socker pushed is copied back with ``skopeo copy`` and
   unpacked with ``umoci unpack`` and compared with the source tree (paths, types, sizes,
   modes, owners, hard links, symlink targets); a mismatch is printed loudly;
4. the compressed layer sizes of socker and the peers (a fast compressor that makes a layer
   twice as big would be a fake win), and ``--profile``: one more cold socker push under
   cProfile, with where its time goes.

Run as root from the repository: ``python bench/push.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
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
    socker_env,
    socker_next_to_python,
    support,
    table_header,
    table_row,
    tree_diffs,
    tree_summary,
    tree_totals,
    umoci_unpack_flags,
    work_dir,
)
from bench.common import socker_cmd as socker_on_path  # noqa: E402

TOOLS = ("socker", "umoci", "tar", "pigz")
GZIP_LEVEL = 6
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
UMOCI_TAG = "t"


# ---------------------------------------------------------------------------------------------
# Inputs


def make_source(rootfs: Path, dest: Path) -> Path:
    """``cp -a ROOTFS/. DEST/``, then empty ``dev``, ``proc`` and ``sys`` (their mtimes kept)."""
    dest.mkdir(parents=True)
    run(["cp", "-a", "--", f"{rootfs}/.", str(dest)])
    for name in SKIPPED_DIRS:
        d = dest / name
        if d.is_dir() and not d.is_symlink():
            st = os.lstat(d)
            for child in list(d.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dest


def socker_cmd() -> list[str]:
    """The console script next to this interpreter (not a pyenv shim, which adds ~60 ms a call)."""
    exe = socker_next_to_python()
    return [str(exe)] if exe else socker_on_path()


# ---------------------------------------------------------------------------------------------
# The tools, one cold run each


def socker_prepare(sock: list[str], home: Path, ref: str, src: Path) -> Path:
    """A fresh SOCKER_HOME holding ``ref`` = a copy of ``src`` (untimed). Returns the image dir."""
    _, out = run([*sock, "new", ref], env=socker_env(home))
    image_dir = Path(out.strip().splitlines()[-1])
    if not image_dir.is_dir():
        raise Failed(f"socker new printed {out!r}, which is not a directory")
    run(["cp", "-a", "--", f"{src}/.", str(image_dir)])
    return image_dir


def socker_push(sock: list[str], home: Path, ref: str) -> tuple[float, str]:
    t, out = run([*sock, "push", "-q", ref], env=socker_env(home))
    digest = out.strip().splitlines()[-1] if out.strip() else ""
    if not digest.startswith("sha256:"):
        raise Failed(f"socker push -q printed {out!r}, not a digest")
    return t, digest


def umoci_prepare(base: Path, src: Path, umoci_flags: list[str]) -> tuple[Path, Path]:
    """An OCI layout with an empty image, unpacked to a bundle whose rootfs is a copy of ``src``."""
    layout, bundle = base / "layout", base / "bundle"
    base.mkdir(parents=True)
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", f"{layout}:{UMOCI_TAG}"])
    run(["umoci", "unpack", *umoci_flags, "--image", f"{layout}:{UMOCI_TAG}", str(bundle)])
    run(["cp", "-a", "--", f"{src}/.", str(bundle / "rootfs")])
    return layout, bundle


def umoci_push(layout: Path, bundle: Path, dest: str) -> tuple[float, float]:
    t1, _ = run(["umoci", "repack", "--image", f"{layout}:{UMOCI_TAG}", str(bundle)])
    t2, _ = run(
        skopeo(
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--dest-tls-verify=false",
            f"oci:{layout}:{UMOCI_TAG}",
            f"docker://{dest}",
        )
    )
    return t1, t2


def umoci_layer_size(layout: Path) -> int:
    oci, _ = support()
    index = json.loads((layout / "index.json").read_text())
    for desc in index["manifests"]:
        if (desc.get("annotations") or {}).get(oci.REF_NAME) == UMOCI_TAG:
            manifest = json.loads(oci.read_blob(layout, desc["digest"]))
            return sum(lay["size"] for lay in manifest["layers"])
    raise Failed(f"no tag {UMOCI_TAG} in {layout}/index.json")


def tar_push(src: Path, base: Path, dest: str, compressor: str, arch: str) -> tuple[float, float, int]:
    """``tar | COMPRESSOR`` into a skopeo ``dir:`` directory, then ``skopeo copy`` it to ``dest``.

    Returns (seconds for tar + compression + both sha256 + the JSON, seconds for skopeo, layer size).
    The uncompressed stream is hashed (the diff_id) through a FIFO next to the compressor."""
    d = base / "dir"
    d.mkdir(parents=True)
    layer, fifo = base / "layer.tmp", base / "tar.fifo"
    os.mkfifo(fifo)
    script = (
        "set -euo pipefail\n"
        f'sha256sum < "{fifo}" > "{base}/diffid" &\n'
        f'tar --sort=name --numeric-owner -C "{src}" -cf - . | tee "{fifo}" | {compressor} > "{layer}"\n'
        "wait $!\n"
        f'sha256sum "{layer}" > "{base}/digest"\n'
    )
    t1, _ = run(["bash", "-c", script])
    t0 = time.perf_counter()
    diff_id = "sha256:" + (base / "diffid").read_text().split()[0]
    layer_hex = (base / "digest").read_text().split()[0]
    size = layer.stat().st_size
    os.replace(layer, d / layer_hex)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"bench/push.py: tar | {compressor}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    (d / config_hex).write_bytes(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:" + config_hex, "size": len(config_bytes)},
        "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": "sha256:" + layer_hex, "size": size}],
    }
    (d / "manifest.json").write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    (d / "version").write_text("Directory Transport Version: 1.1\n")
    t1 += time.perf_counter() - t0
    t2, _ = run(
        skopeo(
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"dir:{d}",
            f"docker://{dest}",
        )
    )
    return t1, t2, size


# ---------------------------------------------------------------------------------------------
# Checks


def pushed_layer(reg, ref: str) -> tuple[str, int]:
    """(digest, size) of the one layer the registry holds for ``ref``."""
    manifest = json.loads(reg.inspect_raw(ref))
    if len(manifest["layers"]) != 1:
        raise Failed(f"{ref} has {len(manifest['layers'])} layers, expected one")
    return manifest["layers"][0]["digest"], manifest["layers"][0]["size"]


def verify_pushed(ref: str, src: Path, base: Path, umoci_flags: list[str]) -> tuple[bool, list[str]]:
    """Copy ``ref`` back with skopeo, unpack it with umoci, compare with ``src``.

    Returns (ok, the lines to print); a mismatch is framed in ``!`` to be seen."""
    layout, bundle = base / "layout", base / "bundle"
    loud = "!" * 100
    base.mkdir(parents=True, exist_ok=True)
    try:
        run(
            skopeo(
                "copy",
                "--quiet",
                "--retry-times",
                "0",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"oci:{layout}:v",
            )
        )
        run(["umoci", "unpack", *umoci_flags, "--image", f"{layout}:v", str(bundle)])
    except Failed as e:
        shutil.rmtree(base, ignore_errors=True)
        return False, [loud, f"!!! could not pull back what socker pushed: {e}", loud]
    a, b = tree_summary(bundle / "rootfs"), tree_summary(src)
    shutil.rmtree(base, ignore_errors=True)
    (na, sa), (nb, sb) = tree_totals(a), tree_totals(b)
    diffs = tree_diffs(
        a, b, "missing from the pushed image", "extra in the pushed image", " (pushed vs source)"
    )
    ok = na == nb and sa == sb and not diffs
    lines = [
        f"check socker push (pulled back with skopeo + umoci unpack, every path's type, size, mode, "
        f"owner, hard links, symlink target): {na} entries, {sa} bytes in files; "
        f"source: {nb} entries, {sb} bytes: " + ("OK" if ok else "MISMATCH")
    ]
    if not ok:
        lines += [
            loud,
            f"!!! MISMATCH between what socker pushed ({ref}) and the source ({src}): "
            f"{na - nb:+d} entries, {sa - sb:+d} bytes, {len(diffs)} paths differ",
            *diffs[:25],
            *([f"  ... and {len(diffs) - 25} more"] if len(diffs) > 25 else []),
            loud,
        ]
    return ok, lines


# ---------------------------------------------------------------------------------------------
# The benchmark


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/push.py",
        description=(
            "Time `socker push` of a Debian minbase image directory (~200 MB, ~6,700 files) to a "
            "local docker-registry, cold (fresh SOCKER_HOME, fresh registry) and warm (pushed "
            "again), next to `umoci repack` + `skopeo copy` and `tar | gzip -6` (and `| pigz -6`) "
            "+ `skopeo copy dir:`; print medians, ratios, the goal line and the layer sizes, and "
            "check what socker pushed by pulling it back with skopeo + umoci. Needs root "
            "(ownership, page-cache drops), docker-registry, skopeo, umoci; pigz for its row; "
            "debootstrap only if no rootfs is cached."
        ),
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where bench/pull.py keeps the debootstrap rootfs (CACHE/rootfs, reused; made "
        "once if missing) and where the temp work dir goes (default: %(default)s)",
    )
    p.add_argument("--rootfs", help="push this directory instead of the debootstrap rootfs")
    p.add_argument("--mirror", help="Debian mirror for debootstrap (default: read from /etc/apt sources)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds (runs per measurement); the median is reported (default: %(default)s)",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="comma-separated subset of socker (cold and warm push), umoci (umoci repack + "
        "skopeo copy), tar (tar | gzip -6 + skopeo copy dir:), pigz (tar | pigz -6 + skopeo "
        "copy dir:) (default: all)",
    )
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="do not drop the page cache before cold runs (default: drop it, when the kernel allows, "
        "so every tool reads its tree from disk)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run one cold socker push under cProfile and print where its time goes",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="where the source copy, homes, layouts and registry storage go (default: a temp dir "
        "under --cache)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    args = p.parse_args(argv)
    tools = set(parse_tools(p, args, TOOLS))
    if os.geteuid() != 0:
        log("warning: not root: ownership is not kept, page cache is not dropped, umoci runs --rootless")
    if "pigz" in tools and not shutil.which("pigz"):
        log("pigz is not installed (apt-get install -y pigz): its row is skipped")

    args.cache = args.cache.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    oci, _ = support()
    rootfs = ensure_rootfs(args)
    arch = oci.parse_platform(oci.host_platform())["architecture"]

    errors: list[str] = []
    with work_dir(args.workdir, "push-run-", args.cache, args.keep) as work:
        t0 = time.perf_counter()
        src = make_source(rootfs, work / "src")
        count, total = tree_totals(tree_summary(src))
        print(
            f"source: {rootfs} without the contents of {', '.join(SKIPPED_DIRS)}: {count} entries, "
            f"{total / 1e6:.1f} MB in files (copied in {time.perf_counter() - t0:.1f} s)"
        )
        ok = measure(args, tools, src, work, arch, errors)
    print_errors(errors)
    return 0 if ok and not errors else 1


def measure(args, tools: set[str], src: Path, work: Path, arch: str, errors: list[str]) -> bool:
    _, registry = support()
    n = args.repeat
    sock = socker_cmd()
    umoci_flags = umoci_unpack_flags()
    s_cold = Measure("socker push (cold)")
    s_warm = Measure("socker push (warm: packed, blobs there)")
    u_all = Measure("umoci repack + skopeo copy")
    u_repack = Measure("  of which umoci repack")
    u_copy = Measure("  of which skopeo copy")
    g_all = Measure(f"tar | gzip -{GZIP_LEVEL} + skopeo copy dir:")
    g_pack = Measure("  of which tar | gzip + sha256")
    g_copy = Measure("  of which skopeo copy")
    z_all = Measure(f"tar | pigz -{GZIP_LEVEL} + skopeo copy dir:")
    z_pack = Measure("  of which tar | pigz + sha256")
    z_copy = Measure("  of which skopeo copy")
    sizes: dict[str, int] = {}
    # the same tree must pack to the same layer; manifests differ by ref (the config's history names it)
    layers: list[str] = []
    verified: tuple[bool, list[str]] | None = None

    def fail(m: Measure, e: Exception) -> None:
        if m.error is None:
            m.error = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            errors.append(f"{m.name}: {e}")
        log(f"  {m.name}: FAILED: {m.error}")

    def cold() -> None:
        if args.no_drop_caches:
            os.sync()
        else:
            drop_caches()

    if "pigz" in tools and not shutil.which("pigz"):
        z_all.note = "skipped (pigz is not installed: apt-get install -y pigz)"

    for i in range(n):
        log(f"round {i + 1}/{n} (fresh registry) ...")
        reg = registry.start_registry(work / f"registry-{i}")
        try:
            if "socker" in tools and s_cold.error is None:
                home = work / f"home-{i}"
                ref = f"{reg.host}/bench/debian-{i}:1"
                try:
                    socker_prepare(sock, home, ref, src)
                    cold()
                    t, digest = socker_push(sock, home, ref)
                    s_cold.times.append(t)
                    log(f"  socker push cold: {t:.2f} s ({digest[:19]})")
                except Failed as e:
                    fail(s_cold, e)
                if s_cold.error is None:
                    try:
                        t, again = socker_push(sock, home, ref)
                        s_warm.times.append(t)
                        log(f"  socker push warm: {t:.2f} s")
                        if again != digest:
                            raise Failed(f"pushing the same tree again gave {again}, first {digest}")
                    except Failed as e:
                        fail(s_warm, e)
                    try:
                        layer_digest, sizes["socker"] = pushed_layer(reg, ref)
                        layers.append(layer_digest)
                    except (RuntimeError, Failed) as e:
                        errors.append(f"reading socker's pushed manifest: {e}")
                    if verified is None:
                        verified = verify_pushed(ref, src, work / "verify", umoci_flags)
                shutil.rmtree(home, ignore_errors=True)
            if "umoci" in tools and u_all.error is None:
                base = work / f"umoci-{i}"
                try:
                    layout, bundle = umoci_prepare(base, src, umoci_flags)
                    cold()
                    t1, t2 = umoci_push(layout, bundle, f"{reg.host}/bench/peer-{i}:1")
                    u_repack.times.append(t1)
                    u_copy.times.append(t2)
                    u_all.times.append(t1 + t2)
                    sizes.setdefault("umoci", umoci_layer_size(layout))
                    log(f"  umoci repack {t1:.2f} s + skopeo copy {t2:.2f} s")
                except Failed as e:
                    fail(u_all, e)
                shutil.rmtree(base, ignore_errors=True)
            for name, compressor, m_all, m_pack, m_copy in (
                ("tar", f"gzip -{GZIP_LEVEL} -n", g_all, g_pack, g_copy),
                ("pigz", f"pigz -{GZIP_LEVEL} -n", z_all, z_pack, z_copy),
            ):
                if name not in tools or m_all.error is not None or m_all.note:
                    continue
                base = work / f"{name}-{i}"
                cold()
                try:
                    t1, t2, size = tar_push(src, base, f"{reg.host}/bench/{name}-{i}:1", compressor, arch)
                    m_pack.times.append(t1)
                    m_copy.times.append(t2)
                    m_all.times.append(t1 + t2)
                    sizes.setdefault(name, size)
                    log(f"  tar | {compressor}: {t1:.2f} s + skopeo copy {t2:.2f} s")
                except Failed as e:
                    fail(m_all, e)
                shutil.rmtree(base, ignore_errors=True)
        finally:
            reg.stop()
            shutil.rmtree(work / f"registry-{i}", ignore_errors=True)

    # -- the table
    print()
    if not args.no_drop_caches:
        print(f"page cache dropped before every cold run: {drop_status()}")
    print(
        f"runs per measurement: {n} (median shown), a fresh registry each round; "
        "socker/peer: socker cold / peer"
    )
    print(machine())
    print()
    table_header(40, 84)
    table_row(s_cold, 40)
    table_row(s_warm, 40)
    for m, to in (
        (u_all, s_cold),
        (u_repack, None),
        (u_copy, None),
        (g_all, s_cold),
        (g_pack, None),
        (g_copy, None),
        (z_all, s_cold),
        (z_pack, None),
        (z_copy, None),
    ):
        table_row(m, 40, to)
    print()

    peers = [(m.name, m.median) for m in (u_all, g_all, z_all) if m.median is not None]
    if s_cold.median is not None and peers:
        best_name, best = min(peers, key=lambda x: x[1])
        r = s_cold.median / best
        print(
            f"goal: socker push <= 0.5x peer: {r:.2f} vs the fastest peer ({best_name.strip()}, "
            f"{best:.2f} s) {'PASS' if r <= 0.5 else 'FAIL'}"
        )
    else:
        print("goal: socker push <= 0.5x peer: n/a (a measurement failed or was skipped)")
    if s_warm.median is not None and s_cold.median:
        print(
            f"warm: socker push of an unchanged tree {s_warm.median:.2f} s ({s_warm.median / s_cold.median:.2f}x cold)"
        )
    if len(layers) > 1:
        same = len(set(layers)) == 1
        print(
            f"deterministic: socker's {len(layers)} cold pushes (fresh homes) packed "
            + (f"the same layer {layers[0]}" if same else f"DIFFERENT layers: {', '.join(layers)}")
            + "; each warm push gave its cold push's manifest digest again"
            + ("" if s_warm.error is None else " (NOT: see the warm row)")
        )

    # -- sizes
    print()
    if sizes:
        print(
            "compressed layer size"
            + (" (socker/peer: socker's size / the peer's)" if "socker" in sizes else "")
        )
        for name in ("socker", "umoci", "tar", "pigz"):
            if name not in sizes:
                continue
            label = {
                "socker": "socker push",
                "umoci": "umoci repack",
                "tar": f"tar | gzip -{GZIP_LEVEL}",
                "pigz": f"tar | pigz -{GZIP_LEVEL}",
            }[name]
            ratio = f"{sizes['socker'] / sizes[name]:.3f}x" if "socker" in sizes and name != "socker" else ""
            print(f"  {label:24} {sizes[name] / 1e6:8.2f} MB {ratio:>8}")

    # -- correctness
    print()
    ok = True
    if verified is None:
        if "socker" in tools:
            print("check socker push: not done (the push failed)")
    else:
        ok = verified[0]
        for line in verified[1]:
            print(line)
    if len(set(layers)) > 1:
        print("!" * 100)
        print("!!! socker packed the same tree into different layers: the pack is not deterministic")
        print("!" * 100)
        ok = False

    if args.profile and "socker" in tools and s_cold.error is None:
        profile_socker(sock, src, work)
    return ok and s_cold.error is None and s_warm.error is None


def profile_socker(sock: list[str], src: Path, work: Path) -> None:
    """One more cold push (fresh home, fresh registry) under cProfile; print where time goes."""
    import pstats

    _, registry = support()
    home, out = work / "home-profile", work / "socker-push.prof"
    driver = work / "socker-main.py"
    driver.write_text("import sys\nfrom socker_lib.cli import main\nsys.argv[0] = 'socker'\nmain()\n")
    reg = registry.start_registry(work / "registry-profile")
    try:
        ref = f"{reg.host}/bench/profile:1"
        socker_prepare(sock, home, ref, src)
        drop_caches()
        t, _ = run(
            [sys.executable, "-m", "cProfile", "-o", str(out), str(driver), "push", "-q", ref],
            env=socker_env(home),
            cwd=work,
        )
    except Failed as e:
        print(f"profile: socker push failed under cProfile: {e}")
        return
    finally:
        reg.stop()
        shutil.rmtree(work / "registry-profile", ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(f"profile: cold socker push under cProfile took {t:.2f} s (main thread only)")
    stats = pstats.Stats(str(out), stream=sys.stdout)
    # the phases, by cumulative time of the functions that make them up
    phases = [
        ("import socker_lib.push (requests, ...)", "socker_lib/push.py", "<module>"),
        ("snapshot of the tree (store.snapshot)", "store.py", "snapshot"),
        ("pack one layer (pack.pack_layer)", "pack.py", "pack_layer"),
        ("upload blobs (registry/push.upload_blob)", "push.py", "upload_blob"),
        ("put the manifest", "push.py", "put_manifest"),
        ("push() as a whole", "socker_lib/push.py", "push"),
    ]
    total = max((v[3] for v in stats.stats.values()), default=0.0)
    print(f"where the time goes (cumulative, of {total:.2f} s in the profiled main thread):")
    for label, file_part, func in phases:
        cum = sum(
            v[3]
            for (file, _, name), v in stats.stats.items()
            if name == func and file.endswith(file_part) and "socker_lib" in file
        )
        calls = sum(
            v[1]
            for (file, _, name), v in stats.stats.items()
            if name == func and file.endswith(file_part) and "socker_lib" in file
        )
        print(f"  {label:50} {cum:7.2f} s  ({calls} calls)")
    main_cum = max(
        (v[3] for (file, _, name), v in stats.stats.items() if name == "main" and file.endswith("cli.py")),
        default=0.0,
    )
    print(f"  {'imports before cli.main (socker_lib.cli, invoke)':50} {total - main_cum:7.2f} s")
    print("  (pack_layer compresses on a thread pool: its main-thread time is reading files and waiting)")
    print_profile(stats, 25, 20)


if __name__ == "__main__":
    sys.exit(main())
