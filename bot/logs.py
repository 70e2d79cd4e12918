"""Logging with every record redacted: a DSN in an exception message must never reach a log."""

from __future__ import annotations

import logging

from commands.redact import redact

_SECRETS: list[str] = []


def register_secrets(values: list[str]) -> None:
    _SECRETS.extend(v for v in values if v and v not in _SECRETS)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), _SECRETS)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
