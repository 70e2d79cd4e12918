"""After a restore: row counts against the manifest, NOT VALID constraints, the app's health URL.

These are the checks people read in the report; the same counts and constraints are also checked
inside the restore's transaction, before COMMIT (commands.pg.restore.script.verification_sql).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from commands.pg import snapshot as pg_snapshot
from commands.pg.names import parse_key
from commands.pg.restore.script import not_valid_scope
from commands.redact import redact
from state.backups import BackupRecord


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def verify_restored(dsn: str, record: BackupRecord, tables: list[str], health_url: str | None,
                    fresh: bool = False) -> list[Check]:
    """Row counts equal the manifest's, NOT VALID constraints are the source's, the app answers 2xx.

    `fresh`: the database was made for this restore, so its statistics say how many rows the restore
    inserted; a table whose figure equals the manifest's is not read again, and every other is counted."""
    checks = []
    expected = {t: n for t, n in record.row_counts.items() if not tables or t in tables}
    with pg_snapshot.connect(dsn) as conn:
        try:
            names = {key: parse_key(key) for key in expected}
            loaded = pg_snapshot.loaded_rows(conn, list(names.values())) if fresh and names else {}
            trusted = {t: n for t, n in expected.items() if loaded.get(t) == n}
            actual = trusted | pg_snapshot.count_rows(conn, [names[t] for t in expected if t not in trusted])
            wrong = {t: (n, actual.get(t)) for t, n in expected.items() if actual.get(t) != n}
            how = (f" ({len(trusted)} by the restore's own inserts, {len(expected) - len(trusted)} counted)"
                   if fresh and expected else "")
            detail = (f"{len(expected)} tables, {sum(actual.values()):,} rows match the backup{how}" if not wrong else
                      "; ".join(f"{t}: {got} rows, backup had {want}" for t, (want, got) in sorted(wrong.items())[:5]))
            checks.append(Check("row counts", not wrong, detail))
        except Exception as exc:
            conn.rollback()
            checks.append(Check("row counts", False, redact(str(exc).strip(), [dsn])))
        constraints = set(pg_snapshot.not_valid_constraints(conn))
    recorded = set(record.not_valid_constraints)
    if tables:
        in_scope = not_valid_scope(tables)
        constraints = {c for c in constraints if c.startswith(in_scope)}
        recorded = {c for c in recorded if c.startswith(in_scope)}
    same = constraints == recorded
    checks.append(Check("NOT VALID constraints", same,
                        f"{len(recorded)} as in the source" if same else
                        f"expected {sorted(recorded) or 'none'}, found {sorted(constraints) or 'none'}"))
    if health_url:
        checks.append(check_health_url(health_url))
    return checks


def checks_text(checks: list[Check]) -> str:
    return "; ".join(f"{c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})" for c in checks)


def check_health_url(url: str, timeout: float = 10) -> Check:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Check("health URL", 200 <= response.status < 300, f"{url} answered {response.status}")
    except urllib.error.HTTPError as exc:
        return Check("health URL", False, f"{url} answered {exc.code}")
    except (OSError, ValueError) as exc:
        return Check("health URL", False, f"{url} did not answer: {type(exc).__name__}")


