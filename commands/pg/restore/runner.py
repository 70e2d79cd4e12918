"""The processes of a restore: psql fed through a pipe the bot writes, pg_restore as its source or alone.

COMMIT is written only after every child exited 0, so a pg_restore that dies half-way leaves psql
at end-of-file inside an open transaction, which PostgreSQL rolls back.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from psycopg import sql

from commands.errors import DumpError
from commands.pg.dump import FORMATS
from commands.pg.names import QualifiedName, parse_key
from commands.pg.restore.artifact import FetchedArtifact
from commands.pg.restore.script import clean_prologue, recorded_objects, verification_sql
from commands.pg.restore.toc import select_toc_entries
from commands.pg.scratch import private_file
from commands.pg.tools import StderrTail, die_with_parent, last_lines, pg_bin, pg_bin_for, pg_env
from commands.pg.waits import JobSessions
from commands.redact import redact
from state.backups import BackupRecord

CHUNK = 1 << 20


def run_restore(dsn: str, dbname: str, record: BackupRecord, artifact: FetchedArtifact, workdir: Path,
                tables: list[str] | None = None, jobs: int = 1, secrets: list[str] = (), no_owner: bool = False,
                server_major: int | None = None, sessions: JobSessions | None = None, fresh: bool = False) -> None:
    """Restore `artifact` into database `dbname` on the server of `dsn`; raises DumpError with stderr's tail.

    `fresh`: `dbname` is empty, made for this restore (a new target or a side database), so nothing
    needs cleaning: a custom archive goes in by `pg_restore --jobs N` (one job: in one transaction), a
    plain or gzip dump by psql in one transaction with no prologue. Otherwise:

    - plain and gzip: psql over BEGIN, the cleaning prologue, the dump, the verification, COMMIT;
    - custom, whole: the same, with `pg_restore --file=-` as the dump;
    - custom with --tables (or a backup of some tables): `pg_restore --clean --if-exists` of the tables'
      entries, in the same kind of transaction, verified before COMMIT;
    - custom with --jobs N: `pg_restore --jobs N` straight into `dbname`, which must be a database the
      caller created for it (a new target or a side database): parallel jobs cannot share a transaction.

    With `sessions` (commands/pg/waits.py), the tools connect under the job's application_name, every
    child is handed to it and the bytes fed to psql are reported, for the stall watchdog.

    `tables` and `jobs` are a checked plan's: commands.restore.rules refused what this backup cannot do
    (--tables or --jobs of a non-custom backup, --jobs of some tables) before anyone was asked.
    """
    env = pg_env(dsn, dbname=dbname)
    if sessions is not None:
        env = sessions.env(env)
    # index and constraint builds are most of a restore's work after the data: give them memory
    env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c maintenance_work_mem=256MB").strip()
    fmt = FORMATS[record.format]
    # the newest installed client that knows the receiving server, when its version is known
    client = (lambda name: pg_bin_for(name, server_major)) if server_major else pg_bin
    pg_restore = [client("pg_restore"), "--no-password", "--exit-on-error"]
    if no_owner:  # onto a server without the backup's roles: objects belong to whoever restores them
        pg_restore += ["--no-owner", "--no-privileges"]
    verify = verification_sql(record, list(tables or ()))
    if jobs > 1 or (fresh and fmt.pg_format == "custom" and not (tables or record.tables)):
        parallel = [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
        _run_children([[*pg_restore, *parallel, f"--dbname={dbname}", str(artifact.path)]], env, secrets)
        return
    if fmt.pg_format != "custom":
        prologue = sql.SQL("") if fresh else clean_prologue(record)
        run_in_transaction(env, prologue, artifact.path, None, verify, secrets, client("psql"), sessions)
        return
    objects = recorded_objects(record)
    if tables or record.tables:
        wanted = [_key_name(t) for t in (tables or record.tables)]
        listing = workdir / "restore.list"
        with private_file(listing) as out:
            out.write(select_toc_entries(artifact.toc or "", objects, wanted, record.id).encode())
        source = [*pg_restore, "--file=-", "--clean", "--if-exists", f"--use-list={listing}", str(artifact.path)]
        run_in_transaction(env, sql.SQL(""), None, source, verify, secrets, client("psql"), sessions)
        return
    source = [*pg_restore, "--file=-", str(artifact.path)]
    run_in_transaction(env, clean_prologue(record), None, source, verify, secrets, client("psql"), sessions)


def _key_name(key: str) -> QualifiedName:
    return parse_key(key)


def _psql_argv(psql: str | None = None) -> list[str]:
    # no --single-transaction: the bot writes BEGIN and, only when everything succeeded, COMMIT
    return [psql or pg_bin("psql"), "--no-password", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--file=-"]


def run_in_transaction(env: dict[str, str], prologue: sql.Composable, dump_file: Path | None,
                       dump_argv: list[str] | None, epilogue: sql.Composable, secrets: list[str],
                       psql: str | None = None, sessions: JobSessions | None = None) -> None:
    """Feed psql `BEGIN; prologue; dump; epilogue; COMMIT;` and decide COMMIT only after the dump's
    source (a file, or a pg_restore writing SQL) ended cleanly. Otherwise psql's input ends inside the
    open transaction and PostgreSQL rolls it back: the target is exactly as it was."""
    psql = subprocess.Popen(_psql_argv(psql), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, preexec_fn=die_with_parent)
    psql_tail = StderrTail(psql.stderr)
    if sessions is not None:
        sessions.child(psql)
    source = source_tail = None
    if dump_argv is not None:
        source = subprocess.Popen(dump_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, preexec_fn=die_with_parent)
        source_tail = StderrTail(source.stderr)
        if sessions is not None:
            sessions.child(source)
    commit_sent = killed = False
    fed = 0
    try:
        try:
            psql.stdin.write(b"BEGIN;\n" + prologue.as_string(None).encode())
            stream = source.stdout if source is not None else open(dump_file, "rb")
            with stream:
                while chunk := stream.read(CHUNK):
                    psql.stdin.write(chunk)
                    fed += len(chunk)
                    if sessions is not None:
                        sessions.moved(fed)
            if source is None or source.wait() == 0:
                psql.stdin.write(b"\n" + epilogue.as_string(None).encode() + b"COMMIT;\n")
                commit_sent = True
        except BrokenPipeError:
            pass  # psql stopped first (ON_ERROR_STOP): its stderr says why
        finally:
            try:
                psql.stdin.close()
            except BrokenPipeError:
                pass
    finally:
        if source is not None and source.poll() is None:
            source.kill()  # psql stopped first: pg_restore would block on a pipe nobody reads
            killed = True
        psql_code = psql.wait()
        source_code = source.wait() if source is not None else 0
    # the source's own failure comes first: psql's complaint about a cut-off stream is only its echo;
    # but a pg_restore that died of SIGPIPE, or that the bot killed because psql had stopped, only
    # echoes psql's error, which is the one the report names
    source_echoes_psql = psql_code != 0 and (source_code == -signal.SIGPIPE or (killed and source_code == -signal.SIGKILL))
    if source_code != 0 and not source_echoes_psql:
        detail = last_lines(redact(source_tail.text(), secrets), 4)
        what = f"was killed by signal {-source_code}" if source_code < 0 else f"exited with status {source_code}"
        raise DumpError(f"pg_restore {what}; the transaction was rolled back, nothing was changed"
                        + (f"\n{detail}" if detail else ""))
    if psql_code != 0 or not commit_sent:
        detail = last_lines(redact(psql_tail.text(), secrets), 4)
        raise DumpError(f"psql exited with status {psql_code}; the transaction was rolled back, nothing was changed"
                        + (f"\n{detail}" if detail else ""))


def _run_children(pipeline: list[list[str]], env: dict[str, str], secrets: list[str]) -> None:
    """Run argv lists as a pipeline (stdout of each into the next); raise DumpError naming the first failure."""
    procs, tails = [], []
    stdin = subprocess.DEVNULL
    for i, argv in enumerate(pipeline):
        last = i == len(pipeline) - 1
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, preexec_fn=die_with_parent)
        if stdin is not subprocess.DEVNULL:
            stdin.close()  # the child holds it now
        stdin = proc.stdout
        procs.append(proc)
        tails.append(StderrTail(proc.stderr))
    codes = [proc.wait() for proc in reversed(procs)][::-1]
    failures = [(argv, code, tail) for argv, code, tail in zip(pipeline, codes, tails, strict=True) if code != 0]
    # a writer killed by SIGPIPE only means its reader gave up first: report the reader's reason
    failures.sort(key=lambda failure: failure[1] == -signal.SIGPIPE)
    if failures:
        argv, code, tail = failures[0]
        detail = last_lines(redact(tail.text(), secrets), 4)
        raise DumpError(f"{Path(argv[0]).name} exited with status {code}" + (f"\n{detail}" if detail else ""))
