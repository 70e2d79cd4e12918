"""Scheduled DR rehearsals: a new server, the globals, the newest intact full backup, the drill's checks,
the application's own checks against the copy, the age identity, the RTO, the teardown; run through
the scheduler's job with an injected clock (no test sleeps for a schedule)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from bot.scheduler import build_scheduler
from commands.errors import ConfigError
from commands.restore.app_checks import run_verify_command
from commands.restore.rehearsal import run_rehearsal
from commands.schedules import SCHEDULER, build_digest, run_scheduled, scheduled_jobs
from state import incidents as incident_state
from state.backups import get_backup
from tests.builders import FakeClock, Recorder, make_console, make_settings
from tests.test_encrypted_backups import keygen

CHANNELS = {"alerts": "C0ALERTS", "digest": "C0DIGEST"}
CHECK = """
import json, os, sys
import psycopg
seen = {k: os.environ.get(k) for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER")}
seen["names"] = sorted(os.environ)
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    seen["users"] = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    seen["port"] = conn.execute("SHOW port").fetchone()[0]
open(sys.argv[1], "w").write(json.dumps(seen))
print("42 passed")
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))


def check_command(tmp_path, exit_status: int = 0) -> str:
    script = tmp_path / "app_checks.py"
    script.write_text(CHECK)
    return f"{sys.executable} {script} {tmp_path / 'seen.json'} {exit_status}"


def rehearsed(tmp_path, dsn, clock, exit_status: int = 0, schedule="0 6 * * 0", env=None, **sections):
    databases = {"main": {"url_env": "DATABASE_URL", "verify_command": check_command(tmp_path, exit_status)}}
    settings = make_settings(tmp_path, dsn, env={"SLACK_BOT_TOKEN": "xoxb-not-for-the-app", **(env or {})},
                             channels=CHANNELS, databases=databases,
                             schedules={"main": {"backup": "0 2 * * *", "rehearsal": schedule}}, **sections)
    return make_console(settings, clock=clock)


def rehearsal_job(services):
    [job] = [j for j in scheduled_jobs(services) if j.kind == "rehearsal"]
    return job


def port_of(text: str) -> int:
    return int(text.split("on port ")[1].split()[0])


def test_a_scheduled_rehearsal_restores_on_a_new_cluster_checks_and_tears_down(tmp_path, sample_dsn, pg_cluster, clock):
    console = rehearsed(tmp_path, sample_dsn, clock)
    services, reply = console.services, Recorder()
    job = rehearsal_job(services)
    trigger = {j.id: j.trigger for j in build_scheduler(services, Recorder).get_jobs()}["rehearsal main"]
    assert trigger.get_next_fire_time(None, clock()) == datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # the Sunday
    assert "Backup #1 of main succeeded" in console.run("/backup")
    clock.advance(days=1, hours=4)
    assert run_scheduled(services, reply, job) == "succeeded"
    [text] = reply.texts("C0DIGEST")
    assert "DR rehearsal of main passed: backup #1 restored on a new cluster (initdb) on port" in text, text
    assert "RTO: " in text and "end to end, within the target of 4h00m (rto_full_hours)" in text
    assert "globals: from main/" in text and "verification: row counts:" in text and "match the backup" in text
    assert "application checks: `" in text and "passed: 42 passed" in text
    assert "age identity: the backup is not encrypted" in text
    assert "teardown: the new cluster was stopped and its data directory removed" in text
    seen = json.loads((tmp_path / "seen.json").read_text())
    port = port_of(text)
    assert seen["port"] == str(port) and port != pg_cluster.port and seen["users"] > 0  # the copy, not production
    assert seen["PGPORT"] == str(port) and seen["PGDATABASE"] == sample_dsn.rsplit("/", 1)[1]
    assert "SLACK_BOT_TOKEN" not in seen["names"] and "PYTHONPATH" not in seen["names"]  # none of the bot's own
    with pytest.raises(psycopg.OperationalError):  # the new cluster is gone
        psycopg.connect(f"host=127.0.0.1 port={port} dbname=postgres user=postgres connect_timeout=3")
    assert pg_cluster.password not in text
    digest = build_digest(services).text()
    assert "  DR rehearsal: RTO " in digest and "within the target of 4h00m (newest first: " in digest, digest


def test_a_failed_rehearsal_opens_an_incident_and_the_digest_shows_the_trend(tmp_path, sample_dsn, clock):
    console = rehearsed(tmp_path, sample_dsn, clock, exit_status=3)
    services, reply = console.services, Recorder()
    assert "  DR rehearsal: none yet" in build_digest(services).text()
    assert "succeeded" in console.run("/backup")
    assert run_scheduled(services, reply, rehearsal_job(services)) == "failed"
    text = reply.texts("C0DIGEST")[-1]
    assert "DR rehearsal of main FAILED (backup #1, on a new cluster" in text and "exited with status 3: 42 passed" in text, text
    assert "RTO: not measured" in text and "Opened incident #1." in text
    assert "teardown: the new cluster was stopped" in text
    [incident] = incident_state.list_incidents(services.store, "C0ALERTS")
    assert incident.is_open and incident.title == "main: DR rehearsal failed" and incident.database == "main"
    alerts = reply.texts("C0ALERTS")
    assert any("Incident #1" in t and "main: DR rehearsal failed" in t for t in alerts)  # the incident's header
    assert any(t.startswith(":rotating_light: DR rehearsal of main failed: application checks: ") and "status 3" in t
               for t in alerts)  # the alarm, once: not a second alert of the failed schedule
    assert not any("Scheduled rehearsal main failed" in t for t in alerts)
    assert "  DR rehearsal: the last one FAILED (target 4h00m) (newest first: FAILED)" in build_digest(services).text()
    # the application is fixed: the next one passes, and the trend shows both
    (tmp_path / "app_checks.py").write_text(CHECK.replace("sys.exit(int(sys.argv[2]))", "sys.exit(0)"))
    assert run_scheduled(services, reply, rehearsal_job(services)) == "succeeded"
    digest = build_digest(services).text()
    assert "within the target of 4h00m (newest first: " in digest and ", FAILED)" in digest, digest


def test_the_rto_is_measured_end_to_end_against_the_target(tmp_path, sample_dsn, clock):
    console = rehearsed(tmp_path, sample_dsn, clock)
    assert "succeeded" in console.run("/backup")
    ticks = iter([0.0, 5 * 3600.0])  # an injected monotonic clock: the rehearsal "took" five hours
    result = run_rehearsal(console.services, "main", None, SCHEDULER, timer=lambda: next(ticks))
    assert result.ok and result.rto_seconds == 5 * 3600
    assert "RTO: 5h00m end to end, OVER the target of 4h00m (rto_full_hours)" in result.text()
    assert "RTO 5h00m, OVER the target of 4h00m" in build_digest(console.services).text()


def test_the_newest_backup_if_corrupted_is_passed_over_and_the_rehearsal_fails(tmp_path, sample_dsn, clock):
    console = rehearsed(tmp_path, sample_dsn, clock)
    assert "succeeded" in console.run("/backup")
    clock.advance(hours=1)
    assert "Backup #2 of main succeeded" in console.run("/backup")
    artifact = tmp_path / "backups" / get_backup(console.services.store, 2).key
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    result = run_rehearsal(console.services, "main", None, SCHEDULER)
    assert not result.ok and result.backup_id == 1
    assert "backup: #1 of" in result.text() and "passed over #2 (backup #2 is corrupted" in result.text()
    assert "verification: row counts:" in result.text()  # the older one was still restored and checked


def test_an_encrypted_backup_proves_the_age_identity_and_a_lost_key_fails(tmp_path, sample_dsn, clock):
    identity = tmp_path / "key.txt"
    public = keygen(identity)
    storage = {"encrypt_to": [public], "identity_file": str(identity)}
    console = rehearsed(tmp_path, sample_dsn, clock, storage=storage)
    assert "encrypted with age" in console.run("/backup")
    result = run_rehearsal(console.services, "main", None, SCHEDULER)
    assert result.ok, result.text()
    assert f"age identity: {identity} decrypted the backup and its globals" in result.text()
    keygen(other := tmp_path / "other.txt")  # the key on this host is no longer one of the recipients
    identity.write_bytes(other.read_bytes())
    result = run_rehearsal(console.services, "main", None, SCHEDULER)
    assert not result.ok and "error: " in result.text() and "teardown: the new cluster was stopped" in result.text()


def test_a_rehearsal_on_a_configured_target_server(tmp_path, sample_dsn, dr_cluster, clock):
    console = rehearsed(tmp_path, sample_dsn, clock, schedule={"cron": "0 6 * * 0", "target": "dr"},
                        env={"DR_URL": dr_cluster.dsn()}, targets={"dr": {"url_env": "DR_URL"}})
    assert "succeeded" in console.run("/backup")
    reply = Recorder()
    assert run_scheduled(console.services, reply, rehearsal_job(console.services)) == "succeeded"
    text = reply.texts("C0DIGEST")[-1]
    assert "passed: backup #1 restored on target dr" in text and f"{dr_cluster.port}" in text, text
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["port"] == str(dr_cluster.port) and seen["PGDATABASE"].startswith("backupbot_rehearsal_1_")
    assert not dr_cluster.database_exists(seen["PGDATABASE"])  # dropped again
    assert f"teardown: {seen['PGDATABASE']} dropped" in text


@pytest.mark.parametrize("sections, message", [
    ({"schedules": {"main": {"rehearsal": {"cron": "0 6 * * 0", "target": "nowhere"}}}},
     "schedules.main.rehearsal.target: no [targets.nowhere] is configured"),
    ({"schedules": {"main": {"rehearsal": {"cron": "0 6 * * 0", "size": 1}}}}, "schedules.main.rehearsal"),
    ({"databases": {"main": {"url_env": "DATABASE_URL", "verify_command": "pytest 'unclosed"}}},
     "databases.main.verify_command: No closing quotation"),
    ({"databases": {"main": {"url_env": "DATABASE_URL", "verify_command": "  "}}}, "databases.main.verify_command"),
])
def test_bad_rehearsal_config_names_the_key(tmp_path, sample_dsn, sections, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        make_settings(tmp_path, sample_dsn, **sections)


def test_the_application_checks_have_a_time_limit_and_their_output_is_redacted(pg_cluster):
    copy = pg_cluster.dsn("postgres")
    slow = run_verify_command(f"{sys.executable} -c 'import time; time.sleep(30)'", copy, [], timeout=0.5)
    assert not slow.ok and slow.detail.endswith("did not finish within 0.5s")
    loud = run_verify_command(f"{sys.executable} -c 'import os; print(os.environ[\"DATABASE_URL\"]); exit(1)'", copy, [])
    assert not loud.ok and "exited with status 1" in loud.detail
    assert pg_cluster.password not in loud.detail and "***" in loud.detail
    missing = run_verify_command("/nonexistent/app-tests --fast", copy, [])
    assert not missing.ok and "`/nonexistent/app-tests` was not found" in missing.detail


LEDGER_CHECK = """
import json, os, sys
import psycopg
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    seen = {"rows": conn.execute("SELECT count(*) FROM ledger").fetchone()[0],
            "port": conn.execute("SHOW port").fetchone()[0], "PGDATABASE": os.environ["PGDATABASE"]}
open(sys.argv[1], "w").write(json.dumps(seen))
"""


def test_a_pgbackrest_database_is_rehearsed_at_a_random_recent_moment(tmp_path, pgbackrest_setup, clock):
    from tests.test_point_in_time_restore import pitr_state

    dsn = pgbackrest_setup.create_database("rehearse_app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        conn.execute("INSERT INTO ledger SELECT generate_series(1, 100)")
    script = tmp_path / "ledger_check.py"
    script.write_text(LEDGER_CHECK)
    databases = {"main": {"url_env": "DATABASE_URL", "verify_command": f"{sys.executable} {script} {tmp_path / 'seen.json'}",
                          "pgbackrest": {"config": str(pgbackrest_setup.cfg.config_path),
                                         "stanza": pgbackrest_setup.cfg.stanza}}}
    console = make_console(make_settings(tmp_path, dsn, databases=databases, channels=CHANNELS,
                                         schedules={"main": {"rehearsal": "0 6 * * 0"}},
                                         state=pitr_state(tmp_path, pgbackrest_setup)), clock=clock)
    assert "succeeded" in console.run("/backup physical --type incr")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ledger SELECT generate_series(101, 150)")
    reply = Recorder()
    assert run_scheduled(console.services, reply, rehearsal_job(console.services)) == "succeeded", reply.posts
    text = reply.texts("C0DIGEST")[-1]
    assert "DR rehearsal of main passed: physical backup #" in text and "(pgBackRest restore) on port" in text, text
    assert "replayed to a random recent moment" in text and "out of recovery" in text
    assert "application checks: `" in text and "RTO: " in text and "within the target" in text
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["PGDATABASE"] == "rehearse_app" and seen["port"] != str(pgbackrest_setup.cluster.port)
    assert 100 <= seen["rows"] <= 150  # the cluster as it was at some moment since the backup set ended
    with pytest.raises(psycopg.OperationalError):  # the restored cluster is gone
        psycopg.connect(f"host=127.0.0.1 port={seen['port']} dbname=postgres user=postgres connect_timeout=3")
