"""`--tables` with dependents is decided at plan time: refused before anyone is asked, naming what depends
on the tables and what would work instead; never a failure after approval."""

from __future__ import annotations

import psycopg

from state import approvals as request_state
from tests.test_restore import approve, console_for, content_of, message_id


def requests(console) -> list:
    with console.services.store.db() as db:
        return list(db.query("SELECT id FROM restore_requests"))


def test_a_table_that_views_and_foreign_keys_depend_on_is_refused_before_anyone_is_asked(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    before = content_of(sample_dsn)
    out = console.run("/restore 1 --tables users")
    assert "backup #1: --tables public.users cannot be restored alone" in out and "(only you)" in out, out
    for fk in ("table public.abandoned_carts has foreign key abandoned_carts_user_id_fkey to public.users",
               "table public.analytics has foreign key analytics_user_id_fkey to public.users",
               "table public.notifications has foreign key notifications_user_id_fkey to public.users",
               "table public.usage_stats has foreign key usage_stats_user_id_fkey to public.users",
               "view reporting.active_users depends on public.users"):
        assert fk in out
    assert "would fail after approval. Instead, restore the whole backup (--tables restores tables, not the view(s) " \
           "reporting.active_users)" in out
    assert "Waiting for" not in out and requests(console) == []
    assert content_of(sample_dsn) == before


def test_foreign_keys_of_tables_in_the_backup_are_refused_with_the_tables_to_add_which_then_works(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    out = console.run("/restore 1 --tables templates")
    assert ("table public.campaigns has foreign key campaigns_template_id_fkey to public.templates; "
            "table public.notifications has foreign key notifications_template_id_fkey to public.templates") in out, out
    assert "Instead, add them with --tables public.campaigns, public.notifications, public.templates, or restore " \
           "the whole backup." in out
    assert requests(console) == []
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.notifications; DELETE FROM public.campaigns; DELETE FROM public.templates")
    out = console.run("/restore 1 --tables public.campaigns,public.notifications,public.templates")
    assert "Waiting for 1 approval(s)" in out, out
    out = approve(console, message_id(out, "Restore request #1"), "U0APP2")
    assert "Restore request #1 restored backup #1" in out, out
    assert request_state.get_request(console.services.store, 1).status == "succeeded"
    with psycopg.connect(sample_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.templates").fetchone()[0] == 12


def test_dependents_are_named_quoted_and_escaped(tmp_path, sample_dsn):
    with psycopg.connect(sample_dsn, autocommit=True) as conn:
        conn.execute('CREATE VIEW public."Odd ""view""\nname" AS SELECT id FROM public.products')
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    out = console.run("/restore 1 --tables products")
    assert 'view public."Odd ""view""\\nname" depends on public.products' in out, out
    assert "table public.abandoned_carts has foreign key abandoned_carts_product_id_fkey to public.products" in out
    assert not any(line.startswith("name") for line in out.splitlines())  # the name wrote no line of its own


def test_a_table_nothing_depends_on_is_planned_as_before(tmp_path, sample_dsn):
    console = console_for(tmp_path, sample_dsn)
    console.run("/backup")
    assert "Waiting for 1 approval(s)" in console.run("/restore 1 --tables abandoned_carts")
