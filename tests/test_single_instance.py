"""One backupbot per state database: a second one refuses to start instead of calling the live one's jobs interrupted.

The first bot is a real process with a backup in flight (pg_dump held behind a table lock, its
partial file open). A second `backupbot console` or `backupbot run` on the same state must exit
non-zero with a message naming the state and the first bot's pid, and leave the running job and
its partial file alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bot.console import os_account
from bot.startup import start_services
from commands.errors import InstanceLockedError
from state import Store
from state.jobs import recent_jobs
from tests.builders import make_settings, wait_for

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n'
                      f'[storage]\nurl = "file://{tmp_path / "backups"}"\n'
                      f'[access]\noperators = ["U0OPS"]\nconsole_operators = ["{os_account()}"]\n')
    return config


def partial_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "backups").rglob(".*.partial-*")) if (tmp_path / "backups").exists() else []


def bot_env(dsn: str, **extra) -> dict:
    return {"DATABASE_URL": dsn, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **extra}




def test_second_bot_on_the_same_state_is_refused_and_touches_nothing(tmp_path, sample_dsn, reliability):
    config = write_config(tmp_path)
    state_path = str(tmp_path / "state.db")
    table_lock = psycopg.connect(sample_dsn)
    table_lock.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    console = [sys.executable, "-m", "bot.cli", "console", "--config", str(config)]
    first = subprocess.Popen(console, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=bot_env(sample_dsn))
    try:
        first.stdin.write("/backup main\n")
        first.stdin.flush()
        wait_for(lambda: partial_files(tmp_path), "the first bot's partial file")
        store = Store(state_path)
        wait_for(lambda: [j.status for j in recent_jobs(store)] == ["running"], "the first bot's running job")
        partial = partial_files(tmp_path)

        second = subprocess.run(console, cwd=REPO, input="/backup list\n", capture_output=True, text=True, timeout=60,
                                env=bot_env(sample_dsn))
        assert second.returncode != 0
        assert f"another backupbot is already running on {state_path} (pid {first.pid})" in second.stderr
        assert "was interrupted" not in second.stdout + second.stderr and "Traceback" not in second.stderr

        served = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--config", str(config), "--port", "9"],
                                cwd=REPO, capture_output=True, text=True, timeout=60,
                                env=bot_env(sample_dsn, SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET="s",
                                            SLACK_API_URL="http://127.0.0.1:9/"))
        assert served.returncode != 0
        assert f"another backupbot is already running on {state_path} (pid {first.pid})" in served.stderr

        # the same process may not open it twice either
        with pytest.raises(InstanceLockedError, match="another backupbot is already running"):
            start_services(make_settings(tmp_path, sample_dsn))

        assert [j.status for j in recent_jobs(store)] == ["running"]
        assert partial_files(tmp_path) == partial and all(p.exists() for p in partial)
    finally:
        table_lock.rollback()
        table_lock.close()
        if sys.exc_info()[0] is not None:
            first.kill()
    out, err = first.communicate("/backup list\n", timeout=60)
    assert first.returncode == 0, err
    assert "Backup #1 of main succeeded" in out
    assert [j.status for j in recent_jobs(Store(state_path))] == ["succeeded"]

    # the lock died with the first bot: the next one starts and finds nothing interrupted
    services = start_services(make_settings(tmp_path, sample_dsn))
    assert services.interrupted_jobs == []
    services.close()
    reliability("faults", "a second `backupbot console` and `run` on the live bot's state database", 2,
                "refused at start; the live job and its partial file untouched", 0)


def test_lock_is_per_state_database_and_released_by_close(tmp_path, sample_dsn):
    a = make_settings(tmp_path / "a", sample_dsn)
    b = make_settings(tmp_path / "b", sample_dsn)
    first_a, first_b = start_services(a), start_services(b)  # different state databases: both run
    with pytest.raises(InstanceLockedError) as refused:
        start_services(a)
    assert str(refused.value).startswith(f"another backupbot is already running on {a.state_path} (pid {os.getpid()})")
    first_a.close()
    again = start_services(a)
    again.close()
    first_b.close()


def test_lock_file_is_private_and_a_stale_one_locks_nothing(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn)
    lock_file = Path(f"{settings.state_path}.lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file.write_text("999999\n")  # left by a bot that was killed: the kernel dropped its flock
    services = start_services(settings)
    assert (lock_file.stat().st_mode & 0o777) == 0o600
    assert lock_file.read_text().strip() == str(os.getpid())
    services.close()
