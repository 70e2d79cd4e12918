"""`backupbot run`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP under waitress (production WSGI)."""

from __future__ import annotations

import logging

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.app import create_app
from commands.errors import ConfigError
from commands.settings import Settings, load_settings

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"


def make_client(settings: Settings) -> WebClient:
    kwargs = {"token": settings.slack_bot_token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return WebClient(**kwargs)


def make_wsgi_app(bolt_app):
    """Bolt's WSGI adapter at /slack/events, plus /healthz for load balancers."""
    handler = SlackRequestHandler(bolt_app, path=SLACK_PATH)

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        try:
            return handler(environ, start_response)
        except ValueError:
            # Bolt parses the body before checking the signature; a body it cannot parse is
            # refused here instead of surfacing as a 500 with a traceback.
            log.info("refused a request whose body could not be parsed")
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"malformed request\n"]

    return wsgi


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
            waitress.serve(make_wsgi_app(app), host=args.host, port=args.port, threads=32, ident="backupbot")
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
