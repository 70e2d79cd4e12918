"""Copies of the state database in storage, so an incident timeline outlives the bot's disk.

`copy_state` takes a consistent copy with SQLite's online backup API while the bot keeps writing
(WAL readers never block the writer), checks it, and uploads it as
`_state/backupbot-state-<stamp>.db` (`.db.age` when encrypted) with a `_state/latest.json` pointer.
`restore_state` brings a copy back as the state file of a stopped bot.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from commands.errors import IntegrityError, NotFoundError, StorageError, UsageError

STATE_PREFIX = "_state/"
LATEST_KEY = STATE_PREFIX + "latest.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class StateCopy:
    key: str
    size: int  # bytes stored (encrypted when recipients are set)
    sha256: str  # of the stored bytes
    taken_at: str
    recipients: tuple[str, ...] = ()

    def text(self) -> str:
        how = f", encrypted to {len(self.recipients)} age recipient(s)" if self.recipients else ""
        return f"state database copied to {self.key} ({self.size:,} bytes{how}) at {self.taken_at}"


def _private_tempdir(near: Path | None = None) -> Path:
    return Path(tempfile.mkdtemp(prefix="backupbot-state-", dir=near))


def snapshot_state(state_path: str | os.PathLike, dest: str | os.PathLike) -> None:
    """A consistent single-file copy of the live state database at `dest` (0600), taken with the online
    backup API in one step: one read transaction, so concurrent writers wait for nothing and the copy
    is the database as of one commit."""
    source = sqlite3.connect(f"file:{Path(state_path).expanduser()}?mode=ro", uri=True, timeout=30)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    target = sqlite3.connect(dest)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        source.backup(target)  # pages=-1: the whole database in one step
        target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        _check_database(target, str(dest))
    finally:
        target.close()
        source.close()


def _check_database(conn: sqlite3.Connection, name: str) -> None:
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        migrated = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{name} is not a usable SQLite database: {exc}") from None
    if result != "ok":
        raise IntegrityError(f"{name} fails SQLite's integrity check: {result}")
    if not migrated:
        raise IntegrityError(f"{name} is not a backupbot state database (no schema_migrations table)")


def state_copy_key(taken: datetime, encrypted: bool) -> str:
    stamp = taken.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    return f"{STATE_PREFIX}backupbot-state-{stamp}.db" + (".age" if encrypted else "")


def copy_state(state_path: str | os.PathLike, storage, *, recipients: list[str] | tuple[str, ...] = (),
               clock: Callable[[], datetime] | None = None) -> StateCopy:
    """Copy the state database to storage and point `_state/latest.json` at it.

    With `recipients` (storage.encrypt_to), the copy is age-encrypted on the way. Raises StorageError
    when storage refuses; the previous copy and pointer then stay as they were.
    """
    from commands.storage.encryption import Encryptor

    taken = (clock or (lambda: datetime.now(UTC)))()
    workdir = _private_tempdir()
    try:
        local = workdir / "state.db"
        snapshot_state(state_path, local)
        key = state_copy_key(taken, bool(recipients))
        encryptor = Encryptor(recipients) if recipients else None
        digest, size = hashlib.sha256(), 0
        writer = storage.open_writer(key, expected_size=local.stat().st_size)
        try:
            with open(local, "rb") as f:
                while True:
                    chunk = f.read(CHUNK)
                    data = (encryptor.compress(chunk) if chunk else encryptor.flush()) if encryptor else chunk
                    if data:
                        digest.update(data)
                        size += len(data)
                        writer.write(data)
                    if not chunk:
                        break
            writer.commit()
        except BaseException:
            writer.abort()
            if encryptor is not None:
                encryptor.close()
            raise
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    copy = StateCopy(key=key, size=size, sha256=digest.hexdigest(), taken_at=taken.astimezone(UTC).isoformat(),
                     recipients=tuple(recipients))
    storage.put_bytes(LATEST_KEY, json.dumps({"backupbot_state_copy": 1, **asdict(copy)}, indent=2).encode())
    return copy


def list_state_copies(storage) -> list[str]:
    """Keys of the stored state copies, oldest first (the stamp sorts)."""
    return [k for k in storage.list_keys(STATE_PREFIX) if k.startswith(STATE_PREFIX + "backupbot-state-")]


def prune_state_copies(storage, keep: int) -> list[str]:
    """Delete all but the newest `keep` copies (never the one latest.json names); returns what went."""
    if keep < 1:
        raise UsageError("keep at least one state copy")
    latest = latest_state_copy(storage)
    doomed = [k for k in list_state_copies(storage)[:-keep] if latest is None or k != latest.key]
    for key in doomed:
        storage.delete(key)
    return doomed


def latest_state_copy(storage) -> StateCopy | None:
    if not storage.exists(LATEST_KEY):
        return None
    try:
        pointer = json.loads(storage.get_bytes(LATEST_KEY))
        return StateCopy(key=pointer["key"], size=int(pointer["size"]), sha256=pointer["sha256"],
                         taken_at=pointer["taken_at"], recipients=tuple(pointer.get("recipients") or ()))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{LATEST_KEY} is not a state copy pointer; name the copy to restore instead") from None


def restore_state(storage, path: str | os.PathLike, key: str | None = None, *, identity_file: str | None = None,
                  overwrite: bool = False) -> StateCopy:
    """Bring a state copy back as the state database at `path` (for `backupbot state restore`).

    `key` is a copy's key, or None for the one `_state/latest.json` names. The download is checked
    (sha256 against the pointer when it names this copy, SQLite's integrity check) before it replaces
    anything. An existing `path` is replaced only with `overwrite`; the caller makes sure no bot runs
    on it (holds its instance lock), since a running bot would go on writing to the file it opened.
    """
    from commands.storage.encryption import Decryptor

    target = Path(path).expanduser()
    latest = latest_state_copy(storage)
    if key is None:
        if latest is None:
            raise NotFoundError(f"no state copy in {storage.url} ({LATEST_KEY} is missing)")
        key = latest.key
    if not key.startswith(STATE_PREFIX):
        key = STATE_PREFIX + key
    if not storage.exists(key):
        raise NotFoundError(f"no state copy {key} in {storage.url}")
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists: stop the bot and move it away, or restore with overwrite")
    expected = latest if latest is not None and latest.key == key else None
    encrypted = key.endswith(".age")
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = _private_tempdir(target.parent)
    try:
        local = workdir / "state.db"
        digest, size = hashlib.sha256(), 0
        decryptor = Decryptor(identity_file, recipients=expected.recipients if expected else ()) if encrypted else None
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in storage.read_chunks(key):
                digest.update(chunk)
                size += len(chunk)
                out.write(decryptor.decompress(chunk) if decryptor else chunk)
            if decryptor:
                out.write(decryptor.flush())
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and digest.hexdigest() != expected.sha256:
            raise IntegrityError(f"{key} is corrupted: its sha256 is {digest.hexdigest()[:12]}, "
                                 f"{LATEST_KEY} says {expected.sha256[:12]}")
        conn = sqlite3.connect(f"file:{local}?mode=ro", uri=True)
        try:
            _check_database(conn, key)
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):  # a stale WAL beside the new file would be replayed into it
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(local, target)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
    taken = expected.taken_at if expected else ""
    return StateCopy(key=key, size=size, sha256=digest.hexdigest(), taken_at=taken,
                     recipients=expected.recipients if expected else ())
