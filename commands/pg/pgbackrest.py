"""pgBackRest as the engine for physical backups and point-in-time recovery.

The bot drives the `pgbackrest` binary as a subprocess, always with `--config=FILE --stanza=NAME`
in argv and never a secret there: a database password reaches pgBackRest (libpq) only as
PGPASSWORD in its environment. Its state is read only from `pgbackrest info --output=json`.

As root, pgBackRest and the restored servers run as the `postgres` user (the same user whose
`archive_command` pushes WAL into the repository), so every file of a repository stays owned by
one user. Nothing here changes the live cluster: a restore always goes into a new data directory
that is started on its own port, with archiving off so it never pushes WAL into the same stanza.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from commands.errors import BackupbotError, ConfigError
from commands.pg.cluster import free_port
from commands.pg.tools import last_lines, pg_bin
from commands.redact import redact

BACKUP_TYPES = ("full", "diff", "incr")
_STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL = re.compile(r"^\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?$")
_WAL = re.compile(r"^[0-9A-F]{24}")
_DEFAULT_TIMEOUT = 3600
_START_ATTEMPTS = 5


class PgBackRestError(BackupbotError, RuntimeError):
    """pgbackrest failed; the message carries its redacted error and `code` its exit status."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


# -- configuration


@dataclass(frozen=True)
class PgBackRestConfig:
    """One database's stanza. `config_path` is an existing pgbackrest.conf (or the one
    write_config generated); the other fields are what write_config puts in it."""

    stanza: str
    repo_path: Path | None = None
    pg_path: Path | None = None
    pg_port: int = 5432
    pg_socket_path: Path | None = None
    pg_user: str = "postgres"
    retention_full: int = 2
    config_path: Path | None = None
    compress_type: str = "zst"
    process_max: int = 1
    # the OS user pgbackrest runs as; None: `postgres` when the bot is root, else the bot's own user
    os_user: str | None = None
    # the database password, given to pgbackrest as PGPASSWORD (never written to the config file)
    password: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not _STANZA.match(self.stanza or ""):
            raise ConfigError(f"pgbackrest.stanza: expected letters, digits, '_', '.' or '-', got {self.stanza!r}")
        if self.compress_type not in ("none", "bz2", "gz", "lz4", "zst"):
            raise ConfigError(f"pgbackrest.compress_type: expected none, bz2, gz, lz4 or zst, got {self.compress_type!r}")
        if not isinstance(self.retention_full, int) or self.retention_full < 1:
            raise ConfigError(f"pgbackrest.retention_full: expected a whole number >= 1, got {self.retention_full!r}")

    def with_config(self, path: Path) -> PgBackRestConfig:
        return dataclasses.replace(self, config_path=Path(path))

    def run_as(self) -> str | None:
        """The user to switch to (as root only), or None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        user = self.os_user or "postgres"
        return None if user == "root" else user


def _ini_value(key: str, value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text or text != text.strip():
        raise ConfigError(f"pgbackrest.{key}: line breaks and surrounding spaces are not allowed")
    return text


def _chown(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def write_config(cfg: PgBackRestConfig, directory: Path) -> Path:
    """Write `directory`/pgbackrest.conf (0600) for cfg's stanza, with log, lock and spool folders
    inside `directory`, and return its path. Use `cfg.with_config(path)` to run against it."""
    if cfg.repo_path is None or cfg.pg_path is None:
        raise ConfigError("pgbackrest: repo_path and pg_path are needed to generate a config")
    directory = Path(directory)
    owner = cfg.run_as()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _chown(directory, owner)
    folders = {name: directory / name for name in ("log", "lock", "spool")}
    for folder in folders.values():
        folder.mkdir(mode=0o700, exist_ok=True)
        _chown(folder, owner)
    repo = Path(cfg.repo_path)
    if not repo.exists():
        repo.mkdir(mode=0o750, parents=True)
        _chown(repo, owner)
    lines = [
        "[global]",
        f"repo1-path={_ini_value('repo_path', repo)}",
        f"repo1-retention-full={cfg.retention_full}",
        f"log-path={_ini_value('log_path', folders['log'])}",
        f"lock-path={_ini_value('lock_path', folders['lock'])}",
        f"spool-path={_ini_value('spool_path', folders['spool'])}",
        "log-level-console=off",
        "log-level-stderr=warn",
        "log-level-file=info",
        "start-fast=y",
        f"compress-type={cfg.compress_type}",
        f"process-max={int(cfg.process_max)}",
        "",
        f"[{cfg.stanza}]",
        f"pg1-path={_ini_value('pg_path', cfg.pg_path)}",
        f"pg1-port={int(cfg.pg_port)}",
        f"pg1-user={_ini_value('pg_user', cfg.pg_user)}",
    ]
    if cfg.pg_socket_path:
        lines.append(f"pg1-socket-path={_ini_value('pg_socket_path', cfg.pg_socket_path)}")
    path = directory / "pgbackrest.conf"
    tmp = directory / f".pgbackrest.conf.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    _chown(tmp, owner)
    os.replace(tmp, path)
    return path


def archive_command(cfg: PgBackRestConfig) -> str:
    """The archive_command that pushes WAL into cfg's stanza (for postgresql.conf, not a shell of ours)."""
    if cfg.config_path is None:
        raise ConfigError("pgbackrest: no config file (write_config first, or set config_path)")
    return f"{shutil.which('pgbackrest') or 'pgbackrest'} --config={cfg.config_path} --stanza={cfg.stanza} archive-push %p"


# -- running pgbackrest


def _binary() -> str:
    found = shutil.which("pgbackrest")
    if not found:
        raise PgBackRestError("pgbackrest was not found on PATH: install it (apt-get install pgbackrest)")
    return found


def version() -> str:
    """'2.45' for `pgbackrest version` printing 'pgBackRest 2.45'."""
    try:
        out = subprocess.run([_binary(), "version"], capture_output=True, text=True, timeout=30).stdout
    except subprocess.TimeoutExpired:
        raise PgBackRestError("pgbackrest version did not answer within 30s") from None
    match = re.search(r"(\d+(?:\.\d+)+)", out)
    return match.group(1) if match else out.strip()


def _env(cfg: PgBackRestConfig) -> dict[str, str]:
    # neither PG* nor PGBACKREST_* of the caller may redirect pgbackrest: argv and the config decide
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if cfg.password:
        env["PGPASSWORD"] = cfg.password
    return env


def _as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def run_pgbackrest(cfg: PgBackRestConfig, args: list[str], *, timeout: float = _DEFAULT_TIMEOUT,
                   check: bool = True) -> subprocess.CompletedProcess:
    """Run `pgbackrest --config=FILE --stanza=NAME ARGS...`. Raise PgBackRestError (redacted stderr
    tail, exit code) when it fails or outlives `timeout` seconds."""
    if cfg.config_path is None:
        raise ConfigError("pgbackrest: no config file (write_config first, or set config_path)")
    argv = [_binary(), f"--config={cfg.config_path}", f"--stanza={cfg.stanza}", *args]
    command = next((a for a in args if not a.startswith("-")), "pgbackrest")
    user = cfg.run_as()
    try:
        result = subprocess.run(_as_user(argv, user), capture_output=True, text=True, env=_env(cfg),
                                cwd="/", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PgBackRestError(f"pgbackrest {command} did not finish within {timeout:.0f}s") from None
    if check and result.returncode != 0:
        detail = last_lines(result.stderr or result.stdout, 6) or "(no output)"
        raise PgBackRestError(f"pgbackrest {command} failed (exit {result.returncode}): "
                              f"{redact(detail, [cfg.password or ''])}", result.returncode)
    return result


def stanza_create(cfg: PgBackRestConfig, *, timeout: float = 300) -> None:
    """Create the stanza in the repository (idempotent when it already matches the cluster)."""
    run_pgbackrest(cfg, ["stanza-create"], timeout=timeout)


def check(cfg: PgBackRestConfig, *, timeout: float = 300) -> str:
    """`pgbackrest check`: the cluster reaches the repository and a WAL switch gets archived there."""
    result = run_pgbackrest(cfg, ["check"], timeout=timeout)
    return (result.stdout + result.stderr).strip() or "ok"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    code: int
    summary: str


def verify_repo(cfg: PgBackRestConfig, *, timeout: float = 3600) -> VerifyResult:
    """`pgbackrest verify`: every backup file and archived WAL segment checked against its checksum."""
    result = run_pgbackrest(cfg, ["verify", "--output=text", "--verbose"], timeout=timeout, check=False)
    summary = redact("\n".join(filter(None, [result.stdout.strip(), last_lines(result.stderr, 6)])), [cfg.password or ""])
    ok = result.returncode == 0 and "status: ok" in result.stdout
    return VerifyResult(ok=ok, code=result.returncode, summary=summary)


# -- info


def _ts(value) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class PhysicalBackup:
    label: str
    type: str                       # full, diff or incr
    started: datetime
    stopped: datetime
    size: int                       # database size restored from this backup
    delta: int                      # bytes copied by this backup
    repo_size: int                  # bytes this backup takes in the repository
    repo_delta: int
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    prior: str | None               # the backup a diff/incr builds on
    error: bool                     # pgbackrest found page checksum errors

    @property
    def duration(self) -> timedelta:
        return self.stopped - self.started

    @property
    def wal_range(self) -> str:
        return f"{self.wal_start or '?'}..{self.wal_stop or '?'}"


@dataclass(frozen=True)
class ArchiveRange:
    min_wal: str | None
    max_wal: str | None
    database_id: str | None         # "15-1": PostgreSQL version and pgbackrest's database id


def info_json(cfg: PgBackRestConfig, *, timeout: float = 300) -> dict:
    """The stanza's entry of `pgbackrest info --output=json` (the only place state is read from)."""
    result = run_pgbackrest(cfg, ["info", "--output=json"], timeout=timeout)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise PgBackRestError("pgbackrest info did not print JSON") from None
    for entry in data if isinstance(data, list) else []:
        if entry.get("name") == cfg.stanza:
            status = entry.get("status") or {}
            # 0 ok, 2 no backups yet; 1 missing stanza, 3 missing data, 99 other error
            if status.get("code") not in (0, 2, 4):
                raise PgBackRestError(f"pgbackrest stanza {cfg.stanza}: {status.get('message', 'unknown status')}",
                                      status.get("code"))
            return entry
    raise PgBackRestError(f"pgbackrest info knows no stanza {cfg.stanza!r}")


def _backup_from_json(item: dict) -> PhysicalBackup:
    info = item.get("info") or {}
    repo = info.get("repository") or {}
    archive = item.get("archive") or {}
    lsn = item.get("lsn") or {}
    stamp = item.get("timestamp") or {}
    return PhysicalBackup(
        label=item["label"], type=item.get("type", "?"),
        started=_ts(stamp.get("start")), stopped=_ts(stamp.get("stop")),
        size=int(info.get("size") or 0), delta=int(info.get("delta") or 0),
        repo_size=int(repo.get("size") or 0), repo_delta=int(repo.get("delta") or 0),
        wal_start=archive.get("start"), wal_stop=archive.get("stop"),
        lsn_start=lsn.get("start"), lsn_stop=lsn.get("stop"),
        prior=item.get("prior"), error=bool(item.get("error")),
    )


def info(cfg: PgBackRestConfig, *, timeout: float = 300) -> list[PhysicalBackup]:
    """The stanza's backups, oldest first."""
    return [_backup_from_json(item) for item in info_json(cfg, timeout=timeout).get("backup") or []]


def archive_range(cfg: PgBackRestConfig, *, timeout: float = 300) -> ArchiveRange:
    """The oldest and newest WAL segment archived for the current database of the stanza."""
    entry = info_json(cfg, timeout=timeout)
    archives = entry.get("archive") or []
    current = ((entry.get("db") or [{}])[-1] or {}).get("id") if entry.get("db") else None
    chosen = next((a for a in archives if (a.get("database") or {}).get("id") == current), None)
    chosen = chosen or (archives[-1] if archives else {})
    return ArchiveRange(min_wal=chosen.get("min"), max_wal=chosen.get("max"), database_id=chosen.get("id"))


def backup(cfg: PgBackRestConfig, type: str = "full", *, timeout: float = _DEFAULT_TIMEOUT) -> PhysicalBackup:
    """Run `pgbackrest backup --type=TYPE` and return the backup it made, as info reports it.
    pgBackRest then expires what repo1-retention-full no longer keeps."""
    if type not in BACKUP_TYPES:
        raise ConfigError(f"backup type: expected full, diff or incr, got {type!r}")
    before = {b.label for b in info(cfg)}
    run_pgbackrest(cfg, ["backup", f"--type={type}"], timeout=timeout)
    made = [b for b in info(cfg) if b.label not in before]
    if not made:
        raise PgBackRestError("pgbackrest backup succeeded but info lists no new backup")
    return made[-1]


# -- archiving and reachability


@dataclass(frozen=True)
class ArchiverStatus:
    archive_mode: str
    archive_command: str            # redacted
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    server_now: datetime

    @property
    def archiving(self) -> bool:
        return self.archive_mode in ("on", "always") and bool(self.archive_command.strip())

    @property
    def rpo_seconds(self) -> float | None:
        """Age of the last archived segment: how much is lost if the server vanished now."""
        if self.last_archived_time is None:
            return None
        return max(0.0, (self.server_now - self.last_archived_time).total_seconds())

    @property
    def failing(self) -> bool:
        """The latest archiving attempt failed (a failure newer than the last success)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time

    def pushes_to(self, cfg: PgBackRestConfig) -> bool:
        """archive_command runs pgbackrest archive-push for cfg's stanza."""
        command = self.archive_command
        return "pgbackrest" in command and "archive-push" in command and f"--stanza={cfg.stanza}" in command.split()


_ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), current_setting('archive_command'), archived_count, last_archived_wal,
       last_archived_time, failed_count, last_failed_wal, last_failed_time, now()
  FROM pg_stat_archiver
"""


def archiver_status(dsn: str, *, connect_timeout: int = 10) -> ArchiverStatus:
    """pg_stat_archiver and the archive settings of the server at `dsn`."""
    try:
        with psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True) as conn:
            row = conn.execute(_ARCHIVER_SQL).fetchone()
    except psycopg.Error as exc:
        raise PgBackRestError(f"could not read pg_stat_archiver: {redact(str(exc).strip())}") from None
    return ArchiverStatus(row[0], redact(row[1] or ""), row[2], row[3], row[4], row[5], row[6], row[7], row[8])


def _segment(name: str | None) -> str | None:
    match = _WAL.match(name or "")
    return match.group(0) if match else None


def force_archive(dsn: str, *, timeout: float = 60) -> ArchiverStatus:
    """Commit a marker transaction, switch WAL and wait until that segment is archived. Afterwards
    everything committed before this call is in the archive, and a commit record newer than it
    exists, so recovery to any earlier time can find its stopping point."""
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")  # an xid, so the commit writes a timestamped record
            lsn = conn.execute("SELECT pg_switch_wal()").fetchone()[0]
            wanted = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", [str(lsn)]).fetchone()[0]
    except psycopg.Error as exc:
        raise PgBackRestError(f"could not switch WAL: {redact(str(exc).strip())}") from None
    deadline = time.monotonic() + timeout
    while True:
        status = archiver_status(dsn)
        done = _segment(status.last_archived_wal)
        if done and done >= wanted:  # fixed-width hex: timeline, then log and segment
            return status
        if not status.archiving:
            raise PgBackRestError("WAL archiving is off on this server (archive_mode/archive_command)")
        if time.monotonic() > deadline:
            failure = f"; last failure: {status.last_failed_wal} at {status.last_failed_time:%H:%M:%S}" \
                if status.failing else ""
            raise PgBackRestError(f"WAL segment {wanted} was not archived within {timeout:.0f}s{failure}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    reason: str
    backup: PhysicalBackup | None = None       # the backup set a restore would start from
    latest: datetime | None = None             # the newest archived point
    known: bool = True                         # False: it hangs on WAL not archived yet (checked without a switch)

    def __bool__(self) -> bool:
        return self.reachable


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ConfigError("a recovery target time needs a time zone, for example 2026-11-29 14:04:00+00")
    return t


def time_reachable(cfg: PgBackRestConfig, t: datetime, dsn: str | None = None, *, switch: bool = True,
                   timeout: float = 60) -> Reachability:
    """Whether a restore can reach time `t`: at or after the end of some backup, and no later than
    the newest archived point. With `dsn` (the live server) WAL is switched first (`switch`) and
    pg_stat_archiver gives that point; without it, the newest backup's end is the only known point.
    Without `switch` (a dry run, which writes nothing to the server) a time after the last archived
    segment but not in the future is reachable only if the live segment gets archived: `known` is False."""
    t = _aware(t)
    backups = [b for b in info(cfg) if not b.error]
    if not backups:
        return Reachability(False, "there is no physical backup yet")
    # info's times are whole seconds (the stop time truncated): a second of margin
    usable = [b for b in backups if b.stopped + timedelta(seconds=1) <= t]
    first = min(backups, key=lambda b: b.stopped)
    if not usable:
        return Reachability(False, f"{t.isoformat()} is before the first backup ended ({first.stopped.isoformat()})")
    chosen = max(usable, key=lambda b: b.stopped)
    if dsn is not None:
        status = force_archive(dsn, timeout=timeout) if switch else archiver_status(dsn)
        latest = status.last_archived_time
        if not switch and (latest is None or t > latest) and t <= status.server_now and status.archiving:
            shown = latest.isoformat() if latest else "nothing yet"
            return Reachability(True, f"from backup {chosen.label}, WAL {chosen.wal_start} onwards, once the WAL after "
                                f"the last archived segment (archived at {shown}) is archived: it is still in the live "
                                "server's current segment, and a dry run does not switch WAL", chosen, latest, known=False)
    else:
        latest = max(b.stopped for b in backups)
    if latest is None or t > latest:
        shown = latest.isoformat() if latest else "nothing archived"
        return Reachability(False, f"{t.isoformat()} is after the newest archived point ({shown})", chosen, latest)
    return Reachability(True, f"from backup {chosen.label}, WAL {chosen.wal_start} onwards", chosen, latest)


# -- restore into a new data directory


def _pg_ctl() -> str:
    # pg_ctl from the same installation as postgres on PATH or the newest Debian install
    return pg_bin("pg_ctl")


def _run_as(argv: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        return subprocess.run(_as_user(argv, user), capture_output=True, text=True, env=env, cwd="/",
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PgBackRestError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None


_MARK = "# backupbot: restored copy settings"


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
        return (self.datadir / "postmaster.pid").exists()

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


def _format_target(t: datetime) -> str:
    return _aware(t).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


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


def _write_local_settings(datadir: Path, port: int, owner: str | None) -> None:
    auto = datadir / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    text = text.split(_MARK, 1)[0].rstrip("\n")
    # postgresql.auto.conf is read last, so these win over the copied postgresql.conf and its includes
    text += "\n" + "\n".join([
        _MARK,
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        "unix_socket_directories = ''",  # TCP on 127.0.0.1 only: no socket file in a shared folder
        "archive_mode = off",
        "archive_command = ''",
        "hot_standby = on",
        "logging_collector = off",
        "",
    ])
    auto.write_text(text)
    auto.chmod(0o600)
    _chown(auto, owner)
    # a cluster whose config lives outside its data directory (Debian's /etc/postgresql) gets minimal ones
    if not (datadir / "postgresql.conf").exists():
        (datadir / "postgresql.conf").write_text("# written by backupbot for a restored copy\n")
        _chown(datadir / "postgresql.conf", owner)
    if not (datadir / "pg_hba.conf").exists():
        (datadir / "pg_hba.conf").write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        _chown(datadir / "pg_hba.conf", owner)


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
                           datadir: Path, port: int | None = None, *, timeout: float = _DEFAULT_TIMEOUT,
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
    _chown(datadir, owner)
    log_path = datadir / "backupbot-restore.log"
    restored = RestoredCluster(datadir=datadir, port=port or free_port(), host="127.0.0.1", user=cfg.pg_user,
                               password=cfg.password, log_path=log_path, run_as=owner,
                               target_time=target_time, set_label=set_label)
    try:
        run_pgbackrest(cfg, restore_args(cfg, datadir, target_time, set_label), timeout=timeout)
        for attempt in range(_START_ATTEMPTS):
            _write_local_settings(datadir, restored.port, owner)
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
