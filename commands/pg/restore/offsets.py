"""Write the data offsets into a custom-format archive that pg_dump wrote to a pipe.

pg_dump writes an archive's table of contents first and each table's data after it; into a file it
seeks back at the end and fills in where each table's data starts, into a pipe (the bot's backup
stream) it cannot, and every entry says "position not set". `pg_restore --jobs N` then finds a
table's data by walking the archive from block to block, and in an uncompressed archive (the bot
dumps with --compress=0 and compresses the stream itself) every row is its own block: each worker
reads its way through every table before the one it wants. At 1 GB that is a few seconds of
pg_restore's CPU on top of the restore (bench/results.md, drill phases).

The fetched copy is ours, so its offsets are filled in here, as pg_dump would have: the header and
the TOC are read (archive versions 1.12 to 1.15, PostgreSQL 11 to 16), the data blocks are walked,
and each data entry's 9-byte offset field is overwritten in place; the file keeps its size and
every other byte. A block ends with a zero length, five zero bytes, which COPY text (the only
thing in an uncompressed archive's table data: PostgreSQL text holds no NUL byte) cannot contain,
so blocks are found by a byte search, not row by row. Anything else — a compressed archive, large
objects, another version, a block that is not where it should be — leaves the file untouched:
pg_restore then reads it as before, only slower. pg_restore itself checks each block's id where it
seeks, so an offset could never make it restore the wrong table's rows.
"""

from __future__ import annotations

import bisect
import mmap
import os
from pathlib import Path

POS_NOT_SET, POS_SET = 1, 2  # K_OFFSET_* in pg_backup_archiver.h
BLK_DATA = 1
SUPPORTED = range(12, 16)  # archive format 1.12 .. 1.15
END_OF_BLOCK = b"\0" * 5  # WriteInt(0): sign byte and four zero bytes (intSize 4)


class _NotThisArchive(Exception):
    """The archive is not one this module can read exactly: leave it alone."""


class _Reader:
    def __init__(self, buf, pos: int = 0):
        self.buf, self.pos, self.int_size = buf, pos, 4

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise _NotThisArchive("short")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def int(self) -> int:
        sign = self.byte()
        raw = self.buf[self.pos:self.pos + self.int_size]
        if len(raw) != self.int_size:
            raise _NotThisArchive("short")
        self.pos += self.int_size
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str(self) -> bytes | None:
        length = self.int()
        if length < 0:
            return None
        if self.pos + length > len(self.buf):
            raise _NotThisArchive("short")
        self.pos += length
        return self.buf[self.pos - length:self.pos]


def _read_toc(r: _Reader) -> tuple[dict[int, int], int]:
    """{dumpId: position of its offset field} for entries with data not located yet, and where the
    TOC ends (the first data block)."""
    if r.buf[:5] != b"PGDMP":
        raise _NotThisArchive("magic")
    r.pos = 5
    major, minor, _rev = r.byte(), r.byte(), r.byte()
    if major != 1 or minor not in SUPPORTED:
        raise _NotThisArchive(f"version 1.{minor}")
    r.int_size, off_size, fmt = r.byte(), r.byte(), r.byte()
    if r.int_size != 4 or off_size != 8 or fmt != 1:  # custom format, as every pg_dump writes it
        raise _NotThisArchive("layout")
    compressed = r.byte() if minor >= 15 else r.int()
    if compressed != 0:
        raise _NotThisArchive("compressed")
    for _ in range(7):  # the dump's timestamp
        r.int()
    for _ in range(3):  # database name, server and pg_dump versions
        r.str()
    pending: dict[int, int] = {}
    for _ in range(r.int()):
        dump_id = r.int()
        r.int()  # hadDumper
        for _ in range(3):  # tableoid, oid, tag
            r.str()
        desc = r.str()
        r.int()  # section
        for _ in range(6 if minor >= 14 else 5):  # defn, dropStmt, copyStmt, namespace, tablespace, (tableam)
            r.str()
        r.str()  # owner
        r.str()  # "false": WITH OIDS
        while r.str() is not None:  # dependencies
            pass
        where = r.pos
        flag = r.byte()
        r.pos += off_size
        if flag == POS_NOT_SET:
            if desc != b"TABLE DATA":  # large objects: binary data, which the byte search cannot walk
                raise _NotThisArchive("not table data")
            pending[dump_id] = where
        elif flag == POS_SET:
            raise _NotThisArchive("already located")
    return pending, r.pos


class BlockEnds:
    """Fed the archive's bytes in order (`feed`), it notes every place where a block's end (five zero
    bytes) is followed by the next data block's header (BLK_DATA, a positive id): the byte search
    runs on buffers already in memory, while the file is written, instead of reading it again."""

    PATTERN = END_OF_BLOCK + bytes([BLK_DATA, 0])

    def __init__(self):
        self.ends: list[int] = []
        self.size = 0
        self._carry = b""

    def feed(self, data: bytes) -> None:
        buf = self._carry + data
        base = self.size - len(self._carry)
        pos = buf.find(self.PATTERN)
        while pos >= 0:
            self.ends.append(base + pos)
            pos = buf.find(self.PATTERN, pos + 1)
        self.size += len(data)
        self._carry = buf[-(len(self.PATTERN) - 1):]


def _data_blocks(buf, start: int, ends: list[int], size: int) -> dict[int, int]:
    """{dumpId: position of its block} for the table-data blocks from `start` to the end of the file.
    Every block holds COPY text (the TOC said so), which has no NUL byte, so a block's end is the
    first five zero bytes after its header: the next noted end, or the file's own."""
    r = _Reader(buf, start)
    found: dict[int, int] = {}
    while r.pos < size:
        block = r.pos
        if r.byte() != BLK_DATA:
            raise _NotThisArchive("not a data block")
        dump_id = r.int()
        if dump_id in found:
            raise _NotThisArchive("block")
        found[dump_id] = block
        i = bisect.bisect_left(ends, r.pos)
        end = ends[i] if i < len(ends) else size - len(END_OF_BLOCK)  # the last block ends the file
        if buf[end:end + len(END_OF_BLOCK)] != END_OF_BLOCK:
            raise _NotThisArchive("block end")
        r.pos = end + len(END_OF_BLOCK)
    return found


def fill_data_offsets(path: Path, ends: BlockEnds) -> int:
    """Fill in the data offsets of the archive at `path` (whose bytes went through `ends`) in place;
    how many (0: left as it was)."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 5 or size != ends.size:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                pending, data_start = _read_toc(_Reader(buf))
                blocks = _data_blocks(buf, data_start, ends.ends, size) if pending else {}
            except _NotThisArchive:
                return 0
        if not pending or blocks.keys() != pending.keys():
            return 0
        for dump_id, where in pending.items():
            os.pwrite(f.fileno(), bytes([POS_SET]) + blocks[dump_id].to_bytes(8, "little"), where)
    return len(pending)
