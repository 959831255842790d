"""``socker pull`` against real docker-registry processes, with umoci as the referee.

Every tree socker flattens is compared, file by file, with what ``skopeo copy`` +
``umoci unpack`` make of the same image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from socker_lib.errors import AuthError, DigestMismatchError, NotFoundError
from socker_lib.pull import pull
from socker_lib.settings import Settings
from tests.conftest import needs_root, needs_tool
from tests.support import oci
from tests.support.tree import diff_trees
from tests.support.umoci import skopeo_to_layout, umoci_unpack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def every_case_layers() -> list[list[oci.Entry]]:
    """Three layers exercising whiteouts, replacement, links, specials, xattrs and modes."""
    base = [
        *oci.busybox_entries(),
        oci.dir("data", mode=0o750, uid=1, gid=2),
        oci.file(
            "data/suid",
            b"#!/bin/sh\n",
            mode=0o4755,
            uid=1000,
            gid=1000,
            xattrs={"user.note": b"\xff\x00bin", "security.capability": oci.file_capability(10)},
        ),
        oci.file("data/sgid", b"g", mode=0o2711),
        oci.dir("data/sticky", mode=0o1777),
        oci.hardlink("data/suid-link", "data/suid"),
        oci.symlink("data/rel", "suid"),
        oci.symlink("data/abs", "/etc/passwd"),
        oci.hardlink("data/rel-hard", "data/rel"),  # a hardlink to a symlink
        oci.fifo("data/fifo", mode=0o600),
        oci.chardev("data/null", 1, 3),
        oci.blockdev("data/loop9", 7, 9),
        oci.file("data/" + "long-name-" * 12, b"pax path"),
        oci.file("data/ünïcødé-名前", b"utf8"),
        oci.file("data/mtime", b"m", mtime=1_234_567_890),
        oci.dir("gone-dir"),
        oci.file("gone-dir/x", b"x"),
        oci.file("gone", b"g"),
        oci.dir("opq"),
        oci.file("opq/lower", b"lower"),
        oci.dir("opq/sub"),
        oci.file("opq/sub/y", b"y"),
        oci.dir("to-file"),
        oci.file("to-file/child", b"c"),
        oci.file("to-dir", b"f"),
        oci.symlink("link-to-dir", "data"),
        oci.dir("dir-to-link"),
        oci.file("dir-to-link/z", b"z"),
    ]
    middle = [
        oci.whiteout("gone"),
        oci.whiteout("gone-dir"),
        oci.dir("opq"),
        oci.file("opq/upper", b"upper"),
        oci.opaque("opq"),  # after "upper": the same-layer rule keeps it
        oci.file("to-file", b"now a file"),
        oci.dir("to-dir"),
        oci.file("to-dir/inside", b"i"),
        oci.dir("link-to-dir"),
        oci.file("link-to-dir/real", b"r"),
        oci.symlink("dir-to-link", "data"),
        oci.file("data/suid", b"#!/bin/sh\necho v2\n", mode=0o4755, uid=1000, gid=1000),
        oci.dir("data", mode=0o755, uid=3, gid=4),  # attributes only
    ]
    top = [
        oci.file("gone", b"back again"),
        oci.whiteout("data/fifo"),
        oci.whiteout("data/rel"),  # removes the link, not its target
        oci.file("etc/motd", b"top\n"),
    ]
    return [base, middle, top]


def socker_pull(ref: str, home: Path, *args: str, env=None, check=True) -> subprocess.CompletedProcess:
    e = dict(os.environ, SOCKER_HOME=str(home), **(env or {}))
    proc = subprocess.run(["socker", "pull", *args, ref], capture_output=True, text=True, env=e, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"socker pull {ref} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def umoci_tree(ref: str, tmp: Path, platform: str | None = None, authfile=None) -> Path:
    layout = skopeo_to_layout(ref, tmp / "ref-layout", "t", platform=platform, authfile=authfile)
    return umoci_unpack(layout, "t", tmp / "ref-bundle")


def assert_like_umoci(image_dir: Path, umoci_rootfs: Path) -> None:
    # umoci stamps the rootfs directory itself with unpack time; compare everything inside
    diffs = diff_trees(image_dir, umoci_rootfs)
    assert not diffs, "socker's tree differs from umoci's:\n" + "\n".join(diffs[:40])


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


# -- correctness against the referee ------------------------------------------------------


@pytest.mark.parametrize(
    "compression, docker", [("gzip", False), ("zstd", False), ("gzip", True), ("none", False)]
)
def test_multilayer_image_matches_umoci(image_factory, home, tmp_path, compression, docker):
    needs_root()
    needs_tool("umoci")
    img = image_factory(
        every_case_layers(),
        compression=compression,
        docker=docker,
        config={"Cmd": ["/bin/sh"], "Env": ["A=1"]},
    )
    out = socker_pull(img.ref, home)
    path = Path(out.stdout.strip())
    assert path == home / "images" / img.registry.host / img.repo / img.tag
    assert_like_umoci(path, umoci_tree(img.ref, tmp_path))
    # spot checks that would fail even if the referee were wrong the same way
    assert (path / "opq/upper").exists() and not (path / "opq/lower").exists()
    assert (path / "to-file").read_bytes() == b"now a file" and (path / "to-dir/inside").exists()
    assert (path / "data/suid").stat().st_mode & 0o7777 == 0o4755
    assert os.getxattr(path / "data/suid-link", "security.capability", follow_symlinks=False)
    assert not (path / "data/rel").is_symlink() and (path / "data/rel-hard").is_symlink()
    assert sorted(os.listdir(path)) == sorted(os.listdir(umoci_tree_cache(tmp_path)))


def umoci_tree_cache(tmp_path: Path) -> Path:
    return tmp_path / "ref-bundle" / "rootfs"


def test_index_with_two_platforms(image_factory, home, tmp_path):
    needs_root()
    needs_tool("umoci")
    img = image_factory([oci.busybox_entries()], platforms=["linux/amd64", "linux/arm64/v8"])
    other = "linux/arm64" if Settings().platform is None and os.uname().machine == "x86_64" else "linux/amd64"
    out = socker_pull(img.ref, home, "--platform", other)
    path = Path(out.stdout.strip())
    assert (path / "etc/platform").read_text().startswith(other)
    assert_like_umoci(path, umoci_tree(img.ref, tmp_path, platform=other))
    meta = json.loads((home / "meta" / img.registry.host / img.repo / img.tag / "image.json").read_text())
    assert meta["indexDigest"] == img.digest and meta["platform"].startswith(other)
    assert (
        meta["digest"]
        == img.info["platforms"][next(p for p in img.info["platforms"] if p.startswith(other))][
            "manifest_digest"
        ]
    )


def test_missing_platform_lists_what_exists(image_factory, home):
    img = image_factory([oci.busybox_entries()], platforms=["linux/amd64", "linux/arm64/v8"])
    proc = socker_pull(img.ref, home, "--platform", "linux/s390x", check=False)
    assert proc.returncode != 0
    assert "linux/s390x" in proc.stderr and "linux/arm64/v8" in proc.stderr and "unknown" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pull_by_digest_has_its_own_directory(image_factory, home):
    img = image_factory([oci.busybox_entries()])
    out = socker_pull(img.digest_ref, home)
    assert Path(out.stdout.strip()) == home / "images" / img.registry.host / img.repo / f"@{img.digest}"
    assert (Path(out.stdout.strip()) / "bin/busybox").exists()


# -- caching -----------------------------------------------------------------------------


def test_second_pull_downloads_nothing_and_shared_layers_are_shared(
    proxy_factory, registry, image_factory, home
):
    base = oci.busybox_entries()
    a = image_factory([base, [oci.file("a", b"a")]])
    b = image_factory([base, [oci.file("b", b"b")]])
    proxy = proxy_factory(registry)
    ref_a = f"{proxy.host}/{a.repo}:{a.tag}"
    ref_b = f"{proxy.host}/{b.repo}:{b.tag}"
    socker_pull(ref_a, home)
    first = [r.path for r in proxy.matching("GET", "/blobs/")]
    assert len(first) == 3  # config + two layers
    proxy.reset()
    out = socker_pull(ref_a, home)
    assert "up to date" in out.stderr
    assert proxy.matching("GET", "/blobs/sha256") == [] or all(
        a.info["config_digest"] in r.path for r in proxy.matching("GET", "/blobs/")
    )
    proxy.reset()
    socker_pull(ref_b, home, "--force")
    layer_gets = [r.path for r in proxy.matching("GET", "/blobs/") if b.info["config_digest"] not in r.path]
    assert len(layer_gets) == 1 and b.info["layers"][1] in layer_gets[0]


def test_force_repull_restores_local_edits(image_factory, home):
    img = image_factory([oci.busybox_entries()])
    path = Path(socker_pull(img.ref, home).stdout.strip())
    (path / "etc/passwd").write_text("edited")
    out = socker_pull(img.ref, home)
    assert "up to date" not in out.stderr
    assert (path / "etc/passwd").read_text() == oci.PASSWD


# -- auth --------------------------------------------------------------------------------


def test_htpasswd_registry_with_env_credentials(auth_registry, image_factory, home):
    img = image_factory([oci.busybox_entries()], registry=auth_registry)
    env = {
        "DOCKER_USERNAME": auth_registry.username,
        "DOCKER_PASSWORD": auth_registry.password,
        "DOCKER_CONFIG": str(home / "nodocker"),
    }
    out = socker_pull(img.ref, home, env=env)
    assert (Path(out.stdout.strip()) / "bin/busybox").exists()
    assert auth_registry.password not in out.stdout + out.stderr


def test_htpasswd_registry_with_docker_config(auth_registry, image_factory, home, tmp_path):
    img = image_factory([oci.busybox_entries()], registry=auth_registry)
    cfg = auth_registry.write_docker_config(tmp_path / "dockercfg")
    env = {"DOCKER_CONFIG": str(Path(cfg).parent), "DOCKER_USERNAME": "", "DOCKER_PASSWORD": ""}
    socker_pull(img.ref, home, env=env)


def test_wrong_password_is_one_clear_line(auth_registry, image_factory, home):
    img = image_factory([oci.busybox_entries()], registry=auth_registry)
    env = {
        "DOCKER_USERNAME": auth_registry.username,
        "DOCKER_PASSWORD": "not-the-password",
        "DOCKER_CONFIG": str(home / "nodocker"),
    }
    proc = socker_pull(img.ref, home, env=env, check=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and "authentication" in proc.stderr
    assert "not-the-password" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (home / "images" / auth_registry.host).exists()


def test_token_registry_anonymous_and_cached_tokens(
    token_registry, token_server, image_factory, home, monkeypatch
):
    img = image_factory([oci.busybox_entries(), [oci.file("x", b"x")]], registry=token_registry)
    token_server.reset()
    monkeypatch.delenv("DOCKER_USERNAME", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(home / "nodocker"))
    result = pull(img.ref, Settings(home=home))
    assert (result.path / "x").read_text() == "x"
    scopes = [s for r in token_server.requests for s in r.scopes]
    assert f"repository:{img.repo}:pull" in scopes
    assert len(token_server.requests) == 1  # one token serves the manifest, config and both layers
    assert all(r.basic_user is None for r in token_server.requests)


def test_token_registry_with_credentials_and_expiry(
    token_registry, token_server, image_factory, home, monkeypatch
):
    img = image_factory([oci.busybox_entries(), [oci.file("x", b"x")]], registry=token_registry)
    token_server.reset()
    token_server.anonymous_actions = None  # anonymous requests are refused
    token_server.expires_in = 1  # socker must fetch a fresh token instead of using an expired one
    monkeypatch.setenv("DOCKER_USERNAME", token_registry.username)
    monkeypatch.setenv("DOCKER_PASSWORD", token_registry.password)
    import time

    from socker_lib.registry import transport as tmod

    real = tmod.Transport._token

    def slow_token(self, *a, **kw):
        time.sleep(0.6)
        return real(self, *a, **kw)

    monkeypatch.setattr(tmod.Transport, "_token", slow_token)
    pull(img.ref, Settings(home=home, max_concurrent_downloads=1))
    assert all(r.basic_user == token_registry.username for r in token_server.requests)
    assert len(token_server.requests) >= 2


def test_token_refused_credentials(token_registry, token_server, image_factory, home, monkeypatch):
    img = image_factory([oci.busybox_entries()], registry=token_registry)
    monkeypatch.setenv("DOCKER_USERNAME", token_registry.username)
    monkeypatch.setenv("DOCKER_PASSWORD", "wrong")
    with pytest.raises(AuthError) as ei:
        pull(img.ref, Settings(home=home))
    assert "wrong" not in str(ei.value)


# -- robustness ----------------------------------------------------------------------------


def test_unknown_tag_and_repo(image_factory, registry, home):
    img = image_factory([oci.busybox_entries()])
    proc = socker_pull(f"{registry.host}/{img.repo}:nope", home, check=False)
    assert proc.returncode != 0 and "nope" in proc.stderr and "hint:" in proc.stderr
    with pytest.raises(NotFoundError):
        pull(f"{registry.host}/no/such-repo:1", Settings(home=home))


def test_retries_429_and_cross_host_blob_redirect(
    auth_registry, proxy_factory, image_factory, home, monkeypatch
):
    img = image_factory([oci.busybox_entries()], registry=auth_registry)
    proxy = proxy_factory(auth_registry)
    proxy.redirect_blobs = True
    proxy.inject(429, path_contains="/manifests/", headers={"Retry-After": "1"})
    proxy.inject(503, path_contains="/blobs/", times=2)
    monkeypatch.setenv("DOCKER_USERNAME", auth_registry.username)
    monkeypatch.setenv("DOCKER_PASSWORD", auth_registry.password)
    result = pull(f"{proxy.host}/{img.repo}:{img.tag}", Settings(home=home))
    assert (result.path / "bin/busybox").exists()
    cdn = [r for r in proxy.requests if r.path.startswith("/_cdn")]
    assert cdn and all("Authorization" not in r.headers and "authorization" not in r.headers for r in cdn)


def corrupt_diff_id(layout: Path, tag: str) -> None:
    """Rewrite the image so its config lies about the first layer's diff_id."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads(oci.read_blob(layout, desc["digest"]))
    config = json.loads(oci.read_blob(layout, manifest["config"]["digest"]))
    config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    manifest["config"] = oci.write_blob(layout, oci.json_bytes(config), manifest["config"]["mediaType"])
    new = oci.write_blob(layout, oci.json_bytes(manifest), desc["mediaType"])
    desc.update(digest=new["digest"], size=new["size"])
    (layout / "index.json").write_text(json.dumps(index))


def test_failed_pull_keeps_previous_image(image_factory, registry, home, tmp_path):
    good = image_factory([oci.busybox_entries(), [oci.file("version", b"1")]])
    path = Path(socker_pull(good.ref, home).stdout.strip())
    layout = tmp_path / "bad-layout"
    oci.build_layout(layout, "latest", [oci.busybox_entries(), [oci.file("version", b"2")]])
    corrupt_diff_id(layout, "latest")
    registry.push_layout(layout, "latest", f"{good.repo}:latest")
    with pytest.raises(DigestMismatchError):
        pull(good.ref, Settings(home=home))
    assert (path / "version").read_text() == "1"
    assert list((home / "tmp").iterdir()) == []
    proc = socker_pull(good.ref, home, check=False)
    assert proc.returncode != 0 and "diff" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_interrupted_pull_keeps_previous_image_and_resumes(
    image_factory, registry, proxy_factory, home, monkeypatch
):
    big = os.urandom(3 << 20)
    img = image_factory([oci.busybox_entries()])
    path = Path(socker_pull(img.ref, home).stdout.strip())
    img2 = image_factory([oci.busybox_entries(), [oci.file("big", big)]], repo=img.repo)
    proxy = proxy_factory(registry)
    ref = f"{proxy.host}/{img2.repo}:{img2.tag}"
    from socker_lib.registry import pull as rpull

    real_stream = rpull._stream_resumable

    def interrupted(get, desc, partial, progress, retries):
        if desc["digest"] == img2.info["layers"][1]:

            def half(hdrs):
                resp = get(hdrs)
                with open(partial, "ab") as f:
                    f.write(resp.raw.read(1 << 20))
                resp.close()
                raise KeyboardInterrupt

            return real_stream(half, desc, partial, progress, retries)
        return real_stream(get, desc, partial, progress, retries)

    monkeypatch.setattr(rpull, "_stream_resumable", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull(ref, Settings(home=home, max_concurrent_downloads=1))
    monkeypatch.setattr(rpull, "_stream_resumable", real_stream)
    assert (path / "bin/busybox").exists()  # the other image is untouched
    proxy_image = home / "images" / proxy.host / img2.repo / img2.tag
    assert not proxy_image.exists() and list((home / "tmp").iterdir()) == []
    proxy.reset()
    result = pull(ref, Settings(home=home))
    assert (result.path / "big").read_bytes() == big
    ranged = [r for r in proxy.matching("GET", img2.info["layers"][1]) if r.headers.get("Range")]
    assert ranged and ranged[0].headers["Range"] == f"bytes={1 << 20}-"


def test_concurrent_pulls_of_one_image(image_factory, home):
    img = image_factory([oci.busybox_entries(), [oci.file("f" + str(i), b"x" * i) for i in range(200)]])
    e = dict(os.environ, SOCKER_HOME=str(home))
    procs = [
        subprocess.Popen(
            ["socker", "pull", "-q", img.ref],
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    path = Path(outs[0][0].strip())
    assert len([n for n in os.listdir(path) if n.startswith("f")]) == 200
    assert list((home / "tmp").iterdir()) == []


def _pull_as_nobody(ref: str, home: str, queue) -> None:
    try:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        os.environ["HOME"] = home
        result = pull(ref, Settings(home=Path(home)))
        queue.put(("ok", str(result.path), result.skipped))
    except BaseException:  # report anything to the parent
        import traceback

        queue.put(("error", traceback.format_exc(), []))


def test_rootless_pull_records_what_it_could_not_apply(image_factory, tmp_path):
    needs_root()  # to switch to an unprivileged user
    import multiprocessing

    import isal.igzip_threaded  # noqa: F401 - imported before dropping privileges: the

    import socker_lib.layers  # noqa: F401   interpreter's site-packages may be unreadable to nobody

    img = image_factory(
        [[*oci.busybox_entries(), oci.chardev("dev-null", 1, 3), oci.file("owned", b"o", uid=1234, gid=1234)]]
    )
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="socker-rootless-"))  # pytest's tmp dirs are root-only
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_pull_as_nobody, args=(img.ref, str(home), queue))
    proc.start()
    status, path, skipped = queue.get(timeout=120)
    proc.join(30)
    assert status == "ok", path
    path = Path(path)
    assert (path / "bin/busybox").exists() and (path / "owned").read_text() == "o"
    assert path.stat().st_uid == 65534 and (path / "owned").stat().st_uid == 65534
    assert not (path / "dev-null").exists()
    meta = json.loads((home / "meta" / img.registry.host / img.repo / img.tag / "image.json").read_text())
    assert meta["rootless"] is True and any("dev-null" in s for s in meta["notApplied"])
    shutil.rmtree(base)


def test_inv_and_socker_are_the_same_task(image_factory, home):
    img = image_factory([oci.busybox_entries()])
    e = dict(os.environ, SOCKER_HOME=str(home))
    proc = subprocess.run(
        ["inv", "pull", "-q", img.ref], cwd=REPO, capture_output=True, text=True, env=e, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == home / "images" / img.registry.host / img.repo / img.tag


def test_disk_full_is_a_clear_error_and_leaves_nothing(image_factory, tmp_path):
    needs_root()  # to mount a small tmpfs
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(home)], check=True)
    try:
        img = image_factory([oci.busybox_entries(), [oci.file("big", os.urandom(3 << 20))]])
        proc = socker_pull(img.ref, home, check=False)
        assert proc.returncode != 0
        assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
        assert not (home / "images" / img.registry.host / img.repo).exists()
        assert list((home / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(home)], check=True)


def test_hostile_image_from_registry_never_touches_the_host(image_factory, home, tmp_path):
    needs_root()
    host = tmp_path / "host"
    victim = host / "victim"
    victim.mkdir(parents=True)
    (victim / "hello").write_text("original")
    before = sorted(p.name for p in host.iterdir())
    hostile = [
        *oci.busybox_entries(),
        oci.symlink("esc", str(victim)),
        oci.file("esc/pwned", b"x"),
        oci.symlink("up", "../../../../../../../.."),
        oci.file(f"up{victim}/pwned2", b"x"),
        oci.hardlink("hl", f"../../../../../../..{victim}/hello"),
        oci.file("../../../../../../../../pwned3", b"x"),
    ]
    img = image_factory([hostile, [oci.file("esc/.wh.hello", b"")]])
    proc = socker_pull(img.ref, home, check=False)
    assert (victim / "hello").read_text() == "original"
    assert sorted(p.name for p in victim.iterdir()) == ["hello"]
    assert sorted(p.name for p in host.iterdir()) == before
    assert not Path("/pwned3").exists()
    if proc.returncode == 0:  # contained: everything landed inside the image
        path = Path(proc.stdout.strip())
        assert (path / "esc").is_symlink()
    else:  # refused: one clear line, no half-written image
        assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
        assert not (home / "images" / img.registry.host / img.repo).exists()


def test_download_that_starts_over_falls_back_to_unpacking_from_cache(image_factory, home, monkeypatch):
    import socker_lib.pull as pull_mod
    from socker_lib.blobs import StreamRestart

    img = image_factory([oci.busybox_entries(), [oci.file("f", b"f")]])
    real = pull_mod._unpack_and_commit
    calls = []

    def first_follow_fails(*args, follow, **kw):
        calls.append(follow)
        if follow:
            raise StreamRestart()
        return real(*args, follow=follow, **kw)

    monkeypatch.setattr(pull_mod, "_unpack_and_commit", first_follow_fails)
    result = pull(img.ref, Settings(home=home))
    assert calls == [True, False] and (result.path / "f").read_text() == "f"


@pytest.fixture
def tls_registry(registry, tmp_path):
    """A second registry process serving the plain registry's storage over TLS with a private CA."""
    import time

    import requests

    from tests.support.registry import REGISTRY_BIN, free_port, registry_config, stop_process

    needs_tool("openssl")
    cert, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = registry_config(
        registry.storage_dir, port, None, {"http": {"tls": {"certificate": str(cert), "key": str(key)}}}
    )
    cfg = tmp_path / "tls.yml"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            try:
                requests.get(f"https://127.0.0.1:{port}/v2/", verify=str(cert), timeout=1)
                break
            except requests.exceptions.RequestException:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}", cert
    finally:
        stop_process(proc)


def test_tls_registry_needs_its_ca(tls_registry, image_factory, home):
    host, cert = tls_registry
    img = image_factory([oci.busybox_entries()])
    ref = f"{host}/{img.repo}:{img.tag}"
    proc = socker_pull(ref, home, check=False)
    assert proc.returncode != 0 and "TLS" in proc.stderr and "--ca-cert" in proc.stderr
    out = socker_pull(ref, home, "--ca-cert", str(cert))
    assert (Path(out.stdout.strip()) / "bin/busybox").exists()


def test_docker_manifest_list_platform_choice(image_factory, home):
    img = image_factory([oci.busybox_entries()], docker=True, platforms=["linux/amd64", "linux/arm64/v8"])
    assert img.info["media_type"].endswith("manifest.list.v2+json")
    out = socker_pull(img.ref, home, "--platform", "linux/arm64")
    assert (Path(out.stdout.strip()) / "etc/platform").read_text().startswith("linux/arm64")
