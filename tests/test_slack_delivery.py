"""Slack never decides a job's fate: failed or rate-limited chat calls are retried, never fatal."""

from __future__ import annotations

import pytest

from bot.startup import start_services
from state.backups import list_backups
from state.jobs import get_job
from tests.builders import make_settings

ACCESS = {"operators": ["U0ALICE"], "approvers": ["U0CAROL"]}


@pytest.fixture
def fast_retries(monkeypatch):
    """Progress on every chunk, no per-channel pacing, retries within seconds (the real ones take a minute)."""
    monkeypatch.setattr("commands.chat.reply.RETRY_DELAYS", (0.3, 0.5, 1.0, 2.0, 4.0))
    monkeypatch.setattr("bot.slack_reply.PROGRESS_INTERVAL", 0.0)


def start(tmp_path, sample_dsn, slack_env, start_bot, **sections):
    settings = make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS, **sections)
    return start_bot(settings, start_services(settings, progress_every=0.0))


def test_every_chat_update_failing_does_not_fail_the_backup(tmp_path, sample_dsn, slack_env, fake_slack, start_bot,
                                                            fast_retries, reliability):
    fake_slack.fail_methods["chat.update"] = "cant_update_message"
    bot = start(tmp_path, sample_dsn, slack_env, start_bot)
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake_slack.wait_for_text("Backup #1 of main started by <@U0ALICE>", method="chat.postMessage")
    # the backup is catalogued although Slack refused every update, progress included
    fake_slack.wait_for(lambda api: list_backups(bot.services.store), what="the backup in the catalog")
    # the job is finished right after its backup is catalogued: wait for it rather than race it
    fake_slack.wait_for(lambda api: get_job(bot.services.store, 1).status != "running", what="the job to finish")
    assert get_job(bot.services.store, 1).status == "succeeded"
    assert fake_slack.said("chat.update"), "the bot tried to update its message"
    bot.slack.command("/backup", "list", user="U0ALICE")
    listed = fake_slack.wait_for_text("Backups of all databases", method="chat.postEphemeral")
    assert "#1 · main" in listed["text"]
    # Slack answers again: the result arrives in the original message
    fake_slack.fail_methods.clear()
    done = fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update", timeout=20)
    assert done["ts"] == "1700000000.000001"
    assert not any("failed" in t for t in fake_slack.texts())
    reliability("delivery", "every chat.update refused during a backup (progress and result)", 1,
                "backup stored and catalogued; the result arrives once Slack answers", 0)


def test_what_never_gets_through_goes_to_the_alerts_channel(tmp_path, sample_dsn, slack_env, fake_slack, start_bot,
                                                            fast_retries):
    fake_slack.fail_methods["chat.update"] = "message_not_found"  # someone deleted the message
    bot = start(tmp_path, sample_dsn, slack_env, start_bot, channels={"alerts": "C0ALERTS"})
    bot.slack.command("/backup", "main", user="U0ALICE")
    alert = fake_slack.wait_for(
        lambda api: next((a for a in api.said("chat.postMessage") if a.get("channel") == "C0ALERTS"), None),
        timeout=30, what="an alert about the undelivered result")
    assert "could not deliver" in alert["text"] and "Backup #1" in alert["text"]
    assert [r.id for r in list_backups(bot.services.store)] == [1]


def test_a_429_with_retry_after_is_waited_out_and_the_message_arrives(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                      start_bot, reliability):
    fake_slack.rate_limited["chat.postMessage"] = 1
    fake_slack.rate_limited["chat.update"] = 1
    fake_slack.retry_after = 1
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update", timeout=30)
    posts = [a for a in fake_slack.said("chat.postMessage") if "started by" in a.get("text", "")]
    assert len(posts) == 2, "the 429'd post was sent again"
    assert posts[1]["_at"] - posts[0]["_at"] >= 0.9, "Retry-After was respected"
    assert [r.id for r in list_backups(bot.services.store)] == [1]
    reliability("delivery", "HTTP 429 with Retry-After on chat.postMessage and chat.update", 2,
                "waited out and sent again; the backup succeeded", 0)


def test_a_result_through_response_url_uses_it_only_for_start_and_result(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                         start_bot, fast_retries):
    fake_slack.not_in_channels.add("C0PRIVATE")
    bot = start(tmp_path, sample_dsn, slack_env, start_bot)
    bot.slack.command("/backup", "main", user="U0ALICE", channel="C0PRIVATE")
    fake_slack.wait_for(lambda api: any("succeeded" in a.get("text", "") for a in api.said("response_url")),
                        what="the result through response_url")
    uses = fake_slack.said("response_url")
    assert len(uses) == 2 and "started by" in uses[0]["text"] and "succeeded" in uses[1]["text"]


# ---------------------------------------------------------------- channel membership before a restore request


def slack_reply_in(channel, slack_env, tmp_path, sample_dsn):
    from bot.server import make_client
    from bot.slack_reply import SlackReply

    client = make_client(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    return SlackReply(client, user="U0ALICE", channel=channel)


def test_a_public_channel_the_bot_is_not_in_is_joined(tmp_path, sample_dsn, slack_env, fake_slack):
    from commands.chat.reply import GuardedReply, ThreadReply, check_can_collect_reactions

    fake_slack.channels["C0PUBLIC"] = {"name": "dba", "is_member": False}
    reply = slack_reply_in("C0PUBLIC", slack_env, tmp_path, sample_dsn)
    check_can_collect_reactions(ThreadReply(GuardedReply(reply), None))
    assert [c["channel"] for c in fake_slack.said("conversations.join")] == ["C0PUBLIC"]
    check_can_collect_reactions(reply)  # now a member: no second join
    assert len(fake_slack.said("conversations.join")) == 1
    assert fake_slack.said("conversations.info")[0]["channel"] == "C0PUBLIC"


def test_a_private_channel_the_bot_is_not_in_asks_for_an_invite(tmp_path, sample_dsn, slack_env, fake_slack):
    from commands.chat.reply import GuardedReply, check_can_collect_reactions
    from commands.errors import ChannelAccessError

    fake_slack.channels["C0SECRET"] = {"name": "secret-dba", "is_private": True, "is_member": False}
    reply = GuardedReply(slack_reply_in("C0SECRET", slack_env, tmp_path, sample_dsn))
    with pytest.raises(ChannelAccessError, match="invite @backupbot to #secret-dba first"):
        check_can_collect_reactions(reply)
    assert fake_slack.said("conversations.join") == []
    fake_slack.channels["C0GONE"] = {"missing": True}  # what Slack says of a private channel the bot is not in
    with pytest.raises(ChannelAccessError, match="invite @backupbot to <#C0GONE> first"):
        check_can_collect_reactions(slack_reply_in("C0GONE", slack_env, tmp_path, sample_dsn))


def test_a_member_channel_and_the_console_need_nothing(tmp_path, sample_dsn, slack_env, fake_slack):
    from bot.console import ConsoleReply
    from commands.chat.context import Actor
    from commands.chat.reply import check_can_collect_reactions

    check_can_collect_reactions(slack_reply_in("C0OPS", slack_env, tmp_path, sample_dsn))
    assert fake_slack.said("conversations.join") == [] and len(fake_slack.said("conversations.info")) == 1
    check_can_collect_reactions(ConsoleReply(console=None, actor=Actor("U0ALICE", "C_CONSOLE")))
