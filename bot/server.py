"""`backupbot run`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP under waitress (production WSGI)."""

from __future__ import annotations

import logging

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.app import create_app
from bot.slack_reply import TrackedWebClient
from commands.errors import ConfigError
from commands.settings import Settings, load_settings

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
# Slack's requests are a few KB; anything over this is refused before a byte of it is parsed.
MAX_BODY = 1024 * 1024
TOO_LARGE = b"request body too large (at most 1 MiB)\n"


def waitress_options() -> dict:
    """Waitress settings `run` and the tests share. waitress refuses a Content-Length over the limit
    as soon as it has the headers, and a chunked body as soon as it grows past it (413 either way),
    so an oversized body is never buffered."""
    # waitress refuses at `>= max_request_body_size`, so +1 lets exactly MAX_BODY through
    return {"max_request_body_size": MAX_BODY + 1, "threads": 32, "ident": "backupbot"}


class BodyTooLarge(Exception):
    pass


class LimitedInput:
    """wsgi.input that refuses to hand out more than `limit` bytes, for servers that pass a chunked
    body through unread (wsgi.input_terminated) and leave the length unknown."""

    def __init__(self, stream, limit: int):
        self.stream = stream
        self.left = limit

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise BodyTooLarge()
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.left + 1:
            size = self.left + 1
        return self._take(self.stream.read(size))

    def readline(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.left + 1:
            size = self.left + 1
        return self._take(self.stream.readline(size))

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


def _content_length(environ) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def make_client(settings: Settings) -> WebClient:
    kwargs = {"token": settings.slack_bot_token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return TrackedWebClient(**kwargs)  # with rate-limit and connection retry handlers


def make_wsgi_app(bolt_app):
    """Bolt's WSGI adapter at /slack/events, plus /healthz for load balancers."""
    handler = SlackRequestHandler(bolt_app, path=SLACK_PATH)

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        length = _content_length(environ)
        if length is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad Content-Length\n"]
        if length > MAX_BODY:
            return _too_large(start_response)
        if not length and environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = LimitedInput(environ["wsgi.input"], MAX_BODY)
        try:
            return handler(environ, start_response)
        except BodyTooLarge:
            return _too_large(start_response)
        except ValueError:
            # Bolt parses the body before checking the signature; a body it cannot parse is
            # refused here instead of surfacing as a 500 with a traceback.
            log.info("refused a request whose body could not be parsed")
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"malformed request\n"]

    return wsgi


def _too_large(start_response):
    log.info("refused a request body over %s bytes", MAX_BODY)
    start_response("413 Payload Too Large", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [TOO_LARGE]


def serve(args) -> int:
    settings = load_settings(args.config)
    if not settings.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
    if not settings.slack_app_token and not settings.slack_signing_secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set (needed to verify requests in HTTP mode)")
    client = make_client(settings)
    app = create_app(settings, client)
    from bot.slack_reply import SlackReply
    from bot.startup import report_interrupted_jobs

    report_interrupted_jobs(app.services, SlackReply(client))
    scheduler = start_scheduler(app.services, client)
    try:
        if settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("serving Slack over Socket Mode")
            SocketModeHandler(app, settings.slack_app_token).start()
        else:
            import waitress

            log.info("serving Slack over HTTP on %s:%s%s", args.host, args.port, SLACK_PATH)
            waitress.serve(make_wsgi_app(app), host=args.host, port=args.port, **waitress_options())
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
    return 0


def start_scheduler(services, client):
    try:
        from bot.scheduler import build_scheduler
    except ImportError:
        return None
    from bot.slack_reply import SlackReply

    scheduler = build_scheduler(services, lambda: SlackReply(client))
    scheduler.start()
    return scheduler
