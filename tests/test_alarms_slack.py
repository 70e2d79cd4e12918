"""Issue #22 items 2, 3 and 5 through the real Bolt app over HTTP: signed commands and reactions in, Web API
calls out, a real cluster behind, and the injected clock driving the watchdog and the ceiling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bot.startup import start_services
from commands.chat import stall
from state import incidents as incident_state
from state.backups import list_backups
from tests.builders import FakeClock, make_settings, wait_for
from tests.test_alert_webhooks import TOKEN, Recorder, run_job, scheduled_bot
from tests.test_restore_slack import request_message

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}
CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}


@pytest.fixture
def webhook():
    server = Recorder()
    yield server
    server.close()




def test_a_stalled_slack_backup_is_stopped_and_opens_an_alert_incident(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                        start_bot):
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    settings = make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS, channels=CHANNELS,
                             jobs={"stall_minutes": 10})
    bot = start_bot(settings, start_services(settings, clock=clock))
    holder = psycopg.connect(sample_dsn, application_name="reindex-by-hand")
    try:
        holder.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        status, _, seconds = bot.slack.command("/backup", "main", user="U0OPS")
        assert status == 200 and seconds < 3
        wait_for(lambda: len(stall.active()) == 1, "the backup's watchdog")
        with psycopg.connect(sample_dsn, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'backupbot backup #1' "
                                          "AND wait_event_type = 'Lock'").fetchone(), "pg_dump to wait on the lock")
        [dog] = stall.active()
        clock.advance(minutes=10, seconds=1)
        assert dog.check()
        failed = fake_slack.wait_for_text("Backup #1 failed: stalled: backup #1 of main moved no bytes for 10m01s",
                                          method="chat.update")
        assert f"held by pid {holder.info.backend_pid} (user postgres, application reindex-by-hand" in failed["text"]
        alert = fake_slack.wait_for_text(":rotating_light: Backup #1 of main was stopped: stalled", method="chat.postMessage")
        assert alert["channel"] == "C0ALERTS"
        header = fake_slack.wait_for_text("Incident #1 · SEV2 major · OPEN — main: backup #1 stalled",
                                          method="chat.postMessage")
        assert header["channel"] == "C0ALERTS" and "opened by backupbot (an alarm)" in header["text"]
        assert holder.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted").fetchone()[0] > 0
    finally:
        holder.rollback()
        holder.close()
    incident = incident_state.open_incident_in(bot.services.store, "C0ALERTS")
    assert incident.database == "main" and "identify" in incident.checklist


def test_a_legal_hold_asked_and_approved_in_slack_keeps_a_backup_past_the_ceiling(tmp_path, sample_dsn, slack_env,
                                                                                   fake_slack, start_bot):
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=40))
    settings = make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS, channels=CHANNELS,
                             retention={"max_age_days": 30})
    bot = start_bot(settings, start_services(settings, clock=clock))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    bot.slack.command("/backup", "keep 1 --reason SEC inquiry 2026-77", user="U0OPS")
    fake_slack.wait_for_text("Legal hold request #1: keep backup #1 of main", method="chat.postMessage")
    fake_slack.wait_for(lambda api: len(api.said("reactions.add")) == 2, what="the bot's approve/reject reactions")
    message = request_message(fake_slack)
    bot.slack.reaction("U0OPS", "white_check_mark", message)  # the requester
    fake_slack.wait_for_text("<@U0OPS> asked for this hold; their reaction does not count", method="chat.postMessage")
    bot.slack.reaction("U0APP1", "white_check_mark::skin-tone-2", message)
    fake_slack.wait_for_text("Legal hold #1 is active: backup #1 is kept past max_age_days", method="chat.postMessage")
    fake_slack.wait_for_text("Legal hold ACTIVE #1", method="chat.update")
    clock.advance(days=31)
    bot.slack.command("/backup", "prune main --dry-run", user="U0OPS")
    dry = fake_slack.wait_for_text("Retention for main: would delete 0, keeps 1 (dry run)")
    assert "but kept: legal hold #1: SEC inquiry 2026-77" in dry["text"]
    assert ":lock: legal hold #1 keeps backup #1 past the ceiling: SEC inquiry 2026-77" in dry["text"]
    bot.slack.command("/backup", "prune main", user="U0OPS")
    fake_slack.wait_for_text("Retention for main: deleted 0, keeps 1")
    assert [r.id for r in list_backups(bot.services.store)] == [1]


def test_a_failed_scheduled_backup_opens_the_alert_incident_in_slack_and_the_next_failure_adds_to_it(
        tmp_path, sample_dsn, slack_env, fake_slack, webhook, pg_cluster):
    services, scheduler = scheduled_bot(tmp_path, sample_dsn, slack_env, webhook, pg_cluster)
    assert run_job(scheduler, "backup broken") == "failed"
    posted = [a for a in fake_slack.said("chat.postMessage") if a.get("channel") == "C0ALERTS"]
    assert any(a["text"].startswith(":rotating_light: Scheduled backup broken failed") for a in posted)
    [header] = [a for a in posted if "Incident #1 · SEV2 major · OPEN — broken: scheduled backup broken failed" in a["text"]]
    assert ":white_check_mark: 1. Identify" in header["text"]
    assert run_job(scheduler, "backup broken") == "failed"
    added = fake_slack.wait_for_text("Added to incident #1: :rotating_light: Scheduled backup broken failed",
                                     method="chat.postMessage")
    assert added["channel"] == "C0ALERTS" and added.get("thread_ts")
    assert len([a for a in fake_slack.said("chat.postMessage") if "Incident #1 · SEV2" in a["text"]]) == 1
    assert len(webhook.to(f"/hook/{TOKEN}")) == 2  # each failure's alert also reached the webhook
    assert pg_cluster.password not in fake_slack.all_bodies()
