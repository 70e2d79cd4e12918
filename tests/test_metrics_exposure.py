"""/metrics is not for the world (issue #17, item 5), as an operator and an outsider see it.

The public Slack port answers /metrics 404 until a bearer token is configured, then 401 without it
or with a wrong one and 200 with the right one; /healthz stays open. The health port binds
127.0.0.1 unless `--health-host` says otherwise. A token named but not set stops the bot at load.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.builders import make_settings
from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET

ACCESS = {"operators": ["U0ALICE"], "approvers": ["U0CAROL"]}
TOKEN = "0f3c9a1b7d2e4f6a8b0c1d2e3f4a5b6c"


def get(url: str, headers: dict | None = None) -> tuple[int, str, object]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def test_the_slack_port_has_no_metrics_without_a_configured_token(tmp_path, sample_dsn, slack_env, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env, access=ACCESS))
    base = f"http://127.0.0.1:{bot.port}"
    status, body, _ = get(base + "/metrics")
    assert status == 404 and "backupbot_" not in body
    assert get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 404  # no token: nothing to present
    assert get(base + "/healthz")[:2] == (200, "ok\n")


def test_the_slack_port_serves_metrics_to_the_bearer_token_only(tmp_path, sample_dsn, slack_env, start_bot):
    env = {**slack_env, "BACKUPBOT_METRICS_TOKEN": TOKEN}
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=env, access=ACCESS,
                                  health={"metrics_token_env": "BACKUPBOT_METRICS_TOKEN"}))
    base = f"http://127.0.0.1:{bot.port}"
    for headers in [{}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Bearer"}]:
        status, body, answer = get(base + "/metrics", headers)
        assert status == 401 and "backupbot_" not in body and TOKEN not in body, headers
        assert (answer.get("WWW-Authenticate") or "").startswith("Bearer")
    status, body, _ = get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "backupbot_pending_approvals 0.0" in body
    assert get(base + "/healthz")[:2] == (200, "ok\n")
    assert TOKEN in bot.services.settings.secrets()  # redacted wherever it could show up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses the kernel has a listening socket on for `port` (from /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


def outward_address() -> str | None:
    """One of this machine's non-loopback addresses (the one its default route would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: nothing is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def run_bot(tmp_path, sample_dsn, fake_slack, host: str, *extra: str) -> tuple[subprocess.Popen, int]:
    port, health_port = free_port(), free_port()
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[access]\noperators = ["U0ALICE"]\n')
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "DATABASE_URL": sample_dsn,
           "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.url}
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--host", host, "--port", str(port),
                               "--health-port", str(health_port), *extra, "--config", str(config)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(f"http://127.0.0.1:{health_port}/healthz")[:2] == (200, "ok\n"):
                return server, health_port
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError("the health port never answered: " + server.stderr.read().decode()[-2000:])
        time.sleep(0.1)


def stop(server: subprocess.Popen) -> str:
    server.terminate()
    server.wait(10)
    return server.stderr.read().decode()


def test_the_health_port_listens_on_loopback_unless_told_otherwise(tmp_path, sample_dsn, fake_slack, pg_cluster):
    outward = outward_address()
    # the Slack port faces the world (as `backupbot run` defaults to); the health port does not follow it
    server, health_port = run_bot(tmp_path, sample_dsn, fake_slack, "0.0.0.0")
    try:
        assert listening_on(health_port) == {"127.0.0.1"}
        assert "backupbot_pending_approvals" in get(f"http://127.0.0.1:{health_port}/metrics")[1]
        if outward:  # from another machine's point of view: nothing answers there
            with socket.socket() as outsider:
                outsider.settimeout(5)
                assert outsider.connect_ex((outward, health_port)) != 0
    finally:
        stop(server)
    server, health_port = run_bot(tmp_path, sample_dsn, fake_slack, "127.0.0.1", "--health-host", "0.0.0.0")
    try:
        assert listening_on(health_port) == {"0.0.0.0"}
    finally:
        logs = stop(server)
    assert "serves /metrics to anyone who reaches it" in logs  # said plainly when the operator opens it up


def test_a_metrics_token_named_but_not_set_stops_the_bot_with_a_clear_message(tmp_path):
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[health]\nmetrics_token_env = "SCRAPE_TOKEN"\n')
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for value, message in [(None, "health.metrics_token_env: environment variable SCRAPE_TOKEN is not set"),
                           ("s3cr3t", "health.metrics_token_env: the token in SCRAPE_TOKEN must be at least 16 characters")]:
        run_env = env if value is None else {**env, "SCRAPE_TOKEN": value}
        result = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--config", str(config)], env=run_env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and f"backupbot: {message}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr  # the token is never echoed
