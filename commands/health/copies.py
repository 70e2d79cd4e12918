"""The point-in-time copies still running, for the one list of copies of production data
(`production_copies` in commands/health/command.py: /backup list and the digest).

A copy is listed with where it listens, how long it has run and when `[restore] copy_ttl_hours`
drops it, until it is dropped (commands/restore/copies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from commands.chat.context import Services
from commands.pg.pgbackrest.restored_cluster import postmaster_alive
from commands.units import human_duration
from state.restored_clusters import live_restored_clusters


@dataclass(frozen=True)
class ClusterCopy:
    """A cluster `/restore --time` restored and left running: a full copy of production data until dropped."""

    request_id: int
    database: str
    port: int
    age_seconds: float
    left_seconds: float  # until the TTL sweep drops it
    running: bool

    def line(self) -> str:
        state = "running" if self.running else "NOT running (its data directory is still there)"
        left = (f"dropped in {human_duration(self.left_seconds)}" if self.left_seconds > 0
                else "dropped at the next sweep")
        return (f"copy #{self.request_id}: point-in-time copy of {self.database} (restore request #{self.request_id}) "
                f"on 127.0.0.1:{self.port}, {state}, age {human_duration(self.age_seconds)}; {left} "
                f"([restore] copy_ttl_hours) or by `/restore drop-copy {self.request_id}`")


def cluster_copies(services: Services, database: str | None = None) -> list[ClusterCopy]:
    now = services.clock().replace(microsecond=0)  # started_at is stored to the second
    ttl = timedelta(hours=services.settings.restore.copy_ttl_hours)
    copies = []
    for row in live_restored_clusters(services.store, database):
        age = now - datetime.fromisoformat(row.started_at)
        copies.append(ClusterCopy(row.request_id, row.database, row.port, max(age.total_seconds(), 0),
                                  (ttl - age).total_seconds(), postmaster_alive(Path(row.datadir))))
    return copies
