"""/healthz, /metrics, the health port for Socket Mode, and JSON logs, as an operator's monitor sees them."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from tests.builders import make_settings
from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET

ACCESS = {"operators": ["U0ALICE"], "approvers": ["U0CAROL"]}
METRICS_TOKEN = "scrape-token-0123456789abcdef"


def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def bot(tmp_path, sample_dsn, slack_env, start_bot):
    """A bot whose /healthz also checks a running scheduler, as `backupbot run` does."""
    from bot.scheduler import build_scheduler
    from bot.slack_reply import SlackReply

    # /metrics on the Slack port answers only to the configured bearer token (test_metrics_exposure.py)
    server = start_bot(make_settings(tmp_path, sample_dsn, env={**slack_env, "METRICS_TOKEN": METRICS_TOKEN},
                                     access=ACCESS, health={"metrics_token_env": "METRICS_TOKEN"}))
    scheduler = build_scheduler(server.services, lambda: SlackReply(server.client))
    scheduler.start()
    server.health.scheduler, server.health.require_scheduler = scheduler, True
    server.base = f"http://127.0.0.1:{server.port}"
    yield server
    if scheduler.running:
        scheduler.shutdown(wait=False)


def test_healthz_is_ok_when_everything_works(bot):
    assert get(bot.base + "/healthz") == (200, "ok\n")


def test_healthz_is_503_when_the_state_file_is_read_only(bot):
    state = bot.services.settings.state_path
    os.chmod(state, 0o444)
    try:
        status, body = get(bot.base + "/healthz")
        assert status == 503 and "read-only" in body and "state database" in body
    finally:
        os.chmod(state, 0o600)
    assert get(bot.base + "/healthz")[0] == 200


def test_healthz_is_503_when_the_state_database_takes_no_writes(bot):
    """Root ignores file modes; a write lock held elsewhere really stops writes, root or not."""
    holder = sqlite3.connect(bot.services.settings.state_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        status, body = get(bot.base + "/healthz")
        assert status == 503 and "not writable" in body and "locked" in body
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert get(bot.base + "/healthz")[0] == 200


def test_healthz_is_503_when_the_scheduler_stopped(bot):
    bot.health.scheduler.shutdown(wait=False)
    status, body = get(bot.base + "/healthz")
    assert status == 503 and "scheduler is not running" in body


def test_healthz_is_503_while_slack_refuses_the_bot(bot, fake_slack):
    fake_slack.fail_methods["chat.postEphemeral"] = "token_revoked"
    bot.slack.command("/backup", "help", user="U0ALICE")
    fake_slack.wait_for(lambda api: api.said("chat.postEphemeral"), what="the bot's attempt")
    fake_slack.wait_for(lambda api: get(bot.base + "/healthz")[0] == 503, timeout=10, what="/healthz to turn 503")
    assert "last Slack call failed (chat.postEphemeral: token_revoked)" in get(bot.base + "/healthz")[1]
    fake_slack.fail_methods.clear()
    bot.slack.command("/backup", "help", user="U0ALICE")
    fake_slack.wait_for(lambda api: get(bot.base + "/healthz")[0] == 200, timeout=10, what="/healthz back to 200")


def test_metrics_show_the_last_backup_after_a_backup(bot, fake_slack):
    status, before = get(bot.base + "/metrics", METRICS_TOKEN)
    assert status == 200 and 'backupbot_last_backup_timestamp_seconds{database="main"}' not in before
    assert "backupbot_pending_approvals 0.0" in before and 'backupbot_jobs{state="running"} 0.0' in before
    started = time.time()
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    status, text = get(bot.base + "/metrics", METRICS_TOKEN)
    assert status == 200
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    stamp = values['backupbot_last_backup_timestamp_seconds{database="main"}']
    assert started - 2 <= stamp <= time.time() + 1
    assert values['backupbot_last_backup_size_bytes{database="main"}'] > 0
    assert 'backupbot_last_backup_duration_seconds{database="main"}' in values
    assert values["backupbot_healthy"] == 1.0


def test_metrics_count_failures_by_kind(bot, fake_slack, pg_cluster):
    from state.jobs import FAILED, claim_database, finish_job

    job = claim_database(bot.services.store, "backup", "main", "U0ALICE")
    finish_job(bot.services.store, job.id, FAILED, "pg_dump exited 1")
    _, text = get(bot.base + "/metrics", METRICS_TOKEN)
    assert 'backupbot_failures_total{kind="backup"} 1.0' in text


def metric_values(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_for_alerting_build_failures_by_database_and_schedules(bot):
    from bot.cli import version
    from state import health as health_state
    from state.jobs import FAILED, claim_database, finish_job

    store = bot.services.store
    job = claim_database(store, "backup", "main", "U0ALICE")
    finish_job(store, job.id, FAILED, "pg_dump exited 1")
    ok = health_state.start_run(store, "backup main", "main", "2026-11-30T02:00:00+00:00")
    health_state.finish_run(store, ok, "2026-11-30T02:00:07+00:00", "succeeded")
    failed = health_state.start_run(store, "drill main", "main", "2026-11-30T05:00:00+00:00")
    health_state.finish_run(store, failed, "2026-11-30T05:00:09+00:00", "failed", "restore failed")
    values = metric_values(get(bot.base + "/metrics", METRICS_TOKEN)[1])
    assert values[f'backupbot_build_info{{version="{version()}"}}'] == 1.0
    assert values['backupbot_job_failures_total{database="main",kind="backup"}'] == 1.0
    assert values['backupbot_job_failures_total{database="main",kind="scheduled drill"}'] == 1.0
    assert values['backupbot_schedule_last_success_timestamp_seconds{schedule="backup main"}'] == datetime(
        2026, 11, 30, 2, 0, 7, tzinfo=UTC).timestamp()
    assert 'backupbot_schedule_last_success_timestamp_seconds{schedule="drill main"}' not in values  # never succeeded
    assert not any(key.startswith("backupbot_rpo_seconds") for key in values)  # no pgBackRest database here


def test_the_health_port_serves_healthz_and_metrics_for_socket_mode(bot):
    from bot.server import serve_health_port

    server = serve_health_port(bot.health, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.effective_port}"
        assert get(base + "/healthz") == (200, "ok\n")
        assert "backupbot_pending_approvals" in get(base + "/metrics", METRICS_TOKEN)[1]
        assert get(base + "/slack/events")[0] == 404
        bot.health.scheduler.shutdown(wait=False)
        assert get(base + "/healthz")[0] == 503
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_with_json_logs_and_a_health_port(tmp_path, sample_dsn, fake_slack, pg_cluster):
    port, health_port = free_port(), free_port()
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[access]\noperators = ["U0ALICE"]\n')
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": sample_dsn, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.url}
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--host", "127.0.0.1", "--port", str(port),
                               "--health-port", str(health_port), "--log-format", "json", "--config", str(config)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # both listeners start on their own threads: wait for the two
                if (get(f"http://127.0.0.1:{health_port}/healthz") == (200, "ok\n")
                        and get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")):
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the health port or the Slack port never answered"
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(10)
    lines = [line for line in server.stderr.read().decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["message"].startswith("serving Slack over HTTP") for r in records)
    assert any("/healthz and /metrics" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert pg_cluster.password not in "\n".join(lines)


def test_json_logs_are_redacted(capsys):
    import logging

    from bot.logs import register_secrets, setup_logging

    register_secrets(["hunter2-very-secret"])
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(json_format=True)
        try:
            raise RuntimeError("connect to postgresql://app:hunter2-very-secret@db/app failed")
        except RuntimeError:
            logging.getLogger("backupbot.test").exception("backup failed with token xoxb-1234-abcd")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["level"] == "ERROR" and record["logger"] == "backupbot.test"
    assert "hunter2" not in line and "xoxb-1234" not in line
    assert "RuntimeError" in record["exception"] and "backup failed" in record["message"]
