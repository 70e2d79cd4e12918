"""One database job at a time, at most [jobs] max_running at once: the claim and the slot, together.

A job is claimed first (so a second request for the same database is told "already running"
at once), then waits for a slot, telling its user how many jobs are ahead. A job that never got
its slot is marked failed, so nothing is left `running` for a restart to call interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from commands.chat.context import Actor, Services
from commands.chat.job_slots import queued_text
from commands.chat.reply import Notice, Reply
from commands.errors import AlreadyRunningError
from state import jobs as job_state

T = TypeVar("T")


def run_claimed_job(services: Services, kind: str, database: str, actor: Actor, reply: Reply, label: str,
                    work: Callable[[int], T], detail: dict | None = None) -> T:
    """Claim `database` for a `kind` job, wait for a slot, and run `work(job_id)` in it."""
    try:
        job = job_state.claim_database(services.store, kind, database, actor.user, actor.channel, actor.response_url,
                                       detail=detail or {})
    except job_state.DatabaseBusy as busy:
        raise AlreadyRunningError(f"a {busy.job.kind} of {database} is already running (#{busy.job.id})") from None
    in_slot = False
    try:
        with services.job_slots.acquire(f"{label} #{job.id} of {database}",
                                        on_queued=lambda ahead: reply.ephemeral(Notice(queued_text(ahead)))):
            in_slot = True
            return work(job.id)
    except BaseException:
        if not in_slot:
            job_state.finish_job(services.store, job.id, job_state.FAILED, "stopped while waiting for a job slot")
        raise
