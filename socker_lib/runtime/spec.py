"""What to run, fully decided: the runtime executes a ``ContainerSpec`` and interprets nothing.

``socker_lib.runtime.options`` builds one from the image's config and the command line
(Docker's rules for Entrypoint/Cmd/Env/WorkingDir/User); ``container.run`` executes it.
"""

from __future__ import annotations


class _Record:
    """A small mutable record: class attributes are the fields and their defaults (a list
    default is copied per instance). Not a dataclass: ``dataclasses`` costs ``socker run``
    several milliseconds of start-up."""

    def __init__(self, *args, **kwargs):
        names = list(type(self).__annotations__)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional fields")
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{name} given twice")
            kwargs[name] = value
        for name in names:
            if name in kwargs:
                value = kwargs.pop(name)
            elif hasattr(type(self), name):
                value = getattr(type(self), name)
                value = list(value) if isinstance(value, list) else value
            else:
                raise TypeError(f"{type(self).__name__} needs {name}")
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(kwargs))}")

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({inner})"


class Mount(_Record):
    """A mount inside the container. ``kind`` is ``bind`` or ``tmpfs``."""

    target: str  # absolute path inside the container
    kind: str = "bind"
    source: str | None = None  # host path for bind mounts
    readonly: bool = False
    options: str = ""  # extra tmpfs options, e.g. "size=64m,mode=1777"


class ContainerSpec(_Record):
    rootfs: str  # the image directory on the host
    args: list[str]  # argv of the process (Entrypoint + Cmd already combined); args[0] looked up in PATH
    env: list[str] = []  # "KEY=VALUE", final
    cwd: str = "/"
    user: str | None = None  # "name", "uid", "name:group", "uid:gid" — resolved inside the image
    hostname: str = "socker"
    mounts: list[Mount] = []
    readonly_rootfs: bool = False
    network: str = "host"  # "host" or "none" (a private namespace with only lo, up)
    ephemeral: bool = False  # run on a throwaway overlay: the image directory stays untouched
    tty: bool = False  # allocate a pseudo-terminal (with window size)
    stdin: bool = False  # keep stdin open (-i); otherwise the process gets /dev/null
    cap_add: list[str] = []  # "NET_ADMIN" or "CAP_NET_ADMIN", "ALL"
    cap_drop: list[str] = []
    privileged: bool = False  # all capabilities, no masked paths, /sys writable, no seccomp
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    rootless: bool | None = None  # None: decide from the effective uid
    id: str = ""  # container id (hex), set by the caller
    name: str | None = None
    image: str = ""  # the image reference, for ps
    state_dir: str = ""  # per-container directory on the host: generated files, state.json, log
    detach: bool = False
    dns: list[str] = []  # nameservers for resolv.conf (default: the host's)
    extra_hosts: list[str] = []  # "name:ip"
