"""Where artifacts live: the storage interface and the registry that picks a backend by URL scheme.

A backend makes an artifact visible under its final key only on `commit()`; until then readers
and listings see nothing, so a half-written dump can never be mistaken for a backup.

Backends are modules named in BACKENDS and imported the first time a URL of their scheme is opened
(as patroni's dynamic_loader loads only the configured DCS): a `file://` install never loads boto3,
which costs start-up time and resident memory. Each module has `from_url(url, parsed) -> Storage`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import BinaryIO, Protocol
from urllib.parse import ParseResult, urlparse

from commands.errors import ConfigError

BACKENDS = {"": "commands.storage.local", "file": "commands.storage.local", "s3": "commands.storage.s3"}


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
    """The backend for `file:///path`, a plain path, or `s3://bucket/prefix`, loaded on first use."""
    parsed: ParseResult = urlparse(url)
    module = BACKENDS.get(parsed.scheme)
    if module is None:
        raise ConfigError(f"storage.url: unsupported scheme {parsed.scheme!r} (use file:// or s3://)")
    return importlib.import_module(module).from_url(url, parsed)
