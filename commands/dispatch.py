"""The one entry point adapters call: parse, check access, execute, turn errors into replies.

Access is checked here and nowhere else (like Dispatch's restricted_command_middleware): every
request type declares the permission it needs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from commands.backup import command as backup
from commands.backup import holds, physical, prune
from commands.chat.access import require
from commands.chat.context import Actor, ReactionEvent, Services
from commands.chat.reply import Notice, Reply
from commands.errors import BackupbotError
from commands.health import command as health
from commands.incident import command as incident
from commands.incident.parse import parse_incident
from commands.redact import redact
from commands.restore import approvals, drill
from commands.restore import command as restore
from state.events import first_delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    usage_hint: str
    parse: Callable  # (text, services) -> request
    executors: dict  # request type -> (services, request, actor, reply) -> result


def parse_backup_command(text: str, services: Services):
    """`/backup prune` and `/backup verify` belong to retention and to drills; the rest to backups."""
    words = text.split(None, 1)
    sub = words[0].lower() if words else ""
    rest = words[1] if len(words) > 1 else ""
    if sub == "prune":
        return prune.parse_prune(rest, services)
    if sub == "keep":
        return holds.parse_keep(rest, services)
    if sub == "release":
        return holds.parse_release(rest, services)
    if sub == "physical":
        return physical.parse_physical(rest, services)
    if sub == "verify":
        return drill.parse_verify(rest, services)
    return backup.parse_backup(text, services)


# What Slack shows under each command; manifest.yml carries the same hints (tests/test_docs.py)
USAGE_HINTS = {
    "/backup": ("[DB] [--format custom|plain|gzip] [--tables t1,t2] [--schema-only] [--note TEXT] "
                "| physical [DB] [--type full|diff|incr] | list | prune [--dry-run] | keep ID --reason TEXT "
                "| release HOLD --reason TEXT | verify [physical] ID|latest | help"),
    "/restore": ("BACKUP_ID|latest [DB] [--tables t1,t2] [--jobs N] [--into DB] [--to SERVER] [--no-owner] "
                 "[--allow-privileged-roles] [--dry-run] "
                 "| --time \"2026-11-29 14:04:00+00\" [DB] [--into NEW_DB] | physical ID|latest | cancel ID "
                 "| drop-copy ID | help"),
    "/db-health": "[DB|all] [--post]",
    "/incident": ("open TITLE [--db DB] [--sev 1-4] | note TEXT | status | check STEP | close ROOT_CAUSE | timeline "
                  "| list | export"),
}

COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in [
        CommandSpec("/backup", "Back up a database, list backups", USAGE_HINTS["/backup"], parse_backup_command,
                    {**backup.EXECUTORS, **prune.EXECUTORS, **holds.EXECUTORS, **drill.EXECUTORS, **physical.EXECUTORS}),
        CommandSpec("/restore", "Approved restores", USAGE_HINTS["/restore"], restore.parse_restore, restore.EXECUTORS),
        CommandSpec("/db-health", "Database health", USAGE_HINTS["/db-health"], health.parse_health, health.EXECUTORS),
        CommandSpec("/incident", "Incident timelines", USAGE_HINTS["/incident"], parse_incident,
                    incident.EXECUTORS),
    ]
}


def parse_command(services: Services, command: str, text: str):
    spec = COMMANDS.get(command)
    if spec is None:
        known = ", ".join(sorted(COMMANDS))
        raise BackupbotError(f"unknown command {command[:40]!r} (known: {known})")
    return spec, spec.parse(text.strip(), services)


def authorize(services: Services, command: str, request, actor: Actor) -> None:
    require(services, getattr(request, "permission", "operator"), actor, command)


def run_command(services: Services, command: str, text: str, actor: Actor, reply: Reply):
    """Run one slash command to completion. Known errors become an ephemeral reply; returns the result."""
    try:
        spec, request = parse_command(services, command, text)
        authorize(services, command, request, actor)
        return spec.executors[type(request)](services, request, actor, reply)
    except BackupbotError as exc:
        reply.ephemeral(Notice(redact(str(exc), services.secrets())))
    except Exception:
        report_unexpected(services, reply, f"{command} {text[:200]}")
    return None


# Handlers for reactions, in order: each may act on the event or ignore it.
REACTION_HANDLERS: list[Callable] = []
REACTION_HANDLERS.append(approvals.on_reaction)
REACTION_HANDLERS.append(holds.on_hold_reaction)
REACTION_HANDLERS.append(incident.handle_stopwatch)


def run_reaction(services: Services, event: ReactionEvent, reply: Reply) -> None:
    """Apply a reaction once (Slack redelivers events): the first delivery wins, retries are no-ops."""
    if not first_delivery(services.store, event.event_id):
        return
    event = ReactionEvent(**{**event.__dict__, "emoji": base_emoji(event.emoji)})
    for handler in REACTION_HANDLERS:
        try:
            handler(services, event, reply)
        except BackupbotError as exc:
            reply.thread(event.message_id, Notice(redact(str(exc), services.secrets())))
        except Exception:
            report_unexpected(services, reply, f"reaction {event.emoji} on {event.message_id}")


def base_emoji(name: str) -> str:
    """`+1::skin-tone-3` counts as `+1`."""
    return name.split("::", 1)[0].strip(":")


def report_unexpected(services: Services, reply: Reply, what: str) -> str:
    error_id = uuid.uuid4().hex[:8]
    log.exception("unexpected error %s while running %s", error_id, redact(what, services.secrets()))
    try:
        reply.ephemeral(Notice(f"Something went wrong (error id {error_id}); the details are in the bot's log."))
    except Exception:
        log.exception("could not report error %s", error_id)
    return error_id
