"""SIGTERM (`docker stop`, `systemctl stop`) to a real `backupbot run` with a backup in flight.

pg_dump is held behind a table lock, so the backup is mid-way when the signal comes. Within the
grace period the bot stops taking commands and a job that can finish does; past it the bot stops
pg_dump itself, records the job interrupted, says so in Slack, and leaves no partial file and no
listed backup. The process exits on its own, well before systemd or docker would kill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bot.console import os_account
from bot.shutdown import child_pids
from state import Store
from state.jobs import recent_jobs
from tests.builders import wait_for
from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET, SlackSender
from tests.test_healthz_metrics import free_port, get

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, grace: float) -> Path:
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n'
                      f'[storage]\nurl = "file://{tmp_path / "backups"}"\n'
                      f'[access]\noperators = ["U0OPS"]\nconsole_operators = ["{os_account()}"]\n'
                      f'[jobs]\nstop_grace_seconds = {grace}\n')
    return config


def partial_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "backups"
    return sorted(root.rglob(".*.partial-*")) if root.exists() else []


def stored_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "backups"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []




def start_bot(tmp_path, dsn, fake_slack, grace: float):
    port, health_port = free_port(), free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "DATABASE_URL": dsn, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.url}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--host", "127.0.0.1", "--port", str(port),
                            "--health-port", str(health_port), "--config", str(write_config(tmp_path, grace))],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answers():
        assert bot.poll() is None, bot.communicate()[1]
        try:  # both listeners start on their own threads: wait for the two
            return (get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
                    and get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
        except OSError:
            return False

    wait_for(answers, "the bot's health port and Slack port")
    return bot, SlackSender(f"http://127.0.0.1:{port}/slack/events", fake_slack), f"http://127.0.0.1:{health_port}"


def pg_dump_of(bot: subprocess.Popen) -> int:
    def find():
        return [pid for pid in child_pids(bot.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "pg_dump"]

    return wait_for(find, "the bot's pg_dump")[0]


def backup_in_flight(tmp_path, sample_dsn, bot, slack):
    """/backup main from Slack, with pg_dump stuck behind the table lock the caller holds."""
    status, _, _ = slack.command("/backup", "main")
    assert status == 200
    wait_for(lambda: partial_files(tmp_path), "the backup's partial file")
    store = Store(str(tmp_path / "state.db"))
    wait_for(lambda: [j.status for j in recent_jobs(store)] == ["running"], "the running job")
    return store, pg_dump_of(bot)


def draining(health: str):
    try:
        answer = get(health + "/healthz")
    except OSError:  # not yet seen: keep asking
        return None
    return answer if answer[0] == 503 else None


def listed_backups(tmp_path, dsn) -> str:
    shown = subprocess.run([sys.executable, "-m", "bot.cli", "console", "--config", str(tmp_path / "bot.toml")],
                           cwd=REPO, input="/backup list main\n", capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "DATABASE_URL": dsn})
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_sigterm_past_the_grace_period_interrupts_the_backup_and_leaves_nothing_partial(
        tmp_path, sample_dsn, fake_slack, reliability):
    table_lock = psycopg.connect(sample_dsn)
    table_lock.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    bot, slack, _ = start_bot(tmp_path, sample_dsn, fake_slack, grace=2)
    try:
        store, pg_dump = backup_in_flight(tmp_path, sample_dsn, bot, slack)
        stopped_at = time.monotonic()
        bot.send_signal(signal.SIGTERM)
        _, err = bot.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        table_lock.rollback()
        table_lock.close()
        if bot.poll() is None:
            bot.kill()
    assert bot.returncode == 0, err
    assert 2 <= took < 20, f"the bot took {took:.1f}s to stop"  # the 2s grace, then pg_dump stopped at once
    assert not Path(f"/proc/{pg_dump}").exists()
    (job,) = recent_jobs(store)
    assert job.status == "interrupted" and "the bot was stopped before this job finished" in job.error
    fake_slack.wait_for_text("the bot was stopped before this job finished", method="chat.update")
    assert partial_files(tmp_path) == [] and stored_files(tmp_path) == []
    assert "No backups of main yet" in listed_backups(tmp_path, sample_dsn)
    assert "Traceback" not in err and "grace period over" in err
    with psycopg.connect(sample_dsn) as conn:  # the server has no pg_dump session left either
        assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'").fetchone()[0] == 0
    reliability("faults", "SIGTERM to `backupbot run` mid-backup, past the grace period", 1,
                "job interrupted, pg_dump stopped, no partial file, nothing listed", 0)


def test_sigterm_lets_a_running_backup_finish_within_the_grace_period(tmp_path, sample_dsn, fake_slack):
    table_lock = psycopg.connect(sample_dsn)
    table_lock.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    bot, slack, health = start_bot(tmp_path, sample_dsn, fake_slack, grace=60)
    try:
        store, _ = backup_in_flight(tmp_path, sample_dsn, bot, slack)
        bot.send_signal(signal.SIGTERM)
        # draining: health says so, and the bot no longer takes commands on the Slack port
        status, body = wait_for(lambda: draining(health), "/healthz 503")
        assert "the bot is stopping" in body
        try:  # the Slack port is closed: Slack retries elsewhere or tells the user it failed
            refused = slack.command("/backup", "main")[0] != 200
        except OSError:
            refused = True
        assert refused
        assert bot.poll() is None and [j.status for j in recent_jobs(store)] == ["running"]
        table_lock.rollback()  # pg_dump goes on: the backup finishes within the grace period
        _, err = bot.communicate(timeout=60)
    finally:
        table_lock.close()
        if bot.poll() is None:
            bot.kill()
    assert bot.returncode == 0, err
    assert [j.status for j in recent_jobs(store)] == ["succeeded"]
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    assert "#1 · main ·" in listed_backups(tmp_path, sample_dsn)
    assert "grace period over" not in err and "Traceback" not in err


def test_on_stop_a_queued_job_gives_up_and_the_running_one_finishes(tmp_path, sample_dsn):
    import threading

    from bot.console import Console
    from bot.shutdown import Shutdown
    from tests.builders import make_console, make_settings

    settings = make_settings(tmp_path, sample_dsn, env={"OTHER_URL": sample_dsn}, jobs={"max_running": 1},
                             databases={"main": {"url_env": "DATABASE_URL"}, "other": {"url_env": "OTHER_URL"}})
    alice = make_console(settings, user="U0ALICE")
    bob = Console(alice.services, user="U0BOB", channel="C0OPS", plays_slack_users=True)
    services, slots, said = alice.services, alice.services.job_slots, {}
    blocker = psycopg.connect(sample_dsn)
    blocker.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    try:
        first = threading.Thread(target=lambda: said.__setitem__("alice", alice.run("/backup main")), daemon=True)
        first.start()
        assert slots.wait_for(lambda s: s.running() == ["backup #1 of main"], 30)
        second = threading.Thread(target=lambda: said.__setitem__("bob", bob.run("/backup other")), daemon=True)
        second.start()
        assert slots.wait_for(lambda s: s.waiting() == ["backup #2 of other"], 30)
        shutdown = Shutdown(services, grace_seconds=60)
        stopping = threading.Thread(target=lambda: said.__setitem__("stopped cleanly", shutdown.stop()), daemon=True)
        stopping.start()
        second.join(30)
        assert "the bot stopped before this job got a slot" in said["bob"]
        assert "Backup #2 of other started" not in said["bob"]
        assert "the bot is stopping" in alice.run("/backup other")  # nothing new starts either
    finally:
        blocker.rollback()
        blocker.close()
    first.join(120)
    stopping.join(120)
    assert said["stopped cleanly"] is True and "Backup #1 of main succeeded" in said["alice"]
    assert [(j.id, j.status) for j in recent_jobs(services.store)][-2:] == [(2, "interrupted"), (1, "succeeded")]


def test_sigterm_to_the_console_interrupts_its_backup_at_once(tmp_path, sample_dsn):
    write_config(tmp_path, grace=60)
    table_lock = psycopg.connect(sample_dsn)
    table_lock.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    console = subprocess.Popen([sys.executable, "-m", "bot.cli", "console", "--config", str(tmp_path / "bot.toml")],
                               cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "DATABASE_URL": sample_dsn})
    try:
        console.stdin.write("/backup main\n")
        console.stdin.flush()
        wait_for(lambda: partial_files(tmp_path), "the backup's partial file")
        pg_dump = pg_dump_of(console)
        console.send_signal(signal.SIGTERM)
        out, err = console.communicate(timeout=30)
    finally:
        table_lock.rollback()
        table_lock.close()
        if console.poll() is None:
            console.kill()
    assert console.returncode == 130, err
    assert "the bot was stopped before this job finished" in out and "Traceback" not in err
    assert [j.status for j in recent_jobs(Store(str(tmp_path / "state.db")))] == ["interrupted"]
    assert not Path(f"/proc/{pg_dump}").exists()
    assert partial_files(tmp_path) == [] and stored_files(tmp_path) == []
    assert "No backups of main yet" in listed_backups(tmp_path, sample_dsn)
