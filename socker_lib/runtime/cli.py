"""The fast path for ``socker run``: no invoke, no requests, no rich unless the image must
be pulled first. ``socker_lib.cli.main`` hands ``run`` here before loading anything else."""

from __future__ import annotations

import os
import sys

from ..errors import SockerError


def _settings():
    from ..settings import Settings

    files = [
        "/etc/socker.yaml",
        os.path.expanduser("~/.socker.yaml"),
        os.path.join(os.getcwd(), "socker.yaml"),
    ]
    if any(os.path.exists(f) for f in files):
        # config files exist: let invoke read them exactly as the other commands do
        from ..program import program

        program.create_config()
        program.config.set_project_location(os.getcwd())
        program.config.load_project()
        program.config.load_shell_env()
        return Settings.load(program.config)
    return Settings.load(None)


def _image(opts, settings):
    """The image's directory and config, pulled first if it is missing (as the seed does)."""
    from ..reference import parse
    from .options import read_config

    ref = parse(opts.image)
    # the store's paths, computed here: importing socker_lib.store would cost start-up time
    image_dir = os.path.join(settings.home, "images", ref.store_path)
    meta_dir = os.path.join(settings.home, "meta", ref.store_path)
    if not os.path.isdir(image_dir):
        from ..progress import make_reporter
        from ..pull import pull

        with make_reporter(False) as reporter:
            reporter.info(f"image {ref} is not here yet: pulling it")
            pull(opts.image, settings, platform=opts.platform, reporter=reporter)
    return image_dir, read_config(meta_dir)


def run_command(argv: list[str]) -> int:
    from .options import USAGE, build_spec, parse_args

    opts = parse_args(argv)
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    settings = _settings()
    rootfs, config = _image(opts, settings)
    if opts.name:
        from . import manage

        _check_name_free(manage, settings.home, opts.name)
    cid = os.urandom(32).hex()
    state_dir = os.path.join(settings.home, "containers", cid)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    spec = build_spec(opts, rootfs, config, state_dir=state_dir, cid=cid)
    from . import container

    if opts.detach:
        container.start(spec, log_path=os.path.join(state_dir, "log"))
        print(cid)
        return 0
    try:
        return container.run(spec)
    finally:
        _remove_state(state_dir)


def _remove_state(path: str) -> None:
    """Remove a foreground container's state directory: a few generated files, normally.
    Anything more (an overlay left by a crash) goes through the store's careful remover."""
    try:
        with os.scandir(path) as entries:
            for e in entries:
                os.unlink(e.path)
        os.rmdir(path)
    except OSError:
        from pathlib import Path

        from ..store import remove_tree

        remove_tree(Path(path))


def _check_name_free(manage, home, name: str) -> None:
    for state in manage.list_containers(home, all=False):
        if state.get("name") == name:
            raise SockerError(
                f"the name {name!r} is already used by running container {state['id'][:12]}",
                f"pick another --name, or stop it: socker stop {name}",
            )


def main(argv: list[str]) -> int:
    """``socker run …``: returns the container's exit code (125 for socker's own errors)."""
    try:
        return run_command(argv)
    except SockerError as e:
        if os.environ.get("SOCKER_DEBUG") == "1" or "--debug" in sys.argv[:2]:
            raise
        sys.stderr.write(f"error: {e.message}\n" + (f"hint: {e.hint}\n" if e.hint else ""))
        return 125 if e.exit_code in (1, 2) else e.exit_code
    except KeyboardInterrupt:
        return 130
