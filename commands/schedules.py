"""What the scheduler runs: scheduled backups, retention, drills, digests, the RPO dead-man check.

Each job is a plain function of (services, reply, ...) that reads the time from services.clock,
so tests call them directly with an injected clock; bot/scheduler.py only decides when.
Every run is recorded, and a failed run posts to channels.alerts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from commands.backup.command import BackupRequest, execute_backup
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply
from commands.errors import BackupbotError, ConfigError
from commands.health.command import health_settings
from commands.incident.audit import record_event
from commands.pg.dump import FORMATS
from commands.units import human_bytes, human_duration
from state import health as health_state
from state.backups import list_backups
from state.jobs import recent_jobs
from state.store import iso

log = logging.getLogger(__name__)

SCHEDULER = Actor(user="scheduler")
PER_DATABASE_JOBS = ("retention", "drill")
GLOBAL_JOBS = ("digest",)


@dataclass(frozen=True)
class ScheduledJob:
    name: str  # e.g. "backup main", "backup_weekly main", "retention main", "digest"
    cron: str
    kind: str  # backup | retention | drill | digest
    database: str | None = None
    format: str = "custom"
    schema_only: bool = False


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


def scheduled_jobs(services: Services) -> list[ScheduledJob]:
    """Read [schedules]: `digest = CRON` and, per database, `[schedules.DB] backup* = CRON or {cron, format}`,
    `retention = CRON`, `drill = CRON`."""
    raw = services.settings.schedules or {}
    jobs = []
    for key, value in raw.items():
        if isinstance(value, dict):
            database = services.settings.database(key).name if key in services.settings.databases else None
            if database is None:
                raise ConfigError(f"schedules.{key}: no database {key!r} is configured")
            for job_key, spec in value.items():
                jobs.append(_job(f"schedules.{key}.{job_key}", job_key, spec, database))
        elif key in GLOBAL_JOBS:
            jobs.append(_job(f"schedules.{key}", key, value, None))
        else:
            raise ConfigError(f"schedules.{key}: unknown key (use digest = CRON, or a [schedules.DB] table)")
    return jobs


def _job(path: str, key: str, spec, database: str | None) -> ScheduledJob:
    options = spec if isinstance(spec, dict) else {"cron": spec}
    cron = options.get("cron")
    if not isinstance(cron, str):
        raise ConfigError(f"{path}: expected a cron expression like \"0 2 * * *\" or {{cron = ..., format = ...}}")
    try:
        cron_trigger(cron)
    except ValueError as exc:
        raise ConfigError(f"{path}: {cron!r} is not a cron expression ({exc})") from None
    if key.startswith("backup"):
        unknown = set(options) - {"cron", "format", "schema_only"}
        if unknown:
            raise ConfigError(f"{path}.{sorted(unknown)[0]}: unknown key (known: cron, format, schema_only)")
        fmt = options.get("format", "custom")
        if fmt not in FORMATS:
            raise ConfigError(f"{path}.format: {fmt!r} is not custom, plain or gzip")
        return ScheduledJob(f"{key} {database}", cron, "backup", database, fmt, bool(options.get("schema_only", False)))
    if key in PER_DATABASE_JOBS and database or key in GLOBAL_JOBS and database is None:
        return ScheduledJob(f"{key} {database}" if database else key, cron, key, database)
    raise ConfigError(f"{path}: unknown schedule (backup…, retention, drill per database; digest globally)")


def run_scheduled(services: Services, reply: Reply, job: ScheduledJob) -> str:
    """Run one scheduled job now, record the run, alert on failure; returns 'succeeded' or 'failed'."""
    started = iso(services.clock())
    run_id = health_state.start_run(services.store, job.name, job.database, started)
    try:
        problem = JOB_BODIES[job.kind](services, reply, job)
    except BackupbotError as exc:
        problem = str(exc)
    except Exception as exc:
        log.exception("scheduled job %s failed", job.name)
        problem = f"{type(exc).__name__}: {exc}"
    status = "failed" if problem else "succeeded"
    health_state.finish_run(services.store, run_id, iso(services.clock()), status, problem)
    if problem:
        alert(services, reply, f":rotating_light: Scheduled {job.name} failed: {problem}")
    return status


def alert(services: Services, reply: Reply, text: str, database: str | None = None) -> None:
    channel = services.settings.channels.alerts
    if channel:
        reply.post(Notice(text), channel=channel)
    else:
        log.warning("no [channels] alerts configured: %s", text)
    record_event(services, "health.alert", database=database, text=text)


def _backup(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    channel = services.settings.channels.digest or services.settings.channels.alerts
    actor = Actor(user=SCHEDULER.user, channel=channel)
    status = execute_backup(services, BackupRequest(database=job.database, format=job.format, schema_only=job.schema_only,
                                                    kind="scheduled"), actor, _ChannelReply(reply, channel))
    if status.state != "succeeded":
        return f"backup #{status.job_id} failed: {status.error}"
    from commands.chat.reply import ping_heartbeat  # an outside monitor notices when these pings stop

    ping_heartbeat(services.settings.database(job.database).heartbeat_url, services.secrets())
    return None


def _retention(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    from commands.backup.prune import prune

    report = prune(services, job.database, dry_run=False)
    if report.blocked:
        return f"retention of {job.database} deleted nothing: {report.blocked}"
    if report.errors:
        return "; ".join(report.errors)
    return None


def _drill(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    from commands.restore.drill import run_drill

    result = run_drill(services, "latest", job.database, SCHEDULER)
    channel = services.settings.channels.digest or services.settings.channels.alerts
    if channel:
        reply.post(result, channel=channel)
    return None if result.ok else result.text()


def _digest(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    digest = build_digest(services)
    channel = services.settings.channels.digest
    if not channel:
        return "no [channels] digest is configured"
    reply.post(digest, channel=channel)
    return None


JOB_BODIES: Mapping[str, Callable] = {"backup": _backup, "retention": _retention, "drill": _drill, "digest": _digest}


class _ChannelReply:
    """Post a scheduled job's messages in a fixed channel (it has no invoking user)."""

    def __init__(self, reply: Reply, channel: str | None):
        self.reply, self.channel = reply, channel

    def post(self, message, channel=None):
        return self.reply.post(message, channel=channel or self.channel) if (channel or self.channel) else None

    def update(self, message_id, message):
        self.reply.update(message_id, message)

    def ephemeral(self, message):
        log.info("scheduled job: %s", message.text()[:200])

    def thread(self, message_id, message):
        return self.reply.thread(message_id, message)

    def react(self, message_id, emoji):
        self.reply.react(message_id, emoji)


# ---------------------------------------------------------------- the RPO dead-man alert


def check_rpo(services: Services, reply: Reply) -> list[str]:
    """Post once when a database breaches its RPO, once when it recovers. Run every minute."""
    rpo = timedelta(hours=health_settings(services)["rpo_hours"])
    now = services.clock()
    posted = []
    for database in services.settings.databases:
        backups = [r for r in list_backups(services.store, database) if r.is_full]
        last = datetime.fromisoformat(backups[0].created_at) if backups else None
        breached = last is None or now - last > rpo
        if health_state.set_alert(services.store, f"rpo:{database}", breached, iso(now)):
            if breached:
                since = f"the last one was {human_duration((now - last).total_seconds())} ago" if last else "there is none"
                text = (f":rotating_light: {database} has no successful backup within its RPO of "
                        f"{human_duration(rpo.total_seconds())}: {since}.")
            else:
                text = (f":white_check_mark: {database} is within its RPO again: "
                        f"backup #{backups[0].id} at {backups[0].created_at}.")
            alert(services, reply, text, database)
            posted.append(text)
    return posted


# ---------------------------------------------------------------- the digest


@dataclass(frozen=True)
class Digest:
    lines: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.lines)


def build_digest(services: Services) -> Digest:
    from commands.health.command import check_database, copies_lines, production_copies

    now = services.clock()
    previous = [r for r in health_state.runs(services.store, job="digest") if r["status"] == "succeeded"]
    since = previous[-1]["started_at"] if previous else iso(now - timedelta(days=1))
    rpo = timedelta(hours=health_settings(services)["rpo_hours"])
    lines = [f"*backupbot digest* {iso(now)}"]
    for database in services.settings.databases:
        report = check_database(services, database)
        day_ago = health_state.size_at_or_before(services.store, database, iso(now - timedelta(days=1)))
        growth = (f", {((report.size_bytes - day_ago) / day_ago * 100):+.1f}% in 24 h"
                  if report.size_bytes and day_ago else "")
        backups = [r for r in list_backups(services.store, database) if r.is_full]
        recent = [r for r in backups if datetime.fromisoformat(r.created_at) >= now - timedelta(days=1)]
        verified = [r for r in backups if r.verification == "verified" and r.verified_at]
        drill = max(verified, key=lambda r: r.verified_at) if verified else None
        last = backups[0] if backups else None
        rpo_ok = last is not None and now - datetime.fromisoformat(last.created_at) <= rpo
        failures = [j for j in recent_jobs(services.store, database, limit=200) if j.status in ("failed", "interrupted")
                    and j.started_at >= since]
        failures += [r for r in health_state.runs(services.store, database=database, since=since) if r["status"] == "failed"]
        lines += [
            f"*{database}*: {report.status.upper()} · size {human_bytes(report.size_bytes)}{growth}",
            f"  backups in the last 24 h: {len(recent)}" + (f" (latest #{last.id})" if last else ""),
            "  last verified drill: " + (f"backup #{drill.id} at {drill.verified_at}, RTO {human_duration(drill.restore_seconds)}"
                                         if drill else "none"),
            f"  RPO {human_duration(rpo.total_seconds())}: " + ("ok" if rpo_ok else "BREACHED"),
            f"  failures since the previous digest: {len(failures)}",
        ]
        lines += copies_lines(production_copies(services, database), indent="  ")  # until they are dropped
    return Digest(tuple(lines))
