"""Retention: grandfather-father-son rules with a maximum age, as pure decisions with reasons.

`max_age_days` is the runbook's 30-day GDPR ceiling and wins over keep_last/daily/weekly/monthly.
Two safety rules win over everything: the newest verified backup is never deleted (a restore
must stay possible), and nothing is deleted while the latest scheduled backup is failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commands.errors import ConfigError
from state.backups import BackupRecord

RULE_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "max_age_days")
DEFAULT_RULES = {"keep_last": 7, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 0, "max_age_days": 30}


@dataclass(frozen=True)
class RetentionRules:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 0
    max_age_days: int | None = 30


def retention_rules(raw: Mapping, database: str) -> RetentionRules:
    """`[retention]` applies to every database; `[retention.DB]` overrides it for one."""
    values = dict(DEFAULT_RULES)
    for scope, table in (("retention", {k: v for k, v in raw.items() if not isinstance(v, dict)}),
                         (f"retention.{database}", raw.get(database) or {})):
        for key, value in table.items():
            if key not in RULE_KEYS:
                raise ConfigError(f"{scope}.{key}: unknown key (known: {', '.join(RULE_KEYS)})")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{scope}.{key}: expected a whole number >= 0, got {value!r}")
            values[key] = value
    if values["max_age_days"] == 0:
        values["max_age_days"] = None
    return RetentionRules(**values)


@dataclass(frozen=True)
class Decision:
    record: BackupRecord
    keep: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


def decide(records: list[BackupRecord], rules: RetentionRules, now: datetime) -> list[Decision]:
    """Keep/delete for each backup of one database (pruned ones excluded), newest first.

    The keep rules count full backups only (`BackupRecord.is_full`): schema-only, table and
    pre-restore backups cannot stand in for one, so they never push a full backup out. They are
    kept until max_age_days.
    """
    records = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)
    reasons: dict[int, list[str]] = {r.id: [] for r in records}
    partial = [r for r in records if not r.is_full]
    for record in partial:
        reasons[record.id].append(f"{record.what} backup: kept until max_age_days")
    records_all, records = records, [r for r in records if r.is_full]
    for index, record in enumerate(records[: rules.keep_last]):
        reasons[record.id].append(f"keep_last ({index + 1}/{rules.keep_last})")
    for label, count, bucket in (("keep_daily", rules.keep_daily, _day), ("keep_weekly", rules.keep_weekly, _week),
                                 ("keep_monthly", rules.keep_monthly, _month)):
        seen: list[str] = []
        for record in records:  # newest first: the first of each bucket is the bucket's newest
            key = bucket(record)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            reasons[record.id].append(f"{label} {key}")
    newest_verified = next((r for r in records if r.verification == "verified"), None)
    decisions = []
    for record in records_all:
        why = reasons[record.id]
        keep = bool(why)
        age = now - datetime.fromisoformat(record.created_at)
        if rules.max_age_days is not None and age > timedelta(days=rules.max_age_days):
            keep, why = False, [f"older than max_age_days={rules.max_age_days} ({age.days} days)"]
        if newest_verified is not None and record.id == newest_verified.id:
            if not keep:
                why = why + ["but kept: it is the newest verified backup"]
            keep = True
        if not why:
            why = ["no rule keeps it"]
        decisions.append(Decision(record, keep, tuple(why)))
    return decisions


def _day(record: BackupRecord) -> str:
    return record.created_at[:10]


def _week(record: BackupRecord) -> str:
    year, week, _ = datetime.fromisoformat(record.created_at).isocalendar()
    return f"{year}-W{week:02d}"


def _month(record: BackupRecord) -> str:
    return record.created_at[:7]
