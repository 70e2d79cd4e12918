"""Slack event ids already applied, so a redelivered event changes nothing."""

from __future__ import annotations

import sqlite3

from state.store import Store, utcnow_iso


def first_delivery(store: Store, event_id: str) -> bool:
    """Record the event id; True only for the first caller, whatever the concurrency."""
    with store.db() as db:
        try:
            db.execute("INSERT INTO processed_events (event_id, received_at) VALUES (?, ?)", [event_id, utcnow_iso()])
        except sqlite3.IntegrityError:
            return False
    return True
