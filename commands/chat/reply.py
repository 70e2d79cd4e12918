"""How a command reports: a small interface the Slack and console adapters implement.

Commands hand over message *data* (dataclasses with a plain-text rendering); the adapter decides
how it looks (Block Kit in Slack, text on a terminal).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from commands.redact import redact

log = logging.getLogger(__name__)


class Message(Protocol):
    def text(self) -> str:
        """Plain text (Slack mrkdwn), used by the console and as Slack's notification fallback."""


@dataclass(frozen=True)
class Notice:
    body: str

    def text(self) -> str:
        return self.body


class Reply(Protocol):
    def post(self, message: Message, channel: str | None = None) -> str | None:
        """Post in the invoking (or given) channel; return a message id that `update` accepts."""

    def update(self, message_id: str, message: Message) -> None: ...

    def ephemeral(self, message: Message) -> None:
        """Only the invoking user sees it."""

    def thread(self, message_id: str, message: Message) -> str | None:
        """Reply in the thread under `message_id`."""

    def react(self, message_id: str, emoji: str) -> None:
        """Add a reaction as the bot (approval buttons for a restore request)."""

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        """Share a file in the invoking channel (an incident export)."""

    # Optional, looked up with getattr by the core:
    #   progress(message_id, message): a transient progress update the adapter may drop or pace
    #   check_can_collect_reactions(): raise a BackupbotError when reactions on this channel's
    #     messages would never reach the bot (a restore request nobody could approve)


class ThreadReply:
    """A Reply whose new messages go into the thread under `parent` (a restore request's steps)."""

    def __init__(self, reply: Reply, parent: str | None):
        self.reply = reply
        self.parent = parent

    def post(self, message: Message, channel: str | None = None) -> str | None:
        if self.parent is None:
            return self.reply.post(message, channel)
        return self.reply.thread(self.parent, message)

    def update(self, message_id: str, message: Message) -> None:
        self.reply.update(message_id, message)

    def ephemeral(self, message: Message) -> None:
        self.reply.ephemeral(message)

    def thread(self, message_id: str, message: Message) -> str | None:
        return self.reply.thread(message_id, message)

    def react(self, message_id: str, emoji: str) -> None:
        self.reply.react(message_id, emoji)

    def upload_file(self, *args, **kwargs):
        return self.reply.upload_file(*args, **kwargs)

    def check_can_collect_reactions(self) -> None:
        check_can_collect_reactions(self.reply)


def check_can_collect_reactions(reply: Reply) -> None:
    """Raise ChannelAccessError when reactions on this reply's channel would never reach the bot
    (Slack: not a member and cannot join). Replies without the check (the console) always can."""
    check = getattr(reply, "check_can_collect_reactions", None)
    if check is not None:
        check()



# ---------------------------------------------------------------- delivery that never decides a job


RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # about a minute in all


@dataclass
class Undelivered:
    kind: str  # post | update | thread | react | upload_file
    args: tuple
    key: object  # a later success with the same key makes this one moot (an update of the same message)
    text: str


class GuardedReply:
    """Wraps any Reply so that chat delivery can never change a job's outcome.

    post/update/thread/react/upload_file/ephemeral catch every exception, log it redacted and
    return (post and thread return None). What could not be delivered is remembered; `settle()`
    retries it with backoff and, when it still fails, logs it and tries `alerts_channel`.
    `progress()` hands transient progress to a background sender (latest wins), so no chat call
    ever runs inside a dump's read loop.
    """

    def __init__(self, reply: Reply, secrets: Iterable[str] = (), alerts_channel: str | None = None,
                 delays: Iterable[float] | None = None, sleep: Callable[[float], None] = time.sleep,
                 webhook_url: str | None = None):
        self.inner = reply.inner if isinstance(reply, GuardedReply) else reply
        self.secrets = list(secrets)
        self.alerts_channel = alerts_channel
        self.webhook_url = webhook_url
        self.delays = tuple(RETRY_DELAYS if delays is None else delays)
        self.sleep = sleep
        self.pending: list[Undelivered] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._progress_cv = threading.Condition()
        self._progress_next: tuple[str, Message] | None = None
        self._progress_busy = False
        self._progress_thread: threading.Thread | None = None
        self._progress_logged = False

    # -- the Reply interface
    def post(self, message: Message, channel: str | None = None) -> str | None:
        return self._call("post", (message, channel), message)

    def update(self, message_id: str, message: Message) -> None:
        self._call("update", (message_id, message), message, key=("update", message_id))

    def thread(self, message_id: str, message: Message) -> str | None:
        return self._call("thread", (message_id, message), message)

    def react(self, message_id: str, emoji: str) -> None:
        self._call("react", (message_id, emoji), None, key=("react", message_id, emoji))

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        self._call("upload_file", (filename, content, title), None)

    def ephemeral(self, message: Message) -> None:
        try:
            self.inner.ephemeral(message)
        except Exception as exc:  # only the invoking user would have seen it: log, do not retry
            self._log_failure("ephemeral", exc)

    def check_can_collect_reactions(self) -> None:
        """Not guarded: a channel where approvals cannot arrive must stop the request."""
        check_can_collect_reactions(self.inner)

    # -- progress: off the caller's thread, latest wins, failures only logged
    def progress(self, message_id: str, message: Message) -> None:
        with self._progress_cv:
            self._progress_next = (message_id, message)
            if self._progress_thread is None:
                self._progress_thread = threading.Thread(target=self._progress_loop, name="reply-progress", daemon=True)
                self._progress_thread.start()
            self._progress_cv.notify()

    def _progress_loop(self) -> None:
        while True:
            with self._progress_cv:
                while self._progress_next is None:
                    self._progress_cv.wait()
                item, self._progress_next = self._progress_next, None
                if item == ("", None):
                    self._progress_cv.notify_all()
                    return
                self._progress_busy = True
            try:
                send = getattr(self.inner, "progress", None) or self.inner.update
                send(*item)
            except Exception as exc:
                if not self._progress_logged:  # once per job: progress is transient, the result is what counts
                    self._log_failure("progress update", exc)
                    self._progress_logged = True
            finally:
                with self._progress_cv:
                    self._progress_busy = False
                    self._progress_cv.notify_all()

    def stop_progress(self) -> None:
        """Drop progress not yet sent and wait for one in flight, so the result is the last word."""
        with self._progress_cv:
            if self._progress_thread is None:
                return
            self._progress_next = ("", None)
            self._progress_cv.notify_all()
            while self._progress_busy or self._progress_next is not None:
                if not self._progress_thread.is_alive():
                    break
                self._progress_cv.wait(timeout=1)
            self._progress_thread = None

    # -- retries
    def discard_pending(self) -> None:
        with self._lock:
            self.pending.clear()

    def settle(self) -> bool:
        """Retry what was not delivered, with backoff; give up after the last delay. True when all went out."""
        for delay in self.delays:
            if not self.pending:
                return True
            self.sleep(delay)
            self._retry_once()
        if not self.pending:
            return True
        self._give_up()
        return False

    def settle_in_background(self) -> threading.Thread | None:
        if not self.pending:
            return None
        worker = threading.Thread(target=self.settle, name="reply-retry", daemon=True)
        worker.start()
        return worker

    def _retry_once(self) -> None:
        with self._lock:
            todo, self.pending = self.pending, []
        failed = []
        for item in todo:
            if failed and item.kind in ("post", "thread"):
                failed.append(item)  # keep new messages in their order
                continue
            try:
                getattr(self.inner, item.kind)(*item.args)
                log.info("delivered a %s to Slack on retry", item.kind)
            except Exception as exc:
                self._log_failure(f"{item.kind} (retry)", exc)
                failed.append(item)
        with self._lock:
            self.pending[:0] = failed

    def _give_up(self) -> None:
        with self._lock:
            lost, self.pending = self.pending, []
        for item in lost:
            log.error("could not deliver a %s after %d retries: %s", item.kind, len(self.delays),
                      self._redact(item.text)[:500])
        if not lost:
            return
        summary = "; ".join(self._redact(i.text).splitlines()[0][:200] for i in lost if i.text) or "(no text)"
        text = f":warning: backupbot could not deliver {len(lost)} message(s) to Slack after retries: {summary}"
        if self.webhook_url:
            post_webhook(self.webhook_url, alert_payload(text, "undelivered"), self.secrets)
        if self.alerts_channel:
            try:
                self.inner.post(Notice(text), self.alerts_channel)
            except Exception as exc:
                self._log_failure("alert about undelivered messages", exc)

    # -- internals
    def _call(self, kind: str, args: tuple, message: Message | None, key: object = None):
        try:
            result = getattr(self.inner, kind)(*args)
        except Exception as exc:
            self._log_failure(kind, exc)
            text = message.text() if message is not None else f"{kind} {args[0]!s:.100}"
            with self._lock:
                if key is not None:
                    self.pending = [p for p in self.pending if p.key != key]
                self.pending.append(Undelivered(kind, args, key if key is not None else next(self._keys), text))
            return None
        if key is not None:
            with self._lock:
                self.pending = [p for p in self.pending if p.key != key]
        return result

    def _log_failure(self, what: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("Slack %s failed: %s", what, self._redact(f"{type(exc).__name__}: {exc}")[:500])

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets)


# ---------------------------------------------------------------- alerts outside Slack


def alert_payload(text: str, kind: str = "alert", channel: str | None = None) -> dict:
    """The JSON an `[alerts] webhook_url` receives. `text` also suits Slack/Mattermost incoming webhooks."""
    return {"source": "backupbot", "kind": kind, "text": text, "channel": channel,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def post_webhook(url: str, payload: dict, secrets: Iterable[str] = (), timeout: float = 10, tries: int = 3) -> bool:
    """POST `payload` as JSON; a few tries with backoff; failures are logged redacted, never raised."""
    body = json.dumps(payload).encode()
    for attempt in range(tries):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "backupbot"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
        except Exception as exc:
            log.warning("alert webhook failed (try %d of %d): %s", attempt + 1, tries,
                        redact(f"{type(exc).__name__}: {exc}", [url, *secrets])[:300])
        if attempt + 1 < tries:
            time.sleep(0.5 * 2 ** attempt)
    return False


def ping_heartbeat(url: str | None, secrets: Iterable[str] = (), timeout: float = 10) -> bool:
    """GET the heartbeat URL (healthchecks.io-style): an outside monitor notices when the pings stop."""
    if not url:
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "backupbot"}),
                                    timeout=timeout) as response:
            return 200 <= response.status < 300
    except Exception as exc:
        log.warning("heartbeat ping failed: %s", redact(f"{type(exc).__name__}: {exc}", [url, *secrets])[:300])
        return False


class AlertingReply:
    """Copies every alert (a Notice posted to the alerts channel: failed scheduled jobs, RPO breaches
    and recoveries) to `[alerts] webhook_url` first, so alerts get out when Slack does not. Job
    messages that merely live in that channel (a scheduled backup's progress) are not copied."""

    def __init__(self, reply: Reply, alerts_channel: str | None, webhook_url: str | None, secrets: Iterable[str] = ()):
        self.inner = reply
        self.alerts_channel = alerts_channel
        self.webhook_url = webhook_url
        self.secrets = list(secrets)

    def post(self, message: Message, channel: str | None = None) -> str | None:
        if self.webhook_url and channel and channel == self.alerts_channel and isinstance(message, Notice):
            post_webhook(self.webhook_url, alert_payload(message.text(), channel=channel), self.secrets)
        return self.inner.post(message, channel)

    def __getattr__(self, name):
        return getattr(self.inner, name)
