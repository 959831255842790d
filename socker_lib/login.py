"""``login``: check credentials against a registry, then store them like ``docker login``."""

from __future__ import annotations

from . import reference as reference_mod
from .errors import AuthError, ReferenceError_
from .registry.credentials import Credentials, store
from .registry.transport import Transport
from .settings import Settings


def registry_of(text: str) -> str:
    """``docker.io``, ``localhost:5000``, ``https://ghcr.io/``, or an image reference → registry."""
    text = text.strip().removeprefix("https://").removeprefix("http://").split("/")[0]
    if text in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
        return reference_mod.DOCKER_HUB
    if "." not in text and ":" not in text and text != "localhost":
        raise ReferenceError_(
            f"{text!r} is not a registry host", "give a host such as registry.example.com:5000"
        )
    return text


def check_credentials(registry: str, creds: Credentials, settings: Settings) -> None:
    """Raise ``AuthError`` unless the registry accepts the credentials."""
    api = reference_mod.DOCKER_HUB_API if registry == reference_mod.DOCKER_HUB else registry
    t = Transport(registry, api, settings, credentials=creds)
    t.ping()
    challenge = t._challenge
    if challenge is None:
        return  # an open registry: nothing to check against
    scheme, params = challenge
    if scheme == "bearer":
        t._fetch_token(params, [])
        return
    resp = t.session.get(t.url("/v2/"), auth=(creds.username, creds.password), timeout=30, verify=t.verify)
    if resp.status_code == 401:
        raise AuthError(f"{registry} refused the username or password", "check them and try again")
    if resp.status_code >= 400:
        raise AuthError(f"{registry} answered HTTP {resp.status_code} to the login")


def login(registry_text: str, username: str, password: str, settings: Settings | None = None) -> str:
    settings = settings or Settings.load()
    if not username or not password:
        raise AuthError("a username and a password are needed", "use -u USER and --password-stdin")
    registry = registry_of(registry_text)
    creds = Credentials(username, password)
    check_credentials(registry, creds, settings)
    return store(registry, creds)
