"""Where a drill's time goes, phase by phase, against `pg_restore -j2 -d new` of a local `-Fc` file.

    python bench/drill_phases.py --size 1000 --runs 3

Fills a database with bench/run.py's generator, writes `pg_dump -Fc` to a file, takes one bot backup
(custom, zstd), then alternates: the bare `pg_restore -j2` into a new database, and a drill
(`/backup verify latest`) in this process with each of its steps timed (the drill module's own
functions wrapped, nothing else changed). Also times `pg_restore -j2` of the bot's fetched archive
itself, so an archive's own layout is told apart from what the bot adds around it. Prints medians.
Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import commands.restore.deep_verify as deep_verify  # noqa: E402
import commands.restore.drill as drill  # noqa: E402
from bench.backup_child import QuietReply  # noqa: E402
from bench.run import generate  # noqa: E402
from commands.backup.command import BackupRequest, execute_backup  # noqa: E402
from commands.chat.context import Actor, build_services  # noqa: E402
from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.pg.tools import pg_bin, pg_env  # noqa: E402
from commands.settings import parse_settings  # noqa: E402

PHASES = {drill: ("find_backup", "check_provenance", "fetch_artifact", "create_database", "run_restore",
                  "release_subscriptions", "verify_restored", "drop_subscriptions_of", "drop_database"),
          deep_verify: ("run_amcheck", "run_assertions")}


def instrument(times: dict[str, float]) -> None:
    for module, names in PHASES.items():
        for name in names:
            original = getattr(module, name)

            def timed(*a, _original=original, _name=name, **kw):
                started = time.monotonic()
                try:
                    return _original(*a, **kw)
                finally:
                    times[_name] = times.get(_name, 0.0) + time.monotonic() - started
            setattr(module, name, timed)


def bare(cluster: TemporaryCluster, argv_of, db: str) -> float:
    cluster.create_database(db, template="template0")
    started = time.monotonic()
    subprocess.run(argv_of(db), check=True, env=pg_env(cluster.dsn(db)), stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    cluster.drop_database(db)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with TemporaryCluster() as cluster, tempfile.TemporaryDirectory(prefix="backupbot-bench-phases-") as tmp:
        dsn = cluster.create_database("bench_phases")
        print(f"generating a {args.size} MB database…", flush=True)
        generate(dsn, args.size)
        local = f"{tmp}/raw.dump"
        subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", local], check=True, env=pg_env(dsn))
        local_z0 = f"{tmp}/raw-z0.dump"
        subprocess.run([pg_bin("pg_dump"), "-Fc", "-Z0", "-f", local_z0], check=True, env=pg_env(dsn))
        settings = parse_settings({"state": {"path": f"{tmp}/state.db"}, "storage": {"url": f"file://{tmp}/backups"}},
                                  {"DATABASE_URL": dsn})
        services = build_services(settings, progress_every=3600)
        status = execute_backup(services, BackupRequest(database="main", format="custom"), Actor("UBENCH"), QuietReply())
        if status.state != "succeeded":
            raise RuntimeError(status.error)
        from commands.pg.restore.artifact import fetch_artifact
        fetched = fetch_artifact(services.storage, status.record, Path(tmp)).path
        times: dict[str, float] = {}
        instrument(times)
        phases: dict[str, list[float]] = defaultdict(list)
        pg_restore = pg_bin("pg_restore")
        for run in range(args.runs):
            phases["bare pg_restore -j2 of the local -Fc file"].append(
                bare(cluster, lambda db: [pg_restore, "--exit-on-error", "-j2", f"--dbname={db}", local], f"bare_{run}"))
            phases["pg_restore -j2 of the bot's fetched archive"].append(
                bare(cluster, lambda db: [pg_restore, "--exit-on-error", "-j2", f"--dbname={db}", str(fetched)],
                     f"fetched_{run}"))
            phases["pg_restore -j2 of a local -Fc -Z0 file"].append(
                bare(cluster, lambda db: [pg_restore, "--exit-on-error", "-j2", f"--dbname={db}", local_z0],
                     f"z0_{run}"))
            times.clear()
            started = time.monotonic()
            result = drill.execute_verify(services, drill.parse_verify("latest", services), Actor("UBENCH"),
                                          QuietReply())
            total = time.monotonic() - started
            if not result.ok:
                raise RuntimeError(result.text())
            phases["drill end to end"].append(total)
            for name, seconds in times.items():
                phases[f"  {name}"].append(seconds)
            phases["  (rest: Run bookkeeping, receipt)"].append(total - sum(times.values()))
            print(f"run {run + 1}: bare {phases['bare pg_restore -j2 of the local -Fc file'][-1]:.2f}s, "
                  f"drill {total:.2f}s " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()), flush=True)
    base = statistics.median(phases["bare pg_restore -j2 of the local -Fc file"])
    print(f"\n| phase (median of {args.runs}) | seconds | vs bare |\n|---|---:|---:|")
    for name, values in phases.items():
        print(f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
