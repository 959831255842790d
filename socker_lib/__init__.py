"""socker: a daemonless container tool built around flat images.

The library holds all the logic; ``socker_lib.tasks`` is a thin invoke layer over it.
Everything is imported lazily (``socker run`` starts as fast as the runtime itself).
"""

__version__ = "0.1.0"

__all__ = ["Reference", "Settings", "SockerError", "parse", "pull", "push", "__version__"]


def pull(ref: str, settings=None, **kwargs):
    """Pull an image into the store; see ``socker_lib.pull.pull``."""
    from .pull import pull as _pull

    return _pull(ref, settings, **kwargs)


def push(ref: str, settings=None, **kwargs):
    """Push a local image as one layer; see ``socker_lib.push.push``."""
    from .push import push as _push

    return _push(ref, settings, **kwargs)


def __getattr__(name: str):
    if name == "SockerError":
        from .errors import SockerError

        return SockerError
    if name in ("Reference", "parse"):
        from . import reference

        return getattr(reference, name)
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(name)
