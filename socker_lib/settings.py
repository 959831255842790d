"""Where socker keeps things and how it talks to registries.

Values come, lowest first, from built-in defaults, invoke's config files (``socker.yaml``
in the project or home, read by the ``socker`` program), ``SOCKER_*`` environment
variables, and finally command-line flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULTS = {
    "home": "~/.socker",
    "insecure_registries": [],
    "ca_cert": None,
    "platform": None,
    "max_concurrent_downloads": 3,
}


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(os.path.expanduser(DEFAULTS["home"])))
    insecure_registries: tuple[str, ...] = ()
    ca_cert: str | None = None
    platform: str | None = None
    max_concurrent_downloads: int = 3

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @classmethod
    def load(cls, config: Mapping | None = None, **overrides) -> Settings:
        """Build settings from an invoke config mapping, ``SOCKER_*`` env vars and flags."""
        values: dict = {}
        for f in fields(cls):
            value = None
            if config is not None:
                try:
                    value = config.get(f.name)
                except Exception:  # invoke's DataProxy raises on odd keys
                    value = None
            env = os.environ.get("SOCKER_" + f.name.upper())
            if env is not None and env != "":
                value = env
            if overrides.get(f.name) is not None:
                value = overrides[f.name]
            if value is not None:
                values[f.name] = _coerce(f.name, value)
        return replace(cls(), **values)

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


_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> str:
    machine = os.uname().machine.lower()
    arch = _ARCH.get(machine, machine)
    if machine == "armv7l":
        return "linux/arm/v7"
    if machine == "armv6l":
        return "linux/arm/v6"
    return f"linux/{arch}"
