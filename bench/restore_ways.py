"""What a one-transaction restore costs against a parallel one, on bench/run.py's generated database.

    python bench/restore_ways.py --size 80      # an ~80 MB database; prints seconds per way (median of 2)

The archive is `pg_dump -Fc` of the generated database; each way restores it into a new database:
psql in one transaction (what a --tables restore and, before, every restore over a database did),
`pg_restore --single-transaction`, and `pg_restore --jobs N` (what the side database does).
Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import generate  # noqa: E402
from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.pg.tools import pg_bin, pg_env  # noqa: E402


def run(argv_lists: list[list[str]], env: dict) -> float:
    started = time.monotonic()
    procs, stdin = [], subprocess.DEVNULL
    for i, argv in enumerate(argv_lists):
        last = i == len(argv_lists) - 1
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL if last else subprocess.PIPE, env=env)
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        stdin = proc.stdout
        procs.append(proc)
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"failed: {argv_lists}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=80, help="MB of generated data")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with TemporaryCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        dsn = cluster.create_database("bench_ways")
        size = generate(dsn, args.size)
        archive = str(Path(tmp) / "bench.dump")
        subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", archive], env=pg_env(dsn), check=True)
        ways = {
            "psql, one transaction": lambda db: [[pg_bin("pg_restore"), "-f", "-", archive],
                                                 [pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                                                  "-d", db]],
            "pg_restore --single-transaction": lambda db: [[pg_bin("pg_restore"), "--single-transaction", "-d", db,
                                                            archive]],
            f"pg_restore --jobs {args.jobs}": lambda db: [[pg_bin("pg_restore"), f"--jobs={args.jobs}", "-d", db, archive]],
        }
        print(f"database {size / 1e6:.0f} MB, archive {Path(archive).stat().st_size / 1e6:.0f} MB")
        for n, (name, argv) in enumerate(ways.items()):
            seconds = []
            for attempt in range(2):
                db = f"way_{n}_{attempt}"
                cluster.create_database(db, template="template0")
                seconds.append(run(argv(db), pg_env(cluster.dsn(db))))
                cluster.drop_database(db)
            print(f"{name}: {statistics.median(seconds):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
