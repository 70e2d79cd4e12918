"""Point-in-time recovery on pgBackRest: `/restore --time T`, `/restore physical ID`, physical drills.

pgBackRest does the physical work; the bot plans, asks, runs, verifies and records. A restore goes
into a NEW data directory on a free port, so nothing is destroyed and approvers agree to a copy:
the running cluster is never touched. Replacing the live cluster is not something the bot does.
Before anyone is asked, the plan names the backup set and WAL range, and says whether the time
is reachable (after the end of some backup, and archived: WAL is switched on the live server; a
dry run writes nothing there, so it reads pg_stat_archiver and says what it could not know). The new
data directory is a job folder in the instance's private scratch (commands.pg.scratch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from commands.backup.catalog import resolve_backup
from commands.backup.physical import engine_config
from commands.backup.physical_seal import check_seal
from commands.chat.access import OPERATOR
from commands.chat.context import Actor, Services
from commands.errors import UsageError
from commands.pg import scratch
from commands.pg.cluster import free_port
from commands.pg.pgbackrest.archiver import time_reachable
from commands.pg.restore.databases import database_exists
from commands.pg.tools import with_dbname
from commands.redact import describe_dsn
from commands.restore.discards import after_time_lines
from commands.restore.plans import PointInTimePlan, plan_from_dict
from commands.restore.roles import plan_copy_roles, planned_roles, role_lines
from commands.restore.rules import check_point_in_time_target
from commands.restore.status import RequestMessage, request_message
from state import approvals as request_state
from state.backups import PHYSICAL, PhysicalBackupRecord
from state.physical_backups import get_physical_backup_by_label
from state.store import iso


def parse_time(text: str) -> datetime:
    """`2026-11-29 14:04:00+00`, `2026-11-29T14:04Z`: a moment with its time zone, never guessed."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise UsageError(f"{text[:40]!r} is not a time: write it like \"2026-11-29 14:04:00+00\"") from None
    if moment.tzinfo is None:
        raise UsageError(f"{text[:40]!r} has no time zone: write it like \"2026-11-29 14:04:00+00\"")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class PointInTimeRequest:
    database: str
    target_time: datetime | None = None  # None: the backup set's own consistent point
    backup: str | None = None  # a physical backup id, a pgBackRest label, or "latest"
    into: str | None = None  # a new database the restored data is copied into (then the copy goes)
    to: str | None = None  # the [targets.NAME] server of `into`
    dry_run: bool = False
    allow_privileged_roles: bool = False  # roles created for `into` may be privileged (commands.restore.roles)
    permission = OPERATOR


def find_physical_backup(services: Services, database: str, ref: str) -> PhysicalBackupRecord:
    """The physical backup `ref` (an id, a pgBackRest label or `latest`) names (commands.backup.catalog)."""
    return resolve_backup(services.store, database, ref, kind=PHYSICAL)


def build_pitr_plan(services: Services, request: PointInTimeRequest, actor: Actor) -> PointInTimePlan:
    cfg = engine_config(services.settings, request.database)
    dsn = services.settings.database(request.database).require_url()
    latest = None
    if request.target_time is not None:
        # a dry run only reads (pg_stat_archiver, pgbackrest info): no marker commit, no WAL switch
        reach = time_reachable(cfg, request.target_time, dsn=dsn, switch=not request.dry_run)
        if not reach.reachable:
            raise UsageError(f"{request.database} cannot be restored to {request.target_time.isoformat()}: {reach.reason}")
        chosen, reason, known = reach.backup, reach.reason, reach.known
        latest = reach.latest.isoformat() if reach.latest else None
        record = get_physical_backup_by_label(services.store, request.database, chosen.label)
        label, stopped, wal = chosen.label, chosen.stopped.isoformat(), chosen.wal_range
    else:
        record = find_physical_backup(services, request.database, request.backup or "latest")
        label, stopped, wal = record.label, record.stopped_at or record.created_at, record.wal_range
        reason, known = f"backup set {label} to its consistent point (end of the backup)", True
    into_target, roles = None, ()
    check_point_in_time_target(request.to, request.into)
    if request.into:
        server_dsn = services.settings.target(request.to).require_url() if request.to else dsn
        if database_exists(server_dsn, request.into):
            raise UsageError(f"{request.into} already exists: --into with --time copies the database at that moment "
                             "into a NEW database, so nothing is replaced")
        into_target = describe_dsn(with_dbname(server_dsn, request.into))
        roles = plan_copy_roles(dsn, server_dsn, request)
    # a repository changed since the bot sealed the set is refused before anyone is asked
    provenance = check_seal(services.settings.signing, cfg, request.database, label,
                            record.manifest_seal if record else None)
    scratch.check_reachable(services.settings, cfg.run_as())  # the restored cluster's owner must reach its folder
    datadir = scratch.job_path(services.settings, "pitr", request.database)
    return PointInTimePlan(
        database=request.database, stanza=cfg.stanza,
        target_time=request.target_time.isoformat() if request.target_time else None,
        backup_label=label, backup_stopped=stopped, wal_range=wal, reachable=reason, datadir=str(datadir),
        lock_key=f"{request.database}:pitr", requested_by=actor.user, requested_at=iso(services.clock()),
        backup_id=record.id if record else None, latest_archived=latest, port=free_port(),
        into=request.into, server=request.to, into_target=into_target, reach_known=known,
        roles=roles, allow_privileged_roles=request.allow_privileged_roles,
        discards=after_time_lines(services, request.database, dsn, request.target_time or stopped),
        provenance=provenance,
    )




@dataclass(frozen=True)
class PointInTimeMessage(RequestMessage):
    """The channel message of a point-in-time restore request."""

    succeeded_text = ":white_check_mark: RESTORED to a new cluster and verified"

    def text(self) -> str:
        p = self.plan
        to = f"to {p.target_time}" if p.target_time else f"to the end of backup set {p.backup_label}"
        status = self.status_line()
        lines = [
            f"*{self.title}* by <@{p.requested_by}>: point-in-time restore of {p.database} {to}",
            f"Backup set: {p.backup_label} (pgBackRest stanza {p.stanza}, ended {p.backup_stopped}) · WAL {p.wal_range}",
            *([p.provenance] if p.provenance else []),
            f"Reachable: {'yes' if p.reach_known else 'not known yet'}, {p.reachable}"
            + (f" · archived up to {p.latest_archived}" if p.latest_archived else ""),
            f"Restores into: {p.target} (127.0.0.1), promoted when recovery reaches the target",
            *([f"Then copies {p.database}'s database from it into the new database {p.into_target}"
               + (f" (target {p.server})" if p.server else "")
               + ", verifies it, and stops and removes the copy"] if p.into else []),
            *(role_lines(planned_roles(p.roles), p.allow_privileged_roles, f"{p.database}'s roles as they are now; "
                         "the copy may need no others") if p.into else []),
            *p.discards,
            f"The running cluster of {p.database} is not touched: nothing is replaced. Replacing it is a "
            "separate step the bot does not take.",
            status, *self.steps,
        ]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def pitr_message(services: Services, row: request_state.RestoreRequestRow, **overrides) -> PointInTimeMessage:
    return request_message(services, row, PointInTimeMessage, plan_from_dict(row.plan), **overrides)


# ---------------------------------------------------------------- running
