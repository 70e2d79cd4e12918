"""Running an approved restore: safety snapshot, restore, verify, report, offer a rollback.

Each step's time is measured and posted in the request's thread; the request and its job end
in a truthful status whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from commands.backup.command import BackupRequest, run_backup_job
from commands.backup.state_copy import after_job
from commands.chat.context import Actor, Services
from commands.chat.job_slots import queued_text
from commands.chat.reply import Notice, Reply, ThreadReply
from commands.chat.run import Run
from commands.errors import AlreadyRunningError, BackupbotError, DumpError
from commands.incident.alarms import raise_alarm
from commands.incident.audit import record_event
from commands.pg import snapshot as pg_snapshot
from commands.pg.restore.artifact import fetch_artifact, scratch_dir
from commands.pg.restore.databases import create_database
from commands.pg.restore.runner import run_restore
from commands.pg.restore.side import database_properties, differences, swap_databases
from commands.pg.roles import create_roles, parse_definitions
from commands.pg.subscriptions import drop_restored_database, release_subscriptions
from commands.pg.tools import major, pg_bin_for, tool_version, with_dbname
from commands.pg.waits import JobSessions
from commands.redact import redact
from commands.restore.deep_verify import deep_verify_side
from commands.restore.pitr import run_pitr_request
from commands.restore.plan import plan_message
from commands.restore.plans import PITR, plan_from_dict
from commands.restore.result import RestoreResult
from commands.restore.roles import planned_roles, record_privileged
from commands.restore.rules import NEW_DATABASE, SIDE_DATABASE, previous_database_name, side_database_name
from commands.restore.verify import Check, check_health_url, checks_text, verify_restored
from commands.units import human_duration
from state import approvals as request_state
from state import jobs as job_state
from state.backups import get_backup
from state.statuses import JobStatus

log = logging.getLogger(__name__)


def run_restore_request(services: Services, row: request_state.RestoreRequestRow, reply: Reply) -> RestoreResult:
    """Run the request that just moved to `running` as a Run (its claim, a job slot ([jobs] max_running),
    its verdict and event); returns its result (also stored and posted)."""
    thread = ThreadReply(reply, row.message_id)
    run = Run(services, "restore", row.plan.get("database") or row.database, Actor(user=row.requester, channel=row.channel),
              reply, event="restore", record_event=record_event, after_job=after_job, lock_key=row.plan.get("lock_key"),
              detail={"request_id": row.id}, slot=f"restore request #{row.id}",
              on_queued=lambda ahead: thread.post(Notice(queued_text(ahead))), alarm=raise_alarm)
    if plan_from_dict(row.plan).kind == PITR:
        return RestoreResult.from_dict(run_pitr_request(services, row, run))
    return RestoreResult.from_dict(RestoreRun(services, row, run).run())


class RestoreRun:
    """One approved request from its first step to a stored, truthful outcome.

    It owns what it changes (the job, a database it created, a side database) so that `fail()` can
    always undo exactly that, whichever step failed."""

    def __init__(self, services: Services, row: request_state.RestoreRequestRow, run: Run):
        self.services = services
        self.row = row
        self.plan = plan_from_dict(row.plan)
        self.run_ = run  # the claim, the slot, the guarded reply, the job's verdict and its event
        self.reply = run.reply
        self.thread = ThreadReply(self.reply, row.message_id)
        self.actor = run.actor
        self.dsn = (services.settings.target(self.plan.server).require_url() if self.plan.server
                    else services.settings.database(self.plan.database).require_url())
        self.target_dsn = with_dbname(self.dsn, self.plan.target_dbname)
        self.record = get_backup(services.store, self.plan.backup_id)
        self.server_major = major(self.plan.server_version) if self.plan.server_version else None
        self.steps: list[str] = []
        self.result: dict = {"steps": {}}
        self.snapshot_id: int | None = None
        self.created_target = False
        self.created_side: str | None = None
        self.target_changed = False  # a rollback is offered only for a target this run committed to

    # -- the run
    def run(self) -> dict:
        row = self.row
        if request_state.plan_hash(row.plan) != row.plan_hash:
            return self.fail("the stored plan does not match its hash; it was changed after it was requested")
        try:
            with self.run_:
                return self.in_run()
        except AlreadyRunningError as exc:  # the claim: another job holds the database
            return self.fail(str(exc))

    def in_run(self) -> dict:
        row, plan = self.row, self.plan
        request_state.set_job(self.services.store, row.id, self.run_.job_id)
        try:
            self.update()
            if plan.safety_snapshot and not self.take_safety_snapshot():
                return self.result
            checks = self.restore()
            if checks is None:
                return self.result
        except BackupbotError as exc:
            return self.fail(str(exc))
        except Exception as exc:
            log.exception("restore request #%s failed unexpectedly", row.id)
            return self.fail(f"{type(exc).__name__}: {exc}")
        failed = [c for c in checks if not c.ok]
        record_event(self.services, "restore.verified", database=plan.database, actor=self.actor,
                     text=f"Restore request #{row.id} verification {'passed' if not failed else 'FAILED'}",
                     detail={"passed": not failed, "backup_id": self.record.id, "request_id": row.id}, reply=self.reply)
        if failed:
            return self.fail("verification failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        return self.succeed()

    def take_safety_snapshot(self) -> bool:
        started = time.monotonic()
        plan, row = self.plan, self.row
        snap_job = job_state.start_job(self.services.store, "snapshot", plan.database, row.requester, row.channel)
        status = run_backup_job(
            self.services, BackupRequest(database=plan.database, format="custom", kind="pre-restore",
                                         note=f"safety snapshot of {plan.target_dbname} before restore request #{row.id}"),
            self.actor, self.thread, snap_job.id, self.target_dsn)
        if status.state != JobStatus.SUCCEEDED:
            self.fail(f"the safety snapshot failed, so the target was not touched: {status.error}")
            return False
        self.snapshot_id = status.record.id
        self.step("safety snapshot", time.monotonic() - started, f"backup #{self.snapshot_id}")
        record_event(self.services, "restore.checkpoint", database=plan.database, actor=self.actor,
                     text=f"Safety snapshot #{self.snapshot_id} taken before restore request #{row.id}",
                     detail={"backup_id": self.snapshot_id, "kind": "pre-restore"})
        return True

    def restore(self) -> list[Check] | None:
        """Fetch, restore and verify; the checks, or None when the run already failed."""
        plan, record, secrets_ = self.plan, self.record, self.services.secrets() + [self.dsn]
        started = time.monotonic()
        with scratch_dir(self.services.settings) as workdir:
            artifact = fetch_artifact(self.services.storage, record, Path(workdir))
            self.step("fetch and check", time.monotonic() - started, f"sha256 {record.sha256[:12]} matches")
            started = time.monotonic()
            if plan.create_roles:
                self.create_roles()
                started = time.monotonic()
            if plan.method == NEW_DATABASE:
                create_database(self.dsn, plan.target_dbname)
                self.created_target = True
            fresh = plan.method in (NEW_DATABASE, SIDE_DATABASE)  # a database made for this restore: nothing to clean
            if plan.method == SIDE_DATABASE:
                self.created_side = side_database_name(self.row.id)
                create_database(self.dsn, self.created_side, like=plan.target_dbname)
            sessions = JobSessions(self.dsn, "restore", self.run_.job_id)
            try:
                with self.watched(sessions):
                    run_restore(self.dsn, self.created_side or plan.target_dbname, record, artifact, Path(workdir),
                                tables=list(plan.tables) or None, jobs=plan.jobs, secrets=secrets_,
                                no_owner=plan.no_owner, server_major=self.server_major, sessions=sessions, fresh=fresh)
            except DumpError as exc:
                if not self.created_side:
                    raise
                raise DumpError(f"{exc}\nThe side database {self.created_side} is dropped; {plan.target_dbname} "
                                "was not touched") from exc
            self.target_changed = not fresh  # run_restore returns only after COMMIT
            self.release_copy_subscriptions()
            seconds = time.monotonic() - started
            tool = tool_version(pg_bin_for("pg_restore", self.server_major)) if self.server_major else None
            self.step("restore", seconds, f"{record.format} into {plan.target}" + (f" with pg_restore {tool}" if tool else "")
                      + (f" (side database {self.created_side})" if self.created_side else ""))
        self.result["restore_seconds"] = round(seconds, 3)
        health_url = (self.services.settings.database(plan.database).health_url
                      if not plan.server and plan.target_dbname == pg_snapshot.dbname_of(self.dsn) else None)
        if plan.method == SIDE_DATABASE:
            return self.verify_and_swap(health_url)
        started = time.monotonic()
        checks = verify_restored(self.target_dsn, record, list(plan.tables), health_url, fresh=plan.method == NEW_DATABASE)
        self.step("verify", time.monotonic() - started, checks_text(checks))
        return checks

    def release_copy_subscriptions(self) -> None:
        """A copy (--into another database, or onto another server) keeps its subscriptions disabled and
        without a slot: enabling or dropping one must never touch production's publisher slot."""
        plan = self.plan
        if not plan.server and plan.target_dbname == pg_snapshot.dbname_of(self.dsn):
            return  # the database itself, restored in place: its subscriptions are its own
        released = release_subscriptions(self.target_dsn)
        if released:
            self.step("subscriptions", 0, f"{', '.join(released)} left disabled with slot_name = NONE in "
                      f"{plan.target_dbname}: the copy never connects to a publisher")

    def create_roles(self) -> None:
        """From the approved plan's definitions; privileges are checked again against the server as it is."""
        started = time.monotonic()
        definitions = [p.definition for p in planned_roles(self.plan.roles)]
        if not definitions:  # a plan stored before it held the definitions: the backup's, for the names it lists
            wanted = set(self.plan.create_roles)
            definitions = [d for d in parse_definitions(self.record.role_definitions, f"backup #{self.record.id}")
                           if d.name in wanted]
        created = create_roles(self.dsn, definitions, allow_privileged=self.plan.allow_privileged_roles)
        self.step("roles", time.monotonic() - started, created.summary())
        record_privileged(self.services, self.plan.database, self.actor, self.row.id, created)

    def verify_and_swap(self, health_url: str | None) -> list[Check] | None:
        """Rows and constraints are checked on the side database, and its properties against the target's,
        before anything is replaced; the app's health after the swap, which is undone when it fails."""
        plan, started = self.plan, time.monotonic()
        checks = verify_restored(with_dbname(self.dsn, self.created_side), self.record, list(plan.tables), None,
                                 fresh=True)
        checks += deep_verify_side(self.dsn, self.created_side, self.services.settings.database(plan.database).smoke_sql,
                                   secrets=self.services.secrets() + [self.dsn])
        checks.append(self.same_as_target())
        if any(not c.ok for c in checks):
            self.step("verify", time.monotonic() - started, checks_text(checks))
            self.fail("verification failed before the swap, so the target was not touched: "
                      + "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok))
            return None
        previous = previous_database_name(self.row.id)
        swap_databases(self.dsn, plan.target_dbname, self.created_side, previous)
        self.created_side = None
        self.target_changed = True
        self.result["previous_database"] = previous
        self.step("swap", time.monotonic() - started, f"{plan.target_dbname} is the restored database; "
                  f"the one it replaced is kept as {previous}")
        if health_url:
            started = time.monotonic()
            health = check_health_url(health_url)
            checks.append(health)
            if not health.ok:  # the old database goes back in place: exactly as it was
                restored = side_database_name(self.row.id)
                try:
                    swap_databases(self.dsn, plan.target_dbname, previous, restored)
                except Exception as exc:  # both databases stay: say which holds what, drop nothing
                    self.result["kept_databases"] = {plan.target_dbname: f"backup #{self.record.id} (restored)",
                                                     previous: f"{plan.target_dbname} as it was before the restore"}
                    self.step("verify", time.monotonic() - started, checks_text(checks))
                    self.fail(f"{health.detail} after the swap, and putting the previous database back failed "
                              f"({redact(str(exc), self.services.secrets())}): {plan.target_dbname} holds the restored "
                              f"backup #{self.record.id}, {previous} holds {plan.target_dbname} as it was before; "
                              "nothing was dropped")
                    return None
                self.created_side = restored  # the restored one, dropped by fail()
                self.target_changed = False
                self.result.pop("previous_database")
                self.step("verify", time.monotonic() - started, checks_text(checks))
                self.fail(f"{health.detail} after the swap, so the previous database was put back in place")
                return None
        self.step("verify", time.monotonic() - started, checks_text(checks))
        return checks

    def same_as_target(self) -> Check:
        """The side database has the target's locale, tablespace, ACL, settings, comment (side.differences)."""
        with pg_snapshot.connect(self.dsn, autocommit=True) as conn:
            wrong = differences(database_properties(conn, self.created_side),
                                database_properties(conn, self.plan.target_dbname))
        same = f"locale, tablespace, ACL, settings and comment as {self.plan.target_dbname}'s"
        return Check("database properties", not wrong, "; ".join(wrong) if wrong else same)

    # -- reporting
    def step(self, name: str, seconds: float, detail: str) -> None:
        self.result["steps"][name] = round(seconds, 3)
        line = f"{name}: {detail} ({human_duration(seconds)})"
        self.steps.append(f"• {line}")
        self.thread.post(Notice(line))
        record_event(self.services, "restore.step", database=self.plan.database, actor=self.actor,
                     text=f"Restore request #{self.row.id}: {line}", detail={"step": name, "request_id": self.row.id})

    def watched(self, sessions: JobSessions):
        """The stall watchdog over the restore's tools. `--jobs N` writes straight into the database, so no
        bytes pass the bot to be counted: that restore is not watched rather than stopped for working."""
        if self.plan.jobs > 1:
            return contextlib.nullcontext()
        dog = self.run_.watchdog(sessions.describe, sessions.stop)
        sessions.on_bytes = dog.moved
        return dog

    def fail(self, reason: str) -> dict:
        services, row, plan = self.services, self.row, self.plan
        reason = redact(reason, services.secrets())[:1500]
        created = ([plan.target_dbname] if self.created_target else []) + ([self.created_side] if self.created_side else [])
        for name in created:
            try:  # a database this request created holds nothing anyone needs: remove it
                drop_restored_database(self.dsn, name)
            except Exception:
                log.exception("could not drop %s after a failed restore", name)
        self.result.update(ok=False, error=reason, snapshot_id=self.snapshot_id)
        if self.snapshot_id and self.target_changed:  # nothing to roll back when nothing was committed
            self.result["rollback_snapshot_id"] = self.snapshot_id  # offered by commands.restore.requests
        request_state.finish_request(services.store, row.id, request_state.FAILED, self.result)
        self.run_.fail(reason, text=f"Restore request #{row.id} failed: {reason}", detail={"request_id": row.id})
        self.update(note=f"Failed: {reason}")
        self.thread.post(Notice(f":x: Restore request #{row.id} failed: {reason}"))
        self.run_.after(f"restore request #{row.id}")  # the timeline outlives this host
        return self.result

    def succeed(self) -> dict:
        services, row, plan = self.services, self.row, self.plan
        self.result.update(ok=True, snapshot_id=self.snapshot_id)
        request_state.finish_request(services.store, row.id, request_state.SUCCEEDED, self.result)
        self.run_.succeed(f"Restore request #{row.id} succeeded", detail={"backup_id": self.record.id, "request_id": row.id})
        total = sum(self.result["steps"].values())
        self.update(note=f"Done in {human_duration(total)}.")
        self.thread.post(Notice(f":white_check_mark: Restore request #{row.id} restored backup #{self.record.id} into "
                                f"{plan.target} and verified it ({human_duration(total)})."))
        self.run_.after(f"restore request #{row.id}")
        return self.result

    def update(self, note: str | None = None) -> None:
        row = request_state.get_request(self.services.store, self.row.id)
        if row.message_id:
            self.reply.update(row.message_id, plan_message(self.services, row, steps=tuple(self.steps), note=note))
