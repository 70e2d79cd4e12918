"""Alerts that do not depend on Slack: [alerts] webhook_url and [databases.X] heartbeat_url."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from commands.errors import ConfigError
from tests.builders import make_settings

TOKEN = "hc-0f9e8d7c6b5a"  # a secret path part, as healthchecks.io and incoming webhooks have


class Recorder:
    """A local HTTP server that records every request (method, path, JSON body)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.event = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "type": self.headers.get("Content-Type"),
                                          "json": json.loads(raw) if raw else None})
                recorder.event.set()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


def scheduled_bot(tmp_path, sample_dsn, slack_env, recorder, pg_cluster):
    from bot.scheduler import build_scheduler
    from bot.server import make_client, scheduler_reply_factory
    from bot.startup import start_services

    settings = make_settings(
        tmp_path, sample_dsn, env={**slack_env, "BROKEN_URL": f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:1/x"},
        databases={"main": {"url_env": "DATABASE_URL", "heartbeat_url": f"{recorder.url}/ping/{TOKEN}/main"},
                   "broken": {"url_env": "BROKEN_URL", "heartbeat_url": f"{recorder.url}/ping/{TOKEN}/broken"}},
        schedules={"main": {"backup": "0 2 * * *"}, "broken": {"backup": "0 2 * * *"}},
        channels={"alerts": "C0ALERTS"}, alerts={"webhook_url": f"{recorder.url}/hook/{TOKEN}"},
    )
    services = start_services(settings)
    # the scheduler exactly as `backupbot run` builds it, not started: the test runs its jobs now
    scheduler = build_scheduler(services, scheduler_reply_factory(services, make_client(settings)))
    return services, scheduler


def run_job(scheduler, name):
    job = scheduler.get_job(name)
    return job.func(*job.args)


def test_a_successful_scheduled_backup_pings_its_heartbeat(tmp_path, sample_dsn, slack_env, fake_slack, recorder,
                                                           pg_cluster):
    services, scheduler = scheduled_bot(tmp_path, sample_dsn, slack_env, recorder, pg_cluster)
    assert run_job(scheduler, "backup main") == "succeeded"
    assert [r["method"] for r in recorder.to(f"/ping/{TOKEN}/main")] == ["GET"]
    assert recorder.to(f"/hook/{TOKEN}") == []  # nothing to alert about


def test_a_failed_scheduled_backup_alerts_the_webhook_and_skips_the_heartbeat(tmp_path, sample_dsn, slack_env,
                                                                               fake_slack, recorder, pg_cluster):
    services, scheduler = scheduled_bot(tmp_path, sample_dsn, slack_env, recorder, pg_cluster)
    assert run_job(scheduler, "backup broken") == "failed"
    assert recorder.to(f"/ping/{TOKEN}/broken") == []
    [hook] = recorder.to(f"/hook/{TOKEN}")
    assert hook["method"] == "POST" and hook["type"] == "application/json"
    assert hook["json"]["source"] == "backupbot" and "Scheduled backup broken failed" in hook["json"]["text"]
    assert pg_cluster.password not in json.dumps(hook["json"])
    # Slack got the same alert, and never saw the webhook's or the heartbeat's secret
    assert any("Scheduled backup broken failed" in a.get("text", "") for a in fake_slack.said("chat.postMessage")
               if a.get("channel") == "C0ALERTS")
    assert TOKEN not in fake_slack.all_bodies()


def test_an_rpo_breach_reaches_the_webhook_while_slack_is_down(tmp_path, sample_dsn, slack_env, fake_slack, recorder,
                                                               pg_cluster):
    fake_slack.fail_methods["chat.postMessage"] = "fatal_error"
    services, scheduler = scheduled_bot(tmp_path, sample_dsn, slack_env, recorder, pg_cluster)
    run_job(scheduler, "rpo check")
    texts = [r["json"]["text"] for r in recorder.to(f"/hook/{TOKEN}")]
    assert any("main has no successful backup within its RPO" in t for t in texts), texts
    assert fake_slack.said("chat.postMessage"), "Slack was tried too"


def test_webhook_and_heartbeat_settings_are_checked():
    from commands.settings import parse_settings

    settings = parse_settings({"alerts": {"webhook_url": "https://hooks.example.com/T0/B0/x"},
                               "databases": {"main": {"heartbeat_url": "https://hc-ping.com/abc"}}}, {})
    assert settings.alerts.webhook_url == "https://hooks.example.com/T0/B0/x"
    assert settings.database("main").heartbeat_url == "https://hc-ping.com/abc"
    assert "https://hc-ping.com/abc" in settings.secrets()
    assert parse_settings({}, {}).alerts.webhook_url is None
    with pytest.raises(ConfigError, match=r"^databases.main.heartbeat_url: expected an http\(s\) URL$"):
        parse_settings({"databases": {"main": {"heartbeat_url": "ftp://x/secret"}}}, {})
    with pytest.raises(ConfigError, match="alerts.url: unknown key"):
        parse_settings({"alerts": {"url": "https://x"}}, {})
