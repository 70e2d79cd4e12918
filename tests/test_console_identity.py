"""Only approvers approve: outside --demo the terminal console is the OS user who runs it.

The reviewer's session (issue #17): with the production config, `backupbot console --as U0OPS`,
then `:as <approver>` and a `:react`, ran a real restore that the audit log credited to the
approver. Here the console is built as bot/cli.py builds it outside the demo, and the session is
typed line by line.
"""

from __future__ import annotations

import re

import pytest

from bot.cli import main
from bot.console import Console, ConsoleReply, os_account
from bot.startup import start_services
from commands import dispatch
from commands.chat.context import Actor
from commands.errors import ConfigError
from commands.settings import parse_settings
from state import approvals as request_state
from state import incidents as incident_state
from state.backups import list_backups
from state.jobs import recent_jobs
from tests.builders import Recorder, make_console, make_settings
from tests.test_restore import message_id

ME = os_account()
PRODUCTION = {"operators": ["U0OPS"], "approvers": ["U0APPROVER"], "console_operators": [ME]}


def os_console(tmp_path, dsn, **access) -> Console:
    """The console `backupbot console --config …` opens: no --as, no way to play a Slack user."""
    return Console(start_services(make_settings(tmp_path, dsn, access={**PRODUCTION, **access})))


def audit(console: Console) -> list[dict]:
    return incident_state.audit_rows(console.services.store, limit=1000)


def test_as_is_refused_outside_the_demo(tmp_path, sample_dsn):
    console = os_console(tmp_path, sample_dsn)
    out = console.run(":as U0APPROVER")
    assert f"The console acts as you, OS user {ME}: :as works only in the demo" in out
    assert f"Backup #1 of main started by @{ME}" in console.run("/backup")  # still itself, not the approver
    refused = [r for r in audit(console) if r["kind"] == "console.refused"]
    assert refused and refused[0]["detail"]["os_user"] == ME and ":as U0APPROVER" in refused[0]["text"]


def test_the_cli_refuses_as_outside_the_demo(tmp_path, sample_dsn, capsys, monkeypatch):
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[access]\noperators = ["U0OPS"]\napprovers = ["U0APPROVER"]\n')
    monkeypatch.setenv("DATABASE_URL", sample_dsn)
    assert main(["console", "--config", str(config), "--as", "U0OPS"]) == 2
    err = capsys.readouterr().err
    assert "--as works only with --demo" in err and f"OS user {ME}" in err and "Traceback" not in err
    assert not (tmp_path / "state.db").exists()  # refused before anything was opened


def test_react_cannot_approve_or_reject_a_restore_outside_the_demo(tmp_path, sample_dsn):
    console = os_console(tmp_path, sample_dsn)
    console.run("/backup")
    # asked at the console, a restore that needs approval is refused before it is posted: nobody could approve it
    out = console.run("/restore latest")
    assert "this restore needs approvers' reactions, which only reach a request posted in Slack" in out
    assert request_state.get_request(console.services.store, 1) is None
    assert "Dry run: nothing was requested" in console.run("/restore latest --dry-run")
    # an operator asks in Slack, in the channel this console shows: the console still cannot approve it
    in_slack = Actor("U0OPS", console.channel, source="slack")
    console._buffer = []
    dispatch.run_command(console.services, "/restore", "latest", in_slack, ConsoleReply(console, in_slack))
    request = message_id("\n".join(console._buffer), "Restore request #1")
    for line in (":as U0APPROVER", f":react {request} white_check_mark", f":react {request} white_check_mark::skin-tone-2",
                 f":react {request} x", f":unreact {request} white_check_mark"):
        out = console.run(line)
        assert "approved" not in out.replace("approved or rejected only", ""), (line, out)
    assert ("Restore request #1 is approved or rejected only by approvers' reactions in Slack: the console cannot "
            "approve or reject it") in console.run(f":react {request} white_check_mark")
    assert request_state.get_request(console.services.store, 1).status == "pending"
    assert [j.kind for j in recent_jobs(console.services.store)] == ["backup"]  # no safety snapshot, no restore
    kinds = [r["kind"] for r in audit(console)]
    assert not {"restore.approved", "restore.rejected", "restore.succeeded"} & set(kinds)
    assert "U0APPROVER" not in {r["actor"] for r in audit(console)}
    assert kinds.count("console.refused") == 6


def test_os_user_not_named_in_access_cannot_back_up(tmp_path, sample_dsn):
    console = os_console(tmp_path, sample_dsn, console_operators=["someone-else"])
    out = console.run("/backup")
    assert f"OS user {ME} is not allowed to run /backup from the console" in out and "console_operators" in out
    assert "not allowed" in console.run("/restore latest")
    assert "not allowed" in console.run("/db-health")
    assert list_backups(console.services.store) == [] and recent_jobs(console.services.store) == []

    nobody = os_console(tmp_path / "none", sample_dsn, console_operators=[])
    assert "no console operators are configured, so nobody may run it from the console" in nobody.run("/backup")
    assert list_backups(nobody.services.store) == []


def test_os_user_named_can_back_up_and_the_audit_row_says_console_and_who(tmp_path, sample_dsn):
    console = os_console(tmp_path, sample_dsn)
    out = console.run("/backup")
    assert f"Backup #1 of main started by @{ME}" in out and "Backup #1 of main succeeded" in out
    rows = {r["kind"]: r for r in audit(console)}
    assert rows["console.command"]["text"] == f"{ME} typed: /backup"
    for kind in ("console.command", "backup.started", "backup.succeeded"):
        assert rows[kind]["actor"] == ME
        assert rows[kind]["detail"]["source"] == "console" and rows[kind]["detail"]["os_user"] == ME


def test_console_operators_must_be_os_user_names():
    base = {"state": {"path": "s.db"}, "storage": {"url": "file://b"}}
    for value, message in ((["bad name"], "access.console_operators: 'bad name' is not an OS user name"),
                           ("alice", "access.console_operators: expected a list of OS user names")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_settings({**base, "access": {"operators": ["U0OPS"], "console_operators": value}}, {})
    settings = parse_settings({**base, "access": {"operators": ["U0OPS"], "console_operators": ["alice", "svc.backup"]}}, {})
    assert settings.access.console_operators == ("alice", "svc.backup")


def test_a_reaction_on_the_request_message_id_in_another_channel_does_not_approve(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access={"approvers": ["U0APPROVER"]}))
    console.run("/backup")
    console.run("/restore latest")
    stored = request_state.get_request(console.services.store, 1).message_id
    reply = Recorder()
    dispatch.run_reaction(console.services, dispatch.ReactionEvent(
        event_id="Ev-elsewhere", user="U0APPROVER", emoji="white_check_mark", added=True, channel="C0ELSEWHERE",
        message_id=stored), reply)
    assert not any("approved" in text for _, text in reply.posts)
    assert request_state.get_request(console.services.store, 1).status == "pending"
    assert "restore.approved" not in [r["kind"] for r in audit(console)]


def test_slack_reaction_on_the_request_ts_in_another_channel_does_not_approve(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                              start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access={"approvers": ["U0APP1"]}))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    bot.slack.command("/restore", "1", user="U0OPS")
    fake_slack.wait_for(lambda api: len(api.said("reactions.add")) == 2, what="the bot's approve/reject reactions")
    ts = fake_slack.said("reactions.add")[0]["timestamp"]
    bot.slack.reaction("U0APP1", "white_check_mark", f"C0ELSEWHERE:{ts}")
    bot.slack.command("/backup", "list", user="U0OPS")  # a later request proves the event was processed
    fake_slack.wait_for_text("Backups of all databases", method="chat.postEphemeral")
    assert request_state.get_request(bot.services.store, 1).status == "pending"
    assert not any("approved" in text for text in fake_slack.texts())

    bot.slack.reaction("U0APP1", "white_check_mark", f"C0OPS:{ts}")  # the request's own channel
    fake_slack.wait_for_text("<@U0APP1> approved (1/1)")
    fake_slack.wait_for_text("Restore request #1 restored backup #1", timeout=120)
    rows = {r["kind"]: r for r in incident_state.audit_rows(bot.services.store, 1000)}
    for kind, who in (("backup.started", "U0OPS"), ("restore.requested", "U0OPS"), ("restore.approved", "U0APP1")):
        assert rows[kind]["actor"] == who and rows[kind]["detail"]["source"] == "slack"
        assert "os_user" not in rows[kind]["detail"]


def test_two_console_sessions_on_one_state_never_share_a_message_id(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn, access={"approvers": ["U0APP1"]})
    first = make_console(settings)
    first.run("/backup")
    first_request = message_id(first.run("/restore latest"), "Restore request #1")
    first.services.close()  # the first session ends; its request stays pending

    second = make_console(settings)  # a new session on the same state numbers from M1 again
    second.run("/backup")
    second_request = message_id(second.run("/restore 1"), "Restore request #2")
    assert first_request == second_request  # the same short id on the screen
    stored = [request_state.get_request(second.services.store, n).message_id for n in (1, 2)]
    assert stored[0] != stored[1]  # but not the same message

    second.run(":as U0APP1")
    out = second.run(f":react {second_request} white_check_mark")
    assert "Restore request #2 restored backup #1" in out and "Restore request #1 restored" not in out
    assert request_state.get_request(second.services.store, 1).status == "pending"
