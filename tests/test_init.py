"""`backupbot init`: a starter config that loads as written, and the Slack manifest from manifest.yml."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from bot.cli import main
from bot.preflight import check_sections
from commands.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
URL = "https://backupbot.example.com/slack/events"


def init(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["init", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def source_manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_init_writes_a_commented_0600_config_that_loads_once_the_dsn_is_set(tmp_path, capsys):
    path = tmp_path / "backupbot.toml"
    code, out, err = init(capsys, "--config", str(path), "--data-dir", str(tmp_path / "data"))
    assert code == 0
    assert f"Wrote a starter config to {path}" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.count("\n#") >= 5 and "operators = []" in text

    dsn = "postgresql://app:s3cret@db.internal:5432/app"
    settings = load_settings(path, env={"DATABASE_URL": dsn})
    assert settings.databases["main"].require_url() == dsn
    assert settings.state_path == f"{tmp_path}/data/backupbot.db"
    assert settings.storage_url == f"file://{tmp_path}/data/backups"
    ok, line = check_sections(settings)  # schedules, retention, health and incidents, as `backupbot check` reads them
    assert ok, line
    assert "3 scheduled job(s)" in line
    assert "socket_mode_enabled: true" in out  # the manifest is printed too


def test_init_never_overwrites_an_existing_config(tmp_path, capsys):
    path = tmp_path / "backupbot.toml"
    path.write_text("# mine\n")
    code, out, err = init(capsys, "--config", str(path))
    assert code == 1  # a failure: the config is there; 2 is for usage
    assert f"{path} already exists; not overwriting it" in err
    assert path.read_text() == "# mine\n"
    assert out == ""


def test_http_manifest_sends_every_command_and_event_to_the_request_url(tmp_path, capsys):
    code, out, _ = init(capsys, "--manifest-only", "--request-url", URL)
    assert code == 0
    assert out.startswith("# Slack app manifest for backupbot")
    manifest = yaml.safe_load(out)
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [c["command"] for c in source_manifest()["features"]["slash_commands"]]
    assert all(c["url"] == URL for c in commands)
    assert manifest["settings"]["event_subscriptions"]["request_url"] == URL
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert "example.invalid" not in out
    assert list(tmp_path.iterdir()) == []  # --manifest-only writes nothing


def test_socket_mode_manifest_has_no_request_urls(capsys):
    code, out, _ = init(capsys, "--manifest-only")
    assert code == 0
    assert "socket_mode_enabled: true" in out
    assert "url:" not in out  # neither request_url nor a slash command url: Socket Mode needs no public host
    manifest = yaml.safe_load(out)
    source = source_manifest()
    # manifest.yml is the one source: scopes, events and commands come from it unchanged
    assert manifest["oauth_config"] == source["oauth_config"]
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == source["settings"]["event_subscriptions"]["bot_events"]
    assert [c["usage_hint"] for c in manifest["features"]["slash_commands"]] == [
        c["usage_hint"] for c in source["features"]["slash_commands"]]


def test_a_bare_host_gets_the_events_path_and_plain_http_is_refused(tmp_path, capsys):
    code, out, _ = init(capsys, "--manifest-only", "--request-url", "https://backupbot.example.com")
    assert code == 0 and f"url: {URL}" in out
    path = tmp_path / "backupbot.toml"
    code, out, err = init(capsys, "--config", str(path), "--request-url", "http://backupbot.example.com/slack/events")
    assert code == 2
    assert "--request-url: expected https://HOST/slack/events" in err
    assert not path.exists() and out == ""
