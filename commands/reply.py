"""How a command reports: a small interface the Slack and console adapters implement.

Commands hand over message *data* (dataclasses with a plain-text rendering); the adapter decides
how it looks (Block Kit in Slack, text on a terminal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Message(Protocol):
    def text(self) -> str:
        """Plain text (Slack mrkdwn), used by the console and as Slack's notification fallback."""


@dataclass(frozen=True)
class Notice:
    body: str

    def text(self) -> str:
        return self.body


class Reply(Protocol):
    def post(self, message: Message, channel: str | None = None) -> str | None:
        """Post in the invoking (or given) channel; return a message id that `update` accepts."""

    def update(self, message_id: str, message: Message) -> None: ...

    def ephemeral(self, message: Message) -> None:
        """Only the invoking user sees it."""

    def thread(self, message_id: str, message: Message) -> str | None:
        """Reply in the thread under `message_id`."""

    def react(self, message_id: str, emoji: str) -> None:
        """Add a reaction as the bot (approval buttons for a restore request)."""

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        """Share a file in the invoking channel (an incident export)."""


class ThreadReply:
    """A Reply whose new messages go into the thread under `parent` (a restore request's steps)."""

    def __init__(self, reply: Reply, parent: str | None):
        self.reply = reply
        self.parent = parent

    def post(self, message: Message, channel: str | None = None) -> str | None:
        if self.parent is None:
            return self.reply.post(message, channel)
        return self.reply.thread(self.parent, message)

    def update(self, message_id: str, message: Message) -> None:
        self.reply.update(message_id, message)

    def ephemeral(self, message: Message) -> None:
        self.reply.ephemeral(message)

    def thread(self, message_id: str, message: Message) -> str | None:
        return self.reply.thread(message_id, message)

    def react(self, message_id: str, emoji: str) -> None:
        self.reply.react(message_id, emoji)

    def upload_file(self, *args, **kwargs):
        return self.reply.upload_file(*args, **kwargs)
