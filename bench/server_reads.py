"""What a backup costs the production server, against pg_dump alone, and the fixed cost per table.

Row counts once took a second read of every row (`count(*)` in the dump's snapshot); now they are
read off pg_dump's stream. These figures say whether the server reads each row once, how many
buffers a backup touches, and how a database of thousands of small tables fares. Used by run.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

ROWS_SQL = ("SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables)"
            " + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes)")
BUFFERS_SQL = "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()"


def settled(dsn: str) -> tuple[int, int]:
    """(rows read from user tables, buffers read) once the row statistics stop moving: backends flush
    theirs as they exit, a moment after their client has gone. (These polls touch a few catalog
    buffers each, alike for both sides of a comparison.)"""
    last, since = None, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            now = (int(conn.execute(ROWS_SQL).fetchone()[0]), int(conn.execute(BUFFERS_SQL).fetchone()[0]))
            if last is None or now[0] != last[0]:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > 1.5:
                return now
            time.sleep(0.1)


def server_reads(dsn: str, run: Callable[[], object]) -> tuple[int, int]:
    """Rows and buffers the server read while `run` ran (the statistics' own reads are a few buffers)."""
    rows0, buffers0 = settled(dsn)
    run()
    rows1, buffers1 = settled(dsn)
    return rows1 - rows0, buffers1 - buffers0


def generate_many_tables(dsn: str, count: int) -> None:
    """`count` small tables as an application with one per tenant has them: a serial key, a foreign key
    to the previous table, a default, five rows each. Batches of 250 keep locks under the default limit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for first in range(1, count + 1, 250):
            with conn.transaction():
                for i in range(first, min(first + 250, count + 1)):
                    conn.execute(f"CREATE TABLE t{i} (id serial PRIMARY KEY, ref int, body text, "
                                 "created timestamptz DEFAULT now())")
                    conn.execute(f"INSERT INTO t{i} (ref, body) SELECT g, md5(g::text) FROM generate_series(1, 5) g")
                    if i > 1:
                        conn.execute(f"ALTER TABLE t{i} ADD FOREIGN KEY (ref) REFERENCES t{i - 1} (id)")
        conn.execute("VACUUM ANALYZE")


def read_rows(label: str, dsn: str, bare: Callable[[], object], bot: Callable[[], object], rows: list) -> tuple[float, float]:
    """Two rows of run.py's table: the server's reads during a bot backup against pg_dump alone.
    Returns the two ratios (rows, buffers)."""
    bare_rows, bare_buffers = server_reads(dsn, bare)
    bot_rows, bot_buffers = server_reads(dsn, bot)
    rows.append((label, "rows the server reads during a bot backup (custom) vs `pg_dump -Fc` alone",
                 f"{bot_rows / max(bare_rows, 1):.2f}x", "", f"{bot_rows:,} rows", f"{bare_rows:,} rows alone", "≤ 1.05x",
                 "met" if bot_rows <= 1.05 * bare_rows else "**MISSED**"))
    rows.append((label, "buffer reads during a bot backup (custom) vs `pg_dump -Fc` alone",
                 f"{bot_buffers / max(bare_buffers, 1):.2f}x", "", f"{bot_buffers:,} buffers",
                 f"{bare_buffers:,} alone", "≤ 1.1x", "met" if bot_buffers <= 1.1 * bare_buffers else "**MISSED**"))
    return bot_rows / max(bare_rows, 1), bot_buffers / max(bare_buffers, 1)
