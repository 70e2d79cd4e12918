"""`backupbot check`: one line per check (or one JSON document with --json), exit 1 when any fails.

It catches what would otherwise fail later, at the worst time: a restore with no identity file or no
approvers, a `run` with no Slack token, a database, store or pgBackRest stanza that is not there.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid

from commands.backup.physical import engine_config
from commands.errors import BackupbotError
from commands.pg.pgbackrest.archiver import archiver_status
from commands.pg.pgbackrest.backups import ensure_stanza, info_json
from commands.pg.pgbackrest.runner import check as pgbackrest_check
from commands.pg.snapshot import connect
from commands.pg.tools import major, tool_version
from commands.redact import redact
from commands.settings import Settings, load_settings
from commands.storage import open_storage
from commands.units import human_duration

log = logging.getLogger(__name__)


def run_preflight(config_path: str | None = None, out=None, as_json: bool = False) -> int:
    out = out or sys.stdout
    results: list[tuple[bool, str]] = []
    try:
        settings = load_settings(config_path)
        results.append((True, f"config: {settings.config_path or 'none found, embedded defaults'}"))
    except BackupbotError as exc:
        results.append((False, f"config: {exc}"))
        return _print(results, out, as_json)
    results.append(check_sections(settings))
    results.append(check_access(settings))
    results.append(check_approvers(settings))
    results.append(check_encryption(settings))
    results.append(check_signing(settings))
    results.extend(check_databases(settings))
    results.extend(check_pgbackrest(settings))
    results.append(check_storage(settings))
    results.append(check_scratch(settings))
    results.extend(check_slack_tokens(settings))
    if settings.slack_bot_token:
        results.append(check_slack(settings))
        results.extend(check_channels(settings))
    if settings.slack_app_token:
        results.append(check_app_token(settings))
    return _print(results, out, as_json)


def _print(results: list[tuple[bool, str]], out, as_json: bool = False) -> int:
    failed = sum(1 for ok, _ in results if not ok)
    if as_json:  # for monitoring: {"ok", "passed", "failed", "checks": [{"ok", "check", "detail"}]}
        checks = [{"ok": ok, "check": line.partition(": ")[0], "detail": line.partition(": ")[2] or line}
                  for ok, line in results]
        json.dump({"ok": not failed, "passed": len(results) - failed, "failed": failed, "checks": checks}, out)
        out.write("\n")
        return 1 if failed else 0
    for ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {line}", file=out)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0


def check_approvers(settings: Settings) -> tuple[bool, str]:
    """Restores wait for approvers' reactions: with databases and no approvers, every restore would expire."""
    if settings.databases and not settings.access.approvers:
        return False, ("approvers: none configured, so every restore request would wait until it expires: "
                       'list Slack user (U…) or usergroup (S…) IDs in `[access] approvers = ["U0123"]`')
    return True, (f"approvers: {len(settings.access.approvers)} entr{'y' if len(settings.access.approvers) == 1 else 'ies'}, "
                  f"{settings.access.required_approvals} approval(s) start a restore")


def check_encryption(settings: Settings) -> tuple[bool, str]:
    """With encrypt_to, a restore or drill needs the private key: a missing or unreadable one is found now."""
    from commands.storage.encryption import load_identities, public_keys

    if not settings.encrypt_to and not settings.identity_file:
        return True, "encryption: off (storage.encrypt_to is not set)"
    if not settings.identity_file:
        return False, ("encryption: storage.encrypt_to is set but storage.identity_file is not: backups are encrypted "
                       "and nothing could restore them; set storage.identity_file to the age private key file")
    try:
        keys = public_keys(load_identities(settings.identity_file))
    except BackupbotError as exc:
        return False, f"encryption: {exc}"
    if settings.encrypt_to and not set(keys) & set(settings.encrypt_to):
        return False, (f"encryption: the key in {settings.identity_file} is none of storage.encrypt_to's recipients: "
                       "what is encrypted now could not be restored with it")
    return True, f"encryption: to {len(settings.encrypt_to)} recipient(s); {settings.identity_file} can decrypt"


def check_slack_tokens(settings: Settings) -> list[tuple[bool, str]]:
    """What `backupbot run` refuses to start without (bot/server.py serve)."""
    results = []
    if not settings.slack_bot_token:
        results.append((False, "slack: SLACK_BOT_TOKEN is not set (the bot token, xoxb-…): `backupbot run` "
                               "would refuse to start"))
    if not settings.slack_app_token and not settings.slack_signing_secret:
        results.append((False, "slack: neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP mode) is "
                               "set: `backupbot run` would refuse to start"))
    return results


def check_sections(settings: Settings) -> tuple[bool, str]:
    """[schedules], [retention], [health] and [incidents] were checked when the config loaded: say what they hold."""
    return True, f"config: {len(settings.schedules)} scheduled job(s), retention, health and incident settings valid"


def check_access(settings: Settings) -> tuple[bool, str]:
    """Access fails closed: no operators means nobody may run /backup or /restore, so that is a failure."""
    from commands.chat.access import access_problems

    problems = access_problems(settings)
    if problems:
        return False, f"access: {problems[0]}"
    access = settings.access
    return True, (f"access: {len(access.operators)} operator entr{'y' if len(access.operators) == 1 else 'ies'}, "
                  f"{len(access.approvers)} approver entr{'y' if len(access.approvers) == 1 else 'ies'}, "
                  f"{len(access.viewers)} viewer entr{'y' if len(access.viewers) == 1 else 'ies'}, "
                  f"{len(access.console_operators)} console operator(s) (OS users; never approvers)")


def check_signing(settings: Settings) -> tuple[bool, str]:
    """The key files were read and checked (0600, a real key) when the config loaded; without any key nothing
    the bot stores can be authenticated, so a catalog rebuild or state restore could trust nothing."""
    keys = settings.signing.keys
    if not keys:
        return False, ("signing: no signing key ([storage] signing_key_files or $BACKUPBOT_SIGNING_KEY): manifests and "
                       "state copies are not authenticated; `backupbot init --signing-key PATH` creates one")
    more = f"; {len(keys) - 1} older key(s) verify" if len(keys) > 1 else ""
    return True, f"signing: key {keys[0].key_id} ({keys[0].source}) signs manifests and state copies{more}"


def warn_at_startup(settings: Settings) -> list[str]:
    """Log what start-up should shout about (the bot still starts); returns the warnings."""
    from commands.chat.access import access_problems

    problems = access_problems(settings)
    if not settings.signing.can_sign:
        log.warning("signing: no signing key is configured: backups are stored unsigned, no state copy is stored, and "
                    "a catalog rebuild will trust none of them (`backupbot init --signing-key PATH`)")
    for problem in problems:
        log.warning("access: %s", problem)
    return problems


def check_databases(settings: Settings) -> list[tuple[bool, str]]:
    results = []
    try:
        dump_version = tool_version("pg_dump")
    except BackupbotError as exc:
        return [(False, f"pg_dump: {exc}")]
    for db in settings.databases.values():
        try:
            dsn = db.require_url()
            with connect(dsn, timeout_s=10) as conn:
                server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            results.append((True, f"database {db.name}: reachable, PostgreSQL {server}"))
            ok = major(dump_version) >= major(server)
            results.append((ok, f"database {db.name}: pg_dump {dump_version} {'>=' if ok else '<'} server {server}"))
        except BackupbotError as exc:
            results.append((False, f"database {db.name}: {redact(str(exc), settings.secrets())}"))
    return results


def check_pgbackrest(settings: Settings) -> list[tuple[bool, str]]:
    """Per database with `pgbackrest`: the server archives into that stanza (archive_mode, archive_command),
    pg_stat_archiver's last archived WAL and failures, and `pgbackrest check` (which archives a WAL switch)."""
    results = []
    for db in settings.databases.values():
        if db.pgbackrest is None:
            continue
        name = f"pgbackrest {db.name} (stanza {db.pgbackrest.stanza})"
        try:
            cfg = engine_config(settings, db.name)
            status = archiver_status(db.require_url())
        except BackupbotError as exc:
            results.append((False, f"{name}: {redact(str(exc), settings.secrets())}"))
            continue
        pushes = status.archiving and status.pushes_to(cfg)
        results.append((pushes, f"{name}: archive_mode {status.archive_mode}, archive_command "
                                + ("pushes to this stanza" if pushes else
                                   f"does not push to this stanza ({status.archive_command or 'empty'!r}); expected "
                                   f"pgbackrest --stanza={cfg.stanza} archive-push %p")))
        if status.last_archived_wal:
            age = f" ({human_duration(status.rpo_seconds)} ago)" if status.rpo_seconds is not None else ""
            last = f"last archived WAL {status.last_archived_wal}{age}"
        else:
            last = "no WAL archived yet"
        failures = f"{status.failed_count} failure(s)"
        if status.last_failed_wal:
            failures += f", last {status.last_failed_wal} at {status.last_failed_time:%Y-%m-%d %H:%M:%S%z}"
        results.append((not status.failing, f"{name}: {last}; {failures}"
                        + ("; the latest attempt FAILED" if status.failing else "")))
        listening = check_tls_server(name, cfg) if cfg.remote else (True, "")
        if cfg.remote:
            results.append(listening)
        try:
            if not pushes:  # a mistyped stanza is not created: this server would never archive into it
                info_json(cfg, timeout=60)
                results.append((True, f"{name}: the stanza exists in the repository"))
            elif ensure_stanza(cfg):
                results.append((True, f"{name}: stanza created (pgbackrest stanza-create"
                                      + (f" over TLS to {cfg.tls.pg_host}" if cfg.remote else "") + ")"))
            else:
                results.append((True, f"{name}: the stanza exists in the repository"))
        except BackupbotError as exc:
            results.append((False, f"{name}: {redact(str(exc), settings.secrets())} (the stanza could not be read "
                                   f"or created: `pgbackrest --stanza={cfg.stanza} stanza-create`)"))
            continue
        if not listening[0]:  # its WAL could not arrive: `pgbackrest check` would only time out
            continue
        try:
            pgbackrest_check(cfg)
            over = (f" over TLS: this host reached {cfg.tls.pg_host}:{cfg.tls.pg_host_port} and the WAL switch came "
                    f"back to this host's pgbackrest server" if cfg.remote else "")
            results.append((True, f"{name}: pgbackrest check ok (a WAL switch reached the repository){over}"))
        except BackupbotError as exc:
            results.append((False, f"{name}: {redact(str(exc), settings.secrets())}"))
    return results


def check_tls_server(name: str, cfg) -> tuple[bool, str]:
    """The database host pushes its WAL to this host's `pgbackrest server`: something must listen there."""
    import socket

    tls = cfg.tls
    host = "127.0.0.1" if tls.server_address in ("*", "0.0.0.0") else tls.server_address
    try:
        with socket.create_connection((host, tls.server_port), timeout=5):
            pass
    except OSError as exc:
        return False, (f"{name}: nothing listens on {host}:{tls.server_port} ({exc.strerror or exc}): the database "
                       f"host's archive_command pushes WAL to this host's TLS server; start it as this user: "
                       f"pgbackrest --config={cfg.config_path} server")
    return True, f"{name}: this host's pgbackrest server listens on {host}:{tls.server_port} (for the WAL of {tls.pg_host})"


def check_storage(settings: Settings) -> tuple[bool, str]:
    key = f".backupbot-probe-{uuid.uuid4().hex[:8]}"
    try:
        storage = open_storage(settings.storage_url)
        storage.put_bytes(key, b"probe")
        if storage.get_bytes(key) != b"probe":
            return False, f"storage {storage.url}: read back differs from what was written"
        storage.delete(key)
        return True, f"storage {storage.url}: writable (write, read back, delete)"
    except BackupbotError as exc:
        return False, f"storage {settings.storage_url}: {exc}"


def check_scratch(settings: Settings) -> tuple[bool, str]:
    """Restore inputs in the clear and point-in-time copies go to the private scratch folder: said now,
    not during an incident, when it is someone else's, a symlink, open to others, or out of reach of
    the OS user restored clusters run as."""
    import os

    from commands.pg.scratch import check_reachable, ensure_root

    try:
        root = ensure_root(settings)
        for db in settings.databases.values():
            if db.pgbackrest is not None:
                check_reachable(settings, engine_config(settings, db.name, write=False).run_as())
        mode = os.stat(root).st_mode & 0o777
    except (BackupbotError, OSError) as exc:
        return False, f"scratch: {redact(str(exc), settings.secrets())}"
    return True, f"scratch {root}: private to this bot (mode {mode:04o})"


def check_slack(settings: Settings) -> tuple[bool, str]:
    from slack_sdk.errors import SlackApiError

    from bot.server import make_client

    try:
        identity = make_client(settings).auth_test()
        return True, f"slack: auth.test ok as {identity.get('user')} in {identity.get('team')}"
    except SlackApiError as exc:
        return False, f"slack: auth.test failed: {exc.response.get('error')}"
    except Exception as exc:
        return False, f"slack: cannot reach the Web API: {type(exc).__name__}"


def check_channels(settings: Settings) -> list[tuple[bool, str]]:
    """Every configured channel the bot posts to: a private one it is not in would swallow alerts."""
    from slack_sdk.errors import SlackApiError

    from bot.server import make_client

    client, results = make_client(settings), []
    for key in ("alerts", "digest"):
        channel = getattr(settings.channels, key)
        if not channel:
            continue
        try:
            info = client.conversations_info(channel=channel)["channel"]
        except SlackApiError as exc:
            results.append((False, f"slack channels.{key} ({channel}): {exc.response.get('error')}"))
            continue
        name = info.get("name") or channel
        if info.get("is_member"):
            results.append((True, f"slack channels.{key}: the bot is in #{name}"))
        elif not info.get("is_private"):
            results.append((True, f"slack channels.{key}: #{name} is public; the bot posts there (chat:write.public) "
                                  "and joins it before asking for approvals"))
        else:
            results.append((False, f"slack channels.{key}: #{name} is private and the bot is not in it: "
                                   f"invite @backupbot to #{name}"))
    return results


def check_app_token(settings: Settings) -> tuple[bool, str]:
    """Socket Mode's app-level token must carry connections:write: apps.connections.open proves it
    (it hands out a WebSocket URL, which is not opened here)."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    kwargs = {"token": settings.slack_app_token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    try:
        WebClient(**kwargs).apps_connections_open(app_token=settings.slack_app_token)
        return True, "slack app-level token: apps.connections.open ok (connections:write, Socket Mode)"
    except SlackApiError as exc:
        return False, (f"slack app-level token: apps.connections.open failed ({exc.response.get('error')}): "
                       "SLACK_APP_TOKEN must be an app-level token (xapp-…) with the connections:write scope")
    except Exception as exc:
        return False, f"slack app-level token: cannot reach the Web API: {type(exc).__name__}"
