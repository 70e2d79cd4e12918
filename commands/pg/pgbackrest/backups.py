"""What the repository holds, read only from `pgbackrest info --output=json`, and `pgbackrest backup`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from commands.errors import ConfigError
from commands.pg.pgbackrest.config import PgBackRestConfig
from commands.pg.pgbackrest.runner import DEFAULT_TIMEOUT, PgBackRestError, run_pgbackrest, stanza_create

BACKUP_TYPES = ("full", "diff", "incr")


def _ts(value) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class PhysicalBackup:
    label: str
    type: str                       # full, diff or incr
    started: datetime
    stopped: datetime
    size: int                       # database size restored from this backup
    delta: int                      # bytes copied by this backup
    repo_size: int                  # bytes this backup takes in the repository
    repo_delta: int
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    prior: str | None               # the backup a diff/incr builds on
    error: bool                     # pgbackrest found page checksum errors

    @property
    def duration(self) -> timedelta:
        return self.stopped - self.started

    @property
    def wal_range(self) -> str:
        return f"{self.wal_start or '?'}..{self.wal_stop or '?'}"


@dataclass(frozen=True)
class ArchiveRange:
    min_wal: str | None
    max_wal: str | None
    database_id: str | None         # "15-1": PostgreSQL version and pgbackrest's database id


def info_json(cfg: PgBackRestConfig, *, timeout: float = 300) -> dict:
    """The stanza's entry of `pgbackrest info --output=json` (the only place state is read from)."""
    result = run_pgbackrest(cfg, ["info", "--output=json"], timeout=timeout)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise PgBackRestError("pgbackrest info did not print JSON") from None
    for entry in data if isinstance(data, list) else []:
        if entry.get("name") == cfg.stanza:
            status = entry.get("status") or {}
            # 0 ok, 2 no backups yet; 1 missing stanza, 3 missing data, 99 other error
            if status.get("code") not in (0, 2, 4):
                raise PgBackRestError(f"pgbackrest stanza {cfg.stanza}: {status.get('message', 'unknown status')}",
                                      status.get("code"))
            return entry
    raise PgBackRestError(f"pgbackrest info knows no stanza {cfg.stanza!r}")


def ensure_stanza(cfg: PgBackRestConfig, *, timeout: float = 300) -> bool:
    """Create the stanza when the repository has none yet (pgBackRest reaches the cluster for it, over
    TLS for a remote one); True when it was created. Any other state of the stanza is left alone."""
    try:
        info_json(cfg, timeout=timeout)
        return False
    except PgBackRestError as exc:
        if exc.code != 1 and "knows no stanza" not in str(exc):
            raise
    stanza_create(cfg, timeout=timeout)
    return True


def _backup_from_json(item: dict) -> PhysicalBackup:
    info = item.get("info") or {}
    repo = info.get("repository") or {}
    archive = item.get("archive") or {}
    lsn = item.get("lsn") or {}
    stamp = item.get("timestamp") or {}
    return PhysicalBackup(
        label=item["label"], type=item.get("type", "?"),
        started=_ts(stamp.get("start")), stopped=_ts(stamp.get("stop")),
        size=int(info.get("size") or 0), delta=int(info.get("delta") or 0),
        repo_size=int(repo.get("size") or 0), repo_delta=int(repo.get("delta") or 0),
        wal_start=archive.get("start"), wal_stop=archive.get("stop"),
        lsn_start=lsn.get("start"), lsn_stop=lsn.get("stop"),
        prior=item.get("prior"), error=bool(item.get("error")),
    )


def info(cfg: PgBackRestConfig, *, timeout: float = 300) -> list[PhysicalBackup]:
    """The stanza's backups, oldest first."""
    return [_backup_from_json(item) for item in info_json(cfg, timeout=timeout).get("backup") or []]


def archive_range(cfg: PgBackRestConfig, *, timeout: float = 300) -> ArchiveRange:
    """The oldest and newest WAL segment archived for the current database of the stanza."""
    entry = info_json(cfg, timeout=timeout)
    archives = entry.get("archive") or []
    current = ((entry.get("db") or [{}])[-1] or {}).get("id") if entry.get("db") else None
    chosen = next((a for a in archives if (a.get("database") or {}).get("id") == current), None)
    chosen = chosen or (archives[-1] if archives else {})
    return ArchiveRange(min_wal=chosen.get("min"), max_wal=chosen.get("max"), database_id=chosen.get("id"))


def backup(cfg: PgBackRestConfig, type: str = "full", *, timeout: float = DEFAULT_TIMEOUT) -> PhysicalBackup:
    """Run `pgbackrest backup --type=TYPE` and return the backup it made, as info reports it.
    pgBackRest then expires what repo1-retention-full no longer keeps."""
    if type not in BACKUP_TYPES:
        raise ConfigError(f"backup type: expected full, diff or incr, got {type!r}")
    before = {b.label for b in info(cfg)}
    run_pgbackrest(cfg, ["backup", f"--type={type}"], timeout=timeout)
    made = [b for b in info(cfg) if b.label not in before]
    if not made:
        raise PgBackRestError("pgbackrest backup succeeded but info lists no new backup")
    return made[-1]
