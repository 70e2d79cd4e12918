"""Access fails closed: no operators configured means nobody runs operator commands; /db-health is for
operators and viewers; new [access] keys are validated like the others."""

from __future__ import annotations

import io
import logging

import pytest

from bot.console import with_console_operator
from bot.preflight import check_access, run_preflight
from commands.errors import ConfigError
from commands.settings import parse_settings
from state.backups import list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings, suite_signing_key


def test_no_operators_means_nobody_may_operate(tmp_path, sample_dsn, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, access={"operators": [], "approvers": ["U0APP1"]}))
    for line in ("/backup", "/backup main --format plain", "/backup prune", "/backup verify latest", "/restore latest",
                 "/restore cancel 1", "/db-health", "/incident close Disk full"):
        out = console.run(line)
        assert "no operators are configured, so nobody may run it" in out, (line, out)
        assert "[access] operators" in out, (line, out)
    console.user = "U0APP1"  # an approver is not an operator either
    assert "no operators are configured" in console.run("/backup")
    assert "No backups of all databases yet" in console.run("/backup list")  # reading the catalog stays open
    assert "Incident #1" in console.run("/incident open Disk full")  # so does writing the timeline
    assert list_backups(console.services.store) == [] and recent_jobs(console.services.store) == []
    reliability("authority", "operator commands with no [access] operators configured", 9,
                "refused: nobody may operate until operators are configured")


def test_operators_and_viewers_are_who_the_config_names(tmp_path, sample_dsn, reliability):
    settings = make_settings(tmp_path, sample_dsn, access={"operators": ["U0OPS"], "viewers": ["U0WATCH"]})
    console = make_console(settings, user="U0WATCH")
    assert "*main*:" in console.run("/db-health")  # a viewer may look
    assert "@U0WATCH is not an operator" in console.run("/backup")  # and only look
    console.user = "U0STRANGER"
    out = console.run("/db-health")
    assert "@U0STRANGER is not an operator or viewer" in out and "[access] viewers" in out and "pid" not in out
    console.user = "U0OPS"
    assert "*main*:" in console.run("/db-health") and "succeeded" in console.run("/backup")
    reliability("authority", "/db-health (pids, users, queries) asked by someone neither operator nor viewer", 1,
                "refused with a reason")


def test_viewers_alone_may_look_but_nobody_may_operate(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access={"operators": [], "viewers": ["U0WATCH"]}),
                           user="U0WATCH")
    assert "*main*:" in console.run("/db-health")
    assert "no operators are configured" in console.run("/backup")


def test_check_fails_and_start_up_warns_without_operators(tmp_path, sample_dsn, monkeypatch, caplog, slack_env):
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      f'signing_key_files = ["{suite_signing_key()}"]\n')
    monkeypatch.setenv("DATABASE_URL", sample_dsn)
    for name, value in slack_env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert run_preflight(str(config), out=out) == 1
    assert "FAIL access: no operators are configured, so nobody may run /backup" in out.getvalue()
    assert '[access] operators = ["U0123", "S0456"]' in out.getvalue()

    config.write_text(config.read_text() + '[access]\noperators = ["U0OPS", "S0DBAS"]\nviewers = ["U0WATCH"]\n'
                      'approvers = ["U0APPR"]\n')
    out = io.StringIO()
    assert run_preflight(str(config), out=out) == 0, out.getvalue()
    assert "ok   access: 2 operator entries, 1 approver entry, 1 viewer entry" in out.getvalue()

    with caplog.at_level(logging.WARNING):
        make_console(make_settings(tmp_path / "quiet", sample_dsn))
    assert "no operators are configured" not in caplog.text
    with caplog.at_level(logging.WARNING):
        make_console(make_settings(tmp_path / "closed", sample_dsn, access={"operators": []}))
    assert "access: no operators are configured, so nobody may run /backup" in caplog.text


def test_the_demo_console_user_is_its_operator(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn, access={"operators": [], "approvers": ["U0APPROVER"]})
    demo = with_console_operator(settings, "U_CONSOLE")
    assert demo.access.operators == ("U_CONSOLE",) and demo.access.approvers == ("U0APPROVER",)
    assert check_access(demo)[0]
    console = make_console(demo, user="U_CONSOLE")
    assert "Backup #1 of main succeeded" in console.run("/backup")
    console.user = "U0APPROVER"
    assert "@U0APPROVER is not an operator" in console.run("/backup")


def test_new_access_keys_are_validated():
    access = parse_settings({}, {}).access
    assert access.operators == () and access.viewers == () and access.approve_new_database_restores is True
    access = parse_settings({"access": {"viewers": ["U0WATCH", "S0SRE"], "approve_new_database_restores": False}},
                            {}).access
    assert access.viewers == ("U0WATCH", "S0SRE") and access.approve_new_database_restores is False
    for raw, message in [
        ({"viewers": ["bob"]}, "access.viewers: 'bob' is not a Slack user (U…/W…) or usergroup (S…) ID"),
        ({"viewers": "U0WATCH"}, "access.viewers: expected a list of Slack user or usergroup IDs"),
        ({"approve_new_database_restores": "no"}, "access.approve_new_database_restores: expected true or false, got 'no'"),
        ({"approve_new_database_restores": 0}, "access.approve_new_database_restores: expected true or false, got 0"),
    ]:
        with pytest.raises(ConfigError) as error:
            parse_settings({"access": raw}, {})
        assert message in str(error.value)
