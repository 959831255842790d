"""Registry credentials: ``DOCKER_USERNAME``/``DOCKER_PASSWORD`` first (as the seed does),
else ``~/.docker/config.json`` (``auths``, ``credHelpers``, ``credsStore``).

Credentials are never logged or printed; ``Credentials.__repr__`` hides the secret.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AuthError
from ..reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret={'***' if self.password or self.identity_token else None})"


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _auth_keys(registry: str) -> list[str]:
    if registry == DOCKER_HUB:
        return [DOCKER_HUB_AUTH_KEY, "docker.io", "index.docker.io", "registry-1.docker.io",
                "https://index.docker.io/v1", "https://registry-1.docker.io"]
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]


def _from_helper(helper: str, server: str) -> Credentials | None:
    exe = f"docker-credential-{helper}"
    try:
        out = subprocess.run([exe, "get"], input=server.encode(), capture_output=True, timeout=30)
    except FileNotFoundError as e:
        raise AuthError(f"credential helper {exe} is configured but not installed",
                        f"install {exe} or remove it from {docker_config_path()}") from e
    if out.returncode != 0:
        return None  # "credentials not found" is an answer, not an error
    data = json.loads(out.stdout)
    user, secret = data.get("Username"), data.get("Secret")
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret)


def lookup(registry: str) -> Credentials | None:
    """Find credentials for a registry as the user typed it (``docker.io`` for Hub)."""
    user, password = os.environ.get("DOCKER_USERNAME"), os.environ.get("DOCKER_PASSWORD")
    if user and password:
        return Credentials(user, password)
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AuthError(f"cannot read {path}: {e}", "fix or remove the file") from e
    keys = _auth_keys(registry)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], keys[0])
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password"))
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], keys[0])
    return None
