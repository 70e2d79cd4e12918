"""Fetching an artifact (commands.pg.restore.artifact): the archive that lands is the dump with its
data offsets filled in (commands.pg.restore.offsets) or, when they cannot be found exactly, the dump
as it was; the file is written by a helper thread, whose failure is raised, not lost."""

from __future__ import annotations

import subprocess
import threading

import psycopg
import pytest

from commands.pg.restore.artifact import fetch_artifact, write_behind
from state.backups import get_backup
from tests.builders import make_console, make_settings


def fetched_and_streamed(tmp_path, dsn):
    """The bot's fetched archive, and the stored artifact decompressed by the zstd CLI."""
    console = make_console(make_settings(tmp_path, dsn))
    console.run("/backup")
    record = get_backup(console.services.store, 1)
    workdir = tmp_path / "work"
    workdir.mkdir()
    fetched = fetch_artifact(console.services.storage, record, workdir)
    stored = tmp_path / "backups" / record.key
    streamed = subprocess.run(["zstd", "-dcq", str(stored)], capture_output=True, check=True).stdout
    return fetched, streamed


def table_data_ids(toc: str) -> set[int]:
    return {int(line.split(";")[0]) for line in toc.splitlines() if " TABLE DATA " in line and not line.startswith(";")}


def test_the_fetched_archive_is_the_dump_with_each_tables_data_offset_filled_in(tmp_path, sample_dsn):
    """pg_dump wrote the archive to a pipe, so no entry says where its data is; the fetched copy says
    it for every table, as a `pg_dump -Fc -f file` would, and differs in nothing else."""
    fetched, streamed = fetched_and_streamed(tmp_path, sample_dsn)
    data = fetched.path.read_bytes()
    assert len(data) == len(streamed) and fetched.raw_size == len(streamed)
    changed = [i for i, (a, b) in enumerate(zip(data, streamed, strict=True)) if a != b]
    fields = sorted({i for i in changed if streamed[i] == 1 and data[i] == 2})  # "not set" became "set"
    ids = table_data_ids(fetched.toc)
    assert len(fields) == len(ids) > 5
    pointed = set()
    for field in fields:
        assert streamed[field + 1:field + 9] == bytes(8)  # the offset pg_dump left empty
        block = int.from_bytes(data[field + 1:field + 9], "little")
        assert data[block] == 1 and data[block + 1] == 0  # a data block: its header, then its id
        pointed.add(int.from_bytes(data[block + 2:block + 6], "little"))
    assert pointed == ids
    assert all(any(f < i <= f + 8 for f in fields) for i in changed if i not in fields)


def test_an_archive_with_large_objects_is_left_as_pg_dump_wrote_it(tmp_path, sample_dsn):
    """Large objects are binary: their blocks cannot be walked by a byte search, so nothing is filled
    in and pg_restore walks the archive itself, as before."""
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("SELECT lo_from_bytea(0, '\\x0000000000010000'::bytea)")
    fetched, streamed = fetched_and_streamed(tmp_path, sample_dsn)
    assert fetched.path.read_bytes() == streamed


def test_a_full_disk_is_raised_by_the_writer():
    with open("/dev/full", "wb", buffering=0) as full:
        with pytest.raises(OSError, match="No space left"):
            with write_behind(full) as out:
                for _ in range(100):
                    out.write(bytes(1 << 16))
    assert not [t for t in threading.enumerate() if t.name == "artifact-write"]
