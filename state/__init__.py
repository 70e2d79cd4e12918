"""The one place that touches SQLite: catalog, jobs, approvals, incidents, processed events."""

from state.store import Store

__all__ = ["Store"]
