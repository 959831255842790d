"""Errors socker raises: each says what failed, on what, and what to do about it.

Every error is a ``SockerError`` with a one-line ``message`` and an optional ``hint``;
the command line prints ``error: <message>`` and ``hint: <hint>`` and exits non-zero,
with a traceback only under ``--debug``.
"""

from __future__ import annotations


class SockerError(Exception):
    """Base class: a failure the user can understand and act on."""

    code = "socker-error"
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ReferenceError_(SockerError):
    """An image reference that Docker would not accept either."""

    code = "bad-reference"
    exit_code = 2


class ConfigError(SockerError):
    code = "bad-config"
    exit_code = 2


class RegistryError(SockerError):
    """An answer from a registry, with the spec's error code when it sent one."""

    code = "registry-error"

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int | None = None,
        errors: list[dict] | None = None,
        temporary: bool = False,
    ):
        super().__init__(message, hint)
        self.status = status
        self.errors = errors or []
        self.temporary = temporary

    @property
    def spec_codes(self) -> list[str]:
        return [str(e.get("code", "")) for e in self.errors]


class AuthError(RegistryError):
    code = "auth-denied"


class NotFoundError(RegistryError):
    code = "not-found"


class UnreachableError(RegistryError):
    code = "unreachable"


class DigestMismatchError(SockerError):
    """Content whose digest or size differs from what was asked for."""

    code = "digest-mismatch"


class UnsupportedError(SockerError):
    """A media type, platform or format socker does not handle."""

    code = "unsupported"


class UnsafeLayerError(SockerError):
    """A layer entry that would reach outside the image directory or is malformed."""

    code = "unsafe-layer"


class ImageNotFoundError(SockerError):
    """A local image that is not in the store."""

    code = "no-such-image"


class LockedError(SockerError):
    code = "locked"
