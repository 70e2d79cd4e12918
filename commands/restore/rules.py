"""Every rule of what a restore may be asked, and the names of the databases the bot makes for one.

The rules live here, once, so the parser, the logical and point-in-time planners and the runners
cannot drift apart: `--jobs` (its range, custom format only, whole backups only, never one
transaction, and its default), `--tables` (custom format only, one transaction), the custom-only flags, the method a
plan takes, and the target rules of a point-in-time restore. The messages are what people read in
the channel, so they stay word for word.

The bot-made database names (a side database, the previous database kept after a swap, a drill's
scratch database) are built here and parsed back here: the clean-up after a restart finds a dead
restore's side databases by the same prefix that named them, never by a pattern written elsewhere.
"""

from __future__ import annotations

import re
import secrets

from commands.errors import UsageError
from commands.pg.dump import FORMATS

MIN_JOBS, MAX_JOBS = 1, 16  # `--jobs N`: how many pg_restore workers a side-database restore may use

SINGLE_TRANSACTION, SIDE_DATABASE, NEW_DATABASE = "single transaction", "side database", "new database"


def is_custom(fmt: str) -> bool:
    """Only a custom-format archive has a TOC, which --tables, --jobs and --no-owner need."""
    return FORMATS[fmt].pg_format == "custom"


def check_logical_options(fmt: str, backup_id: int, tables: bool, jobs: int, backup_tables: bool,
                          no_owner: bool = False) -> None:
    """Refuse what pg_restore cannot do with this backup, before anyone is asked.

    `tables` is whether --tables was asked; `backup_tables` whether the backup holds only some tables."""
    if (tables or jobs > 1) and not is_custom(fmt):
        flag = "--tables" if tables else "--jobs"
        raise UsageError(f"{flag} needs a custom-format backup; backup #{backup_id} is {fmt}. "
                         f"Restore it whole, or pick a custom-format backup")
    if jobs > 1 and (tables or backup_tables):
        raise UsageError("--jobs restores a whole backup in parallel, which cannot be one transaction; a restore of "
                         "tables runs in one transaction, so it takes no --jobs: drop one of the two")
    if no_owner and not is_custom(fmt):
        raise UsageError(f"--no-owner needs a custom-format backup; backup #{backup_id} is {fmt}")


def restore_method(target_exists: bool, jobs: int, tables: bool) -> str:
    """A new target is created. A whole restore over an existing database goes through a side database,
    whatever its format or --jobs: the database is replaced whole, with what lives outside every schema
    (large objects, extensions, casts, event triggers, publications, subscriptions, ...), which no prologue
    in one transaction can empty, and pg_restore may use parallel jobs there. A restore of some tables
    (asked or backed up) replaces only those, in one transaction. `jobs` no longer decides the way."""
    if not target_exists:
        return NEW_DATABASE
    if not tables:
        return SIDE_DATABASE
    return SINGLE_TRANSACTION


def default_jobs(fmt: str, tables: bool, cores: int | None) -> int:
    """The pg_restore workers of a whole custom-format restore into a database made for it (new or side)
    when --jobs was not given: one per core, at most 4, so the restore runs at the speed of pg_restore -j."""
    if not is_custom(fmt) or tables:
        return 1
    return max(MIN_JOBS, min(4, cores or 1))


def check_point_in_time_target(to: str | None, into: str | None) -> None:
    """A point-in-time restore goes to a new cluster; `--to` only says where `--into`'s copy goes."""
    if to and not into:
        raise UsageError("--to with --time needs --into NEW_DB: the database at that moment is copied into a new "
                         "database on that server")


# ---------------------------------------------------------------- bot-made database names

SIDE_PREFIX, PREVIOUS_PREFIX, DRILL_PREFIX = "backupbot_side", "backupbot_prev", "backupbot_drill"


def _name(prefix: str, owner_id: int, random_bytes: int) -> str:
    return f"{prefix}_{owner_id}_{secrets.token_hex(random_bytes)}"


def side_database_name(request_id: int) -> str:
    """Where a --jobs restore goes before it is verified and swapped in."""
    return _name(SIDE_PREFIX, request_id, 3)


def previous_database_name(request_id: int) -> str:
    """What the replaced database is renamed to by a swap, kept until someone drops it."""
    return _name(PREVIOUS_PREFIX, request_id, 3)


def drill_database_name(backup_id: int) -> str:
    """A drill's scratch database, dropped when the drill ends."""
    return _name(DRILL_PREFIX, backup_id, 4)


PREVIOUS_TEMPLATE = f"{PREVIOUS_PREFIX}_<request>_<random>"  # how plan messages name the kept database


def like_pattern(prefix: str, owner_id: int) -> str:
    """The LIKE pattern of every name `prefix` and `owner_id` built (underscores escaped)."""
    return f"{prefix}_{owner_id}_".replace("_", "\\_") + "%"


def owner_of(name: str, prefix: str) -> int | None:
    """The request or backup id a bot-made name was built for; None when `prefix` did not build it."""
    match = re.fullmatch(rf"{re.escape(prefix)}_(\d+)_[0-9a-f]+", name)
    return int(match.group(1)) if match else None
