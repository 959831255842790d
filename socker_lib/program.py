"""The invoke ``Program`` behind the ``socker`` command, over the task collection in ``tasks``.

Config files are ``socker.yaml`` (``/etc/socker.yaml``, ``~/.socker.yaml``, and the project's
``socker.yaml``); environment variables are ``SOCKER_*``.
"""

from __future__ import annotations

from invoke import Config, Program

from . import __version__
from .tasks import ns


class SockerConfig(Config):
    prefix = "socker"
    env_prefix = "SOCKER"


_CORE = {"debug", "help", "version", "config", "list", "complete", "print-completion-script"}


class SockerProgram(Program):
    """invoke's Program, trimmed to what socker users need, with Docker-style help."""

    def core_args(self):
        args = super().core_args()
        for a in args:
            if a.name == "debug":
                a.help = "Show tracebacks and debug logs when something fails."
            if a.name == "config":
                a.help = "Extra configuration file (YAML/JSON), on top of socker.yaml."
        return args

    def run(self, argv=None, exit=True):
        import sys

        argv = list(sys.argv if argv is None else argv)
        return super().run(_variadic(_help_first(argv)), exit=exit)

    def parse_collection(self) -> None:
        super().parse_collection()
        # the bundled collection has no project directory: the project is where socker runs
        import os

        self.config.set_project_location(os.getcwd())
        self.config.load_project()

    def print_help(self) -> None:
        print(f"Usage: {self.binary} [--core-opts] <command> [--command-opts] ...")
        print()
        print("socker: daemonless containers built on flat images (plain root-filesystem directories).")
        print("Run 'socker <command> --help' for a command's options.")
        print()
        print("Core options:")
        print()
        # invoke's shell-runner flags (--pty, --echo, ...) mean nothing to socker users
        shown = [t for t in self.initial_context.help_tuples() if _flag_name(t[0]) in _CORE]
        self.print_columns(shown)
        self.list_tasks()


def _flag_name(spec: str) -> str:
    longs = [w for w in spec.replace(",", " ").split() if w.startswith("--")]
    return longs[0][2:].split("=")[0].split("[")[0] if longs else ""


#: tasks whose trailing words all belong to one parameter, as Docker users type them:
#: ``socker add IMAGE PATH…``, ``socker exec ID CMD ARG…``. invoke's parser would read words such
#: as ``-c`` as flags, so they are taken off argv here and handed over through ``WORDS``.
VARIADIC = {"add": "path", "exec": "cmd", "run": "cmd"}
WORDS: dict[str, list[str]] = {}


def trailing_words(task_name: str) -> list[str]:
    """The words ``_variadic`` took off the command line for ``task_name``."""
    return WORDS.pop(task_name, [])


def _value_flags(task_name: str) -> set[str]:
    flags = set()
    task = ns.tasks[task_name]
    saved = dict(task.help)  # invoke's get_arguments() pops the help texts it uses
    try:
        arguments = task.get_arguments()
    finally:
        task.help = saved
    for arg in arguments:
        if arg.kind is not bool:
            for name in arg.names:
                flags.add(("--" if len(name) > 1 else "-") + name.replace("_", "-"))
    return flags


def _variadic(argv: list[str]) -> list[str]:
    i = next(
        (
            k
            for k, w in enumerate(argv[1:], 1)
            if not w.startswith("-") and argv[k - 1] not in ("-f", "--config")
        ),
        None,
    )
    if i is None or argv[i] not in VARIADIC:
        return argv  # no task, or another task comes first: leave invoke's parsing alone
    word = argv[i]
    takes_value = _value_flags(word)
    out, rest = argv[: i + 1], argv[i + 1 :]
    j, positional = 0, None
    while j < len(rest):
        token = rest[j]
        if token == "--":
            j += 1
            break
        if positional is None and token.startswith("-") and token != "-":
            out.append(token)
            if token in takes_value and "=" not in token:
                out.append(rest[j + 1] if j + 1 < len(rest) else "")
                j += 1
            j += 1
            continue
        if positional is None:
            positional = token
            out.append(token)
            j += 1
            continue
        break
    if rest[j:]:
        WORDS[word] = list(rest[j:])
    return out


def _help_first(argv: list[str]) -> list[str]:
    """``socker pull --help`` → ``socker --help pull``: a task's positional would eat the flag."""
    names = set(ns.task_names)
    for i, word in enumerate(argv[1:], 1):
        if word in names:
            rest = argv[i + 1 :]
            if "--help" in rest or "-h" in rest:
                before = argv[1:i]
                return [argv[0], *before, "--help", word]
            break
    return argv


program = SockerProgram(
    name="socker",
    binary="socker",
    binary_names=["socker"],
    namespace=ns,
    version=__version__,
    config_class=SockerConfig,
)
