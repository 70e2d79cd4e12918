"""backupbot against the runbook's own commands: backup and restore speed, memory, Slack acks.

    python bench/run.py                 # 100 MB and 1 GB databases (about 10-20 minutes on 2 cores)
    python bench/run.py --sizes 100     # only the 100 MB one
    python bench/run.py --sizes "" --many-tables 5000 --print-only   # only 5,000 small tables, results not written

Prints a markdown table and writes it to bench/results.md. Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.ack import ack_latencies  # noqa: E402  (also runs alone: python bench/ack.py)
from bench.goals import bot_drill, goal_table  # noqa: E402
from bench.sections import quote_in_readme, write_results  # noqa: E402
from bench.server_reads import generate_many_tables, read_rows  # noqa: E402
from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.pg.tools import pg_bin, pg_env, tool_version  # noqa: E402

WORDS = ("order shipped cart checkout refund coupon newsletter signup login logout search product view click "
         "purchase campaign template notification email push sms invoice payment failed retry success").split()


TABLES = ("events", "page_views", "orders", "audit_log")


def generate(dsn: str, target_mb: int) -> int:
    """An application's tables (four of them, filled in turn) with realistic rows: ids, foreign keys,
    timestamps, words from a vocabulary, md5 noise and JSON, until the database reaches the size."""
    vocab = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    n = len(WORDS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL)")
        conn.execute("INSERT INTO users SELECT g, 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 100000) g")
        for table in TABLES:
            conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users, "
                         "kind text NOT NULL, body text NOT NULL, props jsonb NOT NULL, created_at timestamptz NOT NULL)")
        batch = 0
        while conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] < target_mb * 1024 * 1024:
            table = TABLES[batch % len(TABLES)]
            conn.execute(
                f"INSERT INTO {table} (user_id, kind, body, props, created_at) "
                f"SELECT 1 + (g * 7919) % 100000, ({vocab})[1 + g % {n}], "
                f"({vocab})[1 + (g / 3) % {n}] || ' ' || ({vocab})[1 + (g / 7) % {n}] || ' ' || "
                f"substr(md5(g::text), 1, 12) || ' ' || ({vocab})[1 + (g / 11) % {n}], "
                f"jsonb_build_object('page', '/p/' || (g % 500), 'ms', g % 900, 'ok', g % 7 <> 0), "
                f"timestamptz '2026-01-01' + g * interval '1 second' "
                f"FROM generate_series({batch * 100000 + 1}::bigint, {(batch + 1) * 100000}) g")
            batch += 1
        for table in TABLES:
            conn.execute(f"CREATE INDEX {table}_user_idx ON {table} (user_id)")
        conn.execute("VACUUM ANALYZE")
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def timed(pipeline: list[list[str]], env: dict, out_path: str | None) -> tuple[float, int]:
    """Run argv lists as a pipeline into out_path (or /dev/null); return (seconds, bytes written)."""
    started = time.monotonic()
    with open(out_path or os.devnull, "wb") as out:
        procs = []
        stdin = subprocess.DEVNULL
        for i, argv in enumerate(pipeline):
            last = i == len(pipeline) - 1
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out if last else subprocess.PIPE, env=env)
            if stdin is not subprocess.DEVNULL:
                stdin.close()
            stdin = proc.stdout
            procs.append(proc)
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"{pipeline} failed")
    return time.monotonic() - started, (os.path.getsize(out_path) if out_path else 0)


def median_of(runs: int, fn):
    """The run with the median time: this machine's disk makes single runs vary by ±15%."""
    results = sorted((fn() for _ in range(runs)), key=lambda r: r[0] if isinstance(r, tuple) else r["seconds"])
    return results[len(results) // 2]


def timed_synced(pipeline, env, out_path) -> tuple[float, int]:
    started = time.monotonic()
    _, size = timed(pipeline, env, out_path)
    fd = os.open(out_path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.monotonic() - started, size


def bot_backup(dsn: str, fmt: str, workdir: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.backup_child", dsn, fmt, workdir], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def bot_restore(dsn: str, workdir: str, backup_id: int, jobs: int, target: str) -> float:
    from commands.pg.restore.artifact import fetch_artifact
    from commands.pg.restore.databases import create_database
    from commands.pg.restore.runner import run_restore
    from commands.storage.local import LocalStorage
    from state import Store
    from state.backups import get_backup

    record = get_backup(Store(f"{workdir}/state.db"), backup_id)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        artifact = fetch_artifact(LocalStorage(f"{workdir}/backups"), record, Path(scratch))
        create_database(dsn, target)
        run_restore(dsn, target, record, artifact, Path(scratch), jobs=jobs)
    return time.monotonic() - started


def bench_size(cluster: TemporaryCluster, size_mb: int, rows: list, goals: dict) -> dict:
    name = f"bench_{size_mb}mb"
    dsn = cluster.create_database(name)
    print(f"generating a {size_mb} MB database…", flush=True)
    actual = generate(dsn, size_mb)
    env = pg_env(dsn)
    pg_dump = pg_bin("pg_dump")
    label = f"{actual / 1024 / 1024:.0f} MB"
    with tempfile.TemporaryDirectory(prefix="backupbot-bench-") as tmp:
        print("runbook commands…", flush=True)
        plain_s, plain_size = median_of(3, lambda: timed([[pg_dump]], env, f"{tmp}/raw.sql"))
        synced_s, _ = median_of(3, lambda: timed_synced([[pg_dump]], env, f"{tmp}/raw-synced.sql"))
        gzip_s, gzip_size = median_of(3, lambda: timed([[pg_dump], ["gzip"]], env, f"{tmp}/raw.sql.gz"))
        fc_s, fc_size = median_of(3, lambda: timed([[pg_dump, "-Fc"]], env, f"{tmp}/raw.dump"))
        limit_s, _ = median_of(3, lambda: timed([[pg_dump, "-Fc", "-Z0"]], env, None))
        os.unlink(f"{tmp}/raw-synced.sql")
        print("bot backups…", flush=True)
        bot = {fmt: median_of(3, lambda fmt=fmt: bot_backup(dsn, fmt, tmp)) for fmt in ("plain", "gzip", "custom")}

        def row(what, seconds, size, base_s, base_size, target=None, met=None):
            rows.append((label, what, f"{seconds / base_s:.2f}x", f"{size / base_size:.2f}x" if size else "",
                         f"{seconds:.1f}s", f"{size / 1024 / 1024:.1f} MB" if size else "", target or "",
                         "" if met is None else ("met" if met else "**MISSED**")))

        row("`pg_dump > f`", plain_s, plain_size, plain_s, plain_size)
        row("`pg_dump > f` then fsync (stored durably, as the bot does)", synced_s, plain_size, plain_s, plain_size)
        row("bot `--format plain`", bot["plain"]["seconds"], bot["plain"]["size"], plain_s, plain_size,
            "≤ 1.05x time", bot["plain"]["seconds"] <= 1.05 * plain_s)
        row("`pg_dump | gzip > f`", gzip_s, gzip_size, gzip_s, gzip_size)
        row("bot `--format gzip`", bot["gzip"]["seconds"], bot["gzip"]["size"], gzip_s, gzip_size,
            "≤ 1.05x time", bot["gzip"]["seconds"] <= 1.05 * gzip_s)
        row("bot default (custom, zstd)", bot["custom"]["seconds"], bot["custom"]["size"], gzip_s, gzip_size,
            "≤ 0.5x time, ≤ 1.1x size of gzip",
            bot["custom"]["seconds"] <= 0.5 * gzip_s and bot["custom"]["size"] <= 1.1 * gzip_size)
        row("`pg_dump -Fc > f`", fc_s, fc_size, fc_s, fc_size)
        row("bot `--format custom`", bot["custom"]["seconds"], bot["custom"]["size"], fc_s, fc_size,
            "≤ 1.05x time", bot["custom"]["seconds"] <= 1.05 * fc_s)
        row("limit `pg_dump -Fc -Z0 > /dev/null`", limit_s, 0, limit_s, 1)
        goals["gzip"] = (bot["custom"]["seconds"] / gzip_s, label)
        goals["limit"] = (bot["custom"]["seconds"] / limit_s, label)
        goals["rows"], goals["buffers"] = (
            (ratio, label) for ratio in read_rows(label, dsn, lambda: timed([[pg_dump, "-Fc"]], env, None),
                                                  lambda: bot_backup(dsn, "custom", tmp), rows))

        print("drills…", flush=True)
        drill_rows(cluster, name, dsn, tmp, label, rows, goals)
        print("restores…", flush=True)
        psql_s, _ = _restore_with(cluster, [[pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-f", f"{tmp}/raw.sql"]],
                                  f"{name}_psql")
        pgr_s, _ = _restore_with(cluster, [[pg_bin("pg_restore"), "--exit-on-error", f"{tmp}/raw.dump"]], f"{name}_pgr",
                                 dbname_flag=True)
        bot_s = bot_restore(dsn, tmp, bot["custom"]["backup_id"], 2, f"{name}_bot")
        row("`psql < backup.sql`", psql_s, 0, psql_s, 1)
        row("`pg_restore -d` (from -Fc)", pgr_s, 0, psql_s, 1)
        row("bot restore custom `--jobs 2`", bot_s, 0, psql_s, 1, "≤ 0.7x psql", bot_s <= 0.7 * psql_s)
        return {"rss": max(b["max_rss_mb"] for b in bot.values()), "dsn": dsn, "label": label}


def drill_rows(cluster: TemporaryCluster, name: str, dsn: str, tmp: str, label: str, rows: list, goals: dict) -> None:
    """The bot's drill of its newest backup (custom, zstd) against the runbook's restore of the same bytes:
    `zstd -dc | pg_restore` into a new database, and `pg_restore -j2` of a local `pg_dump -Fc` file."""
    from state import Store
    from state.backups import latest_backup

    record = latest_backup(Store(f"{tmp}/state.db"), "main")
    stored = f"{tmp}/backups/{record.key}"
    runs = iter(range(1000))

    def into_new(pipeline_of):
        db = f"{name}_r{next(runs)}"
        cluster.create_database(db)
        try:
            return timed(pipeline_of(db), pg_env(cluster.dsn(db)), None)
        finally:
            _drop(cluster, db)

    pg_restore = pg_bin("pg_restore")
    bare_s, _ = median_of(3, lambda: into_new(lambda db: [["zstd", "-dcq", stored],
                                                          [pg_restore, "--exit-on-error", f"--dbname={db}"]]))
    j2_s, _ = median_of(3, lambda: into_new(lambda db: [[pg_restore, "--exit-on-error", "-j2", f"--dbname={db}",
                                                         f"{tmp}/raw.dump"]]))
    drill = median_of(3, lambda: bot_drill(dsn, tmp))
    rows.append((label, "`zstd -dc backup | pg_restore -d new`", "1.00x", "", f"{bare_s:.1f}s", "", "", ""))
    rows.append((label, "`pg_restore -j2 -d new` of a local `-Fc` file", f"{j2_s / bare_s:.2f}x", "", f"{j2_s:.1f}s",
                 "", "", ""))
    rows.append((label, "bot drill end to end (fetch, sha256, decompress, restore, verify, drop)",
                 f"{drill['seconds'] / bare_s:.2f}x", "", f"{drill['seconds']:.1f}s", "", "≤ 1.05x bare",
                 "met" if drill["seconds"] <= 1.05 * bare_s else "**MISSED**"))
    goals["drill_bare"] = (drill["seconds"] / bare_s, label)
    goals["drill_j2"] = (drill["seconds"] / j2_s, label)


def _drop(cluster: TemporaryCluster, db: str) -> None:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def bench_many_tables(cluster: TemporaryCluster, count: int, rows: list, goals: dict) -> None:
    """The fixed cost per table: a database of `count` small tables, bot backup against `pg_dump -Fc`."""
    dsn = cluster.create_database(f"bench_{count}_tables")
    print(f"generating {count:,} small tables…", flush=True)
    generate_many_tables(dsn, count)
    env, pg_dump, label = pg_env(dsn), pg_bin("pg_dump"), f"{count:,} small tables"
    with tempfile.TemporaryDirectory(prefix="backupbot-bench-") as tmp:
        fc_s, fc_size = median_of(3, lambda: timed([[pg_dump, "-Fc"]], env, f"{tmp}/raw.dump"))
        bot = median_of(3, lambda: bot_backup(dsn, "custom", tmp))
        rows.append((label, "`pg_dump -Fc > f`", "1.00x", "1.00x", f"{fc_s:.1f}s", f"{fc_size / 1024 / 1024:.1f} MB", "", ""))
        rows.append((label, "bot `--format custom`", f"{bot['seconds'] / fc_s:.2f}x", f"{bot['size'] / fc_size:.2f}x",
                     f"{bot['seconds']:.1f}s", f"{bot['size'] / 1024 / 1024:.1f} MB", "≤ 1.2x time",
                     "met" if bot["seconds"] <= 1.2 * fc_s else "**MISSED**"))
        goals["tables"] = (bot["seconds"] / fc_s, label)
        read_rows(label, dsn, lambda: timed([[pg_dump, "-Fc"]], env, None), lambda: bot_backup(dsn, "custom", tmp), rows)


def _restore_with(cluster, pipeline, dbname, dbname_flag=False):
    cluster.create_database(dbname)
    env = pg_env(cluster.dsn(dbname))
    if dbname_flag:
        pipeline = [pipeline[0][:1] + [f"--dbname={dbname}"] + pipeline[0][1:]]
    return timed(pipeline, env, None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000", help="database sizes in MB, comma separated (\"\": none)")
    parser.add_argument("--many-tables", type=int, default=5000, help="a database of this many small tables (0: none)")
    parser.add_argument("--print-only", action="store_true", help="print the table; leave results.md and README alone")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows: list = []
    goals: dict = {}
    rss = {}
    with TemporaryCluster() as cluster:
        for size in sizes:
            result = bench_size(cluster, size, rows, goals)
            rss[result["label"]] = result["rss"]
        if args.many_tables:
            bench_many_tables(cluster, args.many_tables, rows, goals)
        p50 = p99 = None
        if sizes:
            print("acknowledgement latency…", flush=True)
            with tempfile.TemporaryDirectory(prefix="backupbot-ack-") as tmp:
                p50, p99 = ack_latencies(result["dsn"], tmp)
    version = tool_version("pg_dump")
    lines = [
        f"# backupbot bench — {os.cpu_count()} cores, PostgreSQL {version}, Python {platform.python_version()}",
        "",
        "The goals, each measured in this run against the runbook's command on the same database (the largest",
        "size measured wins a row measured at several sizes):",
        "",
        *goal_table(goals),
        "",
        "Every row, ratios first (against the runbook command above each bot row), absolute figures beside them.",
        "",
        "| database | what | time ratio | size ratio | time | size | target | verdict |",
        "|---|---|---:|---:|---:|---:|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        "| measure | figure | target | verdict |",
        "|---|---:|---|---|",
    ]
    rss_values = list(rss.values())
    for label, value in rss.items():
        lines.append(f"| peak RSS of the bot process, backup of the {label} database | {value:.0f} MB | ≤ 100 MB | "
                     f"{'met' if value <= 100 else '**MISSED**'} |")
    if len(rss_values) > 1:
        flat = max(rss_values) - min(rss_values) <= 10
        lines.append(f"| RSS difference between sizes | {max(rss_values) - min(rss_values):.0f} MB | flat (≤ 10 MB) | "
                     f"{'met' if flat else '**MISSED**'} |")
    if p99 is not None:
        lines.append(f"| ack latency p50 / p99, 50 concurrent signed commands during a backup | {p50 * 1000:.0f} ms / "
                     f"{p99 * 1000:.0f} ms | p99 ≤ 300 ms | {'met' if p99 <= 0.3 else '**MISSED**'} |")
    lines += ["", "Rerun: `python bench/run.py` (or `--sizes 100` for a quick run)."]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.print_only:
        return 0
    write_results("logical", table)  # bench/results.md: this block only, physical.py and encryption.py keep theirs
    quote_in_readme("bench", table)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
