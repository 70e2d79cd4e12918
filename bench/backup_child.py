"""One bot backup in a fresh process, so its peak RSS is the bot's alone. Prints JSON."""

from __future__ import annotations

import json
import resource
import sys
import time

from commands.backup.command import BackupRequest, execute_backup
from commands.chat.context import Actor, build_services
from commands.chat.reply import Notice
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


def main() -> None:
    dsn, fmt, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = parse_settings({"state": {"path": f"{workdir}/state.db"}, "storage": {"url": f"file://{workdir}/backups"}},
                              {"DATABASE_URL": dsn})
    services = build_services(settings, progress_every=3600)
    started = time.monotonic()
    status = execute_backup(services, BackupRequest(database="main", format=fmt), Actor("UBENCH"), QuietReply())
    seconds = time.monotonic() - started
    if status.state != "succeeded":
        print(Notice(status.error or "failed").text(), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"seconds": seconds, "size": status.record.size, "raw_size": status.record.raw_size,
                      "key": status.record.key, "backup_id": status.record.id,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
