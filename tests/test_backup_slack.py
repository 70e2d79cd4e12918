"""/backup through the real Bolt app over HTTP: signed slash commands in, Web API calls out."""

from __future__ import annotations

import json
import time

from state.backups import list_backups
from tests.builders import make_settings


def test_backup_from_slack_posts_progress_and_result(tmp_path, sample_dsn, slack_env, fake_slack, start_bot, pg_cluster):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    status, body, seconds = bot.slack.command("/backup", "main --format gzip", user="U0ALICE")
    assert status == 200 and seconds < 3
    started = fake_slack.wait_for_text("Backup #1 of main started by <@U0ALICE>", method="chat.postMessage")
    assert started["channel"] == "C0OPS"
    done = fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    assert "sha256:" in done["text"] and "Rows:" in done["text"]
    # one message, updated in place
    assert len(fake_slack.said("chat.postMessage")) == 1
    assert {u["ts"] for u in fake_slack.said("chat.update")} == {"1700000000.000001"}
    assert [r.id for r in list_backups(bot.services.store)] == [1]
    # no password anywhere the bot wrote to Slack
    assert pg_cluster.password not in fake_slack.all_bodies()


def test_a_bad_command_gets_an_ephemeral_usage(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    status, _, seconds = bot.slack.command("/backup", "--format zip", user="U0ALICE")
    assert status == 200 and seconds < 3
    answer = fake_slack.wait_for_text("unknown format 'zip'", method="chat.postEphemeral")
    assert answer["user"] == "U0ALICE" and "Usage:" in answer["text"]
    assert fake_slack.said("chat.postMessage") == []


def test_operators_from_a_usergroup(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    fake_slack.usergroups["S0DBAS"] = ["U0BOB"]
    settings = make_settings(tmp_path, sample_dsn, env=slack_env, access={"operators": ["S0DBAS"], "approvers": ["U0CAROL"]})
    bot = start_bot(settings)
    bot.slack.command("/backup", "", user="U0MALLORY")
    fake_slack.wait_for_text("<@U0MALLORY> is not an operator", method="chat.postEphemeral")
    bot.slack.command("/backup", "", user="U0BOB")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    assert any(c.get("usergroup") == "S0DBAS" for c in fake_slack.said("usergroups.users.list"))


def test_falls_back_to_response_url_when_not_in_channel(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    fake_slack.not_in_channels.add("C0PRIVATE")
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    bot.slack.command("/backup", "", user="U0ALICE", channel="C0PRIVATE")
    fake_slack.wait_for(lambda api: any("succeeded" in a.get("text", "") for a in api.said("response_url")),
                        what="the result through response_url")
    assert [r.id for r in list_backups(bot.services.store)] == [1]


def test_a_second_backup_of_the_same_database_is_refused(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    from state.jobs import claim_database

    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    job = claim_database(bot.services.store, "backup", "main", "U0OTHER")
    bot.slack.command("/backup", "main", user="U0ALICE")
    answer = fake_slack.wait_for_text("already running", method="chat.postEphemeral")
    assert f"(#{job.id})" in answer["text"]


def test_forged_and_stale_requests_are_rejected(tmp_path, sample_dsn, slack_env, fake_slack, start_bot, reliability):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    tries = 20
    for i in range(tries):
        body = bot.slack.command_body("/backup", "main")
        status, _, _ = bot.slack.post(body, "application/x-www-form-urlencoded", signed=False,
                                      headers={"X-Slack-Request-Timestamp": str(int(time.time())),
                                               "X-Slack-Signature": f"v0={i:064x}"})
        assert status == 401
        status, _, _ = bot.slack.post(body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 301 - i * 60)
        assert status == 401
    time.sleep(0.5)
    assert fake_slack.said("chat.postMessage") == [] and list_backups(bot.services.store) == []
    reliability("requests", "forged X-Slack-Signature", tries, "401, nothing run")
    reliability("requests", "timestamp older than 5 minutes", tries, "401, nothing run")


def test_interrupted_backup_is_reported_after_a_restart(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    from bot.slack_reply import SlackReply
    from bot.startup import report_interrupted_jobs, start_services
    from state.jobs import claim_database, get_job, set_job_message

    settings = make_settings(tmp_path, sample_dsn, env=slack_env)
    first = start_services(settings)
    job = claim_database(first.store, "backup", "main", "U0ALICE", "C0OPS")
    set_job_message(first.store, job.id, "C0OPS", "C0OPS:1700000000.000999")
    first.close()  # the first process dies with its job running
    bot = start_bot(settings)  # a new process: start-up marks the job interrupted
    assert get_job(bot.services.store, job.id).status == "interrupted"
    report_interrupted_jobs(bot.services, SlackReply(bot.client))
    update = fake_slack.wait_for_text(f"Backup #{job.id} of main was interrupted", method="chat.update")
    assert update["ts"] == "1700000000.000999"
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake_slack.wait_for_text(f"Backup #{job.id + 1} of main succeeded", method="chat.update")
    assert json.dumps(fake_slack.said("chat.update")).count("interrupted") >= 1
