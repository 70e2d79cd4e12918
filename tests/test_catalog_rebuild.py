"""The bot's host is gone: its catalog comes back from the manifests in storage (a local folder or S3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from commands.backup.catalog_rebuild import rebuild_catalog
from commands.errors import UsageError
from commands.storage import open_storage
from state.backups import list_backups
from state.store import Store
from tests.builders import FakeClock, make_console, make_settings

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def delete_state(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    assert not Path(path).exists()


def storage_url_for(kind: str, tmp_path: Path, request) -> str:
    if kind == "s3":
        return request.getfixturevalue("s3_storage_url")
    return f"file://{tmp_path / 'backups'}"


def without_provenance(text: str) -> str:
    return re.sub(r"Provenance: .*\n", "", text)


def without_message_ids(text: str) -> str:
    return re.sub(r"\[M\d+( updated)?\]", "[M]", text)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_catalog_rebuilt_from_storage_lists_and_plans_the_same_backups(tmp_path, sample_dsn, request, kind):
    url = storage_url_for(kind, tmp_path, request)
    clock = FakeClock()
    old_host = make_settings(tmp_path / "old-host", sample_dsn, storage_url=url, access=ACCESS)
    console = make_console(old_host, clock=clock)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    assert "Backup #2 of main succeeded" in console.run("/backup --format plain --note before the migration")
    assert "Backup #3 of main succeeded" in console.run("/backup --format gzip")
    listed = console.run("/backup list")
    planned = console.run("/restore latest --dry-run")
    assert "#3" in listed and "Backup #3" in planned

    delete_state(old_host.state_path)  # the bot's disk is lost with its host

    new_host = make_settings(tmp_path / "new-host", sample_dsn, storage_url=url, access=ACCESS)
    report = rebuild_catalog(open_storage(url), Store(new_host.state_path), keyring=new_host.signing)
    assert report.ok, report.text()
    assert "3 backup(s) catalogued (#1, #2, #3)" in report.text()

    rebuilt = make_console(new_host, clock=clock)
    assert rebuilt.run("/backup list") == listed
    replanned = rebuilt.run("/restore latest --dry-run")
    # the same plan, except that it says where the catalog row came from
    assert "catalogued by a catalog rebuild from" in replanned and "catalog rebuild" not in planned
    assert without_message_ids(without_provenance(replanned)) == without_message_ids(without_provenance(planned))
    # the bot carries on where the old one stopped: the next backup does not reuse a rebuilt id
    assert "Backup #4 of main succeeded" in rebuilt.run("/backup")
    assert "\n#3 · main" in rebuilt.run("/backup list --limit 2")


def test_missing_resized_and_corrupted_artifacts_are_reported_not_catalogued(tmp_path, sample_dsn):
    settings = make_settings(tmp_path / "old-host", sample_dsn, access=ACCESS)
    console = make_console(settings)
    for _ in range(5):
        assert "succeeded" in console.run("/backup --format plain")
    storage = open_storage(settings.storage_url)
    records = {r.id: r for r in list_backups(Store(settings.state_path))}
    root = Path(settings.storage_url.removeprefix("file://"))
    storage.delete(records[1].key)  # artifact gone
    with open(root / records[2].key, "ab") as f:  # artifact grew
        f.write(b"-- appended\n")
    corrupted = bytearray((root / records[3].key).read_bytes())  # same size, one byte flipped
    corrupted[100] ^= 1
    (root / records[3].key).write_bytes(bytes(corrupted))
    (root / records[4].manifest_key).write_text("{not json")  # manifest unreadable
    storage.delete(records[5].manifest_key)  # an artifact whose manifest is gone
    delete_state(settings.state_path)

    quick = rebuild_catalog(storage, Store(tmp_path / "size-only.db"), keyring=settings.signing)
    assert [r.id for r in quick.catalogued] == [3]  # same size: only a sha256 check catches it
    report = rebuild_catalog(storage, Store(tmp_path / "new-host" / "state.db"), keyring=settings.signing,
                             verify_sha256=True)
    assert report.catalogued == []
    text = report.text()
    assert f"#1 ({records[1].manifest_key}): the artifact {records[1].key} is missing" in text
    assert f"the artifact {records[2].key} is {records[2].size + 12:,} bytes, the manifest says {records[2].size:,}" in text
    assert f"#3 ({records[3].manifest_key}): the artifact's sha256 is" in text
    assert f"({records[4].manifest_key}): the manifest is not valid JSON" in text
    assert f"({records[5].key}): an artifact without a manifest" in text
    assert "5 problem(s), not catalogued" in text

    rebuilt = make_console(make_settings(tmp_path / "new-host", sample_dsn, access=ACCESS))
    assert "No backups of all databases yet" in rebuilt.run("/backup list")


def test_rebuild_refuses_a_catalog_that_is_not_empty_unless_merging(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings)
    console.run("/backup")
    storage, store = open_storage(settings.storage_url), Store(settings.state_path)
    with pytest.raises(UsageError, match="already holds 1 backup"):
        rebuild_catalog(storage, store, keyring=settings.signing)
    report = rebuild_catalog(storage, store, keyring=settings.signing, merge=True)
    assert report.catalogued == [] and report.already_catalogued == [1]


def test_manifest_fields_come_back_exactly(tmp_path, sample_dsn):
    settings = make_settings(tmp_path / "old-host", sample_dsn, access=ACCESS)
    console = make_console(settings)
    console.run("/backup --tables users,products --note tables only")
    console.run("/backup --schema-only")
    before = list_backups(Store(settings.state_path))
    storage = open_storage(settings.storage_url)
    manifest = json.loads(storage.get_bytes(before[0].manifest_key))
    assert manifest["backup_id"] == before[0].id
    delete_state(settings.state_path)
    store = Store(tmp_path / "new.db")
    rebuild_catalog(storage, store, keyring=settings.signing, verify_sha256=True)
    after = list_backups(store)

    def comparable(record):
        # what a manifest records; the job id is the old host's job history, and a rebuilt row says it was rebuilt
        return {k: v for k, v in record.__dict__.items() if k not in ("job_id", "rebuilt_from")}

    assert [comparable(r) for r in after] == [comparable(r) for r in before]
