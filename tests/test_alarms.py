"""Failures open incidents (issue #22 item 2): the bot speaks first, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from commands.incident.alarms import raise_alarm
from commands.schedules import ScheduledJob, check_archiving, check_rpo, run_scheduled
from state import incidents as incident_state
from tests.builders import FakeClock, Recorder, make_console, make_settings

CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}
BACKUP = ScheduledJob("backup main", "0 2 * * *", "backup", "main")


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))


def services_for(tmp_path, dsn, clock, **sections):
    return make_console(make_settings(tmp_path, dsn, channels=CHANNELS, **sections), clock=clock).services


def open_incidents(services):
    with services.store.db() as db:
        return [incident_state.get_incident(services.store, r["id"])
                for r in db.query("SELECT id FROM incidents WHERE status = 'open' ORDER BY id")]


def timeline(services, incident_id):
    return list(incident_state.iter_entries(services.store, incident_id))


def test_failed_scheduled_backup_opens_a_prefilled_incident_and_recovery_keeps_it_open(tmp_path, sample_dsn,
                                                                                       pg_cluster, clock):
    services = services_for(tmp_path, sample_dsn, clock)
    reply = Recorder()
    dbname = sample_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER DATABASE " + dbname + " WITH ALLOW_CONNECTIONS false")
    try:
        assert run_scheduled(services, reply, BACKUP) == "failed"
        [incident] = open_incidents(services)
        assert incident.channel == "C0ALERTS" and incident.database == "main" and incident.opened_by is None
        assert incident.title == "main: scheduled backup main failed"
        assert set(incident.checklist) == {"identify"}  # the DR checklist's first step, ticked
        header = [t for t in reply.texts("C0ALERTS") if t.startswith(":rotating_light: Incident #1")]
        assert header and "opened by backupbot (an alarm)" in header[0]
        assert ":white_check_mark: 1. Identify" in header[0] and ":white_large_square: 2. Select backup" in header[0]
        [evidence] = [e for e in timeline(services, incident.id) if e.kind == "alarm.raised"]
        assert "Scheduled backup main failed" in evidence.text and "not currently accepting connections" in \
            evidence.detail["error"]
        assert pg_cluster.password not in evidence.text
        clock.advance(days=1)
        assert run_scheduled(services, reply, BACKUP) == "failed"  # the next failure adds to the same incident
        [same] = open_incidents(services)
        assert same.id == incident.id
        assert len([e for e in timeline(services, incident.id) if e.kind == "alarm.raised"]) == 2
        assert any(t.startswith("Added to incident #1: :rotating_light: Scheduled backup main failed")
                   for t in reply.texts("C0ALERTS"))
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE " + dbname + " WITH ALLOW_CONNECTIONS true")
    clock.advance(days=1)
    assert run_scheduled(services, reply, BACKUP) == "succeeded"
    assert ":white_check_mark: Scheduled backup main succeeded again." in reply.texts("C0ALERTS")
    [still] = open_incidents(services)  # recovery closes the alert, not the incident
    assert still.id == incident.id and still.is_open
    assert [e.kind for e in timeline(services, incident.id)].count("alarm.cleared") == 1
    clock.advance(days=1)
    assert run_scheduled(services, reply, BACKUP) == "succeeded"  # a second success says nothing more
    assert reply.texts("C0ALERTS").count(":white_check_mark: Scheduled backup main succeeded again.") == 1


def test_an_rpo_breach_opens_an_incident_once_and_recovery_leaves_it_open(tmp_path, sample_dsn, clock):
    services = services_for(tmp_path, sample_dsn, clock, health={"rpo_hours": 24})
    reply = Recorder()
    run_scheduled(services, reply, BACKUP)
    assert open_incidents(services) == []
    clock.advance(hours=25)
    [breach] = check_rpo(services, reply)
    [incident] = open_incidents(services)
    assert incident.title == "main: RPO breached" and incident.channel == "C0ALERTS"
    [evidence] = [e for e in timeline(services, incident.id) if e.kind == "alarm.raised"]
    assert evidence.text == breach and evidence.detail["alarm"] == "rpo:main"
    assert evidence.at == "2026-11-29T03:00:00+00:00"
    for _ in range(3):
        clock.advance(minutes=1)
        assert check_rpo(services, reply) == []
    assert len(open_incidents(services)) == 1
    run_scheduled(services, reply, BACKUP)
    [recovered] = check_rpo(services, reply)
    assert "within its RPO again" in recovered
    [still] = open_incidents(services)
    assert still.is_open and still.id == incident.id
    assert [e.text for e in timeline(services, incident.id) if e.kind == "alarm.cleared"] == [recovered]


def test_stopped_archiving_and_a_failed_drill_add_to_the_incident_already_open_for_the_database(tmp_path, pg_cluster,
                                                                                              clock):
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:1/nothing"
    console = make_console(make_settings(tmp_path, dsn, channels=CHANNELS), clock=clock)
    services = console.services
    console.run("/incident open main is down --db main")  # people got there first, in their own channel
    [mine] = open_incidents(services)
    reply = Recorder()
    [text] = check_archiving(services, reply, "main", clock())
    assert "archiving cannot be checked" in text and pg_cluster.password not in text
    assert run_scheduled(services, reply, ScheduledJob("drill main", "0 5 * * 1", "drill", "main")) == "failed"
    [same] = open_incidents(services)
    assert same.id == mine.id
    raised = [e for e in timeline(services, mine.id) if e.kind == "alarm.raised"]
    assert [e.detail["alarm"] for e in raised] == ["archive:main", "scheduled:drill main"]
    assert any(t.startswith(":rotating_light: Scheduled drill main failed") for t in reply.texts("C0ALERTS"))


def test_raise_alarm_without_an_alerts_channel_still_records_the_evidence(tmp_path, clock):
    services = make_console(make_settings(tmp_path, None), clock=clock).services
    alarm = raise_alarm(services, Recorder(), "main", "job #3 stalled", evidence={"job_id": 3})
    assert alarm.incident_id is None and open_incidents(services) == []
    [row] = [r for r in incident_state.audit_rows(services.store) if r["kind"] == "alarm.raised"]
    assert row["detail"]["job_id"] == 3 and "job #3 stalled" in row["text"]
