"""`/backup help`, `/restore help`: a request every command understands."""

from __future__ import annotations

from dataclasses import dataclass

from commands.chat.access import ANYONE
from commands.chat.context import Actor, Services
from commands.chat.reply import Notice, Reply


@dataclass(frozen=True)
class HelpRequest:
    text: str
    permission = ANYONE


def execute_help(services: Services, request: HelpRequest, actor: Actor, reply: Reply) -> None:
    reply.ephemeral(Notice(request.text))
