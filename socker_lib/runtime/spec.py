"""What to run, fully decided: the runtime executes a ``ContainerSpec`` and interprets nothing.

``socker_lib.runtime.options`` builds one from the image's config and the command line
(Docker's rules for Entrypoint/Cmd/Env/WorkingDir/User); ``container.run`` executes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Mount:
    """A mount inside the container. ``kind`` is ``bind`` or ``tmpfs``."""

    target: str  # absolute path inside the container
    kind: str = "bind"
    source: str | None = None  # host path for bind mounts
    readonly: bool = False
    options: str = ""  # extra tmpfs options, e.g. "size=64m,mode=1777"


@dataclass
class ContainerSpec:
    rootfs: str  # the image directory on the host
    args: list[str]  # argv of the process (Entrypoint + Cmd already combined); args[0] looked up in PATH
    env: list[str] = field(default_factory=list)  # "KEY=VALUE", final
    cwd: str = "/"
    user: str | None = None  # "name", "uid", "name:group", "uid:gid" — resolved inside the image
    hostname: str = "socker"
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    network: str = "host"  # "host" or "none" (a private namespace with only lo, up)
    ephemeral: bool = False  # run on a throwaway overlay: the image directory stays untouched
    tty: bool = False  # allocate a pseudo-terminal (with window size)
    stdin: bool = False  # keep stdin open (-i); otherwise the process gets /dev/null
    cap_add: list[str] = field(default_factory=list)  # "NET_ADMIN" or "CAP_NET_ADMIN", "ALL"
    cap_drop: list[str] = field(default_factory=list)
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
    dns: list[str] = field(default_factory=list)  # nameservers for resolv.conf (default: the host's)
    extra_hosts: list[str] = field(default_factory=list)  # "name:ip"
