"""A checkpoint for a deploy pipeline: a backup taken like `/backup DB`, posted where scheduled backups
post, and only counted once its artifact, re-read from storage, has the sha256 the catalog recorded.

The runbook says to back up before every release and before any migration run with `--force`; a
pipeline step must not go on past a backup that was not stored, so the answer is a yes with the
backup's id or a no with the reason. The backup itself is `execute_backup`, the one /backup path
(access check, job claim and slot, Run lifecycle, catalog, state copy).
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.backup.command import BackupRequest, execute_backup
from commands.chat.access import OPERATOR, require
from commands.chat.context import Actor, Services
from commands.chat.reply import Message, Reply
from commands.errors import BackupbotError, UsageError
from commands.pg.restore.artifact import verify_artifact
from commands.redact import redact
from state.backups import get_backup
from state.statuses import JobStatus


@dataclass(frozen=True)
class Checkpoint:
    ok: bool
    database: str
    backup_id: int | None = None
    sha256: str | None = None
    size: int | None = None
    reason: str | None = None  # why it is not a checkpoint (ok is False)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "database": self.database, "backup_id": self.backup_id, "sha256": self.sha256,
                "size": self.size, "reason": self.reason}


def checkpoint_channel(services: Services) -> str | None:
    """Where a checkpoint is posted: where scheduled backups of every database go (commands/schedules.py)."""
    return services.settings.channels.digest or services.settings.channels.alerts


class CheckpointReply:
    """Posts the backup's message (and its updates) to the channel through `inner`, when there is one;
    keeps what would have been said only to the caller, so the pipeline can be told it."""

    def __init__(self, inner: Reply | None, channel: str | None):
        self.inner = inner if channel else None
        self.channel = channel
        self.private: list[str] = []

    def post(self, message: Message, channel: str | None = None) -> str | None:
        return self.inner.post(message, channel=channel or self.channel) if self.inner else None

    def update(self, message_id: str, message: Message) -> None:
        if self.inner and message_id:
            self.inner.update(message_id, message)

    def ephemeral(self, message: Message) -> None:
        self.private.append(message.text())

    def thread(self, message_id: str, message: Message) -> str | None:
        return self.inner.thread(message_id, message) if self.inner else None

    def react(self, message_id: str, emoji: str) -> None:
        if self.inner:
            self.inner.react(message_id, emoji)


def take_checkpoint(services: Services, database: str, note: str | None, actor: Actor,
                    reply: Reply | None = None, *, authorized: bool = False) -> Checkpoint:
    """Back up `database` and wait; ok only once the stored artifact's sha256 matches the catalog.
    `authorized`: the caller proved itself another way (the HTTP endpoint's bearer token)."""
    try:
        name = services.settings.database(database).name
        if note is not None and len(note) > 500:
            raise UsageError("--note is at most 500 characters")
        request = BackupRequest(database=name, note=note or None)
        if not authorized:
            require(services, OPERATOR, actor, "a checkpoint backup")
        channel = checkpoint_channel(services)
        said = CheckpointReply(reply, channel)
        status = execute_backup(services, request, Actor(user=actor.user, channel=channel, source=actor.source,
                                                         os_user=actor.os_user, slack_identity=actor.slack_identity),
                                said)
    except BackupbotError as exc:
        return Checkpoint(False, database, reason=redact(str(exc), services.secrets()))
    if status.state != JobStatus.SUCCEEDED or status.record is None:
        return Checkpoint(False, name, status.job_id, reason=status.error or "the backup did not succeed")
    record = get_backup(services.store, status.record.id)
    try:
        if record is None:
            raise BackupbotError(f"backup #{status.record.id} is not in the catalog")
        verify_artifact(services.storage, record)
        if not services.storage.exists(record.manifest_key):
            raise BackupbotError(f"backup #{record.id} has no manifest in storage ({record.manifest_key})")
    except BackupbotError as exc:
        return Checkpoint(False, name, status.record.id, reason=redact(str(exc), services.secrets()))
    return Checkpoint(True, name, record.id, record.sha256, record.size)
