"""Physical backups and point-in-time restores of a cluster on another host, through pgBackRest's own
TLS server (issue #21): the database host's side runs as postgres, the bot as an unprivileged user
that cannot read the data directory (tests/fix_pgbackrest_tls.py)."""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from commands.errors import ConfigError
from commands.pg.cluster import TemporaryCluster, free_port
from commands.pg.pgbackrest.config import PgBackRestConfig, TlsConfig
from commands.pg.pgbackrest.remote import remote_archive_command, remote_config, server_argv
from commands.pg.tools import pg_bin
from commands.settings import load_settings
from commands.settings.databases import parse_pgbackrest
from commands.signing import write_key_file
from state import approvals as request_state
from tests.builders import make_console
from tests.fix_pgbackrest import restart_cluster, server_now
from tests.fix_pgbackrest_tls import (
    BOT_USER,
    as_user,
    ensure_bot_user,
    make_certificates,
    owned_dir,
    remove,
    start_server,
    stop_server,
    write_owned,
)
from tests.test_restore import approve, message_id

CONFIG = """\
[state]
path = "{bot}/state/backupbot.db"
scratch_dir = "{bot}/scratch"

[storage]
url = "file://{bot}/backups"
signing_key_files = ["{bot}/signing.key"]

[databases.main]
url_env = "DATABASE_URL"

[databases.main.pgbackrest]
stanza = "remote"
repo_path = "{bot}/repo"
pg_path = "{data}"
pg_port = {pg_port}
pg_socket_path = "{socket}"
pg_host = "127.0.0.1"
pg_host_port = {pg_tls}
pg_host_cn = "pg.test"
pg_host_config = "{db}/pgbackrest.conf"
repo_host = "127.0.0.1"
tls_server_address = "127.0.0.1"
tls_server_port = {bot_tls}
tls_ca_file = "{bot}/tls/ca.crt"
tls_cert_file = "{bot}/tls/bot.crt"
tls_key_file = "{bot}/tls/bot.key"

[access]
operators = ["U0OPS"]
approvers = ["U0APP1"]
required_approvals = 1
"""


def cli(argv: list[str]) -> tuple[int, str, str]:
    """`backupbot ARGV` in this process (as the child's user), with its stdout and stderr."""
    from bot.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def bot_init(bot: Path, config: Path, db: Path, data: Path) -> dict:
    write_key_file(bot / "signing.key")
    try:
        os.listdir(data)
        readable = True
    except PermissionError:
        readable = False
    code, out, err = cli(["init", "--config", str(config), "--pgbackrest-remote", "main"])
    return {"code": code, "out": out, "err": err, "data_readable": readable, "uid": os.geteuid()}


def bot_check(config: Path) -> list[tuple[int, str]]:
    return cli(["check", "--config", str(config)])[:2]


def bot_backup_and_restore(config: Path, dsn: str) -> dict:
    console = make_console(load_settings(str(config)))
    backup = console.run("/backup physical")
    with psycopg.connect(dsn, autocommit=True) as conn:  # written after the backup: only the WAL brings them back
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, entry text NOT NULL)")
        conn.execute("INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 100) g")
    time.sleep(1.2)
    moment = server_now(dsn)
    time.sleep(1.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger WHERE id > 20")  # the mistake the restore undoes
    asked = console.run(f'/restore --time "{moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")}"')
    done = approve(console, message_id(asked, "Restore request #1"), "U0APP1") if "Restore request #1" in asked else ""
    row = request_state.get_request(console.services.store, 1)
    drill = console.run("/backup verify physical latest")
    return {"backup": backup, "asked": asked, "done": done, "result": row.result if row else None, "drill": drill}


@pytest.fixture
def two_hosts():
    """The database host's folder (postgres's) and the bot's (BOT_USER's), certificates in both, a cluster."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it runs the database host's side as postgres and the bot as " + BOT_USER)
    ensure_bot_user()
    certs = make_certificates()
    bot, db, cluster = owned_dir("backupbot-tls-bot-", BOT_USER), owned_dir("backupbot-tls-db-", "postgres"), None
    servers: list = []
    try:
        for name in ("ca.crt", "bot.crt", "bot.key"):
            write_owned(bot / "tls" / name, certs[name], BOT_USER)
        for mine, theirs in (("ca.crt", "ca.crt"), ("pg.crt", "server.crt"), ("pg.key", "server.key")):
            write_owned(db / "tls" / theirs, certs[mine], "postgres")
        for folder in ("log", "lock", "spool"):
            write_owned(db / folder / ".keep", b"", "postgres")
        cluster = TemporaryCluster().start()
        yield bot, db, cluster, servers
    finally:
        for proc in servers:
            stop_server(proc)
        for datadir in (bot / "scratch").glob("*/*") if (bot / "scratch").exists() else []:
            subprocess.run(["runuser", "-u", BOT_USER, "--", pg_bin("pg_ctl"), "-D", str(datadir), "-m", "immediate",
                            "stop"], capture_output=True, timeout=60)
        if cluster is not None:
            cluster.stop()
        remove(bot)
        remove(db)


def test_an_unprivileged_bot_backs_up_and_restores_a_remote_cluster_to_a_time_over_tls(two_hosts, slack_env):
    bot, db, cluster, servers = two_hosts
    dsn = cluster.create_database("remote_app")
    data = cluster.dir / "data"
    pg_tls, bot_tls = free_port(), free_port()
    config = bot / "backupbot.toml"
    write_owned(config, CONFIG.format(bot=bot, db=db, data=data, pg_port=cluster.port, socket=cluster.dir, pg_tls=pg_tls,
                                      bot_tls=bot_tls).encode(), BOT_USER)
    env = {"DATABASE_URL": dsn, **slack_env}  # check also asks the (fake) Slack Web API

    # the bot's side: its config, and what the database host needs
    init = as_user(BOT_USER, bot_init, bot, config, db, data, env=env)
    assert init["uid"] == pwd.getpwnam(BOT_USER).pw_uid and init["data_readable"] is False  # not root, not postgres
    assert init["code"] == 0, init["err"]
    remote_conf = init["out"]
    assert "repo1-host-type=tls" in remote_conf and "tls-server-auth=bot.test=remote" in remote_conf, remote_conf
    archive_command = re.search(r"^archive_command: (.+)$", init["err"], re.M).group(1)
    assert archive_command == f"pgbackrest --config={db}/pgbackrest.conf --stanza=remote archive-push %p"
    bot_conf = Path(re.search(r"This host's side is in (\S+) ", init["err"]).group(1))
    assert "pg1-host-type=tls" in (text := bot_conf.read_text()) and "tls-server-auth=pg.test=remote" in text

    # the database host's side, as its administrator would set it up from that output
    write_owned(db / "pgbackrest.conf", remote_conf.encode(), "postgres")
    with cluster.admin() as conn:
        conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(archive_command)))
    restart_cluster(cluster)
    # pgBackRest there logs in over the socket as postgres: its password by environment, as peer auth would not need
    servers.append(start_server(server_argv(db / "pgbackrest.conf"), "postgres", pg_tls,
                                env={"PGPASSWORD": cluster.password}, log=db / "log" / "server.out"))

    # `backupbot check` creates the missing stanza over TLS and says the bot's own TLS server is not running
    code, out = as_user(BOT_USER, bot_check, config, env=env)
    assert "pgbackrest main (stanza remote): stanza created (pgbackrest stanza-create over TLS to 127.0.0.1)" in out, out
    assert code == 1 and f"FAIL pgbackrest main (stanza remote): nothing listens on 127.0.0.1:{bot_tls}" in out, out
    assert "archive_command pushes to this stanza" in out
    # once it runs, WAL goes both ways: the check passes, and the stanza is not created again
    servers.append(start_server(server_argv(bot_conf), BOT_USER, bot_tls, log=bot / "server.out"))
    code, out = as_user(BOT_USER, bot_check, config, env=env)
    assert "pgbackrest check ok (a WAL switch reached the repository) over TLS" in out, out
    assert code == 0 and "stanza created" not in out, out

    # a physical backup over TLS, rows written after it, a mistake, and a restore to the time before the mistake
    flow = as_user(BOT_USER, bot_backup_and_restore, config, dsn, env=env)
    assert "Physical backup #1 of main succeeded: full" in flow["backup"], flow["backup"]
    assert "Reachable: yes" in flow["asked"], flow["asked"]
    assert "restored to" in flow["done"] and "and verified" in flow["done"], flow["done"]
    result = flow["result"]
    copy = dsn.replace(f":{cluster.port}/", f":{result['port']}/")
    with psycopg.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 100  # the delete is not there
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    with psycopg.connect(dsn) as conn:  # the live cluster kept its (mistaken) present
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 20
    # the copy is on the bot's host, the bot user's: restored from the repository there, not on the database host
    assert os.stat(result["datadir"]).st_uid == pwd.getpwnam(BOT_USER).pw_uid
    assert not str(result["datadir"]).startswith(str(cluster.dir))
    # a drill restores the same way, and `pgbackrest verify` checks the repository on the bot's host
    assert "Drill of physical backup #1" in flow["drill"] and "passed" in flow["drill"], flow["drill"]
    assert "pgbackrest verify: ok" in flow["drill"]


def test_init_for_a_cluster_on_this_host_says_there_is_no_remote_side(tmp_path):
    config = tmp_path / "backupbot.toml"
    config.write_text(f'''[state]
path = "{tmp_path}/backupbot.db"
[databases.main]
url_env = "DATABASE_URL"
pgbackrest = {{ stanza = "main", repo_path = "{tmp_path}/repo", pg_path = "/var/lib/postgresql/16/main" }}
''')
    code, out, err = cli(["init", "--config", str(config), "--pgbackrest-remote", "main"])
    assert code != 0 and out == ""
    assert "databases.main.pgbackrest has no pg_host: the cluster is on this host" in err, err
    assert not config.with_name("backupbot.signing.key").exists()  # no starter config, no key either


def test_the_database_hosts_config_in_the_default_layout(tmp_path):
    certs = make_certificates()
    for name in ("ca.crt", "bot.crt", "bot.key"):
        (tmp_path / name).write_bytes(certs[name])
    cfg = PgBackRestConfig(stanza="main", repo_path=Path("/var/lib/backupbot/repo"),
                           pg_path=Path("/var/lib/postgresql/16/main"),
                           config_path=Path("/var/lib/backupbot/pgbackrest/main/pgbackrest.conf"),
                           tls=TlsConfig(pg_host="db1", repo_host="backup1", ca_file=tmp_path / "ca.crt",
                                         cert_file=tmp_path / "bot.crt", key_file=tmp_path / "bot.key"))
    # db1's own pgbackrest and its own config at the default place: nothing under the bot's state folder
    assert remote_archive_command(cfg) == "pgbackrest --stanza=main archive-push %p"
    text = remote_config(cfg)
    for line in ("repo1-host=backup1", "repo1-host-type=tls", "repo1-host-port=8432",
                 "repo1-host-config=/var/lib/backupbot/pgbackrest/main/pgbackrest.conf",
                 "repo1-host-cert-file=/etc/pgbackrest/tls/server.crt", "tls-server-port=8432",
                 "tls-server-auth=bot.test=main", "pg1-path=/var/lib/postgresql/16/main"):
        assert line in text.splitlines(), (line, text)
    assert "log-path" not in text  # pgBackRest's own defaults on db1


def test_tls_settings_are_checked_when_the_config_loads(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.crt", "bot.crt", "bot.key"))
    for path in (ca, cert, key):
        path.write_text("x")
    key.chmod(0o644)
    base = {"stanza": "main", "repo_path": "/var/lib/backupbot/repo", "pg_path": "/var/lib/postgresql/16/main",
            "pg_host": "db1.internal", "repo_host": "backup1.internal", "tls_ca_file": str(ca),
            "tls_cert_file": str(cert), "tls_key_file": str(key)}
    with pytest.raises(ConfigError, match=r"tls_key_file: .* is readable by others \(mode 0644\): chmod 600"):
        parse_pgbackrest(base, "databases.main.pgbackrest")
    key.chmod(0o600)
    remote = parse_pgbackrest(base, "databases.main.pgbackrest").remote
    assert remote.pg_host == "db1.internal" and remote.pg_host_port == 8432 and remote.tls_server_port == 8432
    with pytest.raises(ConfigError, match="tls_ca_file: cannot read .*missing.crt"):
        parse_pgbackrest({**base, "tls_ca_file": str(tmp_path / "missing.crt")}, "databases.main.pgbackrest")
    with pytest.raises(ConfigError, match="repo_host: missing"):
        parse_pgbackrest({k: v for k, v in base.items() if k != "repo_host"}, "databases.main.pgbackrest")
    with pytest.raises(ConfigError, match="only with pg_host"):
        parse_pgbackrest({k: v for k, v in base.items() if k != "pg_host"}, "databases.main.pgbackrest")
    with pytest.raises(ConfigError, match="pg_host: expected a host name"):
        parse_pgbackrest({**base, "pg_host": "db1; rm -rf /"}, "databases.main.pgbackrest")
