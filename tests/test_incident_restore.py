"""A disaster-recovery drill end to end at the console: the incident timeline fills itself."""

from __future__ import annotations

import psycopg

from tests.builders import make_console, make_settings


def test_recovery_lands_on_the_incident_and_ticks_the_checklist(tmp_path, sample_dsn):
    console = make_console(make_settings(tmp_path, sample_dsn, access={"operators": ["U0OPS"], "approvers": ["U0APP1"]}))
    console.run("/backup")
    out = console.run("/incident open carts table emptied by a bad migration --db main --sev 1")
    assert "Incident #1" in out
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.abandoned_carts")
    out = console.run("/restore latest")
    request = next(line.split("]")[0][1:] for line in out.splitlines() if "Restore request #1" in line)
    console.run(":as U0APP1")
    out = console.run(f":react {request} white_check_mark")
    assert "Restore request #1 restored backup #1" in out
    console.run(":as U0OPS")
    timeline = console.run("/incident timeline")
    for entry in ("Restore request #1: backup #1", "approved restore request #1", "Safety snapshot",
                  "verification passed", "Restore request #1 succeeded"):
        assert entry in timeline, entry
    status = console.run("/incident status")
    for step in ("Select backup", "Checkpoint", "Restore", "Verify"):
        assert step in status
    closed = console.run("/incident close a migration ran against production without a guard")
    assert "time to recovery" in closed.lower() or "recovery" in closed.lower()
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.abandoned_carts").fetchone()[0] == 800
