"""One Run for every job-like operation: the claim, the slot, the guarded reply, the timed steps, the one
verdict, its audit event and the work after the job.

Backups, physical backups and drills each did these in their own copy and drifted (one forgot the
slot's failure, another the state copy). A Run owns them, so an operation only says what its engine
does. The job's final status goes through state/statuses.py: a second verdict is refused.

chat/ sits below the audit log and the state copy (commands/incident/audit.py,
commands/backup/state_copy.py), so the operation hands those in as `record_event` and `after_job`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from commands.chat.context import Actor, Services
from commands.chat.job_slots import SlotsClosed, queued_text
from commands.chat.reply import GuardedReply, Notice, Reply
from commands.chat.stall import Watchdog
from commands.errors import AlreadyRunningError, BackupbotError
from commands.redact import redact
from state import jobs as job_state
from state.statuses import JobStatus

log = logging.getLogger(__name__)

SLOT_NEVER_CAME = "stopped while waiting for a job slot"
STOPPED = ("interrupted: the bot was stopped before this job finished, and nothing from it was stored; "
           "run it again once the bot is back")


def error_text(exc: BaseException, secrets: list[str], limit: int | None = 1500) -> str:
    """What a failure says in chat and in the job row: the bot's own errors as they are, others with
    their type, secrets redacted, at most `limit` characters."""
    text = redact(str(exc) if isinstance(exc, BackupbotError) else f"{type(exc).__name__}: {exc}", secrets)
    return text[:limit] if limit else text


class Run:
    """A job from its claim to its stored verdict.

    `with Run(...) as run:` claims `lock_key` (AlreadyRunningError when another job holds it), waits
    for a job slot (telling the user how many are ahead), and leaves a job that never got its verdict
    failed, so nothing stays `running` for a restart to call interrupted. `job_id` runs under a job
    the caller already started (a restore's safety snapshot): no claim and no slot of its own."""

    def __init__(self, services: Services, kind: str, database: str, actor: Actor, reply: Reply | None, *,
                 event: str, record_event: Callable[..., object], lock_key: str | None = None,
                 label: str | None = None, detail: dict | None = None, secrets: list[str] | None = None,
                 job_id: int | None = None, after_job: Callable[[Services, str], object] | None = None,
                 on_queued: Callable[[int], None] | None = None, slot: str | None = None,
                 alarm: Callable[..., object] | None = None):
        self.services, self.kind, self.database, self.actor = services, kind, database, actor
        self.event, self.record_event, self.after_job = event, record_event, after_job
        self.alarm = alarm  # commands/incident/alarms.raise_alarm, handed in like record_event
        self.stall: Watchdog | None = None
        self.lock_key = lock_key or database
        self.label = label or kind
        self.detail = detail or {}
        self.secrets = services.secrets() + list(secrets or [])
        # Slack never decides the outcome: a failed post or update is retried and reported, never raised.
        # A run without a reply (a scheduled drill) reports through its result.
        self.reply = (GuardedReply(reply, self.secrets, services.settings.channels.alerts,
                                   webhook_url=services.settings.alerts.webhook_url) if reply is not None else None)
        if on_queued is None and reply is not None:
            on_queued = lambda ahead: reply.ephemeral(Notice(queued_text(ahead)))  # noqa: E731
        self.on_queued = on_queued
        self.job_id = job_id
        self.slot = slot  # the slot's name while it waits; by default "<label> #<job> of <database>"
        self.claims = job_id is None
        self.status: JobStatus = JobStatus.RUNNING
        self.steps: dict[str, float] = {}
        self.bytes: int | None = None  # what the job stored (a backup's size), for its end log line
        self._started = time.monotonic()
        self._exit = contextlib.ExitStack()

    # -- the claim and the slot
    def __enter__(self) -> Run:
        if not self.claims:
            self._log_start()
            return self
        try:
            job = job_state.claim_database(self.services.store, self.kind, self.lock_key, self.actor.user,
                                           self.actor.channel, self.actor.response_url, detail=self.detail)
        except job_state.DatabaseBusy as busy:
            raise AlreadyRunningError(
                f"a {busy.job.kind} of {self.database} is already running (#{busy.job.id})") from None
        self.job_id = job.id
        try:
            self._exit.enter_context(self.services.job_slots.acquire(
                self.slot or f"{self.label} #{job.id} of {self.database}", on_queued=self.on_queued))
        except SlotsClosed:
            self._finish(JobStatus.INTERRUPTED, SLOT_NEVER_CAME)
            raise
        except BaseException:
            self._finish(JobStatus.FAILED, SLOT_NEVER_CAME)
            raise
        self._log_start()
        return self

    # -- the log lines an operator reads: one at the start, one at the end, fields for --log-format json
    def _fields(self, **more) -> dict:
        return {"job_id": self.job_id, "kind": self.kind, "database": self.database, "user": self.actor.user, **more}

    def _log_start(self) -> None:
        self._started = time.monotonic()
        log.info("%s #%s of %s started", self.label, self.job_id, self.database,
                 extra={"fields": self._fields(outcome="started")})

    def _log_end(self, status: JobStatus, error: str | None) -> None:
        seconds = round(time.monotonic() - self._started, 3)
        log.log(logging.INFO if status == JobStatus.SUCCEEDED else logging.WARNING,
                "%s #%s of %s %s after %.1f s%s", self.label, self.job_id, self.database, status.value, seconds,
                f": {error}" if error else "",
                extra={"fields": self._fields(outcome=status.value, seconds=seconds, bytes=self.bytes)})

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.status == JobStatus.RUNNING and exc is not None:
                self._finish(JobStatus.FAILED, error_text(exc, self.secrets))
        finally:
            self._exit.close()
        return False

    # -- steps and the verdict
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step; its seconds are kept in `steps`, unrounded (an RTO is measured by it)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = time.monotonic() - started

    def watchdog(self, describe: Callable[[], str | None], stop: Callable[[], None]) -> Watchdog:
        """The job's stall watchdog (`with run.watchdog(...) as dog:`; report bytes with `dog.moved`): after
        `[jobs] stall_minutes` without bytes it stops the job's children, and the failure says why."""
        self.stall = Watchdog(f"{self.label} #{self.job_id} of {self.database}", self.services.clock,
                              self.services.settings.jobs.stall_minutes, describe, stop)
        return self.stall

    def started(self, text: str, detail: dict | None = None) -> None:
        self.record_event(self.services, f"{self.event}.started", database=self.database, actor=self.actor,
                          text=text, **({"detail": detail} if detail is not None else {}))

    def succeed(self, text: str, detail: dict | None = None, *, event_reply: bool = False) -> None:
        """Store the success first, then tell the audit log (and, with `event_reply`, incident headers)."""
        self._finish(JobStatus.SUCCEEDED, None)
        self.record_event(self.services, f"{self.event}.succeeded", database=self.database, actor=self.actor,
                          text=text, detail=detail, **({"reply": self.reply} if event_reply else {}))

    def fail(self, reason: str, text: str | None = None, detail: dict | None = None) -> str:
        """Store the failure (its reason redacted) and record it; returns the reason as stored. A job that
        fails because the bot is stopping (bot/shutdown.py stopped its pg_dump) is interrupted, and says so."""
        if self._stopping():
            reason, text = STOPPED, None
        reason = redact(reason, self.secrets)[:1500]
        self._finish(JobStatus.FAILED, reason)
        self.record_event(self.services, f"{self.event}.{self.status}", database=self.database, actor=self.actor,
                          text=text or reason, **({"detail": detail} if detail is not None else {}))
        if self.stall is not None and self.stall.stalled:
            self._stall_alarm()
        return reason

    def _stall_alarm(self) -> None:
        """A stalled job is alerted and opens (or adds to) the database's alert incident."""
        if self.alarm is None or self.reply is None:
            log.warning("%s #%s stalled; no alarm to raise: %s", self.label, self.job_id, self.stall.reason)
            return
        try:
            self.alarm(self.services, self.reply, self.database, f"{self.label} #{self.job_id} stalled",
                       text=f":rotating_light: {self.label[0].upper() + self.label[1:]} #{self.job_id} of "
                            f"{self.database} was stopped: {self.stall.reason}",
                       evidence={"job_id": self.job_id, "alarm": f"stall:{self.job_id}",
                                 "waiting_for": self.stall.waiting_for, "bytes_moved": self.stall.moved_bytes})
        except Exception:
            log.exception("could not raise the stall alarm of %s #%s", self.label, self.job_id)

    def finish(self, ok: bool, error: str | None, text: str, detail: dict | None = None, *,
               also: Callable[[], object] | None = None) -> None:
        """A verdict read off a result (a drill's): stored, then `also` (what the verdict proves, such as a
        backup's verification), then the audit event, in that order."""
        status = JobStatus.SUCCEEDED if ok else JobStatus.FAILED
        self._finish(status, None if ok else error)
        if also is not None:
            also()
        self.record_event(self.services, f"{self.event}.{self.status}", database=self.database,
                          actor=self.actor, text=text, detail=detail)

    def posted(self, status: Any, work: Callable[[str | None], Any], *, failed: Callable[[str], Any],
               succeeded: Callable[[Any], tuple[Any, dict]], event_detail: dict | None = None) -> Any:
        """A job whose channel message is its status (a backup): post `status`, run `work(message_id)`,
        and replace the message by `failed(error)` or by `succeeded(made)`'s final status, whose first
        result line is the success event's text. The verdict is stored before anything is published."""
        reply, message_id = self.reply, None
        try:
            message_id = reply.post(status)
            if message_id is None:
                reply.discard_pending()  # the start is not worth a retry: the result goes out as a new message
            job_state.set_job_message(self.services.store, self.job_id, self.actor.channel, message_id)
            made = work(message_id)
        except BaseException as exc:
            reason = error_text(exc, self.secrets)
            label = self.label[0].upper() + self.label[1:]
            final = failed(self.fail(reason, text=f"{label} #{self.job_id} failed: {reason}", detail=event_detail))
            self._publish(message_id, final)
            reply.settle_in_background()
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, BackupbotError):
                log.error("%s #%s failed: %s", self.label, self.job_id, final.error, exc_info=exc)
            return final
        final, detail = succeeded(made)
        self.bytes = getattr(getattr(final, "record", None), "size", None)
        self.succeed(final.result_lines()[0], detail=detail, event_reply=True)
        self._publish(message_id, final)
        self.after(f"{self.label} #{self.job_id}")
        return final

    def _publish(self, message_id: str | None, status: Any) -> None:
        self.reply.stop_progress()
        if message_id:
            self.reply.update(message_id, status)
        else:
            self.reply.post(status)

    def after(self, what: str) -> None:
        """After the verdict: the state database's copy (so the catalog outlives this host), then the
        undelivered chat messages are retried in the background."""
        if self.after_job is not None:
            self.after_job(self.services, what)
        if self.reply is not None:
            self.reply.settle_in_background()

    def _stopping(self) -> bool:
        """True once the stopping bot has begun to stop jobs' children (after the grace period)."""
        interrupting = getattr(self.services, "interrupting", None)
        return interrupting is not None and interrupting.is_set()

    def _finish(self, status: JobStatus, error: str | None) -> None:
        """The job's verdict; a run refused before its claim (a changed plan, a busy database) has no job.
        A failure while the bot stops is recorded as interrupted: the stop, not the job, ended it."""
        if status == JobStatus.FAILED and self._stopping():
            status, error = JobStatus.INTERRUPTED, STOPPED
        if self.job_id is None:
            self.status = status
            return
        job_state.finish_job(self.services.store, self.job_id, status, error)
        self.status = status
        self._log_end(status, error)
