"""Subscriptions never reach out: a drill, an --into copy or a DR copy of a database with subscriptions
never connects to a publisher and never leaves a database behind."""

from __future__ import annotations

import itertools

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from commands.pg.subscriptions import subscriptions
from commands.pg.tools import with_dbname
from state.backups import get_backup
from tests.builders import make_console, make_settings
from tests.test_drills import scratch_databases
from tests.test_restore import ACCESS

_slots = itertools.count(1)
NOWHERE = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"


def execute(dsn: str, *statements) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def add_subscription(dsn: str, name: str, conninfo: str) -> None:
    create = sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION p WITH (connect = false)")
    execute(dsn, "CREATE PUBLICATION p FOR ALL TABLES", create.format(sql.Identifier(name), sql.Literal(conninfo)))


def forget_subscriptions(dsn: str) -> None:
    """The source's own subscriptions, released so the fixture can drop its database (as the bot does)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                    "WHERE d.datname = current_database()").fetchall():
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(name)))


@pytest.fixture
def subscribed_dsn(sample_dsn):
    """The sample database with a subscription whose publisher does not exist (restored, it cannot be
    dropped without first being released: DROP SUBSCRIPTION would try to reach port 1)."""
    add_subscription(sample_dsn, "nowhere_sub", NOWHERE)
    yield sample_dsn
    forget_subscriptions(sample_dsn)


@pytest.fixture
def publisher_slot(pg_cluster):
    """A real replication slot on the test cluster, and a conninfo to it that a subscription can use:
    anything that connected to drop a subscription's slot would drop this one."""
    slot = f"drill_guard_{next(_slots)}"
    execute(pg_cluster.dsn(), sql.SQL("SELECT pg_create_physical_replication_slot({})").format(sql.Literal(slot)))
    yield slot, make_conninfo(pg_cluster.dsn("postgres"))
    execute(pg_cluster.dsn(), sql.SQL("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                      "WHERE slot_name = {}").format(sql.Literal(slot)))


def slot_state(pg_cluster, slot: str):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()


def walsenders(pg_cluster) -> int:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'").fetchone()[0]


def test_drill_of_a_database_with_an_unreachable_subscription_passes_and_leaves_nothing(tmp_path, subscribed_dsn,
                                                                                         pg_cluster):
    console = make_console(make_settings(tmp_path, subscribed_dsn))
    assert "succeeded" in console.run("/backup")
    out = console.run("/backup verify latest")
    assert "Drill of backup #1 (main) passed" in out, out
    assert "and its subscription(s) nowhere_sub (disabled and slot released first" in out
    assert scratch_databases(pg_cluster) == []
    assert get_backup(console.services.store, 1).verification == "verified"
    # the source's own subscription is untouched
    assert subscriptions(subscribed_dsn) == [("nowhere_sub", False, "nowhere_sub")]


def test_drill_of_a_subscription_to_a_real_slot_never_connects(tmp_path, sample_dsn, pg_cluster, publisher_slot):
    slot, conninfo = publisher_slot
    execute(sample_dsn, "CREATE PUBLICATION p FOR ALL TABLES",
            sql.SQL("CREATE SUBSCRIPTION live_sub CONNECTION {} PUBLICATION p WITH (connect = false, slot_name = {})")
            .format(sql.Literal(conninfo), sql.Literal(slot)))
    try:
        console = make_console(make_settings(tmp_path, sample_dsn))
        console.run("/backup")
        assert "Drill of backup #1 (main) passed" in console.run("/backup verify latest")
        assert scratch_databases(pg_cluster) == []
        # the slot is still there and nobody holds it: DROP SUBSCRIPTION never reached the publisher
        assert slot_state(pg_cluster, slot) == (False, None)
        assert walsenders(pg_cluster) == 0
    finally:
        forget_subscriptions(sample_dsn)


def test_the_slot_guard_sees_a_subscription_that_connects(pg_cluster, pg_dsn, publisher_slot):
    """The control of the test above: a plain DROP SUBSCRIPTION of such a copy does reach the publisher
    and drops its slot, so a drill that connected could not pass it."""
    slot, conninfo = publisher_slot
    execute(pg_dsn, sql.SQL("CREATE SUBSCRIPTION naive CONNECTION {} PUBLICATION p WITH (connect = false, "
                            "slot_name = {})").format(sql.Literal(conninfo), sql.Literal(slot)), "DROP SUBSCRIPTION naive")
    assert slot_state(pg_cluster, slot) is None


def test_an_into_copy_keeps_its_subscriptions_disabled_and_slot_less(tmp_path, subscribed_dsn, pg_cluster):
    console = make_console(make_settings(tmp_path, subscribed_dsn, access=ACCESS))
    console.run("/backup")
    out = console.run("/restore 1 --into sub_copy")
    assert "Restore request #1 restored backup #1" in out, out
    assert "subscriptions: nowhere_sub left disabled with slot_name = NONE in sub_copy" in out
    copy = with_dbname(subscribed_dsn, "sub_copy")
    assert subscriptions(copy) == [("nowhere_sub", False, None)]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):  # it cannot be enabled by mistake
        execute(copy, "ALTER SUBSCRIPTION nowhere_sub ENABLE")
    execute(copy, "DROP SUBSCRIPTION nowhere_sub")  # nor does dropping it reach for the publisher
    pg_cluster.drop_database("sub_copy")


def test_a_dr_copy_keeps_its_subscriptions_disabled_and_slot_less(tmp_path, subscribed_dsn, dr_cluster):
    env = {"DR_URL": dr_cluster.dsn("postgres")}
    console = make_console(make_settings(tmp_path, subscribed_dsn, access=ACCESS, env=env,
                                         targets={"dr": {"url_env": "DR_URL"}}))
    console.run("/backup")
    out = console.run("/restore latest --to dr --into dr_sub_copy")
    assert "Restore request #1 restored backup #1" in out, out
    assert subscriptions(dr_cluster.dsn("dr_sub_copy")) == [("nowhere_sub", False, None)]
    forget_subscriptions(dr_cluster.dsn("dr_sub_copy"))
    dr_cluster.drop_database("dr_sub_copy")


def test_over_slack_the_drill_of_a_subscribed_database_posts_its_receipt(tmp_path, subscribed_dsn, pg_cluster, slack_env,
                                                                         fake_slack, start_bot):
    bot = start_bot(make_settings(tmp_path, subscribed_dsn, env=slack_env, databases={
        "main": {"url_env": "DATABASE_URL", "smoke_sql": ["SELECT count(*) = 500 FROM users"]}}))
    bot.slack.command("/backup", "main", user="U0OPS")
    fake_slack.wait_for_text("Backup #1 of main succeeded", method="chat.update")
    bot.slack.command("/backup", "verify latest", user="U0OPS")
    text = fake_slack.wait_for_text("Drill of backup #1 (main)", timeout=120)["text"]
    assert "Drill of backup #1 (main) passed" in text and "(RTO)" in text and " MB/s" in text, text
    assert "• amcheck: ok (" in text and "• assertion `SELECT count(*) = 500 FROM users`: ok (true)" in text
    assert "and its subscription(s) nowhere_sub (disabled and slot released first" in text
    assert scratch_databases(pg_cluster) == []


class Killed(BaseException):
    """The bot dying between the restore's COMMIT and the release of the copy's subscriptions."""


def test_a_copy_left_with_its_subscription_by_a_killed_restore_is_dropped_at_restart(tmp_path, subscribed_dsn, pg_cluster,
                                                                                     monkeypatch):
    import commands.restore.run
    from state import approvals as request_state

    settings = make_settings(tmp_path, subscribed_dsn, access=ACCESS)
    console = make_console(settings)
    console.run("/backup")

    def die(dsn):
        raise Killed()

    monkeypatch.setattr(commands.restore.run, "release_subscriptions", die)
    with pytest.raises(Killed):
        console.run("/restore 1 --into left_copy")
    monkeypatch.undo()
    assert subscriptions(with_dbname(subscribed_dsn, "left_copy")) == [("nowhere_sub", False, "nowhere_sub")]
    console.services.close()  # the bot that died
    restarted = make_console(settings)
    assert request_state.get_request(restarted.services.store, 1).status == "interrupted"
    assert not pg_cluster.database_exists("left_copy")
