"""When the bot's host is gone: `backupbot catalog rebuild` and `backupbot state restore`, run as an
admin runs them (a real subprocess), give back what /backup list, /restore and /incident showed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.builders import FakeClock, make_console, make_settings, suite_signing_key

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"]}


def write_config(tmp_path: Path) -> str:
    config = tmp_path / "backupbot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[storage]\nurl = "file://{tmp_path / "backups"}"\n'
                      f'signing_key_files = ["{suite_signing_key()}"]\n'
                      '[access]\noperators = ["U0OPS"]\napprovers = ["U0APP1"]\n')
    return str(config)


def backupbot(*args: str, dsn: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def lose_the_state_database(tmp_path: Path, console) -> None:
    console.services.close()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)


def without_message_ids(out: str) -> str:
    """The console numbers its messages [M1], [M2]… per session."""
    return re.sub(r"^\[M\d+\] ", "", out, flags=re.MULTILINE)


@pytest.fixture
def clock():
    """Starts hours ago: the CLI rebuild runs on the real clock and refuses backups dated in the future."""
    return FakeClock(datetime.now(UTC) - timedelta(hours=6))


def test_catalog_rebuild_from_storage_gives_back_list_and_restore(tmp_path, sample_dsn, clock):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=clock)
    assert "Backup #1 of main succeeded" in console.run("/backup main")
    clock.advance(hours=1)
    assert "Backup #2 of main succeeded" in console.run("/backup main --format plain")
    clock.advance(hours=1)
    assert "Backup #3 of main succeeded" in console.run("/backup main --tables users")
    listed = console.run("/backup list")
    planned = console.run("/restore latest --dry-run")
    assert "#3 · main" in listed and "restore backup #2 of main" in planned
    lose_the_state_database(tmp_path, console)

    result = backupbot("catalog", "rebuild", "--verify", "--config", write_config(tmp_path), dsn=sample_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("3 backup(s) catalogued (#1, #2, #3), each manifest signed with this bot's key and its artifact present with "
            "the manifest's size and sha256") in result.stdout
    assert "problem" not in result.stdout

    console = make_console(settings, clock=clock)
    assert console.run("/backup list") == listed
    replanned = console.run("/restore latest --dry-run")
    # the same plan, and it says the backup's catalog row came from a rebuild
    rebuilt_note = " · catalogued by a catalog rebuild from main/"
    assert rebuilt_note in replanned and rebuilt_note not in planned
    assert without_message_ids(re.sub(r" · catalogued by a catalog rebuild from \S+", "", replanned)) == \
        without_message_ids(planned)
    assert "Backup #4 of main succeeded" in console.run("/backup main")  # ids go on after the rebuilt ones


def test_catalog_rebuild_reports_a_damaged_backup_and_refuses_a_full_catalog(tmp_path, sample_dsn, clock):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=clock)
    console.run("/backup main")
    console.run("/backup main --format gzip")
    record = console.services.store
    from state.backups import get_backup

    damaged = tmp_path / "backups" / get_backup(record, 2).key
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    config = write_config(tmp_path)

    console.services.close()
    result = backupbot("catalog", "rebuild", "--config", config, dsn=sample_dsn)
    assert result.returncode == 2 and "already holds 2 backup(s)" in result.stderr, result.stdout + result.stderr

    lose_the_state_database(tmp_path, console)
    result = backupbot("catalog", "rebuild", "--verify", "--config", config, dsn=sample_dsn)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 backup(s) catalogued (#1)" in result.stdout
    assert "#2 (" in result.stdout and "the artifact's sha256 is" in result.stdout
    listed = make_console(settings, clock=clock).run("/backup list")
    assert "#1 · main" in listed and "#2 · main" not in listed


def test_state_restore_brings_back_an_incident_timeline(tmp_path, sample_dsn, clock):
    settings = make_settings(tmp_path, sample_dsn, access=ACCESS)
    console = make_console(settings, clock=clock)
    assert "Incident #1" in console.run("/incident open Orders table truncated --db main --sev 1")
    console.run("/incident note restored from the 02:00 backup is the plan")
    assert "succeeded" in console.run("/backup main")  # a successful job: the state goes to storage
    timeline = console.run("/incident timeline 1")
    assert "restored from the 02:00 backup is the plan" in timeline and "Backup #1 of main succeeded" in timeline
    assert any((tmp_path / "backups" / "_state").glob("backupbot-state-*.db"))
    console.services.close()
    config = write_config(tmp_path)

    result = backupbot("state", "restore", "--config", config, dsn=sample_dsn)
    assert result.returncode == 2 and "already exists" in result.stderr and "--force" in result.stderr

    lose_the_state_database(tmp_path, console)
    result = backupbot("state", "restore", "--config", config, dsn=sample_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored from" in result.stdout and "_state/backupbot-state-" in result.stdout

    console = make_console(settings, clock=clock)
    assert console.run("/incident timeline 1") == timeline
    assert "#1 · main" in console.run("/backup list")


def test_state_restore_refuses_while_a_bot_runs_on_the_state(tmp_path, sample_dsn, clock):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS), clock=clock)
    assert "succeeded" in console.run("/backup main")
    result = backupbot("state", "restore", "--force", "--config", write_config(tmp_path), dsn=sample_dsn)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backupbot" in result.stderr and "pid" in result.stderr
    assert "Backups of all databases" in console.run("/backup list")


def test_state_copy_on_its_schedule_and_a_failed_copy_is_alerted(tmp_path, sample_dsn, clock):
    from commands.schedules import run_scheduled, scheduled_jobs
    from tests.builders import Recorder

    settings = make_settings(tmp_path, sample_dsn, access=ACCESS, channels={"alerts": "C0ALERTS"},
                             schedules={"state_copy": "*/30 * * * *"})
    console = make_console(settings, clock=clock)
    [job] = [j for j in scheduled_jobs(console.services) if j.kind == "state_copy"]
    assert job.cron == "*/30 * * * *"
    console.run("/incident open Disk filling up --db main")
    reply = Recorder()
    assert run_scheduled(console.services, reply, job) == "succeeded"
    copies = sorted((tmp_path / "backups" / "_state").glob("backupbot-state-*.db"))
    assert len(copies) == 1  # no job ran: this copy is the schedule's

    state_folder = tmp_path / "backups" / "_state"
    state_folder.rename(tmp_path / "kept")
    state_folder.write_text("not a folder")  # storage refuses the next copy
    clock.advance(minutes=30)
    assert run_scheduled(console.services, reply, job) == "failed"
    state_folder.unlink()
    (tmp_path / "kept").rename(state_folder)
    [alert] = reply.texts("C0ALERTS")
    assert "Scheduled state_copy failed" in alert
    console.services.close()
    lose_the_state_database(tmp_path, console)
    assert backupbot("state", "restore", "--config", write_config(tmp_path), dsn=sample_dsn).returncode == 0
    assert "Disk filling up" in make_console(settings, clock=clock).run("/incident list")


def test_a_bad_state_copy_schedule_is_refused_at_load(tmp_path, sample_dsn):
    from commands.errors import ConfigError

    with pytest.raises(ConfigError, match=r"schedules.state_copy: 'every hour' is not a cron expression"):
        make_settings(tmp_path, sample_dsn, schedules={"state_copy": "every hour"})
