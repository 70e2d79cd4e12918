"""The Reply that speaks Slack's Web API: chat.postMessage/update, ephemerals, threads, reactions.

Message ids are "CHANNEL:TS" so an update or a thread reply needs nothing else. When the bot may
not post in the channel (not invited), the slash command's response_url is the fallback.
"""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.blocks import build_message_blocks
from commands.reply import Message

log = logging.getLogger(__name__)

NOT_POSTABLE = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}
RESPONSE_URL_ID = "response_url"
MAX_TEXT = 39000


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

    def _payload(self, message: Message) -> dict:
        return {"text": message.text()[:MAX_TEXT], "blocks": build_message_blocks(message)}

    def post(self, message: Message, channel: str | None = None) -> str | None:
        channel = channel or self.channel
        try:
            result = self.client.chat_postMessage(channel=channel, **self._payload(message))
            return f"{result['channel']}:{result['ts']}"
        except SlackApiError as exc:
            if exc.response.get("error") in NOT_POSTABLE and self.response_url and channel == self.channel:
                self._respond(message, response_type="in_channel")
                return f"{RESPONSE_URL_ID}:{channel}"
            raise

    def update(self, message_id: str, message: Message) -> None:
        channel, ts = split_id(message_id)
        if channel == RESPONSE_URL_ID:
            self._respond(message, response_type="in_channel", replace_original=True)
            return
        self.client.chat_update(channel=channel, ts=ts, **self._payload(message))

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

    def upload_file(self, filename: str, content: bytes, title: str) -> None:
        """files.getUploadURLExternal, the upload, then files.completeUploadExternal (slack_sdk does all three)."""
        self.client.files_upload_v2(channel=self.channel, content=content, filename=filename, title=title)

    def _respond(self, message: Message, **kwargs) -> None:
        WebhookClient(self.response_url).send(**self._payload(message), **kwargs)
