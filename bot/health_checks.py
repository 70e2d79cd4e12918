"""The checks behind /healthz and /readyz that bot/server.py's BotHealth adds to its own.

/healthz must fail when the bot cannot take commands, not only when its process is up: in Socket
Mode every command is lost while the WebSocket connection to Slack is down, so the connection is
watched (reconnects take seconds, so only a connection down longer than [health]
socket_mode_grace_seconds counts). /readyz also asks what a job would need right now: every
configured database answers, and the store takes a write.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable

from commands.errors import BackupbotError
from commands.redact import redact


class ConnectionWatch:
    """How long the Socket Mode connection has been down. slack_sdk's `is_connected()` alone is not enough:
    a connection whose peer is gone keeps its socket (and says connected) until the client's ping
    check gives up, and it flaps while the client reconnects. So the connection counts as down from the
    first sign (is_connected() false when checked, a close, an error such as a failed reconnect) until
    Slack's `hello`, which it sends on every new connection, arrives. Not yet greeted counts as down.
    The clock is injected (tests move it instead of sleeping)."""

    def __init__(self, is_connected: Callable[[], bool], grace_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.is_connected = is_connected
        self.grace = grace_seconds
        self.clock = clock
        self.down_since: float | None = clock()
        self._lock = threading.Lock()

    def down(self, *args) -> None:
        """on_close and on_error listener; also called when a check finds the client disconnected."""
        with self._lock:
            if self.down_since is None:
                self.down_since = self.clock()

    def message(self, text: str) -> None:
        """on_message listener: Slack's hello means a new connection is up and taking envelopes."""
        if '"hello"' in text:
            try:
                greeted = json.loads(text).get("type") == "hello"
            except (ValueError, AttributeError):
                greeted = False
            if greeted:
                with self._lock:
                    self.down_since = None

    def problem(self) -> str | None:
        if not self.is_connected():
            self.down()
        with self._lock:
            if self.down_since is None:
                return None
            down = self.clock() - self.down_since
        if down <= self.grace:
            return None
        return f"the Socket Mode connection to Slack has been down for {down:.0f}s (more than {self.grace:g}s)"


def watch_socket_mode(client, grace_seconds: float, clock: Callable[[], float] = time.monotonic) -> ConnectionWatch:
    """A watch on a slack_sdk SocketModeClient (SocketModeHandler(...).client), before it connects."""
    watch = ConnectionWatch(client.is_connected, grace_seconds, clock)
    client.on_message_listeners.append(watch.message)
    client.on_close_listeners.append(watch.down)
    client.on_error_listeners.append(watch.down)
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
    where = getattr(storage, "url", None) or "the store"
    key = f".backupbot-ready-{uuid.uuid4().hex[:12]}"
    try:
        storage.put_bytes(key, b"ready")
        same = storage.get_bytes(key) == b"ready"
        storage.delete(key)
    except (BackupbotError, OSError) as exc:
        return f"storage {where}: {redact(str(exc), services.secrets())}"
    return None if same else f"storage {where}: what was written reads back differently"


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
