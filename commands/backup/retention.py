"""Retention: grandfather-father-son rules with a maximum age, as pure decisions with reasons.

The rules come parsed from the config (commands/settings/retention.py: `Settings.retention_for(db)`).

`max_age_days` is the runbook's 30-day GDPR ceiling and wins over keep_last/daily/weekly/monthly.
Two safety rules win over everything: the newest verified backup is never deleted (a restore
must stay possible), and nothing is deleted while the latest scheduled backup is failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commands.settings.retention import RetentionRules
from state.backups import BackupRecord
from state.statuses import Verification

__all__ = ["Decision", "RetentionRules", "decide"]


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
    newest_verified = next((r for r in records if r.verification == Verification.VERIFIED), None)
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
