"""Restore inputs in the clear live in the bot instance's own scratch folder (issue #17, item 4).

An operator restores an encrypted backup; while the restore runs, the decrypted, decompressed
archive sits in a 0700 folder under `scratch` beside the state database, 0600, and nowhere in the
shared /tmp. The bot is killed mid-restore; at the next start the leftover is gone. A scratch folder
that is a symlink, someone else's or writable by others stops the bot at start with a clear message.
A point-in-time copy runs from a folder of its own there, the cluster owner's, and outlives a restart;
a copy a killed drill left running is stopped and removed at the next start.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
import time

import psycopg

from state import Store
from state import approvals as request_state
from tests.builders import make_console, make_settings, slack_console_process
from tests.test_encrypted_backups import keygen
from tests.test_point_in_time_restore import pitr_console, stop_restored
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_an_encrypted_restore_keeps_its_plain_files_private_and_a_killed_ones_go_at_start(tmp_path, sample_dsn):
    public = keygen(tmp_path / "key.txt")
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n'
                      f'[storage]\nurl = "file://{tmp_path / "backups"}"\nencrypt_to = ["{public}"]\n'
                      f'identity_file = "{tmp_path / "key.txt"}"\n'
                      '[access]\noperators = ["U0OPS"]\napprovers = ["U0APP1"]\n')
    bot = slack_console_process(config, sample_dsn)  # it approves from inside the process this test kills
    lock = psycopg.connect(sample_dsn)
    try:
        bot.stdin.write(b"/backup\n/restore 1 --tables abandoned_carts\n")  # in place: it waits at the target
        bot.stdin.flush()
        store = Store(str(tmp_path / "state.db"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not request_state.get_request(store, 1):
            time.sleep(0.1)
        lock.execute("SELECT count(*) FROM public.users")  # the restore waits at the target while we look
        bot.stdin.write(b":as U0APP1\n:react M2 white_check_mark\n")
        bot.stdin.flush()
        with psycopg.connect(sample_dsn, autocommit=True) as admin:
            while time.monotonic() < deadline:
                if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the restore never reached the target")

        root = tmp_path / "scratch"
        assert os.lstat(root).st_uid == os.geteuid() and mode_of(root) == 0o700
        [job] = list(root.iterdir())
        assert mode_of(job) == 0o700
        archive = job / "archive.dump"
        assert archive.read_bytes()[:5] == b"PGDMP"  # decrypted and decompressed: the data in the clear
        # the archive and the table restore's TOC list, both readable by this user only
        assert {p.name: mode_of(p) for p in job.iterdir()} == {"archive.dump": 0o600, "restore.list": 0o600}
    finally:
        bot.kill()
        bot.wait()
        lock.rollback()
        lock.close()

    assert job.exists()  # a killed bot cleans nothing up
    restarted = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS,
                                           storage={"url": f"file://{tmp_path / 'backups'}", "encrypt_to": [public],
                                                    "identity_file": str(tmp_path / "key.txt")}))
    assert [j.kind for j in restarted.services.interrupted_jobs] == ["restore"]
    assert not job.exists() and list(root.iterdir()) == []


def start_with_scratch(tmp_path, scratch) -> subprocess.CompletedProcess:
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\nscratch_dir = "{scratch}"\n'
                      f'[storage]\nurl = "file://{tmp_path / "backups"}"\n[access]\noperators = ["U0OPS"]\n')
    return subprocess.run([sys.executable, "-m", "bot.cli", "console", "--config", str(config)], input="/backup help\n",
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_a_scratch_folder_others_could_tamper_with_stops_the_bot_at_start(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(elsewhere)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    for scratch, why in [(tmp_path / "link", "is a symlink"), (shared, "is writable by others (mode 0777)"),
                         (theirs, f"belongs to uid {nobody.pw_uid}, not to this bot")]:
        result = start_with_scratch(tmp_path, scratch)
        assert result.returncode == 1, result
        assert f"backupbot: the scratch folder {scratch} ([state] scratch_dir) {why}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        check = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(tmp_path / "bot.toml")],
                               capture_output=True, text=True, timeout=60,
                               env={"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        assert check.returncode == 1 and f"FAIL scratch: the scratch folder {scratch}" in check.stdout, check.stdout
    assert list(elsewhere.iterdir()) == [] and list(theirs.iterdir()) == []
    private = tmp_path / "private"
    assert start_with_scratch(tmp_path, private).returncode == 0
    assert mode_of(private) == 0o700


def test_a_point_in_time_copy_runs_from_its_own_private_folder_and_outlives_a_restart(tmp_path, pgbackrest_setup):
    dsn = pgbackrest_setup.create_database("scratch_pitr")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    assert "succeeded" in console.run("/backup physical --type incr")
    out = console.run("/restore physical latest")
    out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
    assert "and verified" in out, out
    datadir = request_state.get_request(console.services.store, 1).result["datadir"]
    try:
        root = os.path.dirname(datadir)
        assert root == console.services.settings.scratch_dir
        assert os.lstat(root).st_uid == os.geteuid()
        assert mode_of(root) == (0o711 if os.geteuid() == 0 else 0o700)  # postgres passes through, never lists
        owner = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert os.lstat(datadir).st_uid == owner and mode_of(datadir) == 0o700
        console.services.close()
        restarted = pitr_console(tmp_path, pgbackrest_setup, dsn)  # the copy is the user's: it stays up
        port = request_state.get_request(restarted.services.store, 1).result["port"]
        with psycopg.connect(dsn.replace(f":{pgbackrest_setup.cluster.port}/", f":{port}/")) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
            assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == ""  # no socket in a shared /tmp
    finally:
        stop_restored(datadir)


def test_a_copy_left_running_by_a_killed_drill_is_stopped_and_removed_at_start(tmp_path, pgbackrest_setup):
    from commands.pg import scratch
    from commands.pg.pgbackrest.restored_cluster import restore_to_new_datadir

    dsn = pgbackrest_setup.create_database("scratch_killed")
    console = pitr_console(tmp_path, pgbackrest_setup, dsn)
    settings = console.services.settings
    from commands.pg.pgbackrest.backups import info

    label = info(pgbackrest_setup.cfg)[-1].label  # the newest set: the stanza keeps two fulls, older ones expire
    console.services.close()
    # what a drill killed half-way leaves: its restored cluster running from a job folder
    job = scratch.make_job_dir(settings, scratch.job_path(settings, "drill", "main", "1"), owner=pgbackrest_setup.cfg.run_as())
    leftover = restore_to_new_datadir(pgbackrest_setup.cfg, None, label, job)
    try:
        with psycopg.connect(leftover.dsn(), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pitr_console(tmp_path, pgbackrest_setup, dsn)  # the next start
        assert not job.exists() and list(job.parent.iterdir()) == []
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", leftover.port)) != 0  # the server is gone, not orphaned
    finally:
        leftover.stop_and_remove()
