"""What a restore request's run returns: its outcome, typed, instead of a dict read back by key.

The same values are stored as the request's `result` JSON (to_dict), and read back from it (from_dict),
so a result written by an older version still reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class RestoreResult:
    ok: bool
    error: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    restore_seconds: float | None = None
    snapshot_id: int | None = None
    rollback_snapshot_id: int | None = None  # set only when the failed run had changed the target
    previous_database: str | None = None  # a side-database swap keeps the replaced database under this name
    into: str | None = None  # a point-in-time restore copied into this new database
    port: int | None = None  # a point-in-time restore left its cluster running here
    datadir: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> RestoreResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
