"""Which backup a reference names: one resolver for ids, `latest` and pgBackRest labels.

Modelled on barman's `parse_backup_id`: a reference is resolved once, here, against the catalog
(state/backups.py), so `/restore`, drills and point-in-time restores read `latest` and ids the
same way. `latest` is the newest full logical backup (`Backup.is_full`), or the newest physical
backup that has not expired; a number is a backup id (ids are job ids, unique across both); any
other word is a pgBackRest label. A pruned or expired backup is named as gone, never restored.
"""

from __future__ import annotations

from commands.chat.args import is_number
from commands.errors import NotFoundError, UsageError
from state.backups import LOGICAL, PHYSICAL, Backup, get_backup, latest_backup
from state.physical_backups import get_physical_backup, get_physical_backup_by_label, list_physical_backups
from state.store import Store


def resolve_backup(store: Store, database: str | None, ref: str, kind: str = LOGICAL) -> Backup:
    """The `kind` (logical or physical) backup `ref` names, of `database` when one is given.

    A logical id of another database is a usage error (the way to restore it elsewhere is --into);
    a physical backup is always of `database`, which it needs (labels are per stanza)."""
    if kind == PHYSICAL:
        return _physical(store, database, ref)
    if kind != LOGICAL:
        raise ValueError(f"no backup kind {kind!r}")
    if ref == "latest":
        record = latest_backup(store, database, full_only=True)
        if record is None:
            raise NotFoundError(f"there is no full backup of {database} yet")
        return record
    record = get_backup(store, int(ref))
    if record is None or record.gone_at:
        raise NotFoundError(f"there is no backup #{ref}" + (" (it was pruned)" if record else ""))
    if database and record.database != database:
        raise UsageError(f"backup #{ref} is of {record.database}, not {database}; "
                         f"to restore it elsewhere use --into")
    return record


def _physical(store: Store, database: str, ref: str) -> Backup:
    if ref == "latest":
        records = list_physical_backups(store, database, limit=1)
        if not records:
            raise NotFoundError(f"there is no physical backup of {database} yet: run `/backup physical {database}`")
        return records[0]
    record = (get_physical_backup(store, int(ref)) if is_number(ref)
              else get_physical_backup_by_label(store, database, ref))
    if record is None or record.gone_at or record.database != database:
        raise NotFoundError(f"there is no physical backup {ref} of {database}")
    return record
