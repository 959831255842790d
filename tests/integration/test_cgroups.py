"""Resource limits with real cgroups (root), whatever the host's layout (v1, hybrid or v2).

The limits are checked by their effect (a process over its memory limit is killed, forks
beyond the pids limit fail, a busy loop is throttled) and by reading the files back. The
v2 path's file writing is also checked on a fake cgroup tree, since hybrid hosts bind the
controllers to v1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from socker_lib.errors import SockerError
from socker_lib.runtime import cgroups
from socker_lib.runtime.cgroups import Hierarchy, Layout, create_cgroup
from socker_lib.runtime.spec import ContainerSpec
from tests.conftest import needs_root, needs_tool

MiB = 1024 * 1024


def make_spec(**kw) -> ContainerSpec:
    kw.setdefault("id", "test-" + uuid.uuid4().hex)
    return ContainerSpec(rootfs="/", args=["true"], **kw)


def held(code: str) -> subprocess.Popen:
    """A python child that waits for a line on stdin before running ``code``."""
    script = "import sys\nsys.stdin.readline()\n" + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def release(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc.communicate(timeout=timeout)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def groups():
    """Created groups, removed after the test even when it fails."""
    made: list[cgroups.Cgroup] = []
    yield made
    for cg in made:
        cg.remove()


def test_no_limits_no_cgroup():
    assert create_cgroup(make_spec()) is None


def test_memory_limit_stops_a_process_that_exceeds_it(groups):
    needs_root()
    cg = create_cgroup(make_spec(memory=32 * MiB))
    groups.append(cg)
    limit_file = "memory.max" if cg.version["memory"] == 2 else "memory.limit_in_bytes"
    assert int(read(os.path.join(cg.paths["memory"], limit_file))) == 32 * MiB

    proc = held("data = b'x' * (200 << 20)\nprint('survived', len(data))\n")
    cg.add(proc.pid)
    assert str(proc.pid) in read(os.path.join(cg.paths["memory"], "cgroup.procs")).split()
    out, err = release(proc)
    assert "survived" not in out
    assert proc.returncode == -signal.SIGKILL or "MemoryError" in err, (proc.returncode, err)

    # the same allocation outside the group succeeds: the limit made the difference
    free = held("data = b'x' * (200 << 20)\nprint('survived', len(data))\n")
    out, _ = release(free)
    assert free.returncode == 0 and "survived" in out


def test_pids_limit_makes_forks_fail_beyond_it(groups):
    needs_root()
    cg = create_cgroup(make_spec(pids_limit=10))
    groups.append(cg)
    assert read(os.path.join(cg.paths["pids"], "pids.max")) == "10"

    proc = held(
        """
        import os, time
        kids, error = [], None
        for _ in range(50):
            try:
                pid = os.fork()
            except OSError as e:
                error = e.errno
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
        print(len(kids), error, flush=True)
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        """
    )
    cg.add(proc.pid)
    out, err = release(proc)
    assert proc.returncode == 0, err
    forked, error = out.split()
    assert int(forked) == 9  # the child itself is the tenth process
    assert error == str(__import__("errno").EAGAIN)


def test_cpus_quota_written_and_enforced(groups):
    needs_root()
    cg = create_cgroup(make_spec(cpus=0.5))
    groups.append(cg)
    group = cg.paths["cpu"]
    if cg.version["cpu"] == 2:
        assert read(os.path.join(group, "cpu.max")) == "50000 100000"
    else:
        assert read(os.path.join(group, "cpu.cfs_quota_us")) == "50000"
        assert read(os.path.join(group, "cpu.cfs_period_us")) == "100000"

    proc = held(
        """
        import time
        start, cpu0 = time.monotonic(), time.process_time()
        while time.monotonic() - start < 1.0:
            pass
        print(time.process_time() - cpu0)
        """
    )
    cg.add(proc.pid)
    out, err = release(proc)
    assert proc.returncode == 0, err
    used = float(out)
    assert used < 0.75, f"a busy loop got {used:.2f}s of CPU in 1s wall time despite --cpus 0.5"
    stat = dict(line.split() for line in read(os.path.join(group, "cpu.stat")).splitlines())
    assert int(stat["nr_throttled"]) > 0


def test_all_limits_together_and_remove_leaves_nothing():
    needs_root()
    cg = create_cgroup(make_spec(memory=64 * MiB, cpus=1, pids_limit=20))
    dirs = list(cg.dirs)
    assert dirs and all(os.path.isdir(d) for d in dirs)
    assert set(cg.paths) == {"memory", "cpu", "pids"}
    assert all(
        os.path.basename(d) == cg.name and os.path.basename(os.path.dirname(d)) == "socker" for d in dirs
    )

    # a leftover process (the container's PID 1 is gone, a child of it lives on)
    leftover = subprocess.Popen(["sleep", "60"])
    cg.add(leftover.pid)
    assert cg.pids() == {leftover.pid}
    cg.remove()
    assert leftover.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in dirs)
    cg.remove()  # twice is fine


def test_hybrid_host_joins_the_v2_hierarchy_too(groups):
    """On hybrid hosts the v2 group (no controllers) gives cgroup.kill; on v2 hosts limits live there."""
    needs_root()
    layout = cgroups.detect()
    if layout.v2 is None:
        pytest.skip("no cgroup v2 hierarchy on this host (legacy layout)")
    cg = create_cgroup(make_spec(pids_limit=5))
    groups.append(cg)
    v2_group = os.path.join(layout.v2.mountpoint, "socker", cg.name)
    assert v2_group in cg.dirs
    proc = subprocess.Popen(["sleep", "60"])
    cg.add(proc.pid)
    with open(f"/proc/{proc.pid}/cgroup") as f:
        v2_line = next(line for line in f.read().splitlines() if line.startswith("0::"))
    rel = v2_group[len(layout.v2.mountpoint.rstrip("/")) :]
    assert v2_line == f"0::{rel}"
    cg.remove()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not os.path.exists(v2_group)


def _v2_stand_in(layout) -> tuple[str, list[tuple[str, str, bool]]] | None:
    """A controller the v2 hierarchy really offers and a limit file of it: hugetlb on hybrid
    hosts (where memory/cpu/pids are bound to v1), pids on unified ones."""
    offered = layout.v2.controllers if layout.v2 else frozenset()
    if "hugetlb" in offered:
        sizes = sorted(os.listdir("/sys/kernel/mm/hugepages"))  # e.g. hugepages-2048kB
        if sizes:
            kb = int(sizes[0].split("-")[1][:-2])
            name = f"{kb // 1024 // 1024}GB" if kb >= 1024 * 1024 else f"{kb // 1024}MB"
            return "hugetlb", [(f"hugetlb.{name}.max", str(4 * kb * 1024), True)]
    if "pids" in offered:
        return "pids", [("pids.max", "12", True)]
    return None


def test_v2_machinery_on_the_real_hierarchy():
    """subtree_control at the top and in socker/, the group, a limit file, moving a process in,
    cgroup.kill and removal, against the kernel's v2 hierarchy whatever the layout."""
    needs_root()
    layout = cgroups.detect()
    stand_in = _v2_stand_in(layout)
    if stand_in is None:
        pytest.skip("no cgroup v2 hierarchy with a usable controller (legacy layout)")
    controller, files = stand_in
    top = layout.v2.mountpoint
    top_before = read(os.path.join(top, "cgroup.subtree_control")).split()
    parent = os.path.join(top, "socker")
    parent_before = (
        read(os.path.join(parent, "cgroup.subtree_control")).split() if os.path.isdir(parent) else []
    )
    cg = cgroups.Cgroup("test-" + uuid.uuid4().hex)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        cg._setup(layout, {controller: {2: files}})
        group = os.path.join(parent, cg.name)
        assert cg.paths == {controller: group} and cg.version == {controller: 2}
        assert controller in read(os.path.join(top, "cgroup.subtree_control")).split()
        assert controller in read(os.path.join(parent, "cgroup.subtree_control")).split()
        assert controller in read(os.path.join(group, "cgroup.controllers")).split()
        name, value, _ = files[0]
        assert read(os.path.join(group, name)) == value
        cg.add(proc.pid)
        assert read(os.path.join(group, "cgroup.procs")).split() == [str(proc.pid)]
        assert read(os.path.join(parent, "cgroup.procs")) == ""  # no internal processes
        cg.remove()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert not os.path.exists(group)
    finally:
        cg.remove()
        proc.kill()
        proc.wait()
        # put the hierarchy's controller switches back as they were
        if controller not in parent_before and os.path.isdir(parent):
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write("-" + controller)
        if controller not in top_before:
            with open(os.path.join(top, "cgroup.subtree_control"), "w") as f:
                f.write("-" + controller)


ROOTLESS_SCRIPT = """
import json, subprocess, sys
from socker_lib.runtime import cgroups
sys.stdin.readline()  # until the test has moved us into the delegated group
controller, files = json.loads(sys.argv[1])
layout = cgroups.detect()
cg = cgroups.Cgroup(sys.argv[2], rootless=True)
cg._setup(layout, {controller: {2: [tuple(f) for f in files]}})
child = subprocess.Popen(["sleep", "60"])
cg.add(child.pid)
members = open(cg.paths[controller] + "/cgroup.procs").read().split()
cg.remove()
print(json.dumps({"paths": cg.dirs or [cg.name], "group": members, "child": child.pid, "rc": child.wait()}))
"""


def test_rootless_with_a_delegated_v2_subtree(tmp_path):
    """An unprivileged user (nobody) owning a v2 subtree, as systemd's Delegate=yes sets it up."""
    needs_root()
    needs_tool("setpriv")
    layout = cgroups.detect()
    stand_in = _v2_stand_in(layout)
    if stand_in is None:
        pytest.skip("no cgroup v2 hierarchy with a usable controller (legacy layout)")
    controller, files = stand_in
    top = layout.v2.mountpoint
    top_before = read(os.path.join(top, "cgroup.subtree_control")).split()
    deleg = os.path.join(top, "socker-test-delegated-" + uuid.uuid4().hex[:8])
    leaf = os.path.join(deleg, "session")
    name = "test-" + uuid.uuid4().hex
    os.mkdir(deleg)
    os.mkdir(leaf)
    for path in (deleg, leaf):
        for f in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            os.chown(os.path.join(path, f) if f else path, 65534, 65534)
    if controller not in top_before:
        with open(os.path.join(top, "cgroup.subtree_control"), "w") as f:
            f.write("+" + controller)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-c", ROOTLESS_SCRIPT, __import__("json").dumps(stand_in), name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    try:
        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        out, err = release(proc)
        assert proc.returncode == 0, err
        result = __import__("json").loads(out)
        assert result["group"] == [str(result["child"])]
        assert result["rc"] == -signal.SIGKILL  # remove() killed what was left
        assert os.path.isdir(os.path.join(deleg, "socker"))  # inside the delegated subtree
        assert not os.path.exists(os.path.join(deleg, "socker", name))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for d in (os.path.join(deleg, "socker", name), os.path.join(deleg, "socker"), leaf, deleg):
            if os.path.isdir(d):
                os.rmdir(d)
        if controller not in top_before:
            with open(os.path.join(top, "cgroup.subtree_control"), "w") as f:
                f.write("-" + controller)


def test_join_like_moves_a_process_into_the_same_groups(groups):
    needs_root()
    cg = create_cgroup(make_spec(pids_limit=50, memory=64 * MiB))
    groups.append(cg)
    first = subprocess.Popen(["sleep", "60"])
    second = subprocess.Popen(["sleep", "60"])
    try:
        cg.add(first.pid)
        cgroups.join_like(second.pid, first.pid)
        assert cg.pids() == {first.pid, second.pid}
        assert read(f"/proc/{first.pid}/cgroup") == read(f"/proc/{second.pid}/cgroup")
    finally:
        cg.remove()
        first.wait(timeout=10)
        second.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Errors


def test_read_only_cgroup_filesystem_is_a_clear_error(tmp_path):
    """The cgroup root replaced by a read-only mount (in a private mount namespace)."""
    needs_root()
    needs_tool("unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = textwrap.dedent(
        f"""
        import json
        from socker_lib.errors import SockerError
        from socker_lib.runtime.cgroups import Hierarchy, Layout, create_cgroup
        from socker_lib.runtime.spec import ContainerSpec
        results = []
        for layout in (
            Layout(v2=Hierarchy(2, {str(ro)!r}, controllers=frozenset({{"memory", "cpu", "pids"}}))),
            Layout(v1={{"memory": Hierarchy(1, {str(ro)!r}, controllers=frozenset({{"memory"}}))}}),
        ):
            try:
                create_cgroup(ContainerSpec("/", ["true"], memory=64 << 20, id="x"), layout)
                results.append(None)
            except SockerError as e:
                results.append([e.message, e.hint])
        print(json.dumps(results))
        """
    )
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o ro tmpfs "$0" && exec "$1" -c "$2"', str(ro), sys.executable, script],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    ).stdout  # fmt: skip
    import json

    for result in json.loads(out):
        assert result is not None, "a read-only cgroup root was accepted"
        message, hint = result
        assert "read-only" in message and str(ro) in message
        assert "--memory" in hint


def test_read_only_mount_option_is_refused_up_front(tmp_path):
    layout = Layout(v2=Hierarchy(2, str(tmp_path), controllers=frozenset({"pids"}), readonly=True))
    with pytest.raises(SockerError, match="read-only"):
        create_cgroup(make_spec(pids_limit=5, rootless=False), layout)
    assert list(tmp_path.iterdir()) == []


def test_missing_controller_is_a_clear_error(tmp_path):
    layout = Layout(v2=Hierarchy(2, str(tmp_path), controllers=frozenset({"pids"})))
    with pytest.raises(SockerError) as e:
        create_cgroup(make_spec(memory=64 * MiB, rootless=False), layout)
    assert "memory" in e.value.message and "not available" in e.value.message
    assert "--memory" in e.value.hint
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_rootless_needs_a_delegated_v2_subtree(tmp_path):
    # v1 only: no delegation possible
    layout = Layout(v1={"pids": Hierarchy(1, str(tmp_path), controllers=frozenset({"pids"}), own="/")})
    with pytest.raises(SockerError) as e:
        create_cgroup(make_spec(pids_limit=5, rootless=True), layout)
    assert "without root" in e.value.message and "Delegate=yes" in e.value.hint
    # v2, but our group is not ours
    if os.geteuid() == 0:
        os.chown(tmp_path, 12345, 12345)
    layout = Layout(v2=Hierarchy(2, str(tmp_path), controllers=frozenset({"pids"}), own="/"))
    with pytest.raises(SockerError, match="no delegated cgroup v2 subtree"):
        create_cgroup(make_spec(pids_limit=5, rootless=True), layout)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"memory": 1000}, "too small"),
        ({"cpus": 0.001}, "out of range"),
        ({"cpus": 10_000.0}, "out of range"),
        ({"pids_limit": 0}, "at least 1"),
    ],
)
def test_bad_values(kw, words, tmp_path):
    with pytest.raises(SockerError, match=words):
        create_cgroup(make_spec(**kw), Layout(v2=Hierarchy(2, str(tmp_path))))


# ---------------------------------------------------------------------------------------------
# The v2 and v1 file layouts on fake trees (hybrid hosts bind the controllers to v1)


def test_v2_layout_on_a_fake_tree(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    layout = Layout(
        v2=Hierarchy(2, str(tmp_path), controllers=frozenset({"cpuset", "cpu", "io", "memory", "pids"}))
    )
    cg = create_cgroup(make_spec(memory=64 * MiB, cpus=1.5, pids_limit=30, rootless=False, id="abc"), layout)
    group = tmp_path / "socker" / "abc"
    assert cg.dirs == [str(group)]
    assert cg.version == {"memory": 2, "cpu": 2, "pids": 2}
    # the top already had memory; cpu and pids are added; socker/ gets all three
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +pids"
    assert (tmp_path / "socker" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (group / "memory.max").read_text() == str(64 * MiB)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "pids.max").read_text() == "30"
    assert not (group / "memory.swap.max").exists()  # only written where swap accounting exists


def test_v1_layout_on_a_fake_tree(tmp_path):
    hs = {}
    for name, ctrls in {"memory": {"memory"}, "cpu,cpuacct": {"cpu", "cpuacct"}, "pids": {"pids"}}.items():
        (tmp_path / name).mkdir()
        h = Hierarchy(1, str(tmp_path / name), controllers=frozenset(ctrls))
        hs.update(dict.fromkeys(ctrls, h))
    cg = create_cgroup(
        make_spec(memory=64 * MiB, cpus=0.25, pids_limit=7, rootless=False, id="abc"), Layout(v1=hs)
    )
    assert cg.version == {"memory": 1, "cpu": 1, "pids": 1}
    assert sorted(cg.dirs) == sorted(
        str(tmp_path / n / "socker" / "abc") for n in ("memory", "cpu,cpuacct", "pids")
    )
    assert (tmp_path / "memory/socker/abc/memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert (tmp_path / "cpu,cpuacct/socker/abc/cpu.cfs_quota_us").read_text() == "25000"
    assert (tmp_path / "cpu,cpuacct/socker/abc/cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "pids/socker/abc/pids.max").read_text() == "7"


def test_detect_parses_hybrid_and_unified_layouts(tmp_path, monkeypatch):
    hybrid = textwrap.dedent(
        """\
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
        35 31 0:32 /docker/x /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids,clone_children
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw
        """
    )
    own = "12:pids:/a\n4:memory:/docker/x/b\n2:cpu,cpuacct:/\n1:name=systemd:/s\n0::/u\n"
    (tmp_path / "mountinfo").write_text(hybrid)
    (tmp_path / "cgroup").write_text(own)
    monkeypatch.setattr(cgroups, "MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(cgroups, "PROC_CGROUP", str(tmp_path / "cgroup"))
    layout = cgroups.detect()
    assert layout.kind == "hybrid"
    assert layout.v2.mountpoint == "/sys/fs/cgroup/uni fied" and layout.v2.own == "/u"
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert set(layout.v1) == {"cpu", "cpuacct", "memory", "pids"}
    assert layout.v1["memory"].readonly and layout.v1["memory"].own_dir() == "/sys/fs/cgroup/memory/b"
    assert layout.v1["pids"].own_dir() == "/sys/fs/cgroup/pids/a"

    (tmp_path / "mountinfo").write_text("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    (tmp_path / "cgroup").write_text("0::/user.slice/x.scope\n")
    layout = cgroups.detect()
    assert layout.kind == "unified" and layout.v2.own_dir() == "/sys/fs/cgroup/user.slice/x.scope"
