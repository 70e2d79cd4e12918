"""APScheduler 3 wiring: cron triggers from [schedules], plus the every-minute checks.

Missed runs are coalesced into one and a run late by up to an hour still happens; one instance
of each job at a time. The job bodies live in commands/schedules.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from commands.backup.holds import expire_holds
from commands.chat.context import Services
from commands.chat.reply import Reply
from commands.restore.copies import expire_copies
from commands.restore.requests import expire_requests
from commands.schedules import check_rpo, cron_trigger, run_scheduled, scheduled_jobs

log = logging.getLogger(__name__)

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


def build_scheduler(services: Services, reply_factory: Callable[[], Reply], timezone=UTC) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=timezone, job_defaults=JOB_DEFAULTS)
    for job in scheduled_jobs(services):
        scheduler.add_job(run_scheduled, cron_trigger(job.cron, timezone=timezone),
                          args=[services, _Lazy(reply_factory), job], id=job.name, name=job.name, **JOB_DEFAULTS)
    scheduler.add_job(_safely(check_rpo), IntervalTrigger(minutes=1), args=[services, _Lazy(reply_factory)],
                      id="rpo check", name="rpo check")
    scheduler.add_job(_safely(expire_requests), IntervalTrigger(minutes=1), args=[services, _Lazy(reply_factory)],
                      id="expire restore requests", name="expire restore requests")
    scheduler.add_job(_safely(expire_copies), IntervalTrigger(minutes=1), args=[services, _Lazy(reply_factory)],
                      id="drop expired copies", name="drop expired copies")  # [restore] copy_ttl_hours
    scheduler.add_job(_safely(expire_holds), IntervalTrigger(minutes=1), args=[services, _Lazy(reply_factory)],
                      id="expire legal holds", name="expire legal holds")
    return scheduler


def _safely(fn):
    def run(*args):
        try:
            fn(*args)
        except Exception:
            log.exception("%s failed", fn.__name__)

    run.__name__ = fn.__name__
    return run


class _Lazy:
    """A Reply made when first used, on the scheduler's thread."""

    def __init__(self, factory: Callable[[], Reply]):
        self.factory = factory
        self.reply = None

    def __getattr__(self, name):
        if self.reply is None:
            self.reply = self.factory()
        return getattr(self.reply, name)
