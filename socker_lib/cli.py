"""The ``socker`` command: an invoke ``Program`` over the task collection in ``tasks``.

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
        return super().run(_help_first(argv), exit=exit)

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


def main() -> None:
    program.run()


if __name__ == "__main__":
    main()
