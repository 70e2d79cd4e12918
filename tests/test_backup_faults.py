"""Faults during a backup: the job ends failed, truthfully, and nothing half-written is a backup.

pg_dump is made to wait deterministically: another session holds an ACCESS EXCLUSIVE lock on a
table, so pg_dump blocks on its ACCESS SHARE lock until the test has done its damage.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from state.backups import list_backups
from state.jobs import recent_jobs
from tests.builders import make_console, make_settings


def pg_dump_pids(parent: int | None = None) -> list[int]:
    """pg_dump processes (of `parent` only, when given: other tests' bots may be dumping too)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if argv and argv[0].endswith(b"pg_dump") and b"--version" not in argv and parent in (None, ppid):
                pids.append(int(entry.name))
    return pids


class BlockedBackup:
    """A /backup whose pg_dump is stuck behind a table lock until `release()`."""

    def __init__(self, console, dsn: str, command: str = "/backup main"):
        self.lock_conn = psycopg.connect(dsn)
        self.lock_conn.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
        self.before = set(pg_dump_pids(parent=os.getpid()))
        self.output: list[str] = []
        self.thread = threading.Thread(target=lambda: self.output.append(console.run(command)), daemon=True)
        self.thread.start()
        self.pid = self._wait_for_pg_dump()

    def _wait_for_pg_dump(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = set(pg_dump_pids(parent=os.getpid())) - self.before  # this process's own pg_dump only
            if new:
                return new.pop()
            time.sleep(0.02)
        raise AssertionError("pg_dump did not start")

    def release(self) -> None:
        self.lock_conn.rollback()
        self.lock_conn.close()

    def result(self) -> str:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the backup did not finish"
        return self.output[0]


@pytest.fixture
def console(tmp_path, sample_dsn):
    return make_console(make_settings(tmp_path, sample_dsn))


def visible_artifacts(tmp_path) -> list[Path]:
    root = tmp_path / "backups"
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")] if root.exists() else []


def test_password_never_in_pg_dump_argv(console, sample_dsn, pg_cluster, reliability):
    blocked = BlockedBackup(console, sample_dsn)
    try:
        cmdline = Path(f"/proc/{blocked.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{blocked.pid}/environ").read_bytes()
        assert pg_cluster.password.encode() not in cmdline
        assert b"--snapshot=" in cmdline
        assert b"PGPASSWORD=" + pg_cluster.password.encode() in environ.split(b"\0")
    finally:
        blocked.release()
    out = blocked.result()
    assert "succeeded" in out and pg_cluster.password not in out
    reliability("secrets", "password in a running pg_dump's /proc/PID/cmdline", 1,
                "absent from argv; passed as PGPASSWORD in the environment only")


def test_pg_dump_killed_mid_backup(console, sample_dsn, tmp_path, reliability):
    blocked = BlockedBackup(console, sample_dsn)
    os.kill(blocked.pid, signal.SIGKILL)
    blocked.release()
    out = blocked.result()
    assert "Backup #1 failed: pg_dump was killed by signal 9" in out
    assert list_backups(console.services.store) == []
    assert visible_artifacts(tmp_path) == []
    assert recent_jobs(console.services.store)[0].status == "failed"
    reliability("faults", "pg_dump killed with SIGKILL mid-backup", 1,
                "job failed ('killed by signal 9'); no artifact stored or listed")


def test_database_goes_away_mid_dump(console, sample_dsn, tmp_path, reliability):
    blocked = BlockedBackup(console, sample_dsn)
    with psycopg.connect(sample_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name LIKE 'backupbot%' OR backend_type = 'client backend' AND pid <> pg_backend_pid() "
                      "AND query LIKE 'LOCK TABLE%IN ACCESS SHARE MODE'")
    blocked.release()
    out = blocked.result()
    assert "Backup #1 failed" in out
    assert list_backups(console.services.store) == []
    assert visible_artifacts(tmp_path) == []
    reliability("faults", "database connection terminated mid-dump", 1, "job failed with pg_dump's error; nothing stored")


def test_second_backup_of_a_busy_database_is_refused(console, sample_dsn):
    blocked = BlockedBackup(console, sample_dsn)
    try:
        out = console.run("/backup main")
        assert "already running (#1)" in out
    finally:
        blocked.release()
    assert "Backup #1 of main succeeded" in blocked.result()
    assert [r.id for r in list_backups(console.services.store)] == [1]


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs: a real full disk (ENOSPC) for the storage folder only."""
    import subprocess

    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_full_disk_fails_the_backup(tmp_path, sample_dsn, tiny_filesystem, reliability):
    console = make_console(make_settings(tmp_path, sample_dsn, storage_url=f"file://{tiny_filesystem}"))
    with psycopg.connect(sample_dsn, autocommit=True) as conn:  # make sure the dump outgrows 64 KiB
        conn.execute("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    out = console.run("/backup main --format plain")
    assert "Backup #1 failed" in out and "No space left on device" in out
    assert list_backups(console.services.store) == []
    assert list(tiny_filesystem.iterdir()) in ([], [tiny_filesystem / "main"])
    assert [p for p in tiny_filesystem.rglob("*") if p.is_file()] == []
    assert "succeeded" in console.run("/backup main --tables users --schema-only --format plain")
    reliability("faults", "full disk (64 KiB tmpfs) during a backup", 1,
                "job failed ('No space left on device'); temp file removed; next small backup succeeds")


def test_bot_killed_mid_backup_then_restarted(tmp_path, sample_dsn, reliability):
    import subprocess
    import sys

    from bot.console import os_account
    from bot.startup import start_services

    settings = make_settings(tmp_path, sample_dsn)
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{settings.state_path}"\n[storage]\nurl = "{settings.storage_url}"\n'
                      f'[access]\noperators = ["U0OPS"]\nconsole_operators = ["{os_account()}"]\n')
    lock = psycopg.connect(sample_dsn)
    lock.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "console", "--config", str(config)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={"DATABASE_URL": sample_dsn, "PATH": os.environ["PATH"]})
    bot.stdin.write(b"/backup main\n")
    bot.stdin.flush()
    deadline = time.monotonic() + 30
    while not pg_dump_pids(parent=bot.pid) and time.monotonic() < deadline:  # this bot's own pg_dump
        time.sleep(0.02)
    assert pg_dump_pids(parent=bot.pid), "pg_dump did not start"
    time.sleep(0.2)  # let the writer open its temporary file
    bot.kill()
    bot.wait()
    lock.rollback()
    lock.close()

    restart = subprocess.run([sys.executable, "-m", "bot.cli", "console", "--config", str(config)],
                             input="/backup list\n", capture_output=True, text=True,
                             env={"DATABASE_URL": sample_dsn, "PATH": os.environ["PATH"]})
    assert "Backup #1 of main was interrupted: the bot stopped while it was running" in restart.stdout
    assert "No backups" in restart.stdout
    services = start_services(settings)
    assert recent_jobs(services.store)[0].status == "interrupted"
    assert list_backups(services.store) == []
    leftovers = [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] if (tmp_path / "backups").exists() else []
    assert leftovers == []
    from bot.console import Console

    out = Console(services, user="U0OPS", plays_slack_users=True).run("/backup main")
    assert "Backup #2 of main succeeded" in out

    reliability("faults", "bot killed with SIGKILL mid-backup, then restarted", 1,
                "job marked interrupted and reported; partial file discarded; next backup succeeds")


def test_s3_stops_mid_upload(tmp_path, sample_dsn, s3_server, s3_server_running, s3_storage_url, reliability, monkeypatch):
    from commands.storage import open_storage

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast instead of retrying against a stopped server

    console = make_console(make_settings(tmp_path, sample_dsn, storage_url=s3_storage_url))
    blocked = BlockedBackup(console, sample_dsn)  # the multipart upload is open, pg_dump is waiting
    s3_server.stop()
    blocked.release()
    out = blocked.result()
    s3_server.start()
    assert "Backup #1 failed" in out and "S3" in out
    assert list_backups(console.services.store) == []
    assert open_storage(s3_storage_url).list_keys() == []
    assert "Backup #2 of main succeeded" in console.run("/backup main")
    reliability("faults", "S3 stopped mid-upload", 1, "job failed with the S3 error; no object visible; next backup succeeds")


def test_no_password_in_logs_state_or_slack(tmp_path, pg_cluster, sample_dsn, caplog, slack_env, fake_slack, start_bot,
                                            reliability):
    import logging

    caplog.set_level(logging.DEBUG)
    bad_dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/missing_db"
    settings = make_settings(tmp_path, sample_dsn, env={**slack_env, "BROKEN_URL": bad_dsn},
                             databases={"main": {"url_env": "DATABASE_URL"}, "broken": {"url_env": "BROKEN_URL"}})
    bot = start_bot(settings)
    bot.slack.command("/backup", "main", user="U0ALICE")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    bot.slack.command("/backup", "broken", user="U0ALICE")
    fake_slack.wait_for_text("Backup #2 failed: cannot connect", method="chat.update")
    state_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    everything = [fake_slack.all_bodies(), caplog.text, state_bytes.decode("latin-1")]
    for text in everything:
        assert pg_cluster.password not in text
    reliability("secrets", "password in Slack messages, logs and the state database after a success and a failure", 2,
                "absent everywhere (redacted)")
