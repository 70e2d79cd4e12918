"""Qualified names as exact (schema, name) pairs, with one reversible text form.

A name read from the catalog is data: any byte a PostgreSQL identifier may hold (quotes, dots,
spaces, `;`, newlines, backslashes, Unicode) must survive the trip from the backup's manifest to
the SQL a restore runs. Text keys (`public.users`, `"my schema"."a.b"`) are written and read by
this module only, and SQL gets the parts through `psycopg.sql.Identifier`, never by formatting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from commands.errors import UsageError

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")
_UNQUOTED_INPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
MAX_IDENTIFIER_BYTES = 63


def quote_part(part: str) -> str:
    """The key form of one identifier: bare when it is plain lowercase, else double-quoted."""
    return part if _PLAIN.match(part) else '"' + part.replace('"', '""') + '"'


@dataclass(frozen=True, order=True)
class QualifiedName:
    schema: str
    name: str

    @property
    def key(self) -> str:
        """Reversible text form, used as the key in manifests and shown to people."""
        return f"{quote_part(self.schema)}.{quote_part(self.name)}"

    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def dump_pattern(self) -> str:
        """An exact `pg_dump --table` pattern: inside double quotes no character is a wildcard."""
        return '"' + self.schema.replace('"', '""') + '"."' + self.name.replace('"', '""') + '"'

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class NameRef:
    """A table as a user typed it: quoted parts match exactly, bare parts case-insensitively."""

    schema: str | None
    schema_quoted: bool
    name: str
    name_quoted: bool

    def matches(self, candidate: QualifiedName) -> bool:
        if self.schema is not None and not _same(self.schema, self.schema_quoted, candidate.schema):
            return False
        return _same(self.name, self.name_quoted, candidate.name)

    def __str__(self) -> str:
        name = quote_part(self.name) if self.name_quoted else self.name
        if self.schema is None:
            return name
        return f"{quote_part(self.schema) if self.schema_quoted else self.schema}.{name}"


def _same(typed: str, quoted: bool, actual: str) -> bool:
    return typed == actual if quoted else typed.lower() == actual.lower()


def parse_name_list(text: str, what: str = "table") -> list[NameRef]:
    """`a, s.b, "My Table", "odd;schema"."x""y"` -> name references; raise UsageError on anything else."""
    refs: list[NameRef] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t":
            pos += 1
        parts: list[tuple[str, bool]] = []
        while True:
            part, quoted, pos = _read_part(text, pos, what)
            parts.append((part, quoted))
            if pos < n and text[pos] == ".":
                pos += 1
                continue
            break
        if len(parts) > 2:
            raise UsageError(f"{_show(text)}: a {what} is `name` or `schema.name`, not {len(parts)} dotted parts")
        if len(parts) == 2:
            refs.append(NameRef(parts[0][0], parts[0][1], parts[1][0], parts[1][1]))
        else:
            refs.append(NameRef(None, False, parts[0][0], parts[0][1]))
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return refs
        if text[pos] != ",":
            raise UsageError(f"{_show(text)} is not a {what} name or list: expected `,` between names at character "
                             f'{pos + 1}; quote names with odd characters, like "my table"')
        pos += 1


def read_quoted(text: str, pos: int) -> tuple[str, int] | None:
    """The double-quoted name that starts at text[pos] (`""` is a quote), and the index after its closing
    quote; None when it is not closed. The one reader of SQL's quoted-identifier syntax."""
    out, i = [], pos + 1
    while i < len(text):
        if text[i] == '"':
            if i + 1 < len(text) and text[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    return None


def _read_part(text: str, pos: int, what: str) -> tuple[str, bool, int]:
    if pos < len(text) and text[pos] == '"':
        quoted = read_quoted(text, pos)
        if quoted is None:
            raise UsageError(f"{_show(text)}: a quoted {what} name is not closed")
        _check_identifier(quoted[0], what)
        return quoted[0], True, quoted[1]
    m = _UNQUOTED_INPUT.match(text, pos)
    if not m:
        raise UsageError(f"{_show(text)} is not a {what} name (letters, digits, _ or $, optionally schema.name; "
                         'quote other names, like "my table")')
    _check_identifier(m.group(0), what)
    return m.group(0), False, m.end()


def _check_identifier(name: str, what: str) -> None:
    if not name:
        raise UsageError(f"an empty {what} name is not allowed")
    if "\x00" in name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise UsageError(f"{_show(name)} is not a valid {what} name (at most {MAX_IDENTIFIER_BYTES} bytes)")


def parse_key(key: str) -> QualifiedName:
    """The inverse of `QualifiedName.key`."""
    refs = parse_name_list(key)
    if len(refs) != 1 or refs[0].schema is None:
        raise ValueError(f"not a qualified name key: {key!r}")
    return QualifiedName(refs[0].schema, refs[0].name)


def resolve_names(candidates: list[QualifiedName], wanted: list[NameRef], where: str) -> list[QualifiedName]:
    """Map typed names to exact catalog names; a bare name found in several schemas prefers public."""
    resolved = []
    for ref in wanted:
        matches = [c for c in candidates if ref.matches(c)]
        if len(matches) > 1 and ref.schema is None:
            public = [m for m in matches if m.schema == "public"]
            if len(public) != 1:
                schemas = ", ".join(quote_part(m.schema) for m in matches)
                raise UsageError(f"table {_show(str(ref))} exists in several schemas ({schemas}); write schema.table")
            matches = public
        if len(matches) > 1:
            raise UsageError(f"{_show(str(ref))} matches several tables ({', '.join(m.key for m in matches)}); "
                             "quote the name to match its case exactly")
        if not matches:
            raise UsageError(f"no table {_show(str(ref))} in {where}")
        if matches[0] not in resolved:
            resolved.append(matches[0])
    return resolved


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")
