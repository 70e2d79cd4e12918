"""`POST /checkpoint` and what `backupbot backup DB --wait [--note TEXT]` (bot/cli.py) prints: a deploy
pipeline's checkpoint.

Both run commands/backup/checkpoint.py; the message goes to Slack (where scheduled backups post)
when a bot token is configured. The CLI runs beside a running bot on the same state database: it
takes no instance lock (it never touches another process's jobs) and the job claim in the state
database keeps it from racing another backup of the same database. It acts as its OS user, whom
`[access] console_operators` must name, as the console does. The HTTP endpoint is for pipelines
that cannot run the CLI: it answers only to `[health] checkpoint_token_env`'s bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging

from commands.backup.checkpoint import Checkpoint, take_checkpoint
from commands.chat.context import Actor

log = logging.getLogger(__name__)
MAX_REQUEST = 4096  # {"database": ..., "note": ...}


def report(result: Checkpoint, out, err) -> int:
    """Exit 0 printing the backup's id once it is stored and verified; 1 with the reason otherwise."""
    if not result.ok:
        job = f" (backup #{result.backup_id})" if result.backup_id else ""
        print(f"backupbot: the checkpoint backup of {result.database} failed{job}: {result.reason}", file=err)
        return 1
    print(f"Backup #{result.backup_id} of {result.database} is stored and verified (sha256 {result.sha256}).", file=err)
    print(result.backup_id, file=out)
    return 0


def checkpoint_app(services, client=lambda: None):
    """WSGI for `POST /checkpoint` with `Authorization: Bearer TOKEN` and a JSON body
    `{"database": "main", "note": "before 4.2"}`; it answers once the backup is verified:
    200 {"ok": true, "backup_id": N, "sha256": ...}, or 422 {"ok": false, "reason": ...}."""
    token = services.settings.health.checkpoint_token

    def answer(start_response, status: str, body: dict, extra=()):
        start_response(status, [("Content-Type", "application/json"), *extra])
        return [json.dumps(body).encode() + b"\n"]

    def app(environ, start_response):
        if token is None:
            return answer(start_response, "404 Not Found", {"ok": False, "reason": "not found"})
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            log.info("refused /checkpoint without the right bearer token")
            return answer(start_response, "401 Unauthorized",
                          {"ok": False, "reason": "/checkpoint needs Authorization: Bearer TOKEN "
                                                  "([health] checkpoint_token_env)"},
                          [("WWW-Authenticate", 'Bearer realm="checkpoint"')])
        if environ.get("REQUEST_METHOD") != "POST":
            return answer(start_response, "405 Method Not Allowed", {"ok": False, "reason": "use POST"},
                          [("Allow", "POST")])
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_REQUEST:
            return answer(start_response, "400 Bad Request",
                          {"ok": False, "reason": f'expected a JSON body of at most {MAX_REQUEST} bytes: '
                                                  '{"database": "main", "note": "before release 4.2"}'})
        try:
            body = json.loads(environ["wsgi.input"].read(length))
        except ValueError:
            body = None
        database = body.get("database") if isinstance(body, dict) else None
        note = body.get("note") if isinstance(body, dict) else None
        if not isinstance(database, str) or not (note is None or isinstance(note, str)):
            return answer(start_response, "400 Bad Request",
                          {"ok": False, "reason": 'expected {"database": "NAME", "note": "TEXT"} (note optional)'})
        reply = None
        if client() is not None:
            from bot.slack_reply import SlackReply

            reply = SlackReply(client())
        actor = Actor(user="pipeline", source="http")
        result = take_checkpoint(services, database, note, actor, reply, authorized=True)
        return answer(start_response, "200 OK" if result.ok else "422 Unprocessable Entity", result.as_dict())

    return app
