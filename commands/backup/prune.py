"""/backup prune: apply retention to the catalog and storage, or show what it would do.

While the latest scheduled backup fails, only what is past the max_age_days ceiling is deleted (and
the report says the rest is kept for that reason): the ceiling is a legal one, a legal hold
(commands/backup/holds.py) is the only thing that passes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from commands.backup.holds import ceiling_lines, hold_labels
from commands.backup.physical import retention_lines
from commands.backup.retention import Decision, decide
from commands.chat.access import OPERATOR
from commands.chat.args import parse_args
from commands.chat.context import Actor, Services
from commands.chat.reply import Reply
from commands.errors import BackupbotError, UsageError
from commands.incident.audit import record_event
from state.backups import list_backups, mark_pruned
from state.jobs import recent_jobs
from state.statuses import JobStatus
from state.store import iso

log = logging.getLogger(__name__)

USAGE = "Usage: `/backup prune [DB] [--dry-run]`"


@dataclass(frozen=True)
class PruneRequest:
    database: str
    dry_run: bool = False
    permission = OPERATOR


def parse_prune(text: str, services: Services) -> PruneRequest:
    args = parse_args(text, {"--dry-run": "bool"}, USAGE)
    if len(args.words) > 1:
        raise UsageError(f"too many words\n{USAGE}")
    database = services.settings.database(args.words[0]).name if args.words else services.settings.default_database
    return PruneRequest(database, bool(args.flags.get("--dry-run")))


@dataclass(frozen=True)
class PruneReport:
    database: str
    decisions: tuple[Decision, ...]
    dry_run: bool
    blocked: str | None = None
    errors: tuple[str, ...] = ()
    physical: tuple[str, ...] = ()  # pgBackRest's own retention, reported by --dry-run
    ceiling: tuple[str, ...] = ()  # legal holds and what the ceiling deletes next, reported by --dry-run

    def text(self) -> str:
        goes = [d for d in self.decisions if not d.keep]
        stays = [d for d in self.decisions if d.keep]
        verb = "would delete" if self.dry_run else "deleted"
        head = f"Retention for {self.database}: {verb} {len(goes)}, keeps {len(stays)}" + (" (dry run)" if self.dry_run else "")
        lines = [head]
        if self.blocked:
            lines.append(f":warning: Only backups past max_age_days are deleted: {self.blocked}")
        lines += [f"  goes:  #{d.record.id} {d.record.created_at} — {'; '.join(d.reasons)}" for d in goes]
        lines += [f"  stays: #{d.record.id} {d.record.created_at} — {'; '.join(d.reasons)}" for d in stays]
        lines += [f"  error: {e}" for e in self.errors]
        lines += list(self.ceiling)
        lines += list(self.physical)
        return "\n".join(lines)


def latest_scheduled_failing(services: Services, database: str) -> bool:
    scheduled = [j for j in recent_jobs(services.store, database, limit=50)
                 if j.kind == "backup" and j.detail.get("kind") == "scheduled"]
    return bool(scheduled) and scheduled[0].status == JobStatus.FAILED


def prune(services: Services, database: str, dry_run: bool) -> PruneReport:
    rules = services.settings.retention_for(database)
    decisions = tuple(decide(list_backups(services.store, database), rules, services.clock(),
                             hold_labels(services, database)))
    blocked = None
    if latest_scheduled_failing(services, database):  # keep the rest while backups fail; the ceiling still holds
        blocked = "the latest scheduled backup of this database failed"
        decisions = tuple(d if d.keep or d.past_ceiling else
                          replace(d, keep=True, reasons=d.reasons + ("kept while the latest scheduled backup fails",))
                          for d in decisions)
    errors = []
    if not dry_run:
        for decision in decisions:
            if decision.keep:
                continue
            record = decision.record
            try:
                services.storage.delete(record.key)
                services.storage.delete(record.manifest_key)
                if record.globals_file:
                    services.storage.delete(record.globals_file["key"])
                mark_pruned(services.store, record.id, iso(services.clock()), "; ".join(decision.reasons))
            except BackupbotError as exc:
                errors.append(f"#{record.id}: {exc}")
    return PruneReport(database, decisions, dry_run, blocked=blocked, errors=tuple(errors))


def execute_prune(services: Services, request: PruneRequest, actor: Actor, reply: Reply) -> PruneReport:
    report = prune(services, request.database, request.dry_run)
    if request.dry_run:
        report = replace(report, physical=tuple(retention_lines(services, request.database)),
                         ceiling=tuple(ceiling_lines(services, request.database, services.clock())))
    reply.post(report)
    if not request.dry_run:
        record_event(services, "retention.pruned", database=request.database, actor=actor, text=report.text().splitlines()[0])
    return report


EXECUTORS = {PruneRequest: execute_prune}
