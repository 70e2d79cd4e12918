"""The Reply that speaks Slack's Web API: chat.postMessage/update, ephemerals, threads, reactions.

Message ids are "CHANNEL:TS" so an update or a thread reply needs nothing else. When the bot may
not post in the channel (not invited), the slash command's response_url is the fallback: such a
message's id ("response_url:CHANNEL:TOKEN") is editable only by the SlackReply that posted it, so a
stored id (an incident's header) never makes another command's reply replace its own message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.blocks import build_message_blocks
from commands.chat.reply import Message
from commands.errors import ChannelAccessError

log = logging.getLogger(__name__)

NOT_POSTABLE = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}
RESPONSE_URL_ID = "response_url"
MAX_TEXT = 39000
PROGRESS_INTERVAL = 1.0  # Slack allows about one message per second per channel
RESPONSE_URL_USES = 5  # Slack accepts at most 5 uses of a response_url in 30 minutes
# Errors that mean Slack cannot be used at all (as opposed to "not in that channel")
FATAL_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                "ratelimited", "fatal_error", "internal_error", "service_unavailable", "request_timeout"}


class DeliveryError(RuntimeError):
    """A message Slack did not take (response_url refused or used up)."""


def retry_handlers() -> list:
    """429s wait out Retry-After and try again; dropped connections are retried with backoff."""
    return [RateLimitErrorRetryHandler(max_retry_count=3), ConnectionErrorRetryHandler(max_retry_count=3)]


def add_retry_handlers(client) -> None:
    kinds = {type(h) for h in client.retry_handlers}
    client.retry_handlers.extend(h for h in retry_handlers() if type(h) not in kinds)


class SlackCallStatus:
    """The outcome of the bot's most recent Web API call, for /healthz."""

    def __init__(self):
        self.ok = True
        self.error: str | None = None
        self.at: float | None = None

    def record(self, ok: bool, error: str | None = None) -> None:
        self.ok, self.error, self.at = ok, error, time.time()


class TrackedWebClient(WebClient):
    """A WebClient with retry handlers that remembers whether its last call reached Slack."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_retry_handlers(self)
        self.call_status = SlackCallStatus()

    def api_call(self, api_method: str, *args, **kwargs):
        try:
            response = super().api_call(api_method, *args, **kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "")
            status = getattr(exc.response, "status_code", 200)
            if error in FATAL_ERRORS or status >= 500 or status == 429:
                self.call_status.record(False, f"{api_method}: {error or status}")
            else:
                self.call_status.record(True)  # Slack answered; the call was refused for its own reasons
            raise
        except Exception as exc:
            self.call_status.record(False, f"{api_method}: {type(exc).__name__}")
            raise
        self.call_status.record(True)
        return response


_channel_lock = threading.Lock()
_channel_last_call: dict[str, float] = {}


def _note_channel_call(channel: str) -> None:
    with _channel_lock:
        _channel_last_call[channel] = time.monotonic()


def _channel_is_quiet(channel: str) -> bool:
    with _channel_lock:
        last = _channel_last_call.get(channel)
        return last is None or time.monotonic() - last >= PROGRESS_INTERVAL


def split_id(message_id: str) -> tuple[str, str]:
    channel, _, ts = message_id.partition(":")
    return channel, ts


class SlackReply:
    def __init__(self, client: WebClient, user: str | None = None, channel: str | None = None,
                 response_url: str | None = None):
        self.client = client
        self.user = user
        self.channel = channel
        self.response_url = response_url
        self.response_url_uses = 0
        self._response_token = uuid.uuid4().hex[:12]  # ties response_url message ids to this reply
        if isinstance(client, WebClient):
            add_retry_handlers(client)

    def _payload(self, message: Message) -> dict:
        return {"text": message.text()[:MAX_TEXT], "blocks": build_message_blocks(message)}

    def post(self, message: Message, channel: str | None = None) -> str | None:
        channel = channel or self.channel
        try:
            _note_channel_call(channel or "")
            result = self.client.chat_postMessage(channel=channel, **self._payload(message))
            return f"{result['channel']}:{result['ts']}"
        except SlackApiError as exc:
            if exc.response.get("error") in NOT_POSTABLE and self.response_url and channel == self.channel:
                self._respond(message, response_type="in_channel")
                return f"{RESPONSE_URL_ID}:{channel}:{self._response_token}"
            raise

    def update(self, message_id: str, message: Message) -> None:
        channel, ts = split_id(message_id)
        if channel == RESPONSE_URL_ID:
            if not ts.endswith(f":{self._response_token}"):  # another command's response_url: not ours to replace
                log.info("not editing %s: it was posted through another command's response_url", message_id)
                return
            self._respond(message, response_type="in_channel", replace_original=True)
            return
        _note_channel_call(channel)
        self.client.chat_update(channel=channel, ts=ts, **self._payload(message))

    def progress(self, message_id: str, message: Message) -> None:
        """A transient progress update: dropped when the channel had a message in the last second,
        and never sent through a response_url (its 5 uses are kept for the start and the result)."""
        channel, _ = split_id(message_id)
        if channel == RESPONSE_URL_ID or not _channel_is_quiet(channel):
            return
        self.update(message_id, message)

    def ephemeral(self, message: Message) -> None:
        if self.channel and self.user:
            try:
                self.client.chat_postEphemeral(channel=self.channel, user=self.user, **self._payload(message))
                return
            except SlackApiError as exc:
                if not self.response_url:
                    raise
                log.info("chat.postEphemeral failed (%s); using response_url", exc.response.get("error"))
        if self.response_url:
            self._respond(message, response_type="ephemeral")
        else:
            log.warning("no way to tell %s: %s", self.user, message.text()[:200])

    def thread(self, message_id: str, message: Message) -> str | None:
        channel, ts = split_id(message_id)
        if channel == RESPONSE_URL_ID:
            return self.post(message)
        _note_channel_call(channel)
        result = self.client.chat_postMessage(channel=channel, thread_ts=ts, **self._payload(message))
        return f"{result['channel']}:{result['ts']}"

    def react(self, message_id: str, emoji: str) -> None:
        channel, ts = split_id(message_id)
        if channel == RESPONSE_URL_ID:
            return
        try:
            self.client.reactions_add(channel=channel, timestamp=ts, name=emoji)
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                raise

    def check_can_collect_reactions(self) -> None:
        if self.channel:
            self.ensure_member(self.channel)

    def ensure_member(self, channel: str) -> None:
        """Reactions reach the bot only where it is a member: join a public channel, or raise
        ChannelAccessError asking for an invite (private channels cannot be joined)."""
        try:
            info = self.client.conversations_info(channel=channel)["channel"]
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "channel_not_found":  # also what a private channel the bot is not in looks like
                raise ChannelAccessError(_invite(f"<#{channel}>")) from None
            if error == "missing_scope":
                raise ChannelAccessError("the Slack app lacks the channels:read/groups:read scopes needed to check "
                                         "that it is in this channel; reinstall it from manifest.yml") from None
            raise
        if info.get("is_im") or info.get("is_member"):
            return
        name = f"#{info['name']}" if info.get("name") else f"<#{channel}>"
        if info.get("is_private") or info.get("is_mpim"):
            raise ChannelAccessError(_invite(name))
        try:
            self.client.conversations_join(channel=channel)
            log.info("joined %s to see reactions on restore requests", name)
        except SlackApiError as exc:
            raise ChannelAccessError(_invite(name) + f" (joining failed: {exc.response.get('error')})") from None

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        """files.getUploadURLExternal, the upload, then files.completeUploadExternal (slack_sdk does all three)."""
        self.client.files_upload_v2(channel=self.channel, content=content, filename=filename, title=title)

    def _respond(self, message: Message, **kwargs) -> None:
        if self.response_url_uses >= RESPONSE_URL_USES:
            raise DeliveryError(f"the command's response_url was already used {RESPONSE_URL_USES} times")
        self.response_url_uses += 1
        webhook = WebhookClient(self.response_url, retry_handlers=retry_handlers())
        response = webhook.send(**self._payload(message), **kwargs)
        if response.status_code != 200:
            raise DeliveryError(f"response_url answered {response.status_code}")


def _invite(channel: str) -> str:
    return (f"invite @backupbot to {channel} first: Slack sends reactions (approvals) only from channels "
            "the bot is in, so a request here could never be approved")
