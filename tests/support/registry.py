"""Real registries for integration tests: the CNCF distribution registry (``docker-registry`` 2.8)
on loopback, anonymous, with htpasswd Basic auth, or with Bearer tokens from ``TokenServer``.

``start_registry`` / ``running_registry`` start ``docker-registry serve CONFIG`` with a config of
its own (storage, log and config under a private work dir, ``http.addr`` 127.0.0.1 on a free port,
delete enabled) and wait until ``GET /v2/`` answers. ``Registry`` pushes OCI layouts with skopeo
and reads manifests back. Credentials never appear in argv: skopeo gets an authfile (mode 0600).

How docker-registry 2.8 checks tokens (registry/auth/token/token.go): ``iss`` must equal the
configured ``issuer``, ``aud`` (a plain string) the ``service``; ``exp``/``nbf`` are checked with
60 s of leeway, so a token stays usable at the registry up to 60 s past its ``exp``; the signing
key comes from the JWT header: ``x5c`` (a certificate chain that must verify against
``rootcertbundle``; a self-signed certificate that is itself in the bundle does), else ``jwk``,
else ``kid`` (a libtrust fingerprint of a bundle key). We send ``x5c``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import oci

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "socker-test-registry"
ISSUER = "socker-test-issuer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a file only its owner can read (created 0600, never world-readable in between)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def write_authfile(path, creds: dict[str, tuple[str, str]]) -> Path:
    """A containers-auth.json / ``~/.docker/config.json``: ``{"auths": {host: {"auth": b64}}}``."""
    auths = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in creds.items()
    }
    return write_private(Path(path), json.dumps({"auths": auths}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Certificates and JWTs


def make_signing_cert(workdir: Path, common_name: str = ISSUER):
    """A self-signed RSA-2048 certificate for signing tokens: (key object, cert DER, cert PEM path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pem_path = Path(workdir) / "token-signing.crt"
    pem_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        Path(workdir) / "token-signing.key",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return key, cert.public_bytes(serialization.Encoding.DER), pem_path


def sign_jwt(claims: dict, key, cert_der: bytes) -> str:
    """RS256 JWT with the certificate in ``x5c`` (what docker-registry 2.8 verifies against)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert_der).decode()]}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, without verifying it."""

    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    header, claims, _ = token.split(".")
    return part(header), part(claims)


def parse_scope(scope: str) -> dict | None:
    """``repository:name/with:colons:pull,push`` -> ``{"type", "name", "actions"}``."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


# ---------------------------------------------------------------------------------------------
# Token server


@dataclass
class TokenRequest:
    """One request the token server received, as seen on the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, list[str]]
    authorization: str | None  # the raw Authorization header
    basic_user: str | None  # user name sent with Basic auth (right password or not)
    user: str | None  # authenticated user, None for anonymous or refused
    scopes: list[str]
    service: str | None
    status: int = 0
    granted: list[dict] = field(default_factory=list)
    token: str | None = None
    time: float = field(default_factory=time.time)


class TokenServer:
    """A Docker-token-spec authorization server (``GET /token``; OAuth2 ``POST /token`` too).

    Users in ``users`` ({name: password}) get ``user_actions`` on every requested repository;
    anonymous requests get ``anonymous_actions`` (``None``: anonymous requests are refused with
    401). A wrong password is refused with 401. Everything is recorded in ``requests``;
    attributes may be changed while it runs:

    - ``expires_in``: seconds announced in the answer (``None``: the field is left out);
    - ``jwt_lifetime``: ``exp - iat`` in the JWT (default: ``expires_in`` or 60). Remember the
      registry's 60 s leeway: a JWT with ``jwt_lifetime=-120`` is refused at once.
    - ``response_keys``: which of ``token``/``access_token`` the answer carries;
    - ``claims_hook(claims, request) -> claims``: rewrite claims before signing;
    - ``fail_next``: a list of HTTP statuses to answer (and pop) before normal service.
    """

    def __init__(
        self,
        workdir,
        *,
        users: dict[str, str] | None = None,
        service: str = SERVICE,
        issuer: str = ISSUER,
        expires_in: int | None = 300,
        anonymous_actions: tuple[str, ...] | None = ("pull",),
        user_actions: tuple[str, ...] = ("pull", "push", "delete"),
    ):
        self.workdir = Path(workdir)
        self.users = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.jwt_lifetime: int | None = None
        self.anonymous_actions = anonymous_actions
        self.user_actions = user_actions
        self.response_keys: tuple[str, ...] = ("token", "access_token")
        self.claims_hook = None
        self.fail_next: list[int] = []
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.key, self.cert_der, self.cert_path = make_signing_cert(self.workdir, issuer)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.realm = self.url + "/token"
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    # -- public helpers

    def reset(self) -> None:
        """Forget recorded requests (keeps users and settings)."""
        with self._lock:
            self.requests.clear()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        """A token as the server would grant it to ``user`` (None: anonymous) for ``scopes``."""
        return self._make_token(user, self._grant(user, scopes))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- policy

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        allowed = self.user_actions if user is not None else (self.anonymous_actions or ())
        granted = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            if parsed["type"] == "repository":
                actions = [a for a in parsed["actions"] if a in allowed or "*" in allowed]
            elif parsed["type"] == "registry" and user is not None and "*" in self.user_actions:
                actions = parsed["actions"]
            else:
                actions = []
            granted.append({"type": parsed["type"], "name": parsed["name"], "actions": actions})
        return granted

    def _make_token(self, user: str | None, access: list[dict], request: TokenRequest | None = None) -> str:
        now = int(time.time())
        lifetime = self.jwt_lifetime
        if lifetime is None:
            lifetime = self.expires_in if self.expires_in is not None else 60
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        if self.claims_hook is not None:
            claims = self.claims_hook(claims, request)
        return sign_jwt(claims, self.key, self.cert_der)

    def _check_basic(self, authorization: str | None) -> tuple[str | None, str | None, bool]:
        """(basic user name, authenticated user, credentials were wrong)."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None, None, False
        try:
            raw = base64.b64decode(authorization.split(None, 1)[1].strip(), validate=True).decode()
            name, _, password = raw.partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None, True
        if name in self.users and secrets.compare_digest(self.users[name], password):
            return name, name, False
        return name, None, True

    def _answer(self, req: TokenRequest) -> tuple[int, dict]:
        if self.fail_next:
            status = self.fail_next.pop(0)
            return status, {"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]}
        basic_user, user, wrong = self._check_basic(req.authorization)
        req.basic_user = basic_user
        grant_type = (req.form.get("grant_type") or [None])[0]
        if req.method == "POST" and grant_type == "password":
            name = (req.form.get("username") or [""])[0]
            password = (req.form.get("password") or [""])[0]
            req.basic_user = name
            ok = name in self.users and secrets.compare_digest(self.users[name], password)
            user, wrong = (name, False) if ok else (None, True)
        elif req.method == "POST" and grant_type == "refresh_token":
            refresh = (req.form.get("refresh_token") or [""])[0]
            user = self.refresh_tokens.get(refresh)
            wrong = user is None
        elif req.method == "POST":
            return 400, {"error": "unsupported_grant_type"}
        if wrong:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        if user is None and self.anonymous_actions is None:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        req.user = user
        req.granted = self._grant(user, req.scopes)
        token = self._make_token(user, req.granted, req)
        req.token = token
        body: dict = {k: token for k in self.response_keys}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        body["issued_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if req.method == "POST" and user is not None:
            refresh = secrets.token_hex(16)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
            body["scope"] = " ".join(req.scopes)
        return 200, body

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
                pass

            def _serve(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
                form: dict[str, list[str]] = {}
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                if parsed.path.rstrip("/") != "/token":
                    self._send(404, {"errors": [{"code": "NOT_FOUND", "message": parsed.path}]})
                    return
                scopes: list[str] = []
                for value in query.get("scope", []) + form.get("scope", []):
                    scopes.extend(value.split(" "))  # OAuth2 joins scopes with spaces
                service = (query.get("service") or form.get("service") or [None])[0]
                req = TokenRequest(
                    method=method,
                    path=self.path,
                    query=query,
                    headers=dict(self.headers.items()),
                    form=form,
                    authorization=self.headers.get("Authorization"),
                    basic_user=None,
                    user=None,
                    scopes=[s for s in scopes if s],
                    service=service,
                )
                with server._lock:
                    status, body = server._answer(req)
                    req.status = status
                    server.requests.append(req)
                self._send(status, body)

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="socker-test-token"')
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

        return Handler


# ---------------------------------------------------------------------------------------------
# skopeo


def _skopeo(args: list[str], *, what: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = ["skopeo", "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')}"
        )
    return proc


def docker_ref(ref: str) -> str:
    return ref if ref.startswith("docker://") else "docker://" + ref


def tagged_descriptor(layout_dir, tag: str) -> dict:
    index = json.loads(Path(layout_dir, "index.json").read_text())
    for desc in index.get("manifests", []):
        if (desc.get("annotations") or {}).get(oci.REF_NAME) == tag:
            return desc
    raise KeyError(f"no tag {tag!r} in {layout_dir}/index.json")


def layout_to_dir_transport(layout_dir, tag: str, dest) -> Path:
    """Re-stage ``layout_dir:tag`` as a skopeo ``dir:`` directory (hardlinked blobs).

    skopeo 1.9's ``oci:`` source only finds tags whose index.json descriptor has an OCI media
    type, so Docker schema2 manifests and lists go through ``dir:``, which keeps them byte for
    byte (``manifest.json`` = the top manifest, ``HEX.manifest.json`` = each instance).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "version").write_text("Directory Transport Version: 1.1\n")

    def link_blob(digest: str) -> None:
        target = dest / digest.split(":", 1)[1]
        if not target.exists():
            src = Path(layout_dir, "blobs", *digest.split(":", 1))
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)

    def add_manifest(raw: bytes) -> None:
        manifest = json.loads(raw)
        for desc in [manifest.get("config"), *manifest.get("layers", [])]:
            if desc:
                link_blob(desc["digest"])

    top_desc = tagged_descriptor(layout_dir, tag)
    top = oci.read_blob(layout_dir, top_desc["digest"])
    (dest / "manifest.json").write_bytes(top)
    parsed = json.loads(top)
    if "manifests" in parsed:
        for desc in parsed["manifests"]:
            raw = oci.read_blob(layout_dir, desc["digest"])
            (dest / (desc["digest"].split(":", 1)[1] + ".manifest.json")).write_bytes(raw)
            add_manifest(raw)
    else:
        add_manifest(top)
    return dest


def skopeo_push(
    layout_dir, tag: str, dest_ref: str, *, authfile=None, all_platforms: bool | None = None
) -> str:
    """Push ``layout_dir:tag`` to ``dest_ref`` (``HOST/REPO[:TAG]``) exactly; return the pushed digest.

    ``all_platforms`` None: every instance if the tag is an index/list (``--all``), else one image.
    Docker media types are staged through ``dir:`` (see ``layout_to_dir_transport``).
    """
    desc = tagged_descriptor(layout_dir, tag)
    is_list = desc["mediaType"] in (oci.OCI_INDEX, oci.DOCKER_LIST)
    if all_platforms is None:
        all_platforms = is_list
    with tempfile.TemporaryDirectory(prefix="skopeo-push-", dir=Path(layout_dir).parent) as tmp:
        if desc["mediaType"] in (oci.DOCKER_MANIFEST, oci.DOCKER_LIST):
            source = "dir:" + str(layout_to_dir_transport(layout_dir, tag, Path(tmp, "dir")))
        else:
            source = f"oci:{layout_dir}:{tag}"
        digestfile = Path(tmp, "digest")
        args = ["copy", "--quiet", "--preserve-digests", "--retry-times", "0", "--dest-tls-verify=false"]
        args += ["--digestfile", str(digestfile)]
        if authfile:
            args += ["--authfile", str(authfile)]
        if all_platforms:
            args.append("--all")
        _skopeo([*args, source, docker_ref(dest_ref)], what=f"push {layout_dir}:{tag}")
        return digestfile.read_text().strip()


def skopeo_inspect_raw(ref: str, *, authfile=None) -> bytes:
    args = ["inspect", "--raw", "--retry-times", "0", "--tls-verify=false"]
    if authfile:
        args += ["--authfile", str(authfile)]
    return _skopeo([*args, docker_ref(ref)], what=f"inspect {ref}").stdout


# ---------------------------------------------------------------------------------------------
# The registry process


@dataclass
class Registry:
    """A running docker-registry. ``auth`` is ``none``, ``htpasswd`` or ``token``."""

    workdir: Path
    port: int
    auth: str
    process: subprocess.Popen
    config_path: Path
    log_path: Path
    storage_dir: Path
    authfile: Path
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repo_ref: str) -> str:
        """``repo:tag`` -> ``127.0.0.1:PORT/repo:tag`` (a ref already on this host is kept)."""
        repo_ref = repo_ref.removeprefix("docker://")
        return repo_ref if repo_ref.startswith(self.host + "/") else f"{self.host}/{repo_ref}"

    # -- skopeo

    def push_layout(self, layout_dir, tag: str, repo_ref: str, all_platforms: bool | None = None) -> str:
        """Push ``layout_dir:tag`` to ``repo_ref`` (``repo``, ``repo:tag``; default tag ``tag``).

        Returns the digest of what the tag now points at. See ``skopeo_push``.
        """
        last = repo_ref.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            repo_ref = f"{repo_ref}:{tag}"
        return skopeo_push(
            layout_dir, tag, self.ref(repo_ref), authfile=self.authfile, all_platforms=all_platforms
        )

    def inspect_raw(self, ref: str) -> bytes:
        """The manifest bytes the registry holds for ``ref`` (``skopeo inspect --raw``)."""
        return skopeo_inspect_raw(self.ref(ref), authfile=self.authfile)

    def manifest(self, ref: str) -> dict:
        return json.loads(self.inspect_raw(ref))

    def pull_to_layout(self, ref: str, layout_dir, tag: str, **kw) -> Path:
        """Copy ``ref`` into an OCI layout (see ``tests.support.umoci.skopeo_to_layout``)."""
        from tests.support.umoci import skopeo_to_layout

        return skopeo_to_layout(self.ref(ref), layout_dir, tag, authfile=self.authfile, **kw)

    # -- credentials

    def write_docker_config(self, directory) -> Path:
        """``DIR/config.json`` with this registry's credentials (for ``DOCKER_CONFIG=DIR``)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        creds = {self.host: (self.username, self.password)} if self.username else {}
        return write_authfile(Path(directory) / "config.json", creds)

    # -- HTTP

    def token(self, *scopes: str, anonymous: bool = False) -> str:
        """A Bearer token from the token server (as the user, or anonymous)."""
        import requests

        assert self.token_server is not None, "not a token registry"
        auth = None if anonymous else (self.username, self.password)
        r = requests.get(
            self.token_server.realm,
            params={"service": self.token_server.service, "scope": list(scopes)},
            auth=auth,
            timeout=10,
        )
        r.raise_for_status()
        body = r.json()
        return body.get("token") or body["access_token"]

    def request(self, method: str, path: str, *, authenticated: bool = True, scopes=(), **kw):
        """One HTTP request to the registry API (``path`` like ``/v2/REPO/manifests/TAG``).

        ``authenticated``: Basic credentials (htpasswd) or a Bearer token for ``scopes`` (token).
        """
        import requests

        headers = dict(kw.pop("headers", {}) or {})
        auth = None
        if authenticated and self.auth == "htpasswd":
            auth = (self.username, self.password)
        elif authenticated and self.auth == "token":
            headers["Authorization"] = "Bearer " + self.token(*scopes)
        kw.setdefault("timeout", 10)
        return requests.request(method, self.url + path, headers=headers, auth=auth, **kw)

    # -- process

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process)
        if self.token_server is not None:
            self.token_server.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so no registry outlives a killed run."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(proc: subprocess.Popen, grace: float = 5) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def registry_config(storage_dir: Path, port: int, auth_section: dict | None, extra: dict | None) -> dict:
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if auth_section:
        config["auth"] = auth_section
    return deep_merge(config, extra or {})


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line (``htpasswd -Bbn``; the password is in argv only of this local tool)."""
    out = subprocess.run(
        ["htpasswd", "-Bbn", username, password], capture_output=True, text=True, check=True
    ).stdout
    return out.strip() + "\n"


def start_registry(
    workdir,
    *,
    auth: str = "none",
    username: str = "tester",
    password: str | None = None,
    token_options: dict | None = None,
    extra_config: dict | None = None,
    timeout: float = 20,
) -> Registry:
    """Start a docker-registry under ``workdir`` (created); see the module doc.

    ``auth``: ``none`` | ``htpasswd`` | ``token``. ``password``: random by default.
    ``token_options``: keyword arguments for ``TokenServer``. ``extra_config``: deep-merged into
    the generated config (e.g. ``{"proxy": {...}}``). Raises RuntimeError with the log tail if
    the registry does not come up.
    """
    if auth not in ("none", "htpasswd", "token"):
        raise ValueError(f"unknown auth {auth!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage_dir = workdir / "storage"
    storage_dir.mkdir(exist_ok=True)
    token_server = None
    auth_section = None
    if auth == "none":
        username = password = None
    else:
        password = password or secrets.token_urlsafe(12)
    if auth == "htpasswd":
        htpasswd = write_private(workdir / "htpasswd", htpasswd_line(username, password))
        auth_section = {"htpasswd": {"realm": "socker-test", "path": str(htpasswd)}}
    elif auth == "token":
        token_server = TokenServer(workdir, users={username: password}, **(token_options or {}))
        auth_section = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(token_server.cert_path),
            }
        }
    authfile = workdir / "auth.json"
    write_authfile(authfile, {})  # credentials are added once the port is known

    last_error = None
    for _attempt in range(3):  # free_port() can race with another process: retry on a new port
        port = free_port()
        config = registry_config(storage_dir, port, auth_section, extra_config)
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        log_path = workdir / "registry.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        reg = Registry(
            workdir=workdir,
            port=port,
            auth=auth,
            process=proc,
            config_path=config_path,
            log_path=log_path,
            storage_dir=storage_dir,
            authfile=authfile,
            username=username,
            password=password,
            token_server=token_server,
        )
        try:
            _wait_ready(reg, timeout)
        except RuntimeError as exc:
            stop_process(proc)
            last_error = exc
            if "address already in use" in reg.log_text():
                continue
            break
        if username is not None:
            write_authfile(authfile, {reg.host: (username, password)})
        return reg
    if token_server is not None:
        token_server.stop()
    raise last_error or RuntimeError("docker-registry did not start")


def _wait_ready(reg: Registry, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with {reg.process.returncode}; log tail:\n{reg.log_tail()}"
            )
        try:
            r = requests.get(reg.url + "/v2/", timeout=1)
            if r.status_code in (200, 401):
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"docker-registry did not answer on {reg.url} in {timeout}s; log tail:\n{reg.log_tail()}"
    )


@contextlib.contextmanager
def running_registry(workdir, **kw):
    """``with running_registry(tmp, auth="token") as reg: ...`` (stopped at the end)."""
    reg = start_registry(workdir, **kw)
    try:
        yield reg
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
# A recording, fault-injecting proxy in front of a registry

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
}


@dataclass
class ProxyRequest:
    """One request the proxy received from the client, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    injected: bool = False
    time: float = field(default_factory=time.time)


@dataclass
class Fault:
    status: int
    path_contains: str = ""
    method: str | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


#: ``inject(DROP, ...)``: close the connection without forwarding or answering.
DROP = 0
#: ``inject(DROP_FORWARDED, ...)``: forward to the registry, then close without answering.
DROP_FORWARDED = -1


class RecordingProxy:
    """An HTTP proxy on loopback in front of ``target_url`` (a registry) that records every request.

    Clients talk to ``.host``/``.url`` as if it were the registry (the Host header is passed
    through, so the registry's ``Location`` headers point back at the proxy). ``requests`` holds
    a ``ProxyRequest`` per request (headers as received: check which carried ``Authorization``).

    - ``inject(status, path_contains=, method=, times=, headers=, body=)``: answer matching
      requests with ``status`` instead of forwarding them (e.g. 503, or 429 + Retry-After).
    - ``redirect_blobs``: a successful ``GET /v2/NAME/blobs/DIGEST`` is answered with a 307 to
      ``http://localhost:PORT/_cdn/...``, another host name, like S3/CDN redirects; the blob is
      served from there without auth, and a request that arrives there with an
      ``Authorization`` header is answered 400 (as S3 does) and recorded like any other.
    """

    def __init__(self, target_url: str):
        self.target = urllib.parse.urlsplit(target_url)
        self.requests: list[ProxyRequest] = []
        self.faults: list[Fault] = []
        self.redirect_blobs = False
        self._cdn: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.cdn_url = f"http://localhost:{self.port}/_cdn"
        self._thread = threading.Thread(target=self._server.serve_forever, name="registry-proxy", daemon=True)
        self._thread.start()

    def inject(
        self,
        status: int,
        *,
        path_contains: str = "",
        method: str | None = None,
        times: int = 1,
        headers=None,
        body=b"",
    ) -> Fault:
        fault = Fault(status, path_contains, method, times, dict(headers or {}), body)
        with self._lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    def matching(self, method: str | None = None, path_contains: str = "") -> list[ProxyRequest]:
        return [
            r for r in self.requests if (method is None or r.method == method) and path_contains in r.path
        ]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.path_contains in path and fault.method in (None, method):
                    fault.times -= 1
                    return fault
        return None

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes):
        import http.client

        conn = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=60)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
            conn.request(
                method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None, headers=out
            )
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], data
        finally:
            conn.close()

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                method = self.command
                body = self._body()
                headers = dict(self.headers.items())
                rec = ProxyRequest(method, self.path, headers, len(body))
                with proxy._lock:
                    proxy.requests.append(rec)
                if self.path.startswith("/_cdn/"):
                    self._serve_cdn(rec)
                    return
                fault = proxy._take_fault(method, self.path)
                if fault is not None and fault.status == DROP_FORWARDED:
                    # the registry gets the request, the client never hears back
                    rec.injected = True
                    proxy._forward(method, self.path, headers, body)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.status == DROP:
                    rec.injected = True
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    rec.injected = True
                    self._reply(rec, fault.status, list(fault.headers.items()), fault.body)
                    return
                status, resp_headers, data = proxy._forward(method, self.path, headers, body)
                if (
                    proxy.redirect_blobs
                    and method == "GET"
                    and status == 200
                    and "/blobs/sha256:" in self.path
                ):
                    key = secrets.token_hex(8)
                    keep = {
                        k: v
                        for k, v in resp_headers
                        if k.lower() in ("content-type", "docker-content-digest")
                    }
                    proxy._cdn[key] = (data, keep)
                    location = f"{proxy.cdn_url}/{key}?X-Amz-Signature={secrets.token_hex(8)}"
                    self._reply(rec, 307, [("Location", location)], b"")
                    return
                self._reply(
                    rec, status, resp_headers, data if method != "HEAD" else b"", head=method == "HEAD"
                )

            def _serve_cdn(self, rec: ProxyRequest) -> None:
                key = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[-1]
                if "Authorization" in self.headers:
                    msg = b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>"
                    self._reply(rec, 400, [("Content-Type", "application/xml")], msg)
                    return
                if key not in proxy._cdn:
                    self._reply(rec, 404, [], b"")
                    return
                data, headers = proxy._cdn[key]
                status, extra = 200, []
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng[6:].endswith("-") and rng[6:-1].isdigit():
                    start = int(rng[6:-1])
                    extra = [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")]
                    data, status = data[start:], 206
                self._reply(rec, status, [*headers.items(), *extra], data if self.command != "HEAD" else b"")

            def _reply(
                self, rec: ProxyRequest, status: int, headers, data: bytes, head: bool = False
            ) -> None:
                rec.status = status
                rec.response_headers = dict(headers)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                if head:
                    length = rec.response_headers.get("Content-Length") or rec.response_headers.get(
                        "content-length"
                    )
                    self.send_header("Content-Length", length or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        return Handler
