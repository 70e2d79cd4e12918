"""Physical backups from chat: `/backup physical`, the catalog, schedules, `backupbot check` and the
retention report, against the shared archiving cluster and stanza of tests/fix_pgbackrest.py.

These tests add one full and two incremental backups to the shared stanza (which keeps two full
backups), so the session's first full backup is never expired under other tests.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from commands.backup.physical import engine_config, generated_config_dir
from commands.errors import ConfigError
from commands.pg.pgbackrest.backups import info
from commands.schedules import run_scheduled, scheduled_jobs
from state import health as health_state
from state.backups import latest_backup
from state.physical_backups import list_physical_backups
from state.store import iso
from tests.builders import FakeClock, Recorder, make_console, make_settings, suite_signing_key

WAL_RANGE = re.compile(r"WAL range: ([0-9A-F]{24})\.\.([0-9A-F]{24})")
CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}


@pytest.fixture(scope="module")
def archived_dsn(pgbackrest_setup):
    """A small application database on the archiving cluster."""
    dsn = pgbackrest_setup.create_database("physical_app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 500) g")
    return dsn


def physical_settings(tmp_path, setup, dsn, **sections):
    """[databases.main] backed up by the shared stanza (its own pgbackrest.conf); [databases.other] has no pgbackrest."""
    databases = {
        "main": {"url_env": "DATABASE_URL",
                 "pgbackrest": {"config": str(setup.cfg.config_path), "stanza": setup.cfg.stanza}},
        "other": {"url_env": "OTHER_URL"},
    }
    return make_settings(tmp_path, dsn, databases=databases, env={"OTHER_URL": dsn}, **sections)


def test_backup_physical_at_the_console_is_catalogued_and_listed(tmp_path, pgbackrest_setup, archived_dsn):
    setup = pgbackrest_setup
    console = make_console(physical_settings(tmp_path, setup, archived_dsn))

    out = console.run("/backup physical")
    assert "Physical backup #1 of main started by @U0OPS — full (pgBackRest, stanza main)" in out
    newest = info(setup.cfg)[-1]
    assert f"Physical backup #1 of main succeeded: full {newest.label}" in out
    wal = WAL_RANGE.search(out)
    assert wal and wal.groups() == (newest.wal_start, newest.wal_stop)
    assert "Size: " in out and "delta" in out and "Duration: " in out
    assert "retention: keeps 2 full backup(s)" in out
    [record] = list_physical_backups(console.services.store, "main")
    assert (record.id, record.label, record.type, record.kind) == (1, newest.label, "full", "manual")
    assert (record.wal_start, record.wal_stop, record.lsn_start) == (newest.wal_start, newest.wal_stop, newest.lsn_start)
    assert record.size > 0 and record.delta > 0 and not record.is_full

    # a second, incremental one builds on it
    out = console.run("/backup physical main --type incr")
    incr = info(setup.cfg)[-1]
    assert incr.type == "incr" and incr.label.startswith(record.label + "_")
    assert f"Physical backup #2 of main succeeded: incr {incr.label}" in out
    assert f"Builds on: {record.label}" in out
    assert f"WAL range: {incr.wal_start}..{incr.wal_stop}" in out

    # a logical backup beside them: `latest` and the list keep both kinds apart
    assert "Backup #3 of main succeeded" in console.run("/backup main")
    assert latest_backup(console.services.store, "main", full_only=True).id == 3
    listing = console.run("/backup list")
    lines = [line for line in listing.splitlines() if line.startswith("#")]
    assert [line.split(" · ")[0] for line in lines] == ["#3", "#2", "#1"]
    assert f"physical full {record.label}" in lines[2] and f"WAL {record.wal_start}..{record.wal_stop}" in lines[2]
    assert f"physical incr {incr.label}" in lines[1] and f"WAL {incr.wal_start}..{incr.wal_stop}" in lines[1]
    assert "custom" in lines[0] and "sha256" in lines[0]

    # pgBackRest's retention, next to the logical one
    report = console.run("/backup prune --dry-run")
    assert "Retention for main: would delete 0, keeps 1 (dry run)" in report
    assert "Physical backups (pgBackRest, stanza main): repo1-retention-full = 2" in report
    assert f"keeps: #1 {record.label} full" in report
    assert f"keeps: #2 {incr.label} incr" in report and f"builds on {record.label}" in report
    assert f"keeps: {setup.first_backup.label} full" in report  # taken outside the bot: no catalog id


def test_metrics_show_the_real_rpo_and_the_newest_physical_backup_age(tmp_path, pgbackrest_setup, archived_dsn):
    from prometheus_client import generate_latest

    from bot.server import BotHealth, metrics_registry
    from commands.pg.pgbackrest.archiver import archiver_status, force_archive

    clock = FakeClock()
    console = make_console(physical_settings(tmp_path, pgbackrest_setup, archived_dsn), clock=clock)
    assert "Physical backup #1 of main succeeded" in console.run("/backup physical")
    clock.advance(hours=3)
    force_archive(archived_dsn)
    text = generate_latest(metrics_registry(BotHealth(console.services))).decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert 3 * 3600 <= values['backupbot_last_physical_backup_age_seconds{database="main"}'] < 3 * 3600 + 60
    rpo = values['backupbot_rpo_seconds{database="main"}']
    assert 0 <= rpo <= archiver_status(archived_dsn).rpo_seconds + 1 < 600  # the WAL just archived: seconds old
    assert not any('database="other"' in key for key in values if key.startswith("backupbot_rpo_seconds"))


def test_backup_physical_needs_a_pgbackrest_config_and_a_known_type(tmp_path, pgbackrest_setup, archived_dsn):
    console = make_console(physical_settings(tmp_path, pgbackrest_setup, archived_dsn))
    before = len(info(pgbackrest_setup.cfg))
    out = console.run("/backup physical other")
    assert out.startswith("(only you) database other has no pgBackRest stanza configured")
    assert "under [databases.other]" in out
    assert "unknown backup type 'weekly' (full, diff or incr)" in console.run("/backup physical --type weekly")
    assert "unknown database 'nope'" in console.run("/backup physical nope")
    assert "/backup physical [DB] [--type full|diff|incr]" in console.run("/backup help")
    # nothing ran, nothing was catalogued; retention of a database without pgBackRest says nothing of it
    assert len(info(pgbackrest_setup.cfg)) == before
    assert list_physical_backups(console.services.store) == []
    assert "pgBackRest" not in console.run("/backup prune other --dry-run")


def test_a_non_operator_cannot_take_a_physical_backup(tmp_path, pgbackrest_setup, archived_dsn):
    console = make_console(physical_settings(tmp_path, pgbackrest_setup, archived_dsn), user="U0VIEWER")
    out = console.run("/backup physical")
    assert "not an operator" in out and "Physical backup #" not in out


def test_scheduled_physical_backup_runs_with_an_injected_clock(tmp_path, pgbackrest_setup, archived_dsn):
    clock = FakeClock(datetime(2026, 11, 28, 3, 0, tzinfo=UTC))
    settings = physical_settings(tmp_path, pgbackrest_setup, archived_dsn, channels=CHANNELS,
                                 schedules={"main": {"physical_hourly": {"cron": "0 * * * *", "type": "incr"}}})
    services = make_console(settings, clock=clock).services
    [job] = [j for j in scheduled_jobs(services) if j.kind == "physical"]
    assert (job.name, job.database, job.backup_type) == ("physical_hourly main", "main", "incr")

    recorder = Recorder()
    assert run_scheduled(services, recorder, job) == "succeeded"
    made = info(pgbackrest_setup.cfg)[-1]
    posted = "\n".join(recorder.texts("C0DIGEST"))
    assert "Physical backup #1 of main (scheduled) — incr" in posted
    assert f"succeeded: incr {made.label}" in posted and f"WAL range: {made.wal_start}..{made.wal_stop}" in posted
    [record] = list_physical_backups(services.store, "main")
    assert (record.label, record.kind, record.created_at) == (made.label, "scheduled", iso(clock.now))
    [run] = health_state.runs(services.store, job="physical_hourly main")
    assert run["status"] == "succeeded" and run["started_at"] == iso(clock.now)
    assert not recorder.texts("C0ALERTS")


@pytest.mark.parametrize("schedules, message", [
    ({"other": {"physical": "0 2 * * *"}}, "schedules.other.physical: databases.other has no pgbackrest"),
    ({"main": {"physical": {"cron": "0 2 * * *", "type": "weekly"}}}, "schedules.main.physical.type: 'weekly' is not full"),
    ({"main": {"physical": {"cron": "0 2 * * *", "format": "plain"}}}, "schedules.main.physical.format: unknown key"),
])
def test_physical_schedules_are_checked_at_load(tmp_path, pgbackrest_setup, schedules, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        physical_settings(tmp_path, pgbackrest_setup, "postgresql://localhost/x", schedules=schedules)


@pytest.mark.parametrize("value, message", [
    ({"repo_path": "/r", "pg_path": "/p"}, "databases.main.pgbackrest.stanza: expected a stanza name"),
    ({"stanza": "main", "repo_path": "/r"}, "databases.main.pgbackrest.pg_path: missing"),
    ({"stanza": "main", "repo_path": "relative", "pg_path": "/p"}, "pgbackrest.repo_path: expected an absolute path"),
    ({"stanza": "main", "repo_path": "/r", "pg_path": "/p", "pg_port": 70000}, "pgbackrest.pg_port: expected a port"),
    ({"stanza": "main", "repo_path": "/r", "pg_path": "/p", "retention_full": 0}, "pgbackrest.retention_full"),
    ({"stanza": "main", "config": "/etc/pgbackrest.conf", "pg_port": 5432}, "pgbackrest.pg_port: unknown key"),
    ({"stanza": "a;b", "config": "/etc/pgbackrest.conf"}, "pgbackrest.stanza: expected a stanza name"),
    ("main", "databases.main.pgbackrest: expected a table"),
])
def test_pgbackrest_settings_are_checked_at_load(tmp_path, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(tmp_path, "postgresql://localhost/x", databases={"main": {"pgbackrest": value}})


def test_a_generated_config_holds_the_stanza_and_no_password(tmp_path):
    dsn = "postgresql://backup_user:s3cret-pw@%2Frun%2Fpg:5433/app"  # a socket folder as host
    settings = make_settings(tmp_path, dsn, databases={"main": {"pgbackrest": {
        "stanza": "prod", "repo_path": str(tmp_path / "repo"), "pg_path": "/var/lib/postgresql/15/main",
        "pg_port": 5433, "retention_full": 4}}})
    cfg = engine_config(settings, "main")
    assert cfg.config_path == generated_config_dir(settings, "main") / "pgbackrest.conf"
    assert (cfg.stanza, cfg.pg_user, cfg.password, str(cfg.pg_socket_path)) == ("prod", "backup_user", "s3cret-pw", "/run/pg")
    text = cfg.config_path.read_text()
    assert "[prod]" in text and "pg1-path=/var/lib/postgresql/15/main" in text and "pg1-port=5433" in text
    assert "repo1-retention-full=4" in text and "pg1-user=backup_user" in text
    assert "s3cret-pw" not in text
    assert stat.S_IMODE(os.stat(cfg.config_path).st_mode) == 0o600


def run_check(config, env):
    full_env = {"PATH": os.environ["PATH"], **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(config)], capture_output=True,
                          text=True, env=full_env, timeout=300)


def test_backupbot_check_reports_the_stanza_and_its_archiving(tmp_path, pgbackrest_setup, archived_dsn, sample_dsn,
                                                              slack_env):
    setup = pgbackrest_setup
    config = tmp_path / "backupbot.toml"
    scratch = setup.workdir / f"scratch-{tmp_path.name}"  # as root, postgres must reach it (pytest's tmp_path is 0700)
    config.write_text(
        f'[state]\npath = "{tmp_path / "s.db"}"\nscratch_dir = "{scratch}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
        f'signing_key_files = ["{suite_signing_key()}"]\n'
        '[access]\noperators = ["U0ALICE"]\napprovers = ["U0BOB"]\n'
        f'[databases.main]\nurl_env = "DATABASE_URL"\n'
        f'pgbackrest = {{ config = "{setup.cfg.config_path}", stanza = "{setup.cfg.stanza}" }}\n')
    result = run_check(config, {"DATABASE_URL": archived_dsn, **slack_env})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"ok   scratch {scratch}: private to this bot") for line in lines), lines
    assert "ok   pgbackrest main (stanza main): archive_mode on, archive_command pushes to this stanza" in lines
    archived = next(line for line in lines if "last archived WAL" in line)
    assert re.match(r"^ok   pgbackrest main \(stanza main\): last archived WAL [0-9A-F]{24}(\.[0-9A-F]{8}\.backup)? "
                    r"\(.+ ago\); \d+ failure\(s\)",
                    archived), archived  # ok: no failure newer than the last success
    assert "FAILED" not in archived
    assert "ok   pgbackrest main (stanza main): the stanza exists in the repository" in lines
    assert "ok   pgbackrest main (stanza main): pgbackrest check ok (a WAL switch reached the repository)" in lines
    assert setup.cluster.password not in result.stdout + result.stderr

    # a stanza the repository does not hold: said by check, with the command that creates it
    missing = tmp_path / "missing.toml"
    missing.write_text(config.read_text().replace(f'stanza = "{setup.cfg.stanza}"', 'stanza = "nosuch"'))
    result = run_check(missing, {"DATABASE_URL": archived_dsn, **slack_env})
    assert result.returncode == 1
    stanza_line = next(line for line in result.stdout.splitlines() if "stanza-create" in line)
    assert stanza_line.startswith("FAIL pgbackrest main (stanza nosuch): ")
    assert "`pgbackrest --stanza=nosuch stanza-create`" in stanza_line

    # the same stanza named for a server that does not archive into it: check says so and fails
    config.write_text(config.read_text().replace('url_env = "DATABASE_URL"', 'url_env = "PLAIN_URL"'))
    result = run_check(config, {"PLAIN_URL": sample_dsn})
    assert result.returncode == 1
    assert "FAIL pgbackrest main (stanza main): archive_mode off, archive_command does not push to this stanza" \
        in result.stdout
    assert "expected pgbackrest --stanza=main archive-push %p" in result.stdout
    assert "Traceback" not in result.stderr
