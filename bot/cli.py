"""The `backupbot` command: console, run (serve Slack), check (preflight)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bot.ops_metrics import build_version as version
from commands.errors import BackupbotError, UsageError
from commands.settings import CONFIG_SEARCH

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def port_number(text: str) -> int:
    """A TCP port, for --port, --health-port and $PORT: a clear usage error, never a traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("BACKUPBOT_LOG_FORMAT", "text"),
                        help="json: one JSON object per line, redacted like the text logs, job fields as keys")
    common.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=os.environ.get("BACKUPBOT_LOG_LEVEL", "INFO").upper(), help="default INFO")
    parser = argparse.ArgumentParser(prog="backupbot", description="PostgreSQL backups from Slack")
    parser.add_argument("--version", action="version", version=f"backupbot {version()}")
    sub = parser.add_subparsers(dest="action", required=True)
    config_help = f"TOML config (default: $BACKUPBOT_CONFIG, then {', then '.join(CONFIG_SEARCH)})"
    console = sub.add_parser("console", parents=[common], help="a terminal chat that runs the same commands as Slack")
    console.add_argument("--demo", action="store_true",
                         help="start a throwaway PostgreSQL with sample data; keep backups in a temp folder")
    console.add_argument("--as", dest="user", default=None,
                         help="with --demo: the Slack user id to act as (default U_CONSOLE); outside the demo the "
                              "console acts as your OS user, whom [access] console_operators must name")
    console.add_argument("--config", help=config_help)
    run = sub.add_parser("run", parents=[common],
                         help="serve Slack (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)")
    run.add_argument("--port", type=port_number, default=None, help="HTTP port (default: $PORT, else 3000)")
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--config", help=config_help)
    run.add_argument("--health-port", type=port_number, default=None,
                     help="also serve /healthz and /metrics on this port (for Socket Mode, which has no HTTP server)")
    run.add_argument("--health-host", default="127.0.0.1",
                     help="the address the health port binds (default 127.0.0.1: /metrics is not for the world)")
    check = sub.add_parser("check", parents=[common], help="preflight: config, databases, pg_dump, storage, Slack")
    check.add_argument("--config", help=config_help)
    check.add_argument("--json", action="store_true", help="one JSON document (for monitoring) instead of lines")
    init = sub.add_parser("init", parents=[common],
                          help="write a commented starter config and print the Slack app manifest")
    init.add_argument("--config", help="where to write the config (default: $BACKUPBOT_CONFIG or ./backupbot.toml)")
    init.add_argument("--request-url", help="HTTP mode: https://HOST/slack/events (without it: the Socket Mode manifest)")
    init.add_argument("--data-dir", default="/var/lib/backupbot", help="state and local backups in the config")
    init.add_argument("--manifest-only", action="store_true", help="only print the manifest; write no config")
    init.add_argument("--signing-key", metavar="PATH",
                      help="the signing key file (default: beside the config); with an existing config, only create the key")
    init.add_argument("--pgbackrest-remote", metavar="DB",
                      help="print the database host's pgBackRest config (TLS) for DB's pg_host; write no starter config")
    catalog = sub.add_parser("catalog", parents=[common], help="the backup catalog: rebuild it from the manifests in storage")
    catalog.add_argument("catalog_action", choices=["rebuild"])
    catalog.add_argument("--verify", action="store_true", help="also check every artifact's sha256 (reads them all)")
    catalog.add_argument("--config", help=config_help)
    state = sub.add_parser("state", parents=[common],
                           help="the state database: bring back a copy stored after the bot's jobs")
    state.add_argument("state_action", choices=["restore"])
    state.add_argument("key", nargs="?", help="a copy under _state/ in storage (default: the newest)")
    state.add_argument("--force", action="store_true", help="replace an existing state database")
    state.add_argument("--config", help=config_help)
    backup = sub.add_parser("backup", parents=[common],
                            help="a checkpoint for deploy pipelines: back up DB like /backup and wait until verified")
    backup.add_argument("database", help="a configured database")
    backup.add_argument("--wait", action="store_true", required=True,
                        help="wait until the backup is stored and its sha256 re-read from storage matches")
    backup.add_argument("--note", help="kept with the backup, e.g. 'before release 4.2'")
    backup.add_argument("--config", help=config_help)
    health = sub.add_parser("health", parents=[common],
                            help="ask a running bot's health port: exit 0 when /healthz (or /readyz) is 200")
    health.add_argument("--port", type=port_number, default=3001, help="the bot's --health-port (default 3001)")
    health.add_argument("--host", default="127.0.0.1")
    health.add_argument("--ready", action="store_true", help="ask /readyz: also every database and the store")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a failure (the message says what to fix), 2 usage (bad flags or arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "run" and args.port is None:
        try:
            args.port = port_number(os.environ.get("PORT", "3000"))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"$PORT: {exc}")

    from bot.logs import setup_logging

    setup_logging(level=args.log_level, json_format=args.log_format == "json")
    try:
        if args.action == "console":
            return run_console(args)
        if args.action == "run":
            from bot.server import serve

            return serve(args)
        if args.action == "check":
            from bot.preflight import run_preflight

            return run_preflight(args.config, as_json=args.json)
        if args.action == "init" and args.pgbackrest_remote:
            from bot.init_pgbackrest import run_pgbackrest_remote

            return run_pgbackrest_remote(args)
        if args.action == "init":
            from bot.init import run_init

            return run_init(args)
        if args.action == "catalog":
            from bot.recovery import run_catalog_rebuild

            return run_catalog_rebuild(args.config, args.verify)
        if args.action == "health":
            from bot.health_checks import ask_health_port

            return ask_health_port(args.host, args.port, "/readyz" if args.ready else "/healthz")
        if args.action == "state":
            from bot.recovery import run_state_restore

            return run_state_restore(args.config, args.key, args.force)
        if args.action == "backup":
            return run_checkpoint(args.config, args.database, args.note)
    except UsageError as exc:
        print(f"backupbot: {exc}", file=sys.stderr)
        return 2
    except BackupbotError as exc:
        print(f"backupbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run_checkpoint(config: str | None, database: str, note: str | None) -> int:
    """`backupbot backup DB --wait`: beside a running bot on the same state database, so it takes no
    instance lock (it touches no other process's jobs; the job claim keeps it from racing a backup of
    the same database). It acts as its OS user, whom [access] console_operators must name."""
    from bot.checkpoint import report
    from bot.console import os_account
    from bot.logs import register_secrets
    from commands.backup.checkpoint import take_checkpoint
    from commands.chat.context import CONSOLE, Actor, build_services
    from commands.settings import load_settings

    settings = load_settings(config)
    register_secrets(settings.secrets())
    reply = None
    if settings.slack_bot_token:  # posted like any backup; without a token nothing is posted
        from bot.server import make_client
        from bot.slack_reply import SlackReply

        reply = SlackReply(make_client(settings))
    user = os_account()
    actor = Actor(user=user, source=CONSOLE, os_user=user, slack_identity=False)
    return report(take_checkpoint(build_services(settings), database, note, actor, reply), sys.stdout, sys.stderr)


def run_console(args) -> int:
    """Only the demo plays Slack users: outside it the console is the OS account running it (bot/console.py)."""
    from bot.console import CONSOLE_USER, Console, ConsoleReply, os_account, with_console_operator
    from bot.shutdown import interrupt_on_signals
    from bot.startup import report_interrupted_jobs, start_services
    from commands.settings import load_settings

    if args.demo:
        from commands.pg.cluster import TemporaryCluster
        from commands.pg.sample_data import load_sample_database

        print("Starting a throwaway PostgreSQL with the sample database…", file=sys.stderr)
        # the demo's backups, state and key go with it: nothing is left in the temp folder
        with tempfile.TemporaryDirectory(prefix="backupbot-demo-") as tmp, TemporaryCluster() as cluster:
            workdir = Path(tmp)
            dsn = cluster.create_database("app")
            load_sample_database(dsn)
            env = {"DATABASE_URL": dsn}
            from commands.settings import parse_settings
            from commands.signing import write_key_file

            settings = parse_settings(
                {"state": {"path": str(workdir / "backupbot.db")},
                 "storage": {"url": f"file://{workdir / 'backups'}",
                             "signing_key_files": [str(write_key_file(workdir / "signing.key").source)]},
                 "access": {"approvers": ["U0APPROVER"]}},
                env,
            )
            user = args.user or CONSOLE_USER
            settings = with_console_operator(settings, user)  # access fails closed: the demo's user operates
            print(f"Backups go to {workdir / 'backups'}; the sample database is 'main'.", file=sys.stderr)
            services = start_services(settings)
            interrupt_on_signals(services)  # SIGTERM, like Ctrl-C: the throwaway cluster is still removed
            try:
                Console(services, user=user, out=sys.stdout, plays_slack_users=True,
                        files_dir=workdir / "files").loop()
            finally:
                services.close()
        return 0
    if args.user is not None:
        raise UsageError(f"--as works only with --demo: outside the demo the console acts as you, OS user "
                         f"{os_account()}, whom [access] console_operators must name (approvals come from "
                         "approvers' reactions in Slack)")
    settings = load_settings(args.config)
    services = start_services(settings)
    interrupt_on_signals(services)  # SIGTERM, like Ctrl-C, records the running job interrupted
    console = Console(services, out=sys.stdout)
    report_interrupted_jobs(services, ConsoleReply(console, console.actor()))
    console.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
