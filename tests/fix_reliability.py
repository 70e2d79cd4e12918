"""The reliability table: adversarial and fault tests record what they tried and what happened.

At the end of a run whose recorded tests all passed, the table is rendered from these records and,
with BACKUPBOT_WRITE_README=1, written into README.md between the reliability markers. So the
README's figures come from the suite itself, never typed by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


@dataclass
class Row:
    area: str
    attack: str
    tries: int
    happened: str
    lost: int
    test: str
    passed: bool = False


_rows: list[Row] = []


@pytest.fixture
def reliability(request):
    """Call `reliability(area, attack, tries, happened, lost=0)`; the row counts only if the test passes."""
    recorded: list[Row] = []
    request.node._reliability_rows = recorded

    def record(area: str, attack: str, tries: int, happened: str, lost: int = 0) -> None:
        row = Row(area, attack, tries, happened, lost, request.node.nodeid)
        recorded.append(row)
        _rows.append(row)

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        for row in getattr(item, "_reliability_rows", []) or []:
            row.passed = report.passed


def render_table(rows: list[Row]) -> str:
    lines = [
        "| area | what was tried | times | what happened | lost |",
        "|---|---|---:|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r.area, r.attack)):
        verdict = "nothing" if row.passed and row.lost == 0 else f"**{row.lost} lost / test failed**"
        lines.append(f"| {row.area} | {row.attack} | {row.tries:,} | {row.happened} | {verdict} |")
    total = sum(r.tries for r in rows)
    lines.append("")
    lines.append(f"{len(rows)} attacks and faults, {total:,} tries in all, produced by `pytest` "
                 "(`BACKUPBOT_WRITE_README=1 bash .ci/run` rewrites this table).")
    return "\n".join(lines)


def pytest_sessionfinish(session, exitstatus):
    if not _rows:
        return
    table = render_table(_rows)
    out = Path(os.environ.get("BACKUPBOT_RELIABILITY_OUT", "")) if os.environ.get("BACKUPBOT_RELIABILITY_OUT") else None
    if out:
        out.write_text(table + "\n")
    if os.environ.get("BACKUPBOT_WRITE_README") == "1" and exitstatus == 0:
        text = README.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
