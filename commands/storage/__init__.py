"""Where artifacts live: the storage interface and the factory that picks a backend from a URL.

A backend makes an artifact visible under its final key only on `commit()`; until then readers
and listings see nothing, so a half-written dump can never be mistaken for a backup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from commands.errors import ConfigError
from commands.storage.local import LocalStorage
from commands.storage.s3 import S3Storage


class ArtifactWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Publish under the final key. Raises StorageError; then nothing is visible."""

    def abort(self) -> None:
        """Discard everything written. Safe to call twice or after a failed commit."""


class Storage(Protocol):
    url: str
    identity_file: str | None  # [storage] identity_file: the age key that decrypts what it holds (open_storage)

    def open_writer(self, key: str, expected_size: int = 0) -> ArtifactWriter: ...

    def open_reader(self, key: str) -> BinaryIO: ...

    def read_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Bytes stored under `key`, without reading them. Raises StorageError (": not found")."""

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def location(self, key: str) -> str:
        """A human-readable address of the key (no credentials)."""


def open_storage(url: str, identity_file: str | None = None) -> Storage:
    """The backend for `url`; `identity_file` ([storage] identity_file) travels with it, so whatever reads
    an encrypted artifact back (commands.pg.restore.artifact.fetch_artifact) can decrypt it."""
    storage = _backend(url)
    storage.identity_file = identity_file
    return storage


def _backend(url: str) -> Storage:
    """Pick the backend for `file:///path`, a plain path, or `s3://bucket/prefix`."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStorage(parsed.path if parsed.scheme == "file" else url)
    if parsed.scheme == "s3":
        if len(parsed.netloc) < 3:
            raise ConfigError(f"storage.url: bucket name {parsed.netloc!r} is too short")
        return S3Storage(bucket=parsed.netloc, prefix=parsed.path.strip("/"))
    raise ConfigError(f"storage.url: unsupported scheme {parsed.scheme!r} (use file:// or s3://)")
