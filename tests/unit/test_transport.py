"""Registry client against a scripted fake server: auth discovery, token cache, retries,
redirects, resumable and verified blob downloads, manifest verification, platforms."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from socker_lib.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError, UnreachableError
from socker_lib.reference import parse
from socker_lib.registry import mediatypes as mt
from socker_lib.registry.pull import choose_platform, download_blob, fetch_manifest, resolve
from socker_lib.registry.transport import Transport, parse_challenge
from socker_lib.settings import Settings

from .fakeregistry import FakeServer


def transport(server, **kw):
    kw.setdefault("backoff", 0.01)
    return Transport(server.host, server.host, Settings(), **kw)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_parse_challenge_with_commas_in_quotes():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }


def test_bearer_token_fetched_once_per_scope_and_refreshed_on_401(monkeypatch):
    monkeypatch.delenv("DOCKER_USERNAME", raising=False)
    tokens = []
    state = {"valid": "t1"}

    def route(h):
        if h.path.startswith("/token"):
            tok = f"t{len(tokens) + 1}"
            tokens.append(h.path)
            state["valid"] = tok
            return h.reply(200, {"token": tok, "expires_in": 300})
        if h.headers.get("Authorization") != f"Bearer {state['valid']}":
            return h.reply(
                401,
                {"errors": [{"code": "UNAUTHORIZED"}]},
                headers={"WWW-Authenticate": f'Bearer realm="{srv.url}/token",service="fake"'},
            )
        return h.reply(200, {"ok": True})

    with FakeServer(route) as srv:
        t = transport(srv)
        scope = "repository:a/b:pull"
        t.request("GET", "/v2/a/b/tags/list", scope=scope)
        t.request("GET", "/v2/a/b/tags/list", scope=scope)
        assert len(tokens) == 1
        assert "scope=repository%3Aa%2Fb%3Apull" in tokens[0] and "service=fake" in tokens[0]
        state["valid"] = "rotated"  # the registry revokes the token: a 401 must fetch a new one
        t.request("GET", "/v2/a/b/tags/list", scope=scope)
        assert len(tokens) == 2


def test_access_token_field_and_basic_credentials_to_realm(monkeypatch):
    monkeypatch.setenv("DOCKER_USERNAME", "alice")
    monkeypatch.setenv("DOCKER_PASSWORD", "s3cret")
    seen = {}

    def route(h):
        if h.path.startswith("/token"):
            seen["auth"] = h.headers.get("Authorization")
            return h.reply(200, {"access_token": "AT"})
        if h.headers.get("Authorization") != "Bearer AT":
            return h.reply(401, headers={"WWW-Authenticate": f'Bearer realm="{srv.url}/token"'})
        return h.reply(200, {})

    with FakeServer(route) as srv:
        transport(srv).request("GET", "/v2/x/manifests/1", scope="repository:x:pull")
    assert seen["auth"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_basic_auth_only_after_challenge_and_wrong_password_is_clear(monkeypatch):
    monkeypatch.setenv("DOCKER_USERNAME", "bob")
    monkeypatch.setenv("DOCKER_PASSWORD", "wrong")

    def route(h):
        return h.reply(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    with FakeServer(route) as srv:
        with pytest.raises(AuthError) as ei:
            transport(srv).request("GET", "/v2/x/manifests/1")
        assert "authentication" in ei.value.message
        assert "wrong" not in ei.value.message and "wrong" not in (ei.value.hint or "")
        assert "Authorization" not in srv.requests[0][2]  # the ping carries no credentials


def test_retry_after_429_then_success():
    calls = []

    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        calls.append(h.path)
        if len(calls) < 3:
            return h.reply(429, {"errors": [{"code": "TOOMANYREQUESTS"}]}, headers={"Retry-After": "0"})
        return h.reply(200, {"ok": 1})

    with FakeServer(route) as srv:
        resp = transport(srv).request("GET", "/v2/x/tags/list")
    assert resp.json() == {"ok": 1} and len(calls) == 3


def test_persistent_5xx_is_a_temporary_error_with_spec_code():
    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        return h.reply(503, {"errors": [{"code": "UNAVAILABLE", "message": "down"}]})

    with FakeServer(route) as srv:
        with pytest.raises(RegistryError) as ei:
            transport(srv, retries=2).request("GET", "/v2/x/tags/list")
    assert ei.value.temporary and ei.value.status == 503 and ei.value.spec_codes == ["UNAVAILABLE"]


def test_not_found_names_the_problem():
    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        return h.reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})

    with FakeServer(route) as srv:
        with pytest.raises(NotFoundError) as ei:
            fetch_manifest(transport(srv), parse(f"{srv.host}/a/b:nope"), "nope")
    assert "a/b:nope" in ei.value.message and "tag" in ei.value.hint


def test_authorization_dropped_on_cross_host_redirect(monkeypatch):
    monkeypatch.setenv("DOCKER_USERNAME", "u")
    monkeypatch.setenv("DOCKER_PASSWORD", "p")
    data = b"blob-bytes" * 1000
    seen = {}

    def cdn(h):
        seen["cdn_auth"] = h.headers.get("Authorization")
        return h.reply(200, data, content_type="application/octet-stream")

    with FakeServer(cdn, host="127.0.0.2") as cdn_srv:

        def route(h):
            if h.headers.get("Authorization") is None:
                return h.reply(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return h.reply(307, headers={"Location": f"{cdn_srv.url}/bucket/blob?sig=1"})

        with FakeServer(route) as srv:
            desc = {"digest": sha(data), "size": len(data)}
            part = tmp = None
            import tempfile
            from pathlib import Path

            tmp = Path(tempfile.mkdtemp())
            part = tmp / "partial"
            download_blob(transport(srv), parse(f"{srv.host}/a/b"), desc, part)
            assert part.read_bytes() == data
    assert seen["cdn_auth"] is None


def test_download_resumes_with_range_after_dropped_connection(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    ranges = []

    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        rng = h.headers.get("Range")
        ranges.append(rng)
        if rng is None:
            # promise everything, send half, then drop the connection
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return None
        start = int(rng.split("=")[1].rstrip("-"))
        return h.reply(
            206,
            data[start:],
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            content_type="application/octet-stream",
        )

    with FakeServer(route) as srv:
        part = tmp_path / "blob"
        download_blob(
            transport(srv), parse(f"{srv.host}/a/b"), {"digest": sha(data), "size": len(data)}, part
        )
    assert part.read_bytes() == data
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"


def test_resume_from_partial_file_left_by_earlier_run(tmp_path):
    data = b"x" * 300_000 + b"y" * 300_000
    part = tmp_path / "blob"
    part.write_bytes(data[:250_000])

    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        start = int(h.headers["Range"].split("=")[1].rstrip("-"))
        return h.reply(206, data[start:], content_type="application/octet-stream")

    with FakeServer(route) as srv:
        download_blob(
            transport(srv), parse(f"{srv.host}/a/b"), {"digest": sha(data), "size": len(data)}, part
        )
    assert part.read_bytes() == data


def test_corrupt_blob_is_rejected_and_partial_removed(tmp_path):
    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        return h.reply(200, b"tampered!", content_type="application/octet-stream")

    with FakeServer(route) as srv:
        part = tmp_path / "blob"
        with pytest.raises(DigestMismatchError):
            download_blob(
                transport(srv), parse(f"{srv.host}/a/b"), {"digest": sha(b"original!"), "size": 9}, part
            )
    assert not part.exists()


def test_manifest_by_digest_is_verified():
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}).encode()

    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        return h.reply(200, body + b" ", content_type=mt.OCI_MANIFEST)  # one byte off

    with FakeServer(route) as srv:
        with pytest.raises(DigestMismatchError):
            fetch_manifest(transport(srv), parse(f"{srv.host}/a/b"), sha(body))


def test_accept_header_names_all_four_manifest_types():
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}).encode()

    def route(h):
        return h.reply(200, body if h.path != "/v2/" else {}, content_type=mt.OCI_MANIFEST)

    with FakeServer(route) as srv:
        fetch_manifest(transport(srv), parse(f"{srv.host}/a/b:1"), "1")
        accept = srv.requests[-1][2]["Accept"]
    for media in (mt.DOCKER_MANIFEST, mt.DOCKER_LIST, mt.OCI_MANIFEST, mt.OCI_INDEX):
        assert media in accept


def test_platform_choice_skips_attestations_and_normalises():
    index = {
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": "sha256:" + "1" * 64,
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": "sha256:" + "2" * 64,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": "sha256:" + "3" * 64,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": "sha256:" + "4" * 64,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
        ]
    }
    ref = parse("x/y")
    assert choose_platform(index, "linux/amd64", ref)["digest"].endswith("2" * 64)
    assert choose_platform(index, "linux/aarch64", ref)["digest"].endswith("3" * 64)
    assert choose_platform(index, "linux/arm64/v8", ref)["digest"].endswith("3" * 64)
    assert choose_platform(index, "linux/armhf", ref)["digest"].endswith("4" * 64)
    with pytest.raises(NotFoundError) as ei:
        choose_platform(index, "linux/s390x", ref)
    assert "linux/amd64" in ei.value.message and "unknown" not in ei.value.message


def test_resolve_follows_index_and_checks_descriptor_size():
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()

    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        if h.path.endswith("/manifests/1"):
            return h.reply(200, index, content_type=mt.OCI_INDEX)
        if h.path.endswith(sha(manifest)):
            return h.reply(200, manifest, content_type=mt.OCI_MANIFEST)
        if h.path.endswith(sha(config)):
            return h.reply(200, config, content_type="application/octet-stream")
        return h.reply(404, {})

    with FakeServer(route) as srv:
        img = resolve(transport(srv), parse(f"{srv.host}/a/b:1"), "linux/amd64")
    assert img.manifest_digest == sha(manifest) and img.index_digest == sha(index)
    assert img.platform == "linux/amd64"


def test_unreachable_registry_is_one_clear_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = Transport(f"127.0.0.1:{port}", f"127.0.0.1:{port}", Settings())
    with pytest.raises(UnreachableError) as ei:
        t.ping()
    assert "cannot reach registry" in ei.value.message


def test_remote_registry_never_uses_plain_http():
    assert not Settings().is_insecure("registry.example.com:5000")
    assert Settings().is_insecure("127.0.0.5:5000") and Settings().is_insecure("localhost:1")
    assert Settings().is_insecure("[::1]:5000")
    assert Settings(insecure_registries=("reg.lan:5000",)).is_insecure("reg.lan:5000")


def test_foreign_layer_fetched_from_urls_when_registry_lacks_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_USERNAME", "u")
    monkeypatch.setenv("DOCKER_PASSWORD", "p")
    data = b"foreign layer bytes" * 100
    seen = {}

    def cdn(h):
        seen["auth"] = h.headers.get("Authorization")
        return h.reply(200, data, content_type="application/octet-stream")

    with FakeServer(cdn, host="127.0.0.3") as cdn_srv:

        def route(h):
            if h.headers.get("Authorization") is None:
                return h.reply(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            if h.path == "/v2/":
                return h.reply(200, {})
            return h.reply(404, {"errors": [{"code": "BLOB_UNKNOWN"}]})

        with FakeServer(route) as srv:
            desc = {
                "mediaType": mt.DOCKER_FOREIGN_GZIP,
                "digest": sha(data),
                "size": len(data),
                "urls": ["ftp://nope.invalid/x", f"{cdn_srv.url}/layer.tar.gz"],
            }
            part = tmp_path / "partial"
            download_blob(transport(srv), parse(f"{srv.host}/a/b"), desc, part)
    assert part.read_bytes() == data and seen["auth"] is None


def test_missing_blob_without_urls_is_not_found(tmp_path):
    def route(h):
        if h.path == "/v2/":
            return h.reply(200, {})
        return h.reply(404, {"errors": [{"code": "BLOB_UNKNOWN"}]})

    with FakeServer(route) as srv:
        with pytest.raises(NotFoundError):
            download_blob(
                transport(srv), parse(f"{srv.host}/a/b"), {"digest": sha(b"x"), "size": 1}, tmp_path / "p"
            )
