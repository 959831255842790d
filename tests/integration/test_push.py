"""``socker push`` / ``flatten`` / ``login`` / ``new`` / ``add`` / ``tag`` / ``rm`` / ``images``
against real registries, with skopeo and umoci reading what socker pushed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from socker_lib.pull import pull
from socker_lib.push import push
from socker_lib.settings import Settings
from tests.conftest import needs_root, needs_tool
from tests.integration.test_pull import every_case_layers
from tests.support import oci
from tests.support.registry import DROP, DROP_FORWARDED
from tests.support.tree import diff_trees
from tests.support.umoci import skopeo_to_layout, umoci_unpack

pytestmark = pytest.mark.integration

CONFIG = {
    "Env": ["PATH=/bin", "A=1"],
    "Cmd": ["/bin/sh", "-c", "echo hi"],
    "Entrypoint": ["/bin/env"],
    "WorkingDir": "/tmp",
    "User": "1:1",
    "Labels": {"org.example": "yes"},
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": {"/data": {}},
    "StopSignal": "SIGTERM",
}


def run_socker(*args, home: Path, env=None, input=None, check=True):
    e = dict(os.environ, SOCKER_HOME=str(home), **(env or {}))
    proc = subprocess.run(["socker", *args], capture_output=True, text=True, env=e, input=input, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"socker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def assert_same(a: Path, b: Path) -> None:
    diffs = diff_trees(a, b)
    assert not diffs, "trees differ:\n" + "\n".join(diffs[:40])


def pulled(image_factory, home, layers=None, **kw):
    img = image_factory(layers or every_case_layers(), config=CONFIG, **kw)
    result = pull(img.ref, Settings(home=home))
    return img, result.path


@pytest.mark.parametrize("fmt, compression", [("docker", "gzip"), ("oci", "zstd"), ("oci", "gzip")])
def test_push_round_trip_through_skopeo_and_umoci(image_factory, registry, home, tmp_path, fmt, compression):
    needs_root()
    needs_tool("umoci", "skopeo")
    img, path = pulled(image_factory, home)
    dest = f"{registry.host}/{img.repo}-pushed:v1"
    # push the pulled directory to a new name: tag first, as users do
    run_socker("tag", img.ref, dest, home=home)
    out = run_socker("push", "--format", fmt, "--compression", compression, dest, home=home)
    digest = out.stdout.strip().splitlines()[-1]
    raw = registry.inspect_raw(dest)
    manifest = json.loads(raw)
    assert "sha256:" + __import__("hashlib").sha256(raw).hexdigest() == digest
    assert len(manifest["layers"]) == 1
    media = manifest["layers"][0]["mediaType"]
    assert media.endswith("zstd" if compression == "zstd" else "gzip")
    assert manifest["mediaType"].startswith(
        "application/vnd.oci" if fmt == "oci" else "application/vnd.docker"
    )
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{dest}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["Digest"] == digest and len(info["Layers"]) == 1
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{dest}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for key, value in CONFIG.items():
        assert config["config"][key] == value, key
    assert len(config["rootfs"]["diff_ids"]) == 1 and "flattened" in json.dumps(config["history"])
    # umoci's view of what socker pushed equals the directory socker pushed
    rootfs = umoci_unpack(skopeo_to_layout(dest, tmp_path / "layout", "t"), "t", tmp_path / "bundle")
    assert_same(path, rootfs)
    # and socker pulls the same tree back
    back = pull(dest, Settings(home=tmp_path / "home2")).path
    assert_same(path, back)


def test_unchanged_directory_pushes_to_the_same_digest(image_factory, registry, home):
    img, path = pulled(image_factory, home, [oci.busybox_entries()])
    first = push(img.ref, Settings(home=home))
    second = push(img.ref, Settings(home=home))
    assert first.digest == second.digest and first.layer_digest == second.layer_digest
    assert first.packed and not second.packed  # the unchanged tree was not packed again
    assert second.uploaded == "exists"
    (path / "etc/new").write_text("changed")
    third = push(img.ref, Settings(home=home))
    assert third.packed and third.digest != first.digest


def test_tagged_copy_gives_same_layer_and_uses_cross_repo_mount(image_factory, registry, proxy_factory, home):
    img, _ = pulled(image_factory, home, [oci.busybox_entries()])
    proxy = proxy_factory(registry)
    a = f"{proxy.host}/{img.repo}-a:1"
    b = f"{proxy.host}/{img.repo}-b:1"
    run_socker("tag", img.ref, a, home=home)
    run_socker("tag", img.ref, b, home=home)
    ra = push(a, Settings(home=home))
    proxy.reset()
    rb = push(b, Settings(home=home))
    assert ra.layer_digest == rb.layer_digest and rb.uploaded == "mounted"
    mounts = [r for r in proxy.matching("POST") if "mount=" in r.path]
    assert mounts and f"from={img.repo}-a".replace("/", "%2F") in mounts[0].path
    assert not proxy.matching("PATCH") and not [
        r
        for r in proxy.matching("PUT")
        if "/blobs/" in r.path and ra.layer_digest.replace(":", "%3A") in r.path
    ]


def test_chunked_upload_resumes_after_dropped_connection(
    image_factory, registry, proxy_factory, home, monkeypatch
):
    import socker_lib.registry.push as rpush

    big = os.urandom(3 << 20)
    img, _ = pulled(image_factory, home, [[*oci.busybox_entries(), oci.file("big", big)]])
    monkeypatch.setattr(rpush, "MONOLITHIC_MAX", 1 << 20)
    monkeypatch.setattr(rpush, "CHUNK", 1 << 20)
    proxy = proxy_factory(registry)
    dest = f"{proxy.host}/{img.repo}-chunked:1"
    run_socker("tag", img.ref, dest, home=home)
    # a chunk lost on the way: resume where the registry stands; then a chunk that arrived but
    # whose answer was lost: distribution cancels that session, so the blob starts over
    proxy.inject(DROP, method="PATCH", times=1)
    proxy.inject(DROP_FORWARDED, method="PATCH", times=1)
    result = push(dest, Settings(home=home, max_concurrent_downloads=1))
    patches = proxy.matching("PATCH")
    assert len(patches) >= 5 and sum(r.injected for r in patches) == 2
    status = [r for r in proxy.matching("GET") if "/blobs/uploads/" in r.path]
    assert len(status) == 2 and status[0].status == 204  # asked where it stood, and could resume
    assert len([r for r in proxy.matching("POST") if "/blobs/uploads/" in r.path]) >= 2  # started over once
    back = pull(f"{registry.host}/{img.repo}-chunked:1", Settings(home=home / "back"))
    assert (back.path / "big").read_bytes() == big and result.uploaded == "uploaded"


def test_push_with_htpasswd_and_wrong_password_fails_before_upload(
    auth_registry, image_factory, proxy_factory, home, monkeypatch
):
    monkeypatch.setenv("DOCKER_USERNAME", auth_registry.username)
    monkeypatch.setenv("DOCKER_PASSWORD", auth_registry.password)
    img, _ = pulled(image_factory, home, [oci.busybox_entries()], registry=auth_registry)
    monkeypatch.delenv("DOCKER_USERNAME")
    monkeypatch.delenv("DOCKER_PASSWORD")
    proxy = proxy_factory(auth_registry)
    dest = f"{proxy.host}/{img.repo}:pushed"
    run_socker("tag", img.ref, dest, home=home)
    bad = {
        "DOCKER_USERNAME": auth_registry.username,
        "DOCKER_PASSWORD": "nope-nope",
        "DOCKER_CONFIG": str(home / "nodocker"),
    }
    proc = run_socker("push", dest, home=home, env=bad, check=False)
    assert proc.returncode != 0 and "error:" in proc.stderr and "nope-nope" not in proc.stderr
    assert not [r for r in proxy.requests if r.method in ("POST", "PUT", "PATCH")]
    good = dict(bad, DOCKER_PASSWORD=auth_registry.password)
    run_socker("push", dest, home=home, env=good)
    assert auth_registry.manifest(f"{img.repo}:pushed")["layers"]


def test_push_to_token_registry_asks_for_pull_push(
    token_registry, token_server, image_factory, home, monkeypatch
):
    img, _ = pulled(image_factory, home, [oci.busybox_entries()], registry=token_registry)
    monkeypatch.setenv("DOCKER_USERNAME", token_registry.username)
    monkeypatch.setenv("DOCKER_PASSWORD", token_registry.password)
    token_server.reset()
    push(img.ref, Settings(home=home))
    scopes = {s for r in token_server.requests for s in r.scopes}
    assert f"repository:{img.repo}:pull,push" in scopes


def test_login_checks_and_stores_credentials(auth_registry, image_factory, home, tmp_path):
    docker_cfg = tmp_path / "dockercfg"
    env = {"DOCKER_CONFIG": str(docker_cfg), "DOCKER_USERNAME": "", "DOCKER_PASSWORD": ""}
    proc = run_socker(
        "login",
        auth_registry.host,
        "-u",
        auth_registry.username,
        "--password-stdin",
        home=home,
        env=env,
        input="wrong\n",
        check=False,
    )
    assert proc.returncode != 0 and "refused" in proc.stderr and not (docker_cfg / "config.json").exists()
    run_socker(
        "login",
        auth_registry.host,
        "-u",
        auth_registry.username,
        "--password-stdin",
        home=home,
        env=env,
        input=auth_registry.password + "\n",
    )
    cfg = docker_cfg / "config.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert auth_registry.host in json.loads(cfg.read_text())["auths"]
    assert auth_registry.password not in cfg.read_text()  # base64, as docker stores it, never plain
    ref = f"{auth_registry.host}/test/logged-in:1"
    run_socker("new", ref, home=home, env=env)
    run_socker("push", ref, home=home, env=env)  # credentials now come from config.json
    assert auth_registry.manifest("test/logged-in:1")["layers"]


def test_flatten_multilayer_image(image_factory, registry, home, tmp_path):
    needs_root()
    needs_tool("umoci")
    img = image_factory(every_case_layers(), config=CONFIG)
    dest = f"{registry.host}/{img.repo}-flat:1"
    run_socker("flatten", img.ref, dest, home=home)
    manifest = registry.manifest(f"{img.repo}-flat:1")
    assert len(manifest["layers"]) == 1
    src_tree = umoci_unpack(skopeo_to_layout(img.ref, tmp_path / "l1", "t"), "t", tmp_path / "b1")
    flat_tree = umoci_unpack(skopeo_to_layout(dest, tmp_path / "l2", "t"), "t", tmp_path / "b2")
    assert_same(src_tree, flat_tree)


def test_new_add_push_run_bash_and_ls(registry, home, tmp_path):
    needs_root()
    ref = f"{registry.host}/test/minimal:1"
    run_socker("new", ref, home=home)
    out = run_socker("add", ref, "/usr/bin/bash", "/bin/ls", home=home)
    assert "/usr/bin/bash" in out.stdout or "usr/bin/bash" in out.stdout
    run_socker("push", ref, home=home)
    back = pull(ref, Settings(home=tmp_path / "fresh")).path
    proc = subprocess.run(
        ["chroot", str(back), "/usr/bin/bash", "-c", "ls /"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "usr" in proc.stdout.split()


def test_tag_rm_images(image_factory, home):
    img, path = pulled(image_factory, home, [oci.busybox_entries()])
    run_socker("tag", img.ref, "me/copy:1", home=home)
    listing = run_socker("images", home=home).stdout
    assert "me/copy:1" in listing and img.ref in listing
    copy = home / "images/me/copy/1"
    assert (copy / "bin/busybox").read_bytes() == (path / "bin/busybox").read_bytes()
    (copy / "etc/passwd").write_text("edited")
    rows = {
        line.split()[0]: line.split()[-1] for line in run_socker("images", home=home).stdout.splitlines()[1:]
    }
    assert rows["me/copy:1"] == "yes" and rows[img.ref] == "no"
    run_socker("rm", "me/copy:1", home=home)
    assert not copy.exists() and "me/copy:1" not in run_socker("images", home=home).stdout
    proc = run_socker("rm", "me/copy:1", home=home, check=False)
    assert proc.returncode != 0 and "no local image" in proc.stderr


def test_push_errors_are_clear(home, registry):
    proc = run_socker("push", f"{registry.host}/never/pulled:1", home=home, check=False)
    assert proc.returncode != 0 and "no local image" in proc.stderr and "hint:" in proc.stderr
    run_socker("new", f"{registry.host}/x/y:1", home=home)
    proc = run_socker("push", "--compression", "zstd", f"{registry.host}/x/y:1", home=home, check=False)
    assert proc.returncode != 0 and "--format oci" in proc.stderr
