"""A checkpoint from the deploy pipeline: `backupbot backup DB --wait` and `POST /checkpoint` take a backup
like /backup, post it where scheduled backups go, and say yes (with the id) only once it is verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bot.console import os_account
from commands.backup.checkpoint import take_checkpoint
from commands.chat.context import Actor
from state.backups import get_backup, list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings, suite_signing_key

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "checkpoint-token-0123456789abcdef"


def write_config(tmp_path, console_operators=None):
    config = tmp_path / "backupbot.toml"
    operators = [os_account()] if console_operators is None else console_operators
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      f'signing_key_files = ["{suite_signing_key()}"]\n[access]\noperators = ["U0ALICE"]\n'
                      f'console_operators = {json.dumps(operators)}\n[channels]\nalerts = "C0ALERTS"\n')
    return str(config)


def backupbot(*args, env):
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=180, cwd=ROOT)


def test_backup_wait_prints_the_id_once_stored_and_verified_and_posts_it(tmp_path, sample_dsn, slack_env, fake_slack):
    config = write_config(tmp_path)
    result = backupbot("backup", "main", "--wait", "--note", "before release 4.2", "--config", config,
                       env={"DATABASE_URL": sample_dsn, **slack_env})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "1\n"
    assert "Backup #1 of main is stored and verified (sha256 " in result.stderr
    posted = fake_slack.wait_for_text("Backup #1 of main started", method="chat.postMessage")
    assert posted["channel"] == "C0ALERTS"
    done = fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    assert "Note: before release 4.2" in done["text"]
    from commands.settings import load_settings
    from state.store import Store

    store = Store(load_settings(config).state_path)
    record = get_backup(store, 1)
    assert record.note == "before release 4.2" and record.kind == "manual"
    assert record.sha256 in result.stderr


def test_backup_wait_fails_with_the_reason_and_exit_1(tmp_path, pg_cluster, sample_dsn):
    down = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:1/app"  # nothing listens on port 1
    result = backupbot("backup", "main", "--wait", "--config", write_config(tmp_path), env={"DATABASE_URL": down})
    assert result.returncode == 1 and result.stdout == ""
    assert "backupbot: the checkpoint backup of main failed (backup #1): cannot connect" in result.stderr
    assert pg_cluster.password not in result.stderr and "Traceback" not in result.stderr

    result = backupbot("backup", "nope", "--wait", "--config", write_config(tmp_path), env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 1 and "unknown database 'nope' (configured: main)" in result.stderr

    result = backupbot("backup", "main", "--wait", "--config", write_config(tmp_path, console_operators=[]),
                       env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 1 and "no console operators are configured" in result.stderr

    result = backupbot("backup", "main", "--config", write_config(tmp_path), env={"DATABASE_URL": sample_dsn})
    assert result.returncode == 2 and "the following arguments are required: --wait" in result.stderr


def test_a_backup_whose_stored_bytes_differ_is_not_a_checkpoint(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn))
    storage = console.services.storage
    real = storage.read_chunks

    def bitrot(key, chunk_size=1 << 20):  # what storage hands back is not what was written
        for chunk in real(key, chunk_size):
            yield bytes([chunk[0] ^ 0xFF]) + chunk[1:]

    storage.read_chunks = bitrot
    result = take_checkpoint(console.services, "main", None, Actor(user="U0OPS"))
    assert not result.ok and result.backup_id == 1
    assert "backup #1 is corrupted: its artifact's sha256 is" in result.reason
    storage.read_chunks = real
    again = take_checkpoint(console.services, "main", "retry", Actor(user="U0OPS"))
    assert again.ok and again.backup_id == 2 and again.sha256 == get_backup(console.services.store, 2).sha256


def post(url, body, token=TOKEN):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_post_checkpoint_with_the_bearer_token(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    settings = make_settings(tmp_path, sample_dsn, env={**slack_env, "CHECKPOINT_TOKEN": TOKEN},
                             health={"checkpoint_token_env": "CHECKPOINT_TOKEN"}, channels={"alerts": "C0ALERTS"})
    bot = start_bot(settings)
    url = f"http://127.0.0.1:{bot.port}/checkpoint"
    assert post(url, {"database": "main"}, token=None)[0] == 401
    assert post(url, {"database": "main"}, token="wrong-token-0123456789")[0] == 401
    assert recent_jobs(bot.services.store) == []  # refused before anything ran
    status, body = post(url, b"not json")
    assert status == 400 and '{"database": "NAME", "note": "TEXT"}' in body["reason"]
    status, body = post(url, {"database": "nope"})
    assert status == 422 and body["ok"] is False and "unknown database 'nope'" in body["reason"]

    status, body = post(url, {"database": "main", "note": "deploy 4.2"})
    assert status == 200 and body["ok"] is True and body["backup_id"] == 1, body
    [record] = list_backups(bot.services.store)
    assert body["sha256"] == record.sha256 and record.note == "deploy 4.2"
    posted = fake_slack.wait_for_text("Backup #1 of main started by <@pipeline>", method="chat.postMessage")
    assert posted["channel"] == "C0ALERTS"
    assert TOKEN not in json.dumps(fake_slack.said())


def test_checkpoint_does_not_exist_without_its_token(tmp_path, sample_dsn, slack_env, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    status, body = post(f"http://127.0.0.1:{bot.port}/checkpoint", {"database": "main"})
    assert status == 404 and recent_jobs(bot.services.store) == []


def test_the_health_port_serves_checkpoint_with_the_same_token(tmp_path, sample_dsn, slack_env, start_bot):
    from bot.server import serve_health_port

    settings = make_settings(tmp_path, sample_dsn, env={**slack_env, "CHECKPOINT_TOKEN": TOKEN},
                             health={"checkpoint_token_env": "CHECKPOINT_TOKEN"})
    bot = start_bot(settings)
    server = serve_health_port(bot.health, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.effective_port}/checkpoint"
        assert post(url, {"database": "main"}, token=None)[0] == 401
        status, body = post(url, {"database": "main"})
        assert status == 200 and body["backup_id"] == 1 and body["sha256"] == get_backup(bot.services.store, 1).sha256
    finally:
        server.close()
