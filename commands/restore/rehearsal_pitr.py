"""A DR rehearsal of a pgBackRest database: the whole cluster brought back to a random recent moment.

Restoring always to the end of the newest backup set proves that set only; an incident asks for some
moment in between. So the rehearsal picks one at random between the end of the newest backup set and
now (WAL is switched first, as a point-in-time request does, so the moment is archived), restores
into a new data directory on a free port (commands/restore/pitr.py's restore_cluster), checks it as a
physical drill does (verify_cluster), runs the application's checks against it, and removes it.
"""

from __future__ import annotations

import random
import shutil
import time
from datetime import datetime, timedelta

from commands.backup.physical import engine_config
from commands.chat.context import Services
from commands.errors import BackupbotError
from commands.pg import scratch
from commands.pg import snapshot as pg_snapshot
from commands.pg.pgbackrest.archiver import time_reachable
from commands.pg.pgbackrest.backups import info as pgbackrest_info
from commands.restore.app_checks import run_verify_command
from commands.restore.pitr import restore_cluster, verify_cluster
from commands.restore.plans import PointInTimePlan
from state.physical_backups import get_physical_backup_by_label
from state.store import iso


def server_now(dsn: str) -> datetime:
    with pg_snapshot.connect(dsn) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def _after_newest_set(cfg, dsn: str, limit: float = 5.0) -> datetime:
    """The server's now, once it is past the newest backup set's end by the second of margin that
    info's whole-second stop times need: a rehearsal right after a backup rehearses that backup."""
    newest = max((b.stopped for b in pgbackrest_info(cfg) if not b.error), default=None)
    deadline = time.monotonic() + limit
    while True:
        now = server_now(dsn)
        if newest is None or now >= newest + timedelta(seconds=1.5) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def rehearse_physical(services: Services, database: str, run, progress, pick=random.uniform):
    """Restore the cluster to a random moment since the newest backup set ended; returns the physical
    backup's catalog id (or None) and where it ran. `pick(low, high)` chooses the moment (epoch seconds)."""
    cfg = engine_config(services.settings, database)
    dsn = services.settings.database(database).require_url()
    before_switch = _after_newest_set(cfg, dsn)
    newest = time_reachable(cfg, before_switch, dsn=dsn, switch=True)  # switches WAL: now is archived
    if newest.backup is None or newest.latest is None:
        raise BackupbotError(f"{database} has no physical backup to rehearse: {newest.reason}")
    # no later than the switch's marker commit: recovery stops only at a commit newer than its target,
    # and the segment's archive time comes after the last commit in it
    low, high = newest.backup.stopped.timestamp() + 1, min(newest.latest, before_switch).timestamp()
    moment = datetime.fromtimestamp(pick(low, max(low, high)), newest.latest.tzinfo)
    reach = time_reachable(cfg, moment, dsn=dsn, switch=False)
    if not reach.reachable:
        raise BackupbotError(f"the moment {moment.isoformat()} cannot be reached: {reach.reason}")
    record = get_physical_backup_by_label(services.store, database, reach.backup.label)
    progress.add("backup", True, f"backup set {reach.backup.label}, replayed to a random recent moment, "
                 f"{moment.isoformat()} ({reach.reason})")
    datadir = scratch.job_path(services.settings, "rehearsal", database)
    plan = PointInTimePlan(database=database, stanza=cfg.stanza, target_time=moment.isoformat(),
                           backup_label=reach.backup.label, backup_stopped=reach.backup.stopped.isoformat(),
                           wal_range=reach.backup.wal_range, reachable=reach.reason, lock_key="",
                           requested_by=run.actor.user, requested_at=iso(services.clock()), datadir=str(datadir))
    restored = None
    try:
        restored = restore_cluster(services, plan, datadir)
        where = f"a new cluster (pgBackRest restore) on port {restored.port}"
        progress.add("server", True, f"restored into {datadir}, started on 127.0.0.1:{restored.port}")
        progress.add("verification", True, verify_cluster(restored, dsn))
        command = services.settings.database(database).verify_command
        if command:
            outcome = run_verify_command(command, restored.dsn(_dbname(dsn)), run.secrets)
            progress.add("application checks", outcome.ok, outcome.detail)
        else:
            progress.add("application checks", True, f"none configured ([databases.{database}] verify_command)")
        progress.add("age identity", True, "not used: pgBackRest's repository is not encrypted with age")
        return (record.id if record else None), where, moment
    finally:
        if restored is not None:
            restored.stop_and_remove()
        shutil.rmtree(datadir, ignore_errors=True)


def _dbname(dsn: str) -> str:
    return pg_snapshot.dbname_of(dsn)
