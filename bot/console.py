"""A terminal chat that drives the same commands as Slack, with no workspace.

Messages get ids M1, M2, …; `:as U0789` switches the acting user and `:react M3 white_check_mark`
reacts as that user, so the whole approval flow can be tried (and tested) from a terminal.
"""

from __future__ import annotations

import itertools
import re
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from commands import dispatch
from commands.chat.context import Actor, Services
from commands.chat.reply import Message
from commands.settings import Settings

CONSOLE_USER = "U_CONSOLE"
CONSOLE_CHANNEL = "C_CONSOLE"
BOT_USER = "U_BACKUPBOT"

HELP = """Type a slash command as in Slack, for example:
  /backup              back up the default database
  /backup list         list backups
  /restore latest      ask for a restore of the latest backup (approvers react to approve)
  /db-health           the database's health
  /incident open TITLE open an incident timeline
  /backup help, /restore help, /incident help: every option
Console commands:
  :as USER             act as another user (for example :as U0789)
  :react MSG EMOJI     react to a message (for example :react M3 white_check_mark)
  :unreact MSG EMOJI   remove that reaction
  :messages            show every message so far
  :quit                leave"""


def with_console_operator(settings: Settings, user: str = CONSOLE_USER) -> Settings:
    """The demo's access: the console user is its operator. (Access fails closed, and `U_CONSOLE` is not a Slack ID
    a config file would accept, so the demo sets it here.)"""
    operators = settings.access.operators if user in settings.access.operators else (*settings.access.operators, user)
    return replace(settings, access=replace(settings.access, operators=operators))


def plain(text: str) -> str:
    """Slack mention markup to what a terminal reader expects."""
    return re.sub(r"<@([A-Z0-9_]+)>", r"@\1", text)


@dataclass
class ConsoleMessage:
    id: str
    channel: str
    author: str
    text: str
    thread_of: str | None = None
    reactions: dict[str, set[str]] = field(default_factory=dict)


class ConsoleReply:
    def __init__(self, console: Console, actor: Actor):
        self.console = console
        self.actor = actor

    def post(self, message: Message, channel: str | None = None) -> str:
        return self.console.add_message(channel or self.actor.channel or CONSOLE_CHANNEL, message.text())

    def update(self, message_id: str, message: Message) -> None:
        self.console.edit_message(message_id, message.text())

    def ephemeral(self, message: Message) -> None:
        self.console.emit(f"(only you) {plain(message.text())}")

    def thread(self, message_id: str, message: Message) -> str:
        parent = self.console.messages.get(message_id)
        channel = parent.channel if parent else CONSOLE_CHANNEL
        return self.console.add_message(channel, message.text(), thread_of=message_id)

    def react(self, message_id: str, emoji: str) -> None:
        self.console.add_reaction(message_id, emoji, BOT_USER, quiet=True)

    def check_can_collect_reactions(self) -> None:
        """Every console message can be reacted to."""

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        path = self.console.files_dir() / Path(filename).name
        path.write_bytes(content)
        self.console.emit(f"[file] {title}: {path}")


class Console:
    def __init__(self, services: Services, user: str = CONSOLE_USER, channel: str = CONSOLE_CHANNEL,
                 out=None, show_progress: bool = True, files_dir: Path | None = None):
        self.services = services
        self._files_dir = files_dir
        self.user = user
        self.channel = channel
        self.out = out
        self.show_progress = show_progress
        self.messages: dict[str, ConsoleMessage] = {}
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._buffer: list[str] = []
        from bot.preflight import warn_at_startup

        warn_at_startup(services.settings)  # no operators: nobody may run /backup or /restore, say so at start

    def files_dir(self) -> Path:
        """Where shared files (incident exports) land: one folder per console session."""
        if self._files_dir is None:
            self._files_dir = Path(tempfile.mkdtemp(prefix="backupbot-files-"))
        self._files_dir.mkdir(parents=True, exist_ok=True)
        return self._files_dir

    # -- what the commands see
    def emit(self, line: str) -> None:
        self._buffer.append(line)
        if self.out is not None:
            print(line, file=self.out, flush=True)

    def add_message(self, channel: str, text: str, thread_of: str | None = None, author: str = BOT_USER) -> str:
        message_id = f"M{next(self._ids)}"
        self.messages[message_id] = ConsoleMessage(message_id, channel, author, text, thread_of)
        where = f" (thread of {thread_of})" if thread_of else ""
        self.emit(f"[{message_id}]{where} {plain(text)}")
        return message_id

    def edit_message(self, message_id: str, text: str) -> None:
        message = self.messages.get(message_id)
        if message is None:
            return
        message.text = text
        if self.show_progress or ":hourglass" not in text:
            self.emit(f"[{message_id} updated] {plain(text)}")

    def add_reaction(self, message_id: str, emoji: str, user: str, quiet: bool = False) -> None:
        message = self.messages[message_id]
        message.reactions.setdefault(emoji, set()).add(user)
        if not quiet:
            self.emit(f"[{message_id}] +:{emoji}: by @{user}")

    # -- what the person types
    def run(self, line: str) -> str:
        """Run one line and return everything the bot said in answer."""
        self._buffer = []
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        try:
            if line.startswith(":"):
                self._console_command(line)
            elif line.startswith("/"):
                command, _, text = line.partition(" ")
                actor = Actor(user=self.user, channel=self.channel)
                dispatch.run_command(self.services, command, text, actor, ConsoleReply(self, actor))
            else:
                self.emit("Type a slash command (/backup help) or :help.")
        except Exception as exc:  # the console must never die on a bad line
            error_id = dispatch.report_unexpected(self.services, ConsoleReply(self, Actor(self.user, self.channel)),
                                                  line)
            self.emit(f"(error {error_id}: {type(exc).__name__})")
        return "\n".join(self._buffer)

    def _console_command(self, line: str) -> None:
        words = line.split()
        name = words[0]
        if name in (":help", ":h"):
            self.emit(HELP)
        elif name == ":as" and len(words) == 2:
            self.user = words[1]
            self.emit(f"Now acting as @{self.user}")
        elif name in (":react", ":unreact") and len(words) == 3:
            message_id, emoji = words[1], words[2].strip(":")
            if message_id not in self.messages:
                self.emit(f"No message {message_id}. Message ids are shown in brackets, like [M1].")
                return
            message = self.messages[message_id]
            added = name == ":react"
            if added:
                self.add_reaction(message_id, emoji, self.user)
            else:
                message.reactions.get(emoji, set()).discard(self.user)
                self.emit(f"[{message_id}] -:{emoji}: by @{self.user}")
            event = dispatch.ReactionEvent(
                event_id=f"console-{next(self._events)}", user=self.user, emoji=emoji, added=added,
                channel=message.channel, message_id=message_id, item_author=message.author,
                item_text=message.text, item_ts=None,
            )
            actor = Actor(user=self.user, channel=message.channel)
            dispatch.run_reaction(self.services, event, ConsoleReply(self, actor))
        elif name == ":messages":
            for message in self.messages.values():
                self.emit(f"[{message.id}] {plain(message.text)}")
        elif name in (":quit", ":q", ":exit"):
            raise EOFError
        else:
            self.emit(f"Unknown console command {name}. Type :help.")

    def loop(self, stdin=None) -> None:
        """Interactive when stdin is a terminal; otherwise one command per line (scripts)."""
        stdin = stdin or sys.stdin
        interactive = stdin.isatty()
        if interactive:
            self.emit("backupbot console — type :help for commands, :quit to leave.")
        while True:
            try:
                line = input(f"{self.user}> ") if interactive else stdin.readline()
            except (EOFError, KeyboardInterrupt):
                break
            if not interactive:
                if line == "":
                    break
                if line.strip():
                    self.emit(f"> {line.strip()}")
            try:
                self.run(line)
            except EOFError:
                break
