"""The integration-test support works against the real tools: docker-registry, skopeo, umoci."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile

import pytest
import requests

from tests.conftest import needs_root, needs_tool
from tests.support import oci
from tests.support.registry import decode_jwt, start_registry
from tests.support.tree import assert_same_tree, diff_trees, snapshot
from tests.support.umoci import skopeo_to_layout, umoci_unpack

pytestmark = pytest.mark.integration

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def every_entry_type() -> list[oci.Entry]:
    """One layer with each kind of entry, special modes, owners and xattrs."""
    return [
        oci.dir("data", mode=0o750, uid=1, gid=2),
        oci.file(
            "data/suid",
            b"#!/bin/sh\necho hi\n",
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
        oci.fifo("data/fifo", mode=0o600),
        oci.chardev("data/null", 1, 3),
        oci.blockdev("data/loop9", 7, 9),
        oci.file("data/" + "long-name-" * 12, b"pax path"),
        oci.file("data/big-uid", b"u", uid=3_000_000, gid=3_000_000),
        oci.file("data/mtime", b"m", mtime=1_234_567_890),
    ]


def base_layer() -> list[oci.Entry]:
    return [*oci.busybox_entries(), oci.dir("gone-dir"), oci.file("gone-dir/x", b"x"), oci.file("gone", b"g")]


def top_layer() -> list[oci.Entry]:
    return [
        oci.whiteout("gone"),
        oci.opaque("gone-dir"),
        oci.file("gone-dir/new", b"new"),
        *every_entry_type(),
    ]


# ---------------------------------------------------------------------------------------------
# oci.py alone


def test_tar_bytes_is_deterministic_pax_in_given_order():
    entries = every_entry_type()
    a, b = oci.tar_bytes(entries), oci.tar_bytes(every_entry_type())
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = tar.getmembers()
        assert [m.name.rstrip("/") for m in members] == [e.path for e in entries]
        by_name = {m.name: m for m in members}
        suid = by_name["data/suid"]
        assert suid.mode == 0o4755 and (suid.uid, suid.gid) == (1000, 1000)
        assert suid.pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") == b"\xff\x00bin"
        assert by_name["data/suid-link"].islnk() and by_name["data/suid-link"].linkname == "data/suid"
        assert by_name["data/null"].ischr() and (
            by_name["data/null"].devmajor,
            by_name["data/null"].devminor,
        ) == (1, 3)
        assert by_name["data/loop9"].isblk() and by_name["data/fifo"].isfifo()
        assert by_name["data/big-uid"].uid == 3_000_000
    assert oci.whiteout("a/b/c").path == "a/b/.wh.c"
    assert oci.whiteout("top").path == ".wh.top"
    assert oci.opaque("a/b/").path == "a/b/.wh..wh..opq"


def test_build_layout_structure(tmp_path):
    info = oci.build_layout(tmp_path, "v1", [base_layer(), top_layer()], config={"Cmd": ["/bin/sh"]})
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    (desc,) = index["manifests"]
    assert desc["annotations"][oci.REF_NAME] == "v1" and desc["digest"] == info["digest"]
    manifest = json.loads(oci.read_blob(tmp_path, info["digest"]))
    assert manifest["mediaType"] == oci.OCI_MANIFEST
    config = json.loads(oci.read_blob(tmp_path, info["config_digest"]))
    assert config["os"] == "linux" and config["architecture"]
    assert config["config"] == {"Cmd": ["/bin/sh"]} and len(config["history"]) == 2
    for layer_desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob = oci.read_blob(tmp_path, layer_desc["digest"])
        assert sha(blob) == layer_desc["digest"] and len(blob) == layer_desc["size"]
        assert blob[:2] == GZIP_MAGIC and blob[4:8] == b"\0\0\0\0"  # gzip header mtime 0
        assert sha(gzip.decompress(blob)) == diff_id
    # a second build is byte-identical, and a second tag joins the same index
    again = oci.build_layout(tmp_path, "v2", [base_layer(), top_layer()], config={"Cmd": ["/bin/sh"]})
    assert again["digest"] == info["digest"]
    tags = [
        m["annotations"][oci.REF_NAME] for m in json.loads((tmp_path / "index.json").read_text())["manifests"]
    ]
    assert tags == ["v1", "v2"]


def test_build_layout_raw_layers_and_mixed_compression(tmp_path):
    raw = oci.tar_bytes([oci.file("../escape", b"hostile"), oci.symlink("esc", "/etc")])
    info = oci.build_layout(tmp_path, "t", [raw, [oci.file("ok")]], compression=["none", "zstd"])
    assert info["layer_media_types"] == [oci.OCI_LAYER, oci.OCI_LAYER_ZSTD]
    assert info["diff_ids"][0] == sha(raw) and oci.read_blob(tmp_path, info["layers"][0]) == raw
    assert oci.read_blob(tmp_path, info["layers"][1])[:4] == ZSTD_MAGIC
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["../escape", "esc"]  # written as given, never normalised
    with pytest.raises(ValueError):
        oci.build_layout(tmp_path, "d", [[oci.file("x")]], docker=True, compression="zstd")


# ---------------------------------------------------------------------------------------------
# registries


def test_plain_registry_answers(registry):
    r = requests.get(registry.url + "/v2/", timeout=5)
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.host.startswith("127.0.0.1:") and registry.url == "http://" + registry.host
    assert registry.username is None


def test_htpasswd_registry(auth_registry):
    url = auth_registry.url + "/v2/"
    anonymous = requests.get(url, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(url, auth=(auth_registry.username, "wrong"), timeout=5).status_code == 401
    assert (
        requests.get(url, auth=(auth_registry.username, auth_registry.password), timeout=5).status_code == 200
    )
    assert stat.S_IMODE(os.stat(auth_registry.authfile).st_mode) == 0o600


def parse_challenge(header: str) -> dict:
    scheme, _, params = header.partition(" ")
    out = {"scheme": scheme}
    for part in params.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def test_token_flow(token_registry, token_server):
    anonymous = requests.get(token_registry.url + "/v2/", timeout=5)
    assert anonymous.status_code == 401
    challenge = parse_challenge(anonymous.headers["WWW-Authenticate"])
    assert challenge["scheme"] == "Bearer"
    assert challenge["realm"] == token_server.realm and challenge["service"] == token_server.service

    creds = (token_registry.username, token_registry.password)
    params = {
        "service": challenge["service"],
        "scope": ["repository:some/repo:pull,push", "repository:other:pull"],
    }
    answer = requests.get(challenge["realm"], params=params, auth=creds, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"]
    header, claims = decode_jwt(body["token"])
    assert header["alg"] == "RS256" and header["x5c"]
    assert claims["sub"] == token_registry.username and claims["aud"] == token_server.service
    assert claims["access"] == [
        {"type": "repository", "name": "some/repo", "actions": ["pull", "push"]},
        {"type": "repository", "name": "other", "actions": ["pull"]},
    ]
    bearer = {"Authorization": "Bearer " + body["token"]}
    assert requests.get(token_registry.url + "/v2/", headers=bearer, timeout=5).status_code == 200
    tags = requests.get(token_registry.url + "/v2/some/repo/tags/list", headers=bearer, timeout=5)
    assert tags.status_code == 404  # authorised; the repository just does not exist

    # scope not granted by this token: a challenge naming the scope
    denied = requests.get(token_registry.url + "/v2/third/tags/list", headers=bearer, timeout=5)
    assert denied.status_code == 401
    assert parse_challenge(denied.headers["WWW-Authenticate"])["scope"] == "repository:third:pull"

    # wrong password: refused by the token server
    wrong = requests.get(challenge["realm"], params=params, auth=(token_registry.username, "nope"), timeout=5)
    assert wrong.status_code == 401

    # anonymous: pull only
    anon = requests.get(challenge["realm"], params=params, timeout=5).json()
    assert decode_jwt(anon["token"])[1]["access"][0]["actions"] == ["pull"]

    recorded = token_server.requests
    assert [(r.basic_user, r.user, r.status) for r in recorded] == [
        (token_registry.username, token_registry.username, 200),
        (token_registry.username, None, 401),
        (None, None, 200),
    ]
    assert recorded[0].scopes == params["scope"] and recorded[0].service == token_server.service
    assert recorded[2].authorization is None


def test_token_server_policies(token_registry, token_server):
    # an expired JWT is refused by the registry (past its 60 s leeway)
    token_server.jwt_lifetime = -120
    expired = token_registry.token("repository:x:pull")
    r = requests.get(token_registry.url + "/v2/", headers={"Authorization": "Bearer " + expired}, timeout=5)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    token_server.jwt_lifetime = None

    # configurable answer: short expiry, only access_token, no anonymous access
    token_server.expires_in = 2
    token_server.response_keys = ("access_token",)
    body = requests.get(
        token_server.realm, auth=(token_registry.username, token_registry.password), timeout=5
    ).json()
    assert set(body) == {"access_token", "expires_in", "issued_at"} and body["expires_in"] == 2
    claims = decode_jwt(body["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 2
    token_server.anonymous_actions = None
    assert (
        requests.get(token_server.realm, params={"scope": "repository:x:pull"}, timeout=5).status_code == 401
    )

    # injected failures, then normal service
    token_server.fail_next = [503]
    assert requests.get(token_server.realm, timeout=5).status_code == 503
    token_server.anonymous_actions = ("pull",)
    assert requests.get(token_server.realm, timeout=5).status_code == 200

    # OAuth2 POST: password grant, then refresh token
    form = {
        "grant_type": "password",
        "username": token_registry.username,
        "password": token_registry.password,
    }
    form |= {"service": token_server.service, "scope": "repository:x:pull", "client_id": "socker"}
    first = requests.post(token_server.realm, data=form, timeout=5).json()
    assert first["access_token"] and first["refresh_token"]
    again = requests.post(
        token_server.realm,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "service": token_server.service,
        },
        timeout=5,
    )
    assert (
        again.status_code == 200
        and decode_jwt(again.json()["access_token"])[1]["sub"] == token_registry.username
    )


def test_registry_start_failure_shows_log(tmp_path):
    needs_tool("docker-registry")
    with pytest.raises(RuntimeError, match="log tail"):
        start_registry(tmp_path, extra_config={"storage": {"no-such-driver": {}}}, timeout=10)


# ---------------------------------------------------------------------------------------------
# pushing layouts with skopeo


VARIANTS = {
    "oci-gzip": ({}, oci.OCI_MANIFEST, oci.OCI_LAYER_GZIP, GZIP_MAGIC),
    "oci-zstd": ({"compression": "zstd"}, oci.OCI_MANIFEST, oci.OCI_LAYER_ZSTD, ZSTD_MAGIC),
    "oci-none": ({"compression": "none"}, oci.OCI_MANIFEST, oci.OCI_LAYER, b"gone"),  # tar starts with a name
    "docker": ({"docker": True}, oci.DOCKER_MANIFEST, oci.DOCKER_LAYER_GZIP, GZIP_MAGIC),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_push_single_image_exactly(image_factory, registry, variant):
    kw, manifest_type, layer_type, magic = VARIANTS[variant]
    layers = [[oci.file("gone", b"g"), oci.dir("d")], top_layer()]
    image = image_factory(layers, config={"Env": ["A=1"]}, **kw)
    assert image.digest == image.info["digest"]
    raw = registry.inspect_raw(image.ref)
    assert sha(raw) == image.info["digest"]
    manifest = json.loads(raw)
    assert manifest["mediaType"] == manifest_type
    assert [d["mediaType"] for d in manifest["layers"]] == [layer_type, layer_type]
    assert [d["digest"] for d in manifest["layers"]] == image.info["layers"]
    blob = requests.get(f"{registry.url}/v2/{image.repo}/blobs/{image.info['layers'][0]}", timeout=5)
    assert blob.status_code == 200 and blob.content.startswith(magic)
    config = requests.get(
        f"{registry.url}/v2/{image.repo}/blobs/{image.info['config_digest']}", timeout=5
    ).json()
    assert config["rootfs"]["diff_ids"] == image.info["diff_ids"] and config["config"]["Env"] == ["A=1"]


@pytest.mark.parametrize(
    "kw,list_type",
    [({}, oci.OCI_INDEX), ({"docker": True}, oci.DOCKER_LIST), ({"compression": "zstd"}, oci.OCI_INDEX)],
    ids=["oci", "docker", "zstd"],
)
def test_push_multi_platform_exactly(image_factory, registry, kw, list_type):
    platforms = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    image = image_factory([oci.busybox_entries()], platforms=platforms, **kw)
    assert image.digest == image.info["index_digest"] == image.info["digest"]
    raw = registry.inspect_raw(image.ref)
    assert sha(raw) == image.digest
    index = json.loads(raw)
    assert index["mediaType"] == list_type
    *images, attestation = index["manifests"]
    assert [m["platform"] for m in images] == [oci.parse_platform(p) for p in platforms]
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert attestation["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert attestation["digest"] == image.info["attestation_digest"]
    for desc, spec in zip(images, platforms, strict=True):
        per = image.info["platforms"][spec]
        assert desc["digest"] == per["manifest_digest"]
        child = registry.inspect_raw(f"{image.repo}@{desc['digest']}")
        assert sha(child) == desc["digest"]
        config = json.loads(oci.read_blob(image.layout, per["config_digest"]))
        assert {k: config[k] for k in ("os", "architecture")} == {
            k: desc["platform"][k] for k in ("os", "architecture")
        }
        assert config.get("variant") == desc["platform"].get("variant")
    assert sha(registry.inspect_raw(f"{image.repo}@{attestation['digest']}")) == attestation["digest"]


@pytest.mark.parametrize("which", ["auth_registry", "token_registry"])
def test_push_and_inspect_with_credentials(request, image_factory, which):
    reg = request.getfixturevalue(which)
    image = image_factory([[oci.file("hello", b"world")]], registry=reg)
    assert sha(reg.inspect_raw(image.ref)) == image.info["digest"] == image.digest
    assert stat.S_IMODE(os.stat(reg.authfile).st_mode) == 0o600
    assert reg.password not in reg.authfile.read_text()  # base64 only
    if reg.token_server is not None:
        pushes = [r for r in reg.token_server.requests if f"repository:{image.repo}:pull,push" in r.scopes]
        assert pushes and all(r.user == reg.username for r in pushes)
        # the pushed image is readable with an anonymous (pull-only) token, not writable
        token = reg.token(f"repository:{image.repo}:pull,push", anonymous=True)
        headers = {"Authorization": "Bearer " + token, "Accept": oci.OCI_MANIFEST}
        got = requests.get(f"{reg.url}/v2/{image.repo}/manifests/{image.tag}", headers=headers, timeout=5)
        assert got.status_code == 200 and sha(got.content) == image.digest
        post = requests.post(f"{reg.url}/v2/{image.repo}/blobs/uploads/", headers=headers, timeout=5)
        assert post.status_code == 401 and "insufficient_scope" in post.headers["WWW-Authenticate"]
    else:
        assert reg.request("GET", f"/v2/{image.repo}/tags/list").json()["tags"] == [image.tag]


# ---------------------------------------------------------------------------------------------
# umoci and trees


def test_umoci_unpack_of_built_layout(tmp_path):
    needs_root()
    needs_tool("umoci")
    info = oci.build_layout(tmp_path / "layout", "t", [base_layer(), top_layer()])
    rootfs = umoci_unpack(tmp_path / "layout", "t", tmp_path / "bundle")
    assert rootfs == tmp_path / "bundle" / "rootfs"
    snap = snapshot(rootfs)
    assert "gone" not in snap and "gone-dir/x" not in snap and snap["gone-dir/new"].type == "file"
    suid = snap["data/suid"]
    assert suid.mode == stat.S_IFREG | 0o4755 and (suid.uid, suid.gid) == (1000, 1000)
    assert dict(suid.xattrs) == {"user.note": b"\xff\x00bin", "security.capability": oci.file_capability(10)}
    assert suid.hardlinks == ("data/suid", "data/suid-link") == snap["data/suid-link"].hardlinks
    assert snap["data/sgid"].mode == stat.S_IFREG | 0o2711
    assert snap["data/sticky"].mode == stat.S_IFDIR | 0o1777
    assert snap["data"].mode == stat.S_IFDIR | 0o750 and (snap["data"].uid, snap["data"].gid) == (1, 2)
    assert (snap["data/rel"].type, snap["data/rel"].link) == ("symlink", "suid")
    assert snap["data/abs"].link == "/etc/passwd"
    assert snap["data/fifo"].type == "fifo" and snap["data/null"].rdev == (1, 3)
    assert snap["data/loop9"].type == "blockdev" and snap["data/loop9"].rdev == (7, 9)
    assert snap["data/big-uid"].uid == 3_000_000 and snap["data/mtime"].mtime_ns == 1_234_567_890 * 10**9
    assert snap["bin/busybox"].sha256 == hashlib.sha256(oci.busybox_bytes()).hexdigest()
    assert snap["bin/sh"].link == "busybox" and snap["tmp"].mode == stat.S_IFDIR | 0o1777
    assert info["diff_ids"][0] == sha(oci.tar_bytes(base_layer()))


def test_registry_round_trip_through_umoci(tmp_path, image_factory, registry):
    """zstd in the registry -> skopeo_to_layout (gzip) -> umoci: same tree as the local layout."""
    needs_root()
    needs_tool("umoci")
    layers = [base_layer(), top_layer()]
    image = image_factory(layers, compression="zstd")
    pulled = registry.pull_to_layout(image.ref, tmp_path / "pulled", "p")
    with pytest.raises(RuntimeError, match="mediatype"):  # umoci 0.4.7 cannot read zstd layers
        umoci_unpack(image.layout, image.tag, tmp_path / "b-zstd")
    local = oci.build_layout(tmp_path / "local", "t", layers)  # same content, gzip
    assert_same_tree(
        umoci_unpack(tmp_path / "local", "t", tmp_path / "b-local"),
        umoci_unpack(pulled, "p", tmp_path / "b-pulled"),
    )
    assert local["diff_ids"] == image.info["diff_ids"]


def test_skopeo_to_layout_picks_platform(tmp_path, image_factory, registry):
    needs_root()
    needs_tool("umoci")
    image = image_factory([oci.busybox_entries()], platforms=["linux/amd64", "linux/arm64/v8"], docker=True)
    layout = skopeo_to_layout(
        image.ref, tmp_path / "l", "arm", platform="linux/arm64/v8", authfile=registry.authfile
    )
    rootfs = umoci_unpack(layout, "arm", tmp_path / "b")
    assert (rootfs / "etc" / "platform").read_text() == "linux/arm64/v8\n"


def test_tree_diffs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_bytes(b"same")
        os.link(root / "d" / "f", root / "d" / "g")
        os.symlink("f", root / "d" / "l")
        os.utime(root / "d" / "f", ns=(1, 5_000_000_000))
    assert diff_trees(a, b, mtime=False) == []
    assert_same_tree(a, b, mtime=False)
    os.chmod(b / "d" / "f", 0o4755)
    (b / "d" / "g").unlink()
    (b / "d" / "g").write_bytes(b"other")
    os.setxattr(b / "d" / "g", "user.k", b"v")
    (b / "extra").mkdir()
    diffs = diff_trees(a, b, mtime=False)
    text = "\n".join(diffs)
    assert "only in b: extra (dir)" in text
    assert "d/f: mode 0o100644 != 0o104755" in text
    assert "d/f: hardlinks ('d/f', 'd/g') != None" in text
    assert "d/g: sha256" in text and "d/g: xattrs" in text
    with pytest.raises(AssertionError, match="trees differ"):
        assert_same_tree(a, b, mtime=False)
    os.utime(b / "d" / "l", ns=(1, 7), follow_symlinks=False)
    assert any(line.startswith("d/l: mtime_ns") for line in diff_trees(a, b))
    assert snapshot(a)["d/l"].link == "f" and snapshot(a, include_root=True)["."].type == "dir"


def test_recording_proxy(image_factory, registry_proxy):
    image = image_factory([[oci.file("hello", b"world")]])
    accept = {"Accept": oci.OCI_MANIFEST}
    got = requests.get(
        f"{registry_proxy.url}/v2/{image.repo}/manifests/{image.tag}", headers=accept, timeout=5
    )
    assert got.status_code == 200 and sha(got.content) == image.digest
    (rec,) = registry_proxy.matching("GET", "/manifests/")
    assert (
        rec.headers["Accept"] == oci.OCI_MANIFEST and rec.status == 200 and "Authorization" not in rec.headers
    )

    registry_proxy.inject(429, path_contains="/manifests/", headers={"Retry-After": "1"})
    limited = requests.get(
        f"{registry_proxy.url}/v2/{image.repo}/manifests/{image.tag}", headers=accept, timeout=5
    )
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert registry_proxy.requests[-1].injected

    # blobs redirected to another host name; Authorization there is refused like S3 does
    registry_proxy.redirect_blobs = True
    blob_url = f"{registry_proxy.url}/v2/{image.repo}/blobs/{image.info['layers'][0]}"
    first = requests.get(blob_url, allow_redirects=False, timeout=5)
    assert first.status_code == 307 and first.headers["Location"].startswith("http://localhost:")
    blob = requests.get(first.headers["Location"], timeout=5)
    assert sha(blob.content) == image.info["layers"][0]
    partial = requests.get(first.headers["Location"], headers={"Range": "bytes=10-"}, timeout=5)
    assert partial.status_code == 206 and partial.content == blob.content[10:]
    leaked = requests.get(first.headers["Location"], headers={"Authorization": "Bearer x"}, timeout=5)
    assert leaked.status_code == 400 and b"Only one auth mechanism allowed" in leaked.content
    head = requests.head(
        f"{registry_proxy.url}/v2/{image.repo}/manifests/{image.tag}", headers=accept, timeout=5
    )
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(got.content)
