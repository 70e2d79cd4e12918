"""The backup's artifact as a local file: read from storage, decrypted, decompressed, its sha256 checked.

A corrupted or tampered artifact is refused here, before the target is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from commands.errors import DumpError, EncryptionError, IntegrityError
from commands.pg.dump import FORMATS, make_decompressor
from commands.pg.restore.offsets import BlockEnds, fill_data_offsets
from commands.pg.scratch import job_dir, private_file
from commands.pg.tools import last_lines, pg_bin
from commands.storage import Storage
from commands.storage.encryption import DecryptChain, Decryptor
from state.backups import BackupRecord


@dataclass(frozen=True)
class FetchedArtifact:
    path: Path  # decompressed: a custom archive or SQL text
    raw_size: int
    toc: str | None  # `pg_restore -l` output for custom archives


def artifact_sha256(storage: Storage, record: BackupRecord) -> str:
    digest = hashlib.sha256()
    for chunk in storage.read_chunks(record.key):
        digest.update(chunk)
    return digest.hexdigest()


def verify_artifact(storage: Storage, record: BackupRecord) -> None:
    """Re-read the stored artifact and compare with the catalog's sha256."""
    actual = artifact_sha256(storage, record)
    if actual != record.sha256:
        raise IntegrityError(f"backup #{record.id} is corrupted: its artifact's sha256 is {actual[:12]}, "
                             f"the catalog says {record.sha256[:12]}; nothing was restored")


def artifact_decompressor(record: BackupRecord, identity_file: str | None):
    """Stored bytes -> the dump: `decompress(bytes)`, then `flush()`. An encrypted backup is decrypted first
    with the age key in `identity_file`; raises EncryptionError when that key cannot decrypt it."""
    decompressor = make_decompressor(record.compression)
    if not record.encryption:
        return decompressor
    if record.encryption != "age":
        raise EncryptionError(f"backup #{record.id} is encrypted with {record.encryption!r}, which this bot cannot read")
    return DecryptChain(Decryptor(identity_file, recipients=record.recipients), decompressor)


def fetch_artifact(storage: Storage, record: BackupRecord, workdir: Path) -> FetchedArtifact:
    """Copy the artifact to `workdir`, decrypted with the storage's identity_file when encrypted and
    decompressed, checking sha256 (of the stored bytes) on the way; read the TOC of archives."""
    fmt = FORMATS[record.format]
    target = workdir / ("archive.dump" if fmt.pg_format == "custom" else "dump.sql")
    digest = hashlib.sha256()
    decompressor = artifact_decompressor(record, getattr(storage, "identity_file", None))
    raw_size = 0
    broken: Exception | None = None
    ends = BlockEnds() if fmt.pg_format == "custom" else None
    with private_file(target) as file, write_behind(file, ends.feed if ends else None) as out:
        for chunk in storage.read_chunks(record.key):
            digest.update(chunk)
            if broken is None:
                try:
                    data = decompressor.decompress(chunk)
                except Exception as exc:  # zlib.error, zstd.ZstdError: keep hashing to say why
                    broken = exc
                    continue
                raw_size += len(data)
                out.write(data)
        if isinstance(decompressor, DecryptChain):
            try:
                data = decompressor.flush() if broken is None else b""
                raw_size += len(data)
                out.write(data)
            except Exception as exc:
                broken = exc
            finally:
                decompressor.close()
    if digest.hexdigest() != record.sha256:
        raise IntegrityError(f"backup #{record.id} is corrupted: its artifact's sha256 is {digest.hexdigest()[:12]}, "
                             f"the catalog says {record.sha256[:12]}; nothing was restored")
    if isinstance(broken, EncryptionError | IntegrityError):  # the age key does not fit, or the ciphertext is bad
        raise type(broken)(f"backup #{record.id}: {broken}; nothing was restored")
    if broken is not None:
        raise IntegrityError(f"backup #{record.id} cannot be decompressed ({type(broken).__name__}); nothing was restored")
    toc = None
    if fmt.pg_format == "custom":
        fill_data_offsets(target, ends)  # as pg_dump would into a file: pg_restore --jobs seeks, not walks
        result = subprocess.run([pg_bin("pg_restore"), "--list", str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            raise DumpError(f"pg_restore cannot read backup #{record.id}: {last_lines(result.stderr, 3)}")
        toc = result.stdout
    return FetchedArtifact(path=target, raw_size=raw_size, toc=toc)


@contextlib.contextmanager
def write_behind(file, watch: Callable[[bytes], None] | None = None, depth: int = 8):
    """An object whose `write` hands the bytes to a helper thread that writes them to `file` (and
    shows them to `watch` after), at most `depth` buffers behind: the page cache's copy (and a
    throttled disk) overlaps with decompressing the next chunk. A failed write (a full disk) is
    raised by the next `write` or on leaving."""
    handoff: queue.Queue = queue.Queue(depth)
    failed: list[BaseException] = []
    end = object()

    def drain() -> None:
        while (data := handoff.get()) is not end:
            if not failed:
                try:
                    file.write(data)
                    if watch is not None:
                        watch(data)
                except BaseException as exc:  # raised in the caller; keep draining so it never blocks
                    failed.append(exc)

    class Writer:
        def write(self, data: bytes) -> None:
            if failed:
                raise failed[0]
            handoff.put(data)

    thread = threading.Thread(target=drain, name="artifact-write", daemon=True)
    thread.start()
    try:
        yield Writer()
    finally:
        handoff.put(end)
        thread.join()
    if failed:
        raise failed[0]


def scratch_dir(settings):
    """A private job folder in the instance's scratch root (commands.pg.scratch), removed after."""
    return job_dir(settings, "restore")
