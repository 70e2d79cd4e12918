"""The restore runners: fetch and verify an artifact, then psql or pg_restore into a database.

The artifact is first copied to a local file (decompressed) while its sha256 is checked against
the catalog, so a corrupted or tampered artifact is refused before the target is touched.
A restore into an existing database runs in one transaction that the bot itself opens and
closes: psql reads BEGIN, the cleaning prologue, the dump, the verification and COMMIT from a pipe
the bot writes, and COMMIT is written only after every child exited 0, so a pg_restore that dies
half-way leaves psql at end-of-file inside an open transaction, which PostgreSQL rolls back.
`--jobs N` cannot be one transaction: it restores into a side database that is verified and then
swapped in by name (commands.restore.run).

Every name in SQL the bot writes comes from the backup's manifest (read in the dump's snapshot)
through `psycopg.sql.Identifier`; archive entries are chosen by the OIDs the manifest recorded.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from commands.errors import DumpError, EncryptionError, IntegrityError, UsageError
from commands.pg import snapshot as pg_snapshot
from commands.pg.dump import FORMATS, make_decompressor
from commands.pg.names import QualifiedName, parse_key, read_quoted
from commands.pg.scratch import job_dir, private_file
from commands.pg.tools import StderrTail, die_with_parent, last_lines, pg_bin, pg_bin_for, pg_env, with_dbname
from commands.redact import redact
from commands.storage import Storage
from commands.storage.encryption import DecryptChain, Decryptor
from state.backups import BackupRecord

DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CHUNK = 1 << 20


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


def artifact_decompressor(record: BackupRecord, identity_file: str | None):
    """Stored bytes -> the dump: `decompress(bytes)`, then `flush()`. An encrypted backup is decrypted first
    with the age key in `identity_file`; raises EncryptionError when that key cannot decrypt it."""
    decompressor = make_decompressor(record.compression)
    if not record.encryption:
        return decompressor
    if record.encryption != "age":
        raise EncryptionError(f"backup #{record.id} is encrypted with {record.encryption!r}, which this bot cannot read")
    return DecryptChain(Decryptor(identity_file, recipients=record.recipients), decompressor)


def fetch_artifact(storage: Storage, record: BackupRecord, workdir: Path) -> FetchedArtifact:
    """Copy the artifact to `workdir`, decrypted with the storage's identity_file when encrypted and
    decompressed, checking sha256 (of the stored bytes) on the way; read the TOC of archives."""
    fmt = FORMATS[record.format]
    target = workdir / ("archive.dump" if fmt.pg_format == "custom" else "dump.sql")
    digest = hashlib.sha256()
    decompressor = artifact_decompressor(record, getattr(storage, "identity_file", None))
    raw_size = 0
    broken: Exception | None = None
    with private_file(target) as out:
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
        if isinstance(decompressor, DecryptChain):
            try:
                data = decompressor.flush() if broken is None else b""
                raw_size += len(data)
                out.write(data)
            except Exception as exc:
                broken = exc
            finally:
                decompressor.close()
    if digest.hexdigest() != record.sha256:
        raise IntegrityError(f"backup #{record.id} is corrupted: its artifact's sha256 is {digest.hexdigest()[:12]}, "
                             f"the catalog says {record.sha256[:12]}; nothing was restored")
    if isinstance(broken, EncryptionError | IntegrityError):  # the age key does not fit, or the ciphertext is bad
        raise type(broken)(f"backup #{record.id}: {broken}; nothing was restored")
    if broken is not None:
        raise IntegrityError(f"backup #{record.id} cannot be decompressed ({type(broken).__name__}); nothing was restored")
    toc = None
    if fmt.pg_format == "custom":
        result = subprocess.run([pg_bin("pg_restore"), "--list", str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            raise DumpError(f"pg_restore cannot read backup #{record.id}: {last_lines(result.stderr, 3)}")
        toc = result.stdout
    return FetchedArtifact(path=target, raw_size=raw_size, toc=toc)



# ---------------------------------------------------------------- choosing archive entries

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
PG_CLASS = 1259  # 'pg_class'::regclass in every PostgreSQL


@dataclass(frozen=True)
class TocLine:
    line: str
    tableoid: int
    oid: int
    rest: str  # "DESC schema tag owner": read only for entries without an OID, and only by equality


def toc_lines(toc: str) -> list[TocLine]:
    lines = []
    for line in toc.splitlines():
        m = _TOC_LINE.match(line)
        if m:
            lines.append(TocLine(line, int(m.group(2)), int(m.group(3)), m.group(4)))
    return lines


def _listed(text: str) -> str:
    """How `pg_restore --list` prints a name: newlines and carriage returns become spaces."""
    return text.replace("\n", " ").replace("\r", " ")


def _tag_forms(name: str) -> set[str]:
    """A comment's or ACL's tag names its object as pg_dump's fmtId does (quoted when needed)."""
    return {name, '"' + name.replace('"', '""') + '"'}


def _oidless_entries(table: dict) -> set[str]:
    """The `pg_restore --list` text of a table's entries that carry no OID (sequence values, comments,
    ACLs), in every form pg_dump may write them, so a line is matched whole, by equality."""
    schema, owner = table["schema"], table["owner"]
    texts = set()
    for tag in _tag_forms(table["name"]):
        for desc in ("COMMENT", "ACL", "SECURITY LABEL"):
            texts.add(f"{desc} {schema} TABLE {tag} {owner}")
        for column in table["columns"]:
            for col in _tag_forms(column):
                for desc in ("COMMENT", "ACL", "SECURITY LABEL"):
                    texts.add(f"{desc} {schema} COLUMN {tag}.{col} {owner}")
    for seq in table["sequences"]:
        texts.add(f"SEQUENCE SET {seq['schema']} {seq['name']} {seq['owner']}")
        texts.add(f"SEQUENCE OWNED BY {seq['schema']} {seq['name']} {seq['owner']}")
        for tag in _tag_forms(seq["name"]):
            texts.add(f"COMMENT {seq['schema']} SEQUENCE {tag} {seq['owner']}")
            texts.add(f"ACL {seq['schema']} SEQUENCE {tag} {seq['owner']}")
    return {_listed(t) for t in texts}


def select_toc_entries(toc: str, objects: dict, wanted: list[QualifiedName], backup_id: int) -> str:
    """The archive entries that restore `wanted` whole: definition, data, defaults, constraints,
    indexes, triggers, policies, rules, owned sequences with their values, comments and ACLs, plus
    the foreign keys that point at them (so their keys can be dropped and re-created).

    Entries are chosen by the (catalog, OID) pairs the backup recorded for each table; the few
    entries pg_dump writes without an OID are matched by their whole line, and refused when another
    table's entries would read the same (names that differ only in where a space falls)."""
    tables = {QualifiedName(t["schema"], t["name"]): t for t in objects["tables"]}
    chosen = []
    for name in wanted:
        if name not in tables:
            raise UsageError(f"backup #{backup_id} does not record table {name.key}")
        chosen.append(tables[name])
    pairs = {(int(c), int(o)) for t in chosen for c, o in (p.split(":") for p in t["parts"])}
    pairs |= {(PG_CLASS, t["oid"]) for t in chosen}
    data_oids = {t["oid"] for t in chosen}
    oidless = set().union(*(_oidless_entries(t) for t in chosen))
    others = set().union(set(), *(_oidless_entries(t) for n, t in tables.items() if n not in wanted))
    clash = oidless & others
    if clash:
        raise UsageError(f"backup #{backup_id}: tables' names are too alike to pick their entries apart "
                         f"({sorted(clash)[0]!r}); restore the whole backup instead")
    kept = [t.line for t in toc_lines(toc)
            if (t.tableoid, t.oid) in pairs
            or (t.tableoid == 0 and t.oid in data_oids)  # TABLE DATA carries its table's OID
            or (t.tableoid == 0 and t.oid == 0 and t.rest in oidless)]
    return "\n".join(kept) + "\n"


# ---------------------------------------------------------------- databases


def create_database(dsn: str, name: str, like: str | None = None) -> None:
    """CREATE DATABASE `name`; with `like`, with that database's owner, encoding and locale."""
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        if like is None:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            return
        owner, encoding, collate, ctype = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
            "FROM pg_database WHERE datname = %s", [like]).fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))
        copy_database_settings(conn, like, name)


# settings whose stored value is a list of possibly double-quoted names (pg_dump's variable_is_guc_list_quote)
GUC_LIST_QUOTE = {"local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
                  "temp_tablespaces", "unix_socket_directories"}


def split_guc_list(value: str) -> list[str]:
    """`reporting, "My Schema"` -> ['reporting', 'My Schema'], as PostgreSQL's SplitGUCList reads it."""
    items, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            name, i = read_quoted(value, i) or (value[i + 1:], n)
            items.append(name)
        else:
            j = value.find(",", i)
            j = n if j == -1 else j
            items.append(value[i:j].strip())
            i = j
        while i < n and value[i] != ",":
            i += 1
        i += 1
    return [item for item in items if item != ""] or [""]


def copy_database_settings(conn: psycopg.Connection, source: str, target: str) -> None:
    """What pg_restore without --create never restores, from `source` onto `target` (a side database
    about to take its name): ALTER DATABASE ... SET (for everyone and per role), the database's
    privileges, its connection limit and its comment."""
    dbid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", [source]).fetchone()[0]
    target_id = sql.Identifier(target)
    for role, config in conn.execute(
            "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE s.setdatabase = %s", [dbid]).fetchall():
        for item in config:
            key, _, value = item.partition("=")
            values = ([sql.Literal(v) for v in split_guc_list(value)] if key.lower() in GUC_LIST_QUOTE
                      else [sql.Literal(value)])
            setting = sql.SQL("SET {} = {}").format(sql.Identifier(key), sql.SQL(", ").join(values))
            if role is None:
                query = sql.SQL("ALTER DATABASE {} {}").format(target_id, setting)
            else:
                query = sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(sql.Identifier(role), target_id, setting)
            conn.execute(query)
    limit, comment, has_acl = conn.execute(
        "SELECT datconnlimit, shobj_description(oid, 'pg_database'), datacl IS NOT NULL FROM pg_database "
        "WHERE oid = %s", [dbid]).fetchone()
    conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(target_id, sql.Literal(limit)))
    if comment is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target_id, sql.Literal(comment)))
    if has_acl:  # NULL means the defaults, which a new database has already
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target_id))
        for grantee, privilege, grantable in conn.execute(
                "SELECT r.rolname, a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
                "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE d.oid = %s", [dbid]).fetchall():
            to = sql.Identifier(grantee) if grantee is not None else sql.SQL("PUBLIC")
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), target_id, to, sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))


def drop_database(dsn: str, name: str) -> None:
    validate_database_name(name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def swap_databases(dsn: str, target: str, side: str, keep_as: str) -> None:
    """Put database `side` in place of `target` by name, keeping the old `target` as `keep_as`.

    Sessions on the target are ended (it refuses new ones meanwhile). If the second rename fails the
    first is undone, so `target` always names either the old or the new database, never nothing."""
    validate_database_name(side)
    validate_database_name(keep_as)
    with psycopg.connect(with_dbname(dsn, side), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(target)))
        renamed = False
        try:
            _rename_when_free(conn, target, keep_as)
            renamed = True
        finally:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                sql.Identifier(keep_as if renamed else target)))
    try:
        with psycopg.connect(with_dbname(dsn, keep_as), autocommit=True, connect_timeout=10) as conn:
            _rename_when_free(conn, side, target)
    except BaseException:
        with psycopg.connect(with_dbname(dsn, side), autocommit=True, connect_timeout=10) as conn:
            _rename_when_free(conn, keep_as, target)
        raise


def _rename_when_free(conn: psycopg.Connection, old: str, new: str, attempts: int = 50) -> None:
    """ALTER DATABASE ... RENAME after ending the sessions on it, retried while they go away."""
    for attempt in range(attempts):
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", [old])
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def databases_like(dsn: str, pattern: str) -> list[str]:
    """Databases whose names match a LIKE pattern (bot-made names only)."""
    with pg_snapshot.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]


def database_exists(dsn: str, name: str) -> bool:
    with pg_snapshot.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


# ---------------------------------------------------------------- the SQL the bot writes


def recorded_objects(record: BackupRecord) -> dict:
    if not record.objects:
        raise UsageError(f"backup #{record.id} was taken by an older backupbot that did not record its schemas and "
                         "tables exactly; restore it by hand (see its manifest), or take a new backup")
    return record.objects


def clean_prologue(record: BackupRecord) -> sql.Composable:
    """SQL that empties what a whole-database dump is about to recreate, in the dump's own transaction.

    Every schema the dump writes (recorded in the dump's snapshot) is dropped, and `public` is
    recreated as PostgreSQL 15 makes it: the runbook's bare `DROP SCHEMA public CASCADE` misses
    every other schema. A dump of some tables drops only those tables, without CASCADE, so views
    and foreign keys of other tables are never dropped silently: the restore fails and rolls back.
    """
    objects = recorded_objects(record)
    if record.tables:
        return sql.SQL("").join(sql.SQL("DROP TABLE IF EXISTS {};\n").format(parse_key(key).identifier())
                                for key in record.tables)
    statements = [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE;\n").format(sql.Identifier(name))
                  for name in objects["schemas"] if name != "public"]
    statements.append(sql.SQL("DROP SCHEMA IF EXISTS public CASCADE;\n"
                              "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n"
                              "GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
                              "COMMENT ON SCHEMA public IS 'standard public schema';\n"))
    return sql.SQL("").join(statements)


def not_valid_scope(tables: list[str]) -> tuple[str, ...]:
    """NOT VALID constraints are recorded as `schema.table.constraint` (as the catalog spells them):
    the prefixes that put one in the scope of a `--tables` restore."""
    return tuple(f"{name.schema}.{name.name}." for name in map(parse_key, tables))


def verification_sql(record: BackupRecord, tables: list[str]) -> sql.Composable:
    """A DO block that raises, before COMMIT, when the restored rows or NOT VALID constraints differ
    from the backup's: a restore that does not verify never commits."""
    expected = {key: n for key, n in record.row_counts.items() if not tables or key in tables}
    body = [sql.SQL("DECLARE n bigint; found text[]; wanted text[]; BEGIN\n")]
    for key, count in sorted(expected.items()):
        body.append(sql.SQL(
            "SELECT count(*) INTO n FROM {table};\n"
            "IF n <> {count} THEN RAISE EXCEPTION 'backupbot verification: % has % rows, the backup has %', "
            "{key}, n, {count}; END IF;\n").format(table=parse_key(key).identifier(), count=sql.Literal(count),
                                                   key=sql.Literal(key)))
    recorded = sorted(record.not_valid_constraints)
    scope = not_valid_scope(tables)
    if tables:
        recorded = [c for c in recorded if c.startswith(scope)]
    body.append(sql.SQL(
        "SELECT coalesce(array_agg(x ORDER BY x), '{{}}') INTO found FROM ({query}) AS v(x) {scope};\n"
        "SELECT coalesce(array_agg(x ORDER BY x), '{{}}') INTO wanted FROM unnest({recorded}::text[]) AS w(x);\n"
        "IF found IS DISTINCT FROM wanted THEN RAISE EXCEPTION "
        "'backupbot verification: NOT VALID constraints are %, the backup had %', found, wanted; END IF;\n"
        "END").format(query=sql.SQL(pg_snapshot.NOT_VALID_SQL.replace("ORDER BY 1", "").strip()),
                      scope=sql.SQL("WHERE {}").format(sql.SQL(" OR ").join(
                          sql.SQL("starts_with(x, {})").format(sql.Literal(p)) for p in scope)) if tables else sql.SQL(""),
                      recorded=sql.Literal(recorded)))
    return sql.SQL("DO {};\n").format(sql.Literal(sql.Composed(body).as_string(None)))


# ---------------------------------------------------------------- running


def run_restore(dsn: str, dbname: str, record: BackupRecord, artifact: FetchedArtifact, workdir: Path,
                tables: list[str] | None = None, jobs: int = 1, secrets: list[str] = (), no_owner: bool = False,
                server_major: int | None = None) -> None:
    """Restore `artifact` into database `dbname` on the server of `dsn`; raises DumpError with stderr's tail.

    - plain and gzip: psql over BEGIN, the cleaning prologue, the dump, the verification, COMMIT;
    - custom, whole: the same, with `pg_restore --file=-` as the dump;
    - custom with --tables (or a backup of some tables): `pg_restore --clean --if-exists` of the tables'
      entries, in the same kind of transaction, verified before COMMIT;
    - custom with --jobs N: `pg_restore --jobs N` straight into `dbname`, which must be a database the
      caller created for it (a new target or a side database): parallel jobs cannot share a transaction.
    """
    env = pg_env(dsn, dbname=dbname)
    # index and constraint builds are most of a restore's work after the data: give them memory
    env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " -c maintenance_work_mem=256MB").strip()
    fmt = FORMATS[record.format]
    # the newest installed client that knows the receiving server, when its version is known
    client = (lambda name: pg_bin_for(name, server_major)) if server_major else pg_bin
    pg_restore = [client("pg_restore"), "--no-password", "--exit-on-error"]
    if no_owner:  # onto a server without the backup's roles: objects belong to whoever restores them
        pg_restore += ["--no-owner", "--no-privileges"]
    if fmt.pg_format != "custom" and (tables or jobs > 1):
        raise UsageError("--tables and --jobs need a custom-format backup")
    verify = verification_sql(record, list(tables or ()))
    if jobs > 1 and (tables or record.tables):
        raise UsageError("--jobs restores a whole backup; a restore of tables runs in one transaction, without --jobs")
    if jobs > 1:
        _run_children([[*pg_restore, f"--jobs={jobs}", f"--dbname={dbname}", str(artifact.path)]], env, secrets)
        return
    if fmt.pg_format != "custom":
        run_in_transaction(env, clean_prologue(record), artifact.path, None, verify, secrets, client("psql"))
        return
    objects = recorded_objects(record)
    if tables or record.tables:
        wanted = [_key_name(t) for t in (tables or record.tables)]
        listing = workdir / "restore.list"
        with private_file(listing) as out:
            out.write(select_toc_entries(artifact.toc or "", objects, wanted, record.id).encode())
        source = [*pg_restore, "--file=-", "--clean", "--if-exists", f"--use-list={listing}", str(artifact.path)]
        run_in_transaction(env, sql.SQL(""), None, source, verify, secrets, client("psql"))
        return
    source = [*pg_restore, "--file=-", str(artifact.path)]
    run_in_transaction(env, clean_prologue(record), None, source, verify, secrets, client("psql"))


def _key_name(key: str) -> QualifiedName:
    return parse_key(key)


def _psql_argv(psql: str | None = None) -> list[str]:
    # no --single-transaction: the bot writes BEGIN and, only when everything succeeded, COMMIT
    return [psql or pg_bin("psql"), "--no-password", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--file=-"]


def run_in_transaction(env: dict[str, str], prologue: sql.Composable, dump_file: Path | None,
                       dump_argv: list[str] | None, epilogue: sql.Composable, secrets: list[str],
                       psql: str | None = None) -> None:
    """Feed psql `BEGIN; prologue; dump; epilogue; COMMIT;` and decide COMMIT only after the dump's
    source (a file, or a pg_restore writing SQL) ended cleanly. Otherwise psql's input ends inside the
    open transaction and PostgreSQL rolls it back: the target is exactly as it was."""
    psql = subprocess.Popen(_psql_argv(psql), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, preexec_fn=die_with_parent)
    psql_tail = StderrTail(psql.stderr)
    source = source_tail = None
    if dump_argv is not None:
        source = subprocess.Popen(dump_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, preexec_fn=die_with_parent)
        source_tail = StderrTail(source.stderr)
    commit_sent = False
    try:
        try:
            psql.stdin.write(b"BEGIN;\n" + prologue.as_string(None).encode())
            stream = source.stdout if source is not None else open(dump_file, "rb")
            with stream:
                while chunk := stream.read(CHUNK):
                    psql.stdin.write(chunk)
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
            source.kill()
        psql_code = psql.wait()
        source_code = source.wait() if source is not None else 0
    # the source's own failure comes first: psql's complaint about a cut-off stream is only its echo
    if source_code != 0 and not (psql_code != 0 and source_code == -signal.SIGPIPE):
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


def scratch_dir(settings):
    """A private job folder in the instance's scratch root (commands.pg.scratch), removed after."""
    return job_dir(settings, "restore")
