"""The approval flow through Slack over HTTP: signed reaction_added / reaction_removed events."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from state import approvals as request_state
from state.jobs import recent_jobs
from tests.builders import make_settings

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1", "S0DBAS"], "required_approvals": 2}


@pytest.fixture
def bot(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    fake_slack.usergroups["S0DBAS"] = ["U0APP2", "U0APP3"]
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    bot.slack.command("/restore", "1", user="U0OPS")
    fake_slack.wait_for_text("Restore request #1", method="chat.postMessage")
    fake_slack.wait_for(lambda api: len(api.said("reactions.add")) == 2, what="the bot's approve/reject reactions")
    return bot


def request_message(fake) -> str:
    """The request message's id, from the bot's own reactions on it."""
    react = fake.said("reactions.add")[0]
    return f"{react['channel']}:{react['timestamp']}"


def test_bot_offers_both_reactions(bot, fake_slack):
    names = {a["name"] for a in fake_slack.said("reactions.add")}
    assert names == {"white_check_mark", "x"}
    request = next(a for a in fake_slack.said("chat.postMessage") if "Restore request #1" in a["text"])
    fields = [f["text"] for block in request["blocks"] for f in block.get("fields", [])]
    assert any(f.startswith("*Target*") and "/t" in f for f in fields)
    assert "*Safety snapshot*\nyes" in fields
    assert "password" not in json.dumps(request).lower()


def test_non_approver_ignored_and_quorum_of_two(bot, fake_slack, reliability):
    message = request_message(fake_slack)
    status, _, seconds = bot.slack.reaction("U0MALLORY", "white_check_mark", message)
    assert status == 200 and seconds < 3
    fake_slack.wait_for_text("<@U0MALLORY> is not an approver", method="chat.postMessage")
    bot.slack.reaction("U0OPS", "white_check_mark", message)  # the requester
    fake_slack.wait_for_text("<@U0OPS> asked for this restore", method="chat.postMessage")
    bot.slack.reaction("U0APP1", "white_check_mark::skin-tone-4", message)
    fake_slack.wait_for_text("<@U0APP1> approved (1/2)")
    bot.slack.reaction("U0APP2", "white_check_mark", message)  # an approver through the usergroup
    fake_slack.wait_for_text("<@U0APP2> approved (2/2)")
    fake_slack.wait_for_text("Restore request #1 restored backup #1", timeout=120)
    reliability("authority", "non-approver, requester and usergroup approvals over Slack", 4,
                "non-approver and self-approval ignored (said once); 2 distinct approvers start it")


def test_withdrawal_over_slack(bot, fake_slack):
    message = request_message(fake_slack)
    bot.slack.reaction("U0APP1", "white_check_mark", message)
    fake_slack.wait_for_text("<@U0APP1> approved (1/2)")
    bot.slack.reaction("U0APP1", "white_check_mark", message, added=False)
    fake_slack.wait_for_text("<@U0APP1> withdrew their approval (0/2)")
    bot.slack.reaction("U0APP2", "white_check_mark", message)
    fake_slack.wait_for_text("<@U0APP2> approved (1/2)")
    assert request_state.get_request(bot.services.store, 1).status == "pending"


def test_redelivered_event_counts_once(bot, fake_slack, reliability):
    message = request_message(fake_slack)
    for retry in (None, 1, 2):
        status, _, _ = bot.slack.reaction("U0APP1", "white_check_mark", message, event_id="EvSAME", retry_num=retry)
        assert status == 200
    fake_slack.wait_for_text("<@U0APP1> approved (1/2)")
    bot.slack.reaction("U0APP1", "white_check_mark", message, added=False, event_id="EvREMOVE")
    fake_slack.wait_for_text("withdrew their approval (0/2)")
    for retry in (1, 2):  # a late redelivery of the first approval must not bring it back
        bot.slack.reaction("U0APP1", "white_check_mark", message, event_id="EvSAME", retry_num=retry)
    bot.slack.reaction("U0APP2", "white_check_mark", message)
    fake_slack.wait_for_text("<@U0APP2> approved (1/2)")
    assert request_state.get_request(bot.services.store, 1).status == "pending"
    assert sum("approved (1/2)" in a["text"] for a in fake_slack.said("chat.postMessage")) == 2
    reliability("delivery", "the same reaction event delivered three times (X-Slack-Retry-Num)", 3, "applied once")


def test_two_approvals_racing_start_one_restore(bot, fake_slack, reliability):
    message = request_message(fake_slack)
    bot.slack.reaction("U0APP1", "white_check_mark", message)
    fake_slack.wait_for_text("<@U0APP1> approved (1/2)")
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda user: bot.slack.reaction(user, "white_check_mark", message)[0],
                                 ["U0APP2", "U0APP3", "U0APP2", "U0APP3"]))
    assert statuses == [200] * 4
    fake_slack.wait_for_text("Restore request #1 restored backup #1", timeout=120)
    restores = [j for j in recent_jobs(bot.services.store) if j.kind == "restore"]
    assert len(restores) == 1
    snapshots = [j for j in recent_jobs(bot.services.store) if j.kind == "snapshot"]
    assert len(snapshots) == 1
    reliability("delivery", "two final approvals at once over HTTP", 4, "exactly one restore and one safety snapshot")


def test_reaction_on_another_message_is_ignored(bot, fake_slack, reliability):
    before = len(fake_slack.said("chat.postMessage"))
    bot.slack.reaction("U0APP1", "white_check_mark", "C0OPS:1699999999.000001")
    bot.slack.command("/backup", "list", user="U0OPS")  # a later request proves the event was processed
    fake_slack.wait_for_text("Backups of all databases", method="chat.postEphemeral")
    assert len(fake_slack.said("chat.postMessage")) == before
    assert request_state.get_request(bot.services.store, 1).status == "pending"
    reliability("authority", "approval reaction on some other message", 1, "ignored")


def test_restore_in_a_private_channel_the_bot_is_not_in_asks_for_an_invite(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                            start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    fake_slack.channels["C0OPS"] = {"name": "ops-private", "is_private": True, "is_member": False}
    bot.slack.command("/restore", "1", user="U0OPS")
    fake_slack.wait_for_text("invite @backupbot", method="chat.postEphemeral")
    assert not [a for a in fake_slack.said("chat.postMessage") if "Restore request" in a.get("text", "")]
    assert request_state.get_request(bot.services.store, 1) is None  # nobody is asked to approve what cannot be seen
