"""Fixtures for integration tests: real registries (session scope) and an image factory.

- ``registry``: anonymous docker-registry; ``auth_registry``: htpasswd Basic auth;
  ``token_registry``: Bearer tokens from ``registry.token_server`` (see tests.support.registry).
  Each has ``.host`` (``127.0.0.1:PORT``), ``.url``, ``.username``/``.password`` (auth variants),
  ``.authfile``, ``.push_layout(layout_dir, tag, repo_ref, all_platforms=None) -> digest``,
  ``.inspect_raw(ref) -> bytes``, ``.manifest(ref) -> dict``, ``.request(method, path, ...)``.
  They are shared by the whole session: use unique repository names (``unique_repo``).
- ``proxy_factory(reg) -> RecordingProxy``: a recording, fault-injecting proxy in front of a
  registry (``registry_proxy``: one in front of ``registry``); stopped after the test.
- ``image_factory(layers, repo=None, tag="latest", registry=None, **build_layout_kwargs)``
  builds a layout with tests.support.oci and pushes it; returns a ``PushedImage``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import needs_tool
from tests.support import oci
from tests.support.registry import RecordingProxy, Registry, start_registry

_counter = itertools.count(1)


def _start(tmp_path_factory, name: str, **kw) -> Registry:
    needs_tool("docker-registry", "skopeo")
    if kw.get("auth") == "htpasswd":
        needs_tool("htpasswd")
    return start_registry(tmp_path_factory.mktemp(name), **kw)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """An anonymous registry (no auth)."""
    reg = _start(tmp_path_factory, "registry")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    """A registry with htpasswd Basic auth; credentials in ``.username``/``.password``."""
    reg = _start(tmp_path_factory, "auth-registry", auth="htpasswd")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    """A registry with Bearer token auth; the token server is ``.token_server``."""
    reg = _start(tmp_path_factory, "token-registry", auth="token")
    yield reg
    reg.stop()


@pytest.fixture
def token_server(token_registry):
    """The token server of ``token_registry``, with its records and settings reset around the test."""
    server = token_registry.token_server
    saved = (
        server.expires_in,
        server.jwt_lifetime,
        server.anonymous_actions,
        server.user_actions,
        server.response_keys,
        server.claims_hook,
    )
    server.reset()
    yield server
    (
        server.expires_in,
        server.jwt_lifetime,
        server.anonymous_actions,
        server.user_actions,
        server.response_keys,
        server.claims_hook,
    ) = saved
    server.fail_next.clear()
    server.reset()


@pytest.fixture
def proxy_factory():
    """``proxy_factory(reg) -> RecordingProxy`` in front of ``reg`` (see tests.support.registry)."""
    proxies = []

    def make(reg: Registry) -> RecordingProxy:
        proxy = RecordingProxy(reg.url)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def registry_proxy(registry, proxy_factory):
    """A ``RecordingProxy`` in front of the anonymous ``registry``."""
    return proxy_factory(registry)


def repo_name(text: str) -> str:
    """A valid repository path component made from ``text``."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-")
    return name or "repo"


@pytest.fixture
def unique_repo(request):
    """``unique_repo(prefix=None) -> "test/<test-name>-<n>"``: a repository no other test uses."""

    def make(prefix: str | None = None) -> str:
        return f"test/{repo_name(prefix or request.node.name)}-{next(_counter)}"

    return make


@dataclass
class PushedImage:
    registry: Registry
    repo: str  # e.g. test/my-test-3
    tag: str
    digest: str  # what the tag points at in the registry
    info: dict  # tests.support.oci.build_layout's answer
    layout: Path

    @property
    def ref(self) -> str:
        """``127.0.0.1:PORT/REPO:TAG``"""
        return f"{self.registry.host}/{self.repo}:{self.tag}"

    @property
    def digest_ref(self) -> str:
        """``127.0.0.1:PORT/REPO@sha256:...``"""
        return f"{self.registry.host}/{self.repo}@{self.digest}"


@pytest.fixture
def image_factory(request, tmp_path, unique_repo):
    """``image_factory(layers, repo=None, tag="latest", registry=None, all_platforms=None, **kw)``.

    Builds ``layers`` (see ``oci.build_layout``; ``kw`` goes there: compression, config, docker,
    platforms...) into a fresh layout and pushes it to ``registry`` (default: the anonymous
    ``registry`` fixture) as ``repo:tag`` (default repo: unique per call).
    """

    def make(layers, *, repo=None, tag="latest", registry=None, all_platforms=None, **kw) -> PushedImage:
        reg = registry if registry is not None else request.getfixturevalue("registry")
        repo = repo or unique_repo()
        layout = tmp_path / f"layout-{next(_counter)}"
        info = oci.build_layout(layout, tag, layers, **kw)
        digest = reg.push_layout(layout, tag, f"{repo}:{tag}", all_platforms=all_platforms)
        return PushedImage(reg, repo, tag, digest, info, layout)

    return make
