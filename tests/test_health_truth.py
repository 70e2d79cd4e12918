"""Health that tells the truth: /healthz fails while the Socket Mode connection to Slack has been down
longer than its grace period (a real slack_sdk client against a Socket Mode endpoint the test drops),
and /readyz on the health port also fails when a database does not answer or the store takes no write.
The grace period runs on an injected clock: the test moves it, never sleeps it out.
(The scheduler and the state file's writability: tests/test_healthz_metrics.py.)"""

from __future__ import annotations

import socket

import pytest
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient

from bot.cli import main
from bot.health_checks import watch_socket_mode
from bot.server import serve_health_port
from tests.builders import make_settings
from tests.fix_socket_mode import FakeSocketMode
from tests.test_graceful_stop import wait_for
from tests.test_healthz_metrics import get


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def socket_mode(fake_slack):
    endpoint = FakeSocketMode()
    fake_slack.socket_mode_url = endpoint.url
    client = SocketModeClient(app_token="xapp-test-0123456789", web_client=WebClient(base_url=fake_slack.url),
                              ping_interval=0.5)
    yield endpoint, client
    client.close()
    endpoint.down()


def test_healthz_fails_only_once_socket_mode_has_been_down_longer_than_the_grace(
        tmp_path, sample_dsn, slack_env, start_bot, socket_mode):
    endpoint, client = socket_mode
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, health={"socket_mode_grace_seconds": 30}))
    healthz = f"http://127.0.0.1:{bot.port}/healthz"
    clock = Clock()
    bot.health.connection = watch_socket_mode(client, bot.services.settings.health.socket_mode_grace_seconds, clock)

    clock.now += 31  # never connected, for longer than the grace period
    status, body = get(healthz)
    assert status == 503 and "the Socket Mode connection to Slack has been down for 31s (more than 30s)" in body

    client.connect()  # up once Slack's hello arrives (on the client's own thread)
    wait_for(lambda: get(healthz) == (200, "ok\n"), "/healthz 200 on a connection Slack greeted")

    endpoint.down()  # Slack's end goes away; the client notices and keeps trying to reconnect
    wait_for(lambda: not client.is_connected(), "the client to see the connection drop")
    assert get(healthz) == (200, "ok\n")  # the drop is dated now; a reconnect usually takes seconds
    clock.now += 10
    assert get(healthz) == (200, "ok\n")  # within the grace period: still healthy
    clock.now += 25
    status, body = get(healthz)
    assert status == 503 and "has been down for 35s" in body

    endpoint.up()  # back: the client reconnects on its own, and /healthz follows
    wait_for(lambda: get(healthz) == (200, "ok\n"), "the client to reconnect", seconds=60)
    assert client.is_connected()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readyz_adds_the_databases_and_the_store(tmp_path, sample_dsn, slack_env, start_bot, capsys):
    env = {**slack_env, "REPORTS_URL": f"postgresql://nobody@127.0.0.1:{closed_port()}/reports"}
    settings = make_settings(tmp_path, sample_dsn, env=env, health={"connect_timeout_seconds": 2},
                             databases={"main": {"url_env": "DATABASE_URL"}, "reports": {"url_env": "REPORTS_URL"}})
    bot = start_bot(settings)
    server = serve_health_port(bot.health, "127.0.0.1", 0)
    port = server.effective_port
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/healthz") == (200, "ok\n")  # liveness: the bot itself is fine
        status, body = get(base + "/readyz")
        assert status == 503 and "database reports: cannot connect" in body and "database main" not in body
        assert main(["health", "--port", str(port)]) == 0
        assert main(["health", "--port", str(port), "--ready"]) == 1
        assert "database reports" in capsys.readouterr().out

        backups = tmp_path / "backups"
        backups.mkdir(exist_ok=True)
        backups.rmdir()
        backups.write_text("not a folder")  # the store cannot take a write, root or not
        status, body = get(base + "/readyz")
        assert status == 503 and f"storage file://{backups}" in body
        assert get(f"http://127.0.0.1:{bot.port}/readyz")[0] == 404  # not on the port Slack reaches
    finally:
        server.close()
    assert main(["health", "--port", str(port)]) == 1  # nothing answers: the HEALTHCHECK fails


def test_run_in_socket_mode_reports_the_connection_on_its_health_port_and_stops_on_sigterm(
        tmp_path, sample_dsn, fake_slack, pg_cluster):
    """`backupbot run` with SLACK_APP_TOKEN: /healthz on the health port follows the real connection
    (grace 0 here, so a drop shows at once), and SIGTERM closes it and exits 0."""
    import os
    import signal
    import subprocess
    import sys

    from tests.fix_slack import BOT_TOKEN
    from tests.test_graceful_stop import REPO
    from tests.test_healthz_metrics import free_port

    endpoint = FakeSocketMode()
    fake_slack.socket_mode_url = endpoint.url
    health_port = free_port()
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[access]\noperators = ["U0OPS"]\n[health]\nsocket_mode_grace_seconds = 0\n')
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "DATABASE_URL": sample_dsn, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_APP_TOKEN": "xapp-test-0123456789", "SLACK_API_URL": fake_slack.url}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--health-port", str(health_port),
                            "--config", str(config)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    healthz = f"http://127.0.0.1:{health_port}/healthz"

    def answer():
        assert bot.poll() is None, bot.communicate()[1]
        try:
            return get(healthz)
        except OSError:
            return None

    try:
        wait_for(lambda: answer() == (200, "ok\n"), "/healthz 200 once Slack said hello")
        endpoint.down()
        status, body = wait_for(lambda: (found := answer()) and found[0] == 503 and found, "/healthz 503")
        assert "the Socket Mode connection to Slack has been down" in body
        bot.send_signal(signal.SIGTERM)
        _, err = bot.communicate(timeout=30)
    finally:
        if bot.poll() is None:
            bot.kill()
        endpoint.down()
    assert bot.returncode == 0, err
    assert "SIGTERM: stopping" in err and "Traceback" not in err
