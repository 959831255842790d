"""socker's default seccomp filter: a classic BPF program, built and installed without libseccomp.

API::

    default_program(caps, machine=None) -> bytes | None   # struct sock_filter[], None: no table
    install_default_filter(caps) -> bool                   # False: architecture without a table

Only the standard library (``ctypes``, ``struct``, ``os``) is used: this module is on
``socker run``'s start-up path. ``container`` installs the filter in the container process
after ``PR_SET_NO_NEW_PRIVS`` (which ``PR_SET_SECCOMP`` needs without ``CAP_SYS_ADMIN``) and just
before ``execve``; ``privileged`` containers get none, as under Docker. ``socker exec`` copies
the container's filters (``manage._seccomp_filters``), so exec'd commands are filtered too.

The program, Docker's default profile in spirit (a denylist, not Docker's allowlist):

1. ``seccomp_data.arch`` selects the table: x86_64 and, on x86_64 hosts, i386 (32-bit
   programs run, filtered with their own numbers, taken from ``asm/unistd_32.h``), or aarch64;
   any other ABI (arm32 compat on aarch64) kills the process (``SECCOMP_RET_KILL_PROCESS``).
   On x86_64, x32 system calls (``nr & 0x40000000``) fail with ``EPERM``.
2. These fail with ``EPERM``: ``kexec_load``, ``kexec_file_load``, ``init_module``,
   ``finit_module``, ``delete_module``, ``reboot``, ``swapon``, ``swapoff``, ``acct``,
   ``settimeofday``, ``clock_settime``, ``clock_adjtime``, ``adjtimex``, ``keyctl``,
   ``add_key``, ``request_key``, ``bpf``, ``perf_event_open``, ``userfaultfd``,
   ``open_by_handle_at``, ``name_to_handle_at``, ``lookup_dcookie``, ``quotactl``,
   ``quotactl_fd``, ``iopl``, ``ioperm`` (x86_64), ``vhangup``, ``syslog``, and the obsolete
   ``uselib``, ``create_module``, ``get_kernel_syms``, ``query_module``, ``nfsservctl``,
   ``_sysctl`` (x86_64).
3. Everything else is allowed.

As Docker does, a capability the container has (``--cap-add``) re-allows the calls it guards:
``SYS_MODULE`` the module calls, ``SYS_BOOT`` ``reboot``, ``SYS_TIME`` ``settimeofday``,
``clock_settime``, ``clock_adjtime``, ``adjtimex``, ``SYS_PACCT`` ``acct``, ``SYS_RAWIO``
``iopl``/``ioperm``, ``SYS_TTY_CONFIG`` ``vhangup``, ``SYSLOG`` or ``SYS_ADMIN`` ``syslog``,
``DAC_READ_SEARCH`` ``open_by_handle_at``, ``SYS_ADMIN`` ``swapon``, ``swapoff``, ``quotactl``,
``quotactl_fd``, ``lookup_dcookie``, ``name_to_handle_at``, ``SYS_ADMIN`` or ``BPF`` ``bpf``,
``SYS_ADMIN`` or ``PERFMON`` ``perf_event_open``. The kexec and key-management calls,
``userfaultfd`` and the obsolete ones stay denied with any capability (``privileged`` only).

Differences from Docker's profile: ``adjtimex`` is denied without ``SYS_TIME`` (Docker allows
reading the clock state with it); ``personality`` is allowed with any argument (Docker allows
a few values); ``ptrace`` is allowed (as Docker does on kernels >= 4.8); ``mount``,
``umount2``, ``pivot_root``, ``unshare``, ``setns``, ``clone`` namespace flags, ``chroot``...
are not filtered: the missing ``CAP_SYS_ADMIN``/``CAP_SYS_CHROOT`` already refuses them, and
``--cap-add SYS_ADMIN`` keeps working. Architectures other than x86_64 and aarch64 get no filter.
"""

from __future__ import annotations

import os
import struct

__all__ = ["default_program", "install_default_filter"]

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM = 1

# classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_OFF_NR, _OFF_ARCH = 0, 4  # struct seccomp_data

X32_SYSCALL_BIT = 0x40000000

# capability numbers (linux/capability.h)
_DAC_READ_SEARCH, _SYS_MODULE, _SYS_RAWIO, _SYS_PACCT, _SYS_ADMIN = 2, 16, 17, 20, 21
_SYS_BOOT, _SYS_TIME, _SYS_TTY_CONFIG, _SYSLOG, _PERFMON, _BPF = 22, 25, 26, 34, 38, 39

# name: (x86_64, aarch64, i386 numbers or None, capabilities any of which re-allow it)
_DENY = {
    "kexec_load": (246, 104, 283, ()),
    "kexec_file_load": (320, 294, None, ()),
    "init_module": (175, 105, 128, (_SYS_MODULE,)),
    "finit_module": (313, 273, 350, (_SYS_MODULE,)),
    "delete_module": (176, 106, 129, (_SYS_MODULE,)),
    "reboot": (169, 142, 88, (_SYS_BOOT,)),
    "swapon": (167, 224, 87, (_SYS_ADMIN,)),
    "swapoff": (168, 225, 115, (_SYS_ADMIN,)),
    "acct": (163, 89, 51, (_SYS_PACCT,)),
    "settimeofday": (164, 170, 79, (_SYS_TIME,)),
    "clock_settime": (227, 112, 264, (_SYS_TIME,)),
    "clock_adjtime": (305, 266, 343, (_SYS_TIME,)),
    "adjtimex": (159, 171, 124, (_SYS_TIME,)),
    "keyctl": (250, 219, 288, ()),
    "add_key": (248, 217, 286, ()),
    "request_key": (249, 218, 287, ()),
    "bpf": (321, 280, 357, (_SYS_ADMIN, _BPF)),
    "perf_event_open": (298, 241, 336, (_SYS_ADMIN, _PERFMON)),
    "userfaultfd": (323, 282, 374, ()),
    "open_by_handle_at": (304, 265, 342, (_DAC_READ_SEARCH,)),
    "name_to_handle_at": (303, 264, 341, (_SYS_ADMIN,)),
    "lookup_dcookie": (212, 18, 253, (_SYS_ADMIN,)),
    "quotactl": (179, 60, 131, (_SYS_ADMIN,)),
    "quotactl_fd": (443, 443, 443, (_SYS_ADMIN,)),
    "iopl": (172, None, 110, (_SYS_RAWIO,)),
    "ioperm": (173, None, 101, (_SYS_RAWIO,)),
    "vhangup": (153, 58, 111, (_SYS_TTY_CONFIG,)),
    "syslog": (103, 116, 103, (_SYSLOG, _SYS_ADMIN)),
    "uselib": (134, None, 86, ()),
    "create_module": (174, None, 127, ()),
    "get_kernel_syms": (177, None, 130, ()),
    "query_module": (178, None, 167, ()),
    "nfsservctl": (180, 42, 169, ()),
    "_sysctl": (156, None, 149, ()),
    # 32-bit x86 only: the 64-bit time variants and vm86
    "clock_settime64": (None, None, 404, (_SYS_TIME,)),
    "clock_adjtime64": (None, None, 405, (_SYS_TIME,)),
    "vm86": (None, None, 166, ()),
    "vm86old": (None, None, 113, ()),
}

AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386 = 0xC000003E, 0xC00000B7, 0x40000003
# os.uname().machine -> [(audit arch, column in _DENY)]: the native ABI first, then compat ones
_ARCHES = {
    "x86_64": [(AUDIT_ARCH_X86_64, 0), (AUDIT_ARCH_I386, 2)],
    "aarch64": [(AUDIT_ARCH_AARCH64, 1)],
    "arm64": [(AUDIT_ARCH_AARCH64, 1)],
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def default_program(caps: int, machine: str | None = None) -> bytes | None:
    """The filter for a container whose capability set is the bit mask ``caps``, as the
    bytes of a ``struct sock_filter`` array; ``None`` for an architecture without a table."""
    arches = _ARCHES.get(machine or os.uname().machine)
    if arches is None:
        return None
    blocks = [_block(column, caps) for _, column in arches]
    # dispatch on the architecture, then one block per ABI (each ends in ALLOW / EPERM)
    prog = [_insn(_LD_W_ABS, 0, 0, _OFF_ARCH)]
    start = 1 + len(arches) + 1  # after the arch checks and the KILL
    for i, (audit_arch, _) in enumerate(arches):
        target = start + sum(len(blk) for blk in blocks[:i])
        prog.append(_insn(_JEQ_K, target - (1 + i) - 1, 0, audit_arch))
    prog.append(_insn(_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    for blk in blocks:
        prog.extend(blk)
    return b"".join(prog)


def _block(column: int, caps: int) -> list[bytes]:
    numbers = sorted(
        {
            nrs[column]
            for nrs in _DENY.values()
            if nrs[column] is not None and not any(caps >> c & 1 for c in nrs[3])
        }
    )
    x32 = column == 0
    checks = len(numbers) + (1 if x32 else 0)
    # layout: load nr, the checks, RET ALLOW, RET ERRNO(EPERM); a match jumps to the last
    blk = [_insn(_LD_W_ABS, 0, 0, _OFF_NR)]
    if x32:
        blk.append(_insn(_JSET_K, checks, 0, X32_SYSCALL_BIT))
    for i, nr in enumerate(numbers):
        blk.append(_insn(_JEQ_K, len(numbers) - i, 0, nr))
    blk.append(_insn(_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    blk.append(_insn(_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    return blk


def install_default_filter(caps: int) -> bool:
    """Install the default filter on the calling thread (``no_new_privs`` must be set, or the
    caller have ``CAP_SYS_ADMIN``). Returns False, installing nothing, on an architecture
    without a table; raises ``OSError`` if the kernel refuses the filter."""
    program = default_program(caps)
    if program is None:
        return False
    import ctypes

    from . import linux

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return True
