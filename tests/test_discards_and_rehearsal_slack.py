"""Through the real Bolt app over HTTP: the restore request shows what it discards; a scheduled DR
rehearsal posts its result and a failed one opens an incident in Slack."""

from __future__ import annotations

import json

from bot.scheduler import build_scheduler
from bot.server import scheduler_reply_factory
from state import incidents as incident_state
from tests.builders import make_settings
from tests.test_rehearsal import CHECK, check_command
from tests.test_write_counters import notifications_1600

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def test_the_restore_request_in_slack_shows_the_row_changes_it_discards(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                        start_bot, pg_cluster):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    notifications_1600(sample_dsn)
    bot.slack.command("/restore", "1", user="U0OPS")
    request = fake_slack.wait_for_text("Restore request #1", method="chat.postMessage")
    wanted = "Discards: about 1,600 row changes made since backup #1 in 1 table(s): public.notifications 1,600"
    assert wanted in request["text"]
    shown = json.dumps(request["blocks"])  # what people see in Slack, not only the notification text
    assert wanted in shown and "Last write: within the last" in shown
    assert pg_cluster.password not in fake_slack.all_bodies()


def test_a_scheduled_rehearsal_posts_to_slack_and_a_failed_one_opens_an_incident(tmp_path, sample_dsn, slack_env,
                                                                                 fake_slack, start_bot, pg_cluster):
    settings = make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS,
                             channels={"alerts": "C0ALERTS", "digest": "C0DIGEST"},
                             databases={"main": {"url_env": "DATABASE_URL", "verify_command": check_command(tmp_path)}},
                             schedules={"main": {"rehearsal": "0 6 * * 0"}})
    bot = start_bot(settings)
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    # the scheduler exactly as `backupbot run` builds it, not started: the test runs the job now
    scheduler = build_scheduler(bot.services, scheduler_reply_factory(bot.services, bot.client))
    job = scheduler.get_job("rehearsal main")
    assert job.func(*job.args) == "succeeded"
    passed = fake_slack.wait_for_text("DR rehearsal of main passed: backup #1 restored on a new cluster",
                                      method="chat.postMessage")
    assert passed["channel"] == "C0DIGEST" and "application checks: `" in passed["text"]
    (tmp_path / "app_checks.py").write_text(CHECK.replace("sys.exit(int(sys.argv[2]))", "sys.exit(1)"))
    assert job.func(*job.args) == "failed"
    alarm = fake_slack.wait_for_text("DR rehearsal of main failed: application checks", method="chat.postMessage")
    header = fake_slack.wait_for_text("main: DR rehearsal failed", method="chat.postMessage")
    assert alarm["channel"] == header["channel"] == "C0ALERTS" and "Incident #1" in header["text"]
    fake_slack.wait_for_text("Opened incident #1.", method="chat.postMessage")
    [incident] = incident_state.list_incidents(bot.services.store, "C0ALERTS")
    assert incident.is_open and incident.header_message_id
    assert pg_cluster.password not in fake_slack.all_bodies()
