"""A restore into a new data directory, started on its own port: the live cluster is never touched.

The copy runs with archiving off, so it never pushes WAL into the same stanza, and as root it runs
as the same user as pgBackRest, so every file of the repository and the copy stays owned by one user.
It listens on 127.0.0.1 only, and it does not do the live cluster's work: the preload libraries that
run jobs or replicate (pg_cron, pg_partman_bgw, pglogical, ...) are not loaded, TimescaleDB (kept, or
its tables could not be read) gets no background workers, and no logical replication worker starts,
so a copy neither runs yesterday's scheduled jobs against itself nor takes a subscription's slot.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from commands.errors import ConfigError
from commands.pg.cluster import free_port
from commands.pg.pgbackrest.archiver import aware
from commands.pg.pgbackrest.config import PgBackRestConfig, chown
from commands.pg.pgbackrest.runner import DEFAULT_TIMEOUT, PgBackRestError, as_user, run_pgbackrest
from commands.pg.tools import last_lines, pg_bin
from commands.redact import redact

_LABEL = re.compile(r"^\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?$")
_START_ATTEMPTS = 5


def _pg_ctl() -> str:
    # pg_ctl from the same installation as postgres on PATH or the newest Debian install
    return pg_bin("pg_ctl")


def _run_as(argv: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        return subprocess.run(as_user(argv, user), capture_output=True, text=True, env=env, cwd="/",
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PgBackRestError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None


_MARK = "# backupbot: restored copy settings"
# preload libraries whose background workers do the live cluster's work: scheduled jobs, partition
# maintenance, replication, table rewrites, statistics snapshots written into tables
JOB_LIBRARIES = frozenset({"pg_cron", "pg_partman_bgw", "pglogical", "pg_squeeze", "powa"})


def library_name(entry: str) -> str:
    """`$libdir/pg_cron.so` -> `pg_cron`: how an entry of shared_preload_libraries names its library."""
    name = entry.strip().strip('"').rsplit("/", 1)[-1]
    return name.removesuffix(".so")


def copy_preload(inherited: str) -> tuple[str, ...]:
    """The entries of the inherited shared_preload_libraries a copy may load: all but JOB_LIBRARIES."""
    entries = [e.strip() for e in inherited.split(",") if e.strip()]
    return tuple(e for e in entries if library_name(e) not in JOB_LIBRARIES)


def copy_settings(port: int, preload: tuple[str, ...]) -> list[str]:
    """The lines appended to the copy's postgresql.auto.conf (read last, so they win)."""
    quoted = ",".join(preload).replace("'", "''")
    lines = [
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        "unix_socket_directories = ''",  # TCP on 127.0.0.1 only: no socket file in a shared folder
        "archive_mode = off",
        "archive_command = ''",
        "hot_standby = on",
        "logging_collector = off",
        f"shared_preload_libraries = '{quoted}'",
        "max_logical_replication_workers = 0",  # the live cluster's subscriptions stay idle in a copy
    ]
    if any(library_name(e) == "timescaledb" for e in preload):
        lines.append("timescaledb.max_background_workers = 0")  # no compression/retention policies run
    return lines


def inherited_preload(datadir: Path, owner: str | None) -> str:
    """shared_preload_libraries as the restored configuration sets it (`postgres -C`, which reads every
    include). '' when it cannot be read: then nothing is preloaded, the safe side."""
    if not (datadir / "postgresql.conf").exists():
        return ""
    result = _run_as([pg_bin("postgres"), "-D", str(datadir), "-C", "shared_preload_libraries"], owner, 60)
    return result.stdout.strip() if result.returncode == 0 else ""


@dataclass
class RestoredCluster:
    """A cluster restored from a physical backup, running on its own port; `stop_and_remove()`
    stops it and deletes its data directory."""

    datadir: Path
    port: int
    host: str
    user: str
    password: str | None = field(repr=False)
    log_path: Path
    run_as: str | None
    target_time: datetime | None
    set_label: str | None

    def dsn(self, dbname: str = "postgres") -> str:
        params = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname}
        if self.password:
            params["password"] = self.password
        return make_conninfo(**params)

    def is_running(self) -> bool:
        return postmaster_alive(self.datadir)

    def stop(self) -> None:
        if not self.is_running():
            return
        result = _run_as([_pg_ctl(), "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop"], self.run_as, 90)
        if result.returncode != 0:
            try:
                pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            except (OSError, ValueError, IndexError):
                pass

    def stop_and_remove(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


def postmaster_alive(datadir: Path) -> bool:
    """Whether the postmaster that datadir's postmaster.pid names is alive. A cluster killed with its
    supervisor's cgroup (systemd's KillMode=mixed, `docker stop`) leaves that file behind."""
    try:
        pid = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:  # the pid of a process that is no postmaster (a reused pid, or a zombie)
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True
    return argv0.endswith(b"postgres")


def start_again(datadir: Path, owner: str | None, timeout: float = 120) -> None:
    """Start a copy whose postmaster stopped (with the bot's unit or container) on its own port and
    settings, still in its postgresql.auto.conf; PgBackRestError with the log's reason when it cannot."""
    log_path = Path(datadir) / "backupbot-restore.log"
    if postmaster_alive(datadir):
        return
    # the lock file of a dead postmaster: postgres itself refuses to start while its pid names any process
    # (an unreaped zombie, or a pid reused since), and its shared memory check still guards live backends
    (Path(datadir) / "postmaster.pid").unlink(missing_ok=True)
    logged = log_path.stat().st_size if log_path.exists() else 0
    result = _run_as([_pg_ctl(), "-D", str(datadir), "-l", str(log_path), "-w", "-t", str(int(timeout)), "start"],
                     owner, timeout + 30)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[logged:] if log_path.exists() else ""
        raise PgBackRestError("it did not start: " + (redact(last_lines(tail, 4)) or redact(result.stderr.strip()[-400:])))


def _format_target(t: datetime) -> str:
    return aware(t).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def restore_args(cfg: PgBackRestConfig, datadir: Path, target_time: datetime | None = None,
                 set_label: str | None = None) -> list[str]:
    """The argv (after --config/--stanza) of the restore: into `datadir`, archiving off, promoted at
    the target. A time restores to that time; a set alone restores that backup to its consistent
    point; neither replays the whole archive."""
    if set_label is not None and not _LABEL.match(set_label):
        raise ConfigError(f"backup set: expected a pgBackRest label like 20261129-140400F, got {set_label!r}")
    args = ["restore", f"--pg1-path={datadir}", "--archive-mode=off"]
    if target_time is not None:
        args += ["--type=time", f"--target={_format_target(target_time)}", "--target-action=promote"]
    elif set_label is not None:
        args += ["--type=immediate", "--target-action=promote"]
    if set_label is not None:
        args.append(f"--set={set_label}")
    return args


def _write_local_settings(datadir: Path, port: int, owner: str | None, preload: tuple[str, ...]) -> None:
    auto = datadir / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    text = text.split(_MARK, 1)[0].rstrip("\n")
    # postgresql.auto.conf is read last, so these win over the copied postgresql.conf and its includes
    text += "\n" + "\n".join([_MARK, *copy_settings(port, preload), ""])
    auto.write_text(text)
    auto.chmod(0o600)
    chown(auto, owner)
    # a cluster whose config lives outside its data directory (Debian's /etc/postgresql) gets minimal ones
    if not (datadir / "postgresql.conf").exists():
        (datadir / "postgresql.conf").write_text("# written by backupbot for a restored copy\n")
        chown(datadir / "postgresql.conf", owner)
    if not (datadir / "pg_hba.conf").exists():
        (datadir / "pg_hba.conf").write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        chown(datadir / "pg_hba.conf", owner)


def _wait_promoted(restored: RestoredCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "not reachable"
    while time.monotonic() < deadline:
        if not restored.is_running():
            break
        try:
            with psycopg.connect(restored.dsn(), connect_timeout=5, autocommit=True) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
                last = "still in recovery"
        except psycopg.Error as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        time.sleep(0.2)
    tail = _log_tail(restored.log_path)
    raise PgBackRestError(f"the restored cluster did not finish recovery ({redact(last)})"
                          + (f":\n{tail}" if tail else ""))


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    wanted = [line for line in text.splitlines() if any(k in line for k in ("FATAL", "ERROR", "PANIC", "LOG:  redo",
                                                                              "recovery stopping", "could not"))]
    return redact(last_lines("\n".join(wanted) or text, lines))


def restore_to_new_datadir(cfg: PgBackRestConfig, target_time: datetime | None, set_label: str | None,
                           datadir: Path, port: int | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                           start_timeout: float = 600) -> RestoredCluster:
    """Restore the stanza into `datadir` (new or empty), start it on `port` (a free one when None)
    and wait until recovery has ended and it is promoted. The live cluster is not touched."""
    datadir = Path(datadir)
    owner = cfg.run_as()
    if cfg.pg_path and datadir.resolve() == Path(cfg.pg_path).resolve():
        raise PgBackRestError("refusing to restore over the live cluster's data directory")
    if datadir.exists() and any(datadir.iterdir()):
        raise PgBackRestError(f"{datadir} is not empty: a restore only goes into a new data directory")
    datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
    datadir.chmod(0o700)
    chown(datadir, owner)
    log_path = datadir / "backupbot-restore.log"
    restored = RestoredCluster(datadir=datadir, port=port or free_port(), host="127.0.0.1", user=cfg.pg_user,
                               password=cfg.password, log_path=log_path, run_as=owner,
                               target_time=target_time, set_label=set_label)
    try:
        # a remote cluster's copy is restored here, from the repository here (restore.conf: no pg1-host)
        local = cfg.restore_side()
        run_pgbackrest(local, restore_args(local, datadir, target_time, set_label), timeout=timeout)
        preload = copy_preload(inherited_preload(datadir, owner))
        for attempt in range(_START_ATTEMPTS):
            _write_local_settings(datadir, restored.port, owner, preload)
            logged = log_path.stat().st_size if log_path.exists() else 0
            result = _run_as([_pg_ctl(), "-D", str(datadir), "-l", str(log_path), "-w", "-t", str(int(start_timeout)),
                              "start"], owner, start_timeout + 30)
            if result.returncode == 0:
                break
            tail = log_path.read_text(errors="replace")[logged:] if log_path.exists() else ""
            if "could not bind" in tail and port is None and attempt + 1 < _START_ATTEMPTS:
                restored.port = free_port()
                continue
            # pg_ctl -w also fails when recovery stops with FATAL (e.g. target after the archive's end)
            raise PgBackRestError("the restored cluster did not start: "
                                  + (_log_tail(log_path) or redact(result.stderr.strip()[-800:])))
        _wait_promoted(restored, start_timeout)
    except BaseException:
        restored.stop_and_remove()
        raise
    return restored
