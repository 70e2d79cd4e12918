"""Slack for tests, the way bolt-python tests itself: the real Bolt app served over HTTP, fed
signed requests, with its Web API client pointed at a local fake that records every call.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import waitress.server

logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # bursts are the point of some tests

SIGNING_SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-bot-token-0123456789"


class FakeSlackWebAPI:
    """Answers Slack Web API methods like Slack would and records each call's method and arguments."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.ts = itertools.count(1)
        self.usergroups: dict[str, list[str]] = {}
        self.not_in_channels: set[str] = set()
        self.history: dict[str, dict] = {}  # "C:ts" -> message, for conversations.history
        self.uploads: dict[str, bytes] = {}
        # failure modes: method -> Slack error answered to every call of it (e.g. chat.update -> "cant_update_message")
        self.fail_methods: dict[str, str] = {}
        # method -> how many of its next calls get HTTP 429 with Retry-After: retry_after seconds
        self.rate_limited: dict[str, int] = {}
        self.retry_after = 1
        # conversations.info: channel id -> {"name", "is_private", "is_member"}; unknown ids are public and joined
        self.channels: dict[str, dict] = {}
        self.socket_mode_url = "wss://wss.invalid/link/?ticket=test"  # a test's FakeSocketMode (tests/fix_socket_mode.py)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.strip("/")
                if path.startswith("upload/"):
                    fake.uploads[path.split("/", 1)[1]] = raw
                    fake.record("upload", {"file_id": path.split("/", 1)[1], "size": len(raw)})
                    return self._send({"ok": True}, raw_text=True)
                if "json" in (self.headers.get("Content-Type") or ""):
                    args = json.loads(raw or b"{}")
                else:
                    args = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                method = path.split("/")[-1] if not path.startswith("response/") else "response_url"
                args["_auth"] = self.headers.get("Authorization", "")
                args["_at"] = time.monotonic()
                fake.record(method, args)
                if fake.take_rate_limit(method):
                    return self._send({"ok": False, "error": "ratelimited"}, status=429,
                                      headers={"Retry-After": str(fake.retry_after)})
                self._send(fake.answer(method, args))

            do_GET = do_POST

            def _send(self, payload, raw_text=False, status=200, headers=None):
                body = b"OK" if raw_text else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain" if raw_text else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, method: str, args: dict) -> None:
        with self.lock:
            self.calls.append((method, args))

    def take_rate_limit(self, method: str) -> bool:
        with self.lock:
            left = self.rate_limited.get(method, 0)
            if left <= 0:
                return False
            self.rate_limited[method] = left - 1
            return True

    def channel_info(self, channel: str) -> dict:
        info = {"id": channel, "name": channel.lower(), "is_private": False, "is_member": True}
        info.update(self.channels.get(channel, {}))
        if channel in self.not_in_channels:
            info["is_member"] = False
        return info

    def answer(self, method: str, args: dict) -> dict:
        if method in self.fail_methods:
            return {"ok": False, "error": self.fail_methods[method]}
        if method == "conversations.info":
            if args.get("channel") in self.channels and self.channels[args["channel"]].get("missing"):
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": self.channel_info(args.get("channel"))}
        if method == "conversations.join":
            info = self.channel_info(args.get("channel"))
            if info["is_private"]:
                return {"ok": False, "error": "method_not_supported_for_channel_type"}
            self.channels.setdefault(args["channel"], {})["is_member"] = True
            self.not_in_channels.discard(args["channel"])
            return {"ok": True, "channel": self.channel_info(args["channel"])}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.socket_mode_url}
        if method == "auth.test":
            return {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "backupbot",
                    "team_id": "T0TEST", "user_id": "U0BOT", "bot_id": "B0BOT"}
        if method == "chat.postMessage":
            channel = args.get("channel")
            if channel in self.not_in_channels:
                return {"ok": False, "error": "not_in_channel"}
            ts = f"1700000000.{next(self.ts):06d}"
            self.history[f"{channel}:{ts}"] = {"text": args.get("text"), "user": "U0BOT", "ts": ts}
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text"), "ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}
        if method == "chat.postEphemeral":
            if args.get("channel") in self.not_in_channels:
                return {"ok": False, "error": "not_in_channel"}
            return {"ok": True, "message_ts": f"1700000000.{next(self.ts):06d}"}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.usergroups.get(args.get("usergroup"), [])}
        if method == "conversations.history":
            found = self.history.get(f"{args.get('channel')}:{args.get('latest')}")
            return {"ok": True, "messages": [found] if found else []}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self.ts):06d}"
            return {"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            files = json.loads(files) if isinstance(files, str) else files or []
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
        return {"ok": True}

    # -- what tests read
    def said(self, method: str | None = None) -> list[dict]:
        with self.lock:
            return [args for m, args in self.calls if method is None or m == method]

    def texts(self) -> list[str]:
        """Every text the bot sent to Slack: messages, updates, ephemerals, response_url posts."""
        out = []
        for method, args in list(self.calls):
            if method in ("chat.postMessage", "chat.update", "chat.postEphemeral", "response_url"):
                out.append(str(args.get("text", "")))
                out.append(json.dumps(args.get("blocks", "")))
        return out

    def all_bodies(self) -> str:
        return json.dumps([c for c in self.calls], default=str)

    def wait_for(self, predicate, timeout: float = 60, what: str = "the bot's answer"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; the bot said: {self.texts()[-10:]}")

    def wait_for_text(self, needle: str, timeout: float = 60, method: str | None = None) -> dict:
        def find(api):
            for m, args in list(api.calls):
                if (method is None or m == method) and needle in str(args.get("text", "")):
                    return args
            return None

        return self.wait_for(find, timeout, f"a message containing {needle!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sign(body: bytes, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{timestamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


class SlackSender:
    """Sends what Slack would send to the bot's /slack/events, signed."""

    def __init__(self, url: str, fake: FakeSlackWebAPI):
        self.url = url
        self.fake = fake
        self.events = itertools.count(1)

    def post(self, body: bytes, content_type: str, headers: dict | None = None, signed: bool = True,
             timestamp: int | None = None) -> tuple[int, bytes, float]:
        all_headers = {"Content-Type": content_type}
        if signed:
            all_headers.update(sign(body, timestamp))
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url, data=body, headers=all_headers, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), time.monotonic() - started
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), time.monotonic() - started

    def command_body(self, command: str, text: str = "", user: str = "U0OPS", channel: str = "C0OPS") -> bytes:
        return urllib.parse.urlencode({
            "token": "legacy", "team_id": "T0TEST", "channel_id": channel, "channel_name": "ops",
            "user_id": user, "user_name": user.lower(), "command": command, "text": text,
            "response_url": f"http://127.0.0.1:{self.fake.port}/response/{next(self.events)}",
            "trigger_id": f"trigger-{next(self.events)}",
        }).encode()

    def command(self, command: str, text: str = "", user: str = "U0OPS", channel: str = "C0OPS", **kwargs):
        """A slash command, as Slack posts it. Returns (status, body, seconds to acknowledgement)."""
        return self.post(self.command_body(command, text, user, channel), "application/x-www-form-urlencoded", **kwargs)

    def event(self, event: dict, event_id: str | None = None, retry_num: int | None = None, **kwargs):
        event_id = event_id or f"Ev{next(self.events):08d}"
        body = json.dumps({
            "token": "legacy", "team_id": "T0TEST", "api_app_id": "A0TEST", "type": "event_callback",
            "event_id": event_id, "event_time": int(time.time()), "event": event,
        }).encode()
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return self.post(body, "application/json", headers=headers, **kwargs)

    def reaction(self, user: str, emoji: str, message_id: str, added: bool = True, item_user: str = "U0BOT", **kwargs):
        channel, ts = message_id.split(":", 1)
        event = {"type": "reaction_added" if added else "reaction_removed", "user": user, "reaction": emoji,
                 "item_user": item_user, "item": {"type": "message", "channel": channel, "ts": ts},
                 "event_ts": f"{time.time():.6f}"}
        return self.event(event, **kwargs)


class BotServer:
    """The real Bolt app under waitress on 127.0.0.1:0, as `backupbot run` serves it."""

    def __init__(self, settings, fake: FakeSlackWebAPI, services=None):
        from bot.app import create_app
        from bot.server import make_client, make_wsgi_app, waitress_options

        self.client = make_client(settings)
        self.app = create_app(settings, self.client, services)
        self.services = self.app.services
        wsgi = make_wsgi_app(self.app)
        self.health = wsgi.health  # /healthz's checks: tests attach a scheduler or break the state database
        self.server = waitress.server.create_server(wsgi, host="127.0.0.1", port=0, **waitress_options())
        self.port = self.server.effective_port
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.slack = SlackSender(self.url, fake)

    def _serve(self) -> None:
        try:
            self.server.run()
        except OSError:  # the socket was closed under select() by close()
            pass

    def close(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown()
        self.services.close()  # the instance lock: a restarted bot may take the state database


@pytest.fixture
def fake_slack():
    fake = FakeSlackWebAPI()
    yield fake
    fake.close()


@pytest.fixture
def slack_env(fake_slack):
    """Environment entries that point the bot at the fake Web API."""
    return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.url}


@pytest.fixture
def start_bot(fake_slack):
    """Call with Settings (and optionally Services) to get a running BotServer; closed after the test."""
    servers = []

    def start(settings, services=None) -> BotServer:
        server = BotServer(settings, fake_slack, services)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
