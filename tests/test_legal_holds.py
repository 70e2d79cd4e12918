"""The 30-day ceiling is a ceiling (issue #22 item 5): warned days before, deleted at it, passed only by an
approved, audited legal hold. Real cluster, real drill, injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from commands.backup.holds import expire_holds
from commands.schedules import ScheduledJob, build_digest, check_rpo, run_scheduled
from state import incidents as incident_state
from state.backups import list_backups
from tests.builders import FakeClock, Recorder, make_console, make_settings
from tests.test_restore import message_id

ACCESS = {"operators": ["U0OPS", "U0APP1"], "approvers": ["U0APP1", "U0APP2"], "required_approvals": 1}
CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}
BACKUP = ScheduledJob("backup main", "0 2 * * *", "backup", "main")
RETENTION = ScheduledJob("retention main", "30 4 * * *", "retention", "main")


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 1, 2, 0, tzinfo=UTC))


def console_for(tmp_path, dsn, clock):
    return make_console(make_settings(tmp_path, dsn, access=ACCESS, channels=CHANNELS,
                                      health={"rpo_hours": 24 * 90},
                                      retention={"keep_last": 7, "max_age_days": 30, "ceiling_warning_days": 3}),
                        clock=clock)


def test_the_newest_verified_backup_is_warned_about_then_deleted_at_the_ceiling_even_while_backups_fail(
        tmp_path, sample_dsn, pg_cluster, clock):
    console = console_for(tmp_path, sample_dsn, clock)
    services, reply = console.services, Recorder()
    assert run_scheduled(services, reply, BACKUP) == "succeeded"
    assert "passed" in console.run("/backup verify 1").lower()
    clock.advance(days=26)
    assert check_rpo(services, reply) == []  # 4 days before the ceiling: not yet
    clock.advance(days=1, hours=1)
    [warning] = check_rpo(services, reply)
    assert "main: backup #1" in warning and "reaches the 30-day ceiling at 2026-12-01T02:00:00+00:00 (in 2d23h" in warning
    assert "with nothing newer to replace it" in warning and "`/backup keep 1 --reason TEXT`" in warning
    incident = incident_state.open_incident_in(services.store, "C0ALERTS")
    assert incident.title == "main: backup #1 reaches the ceiling" and "identify" in incident.checklist
    clock.advance(hours=12)
    assert check_rpo(services, reply) == []  # once
    dbname = sample_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER DATABASE " + dbname + " WITH ALLOW_CONNECTIONS false")
    try:
        assert run_scheduled(services, reply, BACKUP) == "failed"
    finally:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE " + dbname + " WITH ALLOW_CONNECTIONS true")
    dry = console.run("/backup prune --dry-run")
    assert "next at the 30-day ceiling: backup #1 of main, deleted 2026-12-01T02:00:00+00:00 (in 2d11h" in dry
    clock.advance(days=3)  # past the ceiling, the latest scheduled backup still failing
    assert run_scheduled(services, reply, RETENTION) == "failed"
    assert any("deleted only the 1 backup(s) past max_age_days: the latest scheduled backup of this database failed" in t
               for t in reply.texts("C0ALERTS"))
    assert list_backups(services.store) == []  # it used to survive: the newest verified one, and backups failing
    assert "#1" not in console.run("/backup list")
    [cleared] = [t for t in check_rpo(services, reply) if "ceiling" in t]  # (and an RPO breach: nothing is left)
    assert "backup #1 is no longer about to reach the ceiling unreplaced" in cleared
    assert incident_state.get_incident(services.store, incident.id).is_open  # recovery clears the alert only


def test_a_legal_hold_approved_like_a_restore_keeps_a_backup_past_the_ceiling_and_is_shown(tmp_path, sample_dsn, clock):
    console = console_for(tmp_path, sample_dsn, clock)
    services = console.services
    assert "succeeded" in console.run("/backup")
    clock.advance(days=2)
    assert "succeeded" in console.run("/backup")
    assert "needs --reason" in console.run("/backup keep 1")
    assert "there is no backup #9" in console.run("/backup keep 9 --reason court order")
    out = console.run("/backup keep 1 --reason litigation 2026-14 (counsel: J. Doe)")
    request = message_id(out, "Legal hold request #1")
    assert "keep backup #1 of main" in out and "Reason: litigation 2026-14 (counsel: J. Doe)" in out
    assert "their reaction does not count" in console.run(f":react {request} white_check_mark")  # the requester
    console.run(":as U0NOBODY")
    assert "is not an approver" in console.run(f":react {request} white_check_mark")
    console.run(":as U0APP1")
    assert "Legal hold #1 is active: backup #1 is kept past max_age_days" in console.run(
        f":react {request} white_check_mark")
    console.run(":as U0APP2")
    assert "Legal hold #1 is active: @U0APP2's reaction does not count" in console.run(
        f":react {request} white_check_mark")  # exactly once
    console.run(":as U0OPS")
    audit = [r for r in incident_state.audit_rows(services.store, limit=500) if r["kind"].startswith("retention.hold")]
    assert [r["kind"] for r in reversed(audit)] == ["retention.hold_requested", "retention.hold_approved",
                                                      "retention.hold_active"]
    clock.advance(days=29)  # #1 is 31 days old, #2 is 29
    reply = Recorder()
    assert [t for t in check_rpo(services, reply) if "ceiling" in t] == [next(
        t for t in reply.texts("C0ALERTS") if "backup #2" in t)]  # #2 is warned about; #1 is held
    dry = console.run("/backup prune --dry-run")
    assert "stays: #1" in dry and "but kept: legal hold #1: litigation 2026-14 (counsel: J. Doe)" in dry
    assert ":lock: legal hold #1 keeps backup #1 past the ceiling: litigation 2026-14" in dry
    assert "next at the 30-day ceiling: backup #2 of main, deleted 2026-12-03T02:00:00+00:00 (in 24h00m)" in dry
    listed = console.run("/backup list")
    assert ":lock: legal hold #1 keeps backup #1" in listed and "next at the 30-day ceiling: backup #2" in listed
    digest = build_digest(services).text()
    assert ":lock: legal hold #1 keeps backup #1" in digest and "next at the 30-day ceiling: backup #2" in digest
    assert "deleted 0, keeps 2" in console.run("/backup prune")
    clock.advance(days=1, hours=1)
    assert "deleted 1, keeps 1" in console.run("/backup prune")  # #2 at the ceiling, unheld: deleted
    assert [r.id for r in list_backups(services.store)] == [1]


def test_a_hold_request_expires_and_a_rejected_hold_keeps_nothing(tmp_path, sample_dsn, clock):
    console = console_for(tmp_path, sample_dsn, clock)
    assert "succeeded" in console.run("/backup")
    first = message_id(console.run("/backup keep 1 --reason audit"), "Legal hold request #1")
    second = message_id(console.run("/backup keep 1 --reason audit again"), "Legal hold request #2")
    console.run(":as U0APP1")
    assert "rejected legal hold #2" in console.run(f":react {second} x")
    clock.advance(minutes=29)
    assert expire_holds(console.services, Recorder()) == []
    clock.advance(minutes=2)
    reply = Recorder()
    assert expire_holds(console.services, reply) == [1]  # the scheduler's every-minute job
    assert any(t.startswith(":hourglass: Legal hold EXPIRED #1") for _, t in reply.posts)
    assert "Legal hold #1 is expired" in console.run(f":react {first} white_check_mark")
    console.run(":as U0OPS")
    clock.advance(days=31)
    assert "deleted 1, keeps 0" in console.run("/backup prune")


def test_an_approver_releases_a_hold_and_the_next_prune_deletes_the_backup(tmp_path, sample_dsn, clock):
    console = console_for(tmp_path, sample_dsn, clock)
    services = console.services
    assert "succeeded" in console.run("/backup")
    clock.advance(days=1)
    assert "succeeded" in console.run("/backup")
    request = message_id(console.run("/backup keep 1 --reason litigation 2026-14"), "Legal hold request #1")
    assert "release HOLD --reason" in console.run("/backup release 1")  # the usage: a reason is needed
    assert "is pending, not active: there is nothing to release" in console.run(":as U0APP1") + console.run(
        "/backup release 1 --reason early")
    assert "is active" in console.run(f":react {request} white_check_mark")
    clock.advance(days=40)  # both past the 30-day ceiling: only the hold keeps #1
    assert "deleted 1, keeps 1" in console.run("/backup prune")

    console.run(":as U0OPS")  # an operator who is no approver
    assert "only an approver may release legal hold #1" in console.run("/backup release 1 --reason settled")
    assert "there is no legal hold #7" in console.run("/backup release 7 --reason settled")
    console.run(":as U0APP2")
    out = console.run("/backup release #1 --reason case settled 2026-12-01")
    assert "Legal hold #1 released by @U0APP2: case settled 2026-12-01" in out, out
    assert "no longer kept past the 30-day ceiling; the next prune deletes it" in out
    shown = console.run(":messages")
    assert ":unlock: Legal hold RELEASED #1" in shown and "Released at" in shown  # the hold's message, edited
    assert "is released, not active" in console.run("/backup release 1 --reason again")  # once
    console.run(":as U0OPS")
    dry = console.run("/backup prune --dry-run")
    assert "would delete 1, keeps 0" in dry and ":lock: legal hold #1" not in dry, dry
    assert "deleted 1, keeps 0" in console.run("/backup prune")
    assert list_backups(services.store) == []
    kinds = [r["kind"] for r in incident_state.audit_rows(services.store, limit=500) if r["kind"] == "retention.hold_released"]
    assert kinds == ["retention.hold_released"]
