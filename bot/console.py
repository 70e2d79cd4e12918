"""A terminal chat that drives the same commands as Slack, with no workspace.

Messages show as M1, M2, …. In the demo (and in tests) the console plays Slack users: `:as U0789`
switches the acting user and `:react M3 white_check_mark` reacts as that user, so the whole approval
flow can be tried from a terminal. Anywhere else it is the OS account that runs it: anyone with a
shell could type an approver's Slack ID, so it cannot switch identity and cannot approve or reject
a restore (approvals come from approvers' reactions in Slack), and it may operate only when
`[access] console_operators` names that account. Every session numbers its messages from M1, so the
id stored for a message also carries a token of the session: a reaction in one session never lands
on another session's message in the same state database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from commands import dispatch
from commands.chat.context import CONSOLE, Actor, Services
from commands.chat.reply import Message
from commands.errors import BackupbotError
from commands.incident.audit import record_event
from commands.settings import Settings
from state import approvals as request_state

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
  :as USER             act as another user (for example :as U0789); only in the demo
  :react MSG EMOJI     react to a message (for example :react M3 stopwatch); approving or rejecting
                       a restore this way works only in the demo: approvers react in Slack
  :unreact MSG EMOJI   remove that reaction
  :messages            show every message so far
  :quit                leave"""
DEMO_ONLY = "works only in the demo (backupbot console --demo)"


def os_account() -> str:
    """The account the console acts as outside the demo: the effective uid's name from the password
    database, not $USER or $LOGNAME (getpass.getuser() reads those first, and anyone can set them)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise BackupbotError(f"the console acts as its OS user, but uid {os.geteuid()} has no account name; "
                             "run it as a named user listed in [access] console_operators") from None


def with_console_operator(settings: Settings, user: str = CONSOLE_USER) -> Settings:
    """The demo's access: the console user is its operator. (Access fails closed, and `U_CONSOLE` is not a Slack ID
    a config file would accept, so the demo sets it here.)"""
    operators = settings.access.operators if user in settings.access.operators else (*settings.access.operators, user)
    return replace(settings, access=replace(settings.access, operators=operators))


def plain(text: str) -> str:
    """Slack mention markup to what a terminal reader expects."""
    return re.sub(r"<@([^<>\s|]+)>", r"@\1", text)


@dataclass
class ConsoleMessage:
    id: str  # what the terminal shows and `:react` takes: M1, M2, …
    channel: str
    author: str
    text: str
    thread_of: str | None = None
    reactions: dict[str, set[str]] = field(default_factory=dict)
    stored_id: str = ""  # what the commands (and the state database) know it by: unique to the session


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
        parent = self.console.find(message_id)
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
    """`plays_slack_users` is for the demo and tests (bot/cli.py sets it only with --demo): the console then
    acts as `user` and `:as` may change it. Without it, it is the OS account, and `user` must not be given."""

    def __init__(self, services: Services, user: str | None = None, channel: str = CONSOLE_CHANNEL,
                 out=None, show_progress: bool = True, files_dir: Path | None = None, plays_slack_users: bool = False):
        self.services = services
        self._files_dir = files_dir
        self.os_user = os_account()
        self.plays_slack_users = plays_slack_users
        if not plays_slack_users and user not in (None, self.os_user):
            raise ValueError(f"the console outside the demo acts as its OS user {self.os_user}, not as {user}")
        self.user = (user or CONSOLE_USER) if plays_slack_users else self.os_user
        self.channel = channel
        self.session = secrets.token_hex(4)
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

    def actor(self, channel: str | None = None) -> Actor:
        return Actor(user=self.user, channel=channel or self.channel, source=CONSOLE, os_user=self.os_user,
                     slack_identity=self.plays_slack_users)

    def find(self, stored_id: str) -> ConsoleMessage | None:
        """The message the commands know as `stored_id` (they never see the short M1 the terminal shows)."""
        return next((m for m in self.messages.values() if m.stored_id == stored_id), None)

    # -- what the commands see
    def emit(self, line: str) -> None:
        self._buffer.append(line)
        if self.out is not None:
            print(line, file=self.out, flush=True)

    def add_message(self, channel: str, text: str, thread_of: str | None = None, author: str = BOT_USER) -> str:
        """Post a message; return the id it is stored under (`thread_of` is such an id too)."""
        shown = f"M{next(self._ids)}"
        stored = f"{shown}.{self.session}"
        parent = self.find(thread_of) if thread_of else None
        self.messages[shown] = ConsoleMessage(shown, channel, author, text, thread_of, stored_id=stored)
        where = f" (thread of {parent.id if parent else thread_of})" if thread_of else ""
        self.emit(f"[{shown}]{where} {plain(text)}")
        return stored

    def edit_message(self, stored_id: str, text: str) -> None:
        message = self.find(stored_id)
        if message is None:
            return
        message.text = text
        if self.show_progress or ":hourglass" not in text:
            self.emit(f"[{message.id} updated] {plain(text)}")

    def add_reaction(self, stored_id: str, emoji: str, user: str, quiet: bool = False) -> None:
        message = self.find(stored_id)
        message.reactions.setdefault(emoji, set()).add(user)
        if not quiet:
            self.emit(f"[{message.id}] +:{emoji}: by @{user}")

    # -- what the person types
    def run(self, line: str) -> str:
        """Run one line and return everything the bot said in answer."""
        self._buffer = []
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        if not self.plays_slack_users:  # a real person at a shell on the bot's state: every line is on the record
            record_event(self.services, "console.command", actor=self.actor(), text=f"{self.os_user} typed: {line}")
        try:
            if line.startswith(":"):
                self._console_command(line)
            elif line.startswith("/"):
                command, _, text = line.partition(" ")
                actor = self.actor()
                dispatch.run_command(self.services, command, text, actor, ConsoleReply(self, actor))
            else:
                self.emit("Type a slash command (/backup help) or :help.")
        except EOFError:  # :quit (EOFError is an Exception: it must not be taken for a bad line)
            raise
        except Exception as exc:  # the console must never die on a bad line
            error_id = dispatch.report_unexpected(self.services, ConsoleReply(self, self.actor()), line)
            self.emit(f"(error {error_id}: {type(exc).__name__})")
        return "\n".join(self._buffer)

    def _refuse(self, what: str, why: str, channel: str | None = None) -> None:
        """Say no, and put the attempt in the audit log: it is someone at a shell trying to act as another."""
        self.emit(why)
        record_event(self.services, "console.refused", actor=self.actor(channel),
                     text=f"console refused {what} by OS user {self.os_user}")

    def _approval_refused(self, message: ConsoleMessage, emoji: str) -> bool:
        access = self.services.settings.access
        if self.plays_slack_users or emoji not in (access.approve_emoji, access.reject_emoji):
            return False
        row = request_state.request_for_message(self.services.store, message.channel, message.stored_id)
        if row is None:
            return False
        self._refuse(f":{emoji}: on restore request #{row.id}",
                     f"Restore request #{row.id} is approved or rejected only by approvers' reactions in Slack: "
                     "the console cannot approve or reject it outside the demo.", message.channel)
        return True

    def _console_command(self, line: str) -> None:
        words = line.split()
        name = words[0]
        if name in (":help", ":h"):
            self.emit(HELP)
        elif name == ":as" and not self.plays_slack_users:
            self._refuse(" ".join(words[:2]), f"The console acts as you, OS user {self.os_user}: :as {DEMO_ONLY}. "
                         "Outside the demo everyone acts as themselves in Slack.")
        elif name == ":as" and len(words) == 2:
            self.user = words[1]
            self.emit(f"Now acting as @{self.user}")
        elif name in (":react", ":unreact") and len(words) == 3:
            shown, emoji = words[1], words[2].strip(":")
            if shown not in self.messages:
                self.emit(f"No message {shown}. Message ids are shown in brackets, like [M1].")
                return
            message = self.messages[shown]
            if self._approval_refused(message, dispatch.base_emoji(emoji)):  # a skin tone counts as the emoji
                return
            added = name == ":react"
            if added:
                self.add_reaction(message.stored_id, emoji, self.user)
            else:
                message.reactions.get(emoji, set()).discard(self.user)
                self.emit(f"[{shown}] -:{emoji}: by @{self.user}")
            actor = self.actor(message.channel)
            event = dispatch.ReactionEvent(
                event_id=f"console-{self.session}-{next(self._events)}", user=self.user, emoji=emoji, added=added,
                channel=message.channel, message_id=message.stored_id, item_author=message.author,
                item_text=message.text, item_ts=None, source=CONSOLE, os_user=self.os_user,
                slack_identity=self.plays_slack_users,
            )
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
