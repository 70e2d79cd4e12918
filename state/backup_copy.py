"""Copies of the state database in storage, so an incident timeline outlives the bot's disk.

`copy_state` takes a consistent copy with SQLite's online backup API while the bot keeps writing
(WAL readers never block the writer), checks it, and uploads it as
`_state/backupbot-state-<stamp>.db` (`.db.age` when encrypted) with a signed descriptor beside it
(`….manifest.json`: its size and sha256) and a signed `_state/latest.json` pointer. `restore_state`
brings a copy back as the state file of a stopped bot, only once descriptor and pointer verify:
a state database holds the catalog, so a forged one would hand a restore any artifact.

This module touches SQLite and storage only: the signing keyring and the age encryptor and
decryptor are passed in (commands/signing.py, commands/storage/encryption.py), so state/ depends on
nothing above commands' kernel.
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
from typing import Protocol

from commands.errors import IntegrityError, NotFoundError, ProvenanceError, StorageError, UsageError

STATE_PREFIX = "_state/"
LATEST_KEY = STATE_PREFIX + "latest.json"
DESCRIPTOR_SUFFIX = ".manifest.json"
COPY_PURPOSE, POINTER_PURPOSE = "state-copy", "state-pointer"  # signed apart: a pointer never passes as a descriptor
CHUNK = 1 << 20


class Keyring(Protocol):  # commands.signing.Keyring
    def sign(self, purpose: str, body: dict) -> dict: ...
    def verify(self, purpose: str, document: object, what: str): ...


class Stage(Protocol):  # commands.storage.encryption.Encryptor / Decryptor
    def compress(self, data: bytes) -> bytes: ...
    def decompress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


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


def copy_state(state_path: str | os.PathLike, storage, *, keyring: Keyring, encryptor: Stage | None = None,
               recipients: list[str] | tuple[str, ...] = (), clock: Callable[[], datetime] | None = None) -> StateCopy:
    """Copy the state database to storage, sign its descriptor and point `_state/latest.json` at it.

    With `encryptor` (age to storage.encrypt_to, the `recipients`), the copy is encrypted on the way.
    Raises StorageError when storage refuses (the previous copy and pointer then stay as they were),
    and ProvenanceError when no signing key is configured: an unsigned copy could never be restored.
    """
    taken = (clock or (lambda: datetime.now(UTC)))()
    workdir = _private_tempdir()
    try:
        local = workdir / "state.db"
        snapshot_state(state_path, local)
        key = state_copy_key(taken, encryptor is not None)
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
            close = getattr(encryptor, "close", None)
            if close is not None:
                close()
            raise
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    copy = StateCopy(key=key, size=size, sha256=digest.hexdigest(), taken_at=taken.astimezone(UTC).isoformat(),
                     recipients=tuple(recipients))
    body = {"backupbot_state_copy": 1, **asdict(copy), "recipients": list(copy.recipients)}
    try:
        storage.put_bytes(key + DESCRIPTOR_SUFFIX, _signed(keyring, COPY_PURPOSE, body))
    except BaseException:
        storage.delete(key)
        raise
    storage.put_bytes(LATEST_KEY, _signed(keyring, POINTER_PURPOSE, body))
    return copy


def _signed(keyring: Keyring, purpose: str, body: dict) -> bytes:
    return json.dumps(keyring.sign(purpose, body), indent=2, sort_keys=True).encode()


def _verified_copy(storage, keyring: Keyring, key: str, purpose: str, what: str) -> StateCopy:
    """The state copy a signed descriptor or pointer describes; ProvenanceError/IntegrityError say why not."""
    try:
        document = json.loads(storage.get_bytes(key))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{what} is not valid JSON") from None
    body = keyring.verify(purpose, document, what).body
    try:
        return StateCopy(key=body["key"], size=int(body["size"]), sha256=body["sha256"], taken_at=body["taken_at"],
                         recipients=tuple(body.get("recipients") or ()))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{what} is not a state copy descriptor") from None


def list_state_copies(storage) -> list[str]:
    """Keys of the stored state copies, oldest first (the stamp sorts)."""
    return [k for k in storage.list_keys(STATE_PREFIX)
            if k.startswith(STATE_PREFIX + "backupbot-state-") and k.endswith((".db", ".db.age"))]


def prune_state_copies(storage, keep: int) -> list[str]:
    """Delete all but the newest `keep` copies (and their descriptors); returns what went. The pointer
    is not read (it is not trusted until verified): the newest copy, which it names, always stays."""
    if keep < 1:
        raise UsageError("keep at least one state copy")
    doomed = list_state_copies(storage)[:-keep]
    for key in doomed:
        storage.delete(key)
        storage.delete(key + DESCRIPTOR_SUFFIX)
    return doomed


def latest_state_copy(storage, keyring: Keyring) -> StateCopy | None:
    """The copy `_state/latest.json` names, once the pointer verifies; None when there is no pointer."""
    if not storage.exists(LATEST_KEY):
        return None
    return _verified_copy(storage, keyring, LATEST_KEY, POINTER_PURPOSE, LATEST_KEY)


def restore_state(storage, path: str | os.PathLike, key: str | None = None, *, keyring: Keyring,
                  decryptor: Callable[[tuple[str, ...]], Stage] | None = None, overwrite: bool = False) -> StateCopy:
    """Bring a state copy back as the state database at `path` (for `backupbot state restore`).

    `key` is a copy's key, or None for the one `_state/latest.json` names. Nothing is trusted until it
    verifies: the pointer (when used) and the copy's descriptor must be signed with one of `keyring`'s
    keys, and the download must have the descriptor's sha256 and size and pass SQLite's integrity
    check before it replaces anything. `decryptor(recipients)` reads an encrypted copy. An existing
    `path` is replaced only with `overwrite`; the caller makes sure no bot runs on it (holds its
    instance lock), since a running bot would go on writing to the file it opened.
    """
    target = Path(path).expanduser()
    if key is None:
        latest = latest_state_copy(storage, keyring)
        if latest is None:
            raise NotFoundError(f"no state copy in {storage.url} ({LATEST_KEY} is missing)")
        key = latest.key
    if not key.startswith(STATE_PREFIX):
        key = STATE_PREFIX + key
    if not storage.exists(key):
        raise NotFoundError(f"no state copy {key} in {storage.url}")
    if not storage.exists(key + DESCRIPTOR_SUFFIX):
        raise ProvenanceError(f"{key} has no signed descriptor ({key}{DESCRIPTOR_SUFFIX}): nothing proves this bot "
                              "stored it")
    expected = _verified_copy(storage, keyring, key + DESCRIPTOR_SUFFIX, COPY_PURPOSE, key + DESCRIPTOR_SUFFIX)
    if expected.key != key:
        raise ProvenanceError(f"{key}{DESCRIPTOR_SUFFIX} describes {expected.key}, not {key}")
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists: stop the bot and move it away, or restore with overwrite")
    encrypted = key.endswith(".age")
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = _private_tempdir(target.parent)
    try:
        local = workdir / "state.db"
        digest, size = hashlib.sha256(), 0
        if encrypted and decryptor is None:
            raise UsageError(f"{key} is encrypted: set [storage] identity_file to the age key that decrypts it")
        stage = decryptor(expected.recipients) if encrypted else None
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in storage.read_chunks(key):
                digest.update(chunk)
                size += len(chunk)
                out.write(stage.decompress(chunk) if stage else chunk)
            if stage:
                out.write(stage.flush())
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected.sha256 or size != expected.size:
            raise IntegrityError(f"{key} is corrupted or was replaced: its sha256 is {digest.hexdigest()[:12]} "
                                 f"({size:,} bytes), its signed descriptor says {expected.sha256[:12]} "
                                 f"({expected.size:,} bytes)")
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
    return expected
