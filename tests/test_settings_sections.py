"""[schedules], [retention], [health] and [incidents] are parsed once, when the config loads, into typed
objects; a bad value stops the load with a message naming the key. And the core never reads an
adapter's message ids."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from bot.preflight import run_preflight
from commands.errors import ConfigError
from commands.pg.dump import FORMATS
from commands.settings import load_settings
from commands.settings.health import HealthSettings
from commands.settings.incidents import IncidentSettings
from commands.settings.retention import RetentionRules
from commands.settings.schedules import BACKUP_FORMATS, ScheduledJob
from tests.builders import make_console, make_settings

CONFIG = """
[state]
path = "{state}"
[storage]
url = "file://{backups}"
[databases.main]
url_env = "DATABASE_URL"
[databases.reports]
url_env = "REPORTS_URL"
[access]
operators = ["U0OPS"]
[schedules]
digest = "0 9 * * *"
[schedules.main]
backup = "0 2 * * *"
backup_weekly = {{ cron = "0 3 * * 0", format = "plain" }}
[retention]
keep_last = 3
[retention.reports]
max_age_days = 0
[health]
rpo_hours = 6
[incidents]
emoji = ":timer_clock:"
timezone = "Europe/Paris"
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db", backups=tmp_path / "b") + extra)
    return path


def test_each_section_is_a_typed_object_after_load(tmp_path):
    settings = load_settings(write_config(tmp_path), env={"DATABASE_URL": "postgresql://u@h/app"})
    assert settings.schedules == (
        ScheduledJob("digest", "0 9 * * *", "digest"),
        ScheduledJob("backup main", "0 2 * * *", "backup", "main"),
        ScheduledJob("backup_weekly main", "0 3 * * 0", "backup", "main", "plain"),
    )
    assert settings.retention == {"main": RetentionRules(keep_last=3),
                                  "reports": RetentionRules(keep_last=3, max_age_days=None)}
    assert settings.retention_for("main").keep_last == 3
    assert settings.health == HealthSettings(rpo_hours=6) and settings.health.statement_timeout_ms == 5000
    assert settings.incidents == IncidentSettings(emoji="timer_clock", timezone="Europe/Paris")


@pytest.mark.parametrize("extra, message", [
    ('[retention.nosuchdb]\nkeep_last = 1\n', "retention.nosuchdb: no database 'nosuchdb' is configured"),
    ('[retention.main]\nkeep_daily = -1\n', "retention.main.keep_daily: expected a whole number >= 0, got -1"),
    ('[schedules.reports]\ndrill = "0 5 * * 8"\n', "schedules.reports.drill: '0 5 * * 8' is not a cron expression"),
])
def test_a_bad_value_stops_the_load_naming_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write_config(tmp_path, extra), env={})
    out = io.StringIO()
    assert run_preflight(str(write_config(tmp_path, extra)), out=out) == 1
    assert f"FAIL config: {message}" in out.getvalue()


@pytest.mark.parametrize("section, table, message", [
    ("health", {"rpo_hours": "soon"}, "health.rpo_hours: expected a number >= 0, got 'soon'"),
    ("health", {"rpo_hourz": 3}, "health.rpo_hourz: unknown key"),
    ("incidents", {"page_size": 1}, "incidents.page_size: expected a whole number from 5 to 200, got 1"),
])
def test_bad_health_and_incident_values_fail_at_load(tmp_path, section, table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(tmp_path, None, **{section: table})


def test_reactions_use_the_parsed_incident_settings(tmp_path, monkeypatch):
    """Nothing parses [incidents] again once the bot runs: not a command, not a reaction."""
    console = make_console(make_settings(tmp_path, None, incidents={"emoji": "timer_clock"}), user="U0ALICE")

    def parse_again(*args, **kwargs):
        raise AssertionError("[incidents] parsed again after load")

    import commands.settings.incidents

    monkeypatch.setattr(commands.settings.incidents, "parse_incidents", parse_again)
    assert "OPEN" in console.run("/incident open Replica lag")
    said = console.run("/incident note looking at it")
    message = re.search(r"\[(M\d+)\]", said).group(1)
    assert "Added to incident #1's timeline" in console.run(f":react {message} timer_clock")
    assert "Added" not in console.run(f":react {message} stopwatch")


def test_scheduled_backup_formats_are_the_dump_formats():
    assert set(BACKUP_FORMATS) == set(FORMATS)


# ---------------------------------------------------------------- adapters own their message ids


def test_the_incident_core_holds_no_slack_message_id_format():
    source = "".join(p.read_text() for p in Path("commands/incident").glob("*.py"))
    assert "response_url" not in source


def test_a_response_url_message_is_edited_only_by_the_reply_that_posted_it(tmp_path, slack_env, fake_slack):
    from bot.server import make_client
    from bot.slack_reply import SlackReply
    from commands.chat.reply import Notice

    fake_slack.not_in_channels.add("C0PRIVATE")
    client = make_client(make_settings(tmp_path, None, env=slack_env))
    first = SlackReply(client, user="U0ALICE", channel="C0PRIVATE", response_url=f"http://127.0.0.1:{fake_slack.port}/response/1")
    second = SlackReply(client, user="U0ALICE", channel="C0PRIVATE", response_url=f"http://127.0.0.1:{fake_slack.port}/response/2")
    header = first.post(Notice("incident header"))
    reply_of_second = second.post(Notice("second command's answer"))
    assert header != reply_of_second
    first.update(header, Notice("header, updated"))
    second.update(header, Notice("header, updated by another command"))  # would replace the second's message
    sent = [(a["text"], a.get("replace_original")) for a in fake_slack.said("response_url")]
    assert sent == [("incident header", None), ("second command's answer", None), ("header, updated", True)]
