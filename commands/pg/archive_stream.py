"""Row counts read off pg_dump's own output as it streams past, so they are exactly what was dumped.

Taking counts with `count(*)` in the dump's snapshot made the server read every row twice. These
counters are fed the same bytes that go to compression, keep a few bytes of state between chunks
(never a table's data), and answer, per table, how many COPY rows the dump holds.

Custom format (`pg_dump -Fc --compress=0`, archive versions 1.14-1.16 of PostgreSQL 12-17): the header
and TOC are read as pg_backup_archiver.c writes them (ReadHead, ReadToc, ReadInt, ReadStr); data blocks as
pg_backup_custom.c does (a block type byte, the dumpId, length-prefixed chunks, a 0-length chunk). A
TABLE DATA entry's catalog OID is its table's OID, so counts are keyed by OID, never by a name in text.

Plain SQL (see `commands.pg.copy_stream`) is counted before compression, so gzip is counted the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from commands.errors import DumpError

MAGIC = b"PGDMP"
ARCH_CUSTOM = 1
BLK_DATA, BLK_BLOBS = 1, 3
K_VERS_1_14, K_VERS_1_15, K_VERS_1_16 = (1, 14), (1, 15), (1, 16)
TERMINATOR = b"\\."  # the COPY end-of-data line, which pg_dump also writes into custom archives


class ArchiveFormatError(DumpError):
    """pg_dump's archive did not read as the format says: the rows in it cannot be counted."""


class _Short(Exception):
    """Not enough bytes yet: parse this TOC entry again when more arrive."""


class _Cursor:
    __slots__ = ("buf", "pos", "int_size")

    def __init__(self, buf: bytearray, int_size: int = 4):
        self.buf, self.pos, self.int_size = buf, 0, int_size

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise _Short
        out = bytes(self.buf[self.pos:end])
        self.pos = end
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise _Short
        self.pos += n

    def int(self) -> int:
        raw = self.take(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def str(self) -> bytes | None:
        n = self.int()
        return None if n < 0 else self.take(n)

    def skip_str(self) -> None:
        n = self.int()
        if n > 0:
            self.skip(n)


def copy_rows(newlines: int, tail: bytes, intro: Callable[[int], bytes]) -> int:
    """Rows in COPY text data holding `newlines` newline bytes and ending with `tail`.

    Each row ends with a newline (newlines inside values are escaped), and a line `\\.` ends the data;
    pg_dump writes it, then blank lines, as one chunk (`intro(n)` is the length prefix of an n-byte chunk),
    or inline after a row. A row can never be `\\.`: a backslash in a value is written `\\\\`."""
    body = tail.rstrip(b"\n")
    trailing = len(tail) - len(body)
    if trailing and body.endswith(TERMINATOR):
        before = body[:-len(TERMINATOR)]
        if before.endswith(b"\n") or before.endswith(intro(len(TERMINATOR) + trailing)):
            return newlines - trailing
    return newlines


class CustomArchiveCounter:
    """Counts the COPY rows of each TABLE DATA entry in a custom-format archive stream, keyed by table OID."""

    def __init__(self):
        self._toc = bytearray()
        self._version: tuple[int, int, int] | None = None
        self._int_size = 4
        self._entries_left: int | None = None
        self._table_data: dict[int, int] = {}  # dumpId -> table OID
        self._in_toc = True
        self._carry = b""
        self._state = "block"
        self._skip_left = 0  # bytes of a chunk that is walked, not counted, still to skip
        self._chunks_end = "block"  # where a 0-length chunk leads: the next block, or the next large object
        self._entry: int | None = None  # dumpId of the TABLE DATA block being read
        self._newlines = 0
        self._recent = b""
        self.rows: dict[int, int] = {}  # table OID -> rows

    # ------------------------------------------------------------ header and TOC
    def _read_toc(self) -> None:
        cur = _Cursor(self._toc, self._int_size)
        try:
            if self._entries_left is None:
                self._read_head(cur)
                self._entries_left = cur.int()  # only once the whole header has arrived
                del self._toc[:cur.pos]
                cur = _Cursor(self._toc, self._int_size)
            while self._entries_left:
                start = cur.pos
                try:
                    self._read_entry(cur)
                except _Short:
                    del self._toc[:start]  # keep only the entry that is not complete yet
                    raise
                self._entries_left -= 1
        except _Short:
            return
        rest = bytes(self._toc[cur.pos:])
        self._toc = bytearray()
        self._in_toc = False
        if rest:
            self._feed_blocks(rest)

    def _read_head(self, cur: _Cursor) -> None:
        if cur.take(5) != MAGIC:
            raise ArchiveFormatError("pg_dump's output is not a custom-format archive")
        version = tuple(cur.take(3))
        if not K_VERS_1_14 <= version[:2] <= K_VERS_1_16:
            raise ArchiveFormatError(f"custom archive version {version[0]}.{version[1]} is not one this bot reads "
                                     "(1.14-1.16: pg_dump 12 to 17)")
        int_size, _off_size, fmt = cur.take(3)
        if fmt != ARCH_CUSTOM or not 1 <= int_size <= 8:
            raise ArchiveFormatError("pg_dump's archive header is not that of a custom-format archive")
        cur.int_size = self._int_size = int_size
        if version[:2] >= K_VERS_1_15:
            compressed = cur.take(1)[0] != 0  # the compression algorithm; 0 is none
        else:
            compressed = cur.int() != 0  # the compression level
        if compressed:
            raise ArchiveFormatError("pg_dump compressed its archive: its rows cannot be counted on the way")
        for _ in range(7):  # creation time
            cur.int()
        for _ in range(3):  # database name, server version, pg_dump version
            cur.skip_str()
        self._off_size = _off_size
        self._version = version
        # dumpId, hadDumper, tableoid, oid, tag, desc, section, defn, dropStmt, copyStmt, namespace,
        # tablespace, tableam, [relkind,] owner, "false" (WITH OIDS): True where a string
        self._layout = (False, False, True, True, True, True, False, True, True, True, True, True, True) + \
            ((False,) if version[:2] >= K_VERS_1_16 else ()) + (True, True)

    def _read_entry(self, cur: _Cursor) -> None:
        """One TOC entry, as ReadToc reads it; only a TABLE DATA entry's dumpId and OID are kept. Written
        out flat: a TOC has entries in the tens of thousands when a database has thousands of tables."""
        buf, pos, hs, from_bytes = cur.buf, cur.pos, 1 + self._int_size, int.from_bytes
        n = len(buf)
        values = []
        for is_str in self._layout:
            if pos + hs > n:
                raise _Short
            value = from_bytes(buf[pos + 1:pos + hs], "little")
            if buf[pos]:
                value = -value
            pos += hs
            values.append((value, pos))
            if is_str and value > 0:
                pos += value
        while True:  # dependencies, each a string, then a null one
            if pos + hs > n:
                raise _Short
            value = from_bytes(buf[pos + 1:pos + hs], "little")
            pos += hs
            if buf[pos - hs]:
                break
            pos += value
        pos += 1 + self._off_size  # the data offset: a flag byte, then offSize bytes
        if pos > n:
            raise _Short
        cur.pos = pos
        (length, at) = values[5]  # desc
        if buf[at:at + length] == b"TABLE DATA":
            (length, oid_at) = values[3]
            self._table_data[values[0][0]] = int(buf[oid_at:oid_at + length])

    # ------------------------------------------------------------ data blocks
    def feed(self, data: bytes) -> None:
        if self._in_toc:
            self._toc += data
            self._read_toc()
        else:
            self._feed_blocks(data)

    def _feed_blocks(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        self._carry = b""
        pos, end, hs = 0, len(buf), 1 + self._int_size
        while pos < end:
            state = self._state
            if state == "data":
                pos = self._scan_table_data(buf, pos)
                continue
            if state == "skip":
                n = min(self._skip_left, end - pos)
                pos += n
                self._skip_left -= n
                if not self._skip_left:
                    self._state = "chunk_len"
                continue
            need = 1 + hs if state == "block" else hs
            if end - pos < need:
                self._carry = buf[pos:]
                return
            if state == "block":
                kind, dump_id = buf[pos], self._int_at(buf, pos + 1)
                pos += need
                if kind == BLK_DATA and dump_id in self._table_data:
                    self._entry, self._newlines, self._recent = dump_id, 0, b""
                    self._state = "data"
                elif kind == BLK_DATA:
                    self._state, self._chunks_end = "chunk_len", "block"  # data of another kind: walk it exactly
                elif kind == BLK_BLOBS:
                    self._state = "lo_oid"
                else:
                    raise ArchiveFormatError(f"unknown data block type {kind} in pg_dump's archive")
                continue
            value = self._int_at(buf, pos)
            pos += need
            if state == "lo_oid":  # a large object's OID, or 0 after the last one
                self._state, self._chunks_end = ("block", "block") if value == 0 else ("chunk_len", "lo_oid")
            elif value < 0:
                raise ArchiveFormatError("a negative chunk length in pg_dump's archive")
            elif value == 0:  # the end of this object's chunks
                self._state = self._chunks_end
            else:
                self._skip_left, self._state = value, "skip"

    def _int_at(self, buf: bytes, pos: int) -> int:
        value = int.from_bytes(buf[pos + 1:pos + 1 + self._int_size], "little")
        return -value if buf[pos] else value

    def _scan_table_data(self, buf: bytes, pos: int) -> int:
        """COPY text holds no NUL byte, so every NUL here starts a chunk's length prefix (a sign byte 0):
        one regular expression walks all chunks whose prefix holds no newline byte, in C, at memory speed."""
        hs = 1 + self._int_size
        clean = _clean_chunks(self._int_size)
        end = len(buf)
        while True:
            stop = clean.match(buf, pos).end()
            self._newlines += buf.count(b"\n", pos, stop)
            self._recent = (self._recent + buf[max(pos, stop - 32):stop])[-32:]
            if stop == end:
                return end
            if end - stop < hs:
                self._carry = buf[stop:]
                return end
            prefix = buf[stop:stop + hs]
            if prefix == b"\x00" * hs:  # the 0-length chunk: this entry's data is complete
                oid = self._table_data[self._entry]
                rows = copy_rows(self._newlines, self._recent, self._intro)
                self.rows[oid] = self.rows.get(oid, 0) + rows
                self._state, self._entry = "block", None
                return stop + hs
            if b"\n" not in prefix[1:] or prefix[0] != 0:
                raise ArchiveFormatError("a TABLE DATA chunk in pg_dump's archive does not read as COPY text")
            self._recent = (self._recent + prefix)[-32:]  # a length prefix holding a newline byte: not a row
            pos = stop + hs

    def _intro(self, length: int) -> bytes:
        return b"\x00" + length.to_bytes(self._int_size, "little")

    def finish(self) -> dict[int, int]:
        """Rows per table OID; raises ArchiveFormatError when the archive ended part-way."""
        if self._in_toc or self._carry or self._state != "block":
            raise ArchiveFormatError("pg_dump's archive ended part-way through; its rows cannot be counted")
        for oid in self._table_data.values():
            self.rows.setdefault(oid, 0)
        return dict(self.rows)


_CLEAN: dict[int, re.Pattern] = {}


def _clean_chunks(int_size: int) -> re.Pattern:
    """Payload bytes, then any number of chunks whose length prefix is complete, holds no newline byte
    and is not the 0-length end marker. Plain greedy quantifiers: nothing follows the group, so a match
    never backtracks into what was read. (Possessive ones, `*+`, match wrongly in Python 3.11.2,
    the python3 of Debian bookworm, which the image runs: every custom-format backup failed there.)"""
    if int_size not in _CLEAN:
        _CLEAN[int_size] = re.compile(
            rb"[^\x00]*(?:\x00(?!\x00{%d})[^\n]{%d}[^\x00]*)*" % (int_size, int_size))
    return _CLEAN[int_size]
