"""run_pg_dump: stream pg_dump's output through compression and sha256 straight into storage.

No temporary file: memory stays bounded by a few chunks (plus one S3 part), whatever the size
of the database. The artifact is committed only after pg_dump exited 0 and its output looks
complete; any failure aborts the writer so nothing half-written becomes visible.
"""

from __future__ import annotations

import hashlib
import queue
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from commands.errors import DumpError
from commands.pg.archive_stream import ArchiveFormatError, CustomArchiveCounter
from commands.pg.copy_stream import PlainCopyCounter
from commands.pg.names import QualifiedName
from commands.pg.snapshot import DumpedTable
from commands.pg.tools import StderrTail, die_with_parent, last_lines, pg_bin
from commands.redact import redact
from commands.storage import ArtifactWriter
from commands.storage.encryption import Chain, make_encryptor

CHUNK = 1 << 20
PLAIN_TRAILER = b"-- PostgreSQL database dump complete\n"


@dataclass(frozen=True)
class DumpFormat:
    name: str
    pg_format: str  # pg_dump --format
    compression: str  # none | gzip | zstd, applied by the bot on the stream
    extension: str
    restore_hint: str


FORMATS = {
    "custom": DumpFormat("custom", "custom", "zstd", ".dump.zst",
                         "zstd -dc FILE | pg_restore -d DB  (or the bot's /restore)"),
    "plain": DumpFormat("plain", "plain", "none", ".sql", "psql -v ON_ERROR_STOP=1 -d DB -f FILE"),
    "gzip": DumpFormat("gzip", "plain", "gzip", ".sql.gz", "gunzip -c FILE | psql -v ON_ERROR_STOP=1 -d DB"),
}


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def make_compressor(compression: str):
    if compression == "gzip":
        # The gzip container, so `gunzip -c` reads it as the runbook expects.
        return zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if compression == "zstd":
        # level 3 on two worker threads with 1 MiB jobs: faster than gzip -6 at a similar ratio, and
        # the jobs keep memory flat whatever the database size (bench/results.md)
        params = zstandard.ZstdCompressionParameters.from_level(3, threads=2, job_size=1 << 20)
        return zstandard.ZstdCompressor(compression_params=params).compressobj()
    return _Identity()


def make_decompressor(compression: str):
    """A streaming decompressor with `.decompress(bytes)`; the identity for none."""
    if compression == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if compression == "zstd":
        # 1 MiB output steps instead of the 128 KiB default: half the time decompressing a restore's
        # artifact (bench/results.md, drill phases)
        return zstandard.ZstdDecompressor().decompressobj(write_size=1 << 20)
    return _IdentityDecompressor()


class _IdentityDecompressor:
    def decompress(self, data: bytes) -> bytes:
        return data


def dump_argv(fmt: DumpFormat, snapshot: str | None, tables: list[QualifiedName], schema_only: bool,
              binary: str | None = None) -> list[str]:
    """pg_dump's argv: options only, from validated values. Credentials go by environment.

    Tables come as exact catalog names, each an exact `--table` pattern (quoted, so no wildcard)."""
    argv = [binary or pg_bin("pg_dump"), f"--format={fmt.pg_format}", "--no-password", "--verbose"]
    if fmt.pg_format == "custom":
        argv.append("--compress=0")  # the bot compresses the stream itself (zstd)
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    for table in tables:
        argv.append(f"--table={table.dump_pattern()}")
    if schema_only:
        argv.append("--schema-only")
    return argv


@dataclass(frozen=True)
class DumpOutcome:
    raw_size: int
    size: int
    sha256: str
    seconds: float
    row_counts: dict[str, int] | None = None  # by table key, counted in the stream (RowCounter)


class RowCounter:
    """A stream stage fed pg_dump's raw bytes (before compression): each table's COPY rows, by table key.

    The counts are exactly what was dumped, and the server reads each row once: for pg_dump alone."""

    def __init__(self, fmt: DumpFormat, tables: list[DumpedTable], quoted_keywords: frozenset[str],
                 encoding: str = "utf-8"):
        self._keys = {t.oid: t.name.key for t in tables}
        if fmt.pg_format == "custom":
            self._counter = CustomArchiveCounter()
        else:
            self._counter = PlainCopyCounter({t.oid: (t.name.schema, t.name.name, t.copy_columns) for t in tables},
                                             quoted_keywords, encoding)
        self.feed = self._counter.feed

    def finish(self) -> dict[str, int]:
        """Rows of every table asked for; raises ArchiveFormatError when one of them has no data in the dump."""
        rows = self._counter.finish()
        missing = [key for oid, key in self._keys.items() if oid not in rows]
        if missing:
            raise ArchiveFormatError(f"pg_dump's output has no data for {len(missing)} table(s) it was asked for "
                                     f"(first: {missing[0]}); their rows cannot be counted")
        return {key: rows[oid] for oid, key in self._keys.items()}


class _WriterThread:
    """Hand chunks to storage on another thread so a slow upload never stalls pg_dump's pipe."""

    def __init__(self, writer: ArtifactWriter, depth: int = 8):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="artifact-writer")
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(chunk)
                except BaseException as exc:  # reported to the dumping thread
                    self.error = exc

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def run_pg_dump(
    argv: list[str], env: dict[str, str], fmt: DumpFormat, writer: ArtifactWriter,
    on_progress: Callable[[int, float], None] | None = None, progress_every: float = 3.0,
    secrets: list[str] = (), on_start: Callable[[subprocess.Popen], None] | None = None,
    encrypt_to: list[str] | tuple[str, ...] = (), row_counter: RowCounter | None = None,
) -> DumpOutcome:
    """Run pg_dump into `writer`. Commits on success; aborts and raises DumpError/StorageError otherwise.

    With `encrypt_to` (age public keys), the compressed stream is age-encrypted on the way, and the
    size and sha256 are of the stored, encrypted bytes. With `row_counter`, the raw bytes are counted
    on the way too, and a dump whose rows cannot be counted is not stored."""
    count = row_counter.feed if row_counter else None
    started = time.monotonic()
    encryptor = make_encryptor(encrypt_to)
    compressor = make_compressor(fmt.compression)
    if encryptor is not None:
        compressor = Chain(compressor, encryptor)
    digest = hashlib.sha256()
    raw_size = size = 0
    head = b""
    tail = b""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, close_fds=True, preexec_fn=die_with_parent)
    _widen_pipe(proc.stdout)
    if on_start:
        on_start(proc)
    stderr = StderrTail(proc.stderr)
    out = _WriterThread(writer)
    last_report = started
    try:
        try:
            while chunk := proc.stdout.read(CHUNK):
                raw_size += len(chunk)
                if len(head) < 64:
                    head += chunk[:64]
                tail = (tail + chunk[-256:])[-256:]
                if count:
                    count(chunk)
                packed = compressor.compress(chunk)
                if packed:
                    digest.update(packed)
                    size += len(packed)
                    out.put(packed)
                now = time.monotonic()
                if on_progress and now - last_report >= progress_every:
                    last_report = now
                    on_progress(raw_size, now - started)
            packed = compressor.flush()
            if packed:
                digest.update(packed)
                size += len(packed)
                out.put(packed)
        finally:
            proc.stdout.close()
            returncode = proc.wait()
            out.close()
        problem = _dump_problem(returncode, raw_size, head, tail, fmt)
        if problem:
            detail = last_lines(redact(stderr.text(), secrets))
            raise DumpError(f"{problem}" + (f"\n{detail}" if detail else ""))
        counts = row_counter.finish() if row_counter else None
        writer.commit()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        writer.abort()
        if encryptor is not None:
            encryptor.close()
        raise
    return DumpOutcome(raw_size=raw_size, size=size, sha256=digest.hexdigest(), seconds=time.monotonic() - started,
                       row_counts=counts)


def _widen_pipe(pipe) -> None:
    """A 1 MiB pipe instead of 64 KiB: pg_dump keeps writing while this side hashes and compresses."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
    except (OSError, AttributeError):
        pass


def _dump_problem(returncode: int, raw_size: int, head: bytes, tail: bytes, fmt: DumpFormat) -> str | None:
    if returncode < 0:
        return f"pg_dump was killed by signal {-returncode}"
    if returncode != 0:
        return f"pg_dump exited with status {returncode}"
    if raw_size == 0:
        return "pg_dump produced no output"
    if fmt.pg_format == "custom" and not head.startswith(b"PGDMP"):
        return "pg_dump's output is not a custom-format archive"
    if fmt.pg_format == "plain" and PLAIN_TRAILER not in tail:
        return "pg_dump's output is truncated (no 'dump complete' trailer)"
    return None

