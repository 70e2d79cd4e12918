"""Backups hold the whole database: every file the bot writes is 0600 and every folder it creates 0700.

The test runs with umask 000, so nothing here comes from a careful umask: the modes are the
bot's own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from state.backups import get_backup
from tests.builders import make_console, make_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_backup_artifacts_manifests_and_state_are_private(tmp_path, sample_dsn, open_umask):
    state_dir, backups = tmp_path / "state" / "deep", tmp_path / "backups" / "nested"
    settings = make_settings(tmp_path, sample_dsn, access={"operators": ["U0OPS"]},
                             state={"path": str(state_dir / "state.db")}, storage={"url": f"file://{backups}"})
    console = make_console(settings)
    assert "Backup #1 of main succeeded" in console.run("/backup main")
    with console.services.store.db() as reader:  # an open reader keeps the WAL files, as a busy bot does
        reader.execute("SELECT count(*) FROM jobs").fetchall()
        assert "Backup #2 of main succeeded" in console.run("/backup main --format gzip")
        state_files = [state_dir / name for name in ("state.db", "state.db-wal", "state.db-shm", "state.db.lock")]
        state_modes = {str(f): oct(mode(f)) for f in state_files}
    assert state_modes == {str(f): oct(0o600) for f in state_files}

    record = get_backup(console.services.store, 1)
    artifact = backups / record.key
    files = [artifact, artifact.with_name(artifact.name + ".manifest.json"), backups / get_backup(console.services.store, 2).key]
    assert {str(f): oct(mode(f)) for f in files} == {str(f): oct(0o600) for f in files}

    folders = [tmp_path / "state", state_dir, tmp_path / "backups", backups, artifact.parent]
    assert {str(d): oct(mode(d)) for d in folders} == {str(d): oct(0o700) for d in folders}
    everything = [p for p in backups.rglob("*")]
    assert everything and all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in everything)


def test_a_partial_artifact_is_private_while_it_is_written(tmp_path, open_umask):
    from commands.storage import open_storage

    storage = open_storage(f"file://{tmp_path / 'backups'}")
    writer = storage.open_writer("main/2026/partial.dump.zst")
    writer.write(b"first rows of a dump")
    [partial] = [p for p in (tmp_path / "backups").rglob("*") if p.is_file()]
    assert partial.name.startswith(".") and mode(partial) == 0o600
    assert mode(tmp_path / "backups") == 0o700 and mode(tmp_path / "backups" / "main" / "2026") == 0o700
    writer.abort()
    assert not partial.exists()


def test_an_existing_state_database_is_tightened(tmp_path, sample_dsn, open_umask):
    settings = make_settings(tmp_path, sample_dsn, access={"operators": ["U0OPS"]})
    make_console(settings).services.close()
    db = Path(settings.state_path)
    db.chmod(0o644)  # as an older backupbot (or a copy) left it; SQLite gives -wal and -shm the same mode
    again = make_console(settings)
    with again.services.store.db() as reader:
        reader.execute("SELECT count(*) FROM jobs").fetchall()
        assert "Backup #1 of main succeeded" in again.run("/backup main")
        modes = {name: oct(mode(Path(f"{db}{name}"))) for name in ("", "-wal", "-shm")}
    assert modes == {"": oct(0o600), "-wal": oct(0o600), "-shm": oct(0o600)}
