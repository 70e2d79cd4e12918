"""What the scheduler runs: scheduled backups, retention, drills, digests, the RPO dead-man check.

Each job is a plain function of (services, reply, ...) that reads the time from services.clock,
so tests call them directly with an injected clock; bot/scheduler.py only decides when.
Every run is recorded, and a failed run posts to channels.alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from commands.backup.command import BackupRequest, execute_backup
from commands.backup.holds import ceiling_lines, hold_labels
from commands.backup.physical import PhysicalBackupRequest, execute_physical_backup
from commands.backup.prune import prune
from commands.backup.retention import ceiling_warnings
from commands.backup.state_copy import copy_now as copy_state_now
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply, ping_heartbeat
from commands.errors import BackupbotError
from commands.health.command import check_database, copies_lines, production_copies
from commands.incident.alarms import clear_alarm, raise_alarm
from commands.incident.audit import record_event
from commands.pg.pgbackrest.archiver import archiver_status
from commands.redact import redact
from commands.restore.drill import run_drill
from commands.restore.rehearsal import digest_line as rehearsal_digest_line
from commands.restore.rehearsal import first_failure, run_rehearsal
from commands.settings.schedules import ScheduledJob, cron_trigger
from commands.units import human_bytes, human_duration
from state import health as health_state
from state.backups import list_backups
from state.jobs import recent_jobs
from state.statuses import JobStatus, Verification
from state.store import iso

log = logging.getLogger(__name__)

SCHEDULER = Actor(user="scheduler")
# ScheduledJob and cron_trigger live with the [schedules] parsing (kernel); bot/scheduler.py takes them from here.
__all__ = ["SCHEDULER", "Digest", "ScheduledJob", "alert", "build_digest", "check_rpo", "cron_trigger", "run_scheduled",
           "scheduled_jobs"]


def scheduled_jobs(services: Services) -> list[ScheduledJob]:
    """The [schedules] jobs, parsed and checked when the config loaded."""
    return list(services.settings.schedules)


def run_scheduled(services: Services, reply: Reply, job: ScheduledJob) -> JobStatus:
    """Run one scheduled job now, record the run, alert on failure; returns the run's JobStatus."""
    started = iso(services.clock())
    run_id = health_state.start_run(services.store, job.name, job.database, started)
    try:
        problem = JOB_BODIES[job.kind](services, reply, job)
    except BackupbotError as exc:
        problem = str(exc)
    except Exception as exc:
        log.exception("scheduled job %s failed", job.name)
        problem = f"{type(exc).__name__}: {exc}"
    status = JobStatus.FAILED if problem else JobStatus.SUCCEEDED
    health_state.finish_run(services.store, run_id, iso(services.clock()), status, problem)
    if job.kind in ALARMING:  # a failed backup or drill opens (or adds to) the database's alert incident
        key = f"scheduled:{job.name}"
        if problem:
            health_state.set_alert(services.store, key, True, iso(services.clock()))
            if job.kind not in RAISES_ITS_OWN_ALARM:
                raise_alarm(services, reply, job.database, f"scheduled {job.name} failed",
                            text=f":rotating_light: Scheduled {job.name} failed: {problem}",
                            evidence={"alarm": key, "schedule": job.name, "run_id": run_id, "error": problem})
        elif health_state.set_alert(services.store, key, False, iso(services.clock())):
            clear_alarm(services, reply, job.database, f":white_check_mark: Scheduled {job.name} succeeded again.",
                        evidence={"alarm": key, "run_id": run_id})
    elif problem:
        alert(services, reply, f":rotating_light: Scheduled {job.name} failed: {problem}")
    return status


ALARMING = frozenset({"backup", "physical", "drill", "rehearsal"})
RAISES_ITS_OWN_ALARM = frozenset({"rehearsal"})  # its posted result names the incident the alarm opened


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
    if status.state != JobStatus.SUCCEEDED:
        return f"backup #{status.job_id} failed: {status.error}"
    # an outside monitor notices when these pings stop
    ping_heartbeat(services.settings.database(job.database).heartbeat_url, services.secrets())
    return None


def _physical(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    """`[schedules.DB] physical = CRON` or `{ cron, type }`: a pgBackRest backup, posted like a scheduled dump."""
    channel = services.settings.channels.digest or services.settings.channels.alerts
    actor = Actor(user=SCHEDULER.user, channel=channel)
    status = execute_physical_backup(services, PhysicalBackupRequest(database=job.database, type=job.backup_type,
                                                                     kind="scheduled"), actor, _ChannelReply(reply, channel))
    if status.state != JobStatus.SUCCEEDED:
        return f"physical backup #{status.job_id} failed: {status.error}"
    return None


def _retention(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    report = prune(services, job.database, dry_run=False)
    if report.blocked:
        gone = [d for d in report.decisions if not d.keep]
        return (f"retention of {job.database} deleted "
                + (f"only the {len(gone)} backup(s) past max_age_days" if gone else "nothing") + f": {report.blocked}")
    if report.errors:
        return "; ".join(report.errors)
    return None


def _drill(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    result = run_drill(services, "latest", job.database, SCHEDULER)
    channel = services.settings.channels.digest or services.settings.channels.alerts
    if channel:
        reply.post(result, channel=channel)
    return None if result.ok else result.text()


def _rehearsal(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    """`[schedules.DB] rehearsal = CRON`: a DR rehearsal on a new server; a failed one opens an incident."""
    result = run_rehearsal(services, job.database, job.target, SCHEDULER)
    if not result.ok:
        alarm = raise_alarm(services, reply, job.database, "DR rehearsal failed",
                            text=f":rotating_light: DR rehearsal of {job.database} failed: {first_failure(result)}",
                            evidence={"alarm": f"scheduled:{job.name}", "schedule": job.name,
                                      "error": first_failure(result)})
        result = replace(result, incident_id=alarm.incident_id)
    channel = services.settings.channels.digest or services.settings.channels.alerts
    if channel:
        reply.post(result, channel=channel)
    return None if result.ok else f"DR rehearsal of {job.database}: {first_failure(result)}"


def _digest(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    digest = build_digest(services)
    channel = services.settings.channels.digest
    if not channel:
        return "no [channels] digest is configured"
    reply.post(digest, channel=channel)
    return None


def _state_copy(services: Services, reply: Reply, job: ScheduledJob) -> str | None:
    copy = copy_state_now(services)  # raises when storage refuses: the run is failed and alerted
    if copy is not None:
        log.info("%s", copy.text())
    return None


JOB_BODIES: Mapping[str, Callable] = {"backup": _backup, "physical": _physical, "retention": _retention, "drill": _drill,
                                      "digest": _digest, "state_copy": _state_copy, "rehearsal": _rehearsal}


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
    rpo = timedelta(hours=services.settings.health.rpo_hours)
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
            if fire(services, reply, f"rpo:{database}", breached, text, database, now, problem="RPO breached"):
                posted.append(text)
        if services.settings.database(database).pgbackrest is not None:
            posted += check_archiving(services, reply, database, now)
        posted += check_ceiling(services, reply, database, now)
    return posted


def check_ceiling(services: Services, reply: Reply, database: str, now: datetime) -> list[str]:
    """Days before a backup with nothing newer to replace it reaches max_age_days, alert once and open an
    incident: at the ceiling it is deleted unless a legal hold names it. The alarm clears when it is
    replaced, held or gone."""
    rules = services.settings.retention_for(database)
    records = list_backups(services.store, database)
    warned = {record.id: (record, due) for record, due in
              ceiling_warnings(records, rules, now, hold_labels(services, database))}
    posted = []
    for backup_id, (record, due) in warned.items():
        key = f"ceiling:{database}:{backup_id}"
        if not health_state.set_alert(services.store, key, True, iso(now)):
            continue
        text = (f":rotating_light: {database}: backup #{backup_id} ({record.created_at}, {record.verification}) reaches "
                f"the {rules.max_age_days}-day ceiling at {iso(due)} (in {human_duration((due - now).total_seconds())}) "
                "with nothing newer to replace it; it is deleted then unless a legal hold names it: "
                f"`/backup keep {backup_id} --reason TEXT`.")
        if fire(services, reply, key, True, text, database, now, problem=f"backup #{backup_id} reaches the ceiling"):
            posted.append(text)
    for key in health_state.firing_keys(services.store, f"ceiling:{database}:"):
        backup_id = int(key.rsplit(":", 1)[1])
        if backup_id in warned or not health_state.set_alert(services.store, key, False, iso(now)):
            continue
        text = f":white_check_mark: {database}: backup #{backup_id} is no longer about to reach the ceiling unreplaced."
        if fire(services, reply, key, False, text, database, now):
            posted.append(text)
    return posted


def check_archiving(services: Services, reply: Reply, database: str, now: datetime) -> list[str]:
    """For an archived database the real RPO is the last archived WAL segment's age: alert once when
    archiving stops or fails (the dumps may be fine), once when it is back."""
    limit = services.settings.health.archive_rpo_minutes * 60
    try:
        status = archiver_status(services.settings.database(database).require_url(), connect_timeout=10)
        problem = ("WAL archiving is off" if not status.archiving else
                   "WAL archiving is failing (the newest attempt failed)" if status.failing else
                   f"no WAL segment archived for {human_duration(status.rpo_seconds)}"
                   if status.rpo_seconds is not None and status.rpo_seconds > limit else None)
    except BackupbotError as exc:
        problem = f"archiving cannot be checked: {redact(str(exc), services.secrets())}"
    if not health_state.set_alert(services.store, f"archive:{database}", problem is not None, iso(now)):
        return []
    text = (f":rotating_light: {database}: {problem}; point-in-time recovery loses everything after the last "
            f"archived segment (limit {human_duration(limit)})" if problem else
            f":white_check_mark: {database}: WAL archiving is back within {human_duration(limit)}.")
    return [text] if fire(services, reply, f"archive:{database}", problem is not None, text, database, now,
                          problem=problem) else []


def fire(services: Services, reply: Reply, key: str, firing: bool, text: str, database: str, now: datetime,
         problem: str | None = None) -> bool:
    """Raise (or clear) an alarm whose state already changed; when it cannot be posted, put the state back
    so the next minute's check tries again (an alert is never lost to one failed post)."""
    try:
        if firing:
            raise_alarm(services, reply, database, problem or key, text=text,
                        evidence={"alarm": key, "since": iso(now), "alert": text})
        else:
            clear_alarm(services, reply, database, text, evidence={"alarm": key, "at": iso(now)})
        return True
    except Exception:
        log.exception("could not post the %s alert; it is tried again at the next check", key)
        health_state.set_alert(services.store, key, not firing, iso(now))
        return False


# ---------------------------------------------------------------- the digest


@dataclass(frozen=True)
class Digest:
    lines: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.lines)


def build_digest(services: Services) -> Digest:
    now = services.clock()
    previous = [r for r in health_state.runs(services.store, job="digest") if r["status"] == JobStatus.SUCCEEDED]
    since = previous[-1]["started_at"] if previous else iso(now - timedelta(days=1))
    rpo = timedelta(hours=services.settings.health.rpo_hours)
    lines = [f"*backupbot digest* {iso(now)}"]
    for database in services.settings.databases:
        report = check_database(services, database)
        day_ago = health_state.size_at_or_before(services.store, database, iso(now - timedelta(days=1)))
        growth = (f", {((report.size_bytes - day_ago) / day_ago * 100):+.1f}% in 24 h"
                  if report.size_bytes and day_ago else "")
        backups = [r for r in list_backups(services.store, database) if r.is_full]
        recent = [r for r in backups if datetime.fromisoformat(r.created_at) >= now - timedelta(days=1)]
        verified = [r for r in backups if r.verification == Verification.VERIFIED and r.verified_at]
        drill = max(verified, key=lambda r: r.verified_at) if verified else None
        last = backups[0] if backups else None
        rpo_ok = last is not None and now - datetime.fromisoformat(last.created_at) <= rpo
        failures = [j for j in recent_jobs(services.store, database, limit=200)
                    if j.status in (JobStatus.FAILED, JobStatus.INTERRUPTED) and j.started_at >= since]
        failures += [r for r in health_state.runs(services.store, database=database, since=since)
                     if r["status"] == JobStatus.FAILED]
        lines += [
            f"*{database}*: {report.status.upper()} · size {human_bytes(report.size_bytes)}{growth}",
            f"  backups in the last 24 h: {len(recent)}" + (f" (latest #{last.id})" if last else ""),
            "  last verified drill: " + (f"backup #{drill.id} at {drill.verified_at}, RTO {human_duration(drill.restore_seconds)}"
                                         if drill else "none"),
            f"  RPO {human_duration(rpo.total_seconds())}: " + ("ok" if rpo_ok else "BREACHED"),
            f"  failures since the previous digest: {len(failures)}",
        ]
        lines += [line for line in [rehearsal_digest_line(services, database)] if line]
        lines += copies_lines(production_copies(services, database), indent="  ")  # until they are dropped
        lines += ceiling_lines(services, database, now)  # legal holds, and what the ceiling deletes next
        if services.settings.database(database).pgbackrest is not None:
            lines.append(f"  WAL archiving (the real RPO): {archiving_text(services, database)}")
    return Digest(tuple(lines))


def archiving_text(services: Services, database: str) -> str:
    try:
        status = archiver_status(services.settings.database(database).require_url(), connect_timeout=10)
    except BackupbotError as exc:
        return f"cannot be checked ({redact(str(exc), services.secrets())[:200]})"
    if not status.archiving:
        return "OFF"
    if status.rpo_seconds is None:
        return "nothing archived yet"
    return (f"last segment archived {human_duration(status.rpo_seconds)} ago"
            + (f", {status.failed_count} failure(s), FAILING now" if status.failing else ""))
