"""Logging with every record redacted: a DSN in an exception message must never reach a log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from commands.redact import redact

_SECRETS: list[str] = []


def register_secrets(values: list[str]) -> None:
    _SECRETS.extend(v for v in values if v and v not in _SECRETS)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), _SECRETS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time, level, logger, message, exception), each text redacted before encoding."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), _SECRETS),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), _SECRETS)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info), _SECRETS)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: int = logging.INFO, json_format: bool = False) -> None:
    handler = logging.StreamHandler()
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
