"""Rebuild the backup catalog from the manifests in storage, for when the bot's host is gone.

Every artifact has a self-describing manifest beside it (commands/backup.py `manifest_json`), so
storage alone holds the catalog. `rebuild_catalog` reads each `*.manifest.json`, checks that the
artifact it names is there with the recorded size (and, with `verify_sha256`, the recorded
checksum), and catalogues it under its original backup id in an empty state database. Whatever
does not check out is reported, never catalogued: a catalogued backup is one a restore can use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from commands.errors import StorageError, UsageError
from commands.storage import Storage
from state.backups import BackupRecord, add_rebuilt_backup, list_backups
from state.store import Store

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1
STATE_PREFIX = "_state/"  # state database copies (state/backup_copy.py), never backups
_ARTIFACT_NAME = re.compile(r"(^|/)backup-\d+-[^/]*$")
_GLOBALS_NAME = re.compile(r"\.globals\.sql(\.age)?$")  # pg_dumpall output beside a full backup: its manifest names it
REQUIRED = ("backup_id", "database", "kind", "format", "compression", "created_at", "artifact", "sha256", "size",
            "raw_size")
# Catalog columns a manifest does not decide: where it is stored, and what happened to it since.
_NOT_FROM_MANIFEST = {"id", "key", "manifest_key", "storage_url", "verification", "verified_at", "restore_seconds",
                      "pruned_at", "prune_reason", "job_id"}


@dataclass(frozen=True)
class Problem:
    key: str  # the manifest (or artifact) in storage
    backup_id: int | None
    reason: str

    def text(self) -> str:
        which = f"#{self.backup_id} " if self.backup_id is not None else ""
        return f"{which}({self.key}): {self.reason}"


@dataclass
class RebuildReport:
    storage_url: str
    catalogued: list[BackupRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    already_catalogued: list[int] = field(default_factory=list)
    verified_sha256: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        ids = ", ".join(f"#{r.id}" for r in self.catalogued)
        checked = "size and sha256" if self.verified_sha256 else "size"
        lines = [f"Catalog rebuilt from {self.storage_url}: {len(self.catalogued)} backup(s) catalogued"
                 + (f" ({ids}), each artifact present with the manifest's {checked}" if ids else "")]
        if self.already_catalogued:
            lines.append(f"Already in the catalog, left as they were: {', '.join(f'#{i}' for i in self.already_catalogued)}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s), not catalogued:")
            lines.extend(f"• {p.text()}" for p in self.problems)
        if self.catalogued:
            lines.append("Verification results are not in the manifests: every rebuilt backup is `unverified` "
                         "until its next drill (`/backup verify ID`).")
        return "\n".join(lines)


def iter_manifests(storage: Storage) -> Iterator[str]:
    """Keys of every backup manifest in storage, in key order."""
    for key in storage.list_keys():
        if key.endswith(MANIFEST_SUFFIX) and not key.startswith(STATE_PREFIX):
            yield key


def read_manifest(storage: Storage, key: str) -> dict:
    """The manifest at `key`, checked for the fields a catalog row needs. Raises ValueError saying why."""
    try:
        manifest = json.loads(storage.get_bytes(key))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or "backupbot_manifest" not in manifest:
        raise ValueError("not a backupbot manifest")
    if manifest["backupbot_manifest"] != MANIFEST_VERSION:
        raise ValueError(f"manifest version {manifest['backupbot_manifest']!r} is not one this bot reads "
                         f"({MANIFEST_VERSION})")
    missing = [name for name in REQUIRED if manifest.get(name) in (None, "")]
    if missing:
        raise ValueError(f"the manifest lacks {', '.join(missing)}")
    if not isinstance(manifest["backup_id"], int) or manifest["backup_id"] < 1:
        raise ValueError(f"backup_id {manifest['backup_id']!r} is not a positive whole number")
    if not isinstance(manifest["size"], int) or manifest["size"] < 0:
        raise ValueError(f"size {manifest['size']!r} is not a byte count")
    return manifest


def record_from_manifest(manifest: dict, manifest_key: str, storage_url: str) -> BackupRecord:
    """The catalog row a manifest describes. Fields this bot's BackupRecord has are taken by name, so
    what later versions add to both (encryption, roles, objects) comes along without a change here."""
    names = {f.name for f in dataclasses.fields(BackupRecord)} - _NOT_FROM_MANIFEST
    values = {name: manifest[name] for name in names if name in manifest}
    values["tables"] = tuple(values.get("tables") or ())
    values["not_valid_constraints"] = tuple(values.get("not_valid_constraints") or ())
    values["row_counts"] = dict(values.get("row_counts") or {})
    values["schema_only"] = bool(values.get("schema_only"))
    for optional in ("note", "requested_by", "duration_s", "pg_dump_version", "server_version", "database_size"):
        values.setdefault(optional, None)
    return BackupRecord(id=manifest["backup_id"], key=manifest["artifact"], manifest_key=manifest_key,
                        storage_url=storage_url, **values)


def _artifact_sha256(storage: Storage, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in storage.read_chunks(key):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _stored_size(storage: Storage, key: str) -> int | None:
    """Bytes under `key`, or None when there is nothing there."""
    if not storage.exists(key):
        return None
    sizer = getattr(storage, "size", None)
    if sizer is not None:
        return sizer(key)
    return _artifact_sha256(storage, key)[1]


def check_artifact(storage: Storage, record: BackupRecord, verify_sha256: bool) -> str | None:
    """Why the artifact does not match its manifest, or None when it does."""
    size = _stored_size(storage, record.key)
    if size is None:
        return f"the artifact {record.key} is missing"
    if size != record.size:
        return f"the artifact {record.key} is {size:,} bytes, the manifest says {record.size:,}"
    if verify_sha256:
        actual, _ = _artifact_sha256(storage, record.key)
        if actual != record.sha256:
            return f"the artifact's sha256 is {actual[:12]}, the manifest says {record.sha256[:12]}"
    return None


def rebuild_catalog(storage: Storage, store: Store, *, verify_sha256: bool = False, merge: bool = False) -> RebuildReport:
    """Catalogue every backup whose manifest and artifact check out; report the others.

    The state database must hold no backups, unless `merge`: then backups already catalogued (by id)
    are left as they are. Raises UsageError for a non-empty catalog and StorageError when storage
    cannot be listed.
    """
    existing = {r.id for r in list_backups(store, include_pruned=True)}
    if existing and not merge:
        raise UsageError(f"the state database already holds {len(existing)} backup(s); rebuild the catalog into an "
                         "empty state database (a new [state] path), or merge into this one")
    report = RebuildReport(storage_url=storage.url, verified_sha256=verify_sha256)
    keys = storage.list_keys()
    manifest_keys = [k for k in keys if k.endswith(MANIFEST_SUFFIX) and not k.startswith(STATE_PREFIX)]
    found: dict[int, BackupRecord] = {}
    named_artifacts: set[str] = set()
    for key in manifest_keys:
        backup_id = None
        named_artifacts.add(key[: -len(MANIFEST_SUFFIX)])
        try:
            manifest = read_manifest(storage, key)
            backup_id = manifest["backup_id"]
            record = record_from_manifest(manifest, key, storage.url)
            named_artifacts.add(record.key)
        except (ValueError, TypeError, KeyError) as exc:
            report.problems.append(Problem(key, backup_id, str(exc) or type(exc).__name__))
            continue
        except StorageError as exc:
            report.problems.append(Problem(key, backup_id, str(exc)))
            continue
        if record.id in found:
            report.problems.append(Problem(key, record.id, f"backup id #{record.id} is also claimed by "
                                                           f"{found[record.id].manifest_key}"))
            continue
        try:
            problem = check_artifact(storage, record, verify_sha256)
        except StorageError as exc:
            problem = str(exc)
        if problem:
            report.problems.append(Problem(key, record.id, problem))
            continue
        found[record.id] = record
    for key in keys:
        if (_ARTIFACT_NAME.search(key) and not key.endswith(MANIFEST_SUFFIX) and key not in named_artifacts
                and not _GLOBALS_NAME.search(key)):
            report.problems.append(Problem(key, None, "an artifact without a manifest: what it holds is unknown"))
    for backup_id in sorted(found):
        if backup_id in existing:
            report.already_catalogued.append(backup_id)
            continue
        record = found[backup_id]
        try:
            report.catalogued.append(add_rebuilt_backup(store, record, source=record.manifest_key))
        except Exception as exc:  # e.g. a job of this state database already has the id
            report.problems.append(Problem(record.manifest_key, backup_id, f"not catalogued: {exc}"))
    return report
