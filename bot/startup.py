"""What happens once when the bot (or the console) starts: state, storage, interrupted jobs."""

from __future__ import annotations

import logging

from bot.logs import register_secrets
from commands.context import Services, build_services
from commands.settings import Settings
from state.jobs import mark_interrupted_jobs

log = logging.getLogger(__name__)


def start_services(settings: Settings, **overrides) -> Services:
    register_secrets(settings.secrets())
    services = build_services(settings, **overrides)
    for job in mark_interrupted_jobs(services.store):
        log.warning("%s #%s of %s was interrupted by a restart", job.kind, job.id, job.database)
    return services
