"""Running an approved point-in-time restore, and physical drills: the cluster is restored by pgBackRest
into the instance's scratch folder on its own port, verified, and (with --into) copied out into a new
database. The plan, its checks and its message are in commands/restore/pitr_plan.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from commands.backup.command import BackupRequest, run_backup_job
from commands.backup.physical import engine_config
from commands.backup.physical_seal import check_seal
from commands.backup.state_copy import after_job
from commands.chat.access import OPERATOR
from commands.chat.context import Actor, Services
from commands.chat.job_slots import queued_text
from commands.chat.reply import Notice, Reply, ThreadReply
from commands.chat.run import Run, error_text
from commands.errors import AlreadyRunningError, BackupbotError
from commands.incident.audit import record_event
from commands.pg import scratch
from commands.pg import snapshot as pg_snapshot
from commands.pg.pgbackrest.restored_cluster import RestoredCluster, restore_to_new_datadir
from commands.pg.pgbackrest.runner import verify_repo
from commands.pg.restore.artifact import fetch_artifact, scratch_dir
from commands.pg.restore.databases import create_database
from commands.pg.restore.runner import run_restore
from commands.pg.subscriptions import drop_restored_database, release_subscriptions
from commands.pg.tools import pg_bin, with_dbname
from commands.redact import redact
from commands.restore.pitr_plan import find_physical_backup, pitr_message
from commands.restore.plans import PointInTimePlan, plan_from_dict
from commands.restore.roles import create_copy_roles
from commands.restore.verify import checks_text, verify_restored
from commands.units import human_bytes, human_duration
from state import approvals as request_state
from state import jobs as job_state
from state.physical_backups import (
    get_physical_backup_by_label,
    set_physical_verification,
)
from state.restored_clusters import RestoredClusterRow, add_restored_cluster
from state.statuses import JobStatus, Verification
from state.store import iso


def run_pitr_request(services: Services, row: request_state.RestoreRequestRow, run: Run) -> dict:
    """Restore into the new data directory, wait until promoted, verify, and leave it running."""
    plan = plan_from_dict(row.plan)
    thread = ThreadReply(run.reply, row.message_id)
    result: dict = {"steps": {}}
    steps: list[str] = []

    def update(note: str | None = None) -> None:
        current = request_state.get_request(services.store, row.id)
        if current.message_id:
            run.reply.update(current.message_id, pitr_message(services, current, steps=tuple(steps), note=note))

    def step(name: str, seconds: float, detail: str) -> None:
        result["steps"][name] = round(seconds, 3)
        line = f"{name}: {detail} ({human_duration(seconds)})"
        steps.append(f"• {line}")
        thread.post(Notice(line))
        record_event(services, "restore.step", database=plan.database, actor=run.actor,
                     text=f"Restore request #{row.id}: {line}", detail={"step": name, "request_id": row.id})

    def fail(reason: str) -> dict:
        return _fail(services, row, run, thread, result, reason, update)

    if request_state.plan_hash(row.plan) != row.plan_hash:
        return fail("the stored plan does not match its hash; it was changed after it was requested")
    try:
        with run:
            return _pitr_in_run(services, row, plan, run, thread, result, update, step, fail)
    except AlreadyRunningError as exc:  # the claim: another job holds the database
        return fail(str(exc))


def _pitr_in_run(services: Services, row, plan: PointInTimePlan, run: Run, thread: Reply, result: dict,
                 update, step, fail) -> dict:
    actor, restored = run.actor, None
    try:
        request_state.set_job(services.store, row.id, run.job_id)
        update()
        started = time.monotonic()
        restored = restore_cluster(services, plan, Path(plan.datadir))
        seconds = time.monotonic() - started
        step("restore", seconds, f"backup set {plan.backup_label} replayed "
             + (f"to {plan.target_time}" if plan.target_time else "to its end") + f", promoted on port {restored.port}")
        started = time.monotonic()
        detail = verify_cluster(restored, services.settings.database(plan.database).require_url())
        step("verify", time.monotonic() - started, detail)
        if plan.into:
            copy_into_new_database(services, plan, restored, row, actor, thread, step)
            restored.stop_and_remove()
        else:  # the copy stays up for the user until dropped: kept by clean_scratch at start, listed until then
            scratch.keep(restored.datadir)
            add_restored_cluster(services.store, RestoredClusterRow(
                request_id=row.id, database=plan.database, datadir=str(restored.datadir), port=restored.port,
                requested_by=row.requester, started_at=iso(services.clock())))
        # the incident's data-loss window is measured from the recovery target, not from a dump's time
        record_event(services, "restore.verified", database=plan.database, actor=actor,
                     text=f"Restore request #{row.id} verification passed (point in time)",
                     detail={"passed": True, "request_id": row.id, "physical_backup_id": plan.backup_id,
                             "recovery_point": plan.target_time or plan.backup_stopped,
                             "target_time": plan.target_time}, reply=run.reply)
    except Exception as exc:
        if restored is not None:  # a copy that did not verify is nobody's to use: stop and remove it
            restored.stop_and_remove()
        reason = str(exc) if isinstance(exc, BackupbotError) else f"{type(exc).__name__}: {exc}"
        return fail(reason)
    if plan.into:
        result.update(ok=True, restore_seconds=round(seconds, 3), into=plan.into_target)
        where = f"into the new database {plan.into_target}"
        note = f"{plan.database} as it was is in {plan.into_target}; the restored cluster was stopped and removed."
    else:
        result.update(ok=True, restore_seconds=round(seconds, 3), port=restored.port, datadir=str(restored.datadir))
        where = f"on 127.0.0.1:{restored.port}"
        ttl = human_duration(services.settings.restore.copy_ttl_hours * 3600)
        note = (f"The restored cluster (copy #{row.id}) runs on 127.0.0.1:{restored.port}, with archiving off and "
                "without the live cluster's scheduled jobs; connect with the database's own credentials. When done, "
                f"`/restore drop-copy {row.id}` stops and removes it; otherwise it is dropped in {ttl} "
                "([restore] copy_ttl_hours).")
    request_state.finish_request(services.store, row.id, request_state.SUCCEEDED, result)
    run.succeed(f"Restore request #{row.id}: point-in-time restore of {plan.database}"
                + (f" to {plan.target_time}" if plan.target_time else "") + " succeeded",
                detail={"request_id": row.id, "target_time": plan.target_time, "backup_label": plan.backup_label})
    update(note=note)
    thread.post(Notice(f":white_check_mark: Restore request #{row.id}: {plan.database} restored "
                       + (f"to {plan.target_time}" if plan.target_time else f"from {plan.backup_label}")
                       + f" {where} and verified."))
    run.after(f"restore request #{row.id}")
    return result


def copy_into_new_database(services: Services, plan: PointInTimePlan, restored: RestoredCluster,
                           row: request_state.RestoreRequestRow, actor: Actor, thread: Reply, step) -> None:
    """The database as it was at the target time, from the restored copy into a new database: a logical
    backup of the copy (catalogued as kind point-in-time, never `latest`), restored and verified like any
    other. The new database is dropped again when any of it fails."""
    started = time.monotonic()
    source_dsn = services.settings.database(plan.database).require_url()
    copy_dsn = restored.dsn(pg_snapshot.dbname_of(source_dsn))
    server_dsn = services.settings.target(plan.server).require_url() if plan.server else source_dsn
    job = job_state.start_job(services.store, "snapshot", plan.database, row.requester, row.channel)
    status = run_backup_job(services, BackupRequest(
        database=plan.database, format="custom", kind="point-in-time",
        note=f"{plan.database} at {plan.target_time or plan.backup_label}, from restore request #{row.id}"),
        actor, thread, job.id, copy_dsn)
    if status.state != JobStatus.SUCCEEDED:
        raise BackupbotError(f"copying the database out of the restored cluster failed: {status.error}")
    record = status.record
    created = False
    try:
        with scratch_dir(services.settings) as workdir:
            artifact = fetch_artifact(services.storage, record, Path(workdir))
            create_copy_roles(services, plan, record, server_dsn, actor, row.id, step)
            create_database(server_dsn, plan.into)
            created = True
            run_restore(server_dsn, plan.into, record, artifact, Path(workdir),
                        secrets=services.secrets() + [server_dsn])
            release_subscriptions(with_dbname(server_dsn, plan.into))  # a copy: never reaches a publisher
        checks = verify_restored(with_dbname(server_dsn, plan.into), record, [], None)
        if any(not c.ok for c in checks):
            raise BackupbotError("the copy did not verify: " + checks_text(checks))
    except BaseException:
        if created:
            drop_restored_database(server_dsn, plan.into)
        raise
    step("copy", time.monotonic() - started, f"backup #{record.id} of the restored database into new database "
         f"{plan.into_target}; {checks_text(checks)}")


def _fail(services: Services, row, run: Run, thread: Reply, result: dict, reason: str, update) -> dict:
    reason = redact(reason, services.secrets())[:1500]
    result.update(ok=False, error=reason)
    request_state.finish_request(services.store, row.id, request_state.FAILED, result)
    run.fail(reason, text=f"Restore request #{row.id} failed: {reason}", detail={"request_id": row.id})
    update(note=f"Failed: {reason}")
    thread.post(Notice(f":x: Restore request #{row.id} failed: {reason}. The running cluster was not touched."))
    run.after(f"restore request #{row.id}")
    return result


def remove_restored_copy(services: Services, plan: PointInTimePlan) -> list[str]:
    """Stop and remove the copy an interrupted point-in-time restore had started (never the live cluster:
    only the request's own job folder in this instance's scratch root)."""
    if not scratch.remove_job(services.settings, Path(plan.datadir)):
        return []
    return [f"stopped and removed the half-restored copy in {plan.datadir}"]


def restore_cluster(services: Services, plan: PointInTimePlan, datadir: Path) -> RestoredCluster:
    cfg = engine_config(services.settings, plan.database)
    target = datetime.fromisoformat(plan.target_time) if plan.target_time else None
    # checked again now, after the approval: then the set checked is the set restored (named by --set)
    record = get_physical_backup_by_label(services.store, plan.database, plan.backup_label)
    check_seal(services.settings.signing, cfg, plan.database, plan.backup_label, record.manifest_seal if record else None)
    scratch.make_job_dir(services.settings, datadir, owner=cfg.run_as())  # 0700, the cluster owner's
    port = plan.port if plan.port and port_is_free(plan.port) else None  # None: pgBackRest's restore picks one
    return restore_to_new_datadir(cfg, target, plan.backup_label, datadir, port)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def verify_cluster(restored: RestoredCluster, source_dsn: str) -> str:
    """The copy answers, has left recovery, and `pg_controldata` says it is in production."""
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(source_dsn).get("dbname") or "postgres"
    with psycopg.connect(restored.dsn(dbname), connect_timeout=10) as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                              "AND n.nspname NOT LIKE 'pg\\_%'").fetchone()[0]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    if in_recovery:
        raise BackupbotError("the restored cluster is still in recovery")
    argv = [pg_bin("pg_controldata"), str(restored.datadir)]
    if restored.run_as:
        argv = ["runuser", "-u", restored.run_as, "--", *argv]
    control = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    state = next((line.split(":", 1)[1].strip() for line in control.stdout.splitlines()
                  if line.startswith("Database cluster state:")), "unknown")
    if state != "in production":
        raise BackupbotError(f"pg_controldata says the restored cluster is {state!r}, not in production")
    return f"{dbname} answers with {tables} tables ({human_bytes(size)}); out of recovery; pg_controldata: {state}"


# ---------------------------------------------------------------- drills of physical backups


@dataclass(frozen=True)
class PhysicalDrillRequest:
    backup: str  # id, label or latest
    database: str
    permission = OPERATOR


@dataclass(frozen=True)
class PhysicalDrillResult:
    backup_id: int
    label: str
    database: str
    ok: bool
    seconds: float | None
    detail: str

    def text(self) -> str:
        if self.ok:
            return (f":white_check_mark: Drill of physical backup #{self.backup_id} ({self.label}, {self.database}) "
                    f"passed: restored, started and promoted in {human_duration(self.seconds)} (RTO); {self.detail}. "
                    "Scratch cluster stopped and removed.")
        return f":x: Drill of physical backup #{self.backup_id} ({self.label}, {self.database}) FAILED: {self.detail}"


def run_physical_drill(services: Services, request: PhysicalDrillRequest, actor: Actor,
                       on_queued=None) -> PhysicalDrillResult:
    """Restore to a scratch data directory on a free port, start it, wait for recovery to end, verify,
    stop and remove it; the measured time is the RTO. `pgbackrest verify` checks the repository too."""
    record = find_physical_backup(services, request.database, request.backup)
    with Run(services, "drill", request.database, actor, None, event="drill", record_event=record_event,
             after_job=after_job, lock_key=f"{request.database}:pitr-drill", label="drill of physical backup",
             detail={"physical_backup_id": record.id}, on_queued=on_queued) as run:
        return _physical_drill(services, request, record, run)


def _physical_drill(services: Services, request: PhysicalDrillRequest, record, run: Run) -> PhysicalDrillResult:
    datadir = scratch.job_path(services.settings, "drill", request.database, str(record.id))
    plan = PointInTimePlan(database=request.database, stanza=record.stanza, target_time=None, backup_label=record.label,
                           backup_stopped=record.stopped_at or record.created_at, wal_range=record.wal_range,
                           reachable="drill", lock_key="", requested_by=run.actor.user,
                           requested_at=iso(services.clock()), datadir=str(datadir))
    seconds, restored = None, None
    try:
        with run.step("restore"):
            restored = restore_cluster(services, plan, datadir)
        seconds = run.steps["restore"]
        detail = verify_cluster(restored, services.settings.database(request.database).require_url())
        checked = verify_repo(engine_config(services.settings, request.database))
        ok = checked.ok
        detail += "; pgbackrest verify: " + ("ok" if checked.ok else f"FAILED ({checked.summary})")
    except Exception as exc:
        ok, detail = False, error_text(exc, run.secrets, limit=None)
    finally:
        if restored is not None:
            restored.stop_and_remove()
        shutil.rmtree(plan.datadir, ignore_errors=True)
    result = PhysicalDrillResult(record.id, record.label, request.database, ok, seconds, detail)
    run.finish(ok, detail, result.text(), {"physical_backup_id": record.id, "rto_seconds": seconds},
               also=lambda: set_physical_verification(
                   services.store, record.id, Verification.VERIFIED if ok else Verification.FAILED,
                   iso(services.clock()), round(seconds, 3) if ok and seconds is not None else None))
    run.after(f"drill of physical backup #{record.id}")
    return result


def execute_physical_drill(services: Services, request: PhysicalDrillRequest, actor: Actor, reply: Reply):
    result = run_physical_drill(services, request, actor,
                                on_queued=lambda ahead: reply.ephemeral(Notice(queued_text(ahead))))
    reply.post(result)
    return result
