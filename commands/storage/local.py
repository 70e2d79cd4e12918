"""Local folder storage: write a hidden temporary file, fsync, then rename into place.

Files are created 0600 and the folders the bot creates 0700, whatever the umask.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from commands.errors import StorageError
from state.lock import make_private_dirs

PARTIAL_MARK = ".partial-"
# flush to disk as we go, so commit()'s fsync has little left to do and writeback overlaps the dump
SYNC_EVERY = 64 << 20


class LocalArtifactWriter:
    def __init__(self, final: Path):
        self.final = final
        self.temp = final.with_name(f".{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")
        try:
            make_private_dirs(final.parent)
            # 0600 from the first byte: a backup holds the whole database
            self._file = os.fdopen(os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb")
        except OSError as exc:
            raise StorageError(f"cannot write {final.parent}: {exc.strerror or exc}") from exc
        self._done = False
        self._unsynced = 0

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._unsynced += len(data)
            if self._unsynced >= SYNC_EVERY:
                self._file.flush()
                os.fdatasync(self._file.fileno())
                self._unsynced = 0
        except OSError as exc:
            self.abort()
            raise StorageError(f"writing {self.final.name} failed: {exc.strerror or exc}") from exc

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.final)
            _fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"storing {self.final.name} failed: {exc.strerror or exc}") from exc
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        self.temp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the storage folder")
        return path

    def open_writer(self, key: str, expected_size: int = 0) -> LocalArtifactWriter:
        return LocalArtifactWriter(self._path(key))

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def read_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open_reader(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def put_bytes(self, key: str, data: bytes) -> None:
        writer = self.open_writer(key)
        writer.write(data)
        writer.commit()

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise StorageError(f"reading {key}: not found") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def discard_partials(self) -> list[str]:
        """Remove temporary files a killed process left behind; they were never backups."""
        removed = []
        if self.root.exists():
            for path in self.root.rglob(f".*{PARTIAL_MARK}*"):
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(self.root).as_posix())
        return removed

    def location(self, key: str) -> str:
        return str(self._path(key))


def from_url(url: str, parsed) -> LocalStorage:
    """`file:///path` or a plain path (commands.storage.BACKENDS)."""
    return LocalStorage(parsed.path if parsed.scheme == "file" else url)
