"""Restore drills: restore a backup into a scratch database, check it, drop it, post a receipt.

The checks: row counts and NOT VALID constraints against the manifest, pg_amcheck of every table and
B-tree index, and the operator's `smoke_sql` assertions (commands.restore.deep_verify). The receipt
names the RTO, the MB/s, each check and what was dropped. The scratch database's name carries a
random part so it cannot collide, its subscriptions are disabled and lose their slot right after the
restore (commands.pg.subscriptions: nothing reaches a publisher), and it is dropped in a `finally`,
so a failed drill leaves nothing behind either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from commands.backup.manifest import check_provenance
from commands.backup.state_copy import after_job
from commands.chat.access import OPERATOR
from commands.chat.args import is_number, parse_args
from commands.chat.context import Actor, Services
from commands.chat.job_slots import queued_text
from commands.chat.reply import Notice, Reply
from commands.chat.run import Run, error_text
from commands.errors import UsageError
from commands.incident.audit import record_event
from commands.pg.restore.artifact import fetch_artifact, scratch_dir
from commands.pg.restore.databases import create_database, drop_database
from commands.pg.restore.runner import run_restore
from commands.pg.subscriptions import drop_subscriptions_of, release_subscriptions
from commands.pg.tools import with_dbname
from commands.redact import redact
from commands.restore.deep_verify import deep_verify
from commands.restore.pitr import PhysicalDrillRequest, execute_physical_drill
from commands.restore.plan import find_backup
from commands.restore.rules import default_jobs, drill_database_name
from commands.restore.verify import Check, verify_restored
from commands.units import human_bytes, human_duration
from state.backups import set_verification
from state.statuses import Verification
from state.store import iso

USAGE = "Usage: `/backup verify BACKUP_ID|latest [DB]` or `/backup verify physical BACKUP_ID|LABEL|latest [DB]`"


@dataclass(frozen=True)
class VerifyRequest:
    backup: str
    database: str | None = None
    permission = OPERATOR


def parse_verify(text: str, services: Services) -> VerifyRequest | PhysicalDrillRequest:
    args = parse_args(text, {}, USAGE)
    if args.words and args.words[0].lower() == "physical":  # `/backup verify physical ID|LABEL|latest [DB]`
        if len(args.words) not in (2, 3):
            raise UsageError(USAGE)
        database = services.settings.database(args.words[2] if len(args.words) > 2 else
                                              services.settings.default_database).name
        return PhysicalDrillRequest(args.words[1].lstrip("#"), database)
    if not args.words or len(args.words) > 2:
        raise UsageError(USAGE)
    backup = args.words[0].lstrip("#").lower()
    if backup != "latest" and not is_number(backup):
        raise UsageError(f"{args.words[0]!r} is not a backup number or `latest`\n{USAGE}")
    database = services.settings.database(args.words[1]).name if len(args.words) > 1 else None
    return VerifyRequest(backup, database)


@dataclass(frozen=True)
class DrillResult:
    """A drill's receipt: what was restored how fast, each check it passed or failed, what it dropped."""

    backup_id: int
    database: str
    ok: bool
    seconds: float | None
    detail: str
    scratch: str
    drop_error: str | None = None  # why the scratch database could not be dropped; None once it is gone
    provenance: str = ""  # how the bot knew the backup was its own (commands/backup/manifest.py)
    size: int = 0  # the backup's bytes, for MB/s
    checks: tuple[Check, ...] = ()  # row counts, NOT VALID constraints, amcheck, each smoke_sql assertion
    subscriptions: tuple[str, ...] = ()  # restored subscriptions, disabled and slot-less, dropped with the database

    def rate(self) -> str:
        if not self.seconds or not self.size:
            return ""
        return f", {human_bytes(self.size)} at {self.size / self.seconds / 1e6:.2f} MB/s"

    def receipt(self) -> list[str]:
        lines = [f"• {c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})" for c in self.checks]
        subs = (f" and its subscription(s) {', '.join(self.subscriptions)} (disabled and slot released first: "
                "nothing connected to a publisher)" if self.subscriptions else "")
        if self.drop_error is None:
            lines.append(f"• dropped after: scratch database {self.scratch}{subs}")
        return lines

    def text(self) -> str:
        proof = [self.provenance] if self.provenance else []
        if self.ok:
            head = (f":white_check_mark: Drill of backup #{self.backup_id} ({self.database}) passed: restored into a scratch "
                    f"database in {human_duration(self.seconds)} (RTO){self.rate()}, {self.detail}. Scratch database dropped.")
        elif self.drop_error is not None:
            head = (f":x: Drill of backup #{self.backup_id} ({self.database}) FAILED: scratch database {self.scratch} "
                    f"could NOT be dropped: {self.drop_error}; drop it by hand (DROP DATABASE {self.scratch} WITH (FORCE)). "
                    f"Restore and checks: {self.detail}. The backup is not marked verified.")
        else:
            head = (f":x: Drill of backup #{self.backup_id} ({self.database}) FAILED: {self.detail}. "
                    f"Scratch database {self.scratch} dropped.")
        return "\n".join([head, *self.receipt(), *proof])


def run_drill(services: Services, backup_ref: str, database: str | None, actor: Actor,
              on_queued: Callable[[int], None] | None = None) -> DrillResult:
    """Claim the drill, wait for a job slot ([jobs] max_running; on_queued(jobs ahead) when queued), run it."""
    record = find_backup(services, backup_ref, database)
    provenance = check_provenance(services.storage, record, keyring=services.settings.signing,
                                  encrypt_to=services.settings.encrypt_to, now=services.clock())
    dsn = services.settings.database(record.database).require_url()
    scratch = drill_database_name(record.id)
    with Run(services, "drill", record.database, actor, None, event="drill", record_event=record_event,
             after_job=after_job, lock_key=f"{record.database}:drill", detail={"backup_id": record.id},
             secrets=[dsn], on_queued=on_queued) as run:
        return _drill_job(services, record, run, dsn, scratch, provenance.text())


def _drill_job(services: Services, record, run: Run, dsn: str, scratch: str, provenance: str) -> DrillResult:
    seconds, checks, subscriptions = None, [], []
    try:
        with scratch_dir(services.settings) as workdir:
            artifact = fetch_artifact(services.storage, record, Path(workdir))
            with run.step("restore"):
                create_database(dsn, scratch)
                run_restore(dsn, scratch, record, artifact, Path(workdir), secrets=run.secrets, fresh=True,
                            jobs=default_jobs(record.format, bool(record.tables), os.cpu_count()))  # as pg_restore -j
            seconds = run.steps["restore"]
        # restored disabled (pg_dump writes connect = false), but still naming production's slot
        subscriptions = release_subscriptions(with_dbname(dsn, scratch))
        checks = verify_restored(with_dbname(dsn, scratch), record, [], None, fresh=True)
        checks += deep_verify(dsn, scratch, services.settings.database(record.database).smoke_sql, run.secrets)
        failed = [c for c in checks if not c.ok]
        ok = not failed
        detail = "; ".join(f"{c.name}: {c.detail}" for c in (failed or checks[:1]))
    except Exception as exc:
        ok, detail = False, error_text(exc, run.secrets, limit=None)
    finally:
        drop_error = None
        try:
            subscriptions = drop_subscriptions_of(dsn, scratch) or subscriptions  # DROP DATABASE refuses them
            drop_database(dsn, scratch)
        except Exception as exc:  # reported, never hidden: a scratch database is left behind
            drop_error = redact(str(exc) or type(exc).__name__, run.secrets)
    if drop_error is not None:  # a drill that leaves its scratch database behind failed a step: it verifies nothing
        ok = False
        error = f"could not drop {scratch}: {drop_error}; restore and checks: {detail}"
    else:
        error = None if ok else detail
    result = DrillResult(record.id, record.database, ok, seconds, detail, scratch, drop_error, provenance,
                         record.size, tuple(checks), tuple(subscriptions))
    run.finish(ok, error, result.text(), {"backup_id": record.id, "rto_seconds": seconds},
               also=lambda: set_verification(services.store, record.id, Verification.VERIFIED if ok else Verification.FAILED,
                                             iso(services.clock()), round(seconds, 3) if ok and seconds is not None else None))
    run.after(f"drill of backup #{record.id}")
    return result


def execute_verify(services: Services, request: VerifyRequest, actor: Actor, reply: Reply) -> DrillResult:
    result = run_drill(services, request.backup, request.database, actor,
                       on_queued=lambda ahead: reply.ephemeral(Notice(queued_text(ahead))))
    reply.post(result)
    return result


EXECUTORS = {VerifyRequest: execute_verify, PhysicalDrillRequest: execute_physical_drill}
