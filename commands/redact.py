"""Scrub credentials from any text before it reaches Slack, a log or the state database."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|PGPASSWORD|secret|token)\s*=\s*)(?P<val>'[^']*'|\"[^\"]*\"|\S+)", re.I
)
_SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove passwords in URLs and key=value pairs, Slack tokens, and any known secret value."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['key']}***", text)
    text = _SLACK_TOKEN.sub("xox*-***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, for showing a target without its credentials."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "(unparseable DSN)"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or '?'}"
