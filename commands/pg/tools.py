"""Shared plumbing for pg_dump, pg_restore and psql: binaries, credentials by environment, versions.

Credentials travel only in the child's environment (PGHOST, PGUSER, PGPASSWORD, ...): argv is
visible to every user of the machine through /proc/PID/cmdline and `ps`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from commands.errors import DumpError

_PARAM_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "password": "PGPASSWORD", "passfile": "PGPASSFILE", "options": "PGOPTIONS",
    "sslmode": "PGSSLMODE", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "service": "PGSERVICE", "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING", "krbsrvname": "PGKRBSRVNAME", "requiressl": "PGREQUIRESSL",
}


def pg_env(dsn: str, dbname: str | None = None) -> dict[str, str]:
    """The environment for a libpq tool connecting to `dsn` (optionally another database on it)."""
    params = conninfo_to_dict(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in params.items():
        name = _PARAM_ENV.get(key)
        if name is None:
            raise DumpError(f"connection parameter {key!r} is not supported for pg_dump")
        env[name] = str(value)
    if dbname:
        env["PGDATABASE"] = dbname
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    env.setdefault("PGAPPNAME", "backupbot")
    return env


def with_dbname(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=dbname)


@functools.cache
def pg_bin(name: str) -> str:
    """Path of a PostgreSQL client program: PATH first, then the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise DumpError(f"{name} was not found on PATH or in /usr/lib/postgresql/*/bin")


@functools.cache
def tool_version(name: str) -> str:
    """'15.18' for `pg_dump --version` printing 'pg_dump (PostgreSQL) 15.18 (Debian ...)'; `name` is a
    program name (found by pg_bin) or a path (from pg_bin_for)."""
    binary = name if "/" in name else pg_bin(name)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d+(?:\.\d+)*)", out)
    return match.group(1) if match else out.strip()


def major(version: str) -> int:
    return int(version.split(".")[0])


class StderrTail:
    """Keep the last few KiB of a child's stderr, read on a thread so the pipe never fills."""

    def __init__(self, stream, limit: int = 8192):
        import threading

        self.limit = limit
        self.data = b""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read(4096), b""):
            self.data = (self.data + chunk)[-self.limit:]
        stream.close()

    def text(self, timeout: float = 10) -> str:
        self._thread.join(timeout)
        return self.data.decode("utf-8", "replace").strip()


def die_with_parent() -> None:
    """preexec_fn: the kernel kills this child when the bot dies (PR_SET_PDEATHSIG), so a psql or
    pg_restore never goes on changing a database after the bot that would report it was killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


PG_LIB_ROOT = Path("/usr/lib/postgresql")  # Debian and Ubuntu: one folder per major, /usr/lib/postgresql/N/bin


@functools.cache
def _path_tool_major(path: str) -> int | None:
    """The major version a client program on PATH reports, or None when it does not answer like one."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(match.group(1)) if match else None


def installed_pg_bins(name: str, root: str | os.PathLike | None = None, path: str | None = None) -> list[tuple[int, str]]:
    """(major, path) of every installed `name`, newest first, PATH first at the same major: Debian's
    ROOT/N/bin folders and PATH (asked with --version; Debian's pg_wrapper and links into ROOT are the
    folders already counted)."""
    root = Path(root) if root is not None else PG_LIB_ROOT
    found: dict[str, int] = {}
    for candidate in root.glob(f"*/bin/{name}"):
        version_dir = candidate.parent.parent.name
        if version_dir.isdigit() and os.access(candidate, os.X_OK):
            found.setdefault(str(candidate), int(version_dir))
    resolved_root = root.resolve()
    for folder in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        candidate = Path(folder or ".") / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        real = candidate.resolve()
        if real.name == "pg_wrapper" or real.is_relative_to(resolved_root) or str(candidate) in found:
            continue
        version = _path_tool_major(str(candidate))
        if version is not None:
            found[str(candidate)] = version
    on_path = {where for where in found if not Path(where).is_relative_to(root)}
    # newest first; at the same major, a client the operator put on PATH before Debian's own
    return sorted(((version, where) for where, version in found.items()),
                  key=lambda item: (-item[0], item[1] not in on_path))


def pg_bin_for(name: str, server_major: int, root: str | os.PathLike | None = None, path: str | None = None) -> str:
    """The newest installed `name` (pg_dump, pg_restore, psql, ...) whose major version is at least
    the server's: pg_dump refuses a newer server, and an older client may not read what it sees."""
    installed = installed_pg_bins(name, root, path)
    for version, where in installed:
        if version >= server_major:
            return where
    root_text = str(root if root is not None else PG_LIB_ROOT)
    have = ", ".join(f"{version} ({where})" for version, where in installed) or f"none on PATH or in {root_text}/*/bin"
    raise DumpError(
        f"{name} {server_major} or newer is needed for this PostgreSQL {server_major} server; installed: {have}. "
        f"Install postgresql-client-{server_major} (Debian/Ubuntu, from apt.postgresql.org) or a newer client."
    )
