"""Running an approved restore: safety snapshot, restore, verify, report, offer a rollback.

Each step's time is measured and posted in the request's thread; the request and its job end
in a truthful status whatever happens.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

from commands.backup.command import BackupRequest, run_backup_job
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply, ThreadReply
from commands.errors import BackupbotError
from commands.incident.audit import record_event
from commands.pg import snapshot as pg_snapshot
from commands.pg.restore import (
    create_database,
    drop_database,
    fetch_artifact,
    run_restore,
    scratch_dir,
    swap_databases,
)
from commands.pg.tools import with_dbname
from commands.redact import redact
from commands.restore.plan import plan_message
from commands.restore.verify import check_health_url, checks_text, verify_restored
from commands.units import human_duration
from state import approvals as request_state
from state import jobs as job_state
from state.backups import get_backup

log = logging.getLogger(__name__)


SINGLE_TRANSACTION, SIDE_DATABASE = "single transaction", "side database"


def side_database_name(request_id: int) -> str:
    return f"backupbot_side_{request_id}_{secrets.token_hex(3)}"


def previous_database_name(request_id: int) -> str:
    return f"backupbot_prev_{request_id}_{secrets.token_hex(3)}"


def run_restore_request(services: Services, row: request_state.RestoreRequestRow, reply: Reply) -> dict:
    """Run the request that just moved to `running` inside a job slot ([jobs] max_running); returns its
    result (also stored and posted)."""
    from commands.chat.job_slots import queued_text

    thread = ThreadReply(reply, row.message_id)
    with services.job_slots.acquire(f"restore request #{row.id}",
                                    on_queued=lambda ahead: thread.post(Notice(queued_text(ahead)))):
        return _run_restore_request(services, row, reply)


def _run_restore_request(services: Services, row: request_state.RestoreRequestRow, reply: Reply) -> dict:

    plan = row.plan
    thread = ThreadReply(reply, row.message_id)
    actor = Actor(user=row.requester, channel=row.channel)
    steps: list[str] = []
    result: dict = {"steps": {}}
    snapshot_id = None

    def step(name: str, seconds: float, detail: str) -> None:
        result["steps"][name] = round(seconds, 3)
        line = f"{name}: {detail} ({human_duration(seconds)})"
        steps.append(f"• {line}")
        thread.post(Notice(line))
        record_event(services, "restore.step", database=plan["database"], actor=actor,
                     text=f"Restore request #{row.id}: {line}", detail={"step": name, "request_id": row.id})

    created_target = False
    created_side: str | None = None

    def fail(reason: str) -> dict:
        reason = redact(reason, services.secrets())[:1500]
        for name in ([plan["target_dbname"]] if created_target else []) + ([created_side] if created_side else []):
            try:  # a database this request created holds nothing anyone needs: remove it
                drop_database(dsn, name)
            except Exception:
                log.exception("could not drop %s after a failed restore", name)
        result.update(ok=False, error=reason, snapshot_id=snapshot_id)
        request_state.set_result(services.store, row.id, request_state.FAILED, result)
        if job is not None:
            job_state.finish_job(services.store, job.id, job_state.FAILED, reason)
        _update(services, row.id, reply, steps, note=f"Failed: {reason}")
        thread.post(Notice(f":x: Restore request #{row.id} failed: {reason}"))
        record_event(services, "restore.failed", database=plan["database"], actor=actor,
                     text=f"Restore request #{row.id} failed: {reason}", detail={"request_id": row.id})
        if snapshot_id and plan.get("target_exists"):
            result["rollback_snapshot_id"] = snapshot_id  # the caller offers it (commands.restore.requests)
        return result

    job = None
    if request_state.plan_hash(plan) != row.plan_hash:
        return fail("the stored plan does not match its hash; it was changed after it was requested")
    try:
        job = job_state.claim_database(services.store, "restore", plan["lock_key"], row.requester, row.channel,
                                       detail={"request_id": row.id})
    except job_state.DatabaseBusy as busy:
        return fail(f"a {busy.job.kind} of {plan['database']} is already running (#{busy.job.id})")
    request_state.set_job(services.store, row.id, job.id)
    _update(services, row.id, reply, steps)
    dsn = services.settings.database(plan["database"]).require_url()
    target_dsn = with_dbname(dsn, plan["target_dbname"])
    record = get_backup(services.store, plan["backup_id"])
    try:
        if plan["safety_snapshot"]:
            started = time.monotonic()
            snap_job = job_state.start_job(services.store, "snapshot", plan["database"], row.requester, row.channel)
            status = run_backup_job(
                services, BackupRequest(database=plan["database"], format="custom", kind="pre-restore",
                                        note=f"safety snapshot of {plan['target_dbname']} before restore request #{row.id}"),
                actor, thread, snap_job.id, target_dsn)
            if status.state != "succeeded":
                return fail(f"the safety snapshot failed, so the target was not touched: {status.error}")
            snapshot_id = status.record.id
            step("safety snapshot", time.monotonic() - started, f"backup #{snapshot_id}")
            record_event(services, "restore.checkpoint", database=plan["database"], actor=actor,
                         text=f"Safety snapshot #{snapshot_id} taken before restore request #{row.id}",
                         detail={"backup_id": snapshot_id, "kind": "pre-restore"})
        started = time.monotonic()
        with scratch_dir() as workdir:
            artifact = fetch_artifact(services.storage, record, Path(workdir))
            step("fetch and check", time.monotonic() - started, f"sha256 {record.sha256[:12]} matches")
            started = time.monotonic()
            if not plan["target_exists"]:
                create_database(dsn, plan["target_dbname"])
                created_target = True
            if plan.get("method") == SIDE_DATABASE:
                side = side_database_name(row.id)
                create_database(dsn, side, like=plan["target_dbname"])
                created_side = side
                run_restore(dsn, side, record, artifact, Path(workdir), jobs=plan["jobs"],
                            secrets=services.secrets() + [dsn])
            else:
                run_restore(dsn, plan["target_dbname"], record, artifact, Path(workdir),
                            tables=plan["tables"] or None, jobs=plan["jobs"], secrets=services.secrets() + [dsn])
            restore_seconds = time.monotonic() - started
            step("restore", restore_seconds, f"{record.format} into {plan['target']}"
                 + (f" (side database {created_side})" if created_side else ""))
        result["restore_seconds"] = round(restore_seconds, 3)
        started = time.monotonic()
        health_url = services.settings.database(plan["database"]).health_url if plan["target_dbname"] == \
            pg_snapshot.dbname_of(dsn) else None
        if created_side:  # rows and constraints are checked on the side database, before anything is replaced
            checks = verify_restored(with_dbname(dsn, created_side), record, plan["tables"], None)
            if any(not c.ok for c in checks):
                step("verify", time.monotonic() - started, checks_text(checks))
                return fail("verification failed before the swap, so the target was not touched: "
                            + "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok))
            previous = previous_database_name(row.id)
            swap_databases(dsn, plan["target_dbname"], created_side, previous)
            created_side = None
            result["previous_database"] = previous
            step("swap", time.monotonic() - started, f"{plan['target_dbname']} is the restored database; "
                 f"the one it replaced is kept as {previous}")
            started = time.monotonic()
            if health_url:
                health = check_health_url(health_url)
                checks.append(health)
                if not health.ok:  # the old database goes back in place: exactly as it was
                    swap_databases(dsn, plan["target_dbname"], previous, side_database_name(row.id))
                    result.pop("previous_database")
                    step("verify", time.monotonic() - started, checks_text(checks))
                    return fail(f"{health.detail} after the swap, so the previous database was put back in place")
        else:
            checks = verify_restored(target_dsn, record, plan["tables"], health_url)
        failed = [c for c in checks if not c.ok]
        step("verify", time.monotonic() - started, checks_text(checks))
        record_event(services, "restore.verified", database=plan["database"], actor=actor,
                     text=f"Restore request #{row.id} verification {'passed' if not failed else 'FAILED'}",
                     detail={"passed": not failed, "backup_id": record.id, "request_id": row.id}, reply=reply)
        if failed:
            return fail("verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    except BackupbotError as exc:
        return fail(str(exc))
    except Exception as exc:
        log.exception("restore request #%s failed unexpectedly", row.id)
        return fail(f"{type(exc).__name__}: {exc}")
    result.update(ok=True, snapshot_id=snapshot_id)
    request_state.set_result(services.store, row.id, request_state.SUCCEEDED, result)
    job_state.finish_job(services.store, job.id, job_state.SUCCEEDED)
    total = sum(result["steps"].values())
    _update(services, row.id, reply, steps, note=f"Done in {human_duration(total)}.")
    thread.post(Notice(f":white_check_mark: Restore request #{row.id} restored backup #{record.id} into "
                       f"{plan['target']} and verified it ({human_duration(total)})."))
    record_event(services, "restore.succeeded", database=plan["database"], actor=actor,
                 text=f"Restore request #{row.id} succeeded", detail={"backup_id": record.id, "request_id": row.id})
    return result


def _update(services: Services, request_id: int, reply: Reply, steps: list[str], note: str | None = None) -> None:
    row = request_state.get_request(services.store, request_id)
    if row.message_id:
        reply.update(row.message_id, plan_message(services, row, steps=tuple(steps), note=note))
