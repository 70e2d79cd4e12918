"""Running the `pgbackrest` binary: always `--config=FILE --stanza=NAME`, never a secret in argv.

A database password reaches pgBackRest (libpq) only as PGPASSWORD in its environment; neither PG*
nor PGBACKREST_* of the caller's environment may redirect it. As root it runs as the stanza's user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from commands.errors import BackupbotError, ConfigError
from commands.pg.pgbackrest.config import PgBackRestConfig
from commands.pg.tools import last_lines
from commands.redact import redact

DEFAULT_TIMEOUT = 3600


class PgBackRestError(BackupbotError, RuntimeError):
    """pgbackrest failed; the message carries its redacted error and `code` its exit status."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


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


def as_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def run_pgbackrest(cfg: PgBackRestConfig, args: list[str], *, timeout: float = DEFAULT_TIMEOUT,
                   check: bool = True, binary: bool = False) -> subprocess.CompletedProcess:
    """Run `pgbackrest --config=FILE --stanza=NAME ARGS...`. Raise PgBackRestError (redacted stderr
    tail, exit code) when it fails or outlives `timeout` seconds."""
    if cfg.config_path is None:
        raise ConfigError("pgbackrest: no config file (write_config first, or set config_path)")
    argv = [_binary(), f"--config={cfg.config_path}", f"--stanza={cfg.stanza}", *args]
    command = next((a for a in args if not a.startswith("-")), "pgbackrest")
    user = cfg.run_as()
    try:
        result = subprocess.run(as_user(argv, user), capture_output=True, text=not binary, env=_env(cfg),
                                cwd="/", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PgBackRestError(f"pgbackrest {command} did not finish within {timeout:.0f}s") from None
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace") if binary else result.stderr
        detail = last_lines(stderr or ("" if binary else result.stdout), 6) or "(no output)"
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
