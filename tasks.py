"""``inv`` entry point in the repository: the same tasks as the installed ``socker`` command."""

from socker_lib.tasks import ns  # noqa: F401
