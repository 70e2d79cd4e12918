"""Each table's write counters, read when a backup's snapshot is taken and again when a restore is planned.

pg_stat_user_tables is not transactional: its counters are whatever the statistics system holds when
first read in a transaction. The backup reads them in the dump's own transaction, right before it
exports the snapshot pg_dump dumps, so they describe (to within the writes in flight at that moment)
what the dump holds. The difference between those counters and the live ones is how many rows were
inserted, updated or deleted since: what a restore of that backup throws away.

Counters only compare on the same server, the same database and the same statistics epoch: with
them the reading records the server's system_identifier, the database's OID and pg_stat_database's
stats_reset, and each table's OID (a table dropped and re-created restarts at zero). PostgreSQL keeps
no time of a table's last write, so none is claimed here (commands/restore/discards.py bounds it by
the readings the bot has).
"""

from __future__ import annotations

import psycopg

from commands.pg import snapshot as pg_snapshot
from commands.pg.names import QualifiedName

COUNTERS_SQL = """
SELECT schemaname, relname, relid, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup
FROM pg_stat_user_tables ORDER BY 1, 2
"""

# pg_control_system() may be revoked from the bot's role: then the server is known by nothing, and the
# plan says it cannot compare (never an error inside the dump's transaction, which would abort it).
IDENTITY_SQL = """
SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
            THEN (SELECT system_identifier::text FROM pg_control_system()) END,
       d.oid, s.stats_reset
FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datname = current_database()
"""


def read_counters(conn: psycopg.Connection) -> dict:
    """{"system_identifier", "database_oid", "stats_reset", "tables": {key: {relid, ins, upd, del, live}}},
    JSON values only (it goes into the signed manifest)."""
    system_identifier, database_oid, stats_reset = conn.execute(IDENTITY_SQL).fetchone()
    tables = {}
    for schema, name, relid, ins, upd, dele, live in conn.execute(COUNTERS_SQL).fetchall():
        key = QualifiedName(schema, name).key
        tables[key] = {"relid": int(relid), "ins": int(ins or 0), "upd": int(upd or 0), "del": int(dele or 0),
                       "live": int(live or 0)}
    return {"system_identifier": system_identifier, "database_oid": int(database_oid),
            "stats_reset": stats_reset.isoformat() if stats_reset else None, "tables": tables}


def live_counters(dsn: str) -> dict:
    """The counters now, in a transaction of their own (a fresh statistics snapshot)."""
    with pg_snapshot.connect(dsn) as conn:
        return read_counters(conn)
