"""Roles a dump needs, recorded at backup time and recreated on a second, empty cluster."""

from __future__ import annotations

import itertools
import json
import subprocess

import psycopg
import pytest
from psycopg import sql

from commands.errors import DumpError
from commands.pg.globals import (
    create_roles,
    create_roles_from_globals,
    dump_globals,
    dumpall_argv,
    missing_roles,
    role_definitions,
    roles_in_database,
    split_statements,
)
from commands.pg.roles import parse_definitions
from commands.pg.tools import pg_bin, pg_env

_tags = itertools.count(1)


def hostile_names(tag: str) -> dict[str, str]:
    long_name = f"r{tag}_" + "é" * 30  # é is 2 bytes in UTF-8
    long_name = long_name.encode()[:63].decode("utf-8", "ignore")
    long_name += "x" * (63 - len(long_name.encode()))
    return {
        "owner": f"app owner {tag}",
        "quote": f"o'brien \"the\" dba {tag}",
        "semi": f"x; DROP ROLE postgres; -- {tag}",
        "unicode": f"lecteur_données_{tag}_日本",
        "long": long_name,
        "Mixed": f"MixedCase{tag}",
        "parent": f"readers group {tag}",
        "bystander": f"unrelated {tag}",
    }


@pytest.fixture
def roles(pg_dsn):
    """Hostile role names owning and granted objects in a fresh database; dropped afterwards."""
    names = hostile_names(f"{next(_tags)}")
    assert len(names["long"].encode()) == 63
    r = {k: sql.Identifier(v) for k, v in names.items()}
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT 7 PASSWORD 'owner-secret-pw'").format(r["owner"]))
        conn.execute(sql.SQL("CREATE ROLE {} NOINHERIT").format(r["quote"]))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL '2031-01-01 00:00:00+00'").format(r["semi"]))
        for key in ("unicode", "long", "Mixed", "parent", "bystander"):
            conn.execute(sql.SQL("CREATE ROLE {}").format(r[key]))
        conn.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(r["parent"], r["unicode"]))
        conn.execute(sql.SQL("CREATE SCHEMA billing AUTHORIZATION {}").format(r["owner"]))
        conn.execute("CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric, secret text)")
        conn.execute("CREATE SEQUENCE billing.numbers")
        conn.execute("CREATE TYPE billing.state AS ENUM ('open', 'paid')")
        conn.execute("CREATE FUNCTION billing.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
        conn.execute("INSERT INTO billing.invoices VALUES (1, 10.5, 's'), (2, 99, 't')")
        conn.execute(sql.SQL("ALTER TABLE billing.invoices OWNER TO {}").format(r["owner"]))
        conn.execute(sql.SQL("ALTER SEQUENCE billing.numbers OWNER TO {}").format(r["Mixed"]))
        conn.execute(sql.SQL("ALTER TYPE billing.state OWNER TO {}").format(r["long"]))
        conn.execute(sql.SQL("ALTER FUNCTION billing.answer() OWNER TO {}").format(r["semi"]))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA billing TO {}").format(r["unicode"]))
        conn.execute(sql.SQL("GRANT SELECT ON billing.invoices TO {}").format(r["unicode"]))
        conn.execute(sql.SQL("GRANT SELECT (id, total) ON billing.invoices TO {}").format(r["quote"]))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA billing GRANT SELECT ON TABLES TO {}").format(r["parent"]))
    yield names
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA billing CASCADE")
        for name in names.values():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def run(tool: str, dsn: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([pg_bin(tool), *args], input=stdin, capture_output=True, env=pg_env(dsn))


def plain_dump(dsn: str) -> bytes:
    result = run("pg_dump", dsn, "--format=plain", "--schema=billing")
    assert result.returncode == 0, result.stderr
    return result.stdout


def load(dsn: str, dump: bytes) -> subprocess.CompletedProcess:
    return run("psql", dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", stdin=dump)


def owners_and_grants(dsn: str) -> list:
    with psycopg.connect(dsn) as conn:
        return conn.execute("""
            SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text,
                   (SELECT array_agg(a.attname || '=' || a.attacl::text ORDER BY a.attname)
                    FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'billing'
            UNION ALL SELECT 'schema', 'n', pg_get_userbyid(nspowner), nspacl::text, NULL
                      FROM pg_namespace WHERE nspname = 'billing'
            UNION ALL SELECT proname, 'f', pg_get_userbyid(proowner), NULL, NULL FROM pg_proc
                      WHERE pronamespace = 'billing'::regnamespace
            UNION ALL SELECT typname, 't', pg_get_userbyid(typowner), NULL, NULL FROM pg_type
                      WHERE typnamespace = 'billing'::regnamespace AND typtype = 'e'
            ORDER BY 1, 2""").fetchall()


def test_roles_in_database_are_owners_grantees_and_default_privilege_roles(roles, pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        found = roles_in_database(conn)
    needed = {roles[k] for k in ("owner", "quote", "semi", "unicode", "long", "Mixed", "parent")}
    assert needed <= set(found)
    assert roles["bystander"] not in found
    assert not [name for name in found if name.startswith("pg_")]


def test_hostile_role_names_are_recreated_on_a_new_cluster_and_the_dump_loads_with_owners(roles, pg_dsn, dr_cluster):
    with psycopg.connect(pg_dsn) as conn:
        needed = roles_in_database(conn)
        definitions = json.loads(json.dumps(role_definitions(conn, needed)))  # as stored in the manifest
    by_name = {d["name"]: d for d in definitions}
    assert by_name[roles["owner"]]["rolcanlogin"] and by_name[roles["owner"]]["rolcreatedb"]
    assert by_name[roles["owner"]]["rolconnlimit"] == 7
    assert by_name[roles["quote"]]["rolinherit"] is False
    assert by_name[roles["unicode"]]["member_of"] == [{"role": roles["parent"], "admin": True}]
    assert "password" not in json.dumps(definitions).lower()

    target = dr_cluster.create_database(f"dr_{next(_tags)}")
    dump = plain_dump(pg_dsn)
    before = load(target, dump)
    assert before.returncode != 0 and b"does not exist" in before.stderr  # the disaster this prevents

    ours = [name for name in needed if name != "postgres"]
    assert missing_roles(target, needed) == sorted(ours)
    created = create_roles(target, parse_definitions(definitions, "the manifest"))
    assert sorted(created.created) == sorted(ours)
    assert created.already_there == ["postgres"]
    assert (roles["unicode"], roles["parent"]) in created.memberships
    assert missing_roles(target, needed) == []

    with psycopg.connect(target) as conn:
        assert role_definitions(conn, needed) == definitions
    after = load(target, dump)
    assert after.returncode == 0, after.stderr.decode()
    assert owners_and_grants(target) == owners_and_grants(pg_dsn)

    again = create_roles(target, parse_definitions(definitions, "the manifest"))  # idempotent: nothing changes the second time
    assert again.created == [] and sorted(again.already_there) == sorted(needed)


def test_globals_file_has_passwords_only_when_asked(roles, pg_dsn):
    without = dump_globals(pg_dsn, include_passwords=False).decode()
    assert 'CREATE ROLE "app owner' in without
    assert "SCRAM-SHA-256$" not in without and "PASSWORD '" not in without
    with_passwords = dump_globals(pg_dsn, include_passwords=True).decode()
    assert "SCRAM-SHA-256$" in with_passwords
    assert "owner-secret-pw" not in with_passwords  # only the hash
    argv = dumpall_argv("app", include_passwords=False)
    assert argv[1:] == ["--globals-only", "--no-password", "--database=app", "--no-role-passwords"]


def test_globals_file_creates_only_the_chosen_roles_on_a_new_cluster(roles, pg_dsn, dr_cluster):
    globals_sql = dump_globals(pg_dsn, include_passwords=True)
    statements = split_statements(globals_sql.decode())
    assert any(roles["semi"].replace('"', '""') in s for s in statements)
    wanted = [roles[k] for k in ("owner", "quote", "semi", "unicode", "long", "Mixed", "parent")]
    target = dr_cluster.dsn()
    created = create_roles_from_globals(target, globals_sql, only=wanted)
    assert sorted(created.created) == sorted(wanted)
    assert (roles["unicode"], roles["parent"]) in created.memberships
    assert missing_roles(target, [roles["bystander"]]) == [roles["bystander"]]
    with psycopg.connect(pg_dsn) as source, psycopg.connect(target) as copy:
        assert role_definitions(copy, wanted) == role_definitions(source, wanted)
    # the password hash came along: the owner can log in to the new server with its old password
    login = dr_cluster.dsn().replace(f"{dr_cluster.user}:{_quoted(dr_cluster.password)}@",
                                     f"{_quoted(roles['owner'])}:owner-secret-pw@")
    with psycopg.connect(login) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == roles["owner"]


def _quoted(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def test_dump_globals_failure_is_a_redacted_dump_error(pg_cluster):
    bad = pg_cluster.dsn().replace(_quoted(pg_cluster.password), "wrong-password-123")
    with pytest.raises(DumpError, match="pg_dumpall exited with status 1") as caught:
        dump_globals(bad, include_passwords=False)
    assert "wrong-password-123" not in str(caught.value)
