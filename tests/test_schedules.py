"""Scheduled work with an injected clock: no test sleeps for a schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bot.scheduler import build_scheduler
from commands.errors import ConfigError
from commands.schedules import ScheduledJob, build_digest, check_rpo, run_scheduled, scheduled_jobs
from state import health as health_state
from state.backups import list_backups
from tests.builders import FakeClock, Recorder, make_console, make_settings

CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))


def alerts(reply):
    """The alerts posted, without the alert incident's header (tests/test_alarms.py checks that)."""
    return [t for t in reply.texts("C0ALERTS") if not t.startswith(":rotating_light: Incident #")]


def services_for(tmp_path, dsn, clock, **sections):
    return make_console(make_settings(tmp_path, dsn, channels=CHANNELS, **sections), clock=clock).services


def test_jobs_are_built_from_config_with_their_next_runs(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock, schedules={
        "digest": "0 9 * * *",
        "main": {"backup": "0 2 * * *", "backup_weekly": {"cron": "0 3 * * 0", "format": "plain"},
                 "retention": "30 4 * * *", "drill": "0 5 * * 1"}})
    jobs = {job.name: job for job in scheduled_jobs(services)}
    assert set(jobs) == {"digest", "backup main", "backup_weekly main", "retention main", "drill main"}
    assert jobs["backup_weekly main"].format == "plain"
    scheduler = build_scheduler(services, Recorder)
    triggers = {job.id: job.trigger for job in scheduler.get_jobs()}
    assert {"rpo check", "expire restore requests"} <= set(triggers)
    now = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)  # a Saturday
    assert triggers["backup main"].get_next_fire_time(None, now) == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert triggers["backup_weekly main"].get_next_fire_time(None, now) == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert triggers["drill main"].get_next_fire_time(None, now) == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    # crontab's 0 and 7 are Sunday (APScheduler's own numbering starts at Monday)
    from commands.schedules import cron_trigger

    assert cron_trigger("0 3 * * 7").get_next_fire_time(None, now) == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert cron_trigger("0 3 * * 1-5").get_next_fire_time(None, now) == datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    job = scheduler.get_job("backup main")
    assert job.coalesce and job.max_instances == 1


@pytest.mark.parametrize("schedules, message", [
    ({"main": {"backup": "every night"}}, "schedules.main.backup: 'every night' is not a cron expression"),
    ({"main": {"backup": {"cron": "0 2 * * *", "format": "zip"}}}, "schedules.main.backup.format"),
    ({"nosuchdb": {"backup": "0 2 * * *"}}, "schedules.nosuchdb: no database"),
    ({"main": {"vacuum": "0 2 * * *"}}, "schedules.main.vacuum: unknown schedule"),
    ({"weekly": "0 2 * * *"}, "schedules.weekly: unknown key"),
])
def test_bad_schedules_name_the_key(tmp_path, sample_dsn, clock, schedules, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        services_for(tmp_path, sample_dsn, clock, schedules=schedules)


def test_scheduled_backup_runs_is_recorded_and_posts(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock)
    reply = Recorder()
    assert run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main")) == "succeeded"
    [record] = list_backups(services.store)
    assert record.kind == "scheduled"
    assert any("Backup #1 of main (scheduled)" in t and "succeeded" in t for t in reply.texts("C0DIGEST"))
    [run] = health_state.runs(services.store, job="backup main")
    assert run["status"] == "succeeded" and run["started_at"] == "2026-11-28T02:00:00+00:00"


def test_failed_scheduled_run_alerts(tmp_path, pg_cluster, clock):
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/gone"
    services = services_for(tmp_path, dsn, clock)
    reply = Recorder()
    assert run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main")) == "failed"
    [alert] = alerts(reply)
    assert "Scheduled backup main failed" in alert and "cannot connect" in alert
    assert pg_cluster.password not in alert
    assert health_state.runs(services.store, job="backup main")[0]["status"] == "failed"


def test_dead_man_alert_once_per_breach_and_on_recovery(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock, health={"rpo_hours": 24})
    reply = Recorder()
    run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main"))
    assert check_rpo(services, reply) == []
    clock.now += timedelta(hours=25)
    [breach] = check_rpo(services, reply)
    assert "main has no successful backup within its RPO of 24h00m" in breach
    for _ in range(5):  # every minute: no repeats while the breach lasts
        clock.now += timedelta(minutes=1)
        assert check_rpo(services, reply) == []
    run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main"))
    [recovered] = check_rpo(services, reply)
    assert "main is within its RPO again" in recovered
    assert len([t for t in alerts(reply) if "RPO" in t]) == 2


def test_an_alert_slack_refused_is_posted_at_the_next_check(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock, health={"rpo_hours": 24})

    class Down(Recorder):
        def post(self, message, channel=None):
            raise ConnectionError("Slack is unreachable")

    assert check_rpo(services, Down()) == []  # no backup at all: a breach, but the post failed
    reply = Recorder()
    clock.now += timedelta(minutes=1)
    [breach] = check_rpo(services, reply)  # tried again, not lost
    assert "main has no successful backup within its RPO" in breach
    assert len(alerts(reply)) == 1


def test_retention_does_nothing_while_scheduled_backups_fail(tmp_path, sample_dsn, pg_cluster, clock):
    services = services_for(tmp_path, sample_dsn, clock, retention={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0})
    reply = Recorder()
    for _ in range(3):
        run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main"))
        clock.now += timedelta(days=1)
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:  # the database goes away for the next run
        conn.execute("ALTER DATABASE " + sample_dsn.rsplit("/", 1)[1] + " WITH ALLOW_CONNECTIONS false")
    try:
        assert run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main")) == "failed"
        assert run_scheduled(services, reply, ScheduledJob("retention main", "0 4 * * *", "retention", "main")) == "failed"
        assert any("deleted nothing: the latest scheduled backup of this database failed" in t for t in reply.texts("C0ALERTS"))
        assert len(list_backups(services.store)) == 3
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE " + sample_dsn.rsplit("/", 1)[1] + " WITH ALLOW_CONNECTIONS true")
    run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main"))
    assert run_scheduled(services, reply, ScheduledJob("retention main", "0 4 * * *", "retention", "main")) == "succeeded"
    remaining = list_backups(services.store)
    assert len(remaining) == 1
    assert sorted(p.name for p in (tmp_path / "backups" / "main").rglob("*") if p.is_file()) == sorted(
        [remaining[0].key.rsplit("/", 1)[1], remaining[0].manifest_key.rsplit("/", 1)[1],
         remaining[0].globals_file["key"].rsplit("/", 1)[1]])


def test_prune_dry_run_shows_what_goes_and_stays(tmp_path, sample_dsn, clock):
    console = make_console(make_settings(tmp_path, sample_dsn, retention={"max_age_days": 30}), clock=clock)
    console.run("/backup")
    clock.now += timedelta(days=31)
    console.run("/backup")
    out = console.run("/backup prune --dry-run")
    assert "would delete 1, keeps 1 (dry run)" in out
    assert "goes:  #1" in out and "older than max_age_days=30" in out and "stays: #2" in out
    assert len(list_backups(console.services.store)) == 2
    out = console.run("/backup prune")
    assert "deleted 1, keeps 1" in out
    assert [r.id for r in list_backups(console.services.store)] == [2]
    assert "#1" not in console.run("/backup list")


def test_digest(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock)
    reply = Recorder()
    run_scheduled(services, reply, ScheduledJob("backup main", "0 2 * * *", "backup", "main"))
    assert run_scheduled(services, reply, ScheduledJob("digest", "0 9 * * *", "digest")) == "succeeded"
    digest = reply.texts("C0DIGEST")[-1]
    assert "*main*:" in digest and "backups in the last 24 h: 1 (latest #1)" in digest
    assert "RPO 24h00m: ok" in digest and "last verified drill: none" in digest
    assert "failures since the previous digest: 0" in digest
    assert "*backupbot digest*" in build_digest(services).text()
