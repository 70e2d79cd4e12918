"""CI's deployment stage (run by .ci/run after .ci/image): the shipped deployments, each in the layout the
README's "The database on another host" section documents, take a physical backup over pgBackRest's TLS
server, restore to a time through an approved Slack request, and drill the backup.

    python3 .ci/deployment.py image     # the image as shipped: `backupbot run` under tini, uid 10001
    python3 .ci/deployment.py systemd   # deploy/backupbot.service (+ backupbot-pgbackrest@.service) under
                                        # systemd, installed by the README's steps on plain Debian

db1 (the database host) is this machine: a throwaway cluster and its `pgbackrest server`, both as
postgres. backup1 (the bot's host) is a container on the host's network. The bot cannot read db1's data
directory. Slack is the tests' fake Web API on 127.0.0.1 and signed requests to the bot's HTTP port, so
the approval is a real reaction from an approver. Every step prints what it proved; a failure prints
the logs and exits 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from commands.pg.cluster import TemporaryCluster  # noqa: E402
from commands.signing import write_key_file  # noqa: E402
from tests.fix_pgbackrest import restart_cluster, server_now  # noqa: E402
from tests.fix_pgbackrest_tls import make_certificates, start_server, stop_server, write_owned  # noqa: E402
from tests.fix_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlackWebAPI, SlackSender  # noqa: E402

IMAGE = os.environ.get("BACKUPBOT_IMAGE", "backupbot:ci")
BASE = os.environ.get("BACKUPBOT_BASE", "backupbot-base:bookworm")
STANZA = "main"


class Failed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise Failed(f"{' '.join(argv[:6])}… exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def config_text(db: Path, data: Path, cluster: TemporaryCluster, pg_tls: int, bot_tls: int, state: str) -> str:
    """backup1's backupbot.toml, as the README's step 2 writes it (host names are 127.0.0.1 here)."""
    return f"""\
[state]
path = "{state}/backupbot.db"

[storage]
url = "file://{state}/backups"
signing_key_files = ["/etc/backupbot/signing.key"]

[databases.main]
url_env = "DATABASE_URL"

[databases.main.pgbackrest]
stanza = "{STANZA}"
repo_path = "{state}/pgbackrest-repo"
pg_path = "{data}"
pg_port = {cluster.port}
pg_socket_path = "{cluster.dir}"
pg_host = "127.0.0.1"
pg_host_port = {pg_tls}
pg_host_cn = "pg.test"
pg_host_config = "{db}/pgbackrest.conf"
repo_host = "127.0.0.1"
tls_server_address = "127.0.0.1"
tls_server_port = {bot_tls}
tls_ca_file = "/etc/backupbot/tls/ca.crt"
tls_cert_file = "/etc/backupbot/tls/bot.crt"
tls_key_file = "/etc/backupbot/tls/bot.key"

[access]
operators = ["U0OPS"]
approvers = ["U0APP1"]
required_approvals = 1
"""


def postgres_uids(container: str) -> set[str]:
    """The uids of the postgres server processes in a container, from the host's process table."""
    top = sh(["docker", "top", container, "-o", "pid,uid,args"]).stdout.splitlines()[1:]
    return {line.split()[1] for line in top if "postgres -D" in line or "postgres: " in line}


class Backup1:
    """The bot's host. Subclasses say how it runs: the image's containers, or systemd's units."""

    user = "backupbot"
    state = "/var/lib/backupbot"

    def __init__(self, work: Path, env: dict[str, str]):
        self.work, self.env = work, env
        self.containers: list[str] = []

    def cli(self, args: list[str]) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def start_repo_server(self, conf: str) -> None:
        raise NotImplementedError

    def start_bot(self) -> int:
        raise NotImplementedError

    def copy_runs_here(self) -> str:
        """Where the point-in-time copy's postgres runs, proved from the process table, not the bot's word."""
        raise NotImplementedError

    def stop_bot(self) -> str:
        """Stop the bot as its supervisor does, and say how it ended."""
        raise NotImplementedError

    def start_bot_again(self) -> None:
        raise NotImplementedError

    def logs(self) -> str:
        return "\n".join(sh(["docker", "logs", "--tail", "60", c], check=False).stdout
                         + sh(["docker", "logs", "--tail", "60", c], check=False).stderr for c in self.containers)

    def close(self) -> None:
        for container in self.containers:
            sh(["docker", "rm", "-f", container], check=False)


class ImageHost(Backup1):
    """The image as shipped: state on a volume, config and secrets mounted read-only, the bot under tini
    (the image's entrypoint) as uid 10001, and the repository's `pgbackrest server` in a second container
    on the same volume."""

    def __init__(self, work: Path, env: dict[str, str], etc: Path):
        super().__init__(work, env)
        self.etc, self.data = etc, work / "backup1-data"
        self.data.mkdir(mode=0o700)
        os.chown(self.data, 10001, 10001)
        for path in [etc, *etc.rglob("*")]:
            os.chown(path, 10001, 10001)
        self.port, self.health = free_port(), free_port()

    def _run(self, detach: bool, argv: list[str]) -> list[str]:
        return ["docker", "run", "-d" if detach else "--rm", "--network", "host", "--env-file", str(self.etc / "env"),
                "-v", f"{self.etc}:/etc/backupbot:ro", "-v", f"{self.data}:{self.state}", IMAGE, *argv]

    def cli(self, args: list[str]) -> subprocess.CompletedProcess:
        return sh(self._run(False, ["backupbot", *args]), check=False)

    def start_repo_server(self, conf: str) -> None:
        self.containers.append(sh(self._run(True, ["pgbackrest", f"--config={conf}", "server"])).stdout.strip())

    def start_bot(self) -> int:
        self.containers.append(sh(self._run(True, ["backupbot", "run", "--host", "127.0.0.1", "--port", str(self.port),
                                                    "--health-port", str(self.health)])).stdout.strip())
        return self.port

    def copy_runs_here(self) -> str:
        uids = postgres_uids(self.containers[-1])
        if uids != {"10001"}:
            raise Failed(f"the copy's postgres is not a process of the bot's container as uid 10001: {uids}")
        return "in the bot's container, as uid 10001"

    def stop_bot(self) -> str:
        started = time.monotonic()
        sh(["docker", "stop", "--time", "90", self.containers[-1]])
        took = time.monotonic() - started
        code = sh(["docker", "inspect", "-f", "{{.State.ExitCode}}", self.containers[-1]]).stdout.strip()
        if code != "0" or took >= 10:
            raise Failed(f"docker stop took {took:.1f} s, exit code {code}")
        return f"docker stop: exit code 0 after {took:.1f} s"

    def start_bot_again(self) -> None:
        sh(["docker", "start", self.containers[-1]])


class SystemdHost(Backup1):
    """deploy/backupbot.service and deploy/backupbot-pgbackrest@.service under systemd (PID 1 of a
    container), installed on plain Debian by the README's steps: the packages, `useradd --system`, a venv
    in /opt/backupbot from the wheel, the units in /etc/systemd/system."""

    DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update && install -d /etc/postgresql-common \\
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \\
 && apt-get install -y --no-install-recommends systemd systemd-sysv dbus ca-certificates python3 python3-venv \\
      postgresql-15 pgbackrest age zstd \\
 && rm -rf /var/lib/apt/lists/*
COPY wheels /tmp/wheels
COPY deploy /tmp/deploy
RUN useradd --system --user-group --home-dir /var/lib/backupbot --shell /usr/sbin/nologin backupbot \\
 && python3 -m venv /opt/backupbot \\
 && /opt/backupbot/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /tmp/wheels \\
      -c /tmp/deploy/constraints.txt backupbot \\
 && install -d -m 0755 /etc/backupbot \\
 && cp /tmp/deploy/backupbot.service /tmp/deploy/backupbot-pgbackrest@.service /etc/systemd/system/ \\
 && rm -rf /tmp/wheels
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
"""

    def __init__(self, work: Path, env: dict[str, str], etc: Path, wheels: Path):
        super().__init__(work, env)
        ctx = work / "systemd-ctx"
        (ctx / "deploy").mkdir(parents=True)
        for name in ("backupbot.service", "backupbot-pgbackrest@.service", "constraints.txt"):
            (ctx / "deploy" / name).write_bytes((ROOT / "deploy" / name).read_bytes())
        sh(["cp", "-a", str(wheels), str(ctx / "wheels")])
        (ctx / "Dockerfile").write_text(self.DOCKERFILE)
        build = ["docker", "build", "--quiet", "--network", "host", "--build-arg", f"BASE={BASE}", "-t", "backupbot:ci-systemd",
                 str(ctx)]
        sh(build, timeout=1200)
        for port in (3000, 3001):  # the unit's own ports (ExecStart=… run --health-port 3001; HTTP on 3000)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise Failed(f"port {port} is taken on this machine: the unit's bot could not listen on it")
        # systemd as PID 1 needs CAP_SYS_ADMIN for its mounts (the units' ProtectSystem= etc.), and the
        # host's cgroups; the host's network, so that db1 and backup1 reach each other's TLS servers.
        self.name = sh(["docker", "run", "-d", "--cap-add", "SYS_ADMIN", "--network", "host", "--tmpfs", "/run",
                        "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "backupbot:ci-systemd"]).stdout.strip()
        self.containers.append(self.name)
        deadline = time.monotonic() + 120
        while sh(self.exec_argv(["systemctl", "is-system-running"]), check=False).stdout.strip() not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise Failed("systemd did not come up in the container")
            time.sleep(0.5)
        # /etc/backupbot as the README has it: root's, the bot's user can read the config, certificates and key
        sh(["docker", "cp", f"{etc}/.", f"{self.name}:/etc/backupbot/"])
        self.exec(["chown", "-R", "root:backupbot", "/etc/backupbot"])
        self.exec(["chmod", "-R", "g+rX,o-rwx", "/etc/backupbot"])
        self.exec(["chown", "root:root", "/etc/backupbot/env"])
        self.exec(["chmod", "0600", "/etc/backupbot/env"])
        # the keys: the bot's user's own, 0600 (the bot refuses a key that others can read)
        self.exec(["chown", "backupbot:backupbot", "/etc/backupbot/signing.key", "/etc/backupbot/tls/bot.key"])
        self.exec(["chmod", "0600", "/etc/backupbot/signing.key", "/etc/backupbot/tls/bot.key"])
        self.exec(["install", "-d", "-o", "backupbot", "-g", "backupbot", "-m", "0700", self.state])

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["docker", "exec", self.name, *argv]

    def exec(self, argv: list[str]) -> subprocess.CompletedProcess:
        return sh(self.exec_argv(argv))

    def cli(self, args: list[str]) -> subprocess.CompletedProcess:
        # as the README runs them by hand: the bot's user, the unit's config and environment
        env = [f"{k}={v}" for k, v in self.env.items()]
        return sh(self.exec_argv(["runuser", "-u", self.user, "--", "env", "BACKUPBOT_CONFIG=/etc/backupbot/backupbot.toml",
                                  *env, "/opt/backupbot/bin/backupbot", *args]), check=False)

    def start_repo_server(self, conf: str) -> None:
        expected = f"{self.state}/pgbackrest/main/pgbackrest.conf"  # [databases.main]
        if conf != expected:
            raise Failed(f"init wrote the bot's pgBackRest config at {conf}; backupbot-pgbackrest@.service reads {expected}")
        self.exec(["systemctl", "enable", "--now", "backupbot-pgbackrest@main.service"])
        self._wait_active("backupbot-pgbackrest@main.service")

    def start_bot(self) -> int:
        self.exec(["systemctl", "enable", "--now", "backupbot.service"])  # the README's last step
        self._wait_active("backupbot.service")
        self.health = 3001
        return 3000

    def _wait_active(self, unit: str) -> None:
        deadline = time.monotonic() + 60
        while sh(self.exec_argv(["systemctl", "is-active", unit]), check=False).stdout.strip() != "active":
            if time.monotonic() > deadline:
                raise Failed(f"{unit} is not active")
            time.sleep(0.5)

    def copy_runs_here(self) -> str:
        status = self.exec(["systemctl", "status", "--no-pager", "--lines=0", "backupbot.service"]).stdout
        uid = self.exec(["id", "-u", self.user]).stdout.strip()
        if "postgres -D /var/lib/backupbot/" not in status or postgres_uids(self.name) != {uid}:
            raise Failed(f"the copy's postgres is not in backupbot.service's cgroup as {self.user}:\n{status}")
        return "in backupbot.service's cgroup, as backupbot, under its ProtectSystem=strict"

    def stop_bot(self) -> str:
        started = time.monotonic()
        self.exec(["systemctl", "stop", "backupbot.service"])
        took = time.monotonic() - started
        shown = self.exec(["systemctl", "show", "backupbot.service", "-p", "Result", "-p", "ExecMainStatus"]).stdout.split()
        if shown != ["Result=success", "ExecMainStatus=0"] or took >= 10:
            raise Failed(f"systemctl stop took {took:.1f} s: {shown}")
        return f"systemctl stop: Result=success, exit status 0 after {took:.1f} s"

    def start_bot_again(self) -> None:
        self.exec(["systemctl", "start", "backupbot.service"])
        self._wait_active("backupbot.service")

    def logs(self) -> str:
        return sh(self.exec_argv(["journalctl", "--no-pager", "-n", "120"]), check=False).stdout

    def unit_properties(self) -> str:
        return self.exec(["systemctl", "show", "backupbot.service", "-p", "User", "-p", "ProtectSystem",
                          "-p", "KillMode", "-p", "TimeoutStopUSec"]).stdout


def wait_healthy(port: int, host: Backup1) -> None:
    import urllib.request

    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"the bot's /healthz on {port} never answered 200")
        time.sleep(0.5)


def request_message(fake: FakeSlackWebAPI) -> str:
    react = fake.said("reactions.add")[0]
    return f"{react['channel']}:{react['timestamp']}"


def flow(host: Backup1, cluster: TemporaryCluster, db: Path, dsn: str, fake: FakeSlackWebAPI, pg_tls: int) -> None:
    # backup1: both sides' pgBackRest config from `backupbot init --pgbackrest-remote` (README step 3)
    init = host.cli(["init", "--config", "/etc/backupbot/backupbot.toml", "--pgbackrest-remote", "main"])
    if init.returncode != 0:
        raise Failed(f"backupbot init --pgbackrest-remote exited {init.returncode}: {init.stderr}")
    archive_command = re.search(r"^archive_command: (.+)$", init.stderr, re.M).group(1)
    bot_conf = re.search(r"This host's side is in (\S+) ", init.stderr).group(1)
    # db1, as its administrator would set it up from that output (step 4)
    write_owned(db / "pgbackrest.conf", init.stdout.encode(), "postgres")
    with cluster.admin() as conn:
        conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(archive_command)))
    restart_cluster(cluster)
    db1_server = start_server(["pgbackrest", f"--config={db}/pgbackrest.conf", "server"], "postgres", pg_tls,
                              env={"PGPASSWORD": cluster.password}, log=db / "log" / "server.out")
    try:
        # backup1's own TLS server for the WAL db1 pushes (step 5), then `backupbot check` (step 6)
        host.start_repo_server(bot_conf)
        check = host.cli(["check"])
        for needle in ("stanza created (pgbackrest stanza-create over TLS to 127.0.0.1)",
                       "pgbackrest check ok (a WAL switch reached the repository) over TLS"):
            if needle not in check.stdout:
                raise Failed(f"backupbot check did not say {needle!r} (exit {check.returncode}):\n{check.stdout}{check.stderr}")
        if check.returncode != 0:
            raise Failed(f"backupbot check exited {check.returncode}:\n{check.stdout}")
        print("  backupbot check: stanza created over TLS; a WAL switch from db1 reached backup1's repository")

        port = host.start_bot()
        wait_healthy(host.health, host)
        slack = SlackSender(f"http://127.0.0.1:{port}/slack/events", fake)
        slack.command("/backup", "physical main", user="U0OPS")  # step 7
        backup = fake.wait_for_text("Physical backup #1 of main succeeded", timeout=300)
        print("  /backup physical: " + next(line for line in backup["text"].splitlines() if "succeeded" in line)[:140])

        with psycopg.connect(dsn, autocommit=True) as conn:  # after the backup: only the WAL brings them back
            conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, entry text NOT NULL)")
            conn.execute("INSERT INTO ledger SELECT g, 'entry ' || g FROM generate_series(1, 100) g")
        time.sleep(1.2)
        moment = server_now(dsn)
        time.sleep(1.2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM ledger WHERE id > 20")  # the mistake the restore undoes
        slack.command("/restore", f'--time "{moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")}"', user="U0OPS")
        fake.wait_for_text("Restore request #1", method="chat.postMessage", timeout=180)
        fake.wait_for(lambda api: len(api.said("reactions.add")) >= 2, what="the bot's approve/reject reactions")
        slack.reaction("U0APP1", "white_check_mark", request_message(fake))
        done = fake.wait_for_text("and verified", timeout=600)
        copy_port = int(re.search(r"127\.0\.0\.1:(\d+)", done["text"]).group(1))
        with psycopg.connect(dsn.replace(f":{cluster.port}/", f":{copy_port}/"), connect_timeout=10) as conn:
            restored = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        with psycopg.connect(dsn) as conn:
            live = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        if (restored, live) != (100, 20):
            raise Failed(f"the copy restored to {moment} has {restored} ledger rows (want 100); the live one {live} (want 20)")
        print(f"  /restore --time, approved by a reaction: the copy on 127.0.0.1:{copy_port} has the 100 rows of "
              f"{moment:%H:%M:%S}, the live cluster kept its 20; the copy runs {host.copy_runs_here()}")

        slack.command("/backup", "verify physical latest", user="U0OPS")
        drill = fake.wait_for(lambda api: next((m for m in api.said() if "Drill of physical backup #1" in m.get("text", "")
                                                and ("passed" in m["text"] or "FAILED" in m["text"])), None),
                              timeout=600, what="the drill's result")
        if "passed" not in drill["text"] or "pgbackrest verify: ok" not in fake.all_bodies():
            raise Failed(f"the drill did not pass: {drill['text']}")
        print("  /backup verify physical latest: the drill passed, pgbackrest verify ok")
        print(f"  {host.stop_bot()}")
        # the copy's postgres stopped with the bot (its cgroup, its container); the next start brings it back
        host.start_bot_again()
        wait_healthy(host.health, host)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(dsn.replace(f":{cluster.port}/", f":{copy_port}/"), connect_timeout=5) as conn:
                    if conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 100:
                        break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise Failed(f"the copy on {copy_port} did not come back after the bot started again") from None
                time.sleep(0.5)
        print(f"  started again: the copy on 127.0.0.1:{copy_port} runs again with its 100 rows")
    finally:
        stop_server(db1_server)


def main(mode: str) -> int:
    if os.geteuid() != 0:
        print("FAIL: the deployment stage needs root (db1's side runs as postgres)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="backupbot-deploy-", dir="/tmp"))
    work.chmod(0o755)
    fake = FakeSlackWebAPI()
    cluster = TemporaryCluster().start()
    host: Backup1 | None = None
    try:
        dsn = cluster.create_database("app")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 5000) g")
        certs = make_certificates()
        db = work / "db1"  # db1's /etc/pgbackrest: its certificates, its config, pgBackRest's folders
        for mine, theirs in (("ca.crt", "ca.crt"), ("pg.crt", "server.crt"), ("pg.key", "server.key")):
            write_owned(db / "tls" / theirs, certs[mine], "postgres")
        for folder in ("log", "lock", "spool"):
            write_owned(db / folder / ".keep", b"", "postgres")
        etc = work / "backup1-etc"  # backup1's /etc/backupbot
        (etc / "tls").mkdir(parents=True)
        for name in ("ca.crt", "bot.crt", "bot.key"):
            (etc / "tls" / name).write_bytes(certs[name])
            (etc / "tls" / name).chmod(0o600)
        write_key_file(etc / "signing.key")
        pg_tls, bot_tls = free_port(), free_port()
        (etc / "backupbot.toml").write_text(config_text(db, cluster.dir / "data", cluster, pg_tls, bot_tls, Backup1.state))
        env = {"DATABASE_URL": dsn, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
               "SLACK_API_URL": fake.url}
        (etc / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        (etc / "env").chmod(0o600)
        if mode == "image":
            host = ImageHost(work, env, etc)
        else:
            host = SystemdHost(work, env, etc, Path(os.environ["BACKUPBOT_WHEELS"]))
            print("  " + " ".join(host.unit_properties().split()))
        flow(host, cluster, db, dsn, fake, pg_tls)
        print(f"{mode}: a physical backup over TLS, a point-in-time restore approved in Slack, and a drill, "
              "in the documented layout")
        return 0
    except (Failed, AssertionError, psycopg.Error, subprocess.TimeoutExpired, OSError) as exc:
        print(f"FAIL ({mode}): {exc}")
        if host is not None:
            print(host.logs()[-6000:])
        return 1
    finally:
        if host is not None:
            host.close()
        with contextlib.suppress(Exception):
            cluster.stop()
        fake.close()
        sh(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("image", "systemd"):
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
