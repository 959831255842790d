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
                reporter.warn(
                    f"{len(result.skipped)} entries could not be applied without root "
                    f"(ownership, device nodes); see meta image.json"
                )
    print(result.path)


@task(
    help={
        "ref": "the local image to push, and where to: registry/repo:tag (see socker images)",
        "format": "manifest format: docker (schema2, the default, for Docker Hub) or oci",
        "compression": "layer compression: gzip (default), zstd (needs --format oci) or none",
        "quiet": "print only the pushed manifest digest",
        "ca_cert": "PEM file with the CA that signed a private registry's certificate",
    },
)
@friendly
def push(c, ref, format="docker", compression="gzip", quiet=False, ca_cert=None):  # noqa: A002
    """Upload a local image directory as a single-layer image.

    The directory $SOCKER_HOME/images/<repo>/<tag>/ is packed into one deterministic layer
    (pushing an unchanged directory again gives the same digest), with the config it was
    pulled with. Credentials: DOCKER_USERNAME/DOCKER_PASSWORD or socker login. Example:

      socker push 127.0.0.1:5000/me/app:1
    """
    from .progress import make_reporter
    from .push import push as do_push

    cfg = settings(c, ca_cert=ca_cert)
    with make_reporter(quiet) as reporter:
        result = do_push(ref, cfg, fmt=format, compression=compression, reporter=reporter)
        if not quiet:
            reporter.info(f"pushed {result.reference}: layer {result.layer_digest[:19]} {result.uploaded}")
    print(result.digest)


@task(
    help={
        "source": "image to pull (any number of layers)",
        "dest": "where to push it as a single layer",
        "platform": "os/arch[/variant] to pick from a multi-platform source",
        "format": "manifest format: docker (default) or oci",
        "compression": "gzip (default), zstd (needs --format oci) or none",
        "quiet": "print only the pushed manifest digest",
    },
)
@friendly
def flatten(c, source, dest, platform=None, format="docker", compression="gzip", quiet=False):  # noqa: A002
    """Pull SOURCE and push it to DEST as one layer.

    socker flatten library/nginx:latest 127.0.0.1:5000/me/nginx:flat
    """
    from .progress import make_reporter
    from .pull import pull as do_pull
    from .push import push as do_push

    cfg = settings(c)
    with make_reporter(quiet) as reporter:
        do_pull(source, cfg, platform=platform, reporter=reporter)
        result = do_push(dest, cfg, source=source, fmt=format, compression=compression, reporter=reporter)
    print(result.digest)


@task(
    help={
        "ref": "name of the new image, e.g. me/minimal:1",
        "platform": "os/arch[/variant] recorded in its config (default: this machine)",
        "force": "replace an existing image of that name",
    }
)
@friendly
def new(c, ref, platform=None, force=False):
    """Create an empty image (scratch) to fill with socker add, then push."""
    from .images import new_image

    print(new_image(ref, settings(c), platform=platform, force=force))


@task(
    iterable=["path"],
    help={
        "ref": "the image to add to",
        "path": "host file to copy in (repeatable; with socker, just list them)",
    },
)
@friendly
def add(c, ref, path=None):
    """Copy host executables into an image, with their shared libraries and loader.

    socker add me/minimal:1 /usr/bin/bash /bin/ls
    """
    from .images import add_files
    from .program import trailing_words

    for p in add_files(ref, list(path or []) + trailing_words("add"), settings(c)):
        print(p)


@task(help={"source": "existing local image", "dest": "new name"})
@friendly
def tag(c, source, dest):
    """Copy a local image (tree and metadata) to a new name, e.g. library/nginx:latest me/nginx:latest."""
    from .images import tag_image

    print(tag_image(source, dest, settings(c)))


@task(help={"ref": "local image to delete"})
@friendly
def rm(c, ref):
    """Delete a local image (its directory and metadata; cached blobs stay)."""
    from .images import remove_image

    print(f"removed {remove_image(ref, settings(c))}")


@task(help={"quick": "do not check whether images were modified since they were pulled"})
@friendly
def images(c, quick=False):
    """List local images: name, size, source digest, modified since pull."""
    from .images import list_images
    from .progress import human

    rows = [("IMAGE", "SIZE", "DIGEST", "MODIFIED")]
    for info in list_images(settings(c), check_modified=not quick):
        modified = "?" if info.modified is None else "yes" if info.modified else "no"
        rows.append((info.reference, human(info.size), (info.digest or info.origin)[:19], modified))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())


@task(
    help={
        "registry": "registry host, e.g. docker.io or 127.0.0.1:5000",
        "username": "user name",
        "password_stdin": "read the password from standard input",
    }
)
@friendly
def login(c, registry, username=None, password_stdin=False):
    """Check credentials against a registry and store them like docker login (mode 0600).

    echo "$TOKEN" | socker login 127.0.0.1:5000 -u me --password-stdin
    """
    import getpass
    import sys

    from .login import login as do_login

    username = username or os.environ.get("DOCKER_USERNAME") or input("Username: ")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("DOCKER_PASSWORD"):
        password = os.environ["DOCKER_PASSWORD"]
    else:
        password = getpass.getpass("Password: ")
    where = do_login(registry, username, password, settings(c))
    print(f"login succeeded; credentials stored in {where}")


@task(
    iterable=["cmd", "env", "volume", "tmpfs", "cap_add", "cap_drop"],
    help={
        "image": "image to run (pulled first if missing)",
        "cmd": "the command and its arguments (with socker: just write them after the image)",
        "detach": "run in the background and print the container id",
        "name": "container name",
        "interactive": "keep stdin open",
        "tty": "allocate a pseudo-terminal",
        "env": "KEY=VALUE (repeatable)",
        "volume": "/host:/container[:ro] (repeatable)",
        "tmpfs": "/path[:options] (repeatable)",
        "workdir": "working directory",
        "user": "user[:group]",
        "entrypoint": "replace the image's entrypoint",
        "hostname": "host name (default: image name)",
        "network": "host (default) or none",
        "read_only": "read-only root filesystem",
        "rm": "throwaway copy-on-write run: the image stays untouched",
        "memory": "memory limit, e.g. 512m",
        "cpus": "CPU limit, e.g. 0.5",
        "pids_limit": "process limit",
        "privileged": "all capabilities",
        "cap_add": "add a capability",
        "cap_drop": "drop a capability",
    },
)
def run(
    c,
    image,
    cmd=None,
    detach=False,
    name=None,
    interactive=False,
    tty=False,
    env=None,
    volume=None,
    tmpfs=None,
    workdir=None,
    user=None,
    entrypoint=None,
    hostname=None,
    network="host",
    read_only=False,
    rm=False,
    memory=None,
    cpus=None,
    pids_limit=None,
    privileged=False,
    cap_add=None,
    cap_drop=None,
):
    """Run a command in a container made from a flat image: socker run [OPTIONS] IMAGE [CMD...].

    Namespaces (mount, uts, ipc, pid, optionally net), pivot_root, fresh /proc, /sys, /dev;
    the command is PID 1 and its exit code is socker's. See 'socker run --help' for all options.
    """
    from .runtime.cli import main as run_main

    argv = [
        f
        for f, on in (
            ("-d", detach),
            ("-i", interactive),
            ("-t", tty),
            ("--read-only", read_only),
            ("--rm", rm),
            ("--privileged", privileged),
        )
        if on
    ]
    for flag, value in (
        ("--name", name),
        ("-w", workdir),
        ("-u", user),
        ("--entrypoint", entrypoint),
        ("--hostname", hostname),
        ("--network", network),
        ("--memory", memory),
        ("--cpus", cpus),
        ("--pids-limit", pids_limit),
    ):
        if value is not None:
            argv.append(f"{flag}={value}")
    for flag, values in (
        ("-e", env),
        ("-v", volume),
        ("--tmpfs", tmpfs),
        ("--cap-add", cap_add),
        ("--cap-drop", cap_drop),
    ):
        for value in values or []:
            argv += [flag, value]
    from .program import trailing_words

    code = run_main([*argv, image, "--", *(cmd or []), *trailing_words("run")])
    if code:
        raise Exit(code=code)


@task(help={"all": "also show exited containers"})
@friendly
def ps(c, all=False):  # noqa: A002
    """List background containers (socker run -d)."""
    from .runtime.manage import list_containers

    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "STATUS")]
    for st in list_containers(settings(c).home, all=all):
        status = st.get("status", "?")
        if status == "exited":
            status = f"exited ({st.get('exit_code')})"
        rows.append(
            (
                st["id"][:12],
                st.get("name") or "",
                st.get("image", ""),
                " ".join(st.get("command") or [])[:40],
                status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())


@task(help={"container": "container id (a unique prefix) or name", "follow": "keep printing new output"})
@friendly
def logs(c, container, follow=False):
    """Print what a background container wrote to stdout and stderr."""
    from .runtime.manage import logs as do_logs

    do_logs(settings(c).home, container, follow=follow)


@task(
    help={
        "container": "container id (a unique prefix) or name",
        "time": "seconds to wait after SIGTERM before SIGKILL (default 10)",
    }
)
@friendly
def stop(c, container, time=10):
    """Stop a background container: SIGTERM, then SIGKILL after --time seconds."""
    from .runtime.manage import stop as do_stop

    code = do_stop(settings(c).home, container, timeout=float(time))
    print(f"stopped {container}" + (f" (exit code {code})" if code is not None else ""))


@task(
    iterable=["cmd", "env"],
    help={
        "container": "container id (a unique prefix) or name",
        "cmd": "the command (with socker: just write it after the container)",
        "interactive": "keep stdin open",
        "tty": "allocate a pseudo-terminal",
        "env": "KEY=VALUE (repeatable)",
        "user": "user[:group] in the container",
        "workdir": "working directory",
    },
)
@friendly
def exec(c, container, cmd=None, interactive=False, tty=False, env=None, user=None, workdir=None):  # noqa: A001
    """Run a command inside a running container's namespaces: socker exec ID CMD...."""
    from .program import trailing_words
    from .runtime.manage import exec_in

    cmd = list(cmd or []) + trailing_words("exec")
    if not cmd:
        raise Exit("error: socker exec needs a command\nhint: socker exec ID sh -c '...'", code=2)
    home = settings(c).home
    if env:  # added to the container's environment, as docker exec -e does
        from .runtime.manage import container_env, merge_env

        env = merge_env(container_env(home, container), list(env))
    code = exec_in(
        home, container, list(cmd), env=env or None, cwd=workdir, user=user, tty=tty, stdin=interactive
    )
    if code:
        raise Exit(code=code)


@task(
    name="container-rm",
    help={"container": "container id (a unique prefix) or name", "force": "stop it first if it is running"},
)
@friendly
def container_rm(c, container, force=False):
    """Forget an exited background container (its state and log)."""
    from .runtime.manage import remove

    remove(settings(c).home, container, force=force)
    print(f"removed {container}")


ns = Collection(
    pull, push, flatten, new, add, tag, rm, images, login, run, ps, logs, stop, exec, container_rm
)
ns.configure(dict(DEFAULTS))
