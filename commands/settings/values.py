"""The readers every section's parser shares: one for each kind of value.

Each takes the table, where it sits (`access`, `databases.main.pgbackrest`) and the key, and raises a
ConfigError that names the full key (`access.required_approvals: expected a whole number >= 1, got 0`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from commands.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")  # a database's or a target's name
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable's name


def expected(full_key: str, what: str, value: object) -> ConfigError:
    return ConfigError(f"{full_key}: expected {what}, got {value!r}")


def section(raw: Mapping, key: str) -> dict:
    """The table `[key]` of `raw`, {} when it is not there."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table [{key}], got {type(value).__name__}")
    return value


def known_keys(table: Mapping, where: str, known: Iterable[str], note: str = "") -> None:
    """Refuse the first (sorted) key of `table` that is not `known`; the message lists them in the order given."""
    known = tuple(known)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(known)}){note}")


def named_tables(raw: Mapping, where: str, kind: str) -> Iterator[tuple[str, dict]]:
    """`[where.NAME]` tables, each NAME checked as a name (a database's, a target's)."""
    for name, table in raw.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"{where}.{name}: a {kind} name is letters, digits, _ or - (max 63)")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.{name}: expected a table [{where}.{name}]")
        yield name, table


def string(table: Mapping, where: str, key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise expected(f"{where}.{key}", "a non-empty string", value)
    return value


def boolean(table: Mapping, where: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise expected(f"{where}.{key}", "true or false", value)
    return value


def whole_number(table: Mapping, where: str, key: str, default: int, low: int = 1, high: int | None = None,
                 what: str | None = None) -> int:
    """An int (not a bool) from `low` to `high` (no upper bound when None)."""
    what = what or (f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}")
    return _number(table, where, key, default, int, low, high, False, what)


def number(table: Mapping, where: str, key: str, default: float | None, low: float = 0, high: float | None = None,
           above: bool = False, what: str | None = None) -> float:
    """An int or float (not a bool) >= `low` (> `low` when `above`), <= `high` when given; returned as written."""
    return _number(table, where, key, default, int | float, low, high, above, what or f"a number >= {low}")


def _number(table: Mapping, where: str, key: str, default, kind, low, high, above: bool, what: str):
    value = table.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise expected(f"{where}.{key}", what, value)
    too_low = not value > low if above else value < low
    if too_low or high is not None and value > high:
        raise expected(f"{where}.{key}", what, value)
    return value


def id_list(table: Mapping, where: str, key: str, pattern: re.Pattern, plural: str, one: str) -> tuple[str, ...]:
    """A list of strings that each match `pattern` (Slack IDs, OS user names), `[]` when not given."""
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}: expected a list of {plural}")
    for v in value:
        if not pattern.match(v):
            raise ConfigError(f"{where}.{key}: {v!r} is not {one}")
    return tuple(value)


def http_url(table: Mapping, where: str, key: str, secret: bool = True) -> str | None:
    """An http(s) URL or None. A secret URL (it may hold a token) is never echoed in the message."""
    value = string(table, where, key, None)
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.{key}: expected an http(s) URL" + ("" if secret else f", got {value!r}"))
    return value


def env_name(value: object, full_key: str, what: str) -> str:
    """The name of an environment variable (the value it holds is read by the caller)."""
    if not isinstance(value, str) or not ENV_RE.match(value):
        raise expected(full_key, what, value)
    return value


def accepted(value: str, full_key: str, check: Callable[[str], object], errors: type[Exception] | tuple,
             says: str = "{error}") -> str:
    """`value` once `check(value)` raises none of `errors`; else a ConfigError naming the key and saying why.

    `says` is formatted with the value and the error: "{value!r} is not a cron expression ({error})".
    """
    try:
        check(value)
    except errors as exc:
        raise ConfigError(f"{full_key}: " + says.format(value=value, error=exc)) from None
    return value
