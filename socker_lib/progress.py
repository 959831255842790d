"""Progress reporting: rich bars on a terminal, plain lines otherwise, nothing with ``-q``.

Code that moves bytes only calls ``bar.advance(n)``; it never knows how (or whether)
progress is shown. ``rich`` is imported only when bars are really drawn.
"""

from __future__ import annotations

import sys
import threading


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


class Bar:
    """One unit of work (a layer download, an extraction)."""

    def advance(self, n: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def finish(self, note: str = "") -> None:
        pass


class Reporter:
    """Quiet: shows nothing."""

    def bar(self, description: str, total: int | None = None, kind: str = "bytes") -> Bar:
        return Bar()

    def info(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _PlainBar(Bar):
    def __init__(self, reporter: PlainReporter, description: str, total: int | None):
        self.r, self.description, self.total = reporter, description, total
        size = f" ({human(total)})" if total else ""
        reporter.info(f"{description}{size} ...")

    def finish(self, note: str = "") -> None:
        self.r.info(f"{self.description}: {note or 'done'}")


class PlainReporter(Reporter):
    """Plain lines on stderr, for logs and pipes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def bar(self, description, total=None, kind="bytes"):
        return _PlainBar(self, description, total)

    def info(self, text):
        with self._lock:
            print(text, file=self.stream, flush=True)


class _RichBar(Bar):
    def __init__(self, progress, description, total):
        self.p = progress
        self.id = progress.add_task(description, total=total)

    def advance(self, n):
        if n < 0:
            self.reset()
        else:
            self.p.update(self.id, advance=n)

    def reset(self):
        self.p.reset(self.id)

    def finish(self, note=""):
        task = self.p.tasks[self.id] if self.id < len(self.p.tasks) else None
        total = task.total if task and task.total else (task.completed if task else 1) or 1
        self.p.update(self.id, total=total, completed=total)


class RichReporter(Reporter):
    """rich progress bars on stderr: bytes, speed and time left per item."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def bar(self, description, total=None, kind="bytes"):
        return _RichBar(self.progress, description, total)

    def info(self, text):
        self.progress.console.print(text, markup=False, highlight=False)

    def warn(self, text):
        self.progress.console.print(f"warning: {text}", markup=False, highlight=False, style="yellow")


def make_reporter(quiet: bool = False) -> Reporter:
    if quiet:
        return Reporter()
    if sys.stderr.isatty():
        return RichReporter()
    return PlainReporter()
