"""Unit tests of socker_lib.elfdeps: what executables need, and copying it into an image.

The referee for library resolution is the real dynamic loader: ``ldd`` for host binaries, and
``ld.so --list`` run in a chroot for programs built with gcc inside a fake sysroot (made by
copying the host's loader and libc into tmp_path). Hostile-image tests put a ``victim``
directory next to the rootfs and check that nothing was written there.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from socker_lib.elfdeps import DependencyError, UnsafeImagePathError, copy_into, resolve
from socker_lib.errors import SockerError
from tests.conftest import needs_root, needs_tool

LOADER = "/lib64/ld-linux-x86-64.so.2"
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
PROBE = "socker-escape-probe"
x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="paths and levels of x86_64")


# -- helpers ------------------------------------------------------------------------------------


def _in_root(root: Path | str, path: str) -> str:
    """Canonical path of ``path`` inside ``root``, links followed as in a chroot (an independent
    referee for elfdeps' own walk)."""
    parts: list[str] = []
    todo = path.split("/")[::-1]
    hops = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        host = os.path.join(str(root), *parts, name)
        if os.path.islink(host):
            hops += 1
            assert hops < 40
            target = os.readlink(host)
            if target.startswith("/"):
                parts = []
            todo.extend(target.split("/")[::-1])
        else:
            parts.append(name)
    return "/" + "/".join(parts)


def _ldd(*paths: str) -> list[str]:
    """Paths the host loader maps for ``paths``, per ldd (no vDSO)."""
    out = subprocess.run(["ldd", *paths], capture_output=True, text=True, check=True).stdout
    return _parse_trace(out)


def _parse_trace(out: str) -> list[str]:
    found = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip()
            assert not target.startswith("not found"), out
            found.append(target.split(" (", 1)[0])
        elif line.startswith("/") and not line.endswith(":"):  # not ldd's "/usr/bin/bash:" header
            found.append(line.split(" (", 1)[0])
    return found


def _interp(path: Path) -> str:
    with open(path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] == "PT_INTERP":
                return seg.get_interp_name()
    raise AssertionError(f"{path} has no PT_INTERP")


def _trace(root: Path, prog: str) -> subprocess.CompletedProcess:
    """``ld.so --list PROG`` in a chroot: what the real loader maps (as ldd does)."""
    needs_root()
    needs_tool("chroot")
    loader = _interp(root / prog.lstrip("/"))
    return subprocess.run(["chroot", str(root), loader, "--list", prog], capture_output=True, text=True)


def _loader_agrees(root: Path, prog: str, resolved: list[str]) -> None:
    """The real loader maps exactly the files ``resolve`` found (compared canonically)."""
    run = _trace(root, prog)
    assert run.returncode == 0, run.stderr
    traced = {_in_root(root, p) for p in _parse_trace(run.stdout)}
    mine = {_in_root(root, p) for p in resolved if p != prog}
    assert mine == traced


def _run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run in a chroot; through the loader, since $ORIGIN of a program needs /proc otherwise."""
    needs_root()
    needs_tool("chroot")
    loader = _interp(root / argv[0].lstrip("/"))
    return subprocess.run(["chroot", str(root), loader, *argv], capture_output=True, text=True)


def _gcc(*args: str | Path, cwd: Path) -> None:
    needs_tool("gcc")
    subprocess.run(["gcc", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _elf32_stub(path: Path) -> None:
    """A 32-bit i386 ELF header, enough for a loader to read and reject by class."""
    header = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, 0, 0, 0, 52, 0, 0, 0, 0, 0)
    path.write_bytes(header.ljust(1024, b"\0"))


@pytest.fixture
def sysroot(tmp_path) -> Path:
    """A root with the host's loader and libc (copied by elfdeps itself) and a build dir."""
    root = tmp_path / "sysroot"
    root.mkdir()
    copy_into(root, resolve(["/usr/bin/true"]))
    src = tmp_path / "src"
    src.mkdir()
    (src / "foo.c").write_text("int foo(void) { return 42; }\n")
    (src / "bar.c").write_text("int bar(void) { return 7; }\n")
    (src / "foobar.c").write_text("int bar(void);\nint foo(void) { return 35 + bar(); }\n")
    (src / "prog.c").write_text(
        '#include <stdio.h>\nint foo(void);\nint main(void) { printf("foo=%d\\n", foo()); return 0; }\n'
    )
    return root


def _lib(sysroot: Path, dest: str, source: str = "foo.c", *extra: str | Path) -> Path:
    out = sysroot / dest.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    _gcc("-shared", "-fPIC", "-o", out, source, *extra, cwd=sysroot.parent / "src")
    return out


def _prog(sysroot: Path, dest: str, *extra: str | Path) -> Path:
    out = sysroot / dest.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    _gcc("-o", out, "prog.c", *extra, cwd=sysroot.parent / "src")
    return out


# -- host binaries -------------------------------------------------------------------------------


def test_bash_and_ls_need_what_ldd_says():
    needs_tool("ldd")
    found = resolve(["/usr/bin/bash", "/bin/ls"])
    assert found[0] == "/usr/bin/bash" and "/bin/ls" in found
    names = {os.path.basename(p) for p in found}
    assert {"libc.so.6", "libtinfo.so.6", "libselinux.so.1"} <= names
    assert LOADER in found or os.path.realpath(LOADER) in found
    libs = [p for p in found if p not in ("/usr/bin/bash", "/bin/ls")]
    referee = _ldd("/usr/bin/bash", "/bin/ls")
    assert {os.path.basename(p) for p in libs} == {os.path.basename(p) for p in referee}
    assert {os.path.realpath(p) for p in libs} == {os.path.realpath(p) for p in referee}
    assert len(found) == len(set(found))


def test_bash_and_ls_run_in_a_chroot(tmp_path):
    needs_root()
    needs_tool("chroot")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    created = copy_into(rootfs, resolve(["/usr/bin/bash", "/bin/ls"]))
    assert "/usr/bin/bash" in created and "/usr/bin/ls" in created
    # The host's link structure, with the same target texts.
    for link in ("/bin", "/lib", "/lib64", LOADER):
        if os.path.islink(link):
            assert os.readlink(rootfs / link.lstrip("/")) == os.readlink(link)
    assert (rootfs / "usr/bin/ls").is_file() and not (rootfs / "usr/bin/ls").is_symlink()

    run = subprocess.run(["chroot", rootfs, "/bin/bash", "-c", "ls"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert set(run.stdout.split()) == {p.name for p in rootfs.iterdir()}
    run = subprocess.run(["chroot", rootfs, "/usr/bin/bash", "-c", "echo $BASH_VERSION"], capture_output=True)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    run = subprocess.run(["chroot", rootfs, "/bin/ls", "/"], capture_output=True, text=True)
    assert run.returncode == 0 and "usr" in run.stdout.split(), run.stderr

    # Copying again changes nothing: identical files are left alone.
    inode = (rootfs / "usr/bin/ls").stat().st_ino
    assert copy_into(rootfs, resolve(["/usr/bin/bash", "/bin/ls"])) == []
    assert (rootfs / "usr/bin/ls").stat().st_ino == inode


def test_static_binary_needs_only_itself():
    needs_tool("busybox")
    busybox = "/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox")
    with open(busybox, "rb") as f:
        if any(s["p_type"] == "PT_INTERP" for s in ELFFile(f).iter_segments()):
            pytest.skip("busybox here is dynamically linked (install busybox-static)")
    assert resolve([busybox]) == [busybox]


def test_the_loader_itself_needs_nothing():
    assert resolve([LOADER]) == [LOADER]


def test_plain_files_directories_and_missing_paths(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("not a program\n")
    assert resolve([str(data)]) == [str(data)]
    with pytest.raises(SockerError, match="is a directory") as err:
        resolve([str(tmp_path)])
    assert err.value.hint
    with pytest.raises(DependencyError, match="does not exist"):
        resolve([str(tmp_path / "nope")])


def test_relative_paths_come_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert resolve(["./data"]) == [str(tmp_path / "data")]


# -- scripts -----------------------------------------------------------------------------------


def test_a_script_brings_its_interpreter(sysroot):
    copy_into(sysroot, resolve(["/bin/sh"]))
    script = sysroot / "opt/hello"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh -e\necho hello from sh\n")
    script.chmod(0o755)
    found = resolve(["/opt/hello"], sysroot=sysroot)
    assert found[:2] == ["/opt/hello", "/bin/sh"]
    assert any(p.endswith("/libc.so.6") for p in found)
    assert _interp(sysroot / "bin/sh") in found
    if os.geteuid() == 0:
        rootfs = sysroot.parent / "rootfs"
        rootfs.mkdir()
        copy_into(rootfs, found, sysroot=sysroot)
        run = subprocess.run(["chroot", rootfs, "/opt/hello"], capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout == "hello from sh\n", run.stderr


def test_env_scripts_bring_the_command_too(tmp_path):
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env -S bash -e\necho hi\n")
    found = resolve([str(script)])
    assert found[:2] == [str(script), "/usr/bin/env"]
    assert any(os.path.basename(p) == "bash" for p in found)
    assert any(os.path.basename(p) == "libtinfo.so.6" for p in found)
    script.write_text("#!/usr/bin/env no-such-command-socker\n")
    with pytest.raises(DependencyError, match="no-such-command-socker"):
        resolve([str(script)])


def test_a_missing_interpreter_is_named(tmp_path):
    script = tmp_path / "tool"
    script.write_text("#!/no/such/interpreter\n")
    with pytest.raises(DependencyError, match="/no/such/interpreter.*interpreter of"):
        resolve([str(script)])


# -- the loader's search, in a sysroot -------------------------------------------------------


def test_runpath_with_origin(sysroot):
    _lib(sysroot, "/opt/app/lib/libfoo.so")
    _prog(
        sysroot,
        "/opt/app/bin/prog",
        "-L",
        sysroot / "opt/app/lib",
        "-lfoo",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib",
    )
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/app/lib/libfoo.so" in found
    assert found[0] == "/opt/app/bin/prog" and any(p.endswith("/libc.so.6") for p in found)
    # Paths are inside the sysroot, written as absolute paths.
    assert not any(str(sysroot) in p for p in found)
    if os.geteuid() == 0:
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)
        rootfs = sysroot.parent / "rootfs"
        rootfs.mkdir()
        copy_into(rootfs, found, sysroot=sysroot)
        run = _run(rootfs, "/opt/app/bin/prog")
        assert run.returncode == 0 and run.stdout == "foo=42\n", run.stderr


def test_runpath_serves_only_direct_dependencies(sysroot):
    lib = sysroot / "opt/app/lib"
    _lib(sysroot, "/opt/app/lib/libbar.so", "bar.c")
    _lib(sysroot, "/opt/app/lib/libfoo.so", "foobar.c", "-L", lib, "-lbar")
    _prog(sysroot, "/opt/app/bin/prog", "-L", lib, "-lfoo", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib")
    with pytest.raises(DependencyError) as err:
        resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    message = str(err.value)
    assert "libbar.so" in message and "/opt/app/lib/libfoo.so" in message and "/opt/app/bin/prog" in message
    assert "/opt/app/lib" not in err.value.hint.split("searched ", 1)[1].split(";")[0].split(", ")
    if os.geteuid() == 0:
        run = _trace(sysroot, "/opt/app/bin/prog")
        assert run.returncode != 0 and "libbar.so: cannot open shared object file" in run.stderr


def test_rpath_is_inherited_by_what_the_program_loads(sysroot):
    lib = sysroot / "opt/app/lib"
    _lib(sysroot, "/opt/app/lib/libbar.so", "bar.c")
    _lib(sysroot, "/opt/app/lib/libfoo.so", "foobar.c", "-L", lib, "-lbar")
    _prog(sysroot, "/opt/app/bin/prog", "-L", lib, "-lfoo", "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib")
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert {"/opt/app/lib/libfoo.so", "/opt/app/lib/libbar.so"} <= set(found)
    if os.geteuid() == 0:
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)
        rootfs = sysroot.parent / "rootfs"
        rootfs.mkdir()
        copy_into(rootfs, found, sysroot=sysroot)
        assert _run(rootfs, "/opt/app/bin/prog").stdout == "foo=42\n"


@x86_64_only
def test_lib_and_platform_in_rpath(sysroot):
    _lib(sysroot, "/opt/lib/x86_64-linux-gnu/x86_64/libfoo.so")
    _prog(
        sysroot,
        "/opt/app/bin/prog",
        "-L",
        sysroot / "opt/lib/x86_64-linux-gnu/x86_64",
        "-lfoo",
        "-Wl,--disable-new-dtags,-rpath,/nowhere/$PLATFORM:/opt/${LIB}/$PLATFORM",
    )
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/lib/x86_64-linux-gnu/x86_64/libfoo.so" in found
    if os.geteuid() == 0:
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)


def test_needed_names_with_a_slash_are_paths(sysroot):
    _lib(sysroot, "/opt/abs/libabs.so", "bar.c", "-Wl,-soname,/opt/abs/libabs.so")
    _lib(sysroot, "/opt/app/lib/libori.so", "foo.c", "-Wl,-soname,$ORIGIN/../lib/libori.so")
    _prog(
        sysroot,
        "/opt/app/bin/prog",
        "-Wl,--no-as-needed",
        sysroot / "opt/app/lib/libori.so",
        sysroot / "opt/abs/libabs.so",
    )
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert {"/opt/abs/libabs.so", "/opt/app/lib/libori.so"} <= set(found)
    if os.geteuid() == 0:
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)


def test_ld_so_conf_include_glob(sysroot):
    needs_tool("ldconfig")
    vendor = sysroot / "opt/vendor/lib"
    _lib(sysroot, "/opt/vendor/lib/libvendor.so.1", "foo.c", "-Wl,-soname,libvendor.so.1")
    (vendor / "libvendor.so").symlink_to("libvendor.so.1")
    _prog(sysroot, "/opt/app/bin/prog", "-L", vendor, "-lvendor")
    with pytest.raises(DependencyError, match="libvendor.so.1"):
        resolve(["/opt/app/bin/prog"], sysroot=sysroot)

    etc = sysroot / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "ld.so.conf").write_text("# vendor libraries\ninclude conf.d/*.conf\n")
    (etc / "conf.d/vendor.conf").write_text("/opt/vendor/lib  \n")
    (etc / "conf.d/unused.txt").write_text("/opt/elsewhere\n")
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/vendor/lib/libvendor.so.1" in found
    if os.geteuid() == 0:
        subprocess.run(["ldconfig", "-r", sysroot], check=True, capture_output=True)
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)


def test_ld_so_conf_d_without_ld_so_conf(sysroot):
    _lib(sysroot, "/opt/vendor/lib/libvendor.so.1", "foo.c", "-Wl,-soname,libvendor.so.1")
    _prog(sysroot, "/opt/app/bin/prog", sysroot / "opt/vendor/lib/libvendor.so.1")
    (sysroot / "etc/ld.so.conf.d").mkdir(parents=True)
    (sysroot / "etc/ld.so.conf.d/vendor.conf").write_text("/opt/vendor/lib\n")
    assert "/opt/vendor/lib/libvendor.so.1" in resolve(["/opt/app/bin/prog"], sysroot=sysroot)


def test_a_missing_library_is_named(sysroot):
    gone = _lib(sysroot, "/opt/app/lib/libgone.so.3", "foo.c", "-Wl,-soname,libgone.so.3")
    _prog(sysroot, "/opt/app/bin/prog", gone)
    gone.unlink()
    with pytest.raises(DependencyError) as err:
        resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/app/bin/prog" in str(err.value) and "libgone.so.3" in str(err.value)
    assert "/usr/lib/x86_64-linux-gnu" in err.value.hint or platform.machine() != "x86_64"


def test_a_library_of_another_class_is_skipped(sysroot):
    _lib(sysroot, "/opt/app/lib/libfoo.so")
    (sysroot / "opt/app/lib32").mkdir()
    _elf32_stub(sysroot / "opt/app/lib32/libfoo.so")
    _prog(
        sysroot,
        "/opt/app/bin/prog",
        "-L",
        sysroot / "opt/app/lib",
        "-lfoo",
        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib32:$ORIGIN/../lib",
    )
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/app/lib/libfoo.so" in found and "/opt/app/lib32/libfoo.so" not in found
    if os.geteuid() == 0:
        _loader_agrees(sysroot, "/opt/app/bin/prog", found)

    # Something that is no ELF file at all stops the loader, and resolve too.
    (sysroot / "opt/app/lib32/libfoo.so").write_text("garbage, not a library\n" * 10)
    with pytest.raises(DependencyError, match="not an ELF file"):
        resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    if os.geteuid() == 0:
        assert _trace(sysroot, "/opt/app/bin/prog").returncode != 0


@x86_64_only
def test_glibc_hwcaps_variants_are_all_copied(sysroot):
    _lib(sysroot, "/opt/app/lib/libfoo.so")
    _lib(sysroot, "/opt/app/lib/glibc-hwcaps/x86-64-v2/libfoo.so")
    _prog(sysroot, "/opt/app/bin/prog", "-L", sysroot / "opt/app/lib", "-lfoo", "-Wl,-rpath,/opt/app/lib")
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert {"/opt/app/lib/libfoo.so", "/opt/app/lib/glibc-hwcaps/x86-64-v2/libfoo.so"} <= set(found)
    if os.geteuid() == 0:
        traced = _parse_trace(_trace(sysroot, "/opt/app/bin/prog").stdout)
        assert any("libfoo.so" in p for p in traced)
        assert {_in_root(sysroot, p) for p in traced} <= {_in_root(sysroot, p) for p in found}


def test_a_library_reached_through_links(sysroot):
    lib = sysroot / "opt/app/lib"
    _lib(sysroot, "/opt/real/libfoo.so.1.2", "foo.c", "-Wl,-soname,libfoo.so.1")
    lib.mkdir(parents=True)
    (lib / "libfoo.so.1").symlink_to("/opt/real/libfoo.so.1.2")  # absolute: inside the sysroot
    (lib / "libfoo.so").symlink_to("libfoo.so.1")
    (sysroot / "opt/app/current").symlink_to("lib")
    # Linked by the file's own path: the host cannot follow the absolute link.
    _prog(sysroot, "/opt/app/bin/prog", sysroot / "opt/real/libfoo.so.1.2", "-Wl,-rpath,/opt/app/current")
    found = resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/app/current/libfoo.so.1" in found
    rootfs = sysroot.parent / "rootfs"
    rootfs.mkdir()
    created = copy_into(rootfs, found, sysroot=sysroot)
    assert os.readlink(rootfs / "opt/app/current") == "lib"
    assert os.readlink(rootfs / "opt/app/lib/libfoo.so.1") == "/opt/real/libfoo.so.1.2"
    assert (rootfs / "opt/real/libfoo.so.1.2").is_file()
    assert not (rootfs / "opt/app/lib/libfoo.so").exists()  # not needed at run time
    assert {"/opt/app/current", "/opt/app/lib/libfoo.so.1", "/opt/real/libfoo.so.1.2"} <= set(created)
    if os.geteuid() == 0:
        assert _run(rootfs, "/opt/app/bin/prog").stdout == "foo=42\n"


def test_library_path_is_used_only_when_given(sysroot, monkeypatch):
    _lib(sysroot, "/opt/extra/libfoo.so")
    _prog(sysroot, "/opt/app/bin/prog", "-L", sysroot / "opt/extra", "-lfoo")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/extra")
    with pytest.raises(DependencyError, match="libfoo.so"):
        resolve(["/opt/app/bin/prog"], sysroot=sysroot)
    assert "/opt/extra/libfoo.so" in resolve(
        ["/opt/app/bin/prog"], sysroot=sysroot, library_path="/opt/extra"
    )


# -- copying -----------------------------------------------------------------------------------


def test_copy_keeps_mode_owner_xattrs_and_times(tmp_path):
    needs_root()
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    tool = src / "usr/bin/tool"
    tool.write_bytes(b"#!/nothing\n" + b"x" * 100_000)
    os.chown(tool, 1234, 5678)
    tool.chmod(0o4750)
    os.setxattr(tool, "security.capability", CAP_NET_RAW)
    os.setxattr(tool, "user.note", b"kept")
    os.utime(tool, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    (src / "bin").symlink_to("usr/bin")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()

    assert copy_into(rootfs, ["/bin/tool"], sysroot=src) == ["/bin", "/usr", "/usr/bin", "/usr/bin/tool"]
    copied = rootfs / "usr/bin/tool"
    st = copied.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4750)
    assert st.st_mtime_ns == 1_600_000_000_987_654_321
    assert os.getxattr(copied, "security.capability") == CAP_NET_RAW
    assert os.getxattr(copied, "user.note") == b"kept"
    assert copied.read_bytes() == tool.read_bytes()
    assert os.readlink(rootfs / "bin") == "usr/bin"

    # Identical: left alone. Different: replaced, never written through (a hard link elsewhere keeps
    # its content).
    assert copy_into(rootfs, ["/bin/tool"], sysroot=src) == []
    copied.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"someone else's file")
    os.link(outside, copied)
    assert copy_into(rootfs, ["/usr/bin/tool"], sysroot=src) == ["/usr/bin/tool"]
    assert outside.read_bytes() == b"someone else's file"
    assert copied.read_bytes() == tool.read_bytes()
    assert os.getxattr(copied, "security.capability") == CAP_NET_RAW


def test_copy_needs_no_root_for_plain_files(tmp_path):
    src = tmp_path / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/data").write_text("hello")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    assert copy_into(rootfs, ["/opt/data"], sysroot=src) == ["/opt", "/opt/data"]
    assert (rootfs / "opt/data").read_text() == "hello"
    with pytest.raises(SockerError, match="directory"):
        copy_into(rootfs, ["/opt"], sysroot=src)
    with pytest.raises(SockerError, match="cannot copy /opt/missing"):
        copy_into(rootfs, ["/opt/missing"], sysroot=src)


def _hostile_setup(tmp_path):
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/lib64").mkdir(parents=True)
    (src / "usr/bin" / PROBE).write_text("probe")
    (src / "usr/lib64" / PROBE).write_text("probe")
    (src / "bin").symlink_to("usr/bin")
    (src / "lib64").symlink_to("usr/lib64")
    victim = tmp_path / "victim"
    (victim / "bin").mkdir(parents=True)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    return src, rootfs, victim


def _untouched(victim: Path) -> None:
    assert sorted(str(p.relative_to(victim)) for p in victim.rglob("*")) == ["bin"]


@pytest.mark.parametrize("link", ["victim", "/usr"])
def test_an_image_link_where_the_host_has_a_directory_is_refused(tmp_path, link):
    src, rootfs, victim = _hostile_setup(tmp_path)
    (rootfs / "usr").symlink_to(str(victim) if link == "victim" else "/usr")
    with pytest.raises(UnsafeImagePathError, match="/usr in the image is a symbolic link") as err:
        copy_into(rootfs, [f"/bin/{PROBE}"], sysroot=src)
    assert err.value.hint
    _untouched(victim)
    assert not os.path.lexists(f"/usr/bin/{PROBE}")
    assert os.readlink(rootfs / "usr") == (str(victim) if link == "victim" else "/usr")


def test_an_image_link_leading_elsewhere_is_refused(tmp_path):
    src, rootfs, victim = _hostile_setup(tmp_path)
    (rootfs / "lib64").symlink_to(str(victim / "bin"))
    with pytest.raises(UnsafeImagePathError, match="/lib64"):
        copy_into(rootfs, [f"/lib64/{PROBE}"], sysroot=src)
    _untouched(victim)
    (rootfs / "lib64").unlink()
    (rootfs / "usr").mkdir()
    (rootfs / "usr/lib64").symlink_to("../../victim")
    with pytest.raises(UnsafeImagePathError, match="/usr/lib64"):
        copy_into(rootfs, [f"/lib64/{PROBE}"], sysroot=src)
    _untouched(victim)


def test_an_equivalent_image_link_is_kept(tmp_path):
    src, rootfs, victim = _hostile_setup(tmp_path)
    (rootfs / "lib64").symlink_to("/usr/lib64")  # absolute, where the host's is relative
    created = copy_into(rootfs, [f"/lib64/{PROBE}"], sysroot=src)
    assert os.readlink(rootfs / "lib64") == "/usr/lib64"
    assert "/lib64" not in created and f"/usr/lib64/{PROBE}" in created
    assert (rootfs / "usr/lib64" / PROBE).read_text() == "probe"


def test_a_file_link_in_the_image_is_replaced_not_followed(tmp_path):
    src, rootfs, victim = _hostile_setup(tmp_path)
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "usr/bin" / PROBE).symlink_to(str(victim / "bin" / "target"))
    (rootfs / "bin").symlink_to("usr/bin")
    assert copy_into(rootfs, [f"/bin/{PROBE}"], sysroot=src) == [f"/usr/bin/{PROBE}"]
    assert not (rootfs / "usr/bin" / PROBE).is_symlink()
    assert (rootfs / "usr/bin" / PROBE).read_text() == "probe"
    _untouched(victim)


def test_an_image_directory_where_the_host_has_a_link_is_refused(tmp_path):
    src, rootfs, victim = _hostile_setup(tmp_path)
    (rootfs / "bin").mkdir()
    with pytest.raises(UnsafeImagePathError, match="/bin in the image is a directory"):
        copy_into(rootfs, [f"/bin/{PROBE}"], sysroot=src)
    assert list((rootfs / "bin").iterdir()) == []
