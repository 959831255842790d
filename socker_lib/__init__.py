"""socker: a daemonless container tool built around flat images.

The library holds all the logic; ``socker_lib.tasks`` is a thin invoke layer over it.
Heavy modules (requests, rich, fabric) are imported only where they are used.
"""

__version__ = "0.1.0"

from .errors import SockerError  # noqa: E402
from .reference import Reference, parse  # noqa: E402
from .settings import Settings  # noqa: E402


def pull(ref: str, settings: "Settings | None" = None, **kwargs):
    """Pull an image into the store; see ``socker_lib.pull.pull``."""
    from .pull import pull as _pull

    return _pull(ref, settings, **kwargs)


__all__ = ["Reference", "Settings", "SockerError", "parse", "pull", "__version__"]
