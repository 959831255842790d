"""The invoke tasks: a thin command-line layer over ``socker_lib``.

The same collection serves ``inv …`` in the repository (through the top-level ``tasks.py``)
and the installed ``socker …`` command (``socker_lib.cli``).
"""

from __future__ import annotations

import functools
import logging
import os

from invoke import Collection, Exit, task

from .errors import SockerError
from .settings import DEFAULTS, Settings


def debugging() -> bool:
    return os.environ.get("SOCKER_DEBUG") == "1" or logging.getLogger().isEnabledFor(logging.DEBUG)


def friendly(fn):
    """Turn a ``SockerError`` into one clear line (plus a hint) and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(c, *args, **kwargs):
        try:
            return fn(c, *args, **kwargs)
        except SockerError as e:
            if debugging():
                raise
            text = f"error: {e.message}"
            if e.hint:
                text += f"\nhint: {e.hint}"
            raise Exit(text, code=e.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted: nothing was changed", code=130) from None

    return wrapper


def settings(c, **overrides) -> Settings:
    return Settings.load(c.config, **overrides)


@task(
    help={
        "ref": "image to pull: alpine, user/repo:tag, registry:5000/path/repo:tag, name@sha256:…",
        "platform": "os/arch[/variant] to pick from a multi-platform image (default: this machine)",
        "quiet": "print only where the image landed",
        "ca_cert": "PEM file with the CA that signed a private registry's certificate",
        "force": "extract again even if the local image is already up to date",
    },
)
@friendly
def pull(c, ref, platform=None, quiet=False, ca_cert=None, force=False):
    """Download an image and flatten its layers into $SOCKER_HOME/images/<repo>/<tag>/.

    The result is a plain directory you can ls, chroot into and edit. Pulling the same
    image again downloads nothing. Examples:

      socker pull alpine
      socker pull --platform linux/arm64 127.0.0.1:5000/me/app:1
    """
    from .progress import make_reporter
    from .pull import pull as do_pull

    cfg = settings(c, ca_cert=ca_cert)
    with make_reporter(quiet) as reporter:
        result = do_pull(ref, cfg, platform=platform, reporter=reporter, force=force)
        if not quiet:
            if result.up_to_date:
                reporter.info(f"{result.reference} is up to date ({result.digest[:19]})")
            else:
                reporter.info(f"pulled {result.reference} ({result.platform}, {result.digest})")
            if result.skipped:
                reporter.warn(f"{len(result.skipped)} entries could not be applied without root "
                              f"(ownership, device nodes); see meta image.json")
    print(result.path)


ns = Collection(pull)
ns.configure(dict(DEFAULTS))
