"""The checks behind /healthz and /readyz that bot/server.py's BotHealth adds to its own.

/healthz must fail when the bot cannot take commands, not only when its process is up: in Socket
Mode every command is lost while the WebSocket connection to Slack is down, so the connection is
watched (reconnects take seconds, so only a connection down longer than [health]
socket_mode_grace_seconds counts). /readyz also asks what a job would need right now: every
configured database answers, and the store takes a write.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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


def state_problem(path: str) -> str | None:
    """Why the state database cannot take a write now, or None. A real write transaction is opened
    (BEGIN IMMEDIATE), and a file whose owner-write bit is off counts as read-only even for root."""
    if path == ":memory:":
        return None
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        return f"state database {file} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"state database {file} is not a file"
    if not mode & stat.S_IWUSR:
        return f"state database {file} is read-only (mode {stat.S_IMODE(mode):04o})"
    conn = None
    try:
        conn = sqlite3.connect(f"{file.as_uri()}?mode=rw", uri=True, timeout=2, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return f"state database {file} is not writable: {exc}"
    finally:
        if conn is not None:
            conn.close()
    return None


class BotHealth:
    """What /healthz answers: 200 only when the state database takes writes, the scheduler runs, the
    bot's last Slack call got through, the Socket Mode connection (when `connection` watches one) is up
    or down for less than its grace period, and the bot is not stopping. /readyz adds the databases
    and the store."""

    def __init__(self, services, slack_status=None, scheduler=None,
                 require_scheduler: bool = False, connection=None):
        self.services = services
        self.slack_status = slack_status
        self.scheduler = scheduler
        self.require_scheduler = require_scheduler
        self.slack_client = None  # what POST /checkpoint posts its backup through (bot/checkpoint.py)
        self.connection = connection  # bot.health_checks.ConnectionWatch in Socket Mode

    def ready_problems(self) -> list[str]:
        store = store_problem(self.services)
        return self.problems() + database_problems(self.services) + ([store] if store else [])

    def problems(self) -> list[str]:
        found = []
        if self.connection is not None:
            down = self.connection.problem()
            if down:
                found.append(down)
        problem = state_problem(self.services.settings.state_path)
        if problem:
            found.append(problem)
        if self.require_scheduler and not getattr(self.scheduler, "running", False):
            found.append("the scheduler is not running")
        if self.slack_status is not None and not self.slack_status.ok:
            found.append(f"the last Slack call failed ({self.slack_status.error})")
        # read last: a stop sets `stopping` before it shuts the scheduler down, so a check that saw the
        # scheduler stopped by a stop also sees the stop, and says why
        stopping = getattr(self.services, "stopping", None)
        if stopping is not None and stopping.is_set():
            found.insert(0, "the bot is stopping (it takes no commands; running jobs are finishing)")
        return found
