"""The /metrics families an alert is written against: which build runs, what failed where, when each
schedule last succeeded, the real RPO and the age of the newest physical backup.

bot/server.py's collector yields these after its own; they read the state database, and the RPO asks
each pgBackRest database's pg_stat_archiver (a short connect timeout: a scrape must not hang).
"""

from __future__ import annotations

import logging

from commands.errors import BackupbotError

log = logging.getLogger(__name__)


def build_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backupbot")
    except PackageNotFoundError:
        return "unknown"


def alerting_metrics(services) -> list:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from state import metrics as state_metrics

    store, now = services.store, services.clock()
    build = GaugeMetricFamily("backupbot_build_info", "The running backupbot's version (always 1)", labels=["version"])
    build.add_metric([build_version()], 1)
    failures = CounterMetricFamily("backupbot_job_failures", "Failed jobs and scheduled runs, by database and kind",
                                   labels=["database", "kind"])
    for (database, kind), count in sorted(state_metrics.failures_by_database_and_kind(store).items()):
        failures.add_metric([database, kind], count)
    schedules = GaugeMetricFamily("backupbot_schedule_last_success_timestamp_seconds",
                                  "When each schedule's newest run succeeded", labels=["schedule"])
    for name, at in sorted(state_metrics.last_schedule_successes(store).items()):
        schedules.add_metric([name], at.timestamp())
    physical = GaugeMetricFamily("backupbot_last_physical_backup_age_seconds",
                                 "Age of the newest unexpired pgBackRest backup", labels=["database"])
    for database, at in sorted(state_metrics.newest_physical_backups(store).items()):
        physical.add_metric([database], max(0.0, (now - at).total_seconds()))
    rpo = GaugeMetricFamily("backupbot_rpo_seconds", "Age of the last WAL segment the server archived "
                            "(pg_stat_archiver): what a loss of the server now would lose", labels=["database"])
    for name, seconds in archived_wal_ages(services).items():
        rpo.add_metric([name], seconds)
    return [build, failures, schedules, physical, rpo]


def archived_wal_ages(services) -> dict[str, float]:
    """Per database with `pgbackrest`, the age of its last archived WAL; a server that does not answer
    (or has archived nothing yet) has no sample, which an `absent()` alert catches."""
    from commands.pg.pgbackrest.archiver import archiver_status

    ages = {}
    for db in services.settings.databases.values():
        if db.pgbackrest is None or not db.url:
            continue
        try:
            seconds = archiver_status(db.url, connect_timeout=3).rpo_seconds
        except (BackupbotError, OSError) as exc:
            log.warning("metrics: cannot read pg_stat_archiver of %s: %s", db.name, type(exc).__name__)
            continue
        if seconds is not None:
            ages[db.name] = seconds
    return ages
