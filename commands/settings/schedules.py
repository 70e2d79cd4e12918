"""[schedules]: what runs when, parsed once when the config loads, and cron read as crontab(5) reads it.

```toml
[schedules]
digest = "0 9 * * *"
[schedules.main]
backup = "0 2 * * *"
backup_weekly = { cron = "0 3 * * 0", format = "plain" }
retention = "30 4 * * *"
drill = "0 5 * * 1"
rehearsal = "0 6 * * 0"          # or { cron = "0 6 * * 0", target = "dr" }: commands/restore/rehearsal.py
```
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from commands.errors import ConfigError
from commands.settings.values import accepted, known_keys

PER_DATABASE_JOBS = ("retention", "drill")
REHEARSAL = "rehearsal"  # a DR rehearsal on a fresh cluster: CRON or { cron, target = NAME }
GLOBAL_JOBS = ("digest", "state_copy")  # state_copy: the state database to storage (it also goes after every job)
BACKUP_FORMATS = ("custom", "plain", "gzip")  # the keys of commands.pg.dump.FORMATS (a test holds them equal)


@dataclass(frozen=True)
class ScheduledJob:
    name: str  # e.g. "backup main", "backup_weekly main", "retention main", "digest"
    cron: str
    kind: str  # backup | retention | drill | digest
    database: str | None = None
    format: str = "custom"
    schema_only: bool = False
    backup_type: str = "full"  # physical (pgBackRest) backups: full | diff | incr
    target: str | None = None  # a rehearsal's [targets.NAME] server; None: a fresh initdb cluster


MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NICKNAMES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# (name in messages, lowest, highest, names for lowest.. or None)
CRON_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day-of-week", 0, 7, DOW_NAMES),  # 0 and 7 are both Sunday
)
CRON_ELEMENT = re.compile(r"^(?:(?P<star>\*)|(?P<first>[0-9a-z]+)(?:-(?P<last>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?$",
                          re.IGNORECASE)


def cron_trigger(expression: str, timezone=None) -> BaseTrigger:
    """An APScheduler trigger that fires when crontab(5) would run `expression`.

    Read as Vixie cron/cronie read a crontab line: five fields (minute hour day-of-month month
    day-of-week) of lists of `*`, `N`, `N-M`, each with an optional `/STEP`; month and weekday names;
    weekday 0 and 7 are Sunday; `@yearly` … `@hourly`. When day-of-month and day-of-week are both
    restricted (neither starts with `*`), a day matching EITHER runs the job, as crontab does;
    otherwise both must match. APScheduler's own reading differs (weekdays from Monday, ANDed days),
    so every field is parsed here and handed over as explicit values. Anything else raises ValueError
    with what is wrong.
    """
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise ValueError(f"{text} is not supported (use {', '.join(sorted(NICKNAMES))} or five fields)")
        text = NICKNAMES[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    minute, hour, dom, month, dow = (_cron_field(field, spec) for field, spec in zip(fields, CRON_FIELDS, strict=True))
    dow = {day % 7 for day in dow}
    common = {"minute": _listed(minute, 0, 59), "hour": _listed(hour, 0, 23), "month": _listed(month, 1, 12),
              "timezone": timezone}
    days = _listed(dom, 1, 31)
    weekdays = "*" if dow == set(range(7)) else ",".join(DOW_NAMES[d] for d in sorted(dow))
    if fields[2].startswith("*") or fields[4].startswith("*"):
        return CronTrigger(day=days, day_of_week=weekdays, **common)
    return OrTrigger([CronTrigger(day=days, **common), CronTrigger(day_of_week=weekdays, **common)])


def _cron_field(text: str, spec: tuple) -> set[int]:
    name, low, high, names = spec
    values: set[int] = set()
    for element in text.split(","):
        match = CRON_ELEMENT.match(element)
        if not match:
            raise ValueError(f"{name} field {text!r}: {element!r} is not crontab syntax (*, N, N-M, */S, N-M/S, lists)")
        if match["star"]:
            first, last = low, high
        else:
            first = _cron_value(match["first"], spec)
            last = _cron_value(match["last"], spec) if match["last"] else None
            if last is None and match["step"]:
                raise ValueError(f"{name} field {text!r}: a step needs a range or * before it "
                                 f"(write {match['first']}-{high}/{match['step']})")
            last = first if last is None else last
            if last < first:
                hint = " (Sunday is 0 or 7: write 6-7 for Saturday to Sunday)" if name == "day-of-week" else ""
                raise ValueError(f"{name} field {text!r}: the range {element} runs backwards{hint}")
        step = int(match["step"]) if match["step"] else 1
        if step < 1:
            raise ValueError(f"{name} field {text!r}: a step must be at least 1")
        values.update(range(first, last + 1, step))
    return values


def _cron_value(token: str, spec: tuple) -> int:
    name, low, high, names = spec
    if token.isdigit():
        value = int(token)
        if not low <= value <= high:
            raise ValueError(f"{name} {value} is out of range ({low}-{high})")
        return value
    if names and token.lower() in names:
        return names.index(token.lower()) + (1 if name == "month" else 0)
    hint = f" (or {names[0]}…{names[-1]})" if names else ""
    raise ValueError(f"{name} {token!r} is not a number {low}-{high}{hint}")


def _listed(values: set[int], low: int, high: int) -> str:
    return "*" if values == set(range(low, high + 1)) else ",".join(str(v) for v in sorted(values))


def parse_schedules(raw: Mapping, databases: Iterable[str]) -> tuple[ScheduledJob, ...]:
    """Read [schedules]: `digest = CRON` and, per database, `[schedules.DB] backup* = CRON or {cron, format}`,
    `retention = CRON`, `drill = CRON`."""
    with_pgbackrest = {name for name, db in databases.items() if getattr(db, "pgbackrest", None)} \
        if isinstance(databases, Mapping) else None
    databases = list(databases)
    jobs = []
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in databases:
                raise ConfigError(f"schedules.{key}: no database {key!r} is configured")
            for job_key, spec in value.items():
                jobs.append(_job(f"schedules.{key}.{job_key}", job_key, spec, key))
                if jobs[-1].kind == "physical" and with_pgbackrest is not None and key not in with_pgbackrest:
                    raise ConfigError(f"schedules.{key}.{job_key}: databases.{key} has no pgbackrest = {{...}}, "
                                      "so it has no physical backups to schedule")
        elif key in GLOBAL_JOBS:
            jobs.append(_job(f"schedules.{key}", key, value, None))
        else:
            raise ConfigError(f"schedules.{key}: unknown key (use digest = CRON, or a [schedules.DB] table)")
    return tuple(jobs)


def _job(path: str, key: str, spec, database: str | None) -> ScheduledJob:
    options = spec if isinstance(spec, dict) else {"cron": spec}
    cron = options.get("cron")
    if not isinstance(cron, str):
        raise ConfigError(f"{path}: expected a cron expression like \"0 2 * * *\" or {{cron = ..., format = ...}}")
    accepted(cron, path, cron_trigger, ValueError, "{value!r} is not a cron expression ({error})")
    if key.startswith("backup"):
        known_keys(options, path, ("cron", "format", "schema_only"))
        fmt = options.get("format", "custom")
        if fmt not in BACKUP_FORMATS:
            raise ConfigError(f"{path}.format: {fmt!r} is not custom, plain or gzip")
        return ScheduledJob(f"{key} {database}", cron, "backup", database, fmt, bool(options.get("schema_only", False)))
    if key == REHEARSAL and database:
        known_keys(options, path, ("cron", "target"))
        target = options.get("target")
        if target is not None and not isinstance(target, str):
            raise ConfigError(f"{path}.target: expected the name of a [targets.NAME] server")
        return ScheduledJob(f"{key} {database}", cron, key, database, target=target)
    if key in PER_DATABASE_JOBS and database or key in GLOBAL_JOBS and database is None:
        return ScheduledJob(f"{key} {database}" if database else key, cron, key, database)
    if key.startswith("physical") and database:  # pgBackRest: physical = CRON or { cron, type = full|diff|incr }
        known_keys(options, path, ("cron", "type"))
        backup_type = options.get("type", "full")
        if backup_type not in ("full", "diff", "incr"):
            raise ConfigError(f"{path}.type: {backup_type!r} is not full, diff or incr")
        return ScheduledJob(f"{key} {database}", cron, "physical", database, backup_type=backup_type)
    raise ConfigError(f"{path}: unknown schedule (backup…, physical…, retention, drill, rehearsal per database; digest globally)")
