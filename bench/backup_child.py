"""One bot backup (or, with --verify, one drill of the latest backup) in a fresh process, so its peak
RSS is the bot's alone. Prints JSON.

    python -m bench.backup_child DSN FORMAT WORKDIR [--encrypt-to AGE1…] [--identity-file KEY] [--verify]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from commands.backup.command import BackupRequest, execute_backup
from commands.chat.context import Actor, build_services
from commands.chat.reply import Notice
from commands.restore.drill import execute_verify, parse_verify
from commands.settings import parse_settings


class QuietReply:
    def post(self, message, channel=None):
        return "m1"

    def update(self, message_id, message):
        pass

    def ephemeral(self, message):
        print(message.text(), file=sys.stderr)

    def thread(self, message_id, message):
        return None

    def react(self, message_id, emoji):
        pass


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("format")
    parser.add_argument("workdir")
    parser.add_argument("--encrypt-to", help="[storage] encrypt_to: an age public key")
    parser.add_argument("--identity-file", help="[storage] identity_file: the age private key file")
    parser.add_argument("--verify", action="store_true", help="drill the latest backup (/backup verify latest)")
    args = parser.parse_args()
    dsn, fmt, workdir = args.dsn, args.format, args.workdir
    storage = {"url": f"file://{workdir}/backups"}
    if args.encrypt_to:
        storage["encrypt_to"] = [args.encrypt_to]
    if args.identity_file:
        storage["identity_file"] = args.identity_file
    settings = parse_settings({"state": {"path": f"{workdir}/state.db"}, "storage": storage}, {"DATABASE_URL": dsn})
    services = build_services(settings, progress_every=3600)
    if args.verify:
        started = time.monotonic()
        drill = execute_verify(services, parse_verify("latest", services), Actor("UBENCH"), QuietReply())
        seconds = time.monotonic() - started
        if not drill.ok:
            print(drill.text(), file=sys.stderr)
            sys.exit(1)
        print(json.dumps({"seconds": seconds, "restore_seconds": drill.seconds, "backup_id": drill.backup_id,
                          "max_rss_mb": _max_rss_mb()}))
        return
    started = time.monotonic()
    status = execute_backup(services, BackupRequest(database="main", format=fmt), Actor("UBENCH"), QuietReply())
    seconds = time.monotonic() - started
    if status.state != "succeeded":
        print(Notice(status.error or "failed").text(), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"seconds": seconds, "size": status.record.size, "raw_size": status.record.raw_size,
                      "key": status.record.key, "backup_id": status.record.id, "encryption": status.record.encryption,
                      "max_rss_mb": _max_rss_mb()}))


if __name__ == "__main__":
    main()
