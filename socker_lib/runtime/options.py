"""``socker run`` the way Docker users type it: the command line and the image's config
become one ``ContainerSpec``.

Docker's rules: ``--entrypoint`` replaces the image's Entrypoint *and* drops its Cmd; words
after the image replace Cmd; Env is the image's, then ``--env-file``, then ``-e`` (``-e KEY``
alone takes the host's value); ``-w`` and ``-u`` replace WorkingDir and User. Only the
standard library is imported here: this is on ``socker run``'s start-up path.
"""

from __future__ import annotations

import json
import os
import re

from ..errors import SockerError
from .spec import ContainerSpec, Mount, _Record

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

USAGE = """\
Usage: socker run [OPTIONS] IMAGE [COMMAND] [ARG...]

Run a command in a new container made from a flat image (pulled first if missing).
By default the container runs in the image directory itself, so what the command
changes stays in the image (use --rm for a throwaway copy-on-write view).
Everything after IMAGE is the command; 'socker run IMAGE -- CMD ...' works too.

Options:
  -d, --detach               run in the background and print the container id
      --name NAME            name the container (for ps, logs, stop, exec)
  -i, --interactive          keep stdin open
  -t, --tty                  allocate a pseudo-terminal
  -e, --env KEY=VALUE        set an environment variable (KEY alone: take the host's)
      --env-file FILE        read KEY=VALUE lines from FILE
  -w, --workdir DIR          working directory inside the container
  -u, --user USER[:GROUP]    user name or uid (and group name or gid) from the image
      --entrypoint CMD       replace the image's entrypoint (and drop its Cmd)
  -h, --hostname NAME        container host name (default: the image name)
  -v, --volume SRC:DST[:ro]  bind-mount a host path
      --tmpfs DST[:OPTS]     mount a tmpfs, e.g. /run:size=64m
      --read-only            mount the root filesystem read-only
      --rm, --ephemeral      run on a throwaway overlay: the image stays untouched
      --network host|none    host network (default) or only a private loopback
      --dns IP               nameserver for /etc/resolv.conf (repeatable)
      --add-host NAME:IP     extra /etc/hosts line (repeatable)
      --cap-add CAP          add a capability (repeatable; ALL for all)
      --cap-drop CAP         drop a capability (repeatable; ALL for all)
      --privileged           all capabilities, no masked /proc paths, writable /sys
  -m, --memory SIZE          memory limit, e.g. 512m, 1g
      --cpus N               CPU limit, e.g. 0.5
      --pids-limit N         process limit
      --platform P           platform to pull if the image is missing
      --help                 show this help
"""

# option name -> (destination, kind): "flag", "value" or "list"
_OPTIONS = {
    "-d": ("detach", "flag"),
    "--detach": ("detach", "flag"),
    "--name": ("name", "value"),
    "-i": ("interactive", "flag"),
    "--interactive": ("interactive", "flag"),
    "-t": ("tty", "flag"),
    "--tty": ("tty", "flag"),
    "-e": ("env", "list"),
    "--env": ("env", "list"),
    "--env-file": ("env_file", "list"),
    "-w": ("workdir", "value"),
    "--workdir": ("workdir", "value"),
    "-u": ("user", "value"),
    "--user": ("user", "value"),
    "--entrypoint": ("entrypoint", "value"),
    "-h": ("hostname", "value"),
    "--hostname": ("hostname", "value"),
    "-v": ("volume", "list"),
    "--volume": ("volume", "list"),
    "--tmpfs": ("tmpfs", "list"),
    "--read-only": ("read_only", "flag"),
    "--rm": ("ephemeral", "flag"),
    "--ephemeral": ("ephemeral", "flag"),
    "--network": ("network", "value"),
    "--net": ("network", "value"),
    "--dns": ("dns", "list"),
    "--add-host": ("add_host", "list"),
    "--cap-add": ("cap_add", "list"),
    "--cap-drop": ("cap_drop", "list"),
    "--privileged": ("privileged", "flag"),
    "-m": ("memory", "value"),
    "--memory": ("memory", "value"),
    "--cpus": ("cpus", "value"),
    "--pids-limit": ("pids_limit", "value"),
    "--platform": ("platform", "value"),
    "--help": ("help", "flag"),
}


class RunOptions(_Record):
    image: str = ""
    command: list[str] = []
    detach: bool = False
    name: str | None = None
    interactive: bool = False
    tty: bool = False
    env: list[str] = []
    env_file: list[str] = []
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    volume: list[str] = []
    tmpfs: list[str] = []
    read_only: bool = False
    ephemeral: bool = False
    network: str = "host"
    dns: list[str] = []
    add_host: list[str] = []
    cap_add: list[str] = []
    cap_drop: list[str] = []
    privileged: bool = False
    memory: str | None = None
    cpus: str | None = None
    pids_limit: str | None = None
    platform: str | None = None
    help: bool = False


class UsageError(SockerError):
    code = "usage"
    exit_code = 125  # as docker run does for its own errors


def parse_args(argv: list[str]) -> RunOptions:
    """Options up to the image; everything after it is the command (a leading ``--`` is dropped)."""
    opts = RunOptions()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        i = _take_option(opts, argv, i)
    if opts.help:
        return opts
    if i >= len(argv):
        raise UsageError("socker run needs an image", "usage: socker run [OPTIONS] IMAGE [COMMAND] [ARG...]")
    opts.image = argv[i]
    rest = argv[i + 1 :]
    opts.command = rest[1:] if rest[:1] == ["--"] else rest
    return opts


def _take_option(opts: RunOptions, argv: list[str], i: int) -> int:
    word = argv[i]
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        if name not in _OPTIONS:
            raise UsageError(f"unknown option {name} for socker run", "see socker run --help")
        dest, kind = _OPTIONS[name]
        if kind == "flag":
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"option {name} takes no value")
            setattr(opts, dest, not eq or value.lower() in ("true", "1"))
            return i + 1
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"option {name} needs a value", "see socker run --help")
            value, i = argv[i + 1], i + 1
        _store(opts, dest, kind, value)
        return i + 1
    # short options, possibly clustered: -it, -e KEY=V, -eKEY=V
    j = 1
    while j < len(word):
        name = "-" + word[j]
        if name not in _OPTIONS:
            raise UsageError(f"unknown option {name} for socker run", "see socker run --help")
        dest, kind = _OPTIONS[name]
        if kind == "flag":
            setattr(opts, dest, True)
            j += 1
            continue
        value = word[j + 1 :]
        if not value:
            if i + 1 >= len(argv):
                raise UsageError(f"option {name} needs a value", "see socker run --help")
            value, i = argv[i + 1], i + 1
        _store(opts, dest, kind, value)
        break
    return i + 1


def _store(opts: RunOptions, dest: str, kind: str, value: str) -> None:
    if kind == "list":
        getattr(opts, dest).append(value)
    else:
        setattr(opts, dest, value)


# -- from options and image config to a spec -------------------------------------------------


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", text.lower())
    if not m:
        raise UsageError(f"invalid size {text!r}", "use a number with an optional unit: 512m, 1g, 100000k")
    mult = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def hostname_for(image: str) -> str:
    """The seed's default host name: the image's name (``library/alpine:3`` → ``alpine``)."""
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[:63]
    return name or "socker"


def env_lines(opts: RunOptions, image_env: list[str], host_env=os.environ) -> list[str]:
    env: dict[str, str] = {}

    def put(item: str, where: str) -> None:
        key, eq, value = item.partition("=")
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"invalid environment variable {item!r} in {where}", "use KEY=VALUE")
        if eq:
            env[key] = value
        elif key in host_env:
            env[key] = host_env[key]
        else:
            env.pop(key, None)

    for item in image_env:
        k, _, v = item.partition("=")
        env[k] = v
    for path in opts.env_file:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as e:
            raise UsageError(f"cannot read env file {path}: {e.strerror}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                put(line, path)
    for item in opts.env:
        put(item, "-e")
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{k}={v}" for k, v in env.items()]


def command_line(opts: RunOptions, config: dict) -> list[str]:
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else []
        cmd = opts.command
    else:
        entrypoint = list(config.get("Entrypoint") or [])
        cmd = opts.command or list(config.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise UsageError(
            "no command given and the image has no Entrypoint or Cmd",
            "name one after the image: socker run IMAGE /bin/sh",
        )
    return args


def mounts(opts: RunOptions) -> list[Mount]:
    out = []
    for v in opts.volume:
        parts = v.split(":")
        if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
            raise UsageError(f"invalid volume {v!r}", "use -v /host/path:/container/path[:ro]")
        src, dst = parts[0], parts[1]
        mode = parts[2].split(",") if len(parts) == 3 else []
        if not os.path.isabs(src):
            raise UsageError(
                f"volume source {src!r} must be an absolute host path",
                "named volumes are not supported; use -v /abs/path:/dst",
            )
        if not os.path.isabs(dst):
            raise UsageError(f"volume target {dst!r} must be an absolute path in the container")
        bad = [m for m in mode if m not in ("ro", "rw", "z", "Z", "rbind", "bind")]
        if bad:
            raise UsageError(f"invalid volume option {bad[0]!r} in {v!r}", "use ro or rw")
        os.makedirs(src, exist_ok=True)  # as Docker does for a missing bind source
        out.append(Mount(target=dst, kind="bind", source=os.path.realpath(src), readonly="ro" in mode))
    for t in opts.tmpfs:
        dst, _, options = t.partition(":")
        if not os.path.isabs(dst):
            raise UsageError(f"tmpfs target {dst!r} must be an absolute path")
        out.append(Mount(target=dst, kind="tmpfs", options=options))
    return out


def build_spec(opts: RunOptions, rootfs: str, config: dict, *, state_dir: str, cid: str) -> ContainerSpec:
    """Everything decided: the runtime only executes this."""
    cfg = config.get("config") or {}
    if opts.network not in ("host", "none"):
        raise UsageError(f"unsupported network {opts.network!r}", "use --network host or --network none")
    env = env_lines(opts, list(cfg.get("Env") or []))
    hostname = opts.hostname or hostname_for(opts.image)
    if not any(e.startswith("HOSTNAME=") for e in env):
        env.append(f"HOSTNAME={hostname}")
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    try:
        cpus = float(opts.cpus) if opts.cpus is not None else None
        pids = int(opts.pids_limit) if opts.pids_limit is not None else None
    except ValueError as e:
        raise UsageError(f"invalid number: {e}") from None
    if cpus is not None and cpus <= 0:
        raise UsageError("--cpus must be more than 0")
    return ContainerSpec(
        rootfs=rootfs,
        args=command_line(opts, cfg),
        env=env,
        cwd=opts.workdir or cfg.get("WorkingDir") or "/",
        user=opts.user or cfg.get("User") or None,
        hostname=hostname,
        mounts=mounts(opts),
        readonly_rootfs=opts.read_only,
        network=opts.network,
        ephemeral=opts.ephemeral,
        tty=opts.tty,
        stdin=opts.interactive,
        cap_add=list(opts.cap_add),
        cap_drop=list(opts.cap_drop),
        privileged=opts.privileged,
        memory=parse_size(opts.memory) if opts.memory else None,
        cpus=cpus,
        pids_limit=pids,
        id=cid,
        name=opts.name,
        image=opts.image,
        state_dir=state_dir,
        detach=opts.detach,
        dns=list(opts.dns),
        extra_hosts=list(opts.add_host),
    )


def read_config(meta_dir: str) -> dict:
    try:
        with open(os.path.join(meta_dir, "config.json"), "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
