"""A physical backup's seal: the bot's signature over the sha256 of the pgBackRest manifest of the set it took.

pgBackRest's restore checks every file it restores against the SHA-1 that the set's `backup.manifest`
records, so a changed data file fails the restore. But whoever can write the repository can rewrite
that manifest as well. The seal closes this. When a physical backup succeeds, the bot reads the
manifest back (`pgbackrest repo-get`, which also decrypts an encrypted repository) and signs
{database, stanza, label, manifest sha256 and size} with its signing key (commands/signing.py). Every
plan and every run that restores the set (a point-in-time restore, a drill, a rehearsal) first
checks the manifest now in the repository against the seal. It then names the set to pgBackRest by
label, so that the set checked is the set restored.

Not covered: archived WAL, which pgBackRest checks only against the checksum in each segment's own
file name; and sets the bot did not take, or took without a signing key. Those restore as before,
and the plan says `not sealed`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from commands.errors import ProvenanceError
from commands.pg.pgbackrest.config import PgBackRestConfig
from commands.pg.pgbackrest.runner import run_pgbackrest
from commands.signing import Keyring

PURPOSE = "physical-backup-manifest"
MAX_MANIFEST = 256 * 1024 * 1024  # a manifest lists every file of the cluster: large, never unbounded


@dataclass(frozen=True)
class ManifestDigest:
    sha256: str
    size: int


def manifest_digest(cfg: PgBackRestConfig, label: str) -> ManifestDigest:
    """The sha256 and size of backup set `label`'s manifest, as the repository holds it now."""
    result = run_pgbackrest(cfg, ["repo-get", f"backup/{cfg.stanza}/{label}/backup.manifest"], binary=True)
    data = result.stdout
    if len(data) > MAX_MANIFEST:
        raise ProvenanceError(f"backup set {label}'s manifest is {len(data)} bytes: more than any manifest this bot reads")
    return ManifestDigest(hashlib.sha256(data).hexdigest(), len(data))


def seal(keyring: Keyring, cfg: PgBackRestConfig, database: str, label: str) -> dict | None:
    """The signed seal of a set just taken, or None without a signing key (the set is then `not sealed`)."""
    if not keyring.can_sign:
        return None
    digest = manifest_digest(cfg, label)
    return keyring.sign(PURPOSE, {"database": database, "stanza": cfg.stanza, "label": label,
                                  "manifest_sha256": digest.sha256, "manifest_size": digest.size})


def check_seal(keyring: Keyring, cfg: PgBackRestConfig, database: str, label: str, sealed: dict | None) -> str:
    """How backup set `label` is trusted, as one line for the plan and the report. Raises ProvenanceError
    when its seal does not verify, names another set, or the manifest in the repository is not the
    one the seal recorded."""
    what = f"backup set {label} of {database}"
    if sealed is None:
        return (f"Provenance: {what} is not sealed (taken outside this bot, or without a signing key): "
                "pgBackRest's own checksums only")
    body = keyring.verify(PURPOSE, sealed, f"the seal of {what}").body
    if (body.get("database"), body.get("stanza"), body.get("label")) != (database, cfg.stanza, label):
        raise ProvenanceError(f"the seal of {what} is the seal of another set "
                              f"({body.get('database')}, stanza {body.get('stanza')}, {body.get('label')}): refusing")
    now = manifest_digest(cfg, label)
    if (now.sha256, now.size) != (body.get("manifest_sha256"), body.get("manifest_size")):
        raise ProvenanceError(f"{what}: its manifest in the repository is not the one this bot sealed when it took the "
                              f"backup (sha256 {str(body.get('manifest_sha256'))[:12]}…, now {now.sha256[:12]}…). "
                              "Someone changed the repository: nothing was restored")
    return (f"Provenance: {what} sealed by this bot (key {sealed['signature']['key_id']}); its manifest in the "
            "repository matches, and pgBackRest checks every file against it")
