"""The goals of issue #20 as one table: each ratio measured in this run beside the figure a round ago.

run.py measures; this module times the drill against the runbook's own restore commands and turns
the measured rows into the goal table (today's figure, the goal, met or the gap). The "a round ago"
column is the measurement the issue was filed with (1 GB generated database, medians of 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Goal:
    what: str
    before: str  # the figure when the issue was filed
    limit: float  # the ratio must be at most this
    goal: str


GOALS = {
    "gzip": Goal("default backup vs `pg_dump | gzip`", "0.46x", 0.5, "≤ 0.5x"),
    "limit": Goal("default backup vs the limit `pg_dump -Fc -Z0 > /dev/null`", "1.22x", 1.05, "≤ 1.05x"),
    "rows": Goal("rows the server reads during a backup vs pg_dump alone", "2.03x", 1.05, "≤ 1.05x"),
    "buffers": Goal("buffer reads during a backup vs pg_dump alone", "2.80x", 1.1, "≤ 1.1x"),
    "tables": Goal("5,000 small tables: bot backup vs `pg_dump -Fc`", "3.0x", 1.2, "≤ 1.2x"),
    "drill_bare": Goal("a drill end to end vs bare `zstd -dc | pg_restore`", "1.28x", 1.05, "≤ 1.05x"),
    "drill_j2": Goal("the same drill vs `pg_restore -j2` of a local file", "1.75x", 1.1, "≤ 1.1x"),
}


def bot_drill(dsn: str, workdir: str) -> dict:
    """`/backup verify latest` in a fresh process: fetch, sha256, decompress, restore, verify, drop."""
    result = subprocess.run([sys.executable, "-m", "bench.backup_child", dsn, "custom", workdir, "--verify"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def goal_table(measured: dict[str, tuple[float, str]]) -> list[str]:
    """Markdown lines: every goal with its figure a round ago and now (`measured[key] = (ratio, where)`)."""
    lines = ["| what | a round ago | now | where measured | goal | verdict |", "|---|---:|---:|---|---|---|"]
    for key, goal in GOALS.items():
        if key not in measured:
            lines.append(f"| {goal.what} | {goal.before} | not measured in this run | | {goal.goal} | |")
            continue
        ratio, where = measured[key]
        verdict = "met" if ratio <= goal.limit else "**MISSED**"
        lines.append(f"| {goal.what} | {goal.before} | {ratio:.2f}x | {where} | {goal.goal} | {verdict} |")
    return lines
