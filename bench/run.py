#!/usr/bin/env python3
"""Benchmark: what starting a container costs with ``socker run``, next to ``runc run`` and bwrap.

One run does everything (the sibling of ``bench/pull.py``; the helpers they share are in
``bench/common.py``):

1. **Input**: a small but real image, busybox (``tests.support.oci.busybox_entries``: the host's
   static busybox, its applet symlinks, passwd, group), written as an OCI layout with
   ``build_layout`` and unpacked with ``umoci unpack``; or, with ``--rootfs [DIR]``, any root
   filesystem (default: the Debian minbase tree ``bench/pull.py`` keeps in
   ``/var/tmp/socker-bench/rootfs``). Every tool gets its own ``cp -a`` copy of that tree, with
   a marker file ``/etc/socker-bench-tool`` naming the tool (so the check below proves each
   command ran in the tree it was meant to). socker's copy is a local image in a fresh
   ``SOCKER_HOME``: ``socker new localhost/bench/NAME:1``, then ``cp -a`` into its image
   directory; nothing is pulled, and no registry runs.
2. **Rows**, each warmed up once, then timed ``--repeat`` times (wall clock of the whole
   command, from this process; the rows take turns, round by round, so drifting load hits all
   of them alike):

   - ``runc run -b BUNDLE ID`` on a bundle from ``runc spec`` (``process.args=["/bin/true"]``,
     ``terminal=false``, ``root.path`` the tree, writable; namespaces pid, ipc, uts, mount,
     cgroup and *not* network, like socker's default ``--network host``); a new ``ID`` every
     run. ``runc run`` without ``--keep`` deletes the container itself when the process
     exits, so the timed command includes that delete; a private ``runc --root`` state dir;
   - ``bwrap --unshare-pid --unshare-uts --unshare-ipc --unshare-cgroup-try --bind TREE /
     --proc /proc --dev /dev --ro-bind /sys /sys --hostname x --die-with-parent /bin/true``;
   - ``socker run localhost/bench/NAME:1 /bin/true`` (the installed ``socker`` script next to
     ``sys.executable``, not a pyenv shim) and ``socker run --rm ...`` (a throwaway overlay);
   - floors: ``/bin/true`` on the host (fork+exec from Python), ``python -c pass``,
     ``python -S -c pass`` (the interpreter socker's script names in its ``#!`` line) and
     ``socker run --help`` (socker's CLI fast path without making a container).
3. **Output**: median, p90 (nearest rank), min and max in ms; ``socker/peer`` ratios; the goal
   line ``goal: socker run <= 2x runc: RATIO PASS|FAIL``; socker's time above the interpreter
   floor.
4. **Check** (once, before timing): ``/bin/sh -c 'echo $$; cat /etc/socker-bench-tool; exit
   3'`` with every tool: PID 1 for runc and socker (bwrap keeps its own reaper as PID 1, so
   there it is 2), the tool's own marker, exit status 3 passed through; ``socker run --rm``
   must also leave no trace of a file it created in the image directory.
5. **Breakdown** (when the goal fails, or with ``--breakdown``; not with ``--no-breakdown``):
   ``python -X importtime`` of one ``socker run`` (the import total and the biggest imports),
   ``cProfile`` of one (socker_lib functions by cumulative time) and, if strace is installed,
   ``strace -f -c`` (syscalls of socker and everything it starts) plus a timeline of the
   process-level events (execve, clone, unshare, mount, pivot_root, wait, exit).

Run as root from the repository: ``python bench/run.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402 - needs REPO on sys.path
    DEFAULT_CACHE,
    describe_failure,
    log,
    machine,
    parse_tools,
    print_errors,
    print_profile,
    socker_next_to_python,
    support,
    umoci_unpack_flags,
    work_dir,
)

TOOLS = ("runc", "bwrap", "socker", "socker-rm")
MARKER = "etc/socker-bench-tool"
CHECK_SCRIPT = "echo $$; cat /etc/socker-bench-tool; exit 3"
RM_PROBE = "socker-bench-rm-probe"
IMAGE_TAG = "1"
BWRAP_FLAGS = [
    "--unshare-pid",
    "--unshare-uts",
    "--unshare-ipc",
    "--unshare-cgroup-try",
    "--die-with-parent",
]


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Row:
    name: str
    cmd: list[str]
    env: dict | None = None
    kind: str = "peer"  # "socker", "peer" or "floor"
    before: object = None  # callable(i) -> cmd for this run (runc: a new container id)
    after: object = None  # callable(i) -> None, untimed clean-up
    times: list[float] = field(default_factory=list)  # seconds
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def p90(self) -> float | None:
        if not self.times:
            return None
        ordered = sorted(self.times)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def execute(
    cmd: list[str], env=None, cwd=None, timeout: float = 60
) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    return time.perf_counter() - t0, proc


def run_once(row: Row, i: int, cwd: Path, errors: list[str]) -> float | None:
    cmd = row.before(i) if row.before else row.cmd
    try:
        t, proc = execute(cmd, env=row.env, cwd=cwd)
    except subprocess.TimeoutExpired:
        t, proc = None, None
    finally:
        if row.after:
            row.after(i)
    if proc is None or proc.returncode != 0:
        text = f"timed out: {' '.join(cmd)}" if proc is None else describe_failure(cmd, proc)
        row.error = text.splitlines()[0][:160]
        errors.append(f"{row.name}: {text}")
        log(f"  {row.name}: FAILED: {row.error}")
        return None
    return t


# ---------------------------------------------------------------------------------------------
# Inputs


def socker_script(args) -> Path:
    if args.socker:
        return Path(args.socker)
    exe = socker_next_to_python()
    if exe:
        return exe
    raise SystemExit(f"no socker script next to {sys.executable}; pass --socker PATH")


def script_interpreter(script: Path) -> str:
    """The interpreter in the script's ``#!`` line (what runs socker), else ``sys.executable``."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace")
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        words = first[2:].split()
        if words and os.path.isfile(words[0]) and "python" in os.path.basename(words[0]):
            return words[0]
    return sys.executable


def busybox_tree(work: Path) -> Path:
    """busybox_entries as an OCI layout, unpacked by umoci: returns the rootfs."""
    oci, _ = support()
    layout = work / "layout"
    oci.build_layout(
        layout,
        IMAGE_TAG,
        [oci.busybox_entries()],
        config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
    )
    bundle = work / "umoci-bundle"
    proc = subprocess.run(
        ["umoci", "unpack", *umoci_unpack_flags(), "--image", f"{layout}:{IMAGE_TAG}", str(bundle)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"umoci unpack failed:\n{proc.stdout}{proc.stderr}")
    return bundle / "rootfs"


def copy_tree(src: Path, dest: Path, tool: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["cp", "-a", f"{src}/.", f"{dest}/"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cp -a {src} {dest} failed: {proc.stderr}")
    marker = dest / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(tool + "\n")


def runc_bundle(bundle: Path, rootfs: Path, argv: list[str]) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["runc", "spec"], cwd=bundle, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"runc spec failed: {proc.stderr}")
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["process"]["args"] = argv
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    spaces = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    if not any(n["type"] == "cgroup" for n in spaces) and os.path.exists("/proc/self/ns/cgroup"):
        spaces.append({"type": "cgroup"})
    config["linux"]["namespaces"] = spaces
    path.write_text(json.dumps(config, indent=2) + "\n")


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


# ---------------------------------------------------------------------------------------------
# The check


def check(
    rows: dict[str, Row],
    check_cmds: dict[str, list[str]],
    cwd: Path,
    socker_image: Path | None,
    errors: list[str],
) -> bool:
    """Run CHECK_SCRIPT once with each tool: the PID, the tool's marker, exit status 3."""
    ok = True
    print("check (`/bin/sh -c 'echo $$; cat /etc/socker-bench-tool; exit 3'` once with each tool):")
    for tool, cmd in check_cmds.items():
        row = rows[tool]
        if row.error:
            print(f"  {row.name:28} skipped (failed: {row.error})")
            continue
        probe = socker_image / RM_PROBE if socker_image is not None else None
        if tool == "socker-rm" and probe is not None and probe.exists():
            probe.unlink()
        try:
            _, proc = execute(cmd, env=row.env, cwd=cwd)
        except subprocess.TimeoutExpired:
            print(f"  {row.name:28} TIMED OUT")
            errors.append(f"check {row.name}: timed out: {' '.join(cmd)}")
            ok = False
            continue
        lines = proc.stdout.split()
        want_pid = "2" if tool == "bwrap" else "1"  # bwrap's own reaper is PID 1
        want_marker = "socker" if tool.startswith("socker") else tool
        problems = []
        if proc.returncode != 3:
            problems.append(f"exit {proc.returncode}, expected 3")
        if lines[:1] != [want_pid]:
            problems.append(f"PID {lines[:1]}, expected {want_pid}")
        if lines[1:2] != [want_marker]:
            problems.append(f"marker {lines[1:2]}, expected {want_marker}")
        if tool == "socker-rm" and probe is not None and probe.exists():
            problems.append(f"--rm left {RM_PROBE} in the image directory")
        if problems:
            ok = False
            print(f"  {row.name:28} FAIL: {'; '.join(problems)}")
            errors.append(f"check {row.name}: {'; '.join(problems)}\n{describe_failure(cmd, proc)}")
        else:
            extra = " (bwrap's reaper is PID 1)" if tool == "bwrap" else ""
            extra += f", {RM_PROBE} not left in the image" if tool == "socker-rm" else ""
            print(f"  {row.name:28} OK: PID {lines[0]}{extra}, marker {lines[1]}, exit 3")
    return ok


# ---------------------------------------------------------------------------------------------
# Breakdown of socker's time


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime(py: str, script: Path, argv: list[str], env: dict, cwd: Path) -> None:
    _, proc = execute([py, "-X", "importtime", str(script), *argv], env=env, cwd=cwd)
    entries = []  # (self us, cumulative us, depth, name, children), in the order printed
    pending: dict[int, list] = {}  # depth -> entries not yet claimed by their parent
    for line in proc.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            depth = len(m.group(3)) // 2
            entry = (int(m.group(1)), int(m.group(2)), depth, m.group(4), pending.pop(depth + 1, []))
            entries.append(entry)
            pending.setdefault(depth, []).append(entry)
    if not entries:
        print(f"importtime: nothing parsed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return
    total = sum(e[0] for e in entries)
    own = sum(e[0] for e in entries if e[3].startswith("socker_lib"))
    print(
        f"imports (-X importtime, one `socker run`): {len(entries)} modules, {total / 1000:.1f} ms in all "
        f"(importtime inflates it), {own / 1000:.1f} ms of it in socker_lib's own module bodies"
    )
    top = sorted((e for e in entries if e[2] == 0), key=lambda e: -e[1])[:10]
    print("  biggest top-level imports, cumulative ms (and their biggest direct imports):")
    for _, cum, _, name, children in top:
        print(f"    {cum / 1000:7.2f}  {name}")
        for child in sorted(children, key=lambda e: -e[1])[:5]:
            if child[1] >= 1000:
                print(f"    {child[1] / 1000:7.2f}      {child[3]}")
    mods = sorted(e[3] for e in entries if e[3].startswith("socker_lib"))
    if mods:
        print(f"  socker_lib modules loaded ({len(mods)}): " + ", ".join(mods))


def cprofile(py: str, script: Path, argv: list[str], env: dict, cwd: Path, work: Path) -> None:
    import pstats

    out = work / "socker-run.prof"
    t, proc = execute([py, "-m", "cProfile", "-o", str(out), str(script), *argv], env=env, cwd=cwd)
    if not out.exists():
        print(f"cProfile: no profile written (exit {proc.returncode}): {proc.stderr[-500:]}")
        return
    print(
        f"cProfile: one `socker run` took {t * 1000:.1f} ms under the profiler (profiler overhead included)"
    )
    print_profile(pstats.Stats(str(out), stream=sys.stdout), 20, 15)


TIMELINE_CALLS = "execve,clone,clone3,fork,vfork,unshare,setns,mount,pivot_root,umount2,wait4,exit_group"
STRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")


def strace(script: Path, argv: list[str], env: dict, cwd: Path, work: Path) -> None:
    if not shutil.which("strace"):
        print("strace: not installed (apt-get install -y strace); skipped")
        return
    summary = work / "strace-c.txt"
    _, proc = execute(["strace", "-f", "-c", "-o", str(summary), str(script), *argv], env=env, cwd=cwd)
    if summary.exists():
        lines = summary.read_text().splitlines()
        print("strace -f -c (socker and every process it starts; syscall time, not wall time):")
        for line in lines[:20]:
            print("  " + line)
        if len(lines) > 22:
            print("  ...")
            for line in lines[-2:]:
                print("  " + line)
    else:
        print(f"strace -c: no output (exit {proc.returncode}): {proc.stderr[-300:]}")
    trace = work / "strace-t.txt"
    _, proc = execute(
        [
            "strace",
            "-f",
            "--seccomp-bpf",
            "-ttt",
            "-e",
            f"trace={TIMELINE_CALLS}",
            "-o",
            str(trace),
            str(script),
            *argv,
        ],
        env=env,
        cwd=cwd,
    )
    if not trace.exists():
        print(f"strace timeline: no output (exit {proc.returncode}): {proc.stderr[-300:]}")
        return
    events = []
    for line in trace.read_text().splitlines():
        m = STRACE_LINE.match(line)
        if m:
            events.append((int(m.group(1)), float(m.group(2)), m.group(3)))
    if not events:
        return
    main_pid, t0 = events[0][0], events[0][1]
    print("timeline (strace -f --seccomp-bpf -ttt, process-level calls only; ms from socker's execve):")
    for shown, (pid, t, text) in enumerate(events):
        if shown >= 60:
            print(f"  ... ({len(events) - shown} more)")
            break
        print(f"  {(t - t0) * 1000:8.2f}  [{pid}] {text[:150]}")
    # phases: until socker's first clone; until its last wait4 returns; until it exits
    first_clone = next((t for pid, t, text in events if pid == main_pid and text.startswith("clone")), None)
    waited = [t for pid, t, text in events if pid == main_pid and "wait4 resumed" in text]
    exited = [t for pid, t, text in events if pid == main_pid and text.startswith("+++ exited")]
    if first_clone and waited and exited:
        print(
            f"phases: start-up, imports and set-up until socker's first clone {(first_clone - t0) * 1000:.1f} ms; "
            f"container (clone .. its exit reaped) {(waited[-1] - first_clone) * 1000:.1f} ms; "
            f"after that until socker exits {(exited[-1] - waited[-1]) * 1000:.1f} ms (clean-up, "
            "interpreter shut-down)"
        )


def variants(py: str, script: Path, ref: str, env: dict, cwd: Path, n: int) -> None:
    """socker run without site, without interpreter shut-down, and without both, timed like the
    table (n runs, rows taking turns): how much of socker's time is Python's rather than socker's."""
    where = subprocess.run(
        [py, "-c", "import os, socker_lib; print(os.path.dirname(os.path.dirname(socker_lib.__file__)))"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    call = (
        "import sys, os\n"
        f"sys.path.insert(0, {where!r})\n"
        f"sys.argv = ['socker', 'run', {ref!r}, '/bin/true']\n"
        "from socker_lib.cli import main\n"
    )
    plain = call + "main()\n"
    quick = (
        call + "try:\n    main()\nexcept SystemExit as e:\n    sys.stdout.flush(); os._exit(e.code or 0)\n"
    )
    rows = [
        Row("socker run (as in the table)", [str(script), "run", ref, "/bin/true"], env=env),
        Row("  main() under python -S", [py, "-S", "-c", plain], env=env),
        Row("  main(), then os._exit", [py, "-c", quick], env=env),
        Row("  python -S, main(), os._exit", [py, "-S", "-c", quick], env=env),
    ]
    errors: list[str] = []
    for i in range(-1, n):
        for row in rows:
            if row.error is None:
                t = run_once(row, i, cwd, errors)
                if t is not None and i >= 0:
                    row.times.append(t)
    base = rows[0].median
    print(
        f"variants ({n} runs each; python -S: no site, so no .pth files and no site-packages, "
        f"socker_lib from {where}; os._exit: no interpreter shut-down):"
    )
    for row in rows:
        if row.error or not row.times:
            print(f"  {row.name:32} FAILED: {row.error}")
            continue
        delta = f"{(row.median - base) * 1000:+7.1f} ms" if base and row is not rows[0] else ""
        print(f"  {row.name:32} {ms(row.median)} ms median {ms(row.p90)} p90  {delta}")
    for e in errors:
        print("  " + e.replace("\n", "\n  "))


# ---------------------------------------------------------------------------------------------
# The benchmark


def ms(t: float | None) -> str:
    return f"{t * 1000:8.1f}" if t is not None else "       -"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description=(
            "Time the start-up of a container that runs /bin/true: `socker run` and `socker run --rm` "
            "on a local busybox image (or --rootfs), next to `runc run` and `bwrap` on copies of the "
            "same tree, plus Python's own start-up floor; print median/p90 ms, socker/peer ratios, "
            "the goal line `socker run <= 2x runc`, a PID-1/marker/exit-status check of every tool "
            "and, when the goal fails, where socker's time goes. Needs root, runc, bwrap, umoci."
        ),
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=20,
        help="timed runs per row after one warm-up run; median and p90 reported (default: %(default)s)",
    )
    p.add_argument(
        "--rootfs",
        nargs="?",
        const=str(DEFAULT_CACHE / "rootfs"),
        help="use this root filesystem instead of busybox; with no value, the Debian minbase tree "
        f"bench/pull.py keeps in {DEFAULT_CACHE / 'rootfs'} (it must exist: run bench/pull.py once)",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default: all; the floors always run)",
    )
    p.add_argument(
        "--socker",
        help="the socker script to time (default: `socker` next to sys.executable, i.e. not a pyenv shim)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="where the trees, the runc bundle and SOCKER_HOME go (default: a temp dir under "
        f"{DEFAULT_CACHE}; /tmp would do too, but the overlay of --rm wants a real file system)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    p.add_argument(
        "--pycache-prefix",
        action="store_true",
        help="for an editable install (no compiled bytecode next to the sources): unset "
        "PYTHONDONTWRITEBYTECODE for the Python rows and point PYTHONPYCACHEPREFIX into the work "
        "dir, so socker_lib's bytecode is cached as in an installed socker. By default Python runs "
        "with this environment as is: a regular `pip install .` has its bytecode compiled already",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--breakdown",
        action="store_true",
        help="always print where socker's time goes (-X importtime, cProfile, strace); by default "
        "only when the goal fails",
    )
    group.add_argument("--no-breakdown", action="store_true", help="never print the breakdown")
    args = p.parse_args(argv)
    tools = parse_tools(p, args, TOOLS)
    if os.geteuid() != 0:
        log("warning: not root: runc and socker would need rootless set-ups; expect failures")
    for tool in ("runc", "bwrap"):
        if tool in tools and not shutil.which(tool):
            p.error(f"{tool} is not installed (leave it out with --tools)")

    script = socker_script(args)
    py = script_interpreter(script)
    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    # resolved before it is made, with the same result as resolving it after
    given = args.workdir.resolve() if args.workdir else None
    with work_dir(given, "run-bench-", DEFAULT_CACHE.resolve(), args.keep) as work:
        ok = bench(args, tools, script, py, work, errors)
    print_errors(errors)
    return 0 if ok and not errors else 1


def bench(args, tools: list[str], script: Path, py: str, work: Path, errors: list[str]) -> bool:
    n = args.repeat
    # -- the input tree
    if args.rootfs:
        source = Path(args.rootfs)
        if not source.is_dir():
            raise SystemExit(f"--rootfs {source}: not a directory (bench/pull.py makes the default one)")
        name = "rootfs"
        what = f"{source} (--rootfs)"
    else:
        source = busybox_tree(work)
        name = "busybox"
        what = f"busybox from tests/support/oci (build_layout + umoci unpack; {os.path.getsize(source / 'bin/busybox')} byte static binary)"
    ref = f"localhost/bench/{name}:{IMAGE_TAG}"
    files = sum(len(d) + len(f) for _, d, f in os.walk(source))
    print(f"image: {what}, {files} entries")
    for f in ("/etc/socker.yaml", os.path.expanduser("~/.socker.yaml")):
        if os.path.exists(f):
            print(f"warning: {f} exists: socker run reads it through invoke (its slow path)")

    rows: dict[str, Row] = {}
    check_cmds: dict[str, list[str]] = {}
    socker_image: Path | None = None
    home = work / "socker-home"
    py_env = dict(os.environ)
    if args.pycache_prefix:
        # Python as an installed socker meets it: bytecode cached (pip compiles it at install time).
        # With PYTHONDONTWRITEBYTECODE=1 every run would compile socker_lib from source again; a
        # pycache prefix in the work dir keeps the repository free of __pycache__ directories.
        if py_env.pop("PYTHONDONTWRITEBYTECODE", None):
            print(
                "note: PYTHONDONTWRITEBYTECODE was set here; unset for the Python rows, with "
                "PYTHONPYCACHEPREFIX in the work dir (--pycache-prefix)"
            )
        py_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    socker_env = {**py_env, "SOCKER_HOME": str(home)}
    socker_env.pop("SOCKER_DEBUG", None)

    if "runc" in tools:
        log("preparing runc's bundle ...")
        rootfs = work / "runc" / "rootfs"
        copy_tree(source, rootfs, "runc")
        runc_bundle(work / "runc" / "bundle", rootfs, ["/bin/true"])
        runc_bundle(work / "runc" / "check", rootfs, ["/bin/sh", "-c", CHECK_SCRIPT])
        state = work / "runc" / "state"
        prefix = f"bench-{os.getpid()}"
        base = ["runc", "--root", str(state), "run", "-b"]

        def runc_cmd(i, bundle=work / "runc" / "bundle"):
            return [*base, str(bundle), f"{prefix}-{i}"]

        def runc_cleanup(i):
            if (state / f"{prefix}-{i}").exists():  # only if runc did not delete it itself
                subprocess.run(
                    ["runc", "--root", str(state), "delete", "-f", f"{prefix}-{i}"], capture_output=True
                )

        rows["runc"] = Row("runc run", runc_cmd(0), before=runc_cmd, after=runc_cleanup)
        check_cmds["runc"] = [*base, str(work / "runc" / "check"), f"{prefix}-check"]

    if "bwrap" in tools:
        log("preparing bwrap's tree ...")
        rootfs = work / "bwrap" / "rootfs"
        copy_tree(source, rootfs, "bwrap")
        bw = [
            "bwrap",
            *BWRAP_FLAGS,
            "--bind",
            str(rootfs),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--ro-bind",
            "/sys",
            "/sys",
            "--hostname",
            "x",
        ]
        rows["bwrap"] = Row("bwrap", [*bw, "/bin/true"])
        check_cmds["bwrap"] = [*bw, "/bin/sh", "-c", CHECK_SCRIPT]

    if "socker" in tools or "socker-rm" in tools:
        log(f"preparing socker's image {ref} in {home} ...")
        try:
            _, proc = execute([str(script), "new", ref], env=socker_env, cwd=work)
        except subprocess.TimeoutExpired:
            raise SystemExit("socker new timed out") from None
        if proc.returncode != 0:
            raise SystemExit(f"socker new failed:\n{describe_failure([str(script), 'new', ref], proc)}")
        socker_image = home / "images" / "localhost" / "bench" / name / IMAGE_TAG
        if not socker_image.is_dir():
            raise SystemExit(f"socker new made no {socker_image}")
        copy_tree(source, socker_image, "socker")
        for tool, flags, label in (("socker", [], "socker run"), ("socker-rm", ["--rm"], "socker run --rm")):
            if tool in tools:
                rows[tool] = Row(
                    label, [str(script), "run", *flags, ref, "/bin/true"], env=socker_env, kind="socker"
                )
                extra = f"touch /{RM_PROBE}; " if tool == "socker-rm" else ""
                check_cmds[tool] = [str(script), "run", *flags, ref, "/bin/sh", "-c", extra + CHECK_SCRIPT]

    floors = [
        Row("/bin/true (host, no container)", ["/bin/true"], kind="floor"),
        Row("python -c pass", [py, "-c", "pass"], env=py_env, kind="floor"),
        Row("python -S -c pass", [py, "-S", "-c", "pass"], env=py_env, kind="floor"),
        Row("socker run --help", [str(script), "run", "--help"], env=socker_env, kind="floor"),
    ]
    order = [*rows.values(), *floors]

    # -- warm-up, check, timing
    log("warm-up ...")
    for row in order:
        run_once(row, -1, work, errors)
    print()
    checked = check(rows, check_cmds, work, socker_image, errors)
    for i in range(n):
        log(f"round {i + 1}/{n} ...")
        for row in order:
            if row.error is None:
                t = run_once(row, i, work, errors)
                if t is not None:
                    row.times.append(t)

    # -- the table
    print()
    print(f"{machine()}; kernel {os.uname().release}")
    print(
        f"tools: {tool_version(['runc', '--version'])}; {tool_version(['bwrap', '--version'])}; "
        f"socker {script} (python {py}, {sys.version.split()[0] if py == sys.executable else tool_version([py, '-V'])})"
    )
    print(f"runs per row: {n} after 1 warm-up (wall clock from this process, rows take turns); ms")
    print()
    header = f"{'command':32} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}   {'socker/this':>11}"
    print(header)
    print("-" * len(header))
    s_run = rows.get("socker")
    for row in order:
        if row.error:
            print(f"{row.name:32} {'FAILED':>8}   {row.error}")
            continue
        ratio = ""
        if row.kind == "peer" and s_run is not None and s_run.median and row.median:
            ratio = f"{s_run.median / row.median:.2f}x"
        print(
            f"{row.name:32} {ms(row.median)} {ms(row.p90)} {ms(min(row.times, default=None))} "
            f"{ms(max(row.times, default=None))}   {ratio:>11}"
        )
    print()

    runc, bw = rows.get("runc"), rows.get("bwrap")
    for label, s in (("socker run", rows.get("socker")), ("socker run --rm", rows.get("socker-rm"))):
        if s is None or s.median is None:
            continue
        parts = [f"{peer.name} {s.median / peer.median:.2f}x" for peer in (runc, bw) if peer and peer.median]
        if parts:
            print(f"ratio {label} / " + ", ".join(parts))
    goal_failed = False
    if s_run is not None and s_run.median is not None and runc is not None and runc.median is not None:
        r = s_run.median / runc.median
        goal_failed = r > 2
        print(f"goal: socker run <= 2x runc: {r:.2f} {'FAIL' if goal_failed else 'PASS'}")
    else:
        print("goal: socker run <= 2x runc: n/a (a row failed or was not asked for)")
        goal_failed = s_run is not None and s_run.error is not None
    floor_s, helpr = floors[2], floors[3]
    if s_run is not None and s_run.median is not None and floor_s.median is not None:
        cli = f"; `socker run --help` {helpr.median * 1000:.1f} ms" if helpr.median is not None else ""
        print(
            f"socker run {s_run.median * 1000:.1f} ms = python -S start-up {floor_s.median * 1000:.1f} ms "
            f"+ {(s_run.median - floor_s.median) * 1000:.1f} ms of socker's own work and the container"
            f"{cli}"
        )
    leftovers = (
        sorted(p.name for p in (home / "containers").iterdir()) if (home / "containers").is_dir() else []
    )
    if leftovers:
        print(f"note: {len(leftovers)} container state dirs left in {home / 'containers'}")

    want = args.breakdown or (goal_failed and not args.no_breakdown)
    if want and s_run is not None and s_run.error is None:
        argv = ["run", ref, "/bin/true"]
        print()
        print("=" * 100)
        print("where socker run's time goes")
        print("=" * 100)
        importtime(py, script, argv, socker_env, work)
        print()
        cprofile(py, script, argv, socker_env, work, work)
        print()
        strace(script, argv, socker_env, work, work)
        print()
        variants(py, script, ref, socker_env, work, n)
    return checked and not any(r.error for r in order)


if __name__ == "__main__":
    sys.exit(main())
