"""`backupbot run`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP under waitress (production WSGI)."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import threading

from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.app import create_app
from bot.health_checks import BotHealth
from bot.shutdown import Shutdown
from bot.slack_reply import TrackedWebClient
from commands.errors import ConfigError
from commands.settings import Settings, load_settings
from state.statuses import JobStatus

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


# ---------------------------------------------------------------- /healthz and /metrics


def metrics_registry(health: BotHealth):
    """A prometheus-client registry whose collector reads the state database on every scrape."""
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

    from state import metrics as state_metrics

    class StateCollector:
        def collect(self):
            store = health.services.store
            backup_time = GaugeMetricFamily("backupbot_last_backup_timestamp_seconds",
                                            "When the newest full backup of the database was taken", labels=["database"])
            backup_size = GaugeMetricFamily("backupbot_last_backup_size_bytes",
                                            "Stored size of the newest full backup", labels=["database"])
            backup_duration = GaugeMetricFamily("backupbot_last_backup_duration_seconds",
                                                "How long the newest full backup took", labels=["database"])
            for b in state_metrics.last_full_backups(store):
                backup_time.add_metric([b.database], b.created_at.timestamp())
                backup_size.add_metric([b.database], b.size)
                if b.duration_s is not None:
                    backup_duration.add_metric([b.database], b.duration_s)
            drill_time = GaugeMetricFamily("backupbot_last_verified_drill_timestamp_seconds",
                                           "When a backup of the database was last verified by a restore drill",
                                           labels=["database"])
            drill_rto = GaugeMetricFamily("backupbot_last_drill_restore_seconds",
                                          "Restore time measured by the last verified drill (the RTO)", labels=["database"])
            for d in state_metrics.last_verified_drills(store):
                drill_time.add_metric([d.database], d.verified_at.timestamp())
                if d.restore_seconds is not None:
                    drill_rto.add_metric([d.database], d.restore_seconds)
            failures = CounterMetricFamily("backupbot_failures", "Failed jobs and scheduled runs, by kind", labels=["kind"])
            for kind, count in sorted(state_metrics.failures_by_kind(store).items()):
                failures.add_metric([kind], count)
            pending = GaugeMetricFamily("backupbot_pending_approvals", "Restore requests waiting for approval")
            pending.add_metric([], state_metrics.pending_approvals(store))
            jobs = GaugeMetricFamily("backupbot_jobs", "Backups, restores and drills running or queued", labels=["state"])
            jobs.add_metric([JobStatus.RUNNING.value], sum(state_metrics.running_jobs(store).values()))
            slots = getattr(health.services, "job_slots", None)
            waiting = getattr(slots, "waiting", None)
            jobs.add_metric(["queued"], len(waiting()) if callable(waiting) else 0)
            healthy = GaugeMetricFamily("backupbot_healthy", "1 when /healthz answers 200")
            healthy.add_metric([], 0 if health.problems() else 1)
            yield from (backup_time, backup_size, backup_duration, drill_time, drill_rto, failures, pending, jobs, healthy)
            from bot.ops_metrics import alerting_metrics  # build, failures by database, schedules, RPO

            yield from alerting_metrics(health.services)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector())
    return registry


def metrics_refusal(environ, token: str | None, public: bool) -> tuple[str, bytes] | None:
    """Why this /metrics request gets nothing (status line, body), or None to serve it. On the public
    Slack port /metrics does not exist without a configured token; with one, every port asks for it."""
    if token is None:
        return ("404 Not Found", b"not found\n") if public else None
    scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    log.info("refused /metrics without the right bearer token")
    return "401 Unauthorized", b"/metrics needs Authorization: Bearer TOKEN ([health] metrics_token_env)\n"


def make_ops_app(health: BotHealth, fallback=None, public: bool = False):
    """/healthz, /readyz and /metrics; anything else goes to `fallback` (or 404). `public`: the port Slack
    reaches from the internet, where /metrics answers only to the configured bearer token and /readyz
    (which connects to every database) is not served."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from bot.checkpoint import checkpoint_app

    registry = metrics_registry(health)
    token = health.services.settings.health.metrics_token
    checkpoint = checkpoint_app(health.services, lambda: health.slack_client)

    def ops(environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/healthz" or path == "/readyz" and not public:  # readiness probes databases: not for the world
            try:
                problems = health.problems() if path == "/healthz" else health.ready_problems()
            except Exception as exc:  # a health check must answer, never raise
                problems = [f"health check failed: {type(exc).__name__}"]
            if problems:
                log.warning("unhealthy: %s", "; ".join(problems))
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [("unhealthy: " + "; ".join(problems) + "\n").encode()]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/metrics":
            refused = metrics_refusal(environ, token, public)
            if refused is not None:
                extra = [("WWW-Authenticate", 'Bearer realm="metrics"')] if refused[0].startswith("401") else []
                start_response(refused[0], [("Content-Type", "text/plain"), *extra])
                return [refused[1]]
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(registry)]
        if path == "/checkpoint":  # a pipeline's backup, with its own bearer token
            return checkpoint(environ, start_response)
        if fallback is not None:
            return fallback(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return ops


def serve_health_port(health: BotHealth, host: str, port: int):
    """A small HTTP listener with /healthz and /metrics (Socket Mode has no HTTP server of its own).
    `backupbot run` binds it to 127.0.0.1 unless --health-host says otherwise."""
    import waitress.server

    if health.services.settings.health.metrics_token is None and not _loopback(host):
        log.warning("the health port on %s serves /metrics to anyone who reaches it: set [health] "
                    "metrics_token_env, or keep it on 127.0.0.1", host)

    server = waitress.server.create_server(make_ops_app(health), host=host, port=port, threads=2,
                                           max_request_body_size=MAX_BODY + 1, ident="backupbot")
    thread = threading.Thread(target=_run_quietly, args=(server,), name="health-port", daemon=True)
    thread.start()
    log.info("serving /healthz and /metrics on %s:%s", host, server.effective_port)
    return server


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _run_quietly(server) -> None:
    try:
        server.run()
    except OSError:  # closed under select()
        pass


def make_wsgi_app(bolt_app, health: BotHealth | None = None):
    """Bolt's WSGI adapter at /slack/events, plus /healthz, and /metrics for the bearer token only
    (this port faces the internet). `wsgi.health` is the check (tests and `serve` attach the scheduler to it)."""
    handler = SlackRequestHandler(bolt_app, path=SLACK_PATH)
    answering = getattr(bolt_app, "ack_first", None)
    answering = answering.answering if answering is not None else contextlib.nullcontext
    if health is None:
        health = BotHealth(bolt_app.services, getattr(bolt_app.client, "call_status", None))
    health.slack_client = health.slack_client or bolt_app.client

    def slack(environ, start_response):
        length = _content_length(environ)
        if length is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad Content-Length\n"]
        if length > MAX_BODY:
            return _too_large(start_response)
        if not length and environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = LimitedInput(environ["wsgi.input"], MAX_BODY)
        try:
            with answering():  # listeners' work waits for the answers in flight (bot/ack_first.py)
                return handler(environ, start_response)
        except BodyTooLarge:
            return _too_large(start_response)
        except ValueError:
            # Bolt parses the body before checking the signature; a body it cannot parse is
            # refused here instead of surfacing as a 500 with a traceback.
            log.info("refused a request whose body could not be parsed")
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"malformed request\n"]

    wsgi = make_ops_app(health, fallback=slack, public=True)
    wsgi.health = health
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

    shutdown = Shutdown(app.services)
    shutdown.install()  # SIGTERM/SIGINT: stop taking commands, drain the running jobs (bot/shutdown.py)
    report_interrupted_jobs(app.services, SlackReply(client))
    scheduler = start_scheduler(app.services, client)
    health = BotHealth(app.services, client.call_status, scheduler, require_scheduler=True)
    health.slack_client = client
    if scheduler is not None:
        shutdown.on_stop.append(lambda: scheduler.running and scheduler.shutdown(wait=False))
    health_server = None
    if getattr(args, "health_port", None) is not None:
        health_server = serve_health_port(health, getattr(args, "health_host", "127.0.0.1"), args.health_port)
    try:
        if settings.slack_app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            from bot.health_checks import watch_socket_mode

            if health_server is None:
                log.warning("Socket Mode without --health-port: nothing answers /healthz or /metrics")
            log.info("serving Slack over Socket Mode")
            handler = SocketModeHandler(app, settings.slack_app_token)
            health.connection = watch_socket_mode(handler.client, settings.health.socket_mode_grace_seconds)
            shutdown.on_stop.append(handler.close)
            handler.connect()
        else:
            import waitress.server

            log.info("serving Slack over HTTP on %s:%s%s", args.host, args.port, SLACK_PATH)
            server = waitress.server.create_server(make_wsgi_app(app, health), host=args.host, port=args.port,
                                                   **waitress_options())
            shutdown.on_stop.append(server.close)
            threading.Thread(target=_run_quietly, args=(server,), name="slack-http", daemon=True).start()
        shutdown.wait()
        shutdown.stop()
    finally:
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
        if health_server is not None:
            health_server.close()
        app.services.close()
    log.info("stopped")
    return 0


def start_scheduler(services, client):
    try:
        from bot.scheduler import build_scheduler
    except ImportError:
        return None
    scheduler = build_scheduler(services, scheduler_reply_factory(services, client))
    scheduler.start()
    return scheduler


def scheduler_reply_factory(services, client):
    """Scheduled jobs speak Slack, and every alert they post also goes to `[alerts] webhook_url`."""
    from bot.slack_reply import SlackReply
    from commands.chat.reply import AlertingReply

    settings = services.settings
    return lambda: AlertingReply(SlackReply(client), settings.channels.alerts, settings.alerts.webhook_url,
                                 settings.secrets())
