"""Slack event ids already applied, so a redelivered event changes nothing.

Slack redelivers for at most a few hours; ids older than a week are forgotten so the table stays small.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from state.store import Store, iso, utcnow_iso

KEEP = timedelta(days=7)


def first_delivery(store: Store, event_id: str) -> bool:
    """Record the event id; True only for the first caller, whatever the concurrency."""
    with store.db() as db:
        db.execute("DELETE FROM processed_events WHERE received_at < ?", [iso(datetime.now(UTC) - KEEP)])
        try:
            db.execute("INSERT INTO processed_events (event_id, received_at) VALUES (?, ?)", [event_id, utcnow_iso()])
        except sqlite3.IntegrityError:
            return False
    return True
