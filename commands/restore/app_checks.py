"""The application's own checks against a restored copy: `[databases.X] verify_command`.

The runbook's "run the application test suite", done by the bot: the operator's command line is split
like a shell would (shlex) and run without one, with a small environment of its own: PATH, HOME,
the locale, and the COPY's connection (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD and DATABASE_URL).
None of the bot's own variables (production URLs, Slack tokens, keys) reach it. Its output is kept
short and redacted; it has a time limit; exit status 0 is a pass.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from commands.redact import redact

TIMEOUT_S = 900
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")  # what a test suite needs of the bot's environment


@dataclass(frozen=True)
class CommandOutcome:
    ok: bool
    detail: str


def copy_environment(copy_dsn: str) -> dict[str, str]:
    params = conninfo_to_dict(copy_dsn)
    host, port = str(params.get("host") or "localhost"), str(params.get("port") or "5432")
    user, password, dbname = str(params.get("user") or ""), str(params.get("password") or ""), str(params["dbname"])
    env = {k: os.environ[k] for k in KEPT if k in os.environ}
    env.update({"PGHOST": host, "PGPORT": port, "PGDATABASE": dbname, "PGUSER": user,
                "DATABASE_URL": f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
                                f"{quote(dbname, safe='')}"})
    if password:
        env["PGPASSWORD"] = password
    return env


def run_verify_command(command: str, copy_dsn: str, secrets: list[str], timeout: float = TIMEOUT_S) -> CommandOutcome:
    """Run `command` against the copy; never raises for the command's own failure."""
    argv = shlex.split(command)
    env = copy_environment(copy_dsn)
    hidden = [*secrets, env.get("PGPASSWORD", ""), env["DATABASE_URL"]]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return CommandOutcome(False, f"`{argv[0]}` was not found (verify_command)")
    except subprocess.TimeoutExpired:
        return CommandOutcome(False, f"`{argv[0]}` did not finish within {timeout:g}s")
    except OSError as exc:
        return CommandOutcome(False, f"`{argv[0]}` could not run: {exc.strerror or exc}")
    tail = redact(((done.stdout or "") + (done.stderr or "")).strip(), hidden)[-400:]
    if done.returncode == 0:
        return CommandOutcome(True, f"`{argv[0]}` passed" + (f": {tail.splitlines()[-1]}" if tail else ""))
    return CommandOutcome(False, f"`{argv[0]}` exited with status {done.returncode}" + (f": {tail}" if tail else ""))
