"""How /db-health shows a query: its shape, with every literal replaced by `?` and comments removed.

Query text from pg_stat_activity and pg_stat_statements can carry data (emails, tokens in a WHERE
clause): only the shape is shown, read as PostgreSQL's lexer reads it.
"""

from __future__ import annotations

import re

from commands.redact import redact


def _ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


_NUMBER_RE = re.compile(r"0[xX][0-9A-Fa-f_]*|0[oO][0-7_]*|0[bB][01_]*|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?")
_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_LITERAL, _COMMENT = 1, 2


def _mask(sql: str, backslash_escapes: bool) -> bytearray:
    """Mark each character of `sql` that is inside a literal (1) or a comment (2), reading it as PostgreSQL's lexer
    does. `backslash_escapes` reads '...' as with standard_conforming_strings off. Anything unterminated runs to
    the end (a truncated or malformed query hides its tail, never shows it)."""
    n = len(sql)
    mask = bytearray(n)
    i = 0

    def mark(start: int, end: int, kind: int) -> int:
        mask[start:end] = bytes([kind]) * (end - start)
        return end

    while i < n:
        c = sql[i]
        prev = sql[i - 1] if i else " "
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = mark(i, n if end < 0 else end, _COMMENT)
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = mark(i, j if not depth else n, _COMMENT)
        elif c == '"':  # a quoted identifier is a name, not data: kept as written
            j = i + 1
            while j < n and not (sql[j] == '"' and not sql.startswith('""', j)):
                j += 2 if sql.startswith('""', j) else 1
            if j >= n:
                i = mark(i, n, _LITERAL)
            else:
                i = j + 1
        elif c == "'" or (not _ident_char(prev) and c in "eEbBxXnN" and sql.startswith("'", i + 1)) or (
                not _ident_char(prev) and c in "uU" and sql.startswith("&'", i + 1)):
            quote = sql.index("'", i)
            escapes = backslash_escapes or (quote == i + 1 and c in "eE")
            j = quote + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    if sql.startswith("''", j):
                        j += 2
                    else:
                        break
                else:
                    j += 1
            i = mark(i, min(j + 1, n), _LITERAL)
        elif c == "$" and not _ident_char(prev) and (tag := _DOLLAR_TAG_RE.match(sql, i)):
            end = sql.find(tag.group(), tag.end())
            i = mark(i, n if end < 0 else end + len(tag.group()), _LITERAL)
        elif c == "$" and i + 1 < n and sql[i + 1].isdigit():  # a parameter ($1): kept
            i += 1
            while i < n and sql[i].isdigit():
                i += 1
        elif (c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit())) and not _ident_char(prev):
            i = mark(i, _NUMBER_RE.match(sql, i).end() or i + 1, _LITERAL)
        elif _ident_char(c):
            while i < n and _ident_char(sql[i]):
                i += 1
        else:
            i += 1
    return mask


def normalize_query(sql: str | None) -> str:
    """Query text with every literal (strings, E'', B'', X'', U&'', dollar-quoted bodies, numbers) replaced by `?`
    and comments removed, on one line. Strings are read both with and without backslash escapes and a character
    is hidden if either reading puts it in a literal, so the server's standard_conforming_strings can't matter."""
    if not sql:
        return ""
    sql = sql.replace("\x00", "")
    mask = bytearray(a | b for a, b in zip(_mask(sql, False), _mask(sql, True), strict=True))
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        if not mask[i]:
            out.append(sql[i])
            i += 1
            continue
        j, literal = i, False
        while j < n and mask[j]:
            literal = literal or bool(mask[j] & _LITERAL)
            j += 1
        if literal:  # spaced only where the neighbours would otherwise run into it
            before = " " if out and _ident_char(out[-1][-1]) else ""
            after = " " if j < n and _ident_char(sql[j]) else ""
            out.append(f"{before}?{after}")
        else:
            out.append(" ")
        i = j
    return " ".join("".join(out).split())


def shown_query(sql: str | None, limit: int, secrets: list[str]) -> str:
    """How /db-health shows a query: normalized, redacted, shortened to `limit` characters."""
    text = redact(normalize_query(sql), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"
