"""What every command needs, built once by the adapter: settings, state, storage, clock, members."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from commands.chat.job_slots import JobSlots
from commands.settings import Settings
from commands.storage import Storage, open_storage
from state import Store


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    store: Store
    storage: Storage
    clock: Callable[[], datetime] = utc_now
    # usergroup id -> member user ids (Slack's usergroups.users.list); the console knows none
    group_members: Callable[[str], set[str]] = field(default=lambda group: set())
    progress_every: float = 3.0
    interrupted_jobs: list = field(default_factory=list)
    # at most [jobs] max_running backups/restores/drills at once; built from the settings when not given
    job_slots: JobSlots | None = None
    instance_lock: object = None  # state.lock.InstanceLock, taken by bot.startup.start_services
    # set on SIGTERM (bot/shutdown.py): `stopping` at once (no new commands), `interrupting` when the grace
    # period is over and running jobs' children are stopped (a job that fails from then on was interrupted)
    stopping: threading.Event = field(default_factory=threading.Event)
    interrupting: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.job_slots is None:
            self.job_slots = JobSlots(self.settings.jobs.max_running)

    def secrets(self) -> list[str]:
        return self.settings.secrets()

    def close(self) -> None:
        """Let another process (or a test's next start_services) take this state database."""
        if self.instance_lock is not None:
            self.instance_lock.release()


def build_services(settings: Settings, **overrides) -> Services:
    return Services(
        settings=settings, store=Store(settings.state_path), storage=open_storage(settings.storage_url, settings.identity_file),
        **overrides
    )


SLACK, CONSOLE = "slack", "console"  # where an action came from, as the audit log records it


@dataclass(frozen=True)
class Actor:
    """Who typed the command, and where.

    `slack_identity` is False for the terminal console outside the demo: its `user` is then the OS
    account that typed the line, which only `[access] console_operators` can let operate and which
    never counts as an approver (commands/chat/access.py). The demo, and tests, play Slack users.
    """

    user: str
    channel: str | None = None
    response_url: str | None = None
    source: str | None = None  # SLACK or CONSOLE, set by the adapter; None for the scheduler and direct calls
    os_user: str | None = None  # the console's OS account, for the audit log
    slack_identity: bool = True


@dataclass(frozen=True)
class ReactionEvent:
    """A reaction added or removed on a message, from Slack's events or the console."""

    event_id: str
    user: str
    emoji: str  # base name: skin-tone suffixes already stripped
    added: bool
    channel: str
    message_id: str
    item_author: str | None = None
    item_text: str | None = None
    item_ts: str | None = None
    source: str | None = None
    os_user: str | None = None
    slack_identity: bool = True

    def actor(self) -> Actor:
        """The reactor as access checks and the audit log see them."""
        return Actor(user=self.user, channel=self.channel, source=self.source, os_user=self.os_user,
                     slack_identity=self.slack_identity)
