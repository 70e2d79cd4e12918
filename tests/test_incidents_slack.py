"""/incident through the real Bolt app over HTTP: signed commands and reaction events in, Web API calls out."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from bot.slack_reply import SlackReply
from bot.startup import start_services
from commands.incident.audit import record_event
from state import incidents as incident_state
from tests.builders import FakeClock, make_settings


@pytest.fixture
def slack_files(fake_slack):
    return fake_slack


def ephemerals(fake, needle: str) -> list[str]:
    return [a["text"] for a in fake.said("chat.postEphemeral") if needle in a.get("text", "")]


def ask(bot, fake, text: str, needle: str, user: str = "U0ALICE") -> str:
    """Run `/incident text` and return the newest ephemeral answer containing `needle`."""
    before = len(ephemerals(fake, needle))
    status, _, seconds = bot.slack.command("/incident", text, user=user)
    assert status == 200 and seconds < 3
    fake.wait_for(lambda api: len(ephemerals(api, needle)) > before, what=f"an answer with {needle!r} to {text!r}")
    return ephemerals(fake, needle)[-1]


def uploads_done(fake) -> list[dict]:
    return fake.said("files.completeUploadExternal")


def test_incident_from_slack_end_to_end(tmp_path, sample_dsn, slack_env, slack_files, start_bot):
    fake = slack_files
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    settings = make_settings(tmp_path, sample_dsn, env=slack_env)
    bot = start_bot(settings, start_services(settings, clock=clock))

    # a backup two hours before the incident: the recovery point later
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    clock.advance(hours=2)

    status, _, seconds = bot.slack.command("/incident", "open Orders DB refuses writes --db main --sev 1", user="U0ALICE")
    assert status == 200 and seconds < 3
    header = fake.wait_for_text("Incident #1 · SEV1 critical · OPEN", method="chat.postMessage")
    assert header["channel"] == "C0OPS"
    header_ts = next(k for k, v in fake.history.items() if "Incident #1" in (v["text"] or "")).split(":")[1]
    assert "already open" in ask(bot, fake, "open Another", "already open", user="U0BOB")

    bot.slack.command("/incident", "note --at 00:00 writes failing since midnight? checking", user="U0ALICE")
    note = fake.wait_for_text("Noted on incident #1", method="chat.postMessage")
    assert note["thread_ts"] == header_ts

    # a person's message gets a :stopwatch: from someone else: its text comes from conversations.history
    fake.history["C0OPS:1700000100.000200"] = {"text": "pg_is_in_recovery() is true on the primary!", "user": "U0BOB",
                                                "ts": "1700000100.000200"}
    bot.slack.reaction("U0CAROL", "stopwatch", "C0OPS:1700000100.000200", item_user="U0BOB", event_id="EvSTOPWATCH1")
    fake.wait_for_text("Added to incident #1's timeline at 2023-11-14 22:15:00 UTC", method="chat.postEphemeral")
    history_call = fake.said("conversations.history")[-1]
    assert (history_call["channel"], history_call["latest"], history_call["limit"]) == ("C0OPS", "1700000100.000200", "1")
    assert history_call["inclusive"] in ("1", "true", "True")
    # another emoji is not read back; a redelivered event adds nothing
    bot.slack.reaction("U0CAROL", "eyes", "C0OPS:1700000100.000200", item_user="U0BOB")
    timeline = ask(bot, fake, "timeline", "Timeline of incident #1")
    assert "`2023-11-14 22:15:00 UTC` :stopwatch: <@U0BOB>: pg_is_in_recovery() is true on the primary!" in timeline
    assert len(fake.said("conversations.history")) == 1
    bot.slack.reaction("U0CAROL", "stopwatch", "C0OPS:1700000100.000200", item_user="U0BOB", event_id="EvSTOPWATCH1",
                       retry_num=1)
    fake.wait_for(lambda api: len(api.said("conversations.history")) == 2, what="the redelivered event")
    assert "3 entries" in ask(bot, fake, "timeline", "Timeline of incident #1")
    assert len(ephemerals(fake, "Added to incident #1's timeline")) == 1

    # taking the reaction back takes the message off
    bot.slack.reaction("U0CAROL", "stopwatch", "C0OPS:1700000100.000200", added=False, item_user="U0BOB")
    fake.wait_for(lambda api: incident_state.count_entries(bot.services.store, 1) == 2, what="the entry removed")
    assert "pg_is_in_recovery" not in ask(bot, fake, "timeline 1", "Timeline of incident #1")

    # a real backup during the incident lands on the timeline by itself
    clock.advance(minutes=5)
    bot.slack.command("/backup", "main", user="U0BOB")
    fake.wait_for_text("Backup #2 of main succeeded", method="chat.update")
    timeline = ask(bot, fake, "timeline", "Backup #2 of main succeeded")
    assert "<@U0BOB>: Backup #2 of main started by <@U0BOB>" in timeline

    # restore events from the /restore flow (another channel, same database) tick the checklist and edit the header
    dba = SlackReply(bot.client, user="U0DAVE", channel="C0DBA")
    for minutes, kind, detail in [(5, "restore.requested", {"backup_id": 1}), (1, "restore.checkpoint", {"backup_id": 2}),
                                  (20, "restore.succeeded", {"backup_id": 1}), (4, "restore.verified", {"passed": True})]:
        clock.advance(minutes=minutes)
        record_event(bot.services, kind, database="main", channel="C0DBA", actor="U0DAVE", text=f"{kind} (restore #1)",
                     detail=detail, reply=dba)
    edited = [a for a in fake.said("chat.update") if a["ts"] == header_ts]
    assert ":white_check_mark: 5. Verify" in edited[-1]["text"] and ":white_check_mark: 2. Select backup" in edited[-1]["text"]

    clock.advance(minutes=30)
    bot.slack.command("/incident", "close Failover script promoted the wrong node", user="U0ALICE")
    summary = fake.wait_for_text("Incident #1 closed by <@U0ALICE>", method="chat.postMessage")
    assert ":white_check_mark: Time to recovery: 35m00s (opened → restore verified) · target 1 h" in summary["text"]
    assert ":white_check_mark: Data-loss window: 2h00m (incident start → backup #1 taken" in summary["text"]
    fake.wait_for(lambda api: len(uploads_done(api)) == 1, what="the export uploaded")
    get_url = fake.said("files.getUploadURLExternal")[-1]
    assert get_url["filename"] == "incident-1-timeline.md" and int(get_url["length"]) > 500
    done = uploads_done(fake)[-1]
    assert done["channel_id"] == "C0OPS" and "Incident #1 timeline" in done["files"]
    markdown = fake.uploads[get_url_file_id(fake, 0)].decode()
    assert markdown.startswith("# Incident #1: Orders DB refuses writes") and "[met] Time to recovery: 35m00s" in markdown
    assert "| message | U0BOB |" not in markdown and "| backup.succeeded | U0BOB |" in markdown
    edited = [a for a in fake.said("chat.update") if a["ts"] == header_ts]
    assert ":white_check_mark: 7. Document" in edited[-1]["text"] and "CLOSED" in edited[-1]["text"]

    # CSV in another zone
    bot.slack.command("/incident", "export 1 --format csv --tz Asia/Tokyo", user="U0BOB")
    fake.wait_for(lambda api: len(uploads_done(api)) == 2, what="the CSV export uploaded")
    rows = list(csv.DictReader(io.StringIO(fake.uploads[get_url_file_id(fake, 1)].decode())))
    assert rows[0]["kind"] == "note" and rows[0]["time"].endswith("+09:00")
    assert rows[-1]["kind"] == "incident.closed"
    assert "unknown time zone 'Moon/Base'" in ask(bot, fake, "export --tz Moon/Base", "unknown time zone")

    # the timeline survives a restart: a new bot (new Services) on the same state file
    bot.close()
    again = start_bot(settings)
    status, _, _ = again.slack.command("/incident", "timeline 1", user="U0ALICE")
    fake.wait_for(lambda api: len(ephemerals(api, "Failover script promoted the wrong node")) >= 1, what="timeline after restart")
    assert "writes failing since midnight" in ephemerals(fake, "Failover script promoted the wrong node")[-1]


def get_url_file_id(fake, n: int) -> str:
    """The file id of the n-th upload, as files.getUploadURLExternal handed it out."""
    return [c["file_id"] for c in fake.said("upload")][n]


def test_stopwatch_outside_an_incident_and_unreadable_messages(tmp_path, slack_env, slack_files, start_bot):
    fake = slack_files
    bot = start_bot(make_settings(tmp_path, None, env=slack_env, incidents={"emoji": "timer_clock"}))
    bot.slack.reaction("U0CAROL", "timer_clock", "C0OPS:1700000200.000100", item_user="U0BOB")
    bot.slack.command("/incident", "open Quiet channel", user="U0ALICE")
    fake.wait_for_text("Incident #1", method="chat.postMessage")
    # a message the bot cannot read back (no history answer): the entry still has author and time
    bot.slack.reaction("U0CAROL", "timer_clock", "C0OPS:1700000300.000100", item_user="U0BOB")
    fake.wait_for_text("Added to incident #1's timeline at 2023-11-14 22:18:20 UTC", method="chat.postEphemeral")
    timeline = ask(bot, fake, "timeline", "Timeline of incident #1")
    assert "<@U0BOB>: (message text unavailable)" in timeline
    assert "1700000200" not in timeline  # the reaction before the incident was ignored
    assert not fake.said("files.completeUploadExternal")
