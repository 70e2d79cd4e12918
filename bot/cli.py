"""The `backupbot` command: console, run (serve Slack), check (preflight)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from commands.errors import BackupbotError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backupbot", description="PostgreSQL backups from Slack")
    sub = parser.add_subparsers(dest="action", required=True)
    console = sub.add_parser("console", help="a terminal chat that runs the same commands as Slack")
    console.add_argument("--demo", action="store_true",
                         help="start a throwaway PostgreSQL with sample data; keep backups in a temp folder")
    console.add_argument("--as", dest="user", default=None,
                         help="with --demo: the Slack user id to act as (default U_CONSOLE); outside the demo the "
                              "console acts as your OS user, whom [access] console_operators must name")
    console.add_argument("--config", help="TOML config (default: $BACKUPBOT_CONFIG)")
    run = sub.add_parser("run", help="serve Slack (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)")
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", 3000)))
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--config", help="TOML config (default: $BACKUPBOT_CONFIG)")
    run.add_argument("--health-port", type=int, default=None,
                     help="also serve /healthz and /metrics on this port (for Socket Mode, which has no HTTP server)")
    run.add_argument("--health-host", default="127.0.0.1",
                     help="the address the health port binds (default 127.0.0.1: /metrics is not for the world)")
    run.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("BACKUPBOT_LOG_FORMAT", "text"),
                     help="json: one JSON object per line, redacted like the text logs")
    check = sub.add_parser("check", help="preflight: config, databases, pg_dump, storage, Slack")
    check.add_argument("--config", help="TOML config (default: $BACKUPBOT_CONFIG)")
    init = sub.add_parser("init", help="write a commented starter config and print the Slack app manifest")
    init.add_argument("--config", help="where to write the config (default: $BACKUPBOT_CONFIG or ./backupbot.toml)")
    init.add_argument("--request-url", help="HTTP mode: https://HOST/slack/events (without it: the Socket Mode manifest)")
    init.add_argument("--data-dir", default="/var/lib/backupbot", help="state and local backups in the config")
    init.add_argument("--manifest-only", action="store_true", help="only print the manifest; write no config")
    init.add_argument("--signing-key", metavar="PATH",
                      help="the signing key file (default: beside the config); with an existing config, only create the key")
    catalog = sub.add_parser("catalog", help="the backup catalog: rebuild it from the manifests in storage")
    catalog.add_argument("catalog_action", choices=["rebuild"])
    catalog.add_argument("--verify", action="store_true", help="also check every artifact's sha256 (reads them all)")
    catalog.add_argument("--config", help="TOML config (default: $BACKUPBOT_CONFIG)")
    state = sub.add_parser("state", help="the state database: bring back a copy stored after the bot's jobs")
    state.add_argument("state_action", choices=["restore"])
    state.add_argument("key", nargs="?", help="a copy under _state/ in storage (default: the newest)")
    state.add_argument("--force", action="store_true", help="replace an existing state database")
    state.add_argument("--config", help="TOML config (default: $BACKUPBOT_CONFIG)")
    health = sub.add_parser("health", help="ask a running bot's health port: exit 0 when /healthz (or /readyz) is 200")
    health.add_argument("--port", type=int, default=3001, help="the bot's --health-port (default 3001)")
    health.add_argument("--host", default="127.0.0.1")
    health.add_argument("--ready", action="store_true", help="ask /readyz: also every database and the store")
    args = parser.parse_args(argv)

    from bot.logs import setup_logging

    setup_logging(json_format=getattr(args, "log_format", "text") == "json")
    try:
        if args.action == "console":
            return run_console(args)
        if args.action == "run":
            from bot.server import serve

            return serve(args)
        if args.action == "check":
            from bot.preflight import run_preflight

            return run_preflight(args.config)
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
    except BackupbotError as exc:
        print(f"backupbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


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
        workdir = Path(tempfile.mkdtemp(prefix="backupbot-demo-"))
        with TemporaryCluster() as cluster:
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
            Console(services, user=user, out=sys.stdout, plays_slack_users=True).loop()
        return 0
    if args.user is not None:
        raise BackupbotError(f"--as works only with --demo: outside the demo the console acts as you, OS user "
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
