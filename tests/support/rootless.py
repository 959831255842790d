"""Running test code as an unprivileged user from a root test process."""

from __future__ import annotations

import os

NOBODY = 65534


def as_nobody(fn, out_path: str) -> int:
    """Run ``fn()`` in a forked child that has dropped to nobody (import what it needs first:
    the interpreter's site-packages may be unreadable to nobody); its stdout and stderr go to
    ``out_path``; the exit code is what ``fn`` returns (99: it raised)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.fchown(fd, NOBODY, NOBODY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            code = fn()
        except BaseException:  # report anything to the parent
            import traceback

            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
