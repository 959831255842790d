"""A fast, strictly sequential tar reader for layer streams.

Python's ``tarfile`` spends most of a pull's CPU time parsing headers. This reader parses a
header with one ``struct`` call, understands ustar, GNU (long names, base-256 numbers) and
PAX (per-entry and global records, ``SCHILY.xattr.*``), and exposes members with the same
attribute names as ``tarfile.TarInfo`` so layer code reads naturally. Anything it cannot
represent faithfully (PAX sparse files) is refused with ``tarfile.ReadError``; other unknown
types are passed on for the caller to refuse.
"""

from __future__ import annotations

import struct
import tarfile
from typing import BinaryIO

BLOCK = 512
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_READ = 1 << 20
_REGULAR = frozenset(b"07\0")
_KNOWN = frozenset(b"0123456\0" + b"7")
ReadError = tarfile.ReadError


class Member:
    """One tar entry, with ``tarfile.TarInfo``'s attribute and method names."""

    __slots__ = (
        "name",
        "linkname",
        "type",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "devmajor",
        "devminor",
        "uname",
        "gname",
        "pax_headers",
    )

    def isfile(self) -> bool:
        return self.type in (b"0", b"7", b"\0")

    isreg = isfile

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def ischr(self) -> bool:
        return self.type == b"3"

    def isblk(self) -> bool:
        return self.type == b"4"

    def isfifo(self) -> bool:
        return self.type == b"6"

    def __repr__(self) -> str:
        return f"<Member {self.name!r} type={self.type!r} size={self.size}>"


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ReadError(f"invalid number field {field!r} in tar header") from None


def _str(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise ReadError("malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ReadError("malformed PAX record length") from None
        end = pos + length
        if length <= 0 or end > n or data[end - 1] != 0x0A:
            raise ReadError("malformed PAX record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise ReadError("malformed PAX record")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class TarReader:
    """``for m in iter(reader.next, None)``; ``reader.extractfile(m)`` reads the current file."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current member not yet consumed
        self._pad = 0  # padding after them
        self._global: dict[str, str] = {}
        self.members: list = []  # tarfile compatibility: callers may clear it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    # -- raw reading ------------------------------------------------------------------------------
    def _fill(self, n: int) -> bool:
        """Make sure ``n`` bytes are buffered; False at EOF before that."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos :]]
        while have < n:
            chunk = self._stream.read(max(_READ, n - have))
            if not chunk:
                self._buf, self._pos = b"".join(parts), 0
                return False
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = b"".join(parts), 0
        return True

    def _take(self, n: int) -> bytes:
        if not self._fill(n):
            raise ReadError("unexpected end of data in tar stream")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def _skip(self, n: int) -> None:
        have = len(self._buf) - self._pos
        if n <= have:
            self._pos += n
            return
        n -= have
        self._buf, self._pos = b"", 0
        while n > 0:
            chunk = self._stream.read(min(n, _READ * 4))
            if not chunk:
                raise ReadError("unexpected end of data in tar stream")
            n -= len(chunk)
        # over-read is impossible: reads were capped at what was left

    def _read_data(self, n: int) -> bytes:
        """Up to ``n`` bytes of the current member's data (fewer only at a buffer boundary)."""
        have = len(self._buf) - self._pos
        if have:
            k = min(n, have)
            out = self._buf[self._pos : self._pos + k]
            self._pos += k
            return out
        chunk = self._stream.read(n)
        if not chunk:
            raise ReadError("unexpected end of data in tar stream")
        return chunk

    # -- members ------------------------------------------------------------------------------------
    def next(self) -> Member | None:
        if self._left or self._pad:
            self._skip(self._left + self._pad)
            self._left = self._pad = 0
        pax: dict[str, str] = {}
        longname = longlink = None
        while True:
            if not self._fill(BLOCK):
                if len(self._buf) - self._pos:
                    raise ReadError("truncated tar header")
                return None  # EOF without an end marker: as tarfile's stream mode
            header = self._buf[self._pos : self._pos + BLOCK]
            self._pos += BLOCK
            if header.count(0) == BLOCK:
                return None  # end-of-archive marker
            (
                name,
                mode,
                uid,
                gid,
                size,
                mtime,
                chksum,
                typ,
                linkname,
                magic,
                _version,
                uname,
                gname,
                devmajor,
                devminor,
                prefix,
            ) = _HEADER.unpack(header)
            self._check_sum(header, chksum)
            size_n = _num(size)
            if typ in (b"x", b"g", b"L", b"K"):
                data = self._take(size_n)
                self._skip(-size_n % BLOCK)
                if typ == b"x":
                    pax.update(_parse_pax(data))
                elif typ == b"g":
                    self._global.update(_parse_pax(data))
                elif typ == b"L":
                    longname = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                else:
                    longlink = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            break
        if any(k.startswith("GNU.sparse") for k in pax):
            # PAX sparse files look like regular files whose data is a map: never write that
            raise ReadError("unsupported sparse file entry in tar stream")
        m = Member()
        if longname is not None:
            m.name = longname
        elif magic == b"ustar\0" and prefix[0]:
            m.name = _str(prefix) + "/" + _str(name)
        else:
            m.name = _str(name)
        m.linkname = longlink if longlink is not None else _str(linkname)
        m.type = typ
        m.mode = _num(mode) & 0o7777
        m.uid, m.gid, m.size = _num(uid), _num(gid), size_n
        m.mtime = _num(mtime)
        m.devmajor, m.devminor = _num(devmajor), _num(devminor)
        m.uname, m.gname = _str(uname), _str(gname)
        if self._global:
            pax = {**self._global, **pax}
        m.pax_headers = pax
        if pax:
            self._apply_pax(m, pax)
        if typ == b"\0" and m.name.endswith("/"):
            m.type = b"5"  # pre-POSIX directory
        if m.type == b"5":
            m.name = m.name.rstrip("/")
        data = m.size if (m.type in (b"0", b"7", b"\0") or m.type[0] not in _KNOWN) else 0
        self._left, self._pad = data, -data % BLOCK
        return m

    @staticmethod
    def _check_sum(header: bytes, chksum: bytes) -> None:
        try:
            want = _num(chksum)
        except ReadError:
            raise ReadError("bad checksum field in tar header") from None
        unsigned = sum(header) - sum(header[148:156]) + 256
        if want == unsigned:
            return
        signed = (
            unsigned - 2 * sum(b for b in header if b > 127) + 2 * sum(b for b in header[148:156] if b > 127)
        )
        if want != signed:
            raise ReadError("tar header checksum mismatch: the layer is corrupt or not a tar")

    @staticmethod
    def _apply_pax(m: Member, pax: dict[str, str]) -> None:
        try:
            if "path" in pax:
                m.name = pax["path"]
            if "linkpath" in pax:
                m.linkname = pax["linkpath"]
            if "size" in pax:
                m.size = int(pax["size"])
            if "uid" in pax:
                m.uid = int(pax["uid"])
            if "gid" in pax:
                m.gid = int(pax["gid"])
            if "mtime" in pax:
                m.mtime = float(pax["mtime"])
            if "uname" in pax:
                m.uname = pax["uname"]
            if "gname" in pax:
                m.gname = pax["gname"]
        except ValueError as e:
            raise ReadError(f"invalid PAX value: {e}") from None

    def extractfile(self, m: Member) -> _FileData:
        return _FileData(self)


class _FileData:
    """The current member's data; reading past it returns b""."""

    __slots__ = ("_r",)

    def __init__(self, reader: TarReader):
        self._r = reader

    def read(self, n: int = -1) -> bytes:
        r = self._r
        if r._left <= 0:
            return b""
        want = r._left if n is None or n < 0 else min(n, r._left)
        if n is None or n < 0:
            out = r._take(want)
        else:
            out = r._read_data(want)
        r._left -= len(out)
        return out
