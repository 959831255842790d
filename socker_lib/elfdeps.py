"""Copy host executables into an image together with everything they need to run.

``resolve`` finds what an executable needs the way the dynamic loader (glibc's ``ld.so``)
would find it when the program starts, without running anything (no ``ldd``): it reads the ELF
files with pyelftools and follows

* ``PT_INTERP``, the program interpreter (the dynamic loader itself), whose ``DT_SONAME``
  then satisfies ``libc.so.6``'s own ``DT_NEEDED`` on it, as in a running process;
* ``DT_NEEDED``, breadth first, each name loaded once per process (a name matches an object
  loaded under that name, by that path or with that ``DT_SONAME``; a file reached under a
  second name is copied under that name too but not read twice);
* the search order of ``_dl_map_object``: ``DT_RPATH`` of the loading object and then of the
  objects that loaded it, up to the executable (only when the loading object has no
  ``DT_RUNPATH``; an object's ``DT_RPATH`` is void when it has a ``DT_RUNPATH``),
  ``LD_LIBRARY_PATH`` (ignored unless ``library_path`` is given, so results do not depend on
  the caller's environment), ``DT_RUNPATH`` of the loading object only, then the directories
  of ``/etc/ld.so.conf`` (standing in for ``/etc/ld.so.cache``, which ``ldconfig`` builds from
  them) and the loader's default directories, both skipped under ``DF_1_NODEFLIB``;
* ``glibc-hwcaps/<level>`` subdirectories of every search directory: every variant found is
  copied with the baseline library, since the CPU that will run the image picks among them;
* ``$ORIGIN`` (the directory of the executable with links resolved, or of a library as the
  loader opened it), ``$LIB`` and ``$PLATFORM``, braced or not, in search paths and in
  ``DT_NEEDED``; a ``DT_NEEDED`` containing ``/`` is a path;
* candidates of another ELF class, byte order or machine are skipped (a 32-bit library first
  on the path); a non-ELF file where the loader would open a library is an error, as it is
  for ``ld.so``.

Scripts (``#!``) bring their interpreter, ``#!/usr/bin/env NAME`` also NAME from the default
``PATH``. Other files are copied as they are. Libraries opened with ``dlopen`` (NSS modules,
gconv, plugins) are invisible to this analysis and must be named explicitly.

``copy_into`` copies the result into a root filesystem at the same absolute paths, recreating
every symbolic link met on the way (``/bin -> usr/bin``, the loader's link chain) with the
same target text. All writes go through directory file descriptors opened with
``O_NOFOLLOW``: a link in the image is never followed, and one that does not lead where the
host's does (``usr -> /usr``) is refused.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import secrets
import stat
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from socker_lib.errors import SockerError, UnsafeLayerError, UnsupportedError

__all__ = ["DependencyError", "UnsafeImagePathError", "copy_into", "resolve"]


class DependencyError(SockerError):
    """Something an executable needs (a library, its interpreter) cannot be found."""

    code = "missing-dependency"


class UnsafeImagePathError(UnsafeLayerError):
    """An image path that would lead a copy outside the image or over something unrelated."""

    code = "unsafe-image-path"


# -- ELF identification -------------------------------------------------------------------------

_ELF_MAGIC = b"\x7fELF"
_ET_EXEC, _ET_DYN = 2, 3
_EM_386, _EM_ARM, _EM_X86_64 = 3, 40, 62
_EF_ARM_ABI_FLOAT = 0x600  # EF_ARM_ABI_FLOAT_SOFT | EF_ARM_ABI_FLOAT_HARD
_DF_1_NODEFLIB = 0x800
# Linux reads this much of a file to find "#!" and the interpreter (BINPRM_BUF_SIZE).
_SHEBANG_MAX = 256
# Linux follows at most this many interpreters of interpreters.
_MAX_INTERPRETERS = 4
_MAX_LINK_HOPS = 40  # MAXSYMLINKS
_DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


@dataclass(frozen=True)
class _Ident:
    elfclass: int  # 1: 32-bit, 2: 64-bit
    data: int  # 1: little-endian, 2: big-endian
    etype: int
    machine: int
    flags: int

    def runs_with(self, other: _Ident) -> bool:
        """Whether the loader of ``other`` would accept this file as a library."""
        if (self.elfclass, self.data, self.machine) != (other.elfclass, other.data, other.machine):
            return False
        if self.machine == _EM_ARM:
            return (self.flags & _EF_ARM_ABI_FLOAT) == (other.flags & _EF_ARM_ABI_FLOAT)
        return True


def _ident(head: bytes) -> _Ident | None:
    """The identification of an ELF header, or None when ``head`` is too short or malformed."""
    if len(head) < 52 or not head.startswith(_ELF_MAGIC):
        return None
    elfclass, data = head[4], head[5]
    if elfclass not in (1, 2) or data not in (1, 2) or (elfclass == 2 and len(head) < 64):
        return None
    order = "<" if data == 1 else ">"
    etype, machine = struct.unpack_from(order + "HH", head, 16)
    (flags,) = struct.unpack_from(order + "I", head, 36 if elfclass == 1 else 48)
    return _Ident(elfclass, data, etype, machine, flags)


@dataclass(frozen=True)
class _Arch:
    triplet: str | None  # the Debian multiarch directory name
    platform: str | None  # $PLATFORM (AT_PLATFORM)
    hwcaps: tuple[str, ...]  # glibc-hwcaps subdirectories, best first
    extra_dirs: tuple[str, ...]  # lib32 / libx32 of a multilib loader


def _arch(ident: _Ident) -> _Arch:
    m, cls, le = ident.machine, ident.elfclass, ident.data == 1
    if m == _EM_X86_64 and cls == 2:
        return _Arch("x86_64-linux-gnu", "x86_64", ("x86-64-v4", "x86-64-v3", "x86-64-v2"), ())
    if m == _EM_X86_64:
        return _Arch("x86_64-linux-gnux32", "x86_64", (), ("/libx32", "/usr/libx32"))
    if m == _EM_386:
        return _Arch("i386-linux-gnu", "i686", (), ("/lib32", "/usr/lib32"))
    if m == 183:  # EM_AARCH64
        return _Arch("aarch64-linux-gnu", "aarch64", (), ())
    if m == _EM_ARM:
        hard = bool(ident.flags & 0x400)
        return _Arch("arm-linux-gnueabihf" if hard else "arm-linux-gnueabi", "v7l", (), ())
    if m == 21 and cls == 2:  # EM_PPC64
        return _Arch(
            "powerpc64le-linux-gnu" if le else "powerpc64-linux-gnu", None, ("power10", "power9"), ()
        )
    if m == 22 and cls == 2:  # EM_S390
        return _Arch("s390x-linux-gnu", None, ("z16", "z15", "z14", "z13"), ())
    if m == 243 and cls == 2:  # EM_RISCV
        return _Arch("riscv64-linux-gnu", None, (), ())
    if m == 258:  # EM_LOONGARCH
        return _Arch("loongarch64-linux-gnu", None, (), ())
    return _Arch(None, None, (), ())


# -- paths inside a root --------------------------------------------------------------------------


@dataclass
class _Step:
    """One entry met while resolving a path: a directory, a symbolic link or the final file."""

    kind: str  # "dir", "link", "file", "other"
    path: str  # canonical in-root path of the entry itself (for a link: of the link)
    target: str = ""  # a link's target text
    as_dir: bool = False  # a link that was followed to reach a further component


class _Root:
    """A directory seen as ``/``: paths are resolved inside it as the kernel would in a chroot."""

    def __init__(self, top: str | os.PathLike):
        real = os.path.realpath(os.fspath(top))
        self.top = os.fspath(top)
        self.prefix = "" if real == "/" else real.rstrip("/")

    @property
    def is_host(self) -> bool:
        return not self.prefix

    def host(self, canon: str) -> str:
        """Host path of a canonical (link-free, absolute) in-root path."""
        return self.prefix + canon if canon != "/" else (self.prefix or "/")

    def where(self) -> str:
        return "" if self.is_host else f" under {self.top}"

    def walk(self, path: str, *, strict: bool = True) -> tuple[str, list[_Step]]:
        """Resolve ``path`` following every link inside the root (``..`` stops at the root,
        absolute targets start there). Returns the canonical path and the entries met.

        ``strict=False`` resolves what exists and appends the missing rest lexically."""
        parts: list[str] = []
        todo = path.split("/")[::-1]
        steps: list[_Step] = []
        hops = 0
        missing = False
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            if missing:
                parts.append(name)
                continue
            cand = "/" + "/".join([*parts, name])
            try:
                st = os.lstat(self.host(cand))
            except FileNotFoundError:
                if strict:
                    raise
                missing = True
                parts.append(name)
                continue
            rest = any(p not in ("", ".") for p in todo)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(self.host(cand))
                steps.append(_Step("link", cand, target, as_dir=rest))
                if target.startswith("/"):
                    parts = []
                todo.extend(target.split("/")[::-1])
                continue
            parts.append(name)
            if stat.S_ISDIR(st.st_mode):
                steps.append(_Step("dir", cand))
                continue
            if rest:
                if strict:
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                missing = True
                continue
            steps.append(_Step("file" if stat.S_ISREG(st.st_mode) else "other", cand))
        return "/" + "/".join(parts), steps

    def realpath(self, path: str) -> str | None:
        """Canonical in-root path of an existing entry, or None."""
        try:
            return self.walk(path)[0]
        except OSError:
            return None

    def tidy(self, path: str) -> str:
        """``path`` made absolute and without ``.``, empty and ``..`` components, keeping a
        ``..`` that follows a symbolic link (where dropping both would change the meaning)."""
        out: list[str] = []
        for name in path.split("/"):
            if name in ("", "."):
                continue
            if name == ".." and out and out[-1] != "..":
                above = self.realpath("/" + "/".join(out[:-1]))
                try:
                    is_link = above is not None and stat.S_ISLNK(
                        os.lstat(self.host(posixpath.join(above, out[-1]))).st_mode
                    )
                except OSError:
                    is_link = False
                if not is_link:
                    out.pop()
                    continue
            elif name == ".." and not out:
                continue
            out.append(name)
        return "/" + "/".join(out)


# -- resolving ----------------------------------------------------------------------------------


@dataclass
class _Dyn:
    """What the loader reads from one ELF file."""

    ident: _Ident
    interp: str | None
    needed: list[str]
    rpath: str | None  # None when absent or voided by DT_RUNPATH
    runpath: str | None
    soname: str | None
    nodeflib: bool


@dataclass(eq=False)
class _Node:
    """An object loaded into one (imagined) process."""

    path: str  # as the loader opened it
    canon: str
    dyn: _Dyn
    origin: str | None  # $ORIGIN
    loader: _Node | None


@dataclass
class _Found:
    paths: list[tuple[str, str]] = field(default_factory=list)  # (path, canonical path)
    searched: list[str] = field(default_factory=list)


class _Resolver:
    def __init__(self, root: _Root, library_path: str | None):
        self.root = root
        self.library_path = library_path
        self.out: dict[str, None] = {}
        self._dyns: dict[str, _Dyn] = {}
        self._conf: list[str] | None = None

    # -- files given by the caller -------------------------------------------------------------

    def add(self, path: str, *, depth: int = 0, needed_by: str | None = None) -> None:
        path = self.root.tidy(path)
        what = f"{path} (the interpreter of {needed_by})" if needed_by else path
        try:
            canon, steps = self.root.walk(path)
        except FileNotFoundError:
            raise DependencyError(
                f"{what} does not exist{self.root.where()}",
                hint="give the path of an existing file"
                if not needed_by
                else "the script's #! line names an interpreter that is not there",
            ) from None
        except OSError as e:
            raise SockerError(f"cannot resolve {what}{self.root.where()}: {e.strerror}") from None
        if not steps or steps[-1].kind == "dir":
            raise SockerError(
                f"{what} is a directory",
                hint=f"name the files to copy (for example {path.rstrip('/')}/*); directories are not copied whole",
            )
        if steps[-1].kind != "file":
            raise UnsupportedError(
                f"{what} is not a regular file", hint="only files and their links are copied"
            )
        self.out.setdefault(path, None)
        head = self._head(canon, _SHEBANG_MAX)
        if head.startswith(_ELF_MAGIC):
            ident = _ident(head)
            if ident is None or ident.etype not in (_ET_EXEC, _ET_DYN):
                return  # an object file, a core dump...: nothing is loaded for it
            dyn = self._dyn(canon)
            if dyn.interp or dyn.needed:
                self._closure(path, canon, dyn)
        elif head.startswith(b"#!"):
            self._script(path, head, depth)

    def _script(self, path: str, head: bytes, depth: int) -> None:
        line = head[2:].split(b"\n", 1)[0].strip(b" \t")
        interp, _, arg = line.replace(b"\t", b" ").partition(b" ")
        if not interp:
            return
        if depth >= _MAX_INTERPRETERS:
            raise SockerError(f"{path}: too many levels of script interpreters")
        interp_path = os.fsdecode(interp)
        self.add(posixpath.join("/", interp_path), depth=depth + 1, needed_by=path)
        if posixpath.basename(interp_path) != "env":
            return
        for token in os.fsdecode(arg).split():
            if token.startswith("-") or "=" in token:
                continue
            if "/" in token:
                self.add(posixpath.join("/", token), depth=depth + 1, needed_by=path)
                return
            for d in _DEFAULT_PATH:
                canon = self.root.realpath(f"{d}/{token}")
                if canon and stat.S_ISREG(os.stat(self.root.host(canon)).st_mode):
                    self.add(f"{d}/{token}", depth=depth + 1, needed_by=path)
                    return
            raise DependencyError(
                f"{path} runs {token} through env, but {token} is not in {':'.join(_DEFAULT_PATH)}"
                f"{self.root.where()}",
                hint=f"add {token} by its full path",
            )
        return

    # -- one process ---------------------------------------------------------------------------

    def _closure(self, top: str, canon: str, dyn: _Dyn) -> None:
        """Everything the loader maps when ``top`` starts."""
        arch = _arch(dyn.ident)
        names: dict[str, _Node] = {}
        files: dict[str, _Node] = {}
        exe = _Node(top, canon, dyn, posixpath.dirname(canon), None)
        files[canon] = exe
        names[top] = exe
        queue = deque([exe])
        if dyn.interp:
            path = self.root.tidy(posixpath.join("/", dyn.interp))
            icanon = self._probe(path, dyn.ident, cache_dir=False)
            if icanon is None:
                raise DependencyError(
                    f"{top} needs its program interpreter {dyn.interp}, which is not{self.root.where()} "
                    f"(or is not a {_describe(dyn.ident)} ELF file)",
                    hint="the interpreter is the dynamic loader of the C library the program was built for",
                )
            self.out.setdefault(path, None)
            idyn = self._dyn(icanon)
            inode = _Node(path, icanon, idyn, posixpath.dirname(path), None)
            files.setdefault(icanon, inode)
            for name in (dyn.interp, path, idyn.soname):
                if name:
                    names.setdefault(name, inode)
            queue.append(inode)
        while queue:
            node = queue.popleft()
            for raw in node.dyn.needed:
                name = self._expand(raw, node, arch)
                if name is None:
                    raise DependencyError(f"{top}: cannot expand {raw!r} needed by {node.path}")
                if name in names:
                    continue
                found = self._find(name, node, arch)
                if not found.paths:
                    searched = ", ".join(found.searched) or "(nowhere)"
                    raise DependencyError(
                        f"{top} cannot run: library {name} needed by {node.path} was not found{self.root.where()}",
                        hint=f"searched {searched}; install the library on the host or add the directory "
                        "holding it to /etc/ld.so.conf (LD_LIBRARY_PATH is not used)",
                    )
                for path, lcanon in found.paths:
                    self.out.setdefault(path, None)
                    lib = files.get(lcanon)
                    if lib is None:
                        lib = _Node(path, lcanon, self._dyn(lcanon), posixpath.dirname(path), node)
                        files[lcanon] = lib
                        queue.append(lib)
                        for alias in (path, lib.dyn.soname):
                            if alias:
                                names.setdefault(alias, lib)
                    names.setdefault(name, lib)

    def _find(self, name: str, node: _Node, arch: _Arch) -> _Found:
        found = _Found()
        ident = node.dyn.ident
        if "/" in name:
            path = self.root.tidy(posixpath.join("/", name))
            found.searched.append(path)
            canon = self._probe(path, ident, cache_dir=False)
            if canon:
                found.paths.append((path, canon))
            return found
        for d, from_cache in self._search_dirs(node, arch):
            found.searched.append(d)
            base = self.root.tidy(f"{d}/{name}")
            canon = self._probe(base, ident, cache_dir=from_cache)
            if canon:
                found.paths.append((base, canon))
            for level in arch.hwcaps:
                path = self.root.tidy(f"{d}/glibc-hwcaps/{level}/{name}")
                canon = self._probe(path, ident, cache_dir=from_cache)
                if canon:
                    found.paths.append((path, canon))
            if found.paths:
                return found
        return found

    def _search_dirs(self, node: _Node, arch: _Arch) -> list[tuple[str, bool]]:
        """Directories to search for a DT_NEEDED of ``node``, and whether each stands for the
        loader cache (where ldconfig would have skipped what is not a library)."""
        dirs: list[tuple[str, bool]] = []
        if node.dyn.runpath is None:
            owner: _Node | None = node
            while owner is not None:
                if owner.dyn.rpath is not None:
                    dirs += [(d, False) for d in self._path_list(owner.dyn.rpath, owner, arch)]
                owner = owner.loader
        if self.library_path:
            dirs += [(d, False) for d in self._path_list(self.library_path, node, arch)]
        if node.dyn.runpath is not None:
            dirs += [(d, False) for d in self._path_list(node.dyn.runpath, node, arch)]
        if not node.dyn.nodeflib:
            dirs += [(d, True) for d in self._conf_dirs()]
            dirs += [(d, False) for d in self._default_dirs(node.dyn.ident, arch)]
        seen: set[str] = set()
        unique = []
        for d, cache in dirs:
            if d not in seen:
                seen.add(d)
                unique.append((d, cache))
        return unique

    def _path_list(self, text: str, node: _Node, arch: _Arch) -> list[str]:
        dirs = []
        for element in text.split(":"):
            expanded = self._expand(element, node, arch)
            if expanded is None:
                continue  # ld.so drops an element whose substitution is unknown
            # Empty and relative elements are relative to the working directory, "/" in a container.
            dirs.append(self.root.tidy(posixpath.join("/", expanded)))
        return dirs

    def _expand(self, text: str, node: _Node, arch: _Arch) -> str | None:
        if "$" not in text:
            return text
        values = {
            "ORIGIN": node.origin,
            "LIB": self._lib_dst(node.dyn.ident, arch),
            "PLATFORM": arch.platform,
        }
        unknown = False

        def sub(m: re.Match) -> str:
            nonlocal unknown
            value = values[m.group(1) or m.group(2)]
            if value is None:
                unknown = True
                return ""
            return value

        expanded = _DST.sub(sub, text)
        return None if unknown else expanded

    def _lib_dst(self, ident: _Ident, arch: _Arch) -> str:
        """$LIB: Debian's loader says lib/<triplet>; others lib64 or lib."""
        if arch.triplet and self._is_dir(f"/usr/lib/{arch.triplet}"):
            return f"lib/{arch.triplet}"
        return "lib64" if ident.elfclass == 2 and self._is_dir("/usr/lib64") else "lib"

    def _default_dirs(self, ident: _Ident, arch: _Arch) -> list[str]:
        dirs = []
        if arch.triplet:
            dirs += [f"/lib/{arch.triplet}", f"/usr/lib/{arch.triplet}"]
        dirs += arch.extra_dirs
        dirs += ["/lib", "/usr/lib"]
        if ident.elfclass == 2:
            dirs += ["/lib64", "/usr/lib64"]
        return dirs

    def _conf_dirs(self) -> list[str]:
        """The directories of /etc/ld.so.conf as ldconfig reads them (``include`` globs relative
        to the including file's directory); /etc/ld.so.conf.d/*.conf when there is no ld.so.conf."""
        if self._conf is None:
            dirs: list[str] = []
            if self.root.realpath("/etc/ld.so.conf"):
                self._parse_conf("/etc/ld.so.conf", dirs, set())
            else:
                for conf in self._glob("/etc/ld.so.conf.d/*.conf"):
                    self._parse_conf(conf, dirs, set())
            self._conf = dirs
        return self._conf

    def _parse_conf(self, path: str, dirs: list[str], seen: set[str]) -> None:
        canon = self.root.realpath(path)
        if canon is None or canon in seen:
            return
        seen.add(canon)
        try:
            with open(self.root.host(canon), encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            keyword, _, rest = line.replace("\t", " ").partition(" ")
            if keyword == "include" and rest.strip():
                for pattern in rest.split():
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for conf in self._glob(pattern):
                        self._parse_conf(conf, dirs, seen)
            elif keyword == "hwcap":
                continue
            elif line.startswith("/"):
                d = self.root.tidy(line)
                if d not in dirs:
                    dirs.append(d)

    def _glob(self, pattern: str) -> list[str]:
        """In-root paths matching ``pattern``, whose directory part holds no wildcard, sorted."""
        directory, base = posixpath.split(pattern)
        canon = self.root.realpath(directory or "/")
        if canon is None:
            return []
        try:
            entries = os.listdir(self.root.host(canon))
        except OSError:
            return []
        return [
            posixpath.join(directory, e)
            for e in sorted(entries)
            if fnmatch.fnmatchcase(e, base) and (base.startswith(".") or not e.startswith("."))
        ]

    # -- files ---------------------------------------------------------------------------------

    def _is_dir(self, path: str) -> bool:
        canon = self.root.realpath(path)
        return canon is not None and os.path.isdir(self.root.host(canon))

    def _head(self, canon: str, size: int) -> bytes:
        try:
            with open(self.root.host(canon), "rb") as f:
                return f.read(size)
        except OSError as e:
            raise SockerError(f"cannot read {canon}{self.root.where()}: {e.strerror}") from None

    def _probe(self, path: str, ident: _Ident, *, cache_dir: bool) -> str | None:
        """Canonical path of a library the loader of ``ident`` would accept at ``path``, or None
        to search on; an error where ld.so would stop (a file that is not ELF at all)."""
        canon = self.root.realpath(path)
        if canon is None:
            return None
        try:
            if not stat.S_ISREG(os.stat(self.root.host(canon)).st_mode):
                return None
        except OSError:
            return None
        head = self._head(canon, 64)
        found = _ident(head)
        if found is None:
            if cache_dir:
                return None  # ldconfig would not have put it in the cache
            raise DependencyError(
                f"{path}{self.root.where()} is where the loader looks for a library, but it is "
                f"{'not an ELF file' if not head.startswith(_ELF_MAGIC) else 'a truncated ELF file'}",
                hint="the program would not start on this host either; fix or remove that file",
            )
        if found.etype != _ET_DYN or not found.runs_with(ident):
            return None
        return canon

    def _dyn(self, canon: str) -> _Dyn:
        dyn = self._dyns.get(canon)
        if dyn is None:
            dyn = self._dyns[canon] = self._read_dyn(canon)
        return dyn

    def _read_dyn(self, canon: str) -> _Dyn:
        host = self.root.host(canon)
        try:
            with open(host, "rb") as f:
                ident = _ident(f.read(64))
                f.seek(0)
                elf = ELFFile(f)
                interp = None
                needed: list[str] = []
                rpath = runpath = soname = None
                flags_1 = 0
                for seg in elf.iter_segments():
                    kind = seg["p_type"]
                    if kind == "PT_INTERP":
                        interp = seg.get_interp_name()
                    elif kind == "PT_DYNAMIC":
                        for tag in seg.iter_tags():
                            t = tag.entry.d_tag
                            if t == "DT_NEEDED":
                                needed.append(tag.needed)
                            elif t == "DT_RPATH":
                                rpath = tag.rpath if rpath is None else f"{rpath}:{tag.rpath}"
                            elif t == "DT_RUNPATH":
                                runpath = tag.runpath if runpath is None else f"{runpath}:{tag.runpath}"
                            elif t == "DT_SONAME":
                                soname = tag.soname
                            elif t == "DT_FLAGS_1":
                                flags_1 = tag.entry.d_val
        except (ELFError, OSError, ValueError, KeyError, IndexError, struct.error) as e:
            raise SockerError(f"cannot read the ELF file {canon}{self.root.where()}: {e}") from None
        if ident is None:
            raise SockerError(f"{canon}{self.root.where()} is a truncated ELF file")
        if runpath is not None:
            rpath = None  # glibc ignores DT_RPATH when DT_RUNPATH is present
        return _Dyn(ident, interp, needed, rpath, runpath, soname, bool(flags_1 & _DF_1_NODEFLIB))


def _describe(ident: _Ident) -> str:
    return f"{32 * ident.elfclass}-bit machine-{ident.machine}"


def resolve(
    paths: list[str], *, sysroot: str | os.PathLike = "/", library_path: str | None = None
) -> list[str]:
    """The absolute paths (inside ``sysroot``) to copy so that ``paths`` run: the paths
    themselves, the dynamic loader and every library they load, transitively, found as
    ``ld.so`` would find them; script interpreters too. Nothing is executed.

    ``library_path`` plays ``LD_LIBRARY_PATH`` (colon-separated); the environment's own is
    ignored so that the answer does not depend on who asks. Relative paths are taken from the
    working directory when ``sysroot`` is ``/``, from the root otherwise.
    """
    root = _Root(sysroot)
    resolver = _Resolver(root, library_path)
    for path in paths:
        path = os.fspath(path)
        if root.is_host:
            path = os.path.abspath(path)
        resolver.add(posixpath.join("/", path))
    return list(resolver.out)


# -- copying ------------------------------------------------------------------------------------

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_LAYOUT_HINT = (
    "the image's links differ from the host's here; remove or fix that entry in the image, "
    "or build the image from the same kind of host"
)


class _Dest:
    """The image's root filesystem, written only through directory fds opened with O_NOFOLLOW."""

    def __init__(self, rootfs: str | os.PathLike, src: _Root):
        self.rootfs = os.fspath(rootfs)
        self.src = src
        self.as_root = os.geteuid() == 0
        try:
            self.root_fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SockerError(f"cannot open the image directory {self.rootfs}: {e.strerror}") from None
        self.fds: dict[str, int] = {"/": self.root_fd}
        self.new_dirs: list[tuple[str, os.stat_result]] = []
        self.changed: dict[str, None] = {}

    def close(self) -> None:
        try:
            # Modes and times of created directories last: their children are in by now.
            for canon, sst in reversed(self.new_dirs):
                fd = self.fds[canon]
                os.chmod(fd, stat.S_IMODE(sst.st_mode))
                os.utime(fd, ns=(sst.st_atime_ns, sst.st_mtime_ns))
        finally:
            for fd in self.fds.values():
                os.close(fd)
            self.fds = {}

    # -- steps ---------------------------------------------------------------------------------

    def apply(self, step: _Step) -> None:
        if step.kind == "dir":
            self._dir(step.path)
        elif step.kind == "link":
            self._link(step)
        elif step.kind == "file":
            self._file(step.path)
        else:
            raise UnsupportedError(
                f"{step.path}{self.src.where()} is not a regular file, directory or link",
                hint="device nodes, sockets and FIFOs are not copied",
            )

    def _dir(self, canon: str) -> int:
        fd = self.fds.get(canon)
        if fd is not None:
            return fd
        parent, name = posixpath.split(canon)
        parent_fd = self._dir(parent)
        st = _lstat_at(parent_fd, name)
        if st is None:
            sst = os.lstat(self.src.host(canon))
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
            if self.as_root:
                os.chown(fd, sst.st_uid, sst.st_gid)
            self.new_dirs.append((canon, sst))
            self._changed(canon)
        elif stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=parent_fd)
            raise UnsafeImagePathError(
                f"{canon} in the image is a symbolic link to {target!r}, but {canon} is a directory "
                f"on the host{self.src.where()}; socker will not write through it",
                hint=_LAYOUT_HINT,
            )
        else:
            raise UnsafeImagePathError(
                f"{canon} in the image is a file, but {canon} is a directory on the host{self.src.where()}",
                hint=_LAYOUT_HINT,
            )
        self.fds[canon] = fd
        return fd

    def _link(self, step: _Step) -> None:
        parent, name = posixpath.split(step.path)
        parent_fd = self._dir(parent)
        st = _lstat_at(parent_fd, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            current = os.readlink(name, dir_fd=parent_fd)
            if current == step.target or self._same_place(step.path):
                return
            if step.as_dir:
                raise UnsafeImagePathError(
                    f"{step.path} in the image is a symbolic link to {current!r}, but to {step.target!r} "
                    f"on the host{self.src.where()}; socker will not write through it",
                    hint=_LAYOUT_HINT,
                )
        elif st is not None and stat.S_ISDIR(st.st_mode):
            raise UnsafeImagePathError(
                f"{step.path} in the image is a directory, but a symbolic link to {step.target!r} on the "
                f"host{self.src.where()}",
                hint=_LAYOUT_HINT,
            )
        sst = os.lstat(self.src.host(step.path))
        tmp = _temp_name(name) if st is not None else name
        os.symlink(step.target, tmp, dir_fd=parent_fd)
        try:
            if self.as_root:
                os.chown(tmp, sst.st_uid, sst.st_gid, dir_fd=parent_fd, follow_symlinks=False)
            os.utime(tmp, ns=(sst.st_atime_ns, sst.st_mtime_ns), dir_fd=parent_fd, follow_symlinks=False)
            if tmp != name:
                os.rename(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            _unlink_quietly(tmp, parent_fd)
            raise
        self._changed(step.path)

    def _same_place(self, canon_link: str) -> bool:
        """Whether the image's link at this path leads where the host's does."""
        mine = _Root(self.rootfs).walk(canon_link, strict=False)[0]
        return mine == self.src.walk(canon_link, strict=False)[0]

    def _file(self, canon: str) -> None:
        parent, name = posixpath.split(canon)
        parent_fd = self._dir(parent)
        src_fd = os.open(self.src.host(canon), _READ)
        try:
            sst = os.fstat(src_fd)
            if not stat.S_ISREG(sst.st_mode):
                raise SockerError(f"{canon}{self.src.where()} changed while it was copied")
            st = _lstat_at(parent_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise UnsafeImagePathError(
                    f"{canon} in the image is a directory, but a file on the host{self.src.where()}",
                    hint=_LAYOUT_HINT,
                )
            if st is not None and stat.S_ISREG(st.st_mode) and self._identical(parent_fd, name, src_fd, sst):
                return
            self._write(parent_fd, name, src_fd, sst)
        finally:
            os.close(src_fd)
        self._changed(canon)

    def _identical(self, parent_fd: int, name: str, src_fd: int, sst: os.stat_result) -> bool:
        try:
            fd = os.open(name, _READ, dir_fd=parent_fd)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != sst.st_size or st.st_mode != sst.st_mode:
                return False
            if self.as_root and (st.st_uid, st.st_gid) != (sst.st_uid, sst.st_gid):
                return False
            if _xattrs(fd) != _xattrs(src_fd):
                return False
            offset = 0
            while offset < sst.st_size:
                a = os.pread(fd, _CHUNK, offset)
                if not a or a != os.pread(src_fd, _CHUNK, offset):
                    return False
                offset += len(a)
            return True
        finally:
            os.close(fd)

    def _write(self, parent_fd: int, name: str, src_fd: int, sst: os.stat_result) -> None:
        """A complete copy under a temporary name, renamed over ``name``: a file hard-linked
        elsewhere is replaced, never written to."""
        tmp = _temp_name(name)
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=parent_fd)
        try:
            try:
                _copy_data(src_fd, fd)
                if self.as_root:
                    os.chown(fd, sst.st_uid, sst.st_gid)  # before the mode: chown clears setuid
                os.chmod(fd, stat.S_IMODE(sst.st_mode))
                # After chown, which drops security.capability.
                for key, value in _xattrs(src_fd).items():
                    try:
                        os.setxattr(fd, key, value)
                    except OSError as e:
                        if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES) or (
                            self.as_root and e.errno != errno.ENOTSUP
                        ):
                            raise
                os.utime(fd, ns=(sst.st_atime_ns, sst.st_mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            _unlink_quietly(tmp, parent_fd)
            raise

    def _changed(self, canon: str) -> None:
        self.changed.setdefault(canon, None)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _temp_name(name: str) -> str:
    return f".{name[:200]}.socker-{secrets.token_hex(6)}"


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _xattrs(fd: int) -> dict[str, bytes]:
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
            return {}
        raise
    values = {}
    for key in names:
        try:
            values[key] = os.getxattr(fd, key)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise
    return values


def _copy_data(src_fd: int, dst_fd: int) -> None:
    try:
        while os.copy_file_range(src_fd, dst_fd, 1 << 30):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
            raise
    # Carry on from where copy_file_range stopped (both offsets moved together).
    while chunk := os.read(src_fd, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]


def copy_into(
    rootfs: str | os.PathLike, host_paths: Iterable[str], *, sysroot: str | os.PathLike = "/"
) -> list[str]:
    """Copy ``host_paths`` (absolute paths inside ``sysroot``, as ``resolve`` gives them) into
    ``rootfs`` at the same paths, recreating each symbolic link met on the way with the same
    target text and copying the final file with its mode, ownership (when root), xattrs and
    times. Identical files are left alone, other files and links replaced; directories are kept.

    Nothing is written through a link of the image: an image link where the host has a
    directory, or one leading elsewhere than the host's, raises ``UnsafeImagePathError``.
    Returns the in-image paths created or updated (directories, links, files) in order.
    """
    src = _Root(sysroot)
    dest = _Dest(rootfs, src)
    try:
        for path in host_paths:
            path = os.fspath(path)
            if src.is_host:
                path = os.path.abspath(path)
            path = posixpath.join("/", path)
            try:
                _, steps = src.walk(path)
            except OSError as e:
                raise SockerError(f"cannot copy {path}{src.where()}: {e.strerror}") from None
            if not steps or steps[-1].kind == "dir":
                raise SockerError(
                    f"cannot copy {path}: it is a directory",
                    hint="name the files to copy; directories are created as needed",
                )
            for step in steps:
                try:
                    dest.apply(step)
                except SockerError:
                    raise
                except OSError as e:
                    raise SockerError(
                        f"cannot copy {path} into {dest.rootfs} (at {step.path}): {e.strerror}"
                    ) from None
    finally:
        dest.close()
    return list(dest.changed)
