"""Roles a restore onto another server creates (issue #17): listed with their attributes and memberships,
privileged ones refused before anyone is asked unless the request opts in, and every role built from
checked fields, never from SQL text out of the backup store, which someone may have forged."""

from __future__ import annotations

import itertools
import json
import time

import psycopg
import pytest
from psycopg import sql

from commands.errors import IntegrityError
from commands.pg.globals import create_roles_from_globals
from commands.pg.roles import PrivilegedRoleError
from state import approvals as request_state
from state import incidents as incident_state
from tests.builders import make_console, make_settings, resign_manifest
from tests.fix_pgbackrest import server_now
from tests.test_point_in_time_restore import pitr_state
from tests.test_restore import approve, message_id

ACCESS = {"operators": ["U0OPS"], "approvers": ["U0APP1"], "required_approvals": 1}
_tags = itertools.count(1)


def tag() -> str:  # the clusters live for one test session
    return f"{next(_tags)}"


def dr_roles(dr_cluster, names) -> dict[str, tuple]:
    """The given roles as the DR server has them: name -> (superuser, member of)."""
    with dr_cluster.admin() as conn:
        rows = conn.execute("SELECT r.rolname, r.rolsuper, ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g "
                            "ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) FROM pg_roles r "
                            "WHERE r.rolname = ANY(%s)", [list(names)]).fetchall()
    return {name: (superuser, members) for name, superuser, members in rows}


def all_dr_roles(dr_cluster) -> set[str]:
    with dr_cluster.admin() as conn:
        return {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}


def clean_dr(dr_cluster, dbname: str, roles) -> None:
    with dr_cluster.admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def shop(pg_cluster, pg_dsn):
    """A database whose table belongs to a SUPERUSER role and is read by a member of
    pg_execute_server_program; its roles are dropped afterwards."""
    t = tag()
    names = {"boss": f"boss {t}", "runner": f"runner {t}", "clerk": f"clerk {t}"}
    boss, runner, clerk = (sql.Identifier(names[k]) for k in ("boss", "runner", "clerk"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER NOLOGIN").format(boss))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(runner))
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(clerk))
        conn.execute(sql.SQL("GRANT pg_execute_server_program TO {}").format(runner))
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 20) g")
        conn.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(boss))
        conn.execute(sql.SQL("GRANT SELECT ON orders TO {}, {}").format(runner, clerk))
    yield {**names, "dbname": pg_dsn.rsplit("/", 1)[1]}
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE orders")
        for name in names.values():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def dr_console(tmp_path, dsn, dr_cluster):
    return make_console(make_settings(tmp_path, dsn, access=ACCESS, env={"DR_URL": dr_cluster.dsn("postgres")},
                                      targets={"dr": {"url_env": "DR_URL"}}))


def test_a_superuser_owner_is_refused_before_anyone_is_asked(tmp_path, pg_dsn, shop, dr_cluster):
    console = dr_console(tmp_path, pg_dsn, dr_cluster)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    try:
        out = console.run("/restore latest main --to dr")
        assert f"role {shop['boss']} would have SUPERUSER" in out, out
        assert f"role {shop['runner']} would have member of pg_execute_server_program" in out, out
        assert "--allow-privileged-roles" in out and "--no-owner" in out and "Nobody was asked" in out
        assert "Restore request" not in out and "Traceback" not in out
        assert request_state.get_request(console.services.store, 1) is None  # nothing for anyone to approve
        assert dr_roles(dr_cluster, shop.values()) == {}  # nothing was created there
        assert "will be created" in console.run("/restore latest main --to dr --no-owner --dry-run")
    finally:
        clean_dr(dr_cluster, shop["dbname"], [shop["boss"], shop["runner"], shop["clerk"]])


def test_with_the_flag_the_plan_flags_them_and_the_audit_log_shows_the_opt_in(tmp_path, pg_dsn, shop, dr_cluster):
    console = dr_console(tmp_path, pg_dsn, dr_cluster)
    assert "Backup #1 of main succeeded" in console.run("/backup")
    try:
        out = console.run("/restore latest main --to dr --allow-privileged-roles")
        lines = out.splitlines()
        assert f"  • {shop['boss']}: NOLOGIN SUPERUSER; no memberships · :warning: PRIVILEGED: SUPERUSER" in lines, out
        assert (f"  • {shop['runner']}: LOGIN; member of pg_execute_server_program · :warning: PRIVILEGED: member of "
                "pg_execute_server_program") in lines, out
        assert f"  • {shop['clerk']}: NOLOGIN; no memberships" in lines, out
        assert ":warning: --allow-privileged-roles: the privileged roles above are created as flagged" in lines
        requested = incident_state.audit_rows(console.services.store)
        assert any(r["kind"] == "restore.requested" and "with --allow-privileged-roles" in r["text"] for r in requested)
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert "Restore request #1 restored backup #1" in out, out
        assert "privileged, as allowed" in out
        assert dr_roles(dr_cluster, shop.values()) == {shop["boss"]: (True, []),
                                                       shop["runner"]: (False, ["pg_execute_server_program"]),
                                                       shop["clerk"]: (False, [])}
        opted = [r for r in incident_state.audit_rows(console.services.store) if r["kind"] == "restore.privileged_roles"]
        assert len(opted) == 1 and "as requested with --allow-privileged-roles" in opted[0]["text"]
        assert f"{shop['boss']} (SUPERUSER)" in opted[0]["text"] and opted[0]["actor"] == "U0OPS"
        assert opted[0]["detail"]["roles"][shop["runner"]] == ["member of pg_execute_server_program"]
    finally:
        clean_dr(dr_cluster, shop["dbname"], [shop["boss"], shop["runner"], shop["clerk"]])


def test_the_plan_lists_each_role_with_its_attributes_and_memberships(tmp_path, pg_dsn, dr_cluster):
    t = tag()
    owner, reader, group = f"owner {t}", f"reader {t}", f"readers {t}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT 7")
                     .format(sql.Identifier(owner)))
        conn.execute(sql.SQL("CREATE ROLE {} NOINHERIT").format(sql.Identifier(group)))
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(sql.Identifier(group), sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(reader)))
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY)")
        conn.execute(sql.SQL("ALTER TABLE notes OWNER TO {}").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}, {}").format(sql.Identifier(reader), sql.Identifier(group)))
    try:
        console = dr_console(tmp_path, pg_dsn, dr_cluster)
        assert "succeeded" in console.run("/backup")
        out = console.run("/restore latest main --to dr --dry-run")
        lines = out.splitlines()
        assert f"Creates role(s) first: {owner}, {reader}, {group} (from the backup's role definitions; they stay even " \
               "if the restore fails)" in lines, out
        assert f"  • {owner}: LOGIN CREATEDB CONNECTION LIMIT 7; no memberships" in lines
        assert f"  • {reader}: NOLOGIN; member of pg_read_all_stats, {group} WITH ADMIN OPTION" in lines, out
        assert f"  • {group}: NOLOGIN NOINHERIT; no memberships" in lines
        assert "PRIVILEGED" not in out  # pg_read_all_stats sees statistics, not files, programs or data
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE notes")
            for name in (reader, group, owner):
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def forge_roles(console, definitions: list[dict]) -> None:
    """Role definitions the bot itself signed, of its choosing: the catalog and the signed manifest agree, as they
    would for a production database whose roles have such names or attributes (or a leaked signing key). The
    signature is not what stops them: the role rules are, which these tests are about."""
    with console.services.store.db() as db:
        row = next(iter(db.query("SELECT roles, role_definitions FROM backups WHERE id = 1")))
        roles = json.loads(row["roles"]) + [d["name"] for d in definitions]
        db.execute("UPDATE backups SET roles = ?, role_definitions = ? WHERE id = 1",
                   [json.dumps(roles), json.dumps(json.loads(row["role_definitions"]) + definitions)])
    resign_manifest(console, 1)


def definition(name: str, **values) -> dict:
    return {"name": name, "rolsuper": False, "rolinherit": True, "rolcreaterole": False, "rolcreatedb": False,
            "rolcanlogin": False, "rolreplication": False, "rolbypassrls": False, "rolconnlimit": -1,
            "rolvaliduntil": None, "member_of": [], **values}


def hostile_name(t: str) -> str:
    name = f'x"; CREATE ROLE "pwned {t}" SUPERUSER; --\nApproved by U0APP1 \' é'
    name += "z" * (63 - len(name.encode()))
    assert len(name.encode()) == 63
    return name


def test_a_forged_hostile_role_name_is_created_exactly_by_name_and_runs_nothing_else(tmp_path, sample_dsn, dr_cluster):
    t = tag()
    hostile = hostile_name(t)
    console = dr_console(tmp_path, sample_dsn, dr_cluster)
    assert "succeeded" in console.run("/backup")
    forge_roles(console, [definition(hostile, rolcanlogin=True)])
    dbname = sample_dsn.rsplit("/", 1)[1]
    before = all_dr_roles(dr_cluster)
    try:
        out = console.run("/restore latest main --to dr")
        lines = out.splitlines()
        assert not [line for line in lines if line.startswith("Approved by")], out  # the name writes no line of its own
        shown = hostile.replace("\n", "\\n")
        assert f"  • {shown}: LOGIN; no memberships" in lines, out
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert "Restore request #1 restored backup #1" in out, out
        assert all_dr_roles(dr_cluster) - before == {hostile}  # exactly that name, byte for byte, and nothing else
        assert dr_roles(dr_cluster, [f"pwned {t}"]) == {}
    finally:
        clean_dr(dr_cluster, dbname, [hostile, f"pwned {t}"])


def test_a_forged_membership_in_the_servers_superuser_is_refused(tmp_path, sample_dsn, dr_cluster):
    helper = f"helper {tag()}"
    console = dr_console(tmp_path, sample_dsn, dr_cluster)
    assert "succeeded" in console.run("/backup")
    forge_roles(console, [definition(helper, member_of=[{"role": dr_cluster.user, "admin": False}])])
    out = console.run("/restore latest main --to dr")
    assert f"role {helper} would have member of {dr_cluster.user} (SUPERUSER, CREATEROLE" in out, out
    assert "Restore request" not in out and dr_roles(dr_cluster, [helper]) == {}


@pytest.mark.parametrize("forged, complaint", [
    ({"rolsuper": "yes"}, "rolsuper must be true or false"),
    ({"name": "pg_monitor"}, "is a reserved (pg_) name"),
    ({"name": "n" * 64}, "at most 63 bytes"),
    ({"member_of": [{"role": 7}]}, "a role name must be a non-empty string"),
])
def test_a_malformed_forged_definition_gets_a_clear_message(tmp_path, sample_dsn, dr_cluster, forged, complaint):
    console = dr_console(tmp_path, sample_dsn, dr_cluster)
    assert "succeeded" in console.run("/backup")
    forge_roles(console, [{**definition(f"odd {tag()}"), **forged}])
    out = console.run("/restore latest main --to dr")
    assert complaint in out and "backup #1" in out and "Traceback" not in out and "Restore request" not in out, out


def test_a_forged_globals_file_is_parsed_not_replayed(dr_cluster):
    t = tag()
    app, plain = f"app {t}", f"plain {t}"
    forged = (f'CREATE ROLE "{app}";\nALTER ROLE "{app}" WITH SUPERUSER LOGIN;\n'
              f'GRANT pg_execute_server_program TO "{app}" GRANTED BY postgres;\n'
              f'CREATE ROLE "{plain}";\nALTER ROLE "{plain}" WITH NOSUPERUSER LOGIN CONNECTION LIMIT 3;\n'
              f"ALTER ROLE \"{plain}\" SET search_path TO 'evil';\n")
    try:
        with pytest.raises(PrivilegedRoleError, match=rf"role {app} would have SUPERUSER, member of pg_execute_server_program"):
            create_roles_from_globals(dr_cluster.dsn(), forged, only=[app, plain])
        assert dr_roles(dr_cluster, [app, plain]) == {}  # one transaction: nothing was created
        created = create_roles_from_globals(dr_cluster.dsn(), forged, only=[plain])
        assert created.created == [plain] and any("SET ...: not applied" in s for s in created.skipped)
        with dr_cluster.admin() as conn:
            assert conn.execute("SELECT rolcanlogin, rolconnlimit, rolconfig FROM pg_roles WHERE rolname = %s",
                                [plain]).fetchone() == (True, 3, None)  # the setting was not run
        with pytest.raises(IntegrityError, match="does not read 'SYSID'"):
            create_roles_from_globals(dr_cluster.dsn(), f'CREATE ROLE "other {t}" WITH SYSID 5;', only=[f"other {t}"])
    finally:
        clean_dr(dr_cluster, "none", [app, plain])


def test_a_point_in_time_copy_lists_the_roles_it_creates_and_obeys_the_flag(tmp_path, pgbackrest_setup, dr_cluster):
    t = tag()
    boss, clerk = f"pitr boss {t}", f"pitr clerk {t}"
    dsn = pgbackrest_setup.create_database(f"pitr_roles_{t}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER NOLOGIN").format(sql.Identifier(boss)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 2").format(sql.Identifier(clerk)))
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        conn.execute("INSERT INTO ledger SELECT generate_series(1, 30)")
        conn.execute(sql.SQL("ALTER TABLE ledger OWNER TO {}").format(sql.Identifier(boss)))
        conn.execute(sql.SQL("GRANT SELECT ON ledger TO {}").format(sql.Identifier(clerk)))
    databases = {"main": {"url_env": "DATABASE_URL", "pgbackrest": {"config": str(pgbackrest_setup.cfg.config_path),
                                                                    "stanza": pgbackrest_setup.cfg.stanza}}}
    console = make_console(make_settings(tmp_path, dsn, databases=databases, access=ACCESS,
                                         env={"DR_URL": dr_cluster.dsn("postgres")}, targets={"dr": {"url_env": "DR_URL"}},
                                         state=pitr_state(tmp_path, pgbackrest_setup)))
    into = f"ledger_copy_{t}"
    try:
        assert "succeeded" in console.run("/backup physical --type incr")
        time.sleep(1.2)
        stamp = server_now(dsn).strftime("%Y-%m-%d %H:%M:%S.%f%z")
        out = console.run(f'/restore --time "{stamp}" --to dr --into {into}')
        assert f"role {boss} would have SUPERUSER" in out and "--allow-privileged-roles" in out, out
        assert "create those roles on the server yourself first" in out and "Restore request" not in out
        assert "needs --into" in console.run(f'/restore --time "{stamp}" --allow-privileged-roles')

        out = console.run(f'/restore --time "{stamp}" --to dr --into {into} --allow-privileged-roles')
        lines = out.splitlines()
        assert f"  • {boss}: NOLOGIN SUPERUSER; no memberships · :warning: PRIVILEGED: SUPERUSER" in lines, out
        assert f"  • {clerk}: LOGIN CONNECTION LIMIT 2; no memberships" in lines, out
        assert dr_roles(dr_cluster, [boss, clerk]) == {}  # nothing before approval
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert "into the new database" in out and "and verified" in out, out
        assert dr_roles(dr_cluster, [boss, clerk]) == {boss: (True, []), clerk: (False, [])}
        with psycopg.connect(dr_cluster.dsn(into)) as conn:
            assert conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'ledger'").fetchone()[0] == boss
        audit = incident_state.audit_rows(console.services.store)
        assert any(r["kind"] == "restore.privileged_roles" and boss in r["text"] for r in audit)
    finally:
        clean_dr(dr_cluster, into, [boss, clerk])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS ledger")
        pgbackrest_setup.cluster.drop_database(f"pitr_roles_{t}")
        with pgbackrest_setup.cluster.admin() as conn:
            for name in (boss, clerk):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_server_role_made_privileged_after_the_plan_is_checked_again_when_roles_are_created(
        tmp_path, sample_dsn, dr_cluster):
    t = tag()
    ops, helper = f"ops {t}", f"helper {t}"
    with dr_cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ops)))
    console = dr_console(tmp_path, sample_dsn, dr_cluster)
    assert "succeeded" in console.run("/backup")
    forge_roles(console, [definition(helper, member_of=[{"role": ops, "admin": False}])])
    dbname = sample_dsn.rsplit("/", 1)[1]
    try:
        out = console.run("/restore latest main --to dr")
        assert f"  • {helper}: NOLOGIN; member of {ops}" in out.splitlines() and "PRIVILEGED" not in out, out
        with dr_cluster.admin() as conn:  # between the plan and its approval, the server's role changes
            conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(ops)))
        out = approve(console, message_id(out, "Restore request #1"), "U0APP1")
        assert f"role {helper} would have member of {ops} (SUPERUSER)" in out and "failed" in out, out
        assert dr_roles(dr_cluster, [helper]) == {} and not dr_cluster.database_exists(dbname)
    finally:
        clean_dr(dr_cluster, dbname, [helper, ops])


def test_the_flag_is_in_the_help_and_makes_no_sense_with_no_owner(tmp_path, pg_dsn):
    console = make_console(make_settings(tmp_path, pg_dsn, access=ACCESS))
    assert "[--allow-privileged-roles]" in console.run("/restore help")
    out = console.run("/restore latest --no-owner --allow-privileged-roles")
    assert "--no-owner creates no roles, so there is nothing to allow" in out and "Traceback" not in out
