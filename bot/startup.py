"""What happens once when the bot (or the console) starts: the instance lock, state, storage, interrupted jobs,
and what killed jobs left in the private scratch folder."""

from __future__ import annotations

import logging

from bot.logs import register_secrets
from commands.chat.context import Services, build_services
from commands.chat.reply import Notice, Reply
from commands.pg.scratch import clean_scratch
from commands.restore.copies import expire_copies, resume_copies
from commands.restore.requests import clean_up_interrupted
from commands.settings import Settings
from state.approvals import mark_interrupted_requests
from state.jobs import mark_interrupted_jobs
from state.lock import InstanceLock

log = logging.getLogger(__name__)


def start_services(settings: Settings, **overrides) -> Services:
    """Take the state database's instance lock, open state and storage; every job left `running` by a
    previous process becomes `interrupted`, and its partial files and scratch files go.

    Raises InstanceLockedError while another backupbot (or another Services in this process) holds
    the same state database: its jobs are alive, not interrupted. `services.close()` lets go.
    """
    register_secrets(settings.secrets())
    lock = None
    if settings.state_path != ":memory:":
        lock = InstanceLock(settings.state_path).acquire()
    try:
        services = build_services(settings, **overrides)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    services.instance_lock = lock
    services.interrupted_jobs = interrupt_running_jobs(services, "after a restart")
    for line in expire_copies(services):  # point-in-time copies whose [restore] copy_ttl_hours ran out meanwhile
        log.warning("after a restart: %s", line)
    for line in resume_copies(services):  # the others, if their postgres stopped with the bot's unit or container
        log.warning("after a restart: %s", line)
    return services


def interrupt_running_jobs(services: Services, when: str) -> list:
    """Every job still `running` becomes `interrupted`, and its partial files and scratch files go. At start
    they died with the previous process; on a stop (bot/shutdown.py) their children were just stopped."""
    interrupted = mark_interrupted_jobs(services.store)
    for line in clean_up_interrupted(services, mark_interrupted_requests(services.store)):
        log.warning("%s: %s", when, line)
    for line in clean_scratch(services.settings):  # after the interrupted restores stopped the clusters they started
        log.warning("%s: %s", when, line)
    for job in interrupted:
        log.warning("%s #%s of %s was interrupted (%s)", job.kind, job.id, job.database, when)
    discard = getattr(services.storage, "discard_partials", None)
    if discard is not None:
        for key in discard():
            log.warning("removed %s, a partial artifact left by a stopped process", key)
    return interrupted


def report_interrupted_jobs(services: Services, reply: Reply) -> None:
    """Tell each interrupted job's channel, editing its progress message when there is one."""
    for job in getattr(services, "interrupted_jobs", []):
        notice = Notice(f":warning: {job.kind.capitalize()} #{job.id} of {job.database} was interrupted: "
                        "the bot stopped while it was running. Nothing from it was stored as a backup; run it again.")
        try:
            if job.message_id and ":" in job.message_id:
                reply.update(job.message_id, notice)
            elif job.channel:
                reply.post(notice, channel=job.channel)
        except Exception:
            log.exception("could not report interrupted job #%s", job.id)
