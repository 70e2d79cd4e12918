"""Retention on constructed catalogs: what goes, what stays, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.backup.retention import RetentionRules, ceiling_warnings, decide
from commands.errors import ConfigError
from commands.settings.retention import retention_rules
from state.backups import BackupRecord

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def record(id: int, hours_ago: float, verification: str = "unverified") -> BackupRecord:
    created = (NOW - timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    return BackupRecord(id=id, database="main", kind="scheduled", format="custom", compression="zstd", tables=(),
                        schema_only=False, note=None, requested_by=None, created_at=created, duration_s=1.0,
                        storage_url="file:///x", key=f"k{id}", manifest_key=f"k{id}.json", size=1, raw_size=1,
                        sha256="0" * 64, pg_dump_version="15", server_version="15", database_size=1,
                        verification=verification)


def kept(decisions):
    return sorted(d.record.id for d in decisions if d.keep)


def test_daily_backups_for_60_days_with_runbook_defaults():
    catalog = [record(i, 24 * i) for i in range(60)]  # id 0 is today, id 59 is 59 days old
    decisions = decide(catalog, RetentionRules(), NOW)
    keep = kept(decisions)
    assert set(range(7)) <= set(keep)  # keep_last / keep_daily
    assert all(d.record.id <= 30 for d in decisions if d.keep)  # nothing older than 30 days
    old = next(d for d in decisions if d.record.id == 45)
    assert not old.keep and "older than max_age_days=30" in old.reasons[0]


def test_max_age_wins_over_keep_rules():
    catalog = [record(1, 24 * 40), record(2, 24 * 41)]
    decisions = decide(catalog, RetentionRules(keep_last=10, keep_monthly=12, max_age_days=30), NOW)
    assert kept(decisions) == []


def test_newest_verified_backup_is_kept_below_the_ceiling():
    catalog = [record(1, 1), record(2, 24 * 25, "verified"), record(3, 24 * 28, "verified")]
    decisions = {d.record.id: d for d in decide(catalog, RetentionRules(keep_last=1, keep_daily=0, keep_weekly=0), NOW)}
    assert decisions[2].keep and "newest verified backup" in decisions[2].reasons[-1]
    assert not decisions[3].keep


def test_the_ceiling_wins_over_the_newest_verified_backup_and_only_a_legal_hold_passes_it():
    catalog = [record(1, 1), record(2, 24 * 45, "verified"), record(3, 24 * 50, "verified")]
    rules = RetentionRules(keep_last=1, keep_daily=0, keep_weekly=0)
    decisions = {d.record.id: d for d in decide(catalog, rules, NOW)}
    assert not decisions[2].keep and decisions[2].past_ceiling  # it used to be kept, silently
    assert decisions[2].reasons == ("older than max_age_days=30 (45 days)",
                                    "the newest verified backup, but the ceiling wins")
    held = {d.record.id: d for d in decide(catalog, rules, NOW, {3: "legal hold #1: litigation 2026-14"})}
    assert held[3].keep and not held[3].past_ceiling
    assert held[3].reasons[-1] == "but kept: legal hold #1: litigation 2026-14"
    assert not held[2].keep


def test_ceiling_warnings_name_only_backups_with_nothing_newer_to_replace_them():
    rules = RetentionRules(max_age_days=30, ceiling_warning_days=3)
    lone = [record(1, 24 * 28, "verified"), record(2, 24 * 10)]  # the only verified one, 2 days from the ceiling
    [(warned, due)] = ceiling_warnings(lone, rules, NOW)
    assert warned.id == 1 and due == NOW + timedelta(days=2)
    assert ceiling_warnings(lone, rules, NOW, {1: "legal hold #1"}) == []  # held: the ceiling does not delete it
    replaced = [record(1, 24 * 28, "verified"), record(2, 24 * 10, "verified")]
    assert ceiling_warnings(replaced, rules, NOW) == []
    assert ceiling_warnings([record(1, 24 * 26, "verified")], rules, NOW) == []  # 4 days away: not yet
    assert [r.id for r, _ in ceiling_warnings([record(1, 24 * 28), record(2, 24 * 29)], rules, NOW)] == [1]


def test_rules_from_config():
    rules = retention_rules({"keep_last": 3, "main": {"max_age_days": 7}}, "main")
    assert rules.keep_last == 3 and rules.max_age_days == 7
    assert retention_rules({"keep_last": 3, "main": {"max_age_days": 7}}, "other").max_age_days == 30
    with pytest.raises(ConfigError, match="retention.keep_lats: unknown key"):
        retention_rules({"keep_lats": 3}, "main")
    with pytest.raises(ConfigError, match="retention.main.keep_daily: expected a whole number"):
        retention_rules({"main": {"keep_daily": -1}}, "main")


catalogs = st.lists(st.tuples(st.floats(min_value=0, max_value=24 * 400), st.booleans(), st.booleans()), min_size=1,
                    max_size=60)
rule_sets = st.builds(RetentionRules, keep_last=st.integers(0, 10), keep_daily=st.integers(0, 10),
                      keep_weekly=st.integers(0, 6), keep_monthly=st.integers(0, 12),
                      max_age_days=st.one_of(st.none(), st.integers(1, 400)))


@settings(max_examples=300, deadline=None)
@given(catalogs, rule_sets)
def test_retention_invariants(entries, rules):
    catalog = [record(i + 1, hours, "verified" if verified else "unverified") for i, (hours, verified, _) in enumerate(entries)]
    holds = {i + 1: f"legal hold #{i + 1}" for i, (_, _, held) in enumerate(entries) if held}
    decisions = decide(catalog, rules, NOW, holds)
    by_id = {d.record.id: d for d in decisions}
    assert len(decisions) == len(catalog)
    assert all(d.reasons for d in decisions)  # every decision says why
    newest_verified = max((r for r in catalog if r.verification == "verified"), key=lambda r: (r.created_at, r.id),
                          default=None)
    for d in decisions:
        age = NOW - datetime.fromisoformat(d.record.created_at)
        too_old = rules.max_age_days is not None and age > timedelta(days=rules.max_age_days)
        if d.record.id in holds:
            assert d.keep  # a legal hold keeps it, past the ceiling too
        elif too_old:
            assert not d.keep and d.past_ceiling  # the ceiling is a ceiling
        elif newest_verified is not None and d.record.id == newest_verified.id:
            assert d.keep
    if rules.keep_last and not rules.max_age_days:
        newest = sorted(catalog, key=lambda r: (r.created_at, r.id), reverse=True)[: rules.keep_last]
        assert all(by_id[r.id].keep for r in newest)
