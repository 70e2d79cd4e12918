"""What a restore throws away: the row changes made since the backup, from the write counters.

A backup records each table's insert/update/delete counters as its snapshot is taken
(commands/pg/write_counters.py); the plan reads them again now. Their difference is "about N row
changes" (counters also count rows of transactions that rolled back, and the server publishes them
within a second or so). When the readings do not compare (another server, another database, the
statistics were reset, a backup taken before counters were recorded) the plan says it cannot know,
never zero. PostgreSQL keeps no time of the last write, so that is bounded by the readings the bot
has: the newest of this database's backups whose counters differ from now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from commands.errors import BackupbotError
from commands.pg.names import parse_key
from commands.pg.write_counters import live_counters
from commands.units import human_duration
from state.backups import BackupRecord, list_backups

SHOWN_TABLES = 5


@dataclass(frozen=True)
class Changes:
    """Row changes between two readings, per table; `unknown` says why they do not compare."""

    per_table: dict[str, int]
    unknown: str | None = None

    @property
    def total(self) -> int:
        return sum(self.per_table.values())


def _sum(c: dict) -> int:
    return c["ins"] + c["upd"] + c["del"]


def not_comparable(then: dict | None, now: dict) -> str | None:
    """Why two readings do not compare, or None when they do."""
    if not then:
        return "the backup was taken before the bot recorded write counters"
    if not then.get("system_identifier") or not now.get("system_identifier"):
        return "the server's identity could not be read (pg_control_system() is not granted to the bot's role)"
    if then["system_identifier"] != now["system_identifier"]:
        return "the target is another server than the backup was taken on"
    if then.get("database_oid") != now.get("database_oid"):
        return "the target is another database than the backup was taken of (or it was re-created since)"
    if then.get("stats_reset") != now.get("stats_reset"):
        return f"the statistics were reset since the backup (at {now.get('stats_reset') or 'an unknown time'})"
    return None


def changes_between(then: dict | None, now: dict, scope) -> Changes:
    """Row changes from reading `then` to reading `now` in the tables `scope(key)` accepts."""
    why = not_comparable(then, now)
    if why:
        return Changes({}, why)
    per_table = {}
    for key, current in now["tables"].items():
        if not scope(key):
            continue
        before = then["tables"].get(key)
        if before is None or before["relid"] != current["relid"]:
            per_table[key] = _sum(current)  # created (or re-created) since: every change it has seen is new
        elif any(current[k] < before[k] for k in ("ins", "upd", "del")):
            return Changes({}, f"the counters of {key} went back since the backup (its statistics were reset)")
        else:
            per_table[key] = _sum(current) - _sum(before)
    return Changes(per_table)


def restore_scope(record: BackupRecord, tables: list[str]):
    """The tables a restore replaces: the ones asked for, the backup's own, or every table in its schemas."""
    if tables or record.tables:
        wanted = set(tables or record.tables)
        return lambda key: key in wanted
    schemas = set((record.objects or {}).get("schemas") or [])
    return (lambda key: parse_key(key).schema in schemas) if schemas else (lambda key: True)


def readings(services, database: str) -> list[BackupRecord]:
    """This database's logical backups that carry counters, oldest first."""
    rows = [r for r in list_backups(services.store, database, include_pruned=True) if r.write_counters]
    return sorted(rows, key=lambda r: (_read_at(r), r.id))


def _read_at(record: BackupRecord) -> str:
    return (record.write_counters or {}).get("read_at") or record.created_at


def discard_lines(services, record: BackupRecord, target_dsn: str, tables: list[str]) -> tuple[str, ...]:
    """The plan's lines on what replacing the target with `record` discards."""
    label = f"backup #{record.id}"
    try:
        now = live_counters(target_dsn)
    except BackupbotError as exc:
        return (f"Discards: cannot know the row changes since {label}: the target's counters could not be read ({exc})",)
    scope = restore_scope(record, tables)
    changes = changes_between(record.write_counters, now, scope)
    if changes.unknown:
        return (f"Discards: cannot know the row changes since {label}: {changes.unknown}",)
    changed = sorted(((n, key) for key, n in changes.per_table.items() if n), reverse=True)
    if not changed:
        return (f"Discards: no row changes since {label} (its write counters match the target's now)",)
    shown = ", ".join(f"{key} {n:,}" for n, key in changed[:SHOWN_TABLES])
    more = f" and {len(changed) - SHOWN_TABLES} more table(s)" if len(changed) > SHOWN_TABLES else ""
    return (f"Discards: about {changes.total:,} row changes made since {label} in {len(changed)} table(s): "
            f"{shown}{more}", last_write_line(services, record, now, scope))


def last_write_line(services, record: BackupRecord, now: dict, scope) -> str:
    """Bounded by the newest reading that differs from now: the last write came after it. Any newer
    reading equal to now bounds it from above."""
    later = [r for r in readings(services, record.database) if _read_at(r) >= _read_at(record)] or [record]
    newest_differing, first_equal = record, None
    for r in later:
        c = changes_between(r.write_counters, now, scope)
        if c.unknown:
            continue
        if c.total:
            newest_differing, first_equal = r, None
        elif first_equal is None:
            first_equal = r
    clock = services.clock()
    since = _ago(clock, _read_at(newest_differing))
    if first_equal is not None:
        return (f"Last write: between backup #{newest_differing.id} ({since} ago) and backup #{first_equal.id} "
                f"({_ago(clock, _read_at(first_equal))} ago); PostgreSQL records no exact time")
    return (f"Last write: within the last {since} (after backup #{newest_differing.id}, whose counters differ from "
            "now); PostgreSQL records no exact time")


def _ago(clock: datetime, at: str) -> str:
    return human_duration(max(0.0, (clock - datetime.fromisoformat(at)).total_seconds()))


def after_time_lines(services, database: str, target_dsn: str, moment: datetime | str) -> tuple[str, ...]:
    """A point-in-time copy lacks the changes made after `moment`: bounded by the logical backups'
    readings on either side of it (changes since one taken after it are certainly missing; changes
    since one taken before it include everything missing)."""
    try:
        moment = moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)
    except ValueError:
        return (f"Not in the copy: the row changes made after {moment}: cannot know (not a readable time)",)
    what = f"Not in the copy: the row changes made after {moment.isoformat()}"
    try:
        now = live_counters(target_dsn)
    except BackupbotError as exc:
        return (f"{what}: cannot know, the live counters could not be read ({exc})",)
    before = after = None
    for r in readings(services, database):
        if not_comparable(r.write_counters, now):
            continue
        at = datetime.fromisoformat(_read_at(r))
        if at <= moment:
            before = r
        elif after is None:
            after = r
    everything = lambda key: True  # noqa: E731
    parts = []
    if after is not None:
        parts.append(f"at least {changes_between(after.write_counters, now, everything).total:,} "
                     f"(made since backup #{after.id}, taken after it)")
    if before is not None:
        parts.append(f"at most {changes_between(before.write_counters, now, everything).total:,} "
                     f"(made since backup #{before.id}, taken before it)")
    if not parts:
        return (f"{what}: cannot know (no backup of {database} on this server and statistics epoch recorded "
                "write counters to compare with)",)
    return (f"{what}: {' and '.join(parts)}; the counters cannot place changes in time more exactly",)
