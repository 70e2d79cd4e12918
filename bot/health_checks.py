"""The checks behind /healthz and /readyz that bot/server.py's BotHealth adds to its own.

/healthz must fail when the bot cannot take commands, not only when its process is up: in Socket
Mode every command is lost while the WebSocket connection to Slack is down, so the connection is
watched (reconnects take seconds, so only a connection down longer than [health]
socket_mode_grace_seconds counts). /readyz also asks what a job would need right now: every
configured database answers, and the store takes a write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from commands.errors import BackupbotError
from commands.redact import redact


class ConnectionWatch:
    """How long the Socket Mode connection has been down. `is_connected` is the slack_sdk client's;
    `closed` is its on-close listener, so a drop is dated when it happens, not when a check sees it.
    The clock is injected (tests move it instead of sleeping). Not yet connected counts as down."""

    def __init__(self, is_connected: Callable[[], bool], grace_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.is_connected = is_connected
        self.grace = grace_seconds
        self.clock = clock
        self.down_since: float | None = clock()
        self._lock = threading.Lock()

    def closed(self, *args) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = self.clock()

    def problem(self) -> str | None:
        now = self.clock()
        connected = self.is_connected()
        with self._lock:
            if connected:
                self.down_since = None
                return None
            if self.down_since is None:
                self.down_since = now
            down = now - self.down_since
        if down <= self.grace:
            return None
        return f"the Socket Mode connection to Slack has been down for {down:.0f}s (more than {self.grace:g}s)"


def watch_socket_mode(client, grace_seconds: float, clock: Callable[[], float] = time.monotonic) -> ConnectionWatch:
    """A watch on a slack_sdk SocketModeClient (SocketModeHandler(...).client)."""
    watch = ConnectionWatch(client.is_connected, grace_seconds, clock)
    client.on_close_listeners.append(watch.closed)
    return watch


def database_problems(services) -> list[str]:
    """Each configured database that does not answer a query within [health] connect_timeout_seconds."""
    from commands.pg.snapshot import connect

    settings = services.settings
    found = []
    for db in settings.databases.values():
        try:
            with connect(db.require_url(), timeout_s=max(1, int(settings.health.connect_timeout_seconds)),
                         statement_timeout_ms=int(settings.health.statement_timeout_ms)) as conn:
                conn.execute("SELECT 1")
        except BackupbotError as exc:
            found.append(f"database {db.name}: {redact(str(exc), settings.secrets())}")
    return found


def store_problem(services) -> str | None:
    """The store takes a write, reads it back and deletes it (a probe key no listing of backups shows)."""
    storage = services.storage
    key = f".backupbot-ready-{uuid.uuid4().hex[:12]}"
    try:
        storage.put_bytes(key, b"ready")
        same = storage.get_bytes(key) == b"ready"
        storage.delete(key)
    except (BackupbotError, OSError) as exc:
        return f"storage {storage.location('')}: {redact(str(exc), services.secrets())}"
    return None if same else f"storage {storage.location('')}: what was written reads back differently"


def ask_health_port(host: str, port: int, path: str, out=print, timeout: float = 8) -> int:
    """`backupbot health`: the image's HEALTHCHECK, with no curl in the image. 0 on 200, else 1."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            out(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        out(exc.read().decode().strip() or f"HTTP {exc.code}")
    except OSError as exc:
        out(f"nothing answers on {host}:{port} ({exc})")
    return 1
