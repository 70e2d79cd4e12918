"""Configuration as an admin writes it: documented keys work, mistakes name the key."""

from __future__ import annotations

import pytest

from commands.errors import ConfigError
from commands.settings import load_settings

GOOD = """
[state]
path = "backupbot.db"
[storage]
url = "s3://my-backups/prod"
[databases.main]
url_env = "DATABASE_URL"
[databases.analytics]
url_env = "ANALYTICS_URL"
health_url = "https://app.example.com/healthz"
[access]
operators = ["U0123", "S0456"]
approvers = ["U0789"]
required_approvals = 1
approval_ttl_minutes = 30
[channels]
alerts = "C0ALERTS"
digest = "C0DIGEST"
"""


def write(tmp_path, text, name="backupbot.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_documented_keys_work(tmp_path):
    settings = load_settings(write(tmp_path, GOOD), env={"DATABASE_URL": "postgresql://u:pw@db/app"})
    assert settings.storage_url == "s3://my-backups/prod"
    assert list(settings.databases) == ["main", "analytics"]
    assert settings.databases["main"].url == "postgresql://u:pw@db/app"
    assert settings.databases["analytics"].url is None
    assert settings.databases["analytics"].health_url == "https://app.example.com/healthz"
    assert settings.access.operators == ("U0123", "S0456")
    assert settings.access.approval_ttl_minutes == 30
    assert settings.channels.alerts == "C0ALERTS"


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={"DATABASE_URL": "postgresql://localhost/app"}, search=())
    assert list(settings.databases) == ["main"]
    assert settings.state_path == "backupbot.db"
    assert settings.storage_url == (tmp_path / "backups").as_uri()  # beside the state file, never /backups
    assert settings.access.operators == () and settings.access.approvers == ()


def test_without_a_storage_url_backups_go_beside_the_state_file(tmp_path):
    from commands.storage import open_storage

    path = write(tmp_path, f'[state]\npath = "{tmp_path / "data" / "bot.db"}"\n')
    settings = load_settings(path, env={})
    assert settings.storage_url == (tmp_path / "data" / "backups").as_uri()
    storage = open_storage(settings.storage_url)
    storage.put_bytes("probe", b"x")
    assert (tmp_path / "data" / "backups" / "probe").read_bytes() == b"x"


def test_config_is_found_in_one_order_for_every_subcommand(tmp_path, monkeypatch):
    from commands.settings import find_config

    etc = write(tmp_path, '[storage]\nurl = "file:///srv/etc"\n', name="etc.toml")
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    search = ("backupbot.toml", str(etc))
    assert load_settings(env={}, search=search).storage_url == "file:///srv/etc"  # /etc/backupbot/backupbot.toml
    (here / "backupbot.toml").write_text('[storage]\nurl = "file:///srv/cwd"\n')
    assert load_settings(env={}, search=search).storage_url == "file:///srv/cwd"  # ./backupbot.toml first
    env_file = write(tmp_path, '[storage]\nurl = "file:///srv/env"\n', name="env.toml")
    assert load_settings(env={"BACKUPBOT_CONFIG": str(env_file)}, search=search).storage_url == "file:///srv/env"
    flag = write(tmp_path, '[storage]\nurl = "file:///srv/flag"\n', name="flag.toml")
    assert load_settings(flag, env={"BACKUPBOT_CONFIG": str(env_file)}, search=search).storage_url == "file:///srv/flag"
    assert find_config(None, {}, ("/nonexistent.toml",)) is None


def test_backupbot_config_variable_is_read(tmp_path):
    path = write(tmp_path, '[storage]\nurl = "file:///srv/backups"\n')
    assert load_settings(env={"BACKUPBOT_CONFIG": str(path)}).storage_url == "file:///srv/backups"


@pytest.mark.parametrize("text, message", [
    ("[access]\nrequired_approvals = 0\n", "access.required_approvals: expected a whole number >= 1, got 0"),
    ("[access]\napprovers = 'U1'\n", "access.approvers: expected a list"),
    ("[access]\noperators = ['alice']\n", "access.operators: 'alice' is not a Slack user"),
    ("[access]\napprovers = ['U0789']\nrequired_approvals = 2\n", "access.required_approvals: 2 approvals needed"),
    ("[access]\napprovals = 2\n", "access.approvals: unknown key"),
    ("[storage]\nurl = 42\n", "storage.url: expected a non-empty string"),
    ("[databases.main]\nurl = 'postgresql://x'\n", "databases.main.url: unknown key"),
    ("[databases.main]\nurl_env = 'not a name'\n", "databases.main.url_env"),
    ("[databases.main]\nhealth_url = 'ftp://x'\n", "databases.main.health_url: expected an http(s) URL"),
    ("[channels]\nalerts = '#alerts'\n", "channels.alerts: '#alerts' is not a Slack channel ID"),
    ("[stroage]\nurl = 'x'\n", "unknown section [stroage]"),
    ("[state\npath = 1", "is not valid TOML"),
])
def test_a_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), env={})
    assert message in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, "[access]\nrequired_approvals = 0\n")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "access.required_approvals" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
