"""Logging with every record redacted: a DSN in an exception message must never reach a log.

A record logged with `extra={"fields": {...}}` (a job's start and end, an approval: commands/chat/run.py,
commands/restore/approvals.py) carries its fields as JSON keys in `--log-format json`, and as
`key=value` after the message in text, so an operator can filter on job_id, database or outcome.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from commands.redact import redact

_SECRETS: list[str] = []


def register_secrets(values: list[str]) -> None:
    _SECRETS.extend(v for v in values if v and v not in _SECRETS)


# Libraries that log every scheduler tick or HTTP connection at INFO: WARNING and above only.
QUIET_LOGGERS = ("apscheduler", "slack_bolt", "slack_sdk", "urllib3", "botocore", "boto3", "s3transfer", "waitress")


def _fields(record: logging.LogRecord) -> dict:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items() if value is not None)
        return redact(f"{text} [{fields}]" if fields else text, _SECRETS)


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
        for key, value in _fields(record).items():
            entry.setdefault(key, redact(value, _SECRETS) if isinstance(value, str) else value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), _SECRETS)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info), _SECRETS)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: int | str = logging.INFO, json_format: bool = False) -> None:
    handler = logging.StreamHandler()
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:  # unless the operator asked for DEBUG
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        # Bolt gives each logger it makes the root's level (slack_bolt.logger._configure_from_root):
        # back to inheriting from the quiet parent
        if isinstance(logger, logging.Logger) and name.startswith(tuple(f"{q}." for q in QUIET_LOGGERS)):
            logger.setLevel(logging.NOTSET)
