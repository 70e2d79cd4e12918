"""Point-in-time copies do not run forever (issue #19, item 7): a copy `/restore physical` / `--time`
leaves running is listed with its port and age in `/backup list` and the digest, runs with archiving
off on 127.0.0.1 only without the live cluster's job-running preload libraries, and is stopped and
removed by `/restore drop-copy ID` or once `[restore] copy_ttl_hours` ran out (the scheduler's sweep,
and start-up).

The cluster here is one of this module's own: its postgresql.conf names pg_cron in
shared_preload_libraries (pg_cron is not even installed, so a copy that tried to load it would not
start), which the session's shared cluster must not carry into other tests' copies.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from bot.scheduler import build_scheduler
from commands.pg.pgbackrest.backups import backup
from commands.pg.pgbackrest.restored_cluster import copy_preload, copy_settings
from commands.restore.copies import expire_copies
from commands.schedules import build_digest
from state import approvals as request_state
from state.restored_clusters import get_restored_cluster
from tests.builders import FakeClock, Recorder, make_console, make_settings
from tests.fix_pgbackrest import PgBackRestSetup, _private_dir, server_now, start_archiving_cluster
from tests.test_point_in_time_restore import pitr_state
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS", "U0OPS2"], "approvers": ["U0APP1"], "required_approvals": 1}


@pytest.fixture(scope="module")
def copies_setup():
    workdir = _private_dir("backupbot-copies-")
    cluster = None
    try:
        cluster, cfg = start_archiving_cluster(workdir)
        conf = Path(cfg.pg_path) / "postgresql.conf"
        # what the copy inherits from the backup; the live cluster is not restarted, so it never loads them
        with conf.open("a") as f:
            f.write("\nshared_preload_libraries = 'pg_stat_statements,pg_cron'\ncron.database_name = 'postgres'\n")
        before = server_now(cluster.dsn())
        time.sleep(1.1)
        first = backup(cfg, "full")
        time.sleep(1.1)
        yield PgBackRestSetup(cluster, cfg, workdir, before, first)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def copies_console(tmp_path, setup, dsn, clock=None, ttl_hours=24):
    databases = {"main": {"url_env": "DATABASE_URL",
                          "pgbackrest": {"config": str(setup.cfg.config_path), "stanza": setup.cfg.stanza}}}
    settings = make_settings(tmp_path, dsn, databases=databases, access=ACCESS, state=pitr_state(tmp_path, setup),
                             restore={"copy_ttl_hours": ttl_hours}, channels={"digest": "C0DIGEST"})
    return make_console(settings, **({"clock": clock} if clock else {}))


def restore_copy(console) -> tuple[int, int, Path]:
    """A physical backup and `/restore physical latest`, approved: returns (request id, port, data directory)
    of the copy left running."""
    assert "succeeded" in console.run("/backup physical --type incr")
    out = console.run("/restore physical latest")
    request_id = int(re.search(r"Restore request #(\d+)", out).group(1))
    out = approve(console, message_id(out, f"Restore request #{request_id}"), "U0APP1")
    assert "and verified" in out, out
    result = request_state.get_request(console.services.store, request_id).result
    return request_id, result["port"], Path(result["datadir"])


def copy_dsn(setup, port: int) -> str:
    return setup.cluster.dsn().replace(f":{setup.cluster.port}/", f":{port}/")


def postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().split()[0])


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def assert_gone(pid: int, port: int, datadir: Path) -> None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        status = ""
    # exited: gone, or a zombie whose parent is this machine's PID 1, which does not reap orphans
    assert not status or "State:\tZ" in status, status
    assert not datadir.exists() and not Path(f"{datadir}.keep").exists()
    assert not port_answers(port)


def test_a_copy_is_listed_runs_isolated_and_drop_copy_stops_and_removes_it(tmp_path, copies_setup):
    dsn, clock = copies_setup.cluster.dsn(), FakeClock()
    console = copies_console(tmp_path, copies_setup, dsn, clock=clock)
    request_id, port, datadir = restore_copy(console)
    try:
        clock.advance(minutes=90)
        out = console.run("/backup list")
        assert "Copies of production data:" in out, out
        line = next(x for x in out.splitlines() if f"copy #{request_id}:" in x)
        assert f"on 127.0.0.1:{port}, running, age 1h30m; dropped in 22h30m" in line, line
        assert f"`/restore drop-copy {request_id}`" in line

        with psycopg.connect(copy_dsn(copies_setup, port), autocommit=True) as conn:
            shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
                "archive_mode", "listen_addresses", "unix_socket_directories", "shared_preload_libraries",
                "max_logical_replication_workers")}
            workers = [r[0] for r in conn.execute("SELECT backend_type FROM pg_stat_activity").fetchall()]
        assert shown == {"archive_mode": "off", "listen_addresses": "127.0.0.1", "unix_socket_directories": "",
                         "shared_preload_libraries": "pg_stat_statements", "max_logical_replication_workers": "0"}
        assert "logical replication launcher" not in workers, workers  # no subscription can start applying

        # bad ids, and someone who neither asked for the copy nor approves
        assert "drop-copy needs a copy's number" in console.run("/restore drop-copy abc")
        assert "drop-copy needs a copy's number" in console.run("/restore drop-copy")
        assert "there is no point-in-time copy #99" in console.run("/restore drop-copy 99")
        console.run(":as U0OPS2")
        out = console.run(f"/restore drop-copy {request_id}")
        assert f"only @U0OPS, who asked for copy #{request_id}, or an approver may drop it" in out, out
        console.run(":as U0OPS")
        assert port_answers(port) and datadir.exists()

        pid = postmaster_pid(datadir)
        out = console.run(f"/restore drop-copy #{request_id}")
        assert f"copy #{request_id} (point-in-time copy of main on 127.0.0.1:{port}) is dropped by @U0OPS" in out, out
        assert "its cluster was stopped and its data directory" in out and "removed" in out
        assert_gone(pid, port, datadir)
        assert f"copy #{request_id}" not in console.run("/backup list")
        assert f"copy #{request_id} was already dropped at" in console.run(f"/restore drop-copy {request_id}")
        with psycopg.connect(dsn) as conn:  # the live cluster was not touched
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        console.services.close()
        if datadir.exists():
            from tests.test_point_in_time_restore import stop_restored
            stop_restored(str(datadir))


def test_a_copy_is_dropped_when_its_ttl_runs_out_by_the_sweep(tmp_path, copies_setup):
    clock = FakeClock()
    console = copies_console(tmp_path, copies_setup, copies_setup.cluster.dsn(), clock=clock, ttl_hours=2)
    request_id, port, datadir = restore_copy(console)
    try:
        clock.advance(hours=1)
        digest = build_digest(console.services).text()
        line = next(x for x in digest.splitlines() if f"copy #{request_id}:" in x)
        assert f"on 127.0.0.1:{port}, running, age 1h00m; dropped in 1h00m" in line, line
        job = build_scheduler(console.services, Recorder).get_job("drop expired copies")  # the sweep, every minute
        assert job.func.__name__ == "expire_copies" and job.trigger.interval == timedelta(minutes=1)
        recorder = Recorder()
        assert expire_copies(console.services, recorder) == []  # not yet
        assert port_answers(port)

        pid = postmaster_pid(datadir)
        clock.advance(hours=1, minutes=1)
        dropped = expire_copies(console.services, recorder)
        assert len(dropped) == 1 and f"copy #{request_id}" in dropped[0], dropped
        assert "expired after 2h00m ([restore] copy_ttl_hours)" in dropped[0]
        assert any("expired after 2h00m" in text for _, text in recorder.posts)  # in the request's thread
        assert_gone(pid, port, datadir)
        assert get_restored_cluster(console.services.store, request_id).dropped_by == "ttl"
        assert f"copy #{request_id}" not in build_digest(console.services).text()
    finally:
        console.services.close()
        if datadir.exists():
            from tests.test_point_in_time_restore import stop_restored
            stop_restored(str(datadir))


def test_startup_drops_expired_copies_and_a_row_pointing_elsewhere_is_never_followed(tmp_path, copies_setup):
    clock = FakeClock()
    dsn = copies_setup.cluster.dsn()
    console = copies_console(tmp_path, copies_setup, dsn, clock=clock, ttl_hours=1)
    request_id, port, datadir = restore_copy(console)
    try:
        store = console.services.store
        live_data = str(copies_setup.cfg.pg_path)
        with store.db() as db:  # a row changed to name the live cluster's data directory
            db.execute("UPDATE restored_clusters SET datadir = ? WHERE request_id = ?", [live_data, request_id])
        console.run(":as U0APP1")  # an approver may drop anyone's copy, but not this row's folder
        out = console.run(f"/restore drop-copy {request_id}")
        assert "is not a point-in-time copy's folder in this bot's scratch folder" in out, out
        assert "nothing was touched" in out and "only @" not in out  # allowed; the folder is what is refused
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert get_restored_cluster(store, request_id).dropped_at is None
        with store.db() as db:
            db.execute("UPDATE restored_clusters SET datadir = ? WHERE request_id = ?", [str(datadir), request_id])

        pid = postmaster_pid(datadir)
        console.services.close()  # the bot stops; its copy keeps running past its TTL
        clock.advance(hours=2)
        console = copies_console(tmp_path, copies_setup, dsn, clock=clock, ttl_hours=1)
        assert_gone(pid, port, datadir)
        assert "expired after 1h00m" in get_restored_cluster(console.services.store, request_id).drop_reason
    finally:
        console.services.close()
        if datadir.exists():
            from tests.test_point_in_time_restore import stop_restored
            stop_restored(str(datadir))


def test_job_running_preload_libraries_are_left_out_of_a_copy():
    inherited = 'pg_stat_statements, "$libdir/pg_cron.so",pglogical,timescaledb,pg_partman_bgw,pg_squeeze,powa'
    assert copy_preload(inherited) == ("pg_stat_statements", "timescaledb")
    lines = copy_settings(5999, copy_preload("timescaledb,pg_cron"))
    assert "shared_preload_libraries = 'timescaledb'" in lines
    assert "timescaledb.max_background_workers = 0" in lines  # kept, so its tables read, but no policy jobs run
    assert "timescaledb.max_background_workers = 0" not in copy_settings(5999, ())


def kill_cluster(datadir: Path) -> None:
    """SIGKILL to the copy's postmaster and its children, as systemd's KillMode=mixed (or `docker stop`)
    does to what is left in the bot's cgroup once the bot exited: postmaster.pid stays behind."""
    pid = postmaster_pid(datadir)
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid]
    for each in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in [pid, *children]):
        assert time.monotonic() < deadline, "the copy's processes did not die"
        time.sleep(0.1)


def _parent(proc: Path) -> int | None:
    try:
        return int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_a_copy_killed_with_the_bot_is_shown_not_running_and_runs_again_when_the_bot_starts(tmp_path, copies_setup,
                                                                                             reliability):
    dsn = copies_setup.cluster.dsn()
    console = copies_console(tmp_path, copies_setup, dsn)
    request_id, port, datadir = restore_copy(console)
    try:
        with psycopg.connect(copy_dsn(copies_setup, port), autocommit=True) as conn:
            conn.execute("SET synchronous_commit = on")  # the test clusters' own default is off
            conn.execute("CREATE TABLE extracted AS SELECT 1 AS found")  # someone was working in the copy
        kill_cluster(datadir)
        assert (datadir / "postmaster.pid").exists() and not port_answers(port)
        line = next(x for x in console.run("/backup list").splitlines() if f"copy #{request_id}:" in x)
        assert f"on 127.0.0.1:{port}, NOT running (its data directory is still there)" in line, line
        console.services.close()

        console = copies_console(tmp_path, copies_setup, dsn)  # the bot starts again (its unit restarted)
        line = next(x for x in console.run("/backup list").splitlines() if f"copy #{request_id}:" in x)
        assert f"on 127.0.0.1:{port}, running" in line, line
        with psycopg.connect(copy_dsn(copies_setup, port), autocommit=True) as conn:
            assert conn.execute("SELECT found FROM extracted").fetchone()[0] == 1
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"  # still the copy's own settings
        out = console.run(f"/restore drop-copy {request_id}")
        assert "its cluster was stopped and its data directory" in out, out
        reliability("restart", "a point-in-time copy's postgres SIGKILLed with the bot (systemd KillMode=mixed)", 1,
                    "listed NOT running; started again at the next start, with what was written in it")
    finally:
        console.services.close()
        if datadir.exists():
            from tests.test_point_in_time_restore import stop_restored
            stop_restored(str(datadir))
