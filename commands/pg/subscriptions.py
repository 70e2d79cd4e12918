"""Subscriptions in a restored copy: disabled and without a slot, so nothing ever reaches the publisher.

pg_dump writes a subscription as `CREATE SUBSCRIPTION ... WITH (connect = false, slot_name = 'x')`: it
is restored disabled, but it still names the publisher's slot, the one production's own subscriber
uses. Anyone who ENABLEs the copy would steal production's changes, and DROP SUBSCRIPTION (which
DROP DATABASE needs first: a database with a subscription cannot be dropped) connects to the
publisher to drop that slot, breaking production's replication, or fails when the publisher is out
of reach, leaving the copy behind. So every subscription of a copy is disabled and its slot
forgotten (`slot_name = NONE`) right after the restore, and again before a bot-made database is
dropped. The subscriptions are found by the database's OID in pg_subscription, never by parsing
tool output; their names go into SQL only through sql.Identifier.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from commands.pg.restore.databases import database_exists, drop_database
from commands.pg.tools import with_dbname

SUBSCRIPTIONS_SQL = ("SELECT s.subname, s.subenabled, s.subslotname FROM pg_subscription s JOIN pg_database d "
                     "ON d.oid = s.subdbid WHERE d.datname = current_database() ORDER BY 1")


def subscriptions(db_dsn: str) -> list[tuple[str, bool, str | None]]:
    """(name, enabled, slot name) of every subscription of the database `db_dsn` connects to."""
    with psycopg.connect(db_dsn, autocommit=True, connect_timeout=10) as conn:
        return [tuple(row) for row in conn.execute(SUBSCRIPTIONS_SQL)]


def release_subscriptions(db_dsn: str, drop: bool = False) -> list[str]:
    """Disable every subscription of this database and set its slot_name to NONE (neither connects to
    the publisher); with `drop`, then DROP it, which without a slot connects to nothing either.
    Returns the subscriptions' names."""
    names = []
    with psycopg.connect(db_dsn, autocommit=True, connect_timeout=10) as conn:
        for name, enabled, slot in conn.execute(SUBSCRIPTIONS_SQL).fetchall():
            ident = sql.Identifier(name)
            if enabled:
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            if slot is not None:
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            if drop:
                conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
            names.append(name)
    return names


def drop_subscriptions_of(dsn: str, name: str) -> list[str]:
    """Release and drop the subscriptions of database `name` (if it exists) on `dsn`'s server, which
    DROP DATABASE needs first. Returns their names."""
    return release_subscriptions(with_dbname(dsn, name), drop=True) if database_exists(dsn, name) else []


def drop_restored_database(dsn: str, name: str) -> list[str]:
    """Drop a database the bot restored into (a drill's scratch database, a side database, a new
    target of a failed restore) after releasing and dropping its subscriptions, so DROP DATABASE is
    never refused for them and nothing connects to a publisher. Returns the subscriptions dropped."""
    dropped = drop_subscriptions_of(dsn, name)
    drop_database(dsn, name)
    return dropped
