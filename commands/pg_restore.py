"""The restore runners: fetch and verify an artifact, then psql or pg_restore into a database.

The artifact is first copied to a local file (decompressed) while its sha256 is checked against
the catalog, so a corrupted or tampered artifact is refused before the target is touched.
Restores run in one transaction wherever PostgreSQL allows it, so a failure leaves the target as it
was; `--jobs N` (parallel, which cannot be one transaction) is the exception.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from commands import pg_snapshot
from commands.errors import DumpError, IntegrityError, UsageError
from commands.pg_dump import FORMATS, make_decompressor
from commands.pg_tools import StderrTail, die_with_parent, last_lines, pg_bin, pg_env
from commands.redact import redact
from commands.storage import Storage
from state.backups import BackupRecord

DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CREATE_SCHEMA_RE = re.compile(r'^CREATE SCHEMA (?:IF NOT EXISTS )?("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)', re.M)
# TOC entry types that belong to a table and must come along with it in a --tables restore
TABLE_PARTS = ("TABLE", "TABLE DATA", "INDEX", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "DEFAULT", "SEQUENCE",
               "SEQUENCE SET", "SEQUENCE OWNED BY", "COMMENT", "ACL", "POLICY", "ROW SECURITY", "RULE",
               "CHECK CONSTRAINT", "INDEX ATTACH", "STATISTICS")


def validate_database_name(name: str) -> str:
    if not DB_NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a database name (lowercase letters, digits and _, at most 63)")
    return name


@dataclass(frozen=True)
class FetchedArtifact:
    path: Path  # decompressed: a custom archive or SQL text
    raw_size: int
    toc: str | None  # `pg_restore -l` output for custom archives


def artifact_sha256(storage: Storage, record: BackupRecord) -> str:
    digest = hashlib.sha256()
    for chunk in storage.read_chunks(record.key):
        digest.update(chunk)
    return digest.hexdigest()


def verify_artifact(storage: Storage, record: BackupRecord) -> None:
    """Re-read the stored artifact and compare with the catalog's sha256."""
    actual = artifact_sha256(storage, record)
    if actual != record.sha256:
        raise IntegrityError(f"backup #{record.id} is corrupted: its artifact's sha256 is {actual[:12]}, "
                             f"the catalog says {record.sha256[:12]}; nothing was restored")


def fetch_artifact(storage: Storage, record: BackupRecord, workdir: Path) -> FetchedArtifact:
    """Copy the artifact to `workdir`, decompressed, checking sha256 on the way; read the TOC of archives."""
    fmt = FORMATS[record.format]
    target = workdir / ("archive.dump" if fmt.pg_format == "custom" else "dump.sql")
    digest = hashlib.sha256()
    decompressor = make_decompressor(record.compression)
    raw_size = 0
    broken: Exception | None = None
    with open(target, "wb") as out:
        for chunk in storage.read_chunks(record.key):
            digest.update(chunk)
            if broken is None:
                try:
                    data = decompressor.decompress(chunk)
                except Exception as exc:  # zlib.error, zstd.ZstdError: keep hashing to say why
                    broken = exc
                    continue
                raw_size += len(data)
                out.write(data)
    if digest.hexdigest() != record.sha256:
        raise IntegrityError(f"backup #{record.id} is corrupted: its artifact's sha256 is {digest.hexdigest()[:12]}, "
                             f"the catalog says {record.sha256[:12]}; nothing was restored")
    if broken is not None:
        raise IntegrityError(f"backup #{record.id} cannot be decompressed ({type(broken).__name__}); nothing was restored")
    toc = None
    if fmt.pg_format == "custom":
        result = subprocess.run([pg_bin("pg_restore"), "--list", str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            raise DumpError(f"pg_restore cannot read backup #{record.id}: {last_lines(result.stderr, 3)}")
        toc = result.stdout
    return FetchedArtifact(path=target, raw_size=raw_size, toc=toc)


_TOC_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_TOC_DESCS = sorted(TABLE_PARTS + ("SCHEMA", "FUNCTION", "VIEW", "EXTENSION", "TYPE", "DOMAIN",
                                   "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "ENCODING", "STDSTRINGS"),
                    key=len, reverse=True)
_INDEX_DDL = re.compile(r"^CREATE (?:UNIQUE )?INDEX (\S+) ON (?:ONLY )?([^ .]+)\.([^ (]+)", re.M)
_FK_DDL = re.compile(
    r"^ALTER TABLE (?:ONLY )?([^ .]+)\.(\S+)\n\s+ADD CONSTRAINT (\S+) FOREIGN KEY .*? REFERENCES ([^ .]+)\.([^ (]+)\(", re.M
)
_OWNED_DDL = re.compile(r"^ALTER SEQUENCE ([^ .]+)\.(\S+) OWNED BY ([^ .]+)\.([^ .]+)\.", re.M)


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def toc_entries(toc: str) -> list[tuple[str, str, str, list[str]]]:
    """(line, desc, schema, name parts) for each entry of `pg_restore --list` output."""
    entries = []
    for line in toc.splitlines():
        m = _TOC_ENTRY.match(line)
        if not m:
            continue
        rest = m.group(4)
        desc = next((d for d in _TOC_DESCS if rest.startswith(d + " ")), None)
        if desc is None:
            continue
        tokens = rest[len(desc) + 1:].split(" ")
        if len(tokens) < 3:
            continue
        entries.append((line, desc, tokens[0], tokens[1:-1]))
    return entries


def select_toc_entries(toc: str, ddl: str, tables: list[str]) -> str:
    """The TOC lines that restore `tables` (schema.table) whole: definition, data, defaults,
    constraints, indexes, triggers and owned sequences, plus foreign keys that point at them
    (so --clean can drop and re-create their primary keys). A bare `pg_restore -t` leaves those out.

    `ddl` is the archive's schema as SQL (`pg_restore --section=pre-data --section=post-data`):
    the TOC alone does not say which table an index or a sequence belongs to.
    """
    wanted = {tuple(t.split(".", 1)) for t in tables}
    index_table = {(_unquote(s), _unquote(i)): (_unquote(s), _unquote(t)) for i, s, t in _INDEX_DDL.findall(ddl)}
    fk_refs = {(_unquote(s), _unquote(t), _unquote(name)): (_unquote(rs), _unquote(rt))
               for s, t, name, rs, rt in _FK_DDL.findall(ddl)}
    seq_table = {(_unquote(s), _unquote(q)): (_unquote(ts), _unquote(t)) for s, q, ts, t in _OWNED_DDL.findall(ddl)}
    kept = []
    for line, desc, schema, parts in toc_entries(toc):
        name = parts[0] if parts else ""
        if desc in ("TABLE", "TABLE DATA"):
            keep = (schema, name) in wanted
        elif desc == "INDEX":
            keep = index_table.get((schema, name)) in wanted
        elif desc in ("SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY"):
            keep = seq_table.get((schema, name)) in wanted
        elif desc == "FK CONSTRAINT":
            keep = (schema, name) in wanted or fk_refs.get((schema, name, parts[-1] if len(parts) > 1 else "")) in wanted
        elif desc in ("DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "POLICY", "ROW SECURITY", "RULE"):
            keep = (schema, name) in wanted
        elif desc in ("COMMENT", "ACL") and len(parts) >= 2 and parts[0] == "TABLE":
            keep = (schema, parts[1]) in wanted
        else:
            keep = False
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n"


def archive_ddl(archive: Path) -> str:
    result = subprocess.run([pg_bin("pg_restore"), "--section=pre-data", "--section=post-data", "--file=-", str(archive)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise DumpError(f"pg_restore cannot read the archive: {last_lines(result.stderr, 3)}")
    return result.stdout


def create_database(dsn: str, name: str) -> None:
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(dsn: str, name: str) -> None:
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(dsn: str, name: str) -> bool:
    with pg_snapshot.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def dump_schemas(artifact: FetchedArtifact, record: BackupRecord) -> set[str]:
    """The schemas a whole-database dump creates (quoted as in SQL where needed)."""
    if artifact.toc is not None:
        return {parts[0] for _, desc, _, parts in toc_entries(artifact.toc) if desc == "SCHEMA" and parts}
    schemas = set()
    with open(artifact.path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("CREATE SCHEMA"):
                m = CREATE_SCHEMA_RE.match(line)
                if m:
                    schemas.add(m.group(1))
    return schemas


def clean_prologue(artifact: FetchedArtifact, record: BackupRecord) -> str:
    """SQL that empties what the dump is about to recreate, run in the dump's own transaction.

    A whole-database dump gets every schema it creates dropped, and `public` recreated as
    PostgreSQL 15 makes it (owned by pg_database_owner): the runbook's bare
    `DROP SCHEMA public CASCADE` misses every other schema, and pg_restore's own --clean stops at
    any object created after the backup. A table dump only drops its tables.
    """
    if record.tables:
        return "".join(f"DROP TABLE IF EXISTS {pg_snapshot.quote_table(t)} CASCADE;\n" for t in record.tables)
    statements = [f"DROP SCHEMA IF EXISTS {sql_name(name)} CASCADE;"
                  for name in sorted(dump_schemas(artifact, record)) if name != "public"]
    statements += ["DROP SCHEMA IF EXISTS public CASCADE;", "CREATE SCHEMA public AUTHORIZATION pg_database_owner;",
                   "GRANT USAGE ON SCHEMA public TO PUBLIC;", "COMMENT ON SCHEMA public IS 'standard public schema';"]
    return "\n".join(statements) + "\n"


def sql_name(name: str) -> str:
    if name.startswith('"') or re.match(r"^[a-z_][a-z0-9_$]*$", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def run_restore(dsn: str, dbname: str, record: BackupRecord, artifact: FetchedArtifact, workdir: Path,
                tables: list[str] | None = None, jobs: int = 1, secrets: list[str] = ()) -> None:
    """Restore `artifact` into database `dbname` on the server of `dsn`; raises DumpError with stderr's tail.

    - plain and gzip: `psql --single-transaction` over the cleaning prologue and the dump;
    - custom, whole: `pg_restore --file=-` streamed into the same psql transaction;
    - custom with --jobs N: the prologue, then `pg_restore --jobs N` (parallel cannot be one transaction);
    - custom with --tables: `pg_restore --clean --if-exists --single-transaction --use-list` of the tables' entries.
    """
    validate_database_name(dbname)
    env = pg_env(dsn, dbname=dbname)
    # index and constraint builds are most of a restore's work after the data: give them memory
    env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c maintenance_work_mem=256MB").strip()
    fmt = FORMATS[record.format]
    psql = [pg_bin("psql"), "--no-password", "--quiet", "-v", "ON_ERROR_STOP=1", "--single-transaction",
            "--no-psqlrc", f"--dbname={dbname}"]
    pg_restore = [pg_bin("pg_restore"), "--no-password", "--exit-on-error"]
    if fmt.pg_format != "custom" and (tables or jobs > 1):
        raise UsageError("--tables and --jobs need a custom-format backup")
    if fmt.pg_format == "custom" and tables:
        listing = workdir / "restore.list"
        listing.write_text(select_toc_entries(artifact.toc or "", archive_ddl(artifact.path), tables))
        _run([[*pg_restore, f"--dbname={dbname}", "--clean", "--if-exists", "--single-transaction",
               f"--use-list={listing}", str(artifact.path)]], env, secrets)
        return
    prologue = workdir / "prologue.sql"
    prologue.write_text(clean_prologue(artifact, record))
    if fmt.pg_format != "custom":
        _run([[*psql, "-f", str(prologue), "-f", str(artifact.path)]], env, secrets)
    elif jobs > 1:
        _run([[*psql, "-f", str(prologue)]], env, secrets)
        _run([[*pg_restore, f"--dbname={dbname}", f"--jobs={jobs}", str(artifact.path)]], env, secrets)
    else:
        _run([[*pg_restore, "--file=-", str(artifact.path)], [*psql, "-f", str(prologue), "-f", "-"]], env, secrets)


def _run(pipeline: list[list[str]], env: dict[str, str], secrets: list[str]) -> None:
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


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="backupbot-restore-")
