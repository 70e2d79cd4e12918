"""Where a drill's time goes, phase by phase, against `pg_restore -j2 -d new` of a local `-Fc` file.

    python bench/drill_phases.py --size 1000 --runs 3
    python bench/drill_phases.py --size 1000 --runs 3 --before /path/to/older/tree   # before/after

Fills a database with bench/run.py's generator, writes `pg_dump -Fc` to a file, takes one bot backup
(custom, zstd), then alternates: the bare `pg_restore -j2` into a new database, and a drill
(`/backup verify latest`) in a fresh process with each of its steps timed (the drill module's own
functions wrapped, nothing else changed). With --before, a drill by another source tree (an older
commit, e.g. from `git archive`) runs in turn with this one's, on the same backup. Prints medians.
Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHASES = {"commands.restore.drill": ("fetch_artifact", "create_database", "run_restore", "release_subscriptions",
                                     "verify_restored", "drop_subscriptions_of", "drop_database"),
          "commands.restore.deep_verify": ("run_amcheck", "run_assertions")}


def child(dsn: str, workdir: str) -> None:
    """One drill in this process, each step timed; prints JSON."""
    import importlib

    from bench.backup_child import QuietReply
    from commands.chat.context import Actor, build_services
    from commands.settings import parse_settings

    times: dict[str, float] = {}
    for module_name, names in PHASES.items():
        module = importlib.import_module(module_name)
        for name in names:
            original = getattr(module, name)

            def timed(*a, _original=original, _name=name, **kw):
                started = time.monotonic()
                try:
                    return _original(*a, **kw)
                finally:
                    times[_name] = times.get(_name, 0.0) + time.monotonic() - started
            setattr(module, name, timed)
    drill = importlib.import_module("commands.restore.drill")
    settings = parse_settings({"state": {"path": f"{workdir}/state.db"}, "storage": {"url": f"file://{workdir}/backups"}},
                              {"DATABASE_URL": dsn})
    services = build_services(settings, progress_every=3600)
    started = time.monotonic()
    result = drill.execute_verify(services, drill.parse_verify("latest", services), Actor("UBENCH"), QuietReply())
    total = time.monotonic() - started
    if not result.ok:
        raise SystemExit(result.text())
    times["rest (Run bookkeeping, receipt)"] = total - sum(times.values())
    print(json.dumps({"drill end to end": total, **times}))


def drill_in(tree: Path, dsn: str, workdir: str) -> dict[str, float]:
    script = tree / "bench" / "drill_phases.py"
    if not script.exists():  # an older tree: this script, run with that tree's code
        script = tree / "bench" / "_drill_phases_child.py"
        script.write_text(Path(__file__).read_text())
    out = subprocess.run([sys.executable, str(script), "--child", dsn, workdir], capture_output=True, text=True,
                         cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree whose drill runs in turn with this one's")
    parser.add_argument("--child", nargs=2, metavar=("DSN", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from bench.backup_child import QuietReply
    from bench.run import generate
    from commands.backup.command import BackupRequest, execute_backup
    from commands.chat.context import Actor, build_services
    from commands.pg.cluster import TemporaryCluster
    from commands.pg.tools import pg_bin, pg_env
    from commands.settings import parse_settings

    trees = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    with TemporaryCluster() as cluster, tempfile.TemporaryDirectory(prefix="backupbot-bench-phases-") as tmp:
        dsn = cluster.create_database("bench_phases")
        print(f"generating a {args.size} MB database…", flush=True)
        generate(dsn, args.size)
        local = f"{tmp}/raw.dump"
        subprocess.run([pg_bin("pg_dump"), "-Fc", "-f", local], check=True, env=pg_env(dsn))
        settings = parse_settings({"state": {"path": f"{tmp}/state.db"}, "storage": {"url": f"file://{tmp}/backups"}},
                                  {"DATABASE_URL": dsn})
        status = execute_backup(build_services(settings, progress_every=3600), BackupRequest(database="main",
                                format="custom"), Actor("UBENCH"), QuietReply())
        if status.state != "succeeded":
            raise RuntimeError(status.error)
        bare: list[float] = []
        phases: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in trees}
        for run in range(args.runs):
            db = f"bare_{run}"
            cluster.create_database(db, template="template0")
            started = time.monotonic()
            subprocess.run([pg_bin("pg_restore"), "--exit-on-error", "-j2", f"--dbname={db}", local], check=True,
                           env=pg_env(cluster.dsn(db)), stdin=subprocess.DEVNULL)
            bare.append(time.monotonic() - started)
            cluster.drop_database(db)
            for name, tree in (trees.items() if run % 2 == 0 else reversed(trees.items())):
                for phase, seconds in drill_in(tree, dsn, tmp).items():
                    phases[name][phase].append(seconds)
            print(f"run {run + 1}: bare {bare[-1]:.2f}s, " + ", ".join(
                f"{name} drill {phases[name]['drill end to end'][-1]:.2f}s" for name in trees), flush=True)
    base = statistics.median(bare)
    print(f"\n| phase (median of {args.runs}) | " + " | ".join(trees) + " |\n|---|" + "---:|" * len(trees))
    print(f"| bare `pg_restore -j2 -d new` of the local `-Fc` file | {base:.2f}s |" + " |" * (len(trees) - 1))
    for phase in phases["after"]:
        cells = [f"{statistics.median(phases[name][phase]):.2f}s" for name in trees]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("| **drill / bare** | " + " | ".join(
        f"**{statistics.median(phases[name]['drill end to end']) / base:.2f}x**" for name in trees) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
