"""Opening the state database and applying numbered migrations.

Each call opens its own short-lived connection: Bolt runs listeners on worker threads and the
scheduler on others, and SQLite connections must not be shared across threads. WAL mode lets
readers run beside the one writer; `immediate()` takes the write lock up front so a
read-check-write (claiming a database, counting an approval) is one atomic step.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

import state.migrations
from state.lock import make_private_dirs


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            _create_private(Path(self.path).expanduser())
        with self.db() as db:
            db.conn.execute("PRAGMA journal_mode=WAL")
        self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite_utils.Database]:
        conn = self._connect()
        try:
            yield sqlite_utils.Database(conn)
        finally:
            conn.close()

    @contextlib.contextmanager
    def immediate(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that holds the lock from its first statement."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield sqlite_utils.Database(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet, in order; return their numbers."""
        applied_now = []
        with self.immediate() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in db.execute("SELECT number FROM schema_migrations").fetchall()}
            for number, name, module in available_migrations():
                if number in done:
                    continue
                for statement in _statements(module.SQL):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (number, name, applied_at) VALUES (?, ?, ?)",
                    [number, name, utcnow_iso()],
                )
                applied_now.append(number)
        return applied_now


def _create_private(path: Path) -> None:
    """Create the database file 0600 (its folder 0700 when we create it) before SQLite opens it.

    SQLite creates a new file 0644 and gives its -wal and -shm files the database file's mode, so
    owning the main file's mode covers all three. An existing file is tightened to 0600 as well.
    """
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            with contextlib.suppress(PermissionError):  # not ours to change
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = Path(f"{path}{suffix}")
        if sidecar.exists() and sidecar.stat().st_mode & 0o077:
            with contextlib.suppress(PermissionError):
                sidecar.chmod(0o600)


def available_migrations() -> list[tuple[int, str, object]]:
    found = []
    for info in pkgutil.iter_modules(state.migrations.__path__):
        if info.name.startswith("m") and info.name[1:4].isdigit():
            module = importlib.import_module(f"state.migrations.{info.name}")
            found.append((int(info.name[1:4]), info.name[5:], module))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";\n") if s.strip()]
