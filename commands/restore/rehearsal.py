"""A scheduled DR rehearsal: the runbook, run end to end on a fresh server, timed, then torn down.

A drill proves a backup restores into a scratch database on production's own server. A rehearsal
proves what a disaster needs: a new server (initdb on a free port, or a configured [targets.NAME]),
the globals applied, the newest intact full backup restored, the drill's own verification, the
application's checks (`[databases.X] verify_command`, given the copy's DSN), and, for an encrypted
backup, that the configured age identity still decrypts it. The end-to-end time is the RTO people
can expect, compared with [incidents] rto_full_hours; it is stored with the job so the digest shows
the trend. Everything is removed after, whatever happened; a failed rehearsal opens an incident.
"""

from __future__ import annotations

import hashlib
import os
import secrets as random
import time
from dataclasses import dataclass, field
from pathlib import Path

from commands.backup.manifest import check_provenance
from commands.backup.state_copy import after_job
from commands.chat.context import Actor, Services
from commands.chat.run import Run, error_text
from commands.errors import BackupbotError, IntegrityError
from commands.incident.audit import record_event
from commands.pg.cluster import TemporaryCluster
from commands.pg.globals import create_roles_from_globals
from commands.pg.restore.artifact import fetch_artifact, scratch_dir, verify_artifact
from commands.pg.restore.databases import create_database
from commands.pg.restore.runner import run_restore
from commands.pg.roles import create_roles, parse_definitions
from commands.pg.subscriptions import drop_restored_database
from commands.pg.tools import with_dbname
from commands.redact import describe_dsn, redact
from commands.restore.app_checks import run_verify_command
from commands.restore.deep_verify import deep_verify
from commands.restore.rehearsal_pitr import rehearse_physical
from commands.restore.rules import default_jobs
from commands.restore.verify import verify_restored
from commands.storage.encryption import Decryptor
from commands.units import human_duration
from state.backups import BackupRecord, list_backups
from state.jobs import recent_jobs, update_job_detail
from state.statuses import JobStatus

KIND = "rehearsal"


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class RehearsalResult:
    database: str
    ok: bool
    where: str
    backup_id: int | None
    rto_seconds: float | None
    rto_target_hours: float
    steps: tuple[Step, ...] = ()
    incident_id: int | None = None
    physical: bool = False  # a pgBackRest backup set replayed to a moment, not a logical backup

    @property
    def within_target(self) -> bool:
        return self.rto_seconds is not None and self.rto_seconds <= self.rto_target_hours * 3600

    def rto_text(self) -> str:
        target = human_duration(self.rto_target_hours * 3600)
        if self.rto_seconds is None:
            return f"RTO: not measured (target {target}, rto_full_hours)"
        verdict = "within" if self.within_target else "OVER"
        return f"RTO: {human_duration(self.rto_seconds)} end to end, {verdict} the target of {target} (rto_full_hours)"

    def text(self) -> str:
        backup = (f"{'physical ' if self.physical else ''}backup #{self.backup_id}" if self.backup_id else
                  "a physical backup set" if self.physical else "no backup")
        head = (f":white_check_mark: DR rehearsal of {self.database} passed: {backup} restored on {self.where}" if self.ok
                else f":x: DR rehearsal of {self.database} FAILED ({backup}, on {self.where})")
        lines = [head, self.rto_text()]
        lines += [f"{':white_check_mark:' if s.ok else ':x:'} {s.name}: {s.detail}" for s in self.steps]
        if self.incident_id:
            lines.append(f"Opened incident #{self.incident_id}.")
        return "\n".join(lines)


@dataclass
class _Progress:
    steps: list[Step] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append(Step(name, ok, detail))
        return ok


def newest_intact_full_backup(services: Services, database: str, progress: _Progress) -> BackupRecord:
    """The newest full backup that is this bot's own and whose artifact still matches its sha256; the
    ones passed over are named (each is a finding of its own)."""
    passed_over = []
    for record in (r for r in list_backups(services.store, database) if r.is_full):
        try:
            check_provenance(services.storage, record, keyring=services.settings.signing,
                             encrypt_to=services.settings.encrypt_to, now=services.clock())
            verify_artifact(services.storage, record)
        except BackupbotError as exc:
            passed_over.append(f"#{record.id} ({exc})")
            continue
        skipped = f"; passed over {', '.join(passed_over)}" if passed_over else ""
        progress.add("backup", not passed_over, f"#{record.id} of {record.created_at}, newest intact full backup{skipped}")
        return record
    raise IntegrityError(f"no intact full backup of {database}" + (f": {', '.join(passed_over)}" if passed_over else ""))


def run_rehearsal(services: Services, database: str, target: str | None, actor: Actor,
                  timer=time.monotonic) -> RehearsalResult:
    """Run one rehearsal as a job (one per database at a time); the result is stored before it is returned."""
    dsn = services.settings.database(database).require_url()
    target_dsn = services.settings.target(target).require_url() if target else None
    with Run(services, KIND, database, actor, None, event=KIND, record_event=record_event, after_job=after_job,
             lock_key=f"{database}:{KIND}", detail={"target": target}, secrets=[dsn] + ([target_dsn] if target_dsn else [])
             ) as run:
        result = _rehearse(services, database, target, target_dsn, run, timer)
        run.finish(result.ok, None if result.ok else first_failure(result), result.text(),
                   {"rto_seconds": result.rto_seconds, "backup_id": result.backup_id, "target": target,
                    "rto_target_hours": result.rto_target_hours})
        update_job_detail(services.store, run.job_id, rto_seconds=result.rto_seconds, backup_id=result.backup_id,
                          within_target=result.within_target)
        run.after(f"rehearsal of {database}")
    return result


def first_failure(result: RehearsalResult) -> str:
    return next((f"{s.name}: {s.detail}" for s in result.steps if not s.ok), "failed")


def _rehearse(services: Services, database: str, target: str | None, target_dsn: str | None, run: Run,
              timer) -> RehearsalResult:
    progress = _Progress()
    rto_hours = services.settings.incidents.rto_full_hours
    started = timer()
    where = f"target {target}" if target else "a new cluster"
    cluster, record, server_dsn, dbname, restored = None, None, None, None, False
    if target is None and services.settings.database(database).pgbackrest is not None:
        return _physical(services, database, run, timer, progress, rto_hours, started)
    try:
        record = newest_intact_full_backup(services, database, progress)
        if target_dsn:
            server_dsn = target_dsn
            dbname = f"backupbot_rehearsal_{record.id}_{random.token_hex(3)}"
            progress.add("server", True, f"target {target} ({describe_dsn(target_dsn)}), into a new database {dbname}")
        else:
            cluster = TemporaryCluster().start()
            server_dsn, dbname = cluster.dsn("postgres"), record.dbname or database
            run.secrets.append(cluster.password)
            if dbname in ("postgres", "template0", "template1"):  # initdb made it: restore beside it
                dbname = f"{database}_rehearsal"
            where = f"a new cluster (initdb) on port {cluster.port}"
            progress.add("server", True, f"initdb, started on 127.0.0.1:{cluster.port}")
        run.secrets.append(server_dsn)
        progress.add("globals", True, apply_globals(services, record, server_dsn, allow_privileged=cluster is not None))
        with scratch_dir(services.settings) as workdir:
            artifact = fetch_artifact(services.storage, record, Path(workdir))
            create_database(server_dsn, dbname)
            restored = True
            run_restore(server_dsn, dbname, record, artifact, Path(workdir), secrets=run.secrets, fresh=True,
                        jobs=default_jobs(record.format, bool(record.tables), os.cpu_count()))
        copy_dsn = with_dbname(server_dsn, dbname)
        progress.add("restore", True, f"{dbname} restored")
        checks = verify_restored(copy_dsn, record, [], None, fresh=True)  # the drill's own verification, amcheck included
        checks += deep_verify(server_dsn, dbname, services.settings.database(database).smoke_sql, run.secrets)
        failed = [c for c in checks if not c.ok]
        progress.add("verification", not failed, "; ".join(f"{c.name}: {c.detail}" for c in (failed or checks)))
        command = services.settings.database(database).verify_command
        if command:
            outcome = run_verify_command(command, copy_dsn, run.secrets)
            progress.add("application checks", outcome.ok, outcome.detail)
        else:
            progress.add("application checks", True, f"none configured ([databases.{database}] verify_command)")
        progress.add("age identity", True, f"{services.settings.identity_file} decrypted the backup and its globals"
                     if record.encryption else "the backup is not encrypted")
    except Exception as exc:
        progress.add("error", False, error_text(exc, run.secrets, limit=800))
    rto = timer() - started if record is not None and all(s.ok for s in progress.steps) else None
    progress.add("teardown", *teardown(cluster, server_dsn if restored and cluster is None else None, dbname, run.secrets))
    ok = all(s.ok for s in progress.steps)
    return RehearsalResult(database, ok, where, record.id if record else None, rto, rto_hours, tuple(progress.steps))


def _physical(services: Services, database: str, run: Run, timer, progress: _Progress, rto_hours: float,
              started: float) -> RehearsalResult:
    """pgBackRest: the cluster at a random recent moment (commands/restore/rehearsal_pitr.py)."""
    backup_id, where, done = None, "a new cluster (pgBackRest restore)", False
    try:
        backup_id, where, _ = rehearse_physical(services, database, run, progress)
        done = True
    except Exception as exc:
        progress.add("error", False, error_text(exc, run.secrets, limit=800))
    rto = timer() - started if done and all(s.ok for s in progress.steps) else None
    progress.add("teardown", True, "the restored cluster was stopped and its data directory removed")
    ok = done and all(s.ok for s in progress.steps)
    return RehearsalResult(database, ok, where, backup_id, rto, rto_hours, tuple(progress.steps), physical=True)


def apply_globals(services: Services, record: BackupRecord, server_dsn: str, allow_privileged: bool) -> str:
    """The roles the dump needs, from its globals file (decrypted with the age identity when encrypted,
    sha256 checked), else from the manifest's role definitions."""
    if record.globals_file:
        data = services.storage.get_bytes(record.globals_file["key"])
        if hashlib.sha256(data).hexdigest() != record.globals_file["sha256"]:
            raise IntegrityError(f"the globals file of backup #{record.id} does not match its sha256")
        if record.encryption:
            decryptor = Decryptor(services.settings.identity_file, recipients=record.recipients)
            data = decryptor.decompress(data) + decryptor.flush()
        created = create_roles_from_globals(server_dsn, data, record.roles, allow_privileged=allow_privileged)
        return f"from {record.globals_file['key']}: {created.summary()}"
    definitions = parse_definitions(record.role_definitions, f"backup #{record.id}")
    return "from the manifest's role definitions: " + create_roles(server_dsn, definitions, allow_privileged).summary()


def teardown(cluster: TemporaryCluster | None, server_dsn: str | None, dbname: str | None,
             secrets: list[str]) -> tuple[bool, str]:
    """Stop and remove the new cluster, or drop the copy on the target: reported, never hidden."""
    try:
        if cluster is not None:
            cluster.stop()
            return True, "the new cluster was stopped and its data directory removed"
        if server_dsn and dbname:
            drop_restored_database(server_dsn, dbname)
            return True, f"{dbname} dropped"
        return True, "nothing to remove"
    except Exception as exc:
        return False, f"could not remove the copy: {redact(str(exc), secrets)}; remove {dbname} by hand"


# ---------------------------------------------------------------- a failed rehearsal is an incident


def rehearsal_history(services: Services, database: str, limit: int = 5) -> list[dict]:
    """The newest rehearsals' outcomes, newest first: {at, ok, rto_seconds}, for the digest's trend."""
    jobs = [j for j in recent_jobs(services.store, f"{database}:{KIND}", limit=limit * 4)
            if j.kind == KIND and j.finished_at]
    return [{"at": j.started_at, "ok": j.status == JobStatus.SUCCEEDED, "rto_seconds": j.detail.get("rto_seconds")}
            for j in jobs[:limit]]


def digest_line(services: Services, database: str) -> str | None:
    """`DR rehearsal: RTO 1m05s, within the target of 4h (newest first: 1m05s, 58.0s, FAILED)`; None
    when the database was never rehearsed and has no rehearsal scheduled."""
    history = rehearsal_history(services, database)
    scheduled = any(j.kind == KIND and j.database == database for j in services.settings.schedules)
    if not history:
        return "  DR rehearsal: none yet" if scheduled else None
    target_hours = services.settings.incidents.rto_full_hours
    newest = history[0]
    if newest["ok"] and newest["rto_seconds"] is not None:
        verdict = "within" if newest["rto_seconds"] <= target_hours * 3600 else "OVER"
        now = f"RTO {human_duration(newest['rto_seconds'])}, {verdict} the target of {human_duration(target_hours * 3600)}"
    else:
        now = f"the last one FAILED (target {human_duration(target_hours * 3600)})"
    trend = ", ".join(human_duration(h["rto_seconds"]) if h["ok"] and h["rto_seconds"] is not None else "FAILED"
                      for h in history)
    return f"  DR rehearsal: {now} (newest first: {trend})"
