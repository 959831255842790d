"""Image references, parsed the way Docker parses them.

``alpine`` → ``docker.io/library/alpine:latest``; ``localhost:5000/x/y`` → registry
``localhost:5000``, repository ``x/y``; ``name@sha256:…`` and ``name:tag@sha256:…`` pin a digest.
A reference also knows where its flat image lives in the store (``store_path``).
"""

from __future__ import annotations

import re
from collections import namedtuple

from .errors import ReferenceError_

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOMAIN = re.compile(
    r"^(?:\[[0-9a-fA-F:]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)"
    r"(?::[0-9]+)?$"
)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")
_MAX_NAME = 255


_Fields = namedtuple("_Fields", "registry repository tag digest", defaults=(None, None))


class Reference(_Fields):
    """A parsed image reference. ``registry`` is the name users type (``docker.io`` for Hub).

    An immutable tuple (no dataclasses: this module is on ``socker run``'s start-up path)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Reference({self.registry!r}, {self.repository!r}, {self.tag!r}, {self.digest!r})"

    @property
    def api_host(self) -> str:
        """The host[:port] that speaks the registry API."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def store_path(self) -> str:
        """The image's directory relative to ``$SOCKER_HOME/images``.

        Docker Hub images keep the seed's ``<user>/<repo>/<tag>``; other registries are
        prefixed by ``host[:port]``. A digest reference uses ``@sha256:<hex>`` as the last
        component: ``@`` cannot start a tag, so it never collides with one.
        """
        prefix = self.repository if self.is_docker_hub else f"{self.registry}/{self.repository}"
        last = f"@{self.digest}" if self.digest else (self.tag or DEFAULT_TAG)
        return f"{prefix}/{last}"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        name = self.repository if self.is_docker_hub else f"{self.registry}/{self.repository}"
        if self.tag and not self.digest:
            return f"{name}:{self.tag}"
        if self.digest:
            return f"{name}:{self.tag}@{self.digest}" if self.tag else f"{name}@{self.digest}"
        return f"{name}:{DEFAULT_TAG}"


def _looks_like_domain(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part != part.lower()


def parse(text: str) -> Reference:
    """Parse ``[registry/]path[:tag][@digest]``; raise ``ReferenceError_`` naming the bad part."""
    original = text
    if not text or text != text.strip():
        raise ReferenceError_(f"invalid image reference {original!r}: empty or has whitespace")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise ReferenceError_(
                f"invalid digest {digest!r} in {original!r}",
                "a digest looks like sha256:<64 hex characters>",
            )
        if digest.startswith("sha256:") and not _SHA256.match(digest):
            raise ReferenceError_(
                f"invalid sha256 digest {digest!r} in {original!r}", "expected 64 lowercase hex"
            )
    tag = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError_(
                f"invalid tag {tag!r} in {original!r}",
                "tags use letters, digits, '_', '.', '-' (max 128, not starting with '.' or '-')",
            )
    parts = text.split("/")
    if len(parts) > 1 and _looks_like_domain(parts[0]):
        registry, path = parts[0], parts[1:]
        if not _DOMAIN.match(registry):
            raise ReferenceError_(f"invalid registry {registry!r} in {original!r}")
    else:
        registry, path = DOCKER_HUB, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    for comp in path:
        if not _COMPONENT.match(comp):
            hint = "use lowercase letters, digits and separators '.', '_', '__', '-'"
            if comp != comp.lower():
                hint = "repository names must be lowercase"
            raise ReferenceError_(f"invalid repository name component {comp!r} in {original!r}", hint)
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    repository = "/".join(path)
    if len(repository) > _MAX_NAME:
        raise ReferenceError_(f"repository name in {original!r} is longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)
