"""Reading one message back from Slack: what a :stopwatch: reaction puts on an incident timeline.

Reaction events carry only the channel and ts of the message; its text comes from
conversations.history (channels:history / groups:history scopes), or conversations.replies for a
message inside a thread. A failure (missing scope, deleted message) returns None: the timeline
entry is still made, with its author and time.
"""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)


def fetch_message_text(client: WebClient, channel: str, ts: str) -> str | None:
    try:
        found = client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
        for message in found.get("messages") or []:
            if message.get("ts") == ts:
                return message.get("text") or ""
        found = client.conversations_replies(channel=channel, ts=ts, latest=ts, inclusive=True, limit=1)
        for message in found.get("messages") or []:
            if message.get("ts") == ts:
                return message.get("text") or ""
    except SlackApiError as exc:
        log.warning("could not read message %s:%s for the incident timeline: %s", channel, ts, exc.response.get("error"))
    except Exception:
        log.exception("could not read message %s:%s for the incident timeline", channel, ts)
    return None
