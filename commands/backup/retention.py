"""Retention: grandfather-father-son rules with a maximum age, as pure decisions with reasons.

The rules come parsed from the config (commands/settings/retention.py: `Settings.retention_for(db)`).

`max_age_days` is the runbook's 30-day GDPR ceiling, and a ceiling: it wins over every keep rule,
over "keep the newest verified backup" and over "delete nothing while scheduled backups fail".
Only an approved legal hold (`/backup keep ID --reason TEXT`, commands/backup/holds.py) keeps a
backup past it, and the reason says so. Below the ceiling the newest verified backup is never
deleted (a restore must stay possible). `ceiling_warnings` names the backups that will reach the
ceiling within `ceiling_warning_days` with nothing newer to replace them, so people hear it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commands.settings.retention import RetentionRules
from state.backups import BackupRecord
from state.statuses import Verification

__all__ = ["Decision", "RetentionRules", "ceiling_due", "ceiling_warnings", "decide", "next_at_ceiling"]


@dataclass(frozen=True)
class Decision:
    record: BackupRecord
    keep: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    past_ceiling: bool = False  # older than max_age_days: deleted even while scheduled backups fail


def decide(records: list[BackupRecord], rules: RetentionRules, now: datetime,
           holds: Mapping[int, str] | None = None) -> list[Decision]:
    """Keep/delete for each backup of one database (pruned ones excluded), newest first. `holds` maps a
    held backup's id to its hold's label (`legal hold #2: litigation 2026-14`).

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
        past = rules.max_age_days is not None and age > timedelta(days=rules.max_age_days)
        held = (holds or {}).get(record.id)
        if past:
            keep, why = False, [f"older than max_age_days={rules.max_age_days} ({age.days} days)"]
            if newest_verified is not None and record.id == newest_verified.id:
                why.append("the newest verified backup, but the ceiling wins")
        elif newest_verified is not None and record.id == newest_verified.id and not keep:
            keep, why = True, why + ["kept: it is the newest verified backup"]
        if held:
            keep, why = True, why + [f"but kept: {held}" if past else f"kept: {held}"]
        if not why:
            why = ["no rule keeps it"]
        decisions.append(Decision(record, keep, tuple(why), past_ceiling=past and not held))
    return decisions


def ceiling_due(record: BackupRecord, rules: RetentionRules) -> datetime | None:
    """When the ceiling deletes `record` (None without a max_age_days)."""
    if rules.max_age_days is None:
        return None
    return datetime.fromisoformat(record.created_at) + timedelta(days=rules.max_age_days)


def ceiling_warnings(records: list[BackupRecord], rules: RetentionRules, now: datetime,
                     holds: Mapping[int, object] | None = None) -> list[tuple[BackupRecord, datetime]]:
    """Backups the ceiling deletes within `ceiling_warning_days` with nothing newer to replace them: a
    verified one with no newer verified full backup, any other full one with no newer full backup."""
    if rules.max_age_days is None:
        return []
    full = [r for r in records if r.is_full]
    warned = []
    for record in full:
        due = ceiling_due(record, rules)
        if record.id in (holds or {}) or due <= now or due - now > timedelta(days=rules.ceiling_warning_days):
            continue
        newer = [r for r in full if (r.created_at, r.id) > (record.created_at, record.id)]
        if record.verification == Verification.VERIFIED:
            newer = [r for r in newer if r.verification == Verification.VERIFIED]
        if not newer:
            warned.append((record, due))
    return sorted(warned, key=lambda pair: pair[1])


def next_at_ceiling(records: list[BackupRecord], rules: RetentionRules,
                    holds: Mapping[int, object] | None = None) -> tuple[BackupRecord, datetime] | None:
    """The backup the ceiling deletes next (held ones never), and when."""
    due = [(r, ceiling_due(r, rules)) for r in records if r.id not in (holds or {})]
    due = [pair for pair in due if pair[1] is not None]
    return min(due, key=lambda pair: (pair[1], pair[0].id)) if due else None


def _day(record: BackupRecord) -> str:
    return record.created_at[:10]


def _week(record: BackupRecord) -> str:
    year, week, _ = datetime.fromisoformat(record.created_at).isocalendar()
    return f"{year}-W{week:02d}"


def _month(record: BackupRecord) -> str:
    return record.created_at[:7]
