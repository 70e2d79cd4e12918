"""Hostile and broken requests over HTTP: each is refused cleanly and the bot keeps serving."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from commands.pg import tools as pg_tools
from state.backups import list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings

INJECTIONS = [
    "main; rm -rf /", "$(touch /tmp/pwned)", "`id`", "main' OR '1'='1", 'main" --file=/etc/passwd',
    "main\n--file=/etc/passwd", "--file=/etc/passwd", "-f/etc/passwd", "ｍａｉｎ", "mаin",  # fullwidth, Cyrillic а
    "users;drop table users", "users,$(id)", "users,`id`", "public.users --file=/x", "users\u200b",
]


def test_malformed_and_truncated_payloads(tmp_path, slack_env, fake_slack, start_bot, reliability):
    bot = start_bot(make_settings(tmp_path, None, env=slack_env))
    bodies = [
        (b"", "application/x-www-form-urlencoded"),
        (b"command=/backup&text=list&user_id", "application/x-www-form-urlencoded"),
        (b'{"type": "event_callback", "event": {"type": "reaction_added"', "application/json"),
        (b'{"type": "event_callback"}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"type": "event_callback", "event_id": "Ev1", "event": {"type": "reaction_added", "user": "U1"}}',
         "application/json"),
        (b"payload=%7Bnot-json", "application/x-www-form-urlencoded"),
    ]
    for body, content_type in bodies:
        status, _, _ = bot.slack.post(body, content_type)
        assert status < 500, (body, status)
    status, _, seconds = bot.slack.command("/backup", "list")
    assert status == 200 and seconds < 3
    fake_slack.wait_for_text("No backups", method="chat.postEphemeral")
    reliability("requests", "malformed or truncated payloads (form, JSON, binary)", len(bodies),
                "4xx or ignored; the next command is answered")


def test_unknown_command_and_oversized_argument(tmp_path, slack_env, fake_slack, start_bot, reliability):
    bot = start_bot(make_settings(tmp_path, None, env=slack_env))
    status, body, _ = bot.slack.command("/rm-rf", "everything")
    assert status == 200 and b"does not know /rm-rf" in body
    status, _, seconds = bot.slack.command("/backup", "main --note " + "x" * 10_000)
    assert status == 200 and seconds < 3
    answer = fake_slack.wait_for_text("the command is too long", method="chat.postEphemeral")
    assert len(answer["text"]) < 1000
    assert recent_jobs(bot.services.store) == []
    reliability("requests", "unknown slash command", 1, "acknowledged with the list of known commands")
    reliability("requests", "10 kB argument", 1, "ephemeral 'the command is too long'; nothing run")


def test_replayed_request_runs_once_per_signature_window(tmp_path, slack_env, fake_slack, start_bot, reliability):
    """A replayed signed slash command is still inside its 5-minute window, so Slack's own
    protection is the timestamp; /backup list is read-only, and replays outside the window are refused."""
    import time

    bot = start_bot(make_settings(tmp_path, None, env=slack_env))
    body = bot.slack.command_body("/backup", "list")
    old = int(time.time()) - 3600
    for _ in range(10):
        status, _, _ = bot.slack.post(body, "application/x-www-form-urlencoded", timestamp=old)
        assert status == 401
    reliability("requests", "request replayed an hour later", 10, "401, nothing run")


def test_burst_of_500_commands_each_acknowledged_and_answered(tmp_path, slack_env, fake_slack, start_bot, reliability):
    bot = start_bot(make_settings(tmp_path, None, env=slack_env))
    count = 500

    def send(i):
        return bot.slack.command("/backup", "list", user=f"U{i:05d}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(send, range(count)))
    assert all(status == 200 for status, _, _ in results)
    slowest = max(seconds for _, _, seconds in results)
    assert slowest < 3, f"slowest acknowledgement took {slowest:.2f}s"
    fake_slack.wait_for(lambda api: len(api.said("chat.postEphemeral")) >= count, timeout=120,
                        what=f"{count} answers")
    answered = {args["user"] for args in fake_slack.said("chat.postEphemeral")}
    assert len(answered) == count
    reliability("delivery", "500 signed slash commands in a burst (50 at a time)", count,
                f"all acknowledged (slowest {slowest:.2f}s < 3s) and answered")


@pytest.fixture
def pg_dump_argv_log(tmp_path, monkeypatch):
    """A pg_dump on PATH that logs its argv, then runs the real one."""
    real = pg_tools.pg_bin("pg_dump")
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    log = tmp_path / "argv.log"
    shim = shim_dir / "pg_dump"
    shim.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\037' \"$a\" >> {log}; done\necho >> {log}\n"
                    f"exec {real} \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim_dir}:{os.environ['PATH']}")
    pg_tools.pg_bin.cache_clear()
    pg_tools.tool_version.cache_clear()
    yield log
    pg_tools.pg_bin.cache_clear()
    pg_tools.tool_version.cache_clear()


def test_injection_through_every_backup_argument(tmp_path, sample_dsn, pg_dump_argv_log, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access={"approvers": ["U0APP1"]}))
    tries = 0
    for payload in INJECTIONS:
        quoted = json.dumps(payload)
        for line in (f"/backup {quoted}", f"/backup --tables {quoted}", f"/backup list {quoted}",
                     f"/backup --format {quoted}"):
            out = console.run(line)
            tries += 1
            assert "(only you)" in out, (line, out)
            assert "Traceback" not in out and "Something went wrong" not in out
    for payload in INJECTIONS:  # backup ids, databases, tables, targets of /restore
        quoted = json.dumps(payload)
        for line in (f"/restore {quoted}", f"/restore 1 {quoted}", f"/restore 1 --tables {quoted}",
                     f"/restore 1 --into {quoted}", f"/restore cancel {quoted}", f"/db-health {quoted}",
                     f"/backup verify {quoted}", f"/backup prune {quoted}"):
            out = console.run(line)
            tries += 1
            assert "(only you)" in out, (line, out)
            assert "Traceback" not in out and "Something went wrong" not in out
    # incident titles and notes are free text: stored and shown as text
    for payload in INJECTIONS[:5]:
        out = console.run(f"/incident open {payload}")
        tries += 1
        assert "Something went wrong" not in out
        console.run("/incident close injection test")
    # a note is free text: stored and shown, never passed to pg_dump
    out = console.run("/backup main --note " + json.dumps("$(touch /tmp/pwned); `id` --file=/etc/passwd"))
    tries += 1
    assert "succeeded" in out and "Note: $(touch /tmp/pwned)" in out
    assert not os.path.exists("/tmp/pwned")
    runs = [line.split("\x1f")[:-1] for line in pg_dump_argv_log.read_text().splitlines() if line]
    dumps = [argv for argv in runs if argv != ["--version"]]
    assert len(dumps) == 1
    allowed = ("--format=", "--no-password", "--verbose", "--compress=", "--snapshot=", "--table=", "--schema-only")
    assert all(arg.startswith(allowed) for arg in dumps[0]), dumps[0]
    assert [r.id for r in list_backups(console.services.store)] == [recent_jobs(console.services.store)[0].id]
    reliability("injection", "shell metacharacters, quotes, newlines, --options, look-alikes in every argument",
                tries, "clear ephemeral error, or (notes) stored as text; pg_dump argv only ever holds bot-made options")
