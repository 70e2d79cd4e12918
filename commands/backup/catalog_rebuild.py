"""Rebuild the backup catalog from the manifests in storage, for when the bot's host is gone.

Every artifact has a signed, self-describing manifest beside it (commands/backup/manifest.py), so
storage alone holds the catalog. `rebuild_catalog` reads each `*.manifest.json`, verifies its
signature with the bot's key (which never sits in storage), checks that the artifact it names is
there with the recorded size (and, with `verify_sha256`, the recorded checksum), and catalogues it
under its original backup id in an empty state database. Whatever does not check out is reported,
never catalogued: a catalogued backup is one a restore can use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from commands.backup.manifest import MANIFEST_SUFFIX, authenticate, check_dated, check_encrypted, read_stored_manifest
from commands.errors import StorageError, UsageError
from commands.signing import Keyring
from commands.storage import Storage
from state.backups import BackupRecord, add_rebuilt_backup, list_backups
from state.store import Store

STATE_PREFIX = "_state/"  # state database copies (state/backup_copy.py), never backups
_ARTIFACT_NAME = re.compile(r"(^|/)backup-\d+-[^/]*$")
_GLOBALS_NAME = re.compile(r"\.globals\.sql(\.age)?$")  # pg_dumpall output beside a full backup: its manifest names it


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
                 + (f" ({ids}), each manifest signed with this bot's key and its artifact present with the "
                    f"manifest's {checked}" if ids else "")]
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


def read_manifest(storage: Storage, key: str, keyring: Keyring) -> tuple[BackupRecord, str]:
    """The backup a stored manifest describes, once its signature verifies; raises ValueError (or
    ProvenanceError, one) saying why not."""
    return authenticate(read_stored_manifest(storage, key), key, keyring, storage.url)


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


def rebuild_catalog(storage: Storage, store: Store, *, keyring: Keyring, encrypt_to: tuple[str, ...] = (),
                    now: datetime | None = None, verify_sha256: bool = False, merge: bool = False) -> RebuildReport:
    """Catalogue every backup whose manifest verifies and whose artifact checks out; report the others.

    Storage is not trusted: a manifest counts only when it is signed with one of `keyring`'s keys, is
    not dated in the future, and is encrypted when `encrypt_to` says every backup is.

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
            record, key_id = read_manifest(storage, key, keyring)
            backup_id = record.id
            named_artifacts.add(record.key)
            record = dataclasses.replace(record, signed_by=key_id)
            check_dated(record, now or datetime.now(UTC))
            check_encrypted(record, encrypt_to)
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
