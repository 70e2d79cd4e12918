"""The cost of `[storage] encrypt_to`: age encryption (pyrage) on a bot backup and on a drill.

    python bench/encryption.py              # ~100 MB database, median of 3
    python bench/encryption.py --size 50 --runs 5

Fills a database as bench/run.py does and makes an age key with `age-keygen`. Then it runs bot backups
(`--format custom`, zstd) without and with `encrypt_to`, each in a fresh process
(bench/backup_child.py, the bot's own execute_backup), and drills of each (`/backup verify latest`:
fetch, decrypt, restore into a scratch database, compare row counts, drop it). Runs alternate
between the two setups so the disk's ups and downs fall on both. The table shows median times
and the highest peak RSS of the runs. It is printed, written into bench/results.md (its own block;
the others stay), and copied into the README's block of the same name. Nothing here is a test: it
measures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import generate  # noqa: E402
from bench.sections import quote_in_readme, write_results  # noqa: E402
from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.pg.tools import tool_version  # noqa: E402

FLAT_MB = 10  # the "memory stays flat": encryption may add at most this much peak RSS


def _child(dsn: str, workdir: Path, extra: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.backup_child", dsn, "custom", str(workdir), *extra],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip()[-2000:])
    return json.loads(result.stdout)


def _summary(runs: list[dict]) -> dict:
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "rss": max(r["max_rss_mb"] for r in runs),
            "size": runs[-1].get("size"),
            "restore_seconds": (statistics.median(r["restore_seconds"] for r in runs)
                                if runs[0].get("restore_seconds") is not None else None)}


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100, help="database size in MB")
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (the median time is shown)")
    args = parser.parse_args()

    with TemporaryCluster() as cluster, tempfile.TemporaryDirectory(prefix="backupbot-bench-age-") as tmp:
        dsn = cluster.create_database("bench_encryption")
        print(f"generating a {args.size} MB database…", flush=True)
        actual = generate(dsn, args.size)
        key = Path(tmp) / "key.txt"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        key.chmod(0o600)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                                   text=True).stdout.strip()
        setups = {"plain": (Path(tmp) / "plain", []),
                  "age": (Path(tmp) / "age", ["--encrypt-to", recipient, "--identity-file", str(key)])}
        for workdir, _ in setups.values():
            workdir.mkdir(mode=0o700)

        backups: dict[str, list[dict]] = {name: [] for name in setups}
        drills: dict[str, list[dict]] = {name: [] for name in setups}
        print("bot backups…", flush=True)
        for _ in range(args.runs):
            for name, (workdir, extra) in setups.items():
                backups[name].append(_child(dsn, workdir, extra))
        if {r["encryption"] for r in backups["age"]} != {"age"} or any(r["encryption"] for r in backups["plain"]):
            raise RuntimeError("the encrypted setup did not encrypt (or the plain one did)")
        print("drills…", flush=True)
        for _ in range(args.runs):
            for name, (workdir, extra) in setups.items():
                drills[name].append(_child(dsn, workdir, [*extra, "--verify"]))

    plain_b, age_b = _summary(backups["plain"]), _summary(backups["age"])
    plain_d, age_d = _summary(drills["plain"]), _summary(drills["age"])

    def time_row(what, without, with_):
        return f"| {what} | {without:.2f}s | {with_:.2f}s | {with_ / without:.2f}x |"

    def rss_row(what, without, with_):
        return f"| {what} | {without:.0f} MB | {with_:.0f} MB | {with_ - without:+.0f} MB |"

    rss_growth = max(age_b["rss"] - plain_b["rss"], age_d["rss"] - plain_d["rss"])
    lines = [
        f"## Encryption (`[storage] encrypt_to`, age) — {os.cpu_count()} cores, PostgreSQL {tool_version('pg_dump')}, "
        f"pyrage {importlib.metadata.version('pyrage')}, Python {platform.python_version()}",
        "",
        f"Database {_mb(actual)}; bot backups `--format custom` (zstd) and drills (`/backup verify latest`), "
        f"each in a fresh process; median time and highest peak RSS of {args.runs} runs.",
        "",
        "| measure | without | with `encrypt_to` | cost |",
        "|---|---:|---:|---:|",
        time_row("backup time", plain_b["seconds"], age_b["seconds"]),
        rss_row("backup peak RSS of the bot process", plain_b["rss"], age_b["rss"]),
        f"| stored artifact | {_mb(plain_b['size'])} | {_mb(age_b['size'])} | "
        f"{(age_b['size'] - plain_b['size']) / 1024:+.0f} KB |",
        time_row("drill time (fetch, decrypt, restore, checks, drop)", plain_d["seconds"], age_d["seconds"]),
        time_row("drill restore (the RTO it records)", plain_d["restore_seconds"], age_d["restore_seconds"]),
        rss_row("drill peak RSS of the bot process", plain_d["rss"], age_d["rss"]),
        "",
        f"Memory stays flat (encryption adds ≤ {FLAT_MB} MB of peak RSS): "
        f"{'met' if rss_growth <= FLAT_MB else '**MISSED**'} ({rss_growth:+.0f} MB at most).",
        "",
        "Rerun: `python bench/encryption.py` (`--size MB`, `--runs N`).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    write_results("encryption", table)
    quote_in_readme("encryption", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
