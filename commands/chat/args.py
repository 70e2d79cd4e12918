"""A small parser for command text: `words --flag value --switch`, with clear usage errors."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from commands.errors import UsageError

MAX_TEXT = 4000


@dataclass
class ParsedArgs:
    words: list[str] = field(default_factory=list)
    flags: dict[str, object] = field(default_factory=dict)


def parse_args(text: str, flags: dict[str, str], usage: str) -> ParsedArgs:
    """`flags` maps '--name' to 'bool', 'str', 'int' or 'rest' (every word up to the next flag).

    Accepts `--name value` and `--name=value`; Slack's smart quotes count as quotes.
    """
    if len(text) > MAX_TEXT:
        raise UsageError(f"the command is too long ({len(text)} characters, at most {MAX_TEXT})\n{usage}")
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    text = text.replace("\u2014", "--")  # Slack turns -- into an em dash on some clients
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the command: {exc}\n{usage}") from None
    parsed = ParsedArgs()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            name, eq, inline = token.partition("=")
            kind = flags.get(name)
            if kind is None:
                raise UsageError(f"unknown option {_show(name)}\n{usage}")
            if name in parsed.flags:
                raise UsageError(f"{name} given twice\n{usage}")
            if kind == "bool":
                if eq:
                    raise UsageError(f"{name} takes no value\n{usage}")
                parsed.flags[name] = True
            elif kind == "rest":
                words = [inline] if eq else []
                while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    i += 1
                    words.append(tokens[i])
                if not words or not " ".join(words).strip():
                    raise UsageError(f"{name} needs a value\n{usage}")
                parsed.flags[name] = " ".join(words)
            else:
                if eq:
                    value = inline
                elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    i += 1
                    value = tokens[i]
                else:
                    raise UsageError(f"{name} needs a value\n{usage}")
                if kind == "int":
                    try:
                        value = int(value)
                    except ValueError:
                        raise UsageError(f"{name} needs a whole number, got {_show(value)}\n{usage}") from None
                parsed.flags[name] = value
        elif token.startswith("-") and len(token) > 1:
            raise UsageError(f"unknown option {_show(token)}\n{usage}")
        else:
            parsed.words.append(token)
        i += 1
    return parsed


def _show(value: str) -> str:
    value = value if len(value) <= 40 else value[:40] + "…"
    return repr(value)


def int_in_range(value: int, name: str, low: int, high: int, usage: str) -> int:
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}\n{usage}")
    return value


_NUMBER = re.compile(r"[0-9]{1,18}")


def is_number(text: str) -> bool:
    """A backup or request number: ASCII digits that fit SQLite's integer (`"²".isdigit()` is True)."""
    return _NUMBER.fullmatch(text) is not None
