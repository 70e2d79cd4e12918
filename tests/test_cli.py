"""The `backupbot` command as an admin runs it: preflight checks and the demo console."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.builders import suite_signing_key


def run_cli(args, env, stdin="", timeout=180):
    full_env = {"PATH": os.environ["PATH"], **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def write_config(tmp_path, storage=None, extra=""):
    config = tmp_path / "backupbot.toml"
    storage = storage or f"file://{tmp_path / 'b'}"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "{storage}"\n'
                      f'signing_key_files = ["{suite_signing_key()}"]\n[access]\noperators = ["U0ALICE"]\n'
                      'approvers = ["U0BOB"]\n' + extra)
    return str(config)


def test_check_passes_on_a_working_setup(tmp_path, sample_dsn, slack_env, fake_slack):
    result = run_cli(["check", "--config", write_config(tmp_path)], {"DATABASE_URL": sample_dsn, **slack_env})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok   database main: reachable, PostgreSQL") for line in lines)
    assert any("pg_dump" in line and ">= server" in line for line in lines)
    assert any(line.startswith("ok   storage file://") and "writable" in line for line in lines)
    assert any(line.startswith("ok   slack: auth.test ok") for line in lines)
    assert fake_slack.said("auth.test")
    assert not list((tmp_path / "b").rglob("*probe*"))


def test_check_fails_and_says_why(tmp_path, pg_cluster):
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:1/app"  # nothing listens on port 1
    result = run_cli(["check", "--config", write_config(tmp_path, storage="file:///proc/no-such-dir")],
                     {"DATABASE_URL": dsn})
    assert result.returncode == 1
    assert "FAIL database main: cannot connect" in result.stdout
    assert "FAIL storage" in result.stdout
    assert pg_cluster.password not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_check_catches_a_restore_that_could_not_decrypt_wait_for_approval_or_start(tmp_path, sample_dsn):
    from pyrage import x25519

    key = x25519.Identity.generate()
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      f'encrypt_to = ["{key.to_public()}"]\nsigning_key_files = ["{suite_signing_key()}"]\n'
                      '[access]\noperators = ["U0ALICE"]\n')
    result = run_cli(["check", "--config", str(config)], {"DATABASE_URL": sample_dsn})
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL encryption: storage.encrypt_to is set but storage.identity_file is not" in out
    assert "FAIL approvers: none configured, so every restore request would wait until it expires" in out
    assert "FAIL slack: SLACK_BOT_TOKEN is not set" in out and "`backupbot run` would refuse to start" in out
    assert "FAIL slack: neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP mode) is set" in out

    config.write_text(config.read_text().replace("encrypt_to", f'identity_file = "{tmp_path / "age.key"}"\nencrypt_to'))
    result = run_cli(["check", "--config", str(config)], {"DATABASE_URL": sample_dsn})
    assert f"FAIL encryption: storage.identity_file: {tmp_path / 'age.key'} does not exist" in result.stdout
    (tmp_path / "age.key").write_text(str(key) + "\n")
    (tmp_path / "age.key").chmod(0o644)
    result = run_cli(["check", "--config", str(config)], {"DATABASE_URL": sample_dsn})
    assert "FAIL encryption: storage.identity_file:" in result.stdout and "chmod 600" in result.stdout
    (tmp_path / "age.key").chmod(0o600)
    result = run_cli(["check", "--config", str(config)], {"DATABASE_URL": sample_dsn})
    assert f"ok   encryption: to 1 recipient(s); {tmp_path / 'age.key'} can decrypt" in result.stdout
    assert str(key) not in result.stdout + result.stderr


def test_check_json_for_monitoring(tmp_path, sample_dsn, slack_env, fake_slack):
    import json

    result = run_cli(["check", "--json", "--config", write_config(tmp_path)], {"DATABASE_URL": sample_dsn, **slack_env})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["failed"] == 0 and report["passed"] == len(report["checks"])
    assert any(c["check"] == "database main" and c["detail"].startswith("reachable, PostgreSQL") for c in report["checks"])
    result = run_cli(["check", "--json", "--config", write_config(tmp_path, storage="file:///proc/no-such-dir")],
                     {"DATABASE_URL": sample_dsn, **slack_env})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["failed"] == 1
    assert [c["check"] for c in report["checks"] if not c["ok"]] == ["storage file:///proc/no-such-dir"]


def test_check_reads_every_section(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[schedules.main]\nbackup = "at two"\n')
    result = run_cli(["check", "--config", str(config)], {"DATABASE_URL": "postgresql://localhost/x"})
    assert result.returncode == 1
    assert "FAIL config: schedules.main.backup: 'at two' is not a cron expression" in result.stdout


def test_check_without_a_database_url(tmp_path):
    result = run_cli(["check", "--config", write_config(tmp_path)], {})
    assert result.returncode == 1
    assert "FAIL database main: databases.main: environment variable DATABASE_URL is not set" in result.stdout


def test_demo_console_backs_up_the_sample_database(tmp_path):
    result = run_cli(["console", "--demo"], {"TMPDIR": str(tmp_path)},
                     stdin="/backup\n/backup --format gzip --tables users,products\n/backup list\n/backup nope\n"
                           ":quit\n/backup\n")
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # the demo's backups, state and key went with it
    assert "Backup #3" not in result.stdout and "error" not in result.stdout  # :quit quit
    out = result.stdout
    assert "Backup #1 of main started by @U_CONSOLE" in out
    assert "Backup #1 of main succeeded" in out and "Backup #2 of main succeeded" in out
    assert "Tables: 9" in out or "Tables: " in out
    assert "unknown database 'nope'" in out
    assert "Traceback" not in result.stderr


def test_version_and_a_bad_port_are_clear(tmp_path):
    from bot.cli import version

    result = run_cli(["--version"], {})
    assert result.returncode == 0 and result.stdout.strip() == f"backupbot {version()}" and version() != "unknown"
    result = run_cli(["run", "--help"], {"PORT": "http"})
    assert result.returncode == 0 and "--log-level" in result.stdout and "Traceback" not in result.stderr
    result = run_cli(["run", "--config", write_config(tmp_path)], {"PORT": "http"})
    assert result.returncode == 2 and "backupbot: error: $PORT: 'http' is not a port number (0-65535)" in result.stderr
    result = run_cli(["run", "--port", "99999"], {})
    assert result.returncode == 2 and "--port: '99999' is not a port number" in result.stderr
    assert "Traceback" not in result.stderr


def test_exit_codes_one_for_a_failure_two_for_usage(tmp_path):
    result = run_cli(["check", "--config", str(tmp_path / "missing.toml")], {})
    assert result.returncode == 1 and f"FAIL config: config file {tmp_path / 'missing.toml'} does not exist" in result.stdout
    result = run_cli(["catalog", "rebuild", "--config", str(tmp_path / "missing.toml")], {})
    assert result.returncode == 1 and "backupbot: config file" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(["check", "--no-such-flag"], {})
    assert result.returncode == 2 and "unrecognized arguments: --no-such-flag" in result.stderr
    result = run_cli(["console", "--as", "U0BOB", "--config", write_config(tmp_path)], {})
    assert result.returncode == 2 and "--as works only with --demo" in result.stderr


def test_run_serves_slack_over_http(tmp_path, sample_dsn, fake_slack):
    import socket
    import time
    import urllib.request

    from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET, SlackSender

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": sample_dsn, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.url}
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--host", "127.0.0.1", "--port", str(port),
                               "--config", write_config(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.read() == b"ok\n"
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "backupbot run did not start serving"
                time.sleep(0.1)
        slack = SlackSender(f"http://127.0.0.1:{port}/slack/events", fake_slack)
        status, _, seconds = slack.command("/backup", "main", user="U0ALICE")
        assert status == 200 and seconds < 3
        fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    finally:
        server.terminate()
        server.wait(10)
    logs = server.stderr.read().decode()
    assert "serving Slack over HTTP" in logs
    assert sample_dsn.split(":")[2].split("@")[0] not in logs


def test_check_names_channels_the_bot_cannot_post_in_and_checks_the_app_token(tmp_path, sample_dsn, fake_slack):
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[access]\noperators = ["U0ALICE"]\n[channels]\nalerts = "C0ALERTS"\ndigest = "C0SECRET"\n')
    fake_slack.channels["C0SECRET"] = {"name": "dba-private", "is_private": True, "is_member": False}
    env = {"DATABASE_URL": sample_dsn, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test",
           "SLACK_API_URL": fake_slack.url}
    result = run_cli(["check", "--config", str(config)], env)
    assert result.returncode == 1
    assert "ok   slack channels.alerts: the bot is in #c0alerts" in result.stdout
    assert "FAIL slack channels.digest: #dba-private is private and the bot is not in it: invite @backupbot" in result.stdout
    assert "ok   slack app-level token: apps.connections.open ok (connections:write" in result.stdout
    fake_slack.fail_methods["apps.connections.open"] = "missing_scope"
    result = run_cli(["check", "--config", str(config)], env)
    assert "FAIL slack app-level token: apps.connections.open failed (missing_scope)" in result.stdout
    assert "xapp-test" not in result.stdout + result.stderr


def test_check_reads_the_config_init_wrote(tmp_path):
    """`backupbot init` writes ./backupbot.toml; `check` (and every subcommand) then finds it there."""
    from pathlib import Path

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cli = [sys.executable, "-m", "bot.cli"]
    made = subprocess.run([*cli, "init", "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    checked = subprocess.run([*cli, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert checked.stdout.startswith("ok   config: backupbot.toml\n"), checked.stdout
    assert f"storage file://{tmp_path / 'data' / 'backups'}" in checked.stdout
    assert "FAIL access: no operators are configured" in checked.stdout  # the starter's empty [access] is read
