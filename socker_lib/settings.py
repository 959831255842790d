"""Where socker keeps things and how it talks to registries.

Values come, lowest first, from built-in defaults, invoke's config files (``socker.yaml``
in the project or home, read by the ``socker`` program), ``SOCKER_*`` environment
variables, and finally command-line flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULTS = {
    "home": "~/.socker",
    "insecure_registries": [],
    "ca_cert": None,
    "platform": None,
    "max_concurrent_downloads": 3,
}


_FIELDS = ("home", "insecure_registries", "ca_cert", "platform", "max_concurrent_downloads")


class Settings:
    """socker's settings (not a dataclass: ``dataclasses`` costs ``socker run`` start-up time)."""

    __slots__ = _FIELDS

    def __init__(
        self,
        home=None,
        insecure_registries=(),
        ca_cert: str | None = None,
        platform: str | None = None,
        max_concurrent_downloads: int = 3,
    ):
        self.home = _coerce("home", home if home is not None else DEFAULTS["home"])
        self.insecure_registries = _coerce("insecure_registries", insecure_registries)
        self.ca_cert = ca_cert
        self.platform = platform
        self.max_concurrent_downloads = _coerce("max_concurrent_downloads", max_concurrent_downloads)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS) + ")"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @classmethod
    def load(cls, config: Mapping | None = None, **overrides) -> Settings:
        """Build settings from an invoke config mapping, ``SOCKER_*`` env vars and flags."""
        values: dict = {}
        for name in _FIELDS:
            value = None
            if config is not None:
                try:
                    value = config.get(name)
                except Exception:  # invoke's DataProxy raises on odd keys
                    value = None
            env = os.environ.get("SOCKER_" + name.upper())
            if env is not None and env != "":
                value = env
            if overrides.get(name) is not None:
                value = overrides[name]
            if value is not None:
                values[name] = _coerce(name, value)
        return cls(**values)

    def is_insecure(self, host: str) -> bool:
        """Plain HTTP is allowed for loopback registries and those listed as insecure."""
        return is_loopback(host) or host in self.insecure_registries


def _coerce(name: str, value):
    if name == "home":
        return Path(os.path.expanduser(str(value))).absolute()
    if name == "insecure_registries":
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if name == "max_concurrent_downloads":
        return max(1, int(value))
    return value


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.index("]")]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> str:
    machine = os.uname().machine.lower()
    arch = _ARCH.get(machine, machine)
    if machine == "armv7l":
        return "linux/arm/v7"
    if machine == "armv6l":
        return "linux/arm/v6"
    return f"linux/{arch}"
