"""The manifest beside every artifact: one home for writing it, reading it back and trusting it.

A manifest binds what a restore relies on (the artifact's key, sha256 and size, the backup id,
database, kind, format, creation time, encryption and recipients, the row counts and recorded
object OIDs, the role definitions, the globals file's sha256) and is signed with the bot's key
(commands/signing.py), so storage alone can rebuild the catalog without anyone who can write to the
bucket being able to hand the bot a backup. Backups catalogued before signing existed keep working
while their catalog row exists: then the row's sha256 is the trust anchor.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from commands.errors import IntegrityError, ProvenanceError, StorageError
from commands.pg.dump import FORMATS
from commands.signing import SIGNATURE, Keyring
from commands.storage import Storage
from state.backups import BackupRecord

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1
PURPOSE = "backup-manifest"
MAX_MANIFEST_BYTES = 64 << 20  # a manifest of 100,000 tables is a few MB; anything far larger is not one of ours
CLOCK_SKEW = timedelta(minutes=5)  # a backup dated later than now + this was not taken by this bot
REQUIRED = ("backup_id", "database", "kind", "format", "compression", "created_at", "artifact", "sha256", "size",
            "raw_size")
# Catalog columns a manifest does not decide: where it is stored, what happened to it since, how it was trusted.
NOT_FROM_MANIFEST = {"id", "key", "manifest_key", "storage_url", "verification", "verified_at", "restore_seconds",
                     "pruned_at", "prune_reason", "job_id", "signed_by", "rebuilt_from"}
ENCRYPTED_RESTORE_HINTS = {  # by hand, with the private key of one of the recipients
    "custom": "age -d -i key.txt FILE | zstd -d | pg_restore -d DB  (or the bot's /restore)",
    "plain": "age -d -i key.txt FILE | psql -v ON_ERROR_STOP=1 -d DB",
    "gzip": "age -d -i key.txt FILE | gunzip -c | psql -v ON_ERROR_STOP=1 -d DB",
}


def manifest_document(record: BackupRecord) -> dict:
    """The manifest's content, unsigned."""
    return {
        "backupbot_manifest": MANIFEST_VERSION,
        "backup_id": record.id,
        "database": record.database,
        "dbname": record.dbname,
        "kind": record.kind,
        "format": record.format,
        "compression": record.compression,
        "tables": list(record.tables),
        "schema_only": record.schema_only,
        "note": record.note,
        "requested_by": record.requested_by,
        "duration_s": record.duration_s,
        "created_at": record.created_at,
        "artifact": record.key,
        "sha256": record.sha256,
        "size": record.size,
        "raw_size": record.raw_size,
        "pg_dump_version": record.pg_dump_version,
        "server_version": record.server_version,
        "database_size": record.database_size,
        "row_counts": record.row_counts,
        "not_valid_constraints": list(record.not_valid_constraints),
        "objects": record.objects,
        "restore": ENCRYPTED_RESTORE_HINTS[record.format] if record.encryption else FORMATS[record.format].restore_hint,
        "encryption": record.encryption,
        "recipients": list(record.recipients),
        "roles": list(record.roles),
        "role_definitions": list(record.role_definitions),
        "globals_file": record.globals_file,
        "write_counters": record.write_counters,
    }


def manifest_bytes(record: BackupRecord, keyring: Keyring) -> bytes:
    """The stored manifest: signed when a key is configured (then `record.signed_by` names it)."""
    document = manifest_document(record)
    if keyring.can_sign:
        document = keyring.sign(PURPOSE, document)
    # one line per field, each value written by the C encoder: `indent` would fall back to the pure-Python
    # one, whose time grows with every table's objects (0.5s at 5,000 tables)
    fields = [f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}" for key, value in sorted(document.items())]
    return ("{\n" + ",\n".join(fields) + "\n}\n").encode()


def parse_manifest(data: bytes) -> dict:
    """A manifest's JSON, checked for the fields a catalog row needs. Raises ValueError saying why."""
    try:
        manifest = json.loads(data)
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
    what later versions add to both comes along without a change here."""
    names = {f.name for f in dataclasses.fields(BackupRecord)} - NOT_FROM_MANIFEST
    values = {name: manifest[name] for name in names if name in manifest}
    values["tables"] = tuple(values.get("tables") or ())
    values["not_valid_constraints"] = tuple(values.get("not_valid_constraints") or ())
    values["row_counts"] = dict(values.get("row_counts") or {})
    values["schema_only"] = bool(values.get("schema_only"))
    for name in ("recipients", "roles", "role_definitions"):
        values[name] = tuple(values.get(name) or ())
    for optional in ("note", "requested_by", "duration_s", "pg_dump_version", "server_version", "database_size"):
        values.setdefault(optional, None)
    return BackupRecord(id=manifest["backup_id"], key=manifest["artifact"], manifest_key=manifest_key,
                        storage_url=storage_url, **values)


def check_dated(record: BackupRecord, now: datetime) -> None:
    """A backup from the future was not taken by this bot (or its clock lies): refuse it."""
    try:
        created = datetime.fromisoformat(record.created_at)
    except (TypeError, ValueError):
        raise ProvenanceError(f"backup #{record.id} has no readable creation time ({record.created_at!r})") from None
    if created.tzinfo is None or created > now + CLOCK_SKEW:
        raise ProvenanceError(f"backup #{record.id} is dated {record.created_at}, in the future: it was not taken by "
                              "this bot")


def check_encrypted(record: BackupRecord, encrypt_to: tuple[str, ...]) -> None:
    if encrypt_to and not record.encryption:
        raise ProvenanceError(f"backup #{record.id} is not encrypted, but [storage] encrypt_to is set: every backup this "
                              "bot takes is encrypted, so an unencrypted one is refused")


def read_stored_manifest(storage: Storage, key: str) -> bytes:
    """The stored manifest's bytes, refused unread when it is too large to be one (storage is not trusted)."""
    size = storage.size(key)
    if size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{key} is {size:,} bytes, too large to be a backupbot manifest; not read")
    return storage.get_bytes(key)


def authenticate(data: bytes, key: str, keyring: Keyring, storage_url: str) -> tuple[BackupRecord, str]:
    """The catalog row a stored manifest describes and the key that signed it; ProvenanceError when it is
    unsigned or its signature does not verify, ValueError when it is no usable manifest."""
    manifest = parse_manifest(data)
    signed = keyring.verify(PURPOSE, manifest, f"the manifest {key}")
    return record_from_manifest(signed.body, key, storage_url), signed.key_id


@dataclass(frozen=True)
class Provenance:
    """How the bot knows a backup is its own, for the plan and the drill report."""

    backup_id: int
    signed_by: str | None
    rebuilt_from: str | None

    def text(self) -> str:
        if self.signed_by:
            how = f"manifest signed with key {self.signed_by}"
        else:
            how = "unsigned (taken before signing was set up; trusted by the sha256 in this bot's catalog)"
        rebuilt = f" · catalogued by a catalog rebuild from {self.rebuilt_from}" if self.rebuilt_from else ""
        return f"Provenance: {how}{rebuilt}"


def check_provenance(storage: Storage, record: BackupRecord, *, keyring: Keyring, encrypt_to: tuple[str, ...],
                     now: datetime) -> Provenance:
    """Before anyone is asked: the backup is one this bot took, or ProvenanceError says why not.

    A signed backup's stored manifest must verify and describe exactly its catalog row (what the
    restore's prologue and verification use). An unsigned one is accepted only when its row was
    written by this bot when it took it, never when the row came from storage by a catalog rebuild.
    """
    check_dated(record, now)
    check_encrypted(record, encrypt_to)
    try:
        data = read_stored_manifest(storage, record.manifest_key) if storage.exists(record.manifest_key) else None
    except StorageError:
        data = None
    if data is None:
        if record.signed_by or record.rebuilt_from:
            raise ProvenanceError(f"backup #{record.id}: its signed manifest {record.manifest_key} is missing from "
                                  "storage, so nothing proves the artifact is the one this bot stored")
        return Provenance(record.id, None, None)
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"backup #{record.id}: its manifest {record.manifest_key} is not valid JSON") from None
    if isinstance(document, dict) and SIGNATURE not in document:
        if record.signed_by:
            raise ProvenanceError(f"backup #{record.id} was signed with key {record.signed_by} when it was taken, but "
                                  f"its manifest in storage is not signed: it was replaced")
        if record.rebuilt_from:
            raise ProvenanceError(f"backup #{record.id} was catalogued from storage by a catalog rebuild, and its "
                                  "manifest is not signed: nothing proves this bot took it")
        return Provenance(record.id, None, None)
    try:
        stored, key_id = authenticate(data, record.manifest_key, keyring, record.storage_url)
    except ValueError as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise IntegrityError(f"backup #{record.id}: its manifest {record.manifest_key}: {exc}") from None
    differ = differing_fields(stored, record)
    if differ:
        raise ProvenanceError(f"backup #{record.id}: its signed manifest does not describe the catalog's backup "
                              f"({', '.join(differ)} differ)")
    return Provenance(record.id, key_id, record.rebuilt_from)


def differing_fields(a: BackupRecord, b: BackupRecord) -> list[str]:
    names = sorted({f.name for f in dataclasses.fields(BackupRecord)} - NOT_FROM_MANIFEST | {"id", "key"})
    return [name for name in names if _normal(getattr(a, name)) != _normal(getattr(b, name))]


def _normal(value):
    """Catalog rows and manifests hold the same values in JSON's shapes (lists, dicts)."""
    return json.loads(json.dumps(value, sort_keys=True))
