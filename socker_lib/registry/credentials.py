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
        return [
            DOCKER_HUB_AUTH_KEY,
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1",
            "https://registry-1.docker.io",
        ]
    return [
        registry,
        f"https://{registry}",
        f"http://{registry}",
        f"https://{registry}/v1/",
        f"https://{registry}/v2/",
    ]


def _from_helper(helper: str, server: str) -> Credentials | None:
    exe = f"docker-credential-{helper}"
    try:
        out = subprocess.run([exe, "get"], input=server.encode(), capture_output=True, timeout=30)
    except FileNotFoundError as e:
        raise AuthError(
            f"credential helper {exe} is configured but not installed",
            f"install {exe} or remove it from {docker_config_path()}",
        ) from e
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


def store(registry: str, creds: Credentials) -> str:
    """Save credentials like ``docker login``: through the configured credential helper, else
    base64 in ``config.json`` written with mode 0600. Returns where they went."""
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError) as e:
        raise AuthError(f"cannot read {path}: {e}", "fix or remove the file") from e
    key = _auth_keys(registry)[0]
    helper = (config.get("credHelpers") or {}).get(key) or config.get("credsStore")
    if helper:
        payload = json.dumps({"ServerURL": key, "Username": creds.username, "Secret": creds.password})
        exe = f"docker-credential-{helper}"
        try:
            out = subprocess.run([exe, "store"], input=payload.encode(), capture_output=True, timeout=30)
        except FileNotFoundError as e:
            raise AuthError(f"credential helper {exe} is configured but not installed") from e
        if out.returncode != 0:
            raise AuthError(
                f"credential helper {exe} could not store the credentials: "
                f"{out.stderr.decode(errors='replace').strip()[:200]}"
            )
        return exe
    raw = f"{creds.username}:{creds.password}".encode()
    config.setdefault("auths", {})[key] = {"auth": base64.b64encode(raw).decode()}
    _write_private(path, json.dumps(config, indent="\t") + "\n")
    return str(path)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)
