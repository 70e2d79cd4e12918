"""Whole databases: create (like another: commands.pg.restore.side), drop, look up.

Every name goes through `psycopg.sql.Identifier`, and bot-made names are checked first.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from commands.pg import snapshot as pg_snapshot
from commands.pg.restore.side import create_like, validate_database_name  # noqa: F401 (imported from here)


def create_database(dsn: str, name: str, like: str | None = None) -> None:
    """CREATE DATABASE `name`; with `like`, exactly like that database in everything pg_restore never
    restores (commands.pg.restore.side.create_like), so it can be swapped in for it."""
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        if like is None:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            return
        create_like(conn, name, like)


def drop_database(dsn: str, name: str) -> None:
    """A database the bot restored into may hold subscriptions: drop it with
    commands.pg.subscriptions.drop_restored_database, which releases them first."""
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def databases_like(dsn: str, pattern: str) -> list[str]:
    """Databases whose names match a LIKE pattern (bot-made names only)."""
    with pg_snapshot.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]


def database_exists(dsn: str, name: str) -> bool:
    with pg_snapshot.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
