"""/restore: validate everything, post an immutable plan, wait for approvals (commands.restore.approvals).

Nothing is asked of anyone until the plan is known to be possible: the backup exists, its
artifact still matches its sha256, the format supports what was asked, and the target is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.backup.command import parse_tables_flag
from commands.chat.access import OPERATOR, is_operator
from commands.chat.args import int_in_range, is_number, parse_args
from commands.chat.context import Actor, Services
from commands.chat.help import HelpRequest, execute_help
from commands.chat.job_slots import queued_text
from commands.chat.reply import Notice, Reply
from commands.errors import NotAllowedError, NotFoundError, UsageError
from commands.incident.audit import record_event
from commands.pg.restore.databases import validate_database_name
from commands.restore.copies import DropCopyRequest, execute_drop_copy, parse_drop_copy
from commands.restore.pitr_plan import PointInTimeMessage, PointInTimeRequest, build_pitr_plan, parse_time
from commands.restore.plan import RestorePlanMessage, RestoreRequest, build_plan, plan_message
from commands.restore.requests import submit_plan
from commands.restore.rules import MAX_JOBS, MIN_JOBS
from commands.restore.status import DRY_RUN
from state import approvals as request_state

USAGE = (
    "Usage:\n"
    "`/restore BACKUP_ID|latest [DB] [--tables t1,t2] [--jobs N] [--into TARGET_DB] [--to SERVER] [--no-owner] "
    "[--allow-privileged-roles] [--dry-run]`\n"
    "`/restore --time \"2026-11-29 14:04:00+00\" [DB] [--into NEW_DB [--to SERVER] [--allow-privileged-roles]] [--dry-run]`"
    "  (point in time, pgBackRest)\n"
    "`/restore physical BACKUP_ID|LABEL|latest [DB] [--dry-run]`\n"
    "`/restore cancel REQUEST_ID`\n"
    "`/restore drop-copy ID`  (stop and remove a point-in-time copy; `/backup list` lists them)\n"
    "`/restore help`\n"
    "Roles a restore creates are never given SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS or membership in "
    "pg_execute_server_program, pg_read_server_files, pg_write_server_files, pg_read_all_data or pg_write_all_data "
    "unless the request says `--allow-privileged-roles`."
)

FLAGS = {"--time": "str", "--tables": "str", "--jobs": "int", "--into": "str", "--to": "str", "--no-owner": "bool",
         "--dry-run": "bool", "--allow-privileged-roles": "bool"}
ALLOW = "--allow-privileged-roles"


@dataclass(frozen=True)
class CancelRequest:
    request_id: int
    permission = OPERATOR


def parse_restore(text: str, services: Services):
    words = text.split(None, 1)
    sub = words[0].lower() if words else ""
    if sub in ("", "help", "-h", "--help"):
        return HelpRequest(USAGE)
    if sub == "cancel":
        args = parse_args(words[1] if len(words) > 1 else "", {}, USAGE)
        if len(args.words) != 1 or not is_number(args.words[0].lstrip("#")):
            raise UsageError(f"cancel needs a request number, like `/restore cancel 3`\n{USAGE}")
        return CancelRequest(int(args.words[0].lstrip("#")))
    if sub == "drop-copy":
        return parse_drop_copy(words[1] if len(words) > 1 else "", USAGE)
    if sub == "physical":
        args = parse_args(words[1] if len(words) > 1 else "", {"--dry-run": "bool"}, USAGE)
        if not args.words or len(args.words) > 2:
            raise UsageError(f"physical needs a backup, like `/restore physical latest`\n{USAGE}")
        database = services.settings.database(args.words[1] if len(args.words) > 1 else
                                              services.settings.default_database).name
        return PointInTimeRequest(database=database, backup=args.words[0].lstrip("#"),
                                  dry_run=bool(args.flags.get("--dry-run")))
    args = parse_args(text, FLAGS, USAGE)
    if "--time" in args.flags:
        other = sorted(set(args.flags) - {"--time", "--dry-run", "--into", "--to", ALLOW})
        if other or len(args.words) > 1:
            raise UsageError(f"--time restores a whole cluster into a new data directory; it takes a database, "
                             f"--into NEW_DB, --to SERVER, {ALLOW} and --dry-run, not "
                             f"{', '.join(other) or repr(' '.join(args.words))}\n{USAGE}")
        if ALLOW in args.flags and "--into" not in args.flags:
            raise UsageError(f"{ALLOW} with --time needs --into NEW_DB: roles are created only when the database "
                             f"is copied into a new database\n{USAGE}")
        database = services.settings.database(args.words[0] if args.words else services.settings.default_database).name
        into = validate_database_name(str(args.flags["--into"])) if "--into" in args.flags else None
        to = services.settings.target(str(args.flags["--to"])).name if "--to" in args.flags else None
        return PointInTimeRequest(database=database, target_time=parse_time(str(args.flags["--time"])), into=into,
                                  to=to, dry_run=bool(args.flags.get("--dry-run")),
                                  allow_privileged_roles=bool(args.flags.get(ALLOW)))
    if len(args.words) > 2:
        raise UsageError(f"too many words: {' '.join(args.words[2:])!r}\n{USAGE}")
    backup = args.words[0].lstrip("#").lower()
    if backup != "latest" and not is_number(backup):
        raise UsageError(f"{args.words[0]!r} is not a backup number or `latest`\n{USAGE}")
    database = services.settings.database(args.words[1]).name if len(args.words) > 1 else None
    tables = parse_tables_flag(args.flags, USAGE)
    # not given: 0, and the plan picks (commands.restore.rules.default_jobs)
    jobs = int_in_range(args.flags["--jobs"], "--jobs", MIN_JOBS, MAX_JOBS, USAGE) if "--jobs" in args.flags else 0
    into = validate_database_name(str(args.flags["--into"])) if "--into" in args.flags else None
    to = services.settings.target(str(args.flags["--to"])).name if "--to" in args.flags else None
    if ALLOW in args.flags and "--no-owner" in args.flags:
        raise UsageError(f"{ALLOW} and --no-owner: --no-owner creates no roles, so there is nothing to allow; "
                         f"drop one of the two\n{USAGE}")
    return RestoreRequest(backup=backup, database=database, tables=tables, jobs=jobs, into=into, to=to,
                          no_owner=bool(args.flags.get("--no-owner")), dry_run=bool(args.flags.get("--dry-run")),
                          allow_privileged_roles=bool(args.flags.get(ALLOW)))


# ---------------------------------------------------------------- executing the command


def execute_restore(services: Services, request: RestoreRequest, actor: Actor, reply: Reply):
    access = services.settings.access
    if not access.approvers:
        raise NotAllowedError("/restore is disabled until approvers are configured ([access] approvers in the config)")
    # reading the whole artifact back to check its sha256 is a job's work: it waits for a slot too
    with services.job_slots.acquire(f"restore plan of backup {request.backup}",
                                    on_queued=lambda ahead: reply.ephemeral(Notice(queued_text(ahead)))):
        plan = (build_pitr_plan(services, request, actor) if isinstance(request, PointInTimeRequest)
                else build_plan(services, request, actor))
    if request.dry_run:
        kind = PointInTimeMessage if isinstance(request, PointInTimeRequest) else RestorePlanMessage
        message = kind(request_id=None, plan=plan, status=DRY_RUN, now=services.clock())
        reply.post(message)
        return message
    return submit_plan(services, plan, actor, reply)


def execute_cancel(services: Services, request: CancelRequest, actor: Actor, reply: Reply):
    row = request_state.get_request(services.store, request.request_id)
    if row is None:
        raise NotFoundError(f"there is no restore request #{request.request_id}")
    if actor.user != row.requester and not is_operator(services, actor):
        raise NotAllowedError(f"only <@{row.requester}> or an operator can cancel request #{row.id}")
    if not request_state.transition(services.store, row.id, request_state.PENDING, request_state.CANCELLED):
        raise UsageError(f"restore request #{row.id} is {row.status}; only a pending request can be cancelled")
    row = request_state.get_request(services.store, row.id)
    if row.message_id:
        reply.update(row.message_id, plan_message(services, row))
        reply.thread(row.message_id, Notice(f"<@{actor.user}> cancelled restore request #{row.id}."))
    record_event(services, "restore.cancelled", database=row.database, actor=actor, text=f"Restore request #{row.id} cancelled")
    reply.ephemeral(Notice(f"Restore request #{row.id} is cancelled."))


EXECUTORS = {RestoreRequest: execute_restore, PointInTimeRequest: execute_restore, CancelRequest: execute_cancel,
             DropCopyRequest: execute_drop_copy, HelpRequest: execute_help}
