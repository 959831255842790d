"""The ``socker`` command.

``socker run`` takes a fast path that loads no more than the runtime needs (no invoke, no
requests, no rich); every other command goes through the invoke ``Program`` in ``program``.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--debug"] and argv[1:2] == ["run"]:
        os.environ["SOCKER_DEBUG"] = "1"
        argv = argv[1:]
    if argv[:1] == ["run"]:
        from .runtime.cli import main as run_main

        code = run_main(argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter shut-down: nothing is left to clean up
    from .program import program

    program.run()


def __getattr__(name: str):
    if name == "program":
        from .program import program

        return program
    raise AttributeError(name)


if __name__ == "__main__":
    main()
