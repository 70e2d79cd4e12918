"""Row counts read off pg_dump's plain SQL as it streams past (plain and gzip, counted before compression).

A table's data is `COPY <table> (<columns>) FROM stdin;`, its rows, and a line `\\.`. The table is
known by comparing the whole statement with the one pg_dump writes for each recorded table (built here
from the exact names, quoted as pg_dump's fmtId quotes them), never by reading a name out of the text.

Text a role may write into a dump (comments, defaults, function bodies, view text) can hold a line that
looks like a COPY statement, so a line counts only outside string literals, quoted identifiers, dollar
quotes and `--` comments: the few lexical states that can hold a newline, tracked with regular
expressions on the DDL between tables. Rows are counted with `bytes.count`; memory stays a few bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from commands.pg.archive_stream import ArchiveFormatError

_SIMPLE = re.compile(r"[a-z_][a-z0-9_]*")
_EVENT = re.compile(rb"['\"$]|--|\nCOPY ")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$")
_IDENT_BYTE = re.compile(rb"[A-Za-z\x80-\xff_0-9]")
_E_STRING_END = re.compile(rb"[\\']")
COPY_END = b" FROM stdin;\n"
DATA_END = b"\n\\.\n"
MAX_STATEMENT = 1 << 20  # 1,600 columns of 63-byte names, quoted, fit many times over


def fmt_id(name: str, quoted_keywords: frozenset[str]) -> str:
    """An identifier as pg_dump's fmtId writes it: bare when simple lowercase and not a keyword that
    must be quoted (any but an unreserved one), else double-quoted with quotes doubled."""
    if _SIMPLE.fullmatch(name) and name not in quoted_keywords:
        return name
    return '"' + name.replace('"', '""') + '"'


def copy_statement(schema: str, name: str, columns: Iterable[str], quoted_keywords: frozenset[str]) -> str:
    """pg_dump's `COPY … FROM stdin;` line for a table whose dumped (not generated) columns are `columns`."""
    cols = ", ".join(fmt_id(c, quoted_keywords) for c in columns)
    return (f"COPY {fmt_id(schema, quoted_keywords)}.{fmt_id(name, quoted_keywords)} "
            f"{'(' + cols + ')' if cols else ''} FROM stdin;\n")


def loose_statement(schema: str, name: str, columns: Iterable[str]) -> re.Pattern:
    """The statement with each simple lowercase name either bare or quoted: for a pg_dump whose keyword
    list differs from the server's, so a name this side left bare was quoted there, or the other way."""
    def part(word: str) -> str:
        quoted = re.escape('"' + word.replace('"', '""') + '"')
        return f"(?:{re.escape(word)}|{quoted})" if _SIMPLE.fullmatch(word) else quoted

    cols = ", ".join(part(c) for c in columns)
    return re.compile(f"COPY {part(schema)}\\.{part(name)} {'[(]' + cols + '[)]' if cols else ''} FROM stdin;\n",
                      re.DOTALL)


class PlainCopyCounter:
    """Counts COPY rows per table in pg_dump's plain output. `tables`: key -> (schema, name, dumped columns)."""

    def __init__(self, tables: dict, quoted_keywords: frozenset[str], encoding: str = "utf-8"):
        self._tables = tables
        self._encoding = encoding
        self._by_statement = {copy_statement(s, n, cols, quoted_keywords).encode(encoding): key
                              for key, (s, n, cols) in tables.items()}
        self._state = "sql"
        self._carry = b"\n"  # the dump's first line starts a line
        self._prev = b""  # the byte before the carry, for E'…' strings and $ inside words
        self._dollar = b""
        self._statement = bytearray()
        self._key = None
        self._rows = 0
        self._line_start = True
        self.rows: dict = {}
        self._unknown: list[tuple[bytes, int]] = []  # COPY statements of tables this side did not name

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        self._carry = b""
        pos, end = 0, len(buf)
        while pos < end and not self._carry:
            pos = getattr(self, "_in_" + self._state)(buf, pos)

    def _keep(self, buf: bytes, pos: int) -> int:
        """Hold buf[pos:] until more arrives: it may start something that is not complete yet."""
        self._prev = buf[pos - 1:pos] if pos else self._prev
        self._carry = buf[pos:] or b""
        return len(buf)

    def _in_sql(self, buf: bytes, pos: int) -> int:
        while True:
            m = _EVENT.search(buf, pos)
            if m is None:
                return self._keep(buf, max(pos, len(buf) - 6))
            i, token = m.start(), m.group()
            if token == b"\nCOPY ":
                self._state, self._statement = "statement", bytearray()
                return i + 1
            if token == b"--":
                self._state = "comment"
                return i + 2
            before = buf[i - 1:i] if i else self._prev
            if token == b"'":
                self._state = "estring" if before in (b"E", b"e") else "squote"
                return i + 1
            if token == b'"':
                self._state = "dquote"
                return i + 1
            if _IDENT_BYTE.fullmatch(before or b" "):  # a $ inside a word (or $1): no dollar quote
                pos = i + 1
                continue
            tag = _DOLLAR_TAG.match(buf, i)
            if tag is None:
                if len(buf) - i < 66:
                    return self._keep(buf, i)  # a tag may still be arriving
                pos = i + 1
                continue
            self._state, self._dollar = "dollar", tag.group()
            return tag.end()

    def _in_comment(self, buf: bytes, pos: int) -> int:
        i = buf.find(b"\n", pos)
        if i < 0:
            return len(buf)
        self._state = "sql"
        return i  # the newline starts the next line, which may be a COPY

    def _close_at(self, buf: bytes, pos: int, quote: bytes) -> int:
        i = buf.find(quote, pos)
        if i < 0:
            return len(buf)
        self._state = "sql"  # a doubled quote closes and reopens: the same as staying inside
        return i + 1

    def _in_squote(self, buf: bytes, pos: int) -> int:
        return self._close_at(buf, pos, b"'")

    def _in_dquote(self, buf: bytes, pos: int) -> int:
        return self._close_at(buf, pos, b'"')

    def _in_estring(self, buf: bytes, pos: int) -> int:
        while True:
            m = _E_STRING_END.search(buf, pos)
            if m is None:
                return len(buf)
            i = m.start()
            if buf[i:i + 1] == b"'":
                if i + 1 == len(buf):
                    return self._keep(buf, i)  # '' would go on with the same E string
                if buf[i + 1:i + 2] == b"'":
                    pos = i + 2
                    continue
                self._state = "sql"
                return i + 1
            if i + 1 == len(buf):
                return self._keep(buf, i)  # a backslash escapes the byte that has not arrived
            pos = i + 2

    def _in_dollar(self, buf: bytes, pos: int) -> int:
        i = buf.find(self._dollar, pos)
        if i < 0:
            return self._keep(buf, max(pos, len(buf) - len(self._dollar) + 1))
        self._state = "sql"
        return i + len(self._dollar)

    def _in_statement(self, buf: bytes, pos: int) -> int:
        i = buf.find(COPY_END, pos)
        if i < 0:
            keep = max(pos, len(buf) - len(COPY_END) + 1)
            self._statement += buf[pos:keep]
            self._check_length()
            return self._keep(buf, keep)
        self._statement += buf[pos:i + len(COPY_END)]
        self._check_length()
        if self._statement.count(b'"') % 2:  # " FROM stdin;\n" inside a quoted name: read on
            return i + len(COPY_END)
        statement = bytes(self._statement)
        self._key = self._by_statement.get(statement, statement)
        self._state, self._rows, self._line_start = "data", 0, True
        return i + len(COPY_END)

    def _check_length(self) -> None:
        if len(self._statement) > MAX_STATEMENT:
            raise ArchiveFormatError("a COPY statement in pg_dump's output does not end")

    def _in_data(self, buf: bytes, pos: int) -> int:
        if self._line_start:
            head = buf[pos:pos + 3]
            if head == b"\\.\n":
                return self._end_data(pos + 3)
            if b"\\.\n".startswith(head) and len(buf) - pos < 3:
                return self._keep(buf, pos)
        i = buf.find(DATA_END, pos)
        if i >= 0:
            self._rows += buf.count(b"\n", pos, i + 1)
            return self._end_data(i + len(DATA_END))
        end = len(buf)
        for partial in (b"\n\\.", b"\n\\"):  # the end line may be arriving
            if buf.endswith(partial) and end - len(partial) >= pos:
                self._rows += buf.count(b"\n", pos, end - len(partial) + 1)
                self._line_start = True
                return self._keep(buf, end - len(partial) + 1)
        self._rows += buf.count(b"\n", pos, end)
        self._line_start = buf.endswith(b"\n") if end > pos else self._line_start
        return end

    def _end_data(self, pos: int) -> int:
        key = self._key
        if isinstance(key, bytes):
            self._unknown.append((key, self._rows))
        elif key in self.rows:
            raise ArchiveFormatError(f"pg_dump's output holds the data of table {key} twice")
        else:
            self.rows[key] = self._rows
        self._state, self._key = "sql", None
        return pos - 1  # the newline that ended `\.` starts the next line

    def finish(self) -> dict:
        """Rows per table key; tables pg_dump quoted differently are matched loosely; tables with no COPY
        (no data dumped) count 0. Raises ArchiveFormatError when the SQL ended inside a COPY."""
        if self._state in ("data", "statement"):
            raise ArchiveFormatError("pg_dump's output ended inside a COPY; its rows cannot be counted")
        for key, (schema, name, cols) in self._tables.items():
            if key in self.rows:
                continue
            pattern = loose_statement(schema, name, cols)
            for i, (statement, rows) in enumerate(self._unknown):
                if pattern.fullmatch(statement.decode(self._encoding, "replace")):
                    self.rows[key] = rows
                    del self._unknown[i]
                    break
            else:
                self.rows[key] = 0
        return dict(self.rows)
