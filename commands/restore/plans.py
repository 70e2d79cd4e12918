"""The two kinds of restore plan, and their JSON: `LogicalPlan | PointInTimePlan`.

A plan is what approvers agree to. It is stored as JSON with its hash when requested and never
changes after, so its conversion to and from JSON lives here, beside the types, and nowhere else:
`plan_to_dict` writes one, `plan_from_dict` reads one back as the kind it is (its `kind` field;
a plan stored before logical plans carried theirs is logical). Every other module reads a stored
request's plan through `plan_from_dict`, never by key.

The planners that build them are `plan.py` (logical, pg_dump artifacts) and `pitr_plan.py`
(point-in-time, pgBackRest); the rules both follow are `rules.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from commands.restore.rules import NEW_DATABASE, PREVIOUS_TEMPLATE, SIDE_DATABASE, is_custom

LOGICAL, PITR = "logical", "pitr"


@dataclass(frozen=True)
class LogicalPlan:
    """What approvers agree to. Stored as JSON with its hash when requested; it never changes after."""

    backup_id: int
    backup_created_at: str
    backup_database: str
    backup_dbname: str | None
    backup_kind: str
    database: str  # the configured database whose server receives the restore
    target_dbname: str
    target: str  # host:port/dbname, never credentials
    target_exists: bool
    lock_key: str
    format: str
    size: int
    backup_tables: tuple[str, ...]
    tables: tuple[str, ...]
    jobs: int
    method: str  # SINGLE_TRANSACTION, SIDE_DATABASE or NEW_DATABASE
    replaces: str
    safety_snapshot: bool
    expected_seconds: float | None
    requested_by: str
    requested_at: str
    server: str | None = None  # a [targets.NAME]; None is the database's own server
    server_version: str | None = None
    no_owner: bool = False
    warnings: tuple[str, ...] = ()
    create_roles: tuple[str, ...] = ()  # roles the dump needs that the receiving server lacks
    roles: tuple[dict, ...] = ()  # those roles as approved: PlannedRole dicts (attributes, memberships, flags)
    allow_privileged_roles: bool = False
    provenance: str = ""  # how the bot knows the backup is its own (commands/backup/manifest.py)
    discards: tuple[str, ...] = ()  # the row changes since the backup it throws away (commands/restore/discards.py)
    kind: Literal["logical"] = field(default=LOGICAL, init=False)  # plans stored before it was a field lack it

    @property
    def needs_approval(self) -> bool:
        """Replacing anything is approved; a new database only when [access] says so (submit_plan)."""
        return self.target_exists

    @property
    def created_dbname(self) -> str | None:
        """The database this restore creates (a copy of production data until dropped), stored beside the plan."""
        return None if self.target_exists else self.target_dbname

    @property
    def backup_size(self) -> int | None:
        return self.size

    @property
    def method_text(self) -> str:
        if self.method == NEW_DATABASE:
            return "into a new database, which is dropped again if the restore fails"
        if self.method == SIDE_DATABASE:
            how = f"pg_restore with {self.jobs} parallel jobs" if self.jobs > 1 else (
                "pg_restore in one transaction" if is_custom(self.format) else "psql in one transaction")
            return (f"side database: {how} into a new database made exactly like {self.target_dbname} (locale, "
                    f"tablespace, ACL, settings, comment, connection limit), verified and compared with it, then swapped "
                    f"in by name in one transaction (sessions on {self.target_dbname} are ended); the current "
                    f"{self.target_dbname} is kept as {PREVIOUS_TEMPLATE} until someone drops it. Why: a whole restore "
                    "replaces everything in the database, including what lives outside every schema (large objects, "
                    "extensions, casts, event triggers, publications, subscriptions, foreign servers), which only a "
                    "fresh database takes without collisions")
        if self.tables or self.backup_tables:
            return ("single transaction: the tables are dropped and restored (no CASCADE: objects of other tables "
                    "that depend on them make it fail and roll back), then verified before COMMIT")
        return "single transaction: restored and verified before COMMIT; any failure rolls everything back"


@dataclass(frozen=True)
class PointInTimePlan:
    """What approvers agree to: a new cluster, from this backup set, replayed to this time."""

    database: str
    stanza: str
    target_time: str | None
    backup_label: str
    backup_stopped: str
    wal_range: str
    reachable: str  # why the time can be reached
    datadir: str
    lock_key: str
    requested_by: str
    requested_at: str
    backup_id: int | None = None  # the physical backup's catalog id, when it has one
    port: int | None = None  # proposed at plan time; another free one if it was taken by then
    into: str | None = None  # copy the database at that moment into this new database, then remove the copy
    server: str | None = None  # the [targets.NAME] server `into` is on; None: the database's own
    into_target: str | None = None  # host:port/dbname of `into`, never credentials
    latest_archived: str | None = None
    roles: tuple[dict, ...] = ()  # roles `into`'s server lacks, as approved (PlannedRole dicts)
    allow_privileged_roles: bool = False
    reach_known: bool = True  # False: a dry run, which switches no WAL, could not know
    discards: tuple[str, ...] = ()  # the row changes after the target time the copy lacks (restore/discards.py)
    provenance: str = ""  # how the backup set is trusted: its seal (commands/backup/physical_seal.py)
    kind: Literal["pitr"] = field(default=PITR, init=False)

    needs_approval = True  # a copy of production data, restored from the archive: always approved

    @property
    def target(self) -> str:
        return f"a new cluster in {self.datadir} on port {self.port}" if self.port else \
            f"a new cluster in {self.datadir} on a free port"

    # not stored as a created database (a point-in-time request never was: its plan had no target_exists)
    created_dbname = None
    backup_size = None

    @property
    def database_label(self) -> str:
        return self.database


Plan = LogicalPlan | PointInTimePlan
KINDS: dict[str, type] = {LOGICAL: LogicalPlan, PITR: PointInTimePlan}


def plan_to_dict(plan: Plan) -> dict:
    """The plan as stored: JSON values only (tuples become lists), its `kind` included."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()}


def plan_from_dict(values: dict) -> Plan:
    """A stored plan as the kind it is; keys it does not know (written by a newer bot) are ignored."""
    cls = KINDS.get(values.get("kind", LOGICAL))
    if cls is None:
        raise ValueError(f"a stored plan of unknown kind {values.get('kind')!r}")
    known = {f.name for f in fields(cls) if f.init}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})
