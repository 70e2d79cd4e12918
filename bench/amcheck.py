"""What pg_amcheck adds to a drill: drills of one backup with and without the amcheck step.

    python bench/amcheck.py              # ~100 MB database, median of 3
    python bench/amcheck.py --size 50 --runs 3

Fills a database as bench/run.py does, takes one bot backup (custom format), then runs drills
(`/backup verify latest`: fetch, restore into a scratch database, row counts, NOT VALID constraints,
pg_amcheck with --heapallindexed, drop) in this process, alternating runs with the amcheck step and
runs where it is replaced by a no-op, so the disk's ups and downs fall on both. Prints the median
drill times, the amcheck step's own time and the ratio, and writes them into bench/results.md (its
own block). Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import commands.restore.deep_verify as deep_verify  # noqa: E402
from bench.backup_child import QuietReply  # noqa: E402
from bench.run import generate  # noqa: E402
from bench.sections import write_results  # noqa: E402
from commands.backup.command import BackupRequest, execute_backup  # noqa: E402
from commands.chat.context import Actor, build_services  # noqa: E402
from commands.pg.amcheck import AmcheckResult, run_amcheck  # noqa: E402
from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.pg.tools import tool_version  # noqa: E402
from commands.restore.drill import execute_verify, parse_verify  # noqa: E402
from commands.settings import parse_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100, help="database size in MB")
    parser.add_argument("--runs", type=int, default=3, help="drills per setup (the median is shown)")
    args = parser.parse_args()
    amcheck_seconds: list[float] = []

    def timed_amcheck(*a, **kw) -> AmcheckResult:
        result = run_amcheck(*a, **kw)
        amcheck_seconds.append(result.seconds)
        return result

    def no_amcheck(*a, **kw) -> AmcheckResult:
        return AmcheckResult(True, "skipped by the bench", 0.0)

    with TemporaryCluster() as cluster, tempfile.TemporaryDirectory(prefix="backupbot-bench-amcheck-") as tmp:
        dsn = cluster.create_database("bench_amcheck")
        print(f"generating a {args.size} MB database…", flush=True)
        actual = generate(dsn, args.size)
        settings = parse_settings({"state": {"path": f"{tmp}/state.db"}, "storage": {"url": f"file://{tmp}/backups"}},
                                  {"DATABASE_URL": dsn})
        services = build_services(settings, progress_every=3600)
        status = execute_backup(services, BackupRequest(database="main", format="custom"), Actor("UBENCH"), QuietReply())
        if status.state != "succeeded":
            raise RuntimeError(status.error)
        checked = "?"  # "N tables and M B-tree indexes, heap and --heapallindexed", from the receipt
        drills: dict[str, list[float]] = {"without": [], "with": []}
        restores: dict[str, list[float]] = {"without": [], "with": []}
        for run in range(args.runs):
            for name, step in (("without", no_amcheck), ("with", timed_amcheck)):
                deep_verify.run_amcheck = step
                started = time.monotonic()
                drill = execute_verify(services, parse_verify("latest", services), Actor("UBENCH"), QuietReply())
                drills[name].append(time.monotonic() - started)
                restores[name].append(drill.seconds)
                checked = next((c.detail.split(":")[0] for c in drill.checks if c.name == "amcheck" and c.ok), checked)
                if not drill.ok:
                    raise RuntimeError(drill.text())
                print(f"run {run + 1} {name} amcheck: {drills[name][-1]:.2f}s", flush=True)
        deep_verify.run_amcheck = run_amcheck

    without, with_ = statistics.median(drills["without"]), statistics.median(drills["with"])
    check, restore = statistics.median(amcheck_seconds), statistics.median(restores["with"])
    lines = [
        f"## pg_amcheck in a drill — {os.cpu_count()} cores, PostgreSQL {tool_version('pg_dump')}, "
        f"Python {platform.python_version()}",
        "",
        f"Database {actual / 1024 / 1024:.1f} MB (bench/run.py's generator), backup {status.record.size / 1024 / 1024:.1f} MB "
        f"custom; drills (`/backup verify latest`) with and without the pg_amcheck step ({checked}), alternating, "
        f"median of {args.runs} each. The machine is shared, so whole drills are noisy; the amcheck step's own time "
        "against the drill without it is the steadier figure.",
        "",
        "| measure | time |",
        "|---|---:|",
        f"| drill without amcheck | {without:.2f}s |",
        f"| drill with amcheck | {with_:.2f}s |",
        f"| of which pg_amcheck (installing and dropping the extension included) | {check:.2f}s |",
        f"| restore alone (the RTO the receipt records) | {restore:.2f}s |",
        f"| **drill with / without** | **{with_ / without:.2f}x** |",
        f"| pg_amcheck step / drill without | {check / without:.0%} |",
        "",
        f"Rerun: `python bench/amcheck.py --size {args.size} --runs {args.runs}`",
    ]
    body = "\n".join(lines)
    print(body)
    write_results("amcheck", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
