"""The checks a drill stands behind beyond row counts: pg_amcheck and the operator's own assertions.

`deep_verify` runs on a restored database that is not yet anyone's: a drill's scratch database, or
a side database before it is swapped in (call it after `verify_restored` on the side database and
before `swap_databases`, failing the restore when a check fails). The assertions are
`[databases.X] smoke_sql`: queries that must each return one row whose first value is true. They run
in read-only transactions (default_transaction_read_only) with a statement timeout, so an assertion
cannot change the copy it judges.
"""

from __future__ import annotations

import psycopg

from commands.pg.amcheck import run_amcheck
from commands.pg.tools import with_dbname
from commands.redact import redact
from commands.restore.verify import Check
from commands.units import human_duration

SMOKE_TIMEOUT_MS = 60_000


def deep_verify(dsn: str, dbname: str, smoke_sql: tuple[str, ...] | list[str], secrets: list[str] = ()) -> list[Check]:
    """pg_amcheck of database `dbname` on `dsn`'s server, then each assertion: one Check each."""
    amcheck = run_amcheck(dsn, dbname, secrets)
    checks = [Check("amcheck", amcheck.ok, f"{amcheck.detail} ({human_duration(amcheck.seconds)})")]
    return checks + run_assertions(with_dbname(dsn, dbname), smoke_sql, list(secrets) + [dsn])


def deep_verify_side(dsn: str, dbname: str, smoke_sql: tuple[str, ...] | list[str],
                     secrets: list[str] = ()) -> list[Check]:
    """The same before a swap, where the bot's role may not be a superuser: CREATE EXTENSION amcheck
    needs one (or the extension already in the backup, with EXECUTE granted). Without that, amcheck
    is said not to have run, in the report, and the assertions still decide; a drill, whose whole
    point is the proof, fails instead (`deep_verify`)."""
    if _can_run_amcheck(with_dbname(dsn, dbname)):
        return deep_verify(dsn, dbname, smoke_sql, secrets)
    skipped = Check("amcheck", True, "not run on the side database: the bot's role is not a superuser and amcheck "
                    "is not installed in it (a drill of this backup runs it)")
    return [skipped] + run_assertions(with_dbname(dsn, dbname), smoke_sql, list(secrets) + [dsn])


def _can_run_amcheck(db_dsn: str) -> bool:
    with psycopg.connect(db_dsn, autocommit=True, connect_timeout=10) as conn:
        return bool(conn.execute(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'amcheck') "
            "FROM pg_roles WHERE rolname = current_user").fetchone()[0])


def assertion_name(query: str) -> str:
    text = " ".join(query.split())
    return f"assertion `{text[:200] + '…' if len(text) > 200 else text}`"


def run_assertions(db_dsn: str, queries, secrets: list[str]) -> list[Check]:
    if not queries:
        return []
    checks = []
    options = f"-c default_transaction_read_only=on -c statement_timeout={SMOKE_TIMEOUT_MS}"
    try:
        conn = psycopg.connect(db_dsn, connect_timeout=10, application_name="backupbot", options=options)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip(), secrets)
        return [Check(assertion_name(q), False, f"could not connect: {reason}") for q in queries]
    with conn:
        for query in queries:
            try:
                cursor = conn.execute(query)
                row = cursor.fetchone() if cursor.description else None
                if row is None or not row:
                    ok, detail = False, "returned no row"
                elif row[0] is True:
                    ok, detail = True, "true"
                else:
                    ok, detail = False, f"returned {row[0]!r}, not true"
            except psycopg.Error as exc:
                ok, detail = False, redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                           secrets)
            finally:
                conn.rollback()
            checks.append(Check(assertion_name(query), ok, detail))
    return checks
