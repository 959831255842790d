"""HTTP to a registry: scheme choice, auth discovered from ``WWW-Authenticate``, retries.

One ``Transport`` per registry host. Bearer tokens are cached per scope until they expire and
fetched again on a 401; Basic credentials are sent only after the registry asked for them.
``Authorization`` is never sent to another host on a redirect. 429, 5xx and dropped
connections are retried with backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from ..errors import AuthError, ConfigError, NotFoundError, RegistryError, UnreachableError
from ..settings import Settings
from . import credentials as creds_mod

USER_AGENT = "socker/0.1"
_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ``("bearer", {...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM.finditer(rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


@dataclass
class _Token:
    value: str
    expires: float


class Transport:
    """Authenticated, retrying HTTP to one registry."""

    def __init__(
        self,
        registry: str,
        api_host: str,
        settings: Settings,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        credentials=None,
        actions: str = "pull",
    ):
        self.registry = registry
        self.host = api_host
        self.settings = settings
        self.retries = retries
        self.backoff = backoff
        self.actions = actions
        self._creds = credentials
        self._creds_loaded = credentials is not None
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple, _Token] = {}
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's verify
        self.verify = settings.ca_cert or True
        if settings.ca_cert and not os.path.isfile(settings.ca_cert):
            raise ConfigError(
                f"CA certificate file {settings.ca_cert} does not exist",
                "pass the PEM file that signed the registry's certificate",
            )
        self.base = None  # scheme://host, decided by ping()

    # -- scheme and challenge -------------------------------------------------
    def ping(self) -> None:
        """``GET /v2/``: pick the scheme (plain HTTP only where allowed) and learn the challenge."""
        # loopback/insecure registries are nearly always plain HTTP: try that first (a TLS
        # server answers a plain request with 400 at once, so falling back is cheap)
        schemes = ["http", "https"] if self.settings.is_insecure(self.host) else ["https"]
        last: Exception | None = None
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            try:
                resp = self._send("GET", base + "/v2/", {}, stream=False, timeout=30)
            except requests.exceptions.SSLError as e:
                last = e
                continue
            except requests.exceptions.ConnectionError as e:
                last = e
                continue
            if scheme == "http" and resp.status_code == 400 and len(schemes) > 1:
                last = RegistryError("plain HTTP request to a TLS server")
                continue
            self.base = base
            if resp.status_code == 401 and "WWW-Authenticate" in resp.headers:
                self._challenge = parse_challenge(resp.headers["WWW-Authenticate"])
            elif resp.status_code >= 500:
                raise RegistryError(
                    f"registry {self.registry} answered HTTP {resp.status_code} to /v2/",
                    "the registry is unwell; try again later",
                    status=resp.status_code,
                    temporary=True,
                )
            return
        if isinstance(last, requests.exceptions.SSLError):
            raise UnreachableError(
                f"TLS failure talking to {self.registry}: {_tls_reason(last)}",
                "pass --ca-cert FILE (or set ca_cert) for a private CA, or list the registry in insecure_registries",
            )
        raise UnreachableError(
            f"cannot reach registry {self.registry} ({self.host}): {_short(last)}",
            "check the address and that the registry is running",
        )

    # -- credentials and tokens -------------------------------------------------
    @property
    def credentials(self):
        if not self._creds_loaded:
            self._creds = creds_mod.lookup(self.registry)
            self._creds_loaded = True
        return self._creds

    def _auth_header(self, scope: str | None, *, fresh: bool = False) -> str | None:
        if not self._challenge:
            return None
        scheme, params = self._challenge
        if scheme == "basic":
            c = self.credentials
            if c and c.username and c.password is not None:
                raw = f"{c.username}:{c.password}".encode()
                return "Basic " + base64.b64encode(raw).decode()
            return None
        if scheme == "bearer":
            return "Bearer " + self._token(params, scope, fresh)
        return None

    def _token(self, params: dict[str, str], scope: str | None, fresh: bool) -> str:
        scopes = [s for s in [params.get("scope"), scope] if s]
        key = (params.get("realm"), params.get("service"), tuple(sorted(set(scopes))))
        with self._lock:
            tok = self._tokens.get(key)
            if tok and not fresh and tok.expires > time.monotonic():
                return tok.value
            tok = self._fetch_token(params, sorted(set(scopes)))
            self._tokens[key] = tok
            return tok.value

    def _fetch_token(self, params: dict[str, str], scopes: list[str]) -> _Token:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.registry} sent a Bearer challenge without a realm")
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        c = self.credentials
        try:
            if c and c.identity_token:
                form = dict(
                    query[:1],
                    grant_type="refresh_token",
                    refresh_token=c.identity_token,
                    client_id="socker",
                    scope=" ".join(scopes),
                )
                resp = self.session.post(realm, data=form, timeout=60, verify=self.verify)
            else:
                auth = (c.username, c.password) if c and c.username and c.password is not None else None
                resp = self.session.get(realm, params=query, auth=auth, timeout=60, verify=self.verify)
        except requests.exceptions.RequestException as e:
            raise UnreachableError(f"cannot reach the token server of {self.registry}: {_short(e)}") from e
        if resp.status_code in (401, 403):
            raise AuthError(
                f"{self.registry} refused the credentials for {' '.join(scopes) or 'access'}",
                _login_hint(self.registry),
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"token server of {self.registry} answered HTTP {resp.status_code}",
                status=resp.status_code,
                temporary=resp.status_code >= 500,
            )
        body = resp.json()
        value = body.get("token") or body.get("access_token")
        if not value:
            raise AuthError(f"token server of {self.registry} sent no token")
        expires_in = int(body.get("expires_in") or 60)
        # refresh a little early so a token never expires in flight
        return _Token(value, time.monotonic() + max(expires_in - 10, expires_in / 2))

    # -- requests ------------------------------------------------------------
    def url(self, path: str) -> str:
        if self.base is None:
            self.ping()
        return path if path.startswith(("http://", "https://")) else self.base + path

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        headers: dict | None = None,
        stream: bool = False,
        data=None,
        ok=(200,),
        what: str = "",
        timeout: float = 60,
        follow: bool = True,
        retry: bool = True,
    ) -> requests.Response:
        """Send with auth, retries and safe redirects; raise ``RegistryError`` unless status in ``ok``.

        ``data`` may be a callable returning the body, so that a retry can send it again;
        ``retry=False`` leaves recovery to the caller (e.g. a chunk the registry may have got).
        """
        url = self.url(path)
        refreshed = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self._auth_header(scope, fresh=False)
            if auth:
                hdrs["Authorization"] = auth
            body = data() if callable(data) else data  # a callable makes a fresh body per attempt
            try:
                resp = self._send(method, url, hdrs, stream=stream, data=body, timeout=timeout, follow=follow)
            except requests.exceptions.RequestException as e:
                if not retry or attempt >= self.retries or not _retryable_exc(e):
                    raise UnreachableError(
                        f"lost connection to {self.registry} {what}: {_short(e)}".replace("  ", " "),
                        "check the network and the registry, then run the command again",
                    ) from e
                self._sleep(attempt, None)
                attempt += 1
                continue
            if resp.status_code == 401 and not refreshed:
                challenge = resp.headers.get("WWW-Authenticate")
                if challenge:
                    self._challenge = parse_challenge(challenge)
                    _drain(resp)
                    refreshed = True
                    with self._lock:
                        self._tokens.clear()
                    continue
            if retry and (resp.status_code == 429 or resp.status_code >= 500) and attempt < self.retries:
                _drain(resp)
                self._sleep(attempt, resp.headers.get("Retry-After"))
                attempt += 1
                continue
            if resp.status_code not in ok:
                raise error_from(resp, self.registry, what)
            return resp

    def _send(self, method, url, headers, *, stream=False, data=None, timeout=60, follow=True):
        for _ in range(10):
            resp = self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                stream=stream,
                timeout=timeout,
                allow_redirects=False,
                verify=self.verify,
            )
            if (
                not follow
                or resp.status_code not in (301, 302, 303, 307, 308)
                or "Location" not in resp.headers
            ):
                return resp
            target = urljoin(url, resp.headers["Location"])
            _drain(resp)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
            if resp.status_code == 303:
                method, data = "GET", None
        raise RegistryError(f"too many redirects from {self.registry}")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2**attempt)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass
        time.sleep(delay)


#: a dropped, refused or timed-out connection, as requests or urllib3 (mid-stream) report it
NET_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)


def _retryable_exc(e: Exception) -> bool:
    return isinstance(e, NET_ERRORS)


def _drain(resp: requests.Response) -> None:
    try:
        resp.content  # noqa: B018 - read so the connection can be reused
    except requests.exceptions.RequestException:
        pass
    resp.close()


def _short(e: Exception | None) -> str:
    text = str(e) if e else "unknown error"
    m = re.search(
        r"\[Errno -?\d+\] ([^'\")]+)|(Connection refused|Name or service not known|timed out)", text
    )
    if m:
        return (m.group(1) or m.group(2)).strip()
    return text if len(text) < 160 else text[:157] + "..."


def _tls_reason(e: Exception) -> str:
    text = str(e)
    for pattern in (
        r"certificate verify failed: ([^(\]']+)",
        r"(wrong version number)",
        r"\[SSL: ([A-Z_]+)\]",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip()
    return _short(e)


def _login_hint(registry: str) -> str:
    return (
        f"set DOCKER_USERNAME and DOCKER_PASSWORD, or log in to {registry} so that "
        "~/.docker/config.json has credentials"
    )


def error_from(resp: requests.Response, registry: str, what: str) -> RegistryError:
    """Turn a registry answer into a ``RegistryError`` carrying the spec's codes."""
    errors: list[dict] = []
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            errors = [e for e in body["errors"] if isinstance(e, dict)]
    except ValueError:
        pass
    codes = {str(e.get("code")) for e in errors}
    status = resp.status_code
    what = f" {what}" if what else ""
    detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    detail = f" ({detail})" if detail else ""
    kw = dict(status=status, errors=errors)
    if status == 401:
        return AuthError(f"{registry} requires authentication{what}{detail}", _login_hint(registry), **kw)
    if status == 403 or "DENIED" in codes:
        return AuthError(
            f"{registry} denied access{what}{detail}",
            "check that your account may access this repository",
            **kw,
        )
    if status == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"}:
        if "NAME_UNKNOWN" in codes:
            hint = "check the repository name (Docker Hub official images live under library/)"
        elif "MANIFEST_UNKNOWN" in codes:
            hint = "check the tag or digest; list tags in the registry's web UI or with skopeo list-tags"
        else:
            hint = "check the image name and tag"
        return NotFoundError(f"not found on {registry}{what}{detail}", hint, **kw)
    return RegistryError(
        f"{registry} answered HTTP {status}{what}{detail}",
        "try again later" if status >= 500 or status == 429 else None,
        temporary=status >= 500 or status == 429,
        **kw,
    )
