"""A dry run changes nothing on the production server (issue #17, item 6).

An operator tries every kind of `/restore ... --dry-run` against an archiving production cluster:
a logical restore over the database and into a new one, a physical backup set, and two times, one
already archived and one still in the live WAL segment. Between before and after each, the server
wrote no commit and no WAL switch (read back from the WAL itself with pg_walinspect), its current
WAL segment and pg_stat_archiver are as they were, and every table holds the same rows. Where a
dry run cannot know without writing (is the live segment's WAL going to be archived?) it says so.
"""

from __future__ import annotations

import time

import psycopg

from commands.pg.pgbackrest.archiver import force_archive
from tests.fix_pgbackrest import server_now
from tests.test_point_in_time_restore import pitr_console
from tests.test_restore import content_of

# What a write leaves in the WAL. A read alone may log page pruning (Heap2 PRUNE) or index clean-up (Btree)
# while it reads the catalog; those are the server tidying pages, not the bot writing, so they are not counted.
WRITE_RECORDS = {("Heap", kind) for kind in ("INSERT", "INSERT+INIT", "UPDATE", "UPDATE+INIT", "HOT_UPDATE",
                                             "HOT_UPDATE+INIT", "DELETE", "TRUNCATE")}
WRITE_MANAGERS = {"Sequence", "Database", "Storage"}


def is_write(record: tuple[str, str]) -> bool:
    manager, kind = record
    return (record in WRITE_RECORDS or manager in WRITE_MANAGERS or (manager == "Transaction" and kind.startswith("COMMIT"))
            or kind == "SWITCH")


def server_state(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        lsn, segment = conn.execute("SELECT pg_current_wal_lsn(), pg_walfile_name(pg_current_wal_lsn())").fetchone()
        archived = conn.execute("SELECT archived_count, last_archived_wal FROM pg_stat_archiver").fetchone()
        next_xid = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())").fetchone()[0]
        databases = conn.execute("SELECT array_agg(datname ORDER BY datname) FROM pg_database").fetchone()[0]
    return {"lsn": lsn, "segment": segment, "archived": archived, "next_xid": next_xid, "databases": databases,
            "rows": content_of(dsn)}


def wal_written_between(dsn: str, start, end) -> set[tuple[str, str]]:
    """(resource manager, record type) of every WAL record the server wrote from `start` to `end`."""
    if str(start) == str(end):
        return set()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT resource_manager, record_type FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)",
                            [str(start), str(end)]).fetchall()
    return set(rows)


def assert_wrote_nothing(dsn: str, before: dict, command: str) -> None:
    after = server_state(dsn)
    written = wal_written_between(dsn, before["lsn"], after["lsn"])
    assert not {r for r in written if is_write(r)}, (command, written)  # no marker, no switch
    # The WAL records are the exact evidence (no commit, no row written, no SWITCH); the segment's name and the
    # archive count can also move with what the server logs by itself (a checkpoint, hint-bit page images), so
    # they are not compared. No transaction id was spent, no database made, no row changed.
    for key in ("next_xid", "databases", "rows"):
        assert after[key] == before[key], (command, key, before[key], after[key])


def test_every_kind_of_restore_dry_run_leaves_the_production_server_as_it_was(tmp_path, pgbackrest_setup):
    dsn = pgbackrest_setup.create_database("dry_app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_walinspect")  # to read back what the server wrote
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, entry text NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 100) g")
        conn.execute("VACUUM ANALYZE ledger")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "succeeded" in console.run("/backup")
    assert "succeeded" in console.run("/backup physical --type incr")
    time.sleep(1.2)
    archived_moment = server_now(dsn)
    time.sleep(1.2)
    force_archive(dsn)  # everything up to here is in the archive
    time.sleep(1.2)
    live_moment = server_now(dsn)  # after the last archived segment: still in the live one
    stamp = "%Y-%m-%d %H:%M:%S.%f%z"
    with pgbackrest_setup.cluster.admin() as admin:  # no background vacuum writing while we watch
        admin.execute("ALTER SYSTEM SET autovacuum = off")
        admin.execute("SELECT pg_reload_conf()")
    try:
        outputs = {}
        for command in ["/restore latest --dry-run", "/restore latest --into dry_copy --dry-run",
                        "/restore physical latest --dry-run",
                        f'/restore --time "{archived_moment.strftime(stamp)}" --dry-run',
                        f'/restore --time "{live_moment.strftime(stamp)}" --into dry_at_time --dry-run']:
            before = server_state(dsn)
            outputs[command] = console.run(command)
            assert "Dry run: nothing was requested, and nothing was written to any server" in outputs[command], outputs
            assert_wrote_nothing(dsn, before, command)
    finally:
        with pgbackrest_setup.cluster.admin() as admin:
            admin.execute("ALTER SYSTEM RESET autovacuum")
            admin.execute("SELECT pg_reload_conf()")
    archived, live = list(outputs.values())[3:]
    assert "Reachable: yes, from backup" in archived, archived
    # what a dry run cannot know without switching WAL on the server, it says it does not know
    assert "Reachable: not known yet" in live and "a dry run does not switch WAL" in live, live
    assert "Waiting for" not in "".join(outputs.values())  # nobody was asked
