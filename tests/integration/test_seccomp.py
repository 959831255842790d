"""The default seccomp filter for real (needs root and gcc): a small static C program calls
denied system calls inside busybox containers and prints the errno of each."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from socker_lib.errors import SockerError
from socker_lib.runtime import container, manage, seccomp
from socker_lib.runtime.container import run
from socker_lib.runtime.spec import ContainerSpec
from tests.conftest import needs_root, needs_tool
from tests.integration.test_manage import exec_out
from tests.integration.test_runtime import make_image

pytestmark = pytest.mark.root

# each line "name errno" (0: the call succeeded)
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void show(const char *name, long ret) { printf("%s %d\n", name, ret < 0 ? errno : 0); }

#if defined(__x86_64__)
/* the 32-bit ABI from a 64-bit program: seccomp sees AUDIT_ARCH_I386 and i386 numbers */
static long int80(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}
static void show32(const char *name, long ret) { printf("%s %ld\n", name, ret < 0 && ret > -4096 ? -ret : 0); }
#endif

int main(void) {
    struct timespec ts = {0, 0};
    errno = 0; show("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    errno = 0; show("add_key", syscall(SYS_add_key, NULL, NULL, NULL, 0, -2));
    errno = 0; show("bpf", syscall(SYS_bpf, -1, NULL, 0));
    errno = 0; show("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    errno = 0; show("clock_settime", syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts));
    errno = 0; show("getppid", syscall(SYS_getppid));
#if defined(__x86_64__)
    show32("keyctl32", int80(288, 0, -3, 0));
    show32("getppid32", int80(64, 0, 0, 0));
#endif
    return 0;
}
"""
FILTERED = ("keyctl", "add_key", "bpf", "perf_event_open")


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory):
    needs_root()
    needs_tool("gcc")
    base = tmp_path_factory.mktemp("seccomp")
    (base / "probe.c").write_text(PROBE_C)
    binary = base / "probe"
    res = subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(base / "probe.c")],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, f"static linking needs libc6-dev (libc.a): {res.stderr}"
    rootfs = make_image(base / "rootfs")
    shutil.copy(binary, os.path.join(rootfs, "bin", "probe"))
    return rootfs


def results(capfd, rootfs, **kw) -> dict[str, int]:
    capfd.readouterr()
    code = run(ContainerSpec(rootfs=rootfs, args=["/bin/probe"], env=["PATH=/bin"], **kw))
    out, err = capfd.readouterr()
    assert code == 0, (code, out, err)
    return {name: int(n) for name, n in (line.split() for line in out.splitlines())}


def test_program_shape():
    for machine in ("x86_64", "aarch64"):
        prog = seccomp.default_program(0, machine)
        assert len(prog) % 8 == 0 and len(prog) // 8 < 256
        assert seccomp.default_program(-1, machine) != prog  # capabilities re-allow calls
    assert seccomp.default_program(0, "riscv64") is None


def test_default_container_gets_eperm(probe_image, capfd):
    got = results(capfd, probe_image)
    assert {name: got[name] for name in FILTERED} == dict.fromkeys(FILTERED, 1), got
    assert got["clock_settime"] == 1 and got["getppid"] == 0, got
    if os.uname().machine == "x86_64":  # 32-bit system calls run, and are filtered too
        assert got["keyctl32"] == 1 and got["getppid32"] == 0, got
    # the filter is there, once
    capfd.readouterr()
    assert run(ContainerSpec(rootfs=probe_image, args=["grep", "^Seccomp", "/proc/self/status"])) == 0
    assert capfd.readouterr().out == "Seccomp:\t2\nSeccomp_filters:\t1\n"


def test_privileged_container_is_not_filtered(probe_image, capfd):
    got = results(capfd, probe_image, privileged=True)
    assert all(got[name] != 1 for name in FILTERED), got  # the kernel's own answers, not EPERM
    if os.uname().machine == "x86_64":
        assert got["keyctl32"] != 1, got
    assert got["clock_settime"] == 22 and got["getppid"] == 0, got  # EINVAL
    capfd.readouterr()
    assert run(ContainerSpec(rootfs=probe_image, args=["grep", "^Seccomp:", "/proc/self/status"],
                             privileged=True)) == 0  # fmt: skip
    assert capfd.readouterr().out == "Seccomp:\t0\n"


def test_cap_add_reallows_what_the_capability_guards(probe_image, capfd):
    got = results(capfd, probe_image, cap_add=["SYS_TIME"])
    assert got["clock_settime"] == 22, got  # the kernel's EINVAL: no filter for it
    assert {name: got[name] for name in FILTERED} == dict.fromkeys(FILTERED, 1), got


def test_exec_gets_the_filter(probe_image, tmp_path):
    home = tmp_path / "home"
    cid = manage.new_id()
    d = manage.container_dir(home, cid)
    d.mkdir(parents=True)
    spec = ContainerSpec(rootfs=probe_image, args=["sleep", "60"], env=["PATH=/bin"], id=cid,
                         name="filtered", state_dir=str(d))  # fmt: skip
    pid = container.start(spec, log_path=str(d / "log"))
    try:
        code, out = exec_out(home, "filtered", ["/bin/probe"])
        assert code == 0, out
        got = {name: int(n) for name, n in (line.split() for line in out.splitlines())}
        assert {name: got[name] for name in FILTERED} == dict.fromkeys(FILTERED, 1), got
        code, out = exec_out(home, "filtered", ["grep", "^Seccomp_filters", "/proc/self/status"])
        assert (code, out) == (0, "Seccomp_filters:\t1\n")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_filter_the_kernel_refuses_is_a_clear_error(probe_image, monkeypatch):
    monkeypatch.setattr(seccomp, "default_program", lambda caps, machine=None: b"")  # 0 instructions: EINVAL
    with pytest.raises(SockerError, match="cannot install the seccomp filter: Invalid argument"):
        run(ContainerSpec(rootfs=probe_image, args=["true"], env=["PATH=/bin"]))
