"""Shared test policy.

Tests that need root or an external tool say so with ``needs_root()`` / ``needs_tool(name)``.
On a developer's machine they skip; in CI ``.ci/run`` sets ``SOCKER_REQUIRE_ROOT=1`` and
``SOCKER_REQUIRE_TOOLS=1`` so that a missing privilege or tool is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def needs_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("SOCKER_REQUIRE_ROOT") == "1":
        pytest.fail("this test needs root and SOCKER_REQUIRE_ROOT=1 forbids skipping it")
    pytest.skip("needs root")


def needs_tool(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    if os.environ.get("SOCKER_REQUIRE_TOOLS") == "1":
        pytest.fail(f"missing tools {missing} and SOCKER_REQUIRE_TOOLS=1 forbids skipping")
    pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture
def socker_home(tmp_path, monkeypatch):
    """A private SOCKER_HOME for one test."""
    home = tmp_path / "socker-home"
    home.mkdir()
    monkeypatch.setenv("SOCKER_HOME", str(home))
    return home
