"""What ``bench/pull.py``, ``bench/push.py`` and ``bench/run.py`` share.

The Debian minbase root filesystem (debootstrap, cached), the repository's test-support
modules, running and timing commands, page-cache drops, the socker executable, tree summaries
and comparisons, the work dir, and the pieces of the printed tables that are the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("/var/tmp/socker-bench")
SUITE = "bookworm"
SKIPPED_DIRS = ("dev", "proc", "sys")  # their contents never go into an image (as with docker)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def support():
    """The repository's test-support modules (``tests.support.oci`` and ``.registry``)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support import oci, registry

    return oci, registry


# ---------------------------------------------------------------------------------------------
# The root filesystem


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, current, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def find_mirror(suite: str = SUITE) -> str:
    """The Debian archive URI apt uses here for ``suite`` (deb822 ``.sources`` first)."""
    candidates: list[tuple[int, str]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for st in _deb822_stanzas(path.read_text()):
                if "deb" not in st.get("types", "").split() or st.get("enabled", "yes") == "no":
                    continue
                suites = st.get("suites", "").split()
                for uri in st.get("uris", "").split():
                    candidates.append((0 if suite in suites else 1, uri))
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((0 if words[2] == suite else 1, words[1]))
    candidates = [c for c in candidates if "security" not in c[1]]
    if not candidates:
        raise SystemExit(
            "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; "
            "pass --mirror URL or --rootfs DIR"
        )
    return min(candidates, key=lambda c: c[0])[1]


def ensure_rootfs(args) -> Path:
    """``args.rootfs``, else the debootstrap tree in ``args.cache/rootfs`` (made once)."""
    if args.rootfs:
        rootfs = Path(args.rootfs)
        if not rootfs.is_dir():
            raise SystemExit(f"--rootfs {rootfs}: not a directory")
        return rootfs
    rootfs = args.cache / "rootfs"
    if (rootfs / "etc" / "debian_version").exists():
        return rootfs
    mirror = args.mirror or find_mirror()
    tmp = args.cache / "rootfs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap --variant=minbase {SUITE} {tmp} {mirror} (once; cached in {rootfs})")
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(tmp), mirror], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    shutil.rmtree(rootfs, ignore_errors=True)
    os.rename(tmp, rootfs)
    log(f"  done in {time.perf_counter() - t0:.0f} s")
    return rootfs


# ---------------------------------------------------------------------------------------------
# Running and timing


@dataclass
class Measure:
    name: str
    times: list[float] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


class Failed(Exception):
    pass


def describe_failure(cmd: list[str], proc: subprocess.CompletedProcess) -> str:
    return (
        f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
    )


def run(cmd: list[str], *, env: dict | None = None, cwd=None, timeout: float = 1800) -> tuple[float, str]:
    """Run ``cmd``; return (wall seconds, stdout). Raises ``Failed`` with the full output.

    Dirty pages are flushed first (``sync``), so no run pays for the previous one's writeback."""
    os.sync()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Failed(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from e
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise Failed(describe_failure(cmd, proc))
    return elapsed, proc.stdout


_drop_status: str | None = None


def drop_caches() -> bool:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``; remembers why it failed, if it did."""
    global _drop_status
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        _drop_status = f"no ({e.strerror or e})"
        return False
    _drop_status = _drop_status or "yes"
    return True


def drop_status() -> str:
    """Whether ``drop_caches`` worked, for the table: ``yes``, ``no (why)`` or ``not tried``."""
    return _drop_status or "not tried"


def umoci_unpack_flags() -> list[str]:
    return [] if os.geteuid() == 0 else ["--rootless"]


def skopeo(*args: str) -> list[str]:
    return ["skopeo", "--insecure-policy", *args]


# ---------------------------------------------------------------------------------------------
# socker


def socker_next_to_python() -> Path | None:
    """The console script next to this interpreter (not a pyenv shim, which adds ~60 ms a call)."""
    exe = Path(sys.executable).parent / "socker"
    return exe if exe.exists() else None


def socker_cmd() -> list[str]:
    """``socker`` on PATH, else socker_lib's CLI through this interpreter."""
    exe = shutil.which("socker")
    if exe:
        return [exe]
    return [
        sys.executable,
        "-c",
        "import sys; from socker_lib.cli import main; sys.argv[0] = 'socker'; main()",
    ]


def socker_env(home: Path) -> dict:
    return {**os.environ, "SOCKER_HOME": str(home)}


# ---------------------------------------------------------------------------------------------
# Trees


def tree_summary(root: Path) -> dict[str, tuple]:
    """``{relative path: (type, size, mode, uid, gid, links, symlink target)}``; size counts
    regular files only; links is the hard-link count of files, 0 for anything else."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            reg = kind == stat.S_IFREG
            target = os.readlink(path) if kind == stat.S_IFLNK else ""
            out[os.path.relpath(path, root)] = (
                kind,
                st.st_size if reg else 0,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_nlink if reg else 0,
                target,
            )
    return out


def tree_totals(summary: dict[str, tuple]) -> tuple[int, int]:
    """(entries, bytes in regular files) of a ``tree_summary``."""
    return len(summary), sum(v[1] for v in summary.values())


def tree_diffs(
    a: dict[str, tuple], b: dict[str, tuple], missing: str, extra: str, suffix: str = ""
) -> list[str]:
    """One line per path that differs between the summaries ``a`` and ``b``: ``  {missing}: PATH``
    (not in ``a``), ``  {extra}: PATH`` (not in ``b``), ``  differs: PATH: what{suffix}``."""
    labels = ("type", "size", "mode", "uid", "gid", "links", "target")
    diffs = []
    for path in sorted(a.keys() | b.keys()):
        if path not in a:
            diffs.append(f"  {missing}: {path}")
        elif path not in b:
            diffs.append(f"  {extra}: {path}")
        elif a[path] != b[path]:
            what = ", ".join(
                f"{lbl} {x:o} vs {y:o}" if lbl in ("type", "mode") else f"{lbl} {x} vs {y}"
                for lbl, x, y in zip(labels, a[path], b[path], strict=True)
                if x != y
            )
            diffs.append(f"  differs: {path}: {what}{suffix}")
    return diffs


# ---------------------------------------------------------------------------------------------
# Arguments, the work dir, the output


def parse_tools(p, args, known) -> list[str]:
    """The ``--tools`` list, in the order given; ``p.error`` on an unknown one or ``--repeat`` < 1."""
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(known):
        p.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return tools


@contextlib.contextmanager
def work_dir(given: Path | None, prefix: str, parent: Path, keep: bool) -> Iterator[Path]:
    """``given`` or a new temp dir under ``parent``; deleted at the end unless ``keep``."""
    work = given or Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_errors(errors: list[str]) -> None:
    """The full text of every error, at the end of the output."""
    if errors:
        print()
        print("errors (full text):")
        for e in errors:
            print(e.rstrip())
            print("-" * 60)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )


def fmt(t: float | None) -> str:
    return f"{t:8.2f}" if t is not None else "       -"


def table_header(width: int, rule: int) -> None:
    header = f"{'tool':{width}} {'median s':>8}   {'socker/peer':>11}   runs"
    print(header)
    print("-" * max(len(header), rule))


def table_row(m: Measure, width: int, ratio_to: Measure | None = None) -> None:
    """``m``'s median in seconds, socker's median over it (``ratio_to`` is socker's) and its runs."""
    if m.error:
        print(f"{m.name:{width}} {'FAILED':>8}   {'':>11}   {m.error}")
        return
    if not m.times:
        if m.note:
            print(f"{m.name:{width}} {'-':>8}   {'':>11}   {m.note}")
        return
    ratio = ""
    if ratio_to is not None and ratio_to.median is not None and m.median:
        ratio = f"{ratio_to.median / m.median:.2f}x"
    runs = " ".join(f"{t:.2f}" for t in m.times)
    print(f"{m.name:{width}} {fmt(m.median)}   {ratio:>11}   {runs}")


def print_profile(stats, lib: int, own: int) -> None:
    """socker_lib's ``lib`` functions by cumulative time and the ``own`` ones by own time."""
    print("socker_lib functions by cumulative time:")
    stats.sort_stats("cumulative").print_stats(r"socker_lib", lib)
    print("all functions by own time:")
    stats.sort_stats("tottime").print_stats(own)
