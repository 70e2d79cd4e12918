"""Physical backups (pgBackRest) next to `pg_dump -Fc` on the same generated database.

    python bench/physical.py              # ~100 MB database
    python bench/physical.py --size 500

Starts a throwaway cluster that archives WAL into a pgBackRest repository, fills a database as
bench/run.py does, then times `pg_dump -Fc > f`, a full pgBackRest backup, an incremental one after
about 1% new rows, and a restore of the latest backup into a new data directory.
Prints a markdown table and writes it into bench/results.md (its own block; the others stay) and into
the README's block of the same name. Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.run import TABLES, generate, median_of, timed  # noqa: E402
from bench.sections import quote_in_readme, write_results  # noqa: E402
from commands.pg.pgbackrest.archiver import force_archive  # noqa: E402
from commands.pg.pgbackrest.backups import PhysicalBackup, backup  # noqa: E402
from commands.pg.pgbackrest.config import write_config  # noqa: E402
from commands.pg.pgbackrest.restored_cluster import restore_to_new_datadir  # noqa: E402
from commands.pg.pgbackrest.runner import version  # noqa: E402
from commands.pg.tools import pg_bin, pg_env, tool_version  # noqa: E402
from tests.fix_pgbackrest import _private_dir, start_archiving_cluster  # noqa: E402


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def _append_rows(dsn: str, fraction: float = 0.01) -> None:
    """New rows in one table, about `fraction` of all rows: the usual day of an application."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        total = sum(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES)
        conn.execute(f"INSERT INTO {TABLES[0]} (user_id, kind, body, props, created_at) "
                     "SELECT 1 + g %% 100000, 'late', md5(g::text), '{}'::jsonb, now() "
                     "FROM generate_series(1, %s) g", [int(total * fraction)])


def _timed_backup(cfg, kind: str) -> tuple[float, PhysicalBackup]:
    started = time.monotonic()
    made = backup(cfg, kind)
    return time.monotonic() - started, made


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100, help="database size in MB")
    parser.add_argument("--process-max", type=int, default=1, help="pgBackRest compress/transfer processes")
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (the median is shown)")
    args = parser.parse_args()

    workdir = _private_dir("backupbot-bench-pgbr-")
    cluster = None
    try:
        cluster, cfg = start_archiving_cluster(workdir, retention_full=args.runs + 1)
        if args.process_max != 1:
            cfg = dataclasses.replace(cfg, process_max=args.process_max)
            cfg = cfg.with_config(write_config(cfg, Path(cfg.config_path).parent))
        dsn = cluster.create_database("bench_physical")
        print(f"generating a {args.size} MB database…", flush=True)
        actual = generate(dsn, args.size)
        with psycopg.connect(cluster.dsn()) as conn:
            cluster_size = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0]
        force_archive(cluster.dsn())

        print("pg_dump -Fc…", flush=True)
        with tempfile.TemporaryDirectory(prefix="backupbot-bench-") as tmp:
            dump_s, dump_size = median_of(args.runs, lambda: timed([[pg_bin("pg_dump"), "-Fc"]], pg_env(dsn),
                                                                   f"{tmp}/bench.dump"))
        print("pgbackrest full…", flush=True)
        full_s, full = median_of(args.runs, lambda: _timed_backup(cfg, "full"))

        def incremental():
            _append_rows(dsn)
            return _timed_backup(cfg, "incr")

        print("pgbackrest incr…", flush=True)
        incr_s, incr = median_of(args.runs, incremental)

        print("restore into a new data directory…", flush=True)
        started = time.monotonic()
        restored = restore_to_new_datadir(cfg, None, None, workdir / "restored", None)
        restore_s = time.monotonic() - started
        restored.stop_and_remove()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("`pg_dump -Fc > f` (one database)", dump_s, dump_size, "logical, gzip level 6"),
        ("pgBackRest full backup (whole cluster)", full_s, full.repo_size,
         f"copies {_mb(full.delta)}, {cfg.compress_type} in the repository"),
        (f"pgBackRest incremental after ~1% new rows in `{TABLES[0]}`", incr_s, incr.repo_delta,
         f"copies {_mb(incr.delta)} of {_mb(incr.size)} (changed files whole)"),
    ]
    lines = [
        f"## Physical (pgBackRest) next to logical — {os.cpu_count()} cores, PostgreSQL {tool_version('pg_dump')}, "
        f"pgBackRest {version()}, Python {platform.python_version()}",
        "",
        f"Database {_mb(actual)} (cluster {_mb(cluster_size)}); median of {args.runs} runs; "
        f"pgBackRest process-max {cfg.process_max}.",
        "",
        "| what | time | vs pg_dump | stored | note |",
        "|---|---:|---:|---:|---|",
        *[f"| {what} | {s:.1f}s | {s / dump_s:.2f}x | {_mb(size)} | {note} |" for what, s, size, note in rows],
        f"| restore latest into a new data directory, started and promoted | {restore_s:.1f}s | | | RTO |",
        "",
        "Rerun: `python bench/physical.py` (`--size MB`, `--runs N`, `--process-max N`).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    write_results("physical", table)
    quote_in_readme("physical", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
