"""The Bolt app: every handler acks at once and hands the work to a lazy listener.

Slack gives a slash command 3 seconds; a backup takes minutes. `ack` answers immediately and
the lazy listener (run on Bolt's worker threads) parses, checks access and runs the command
through commands.dispatch, exactly as the console does.
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_sdk import WebClient

from bot.ack_first import AckFirst
from bot.slack_messages import fetch_message_text
from bot.slack_reply import SlackReply, add_retry_handlers
from bot.startup import start_services
from bot.usergroups import UsergroupCache
from commands import dispatch
from commands.chat.context import SLACK, Actor, Services
from commands.chat.reply import Notice
from commands.incident.command import stopwatch_emoji
from commands.settings import Settings

log = logging.getLogger(__name__)

REACTION_EVENTS = ("reaction_added", "reaction_removed")
STOPPING_TEXT = ":double_vertical_bar: backupbot is stopping (a restart or a deploy): nothing was started. Try again in a minute."


def create_app(settings: Settings, client: WebClient, services: Services | None = None) -> App:
    """Build the Bolt app around `client` (its base_url may point at a fake Web API in tests)."""
    add_retry_handlers(client)  # 429 → wait Retry-After and retry; dropped connections retried
    groups = UsergroupCache(client)
    if services is None:
        services = start_services(settings, group_members=groups.members)
    else:
        services.group_members = groups.members
    app = App(
        client=client,
        logger=logging.getLogger("slack_bolt.App"),  # inherits slack_bolt's level: Bolt would copy the root's
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=True,
        # every ack function only acks, so it runs in the request's own thread: an ack never queues in
        # the listener pool behind lazy listeners waiting for their turn (bot/ack_first.py)
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        # the lazy listeners' pool: wide enough for a burst of slow ones
        listener_executor=ThreadPoolExecutor(max_workers=64, thread_name_prefix="bolt-listener"),
    )
    app.services = services  # for the server (scheduler, start-up report) and tests
    app.ack_first = turns = AckFirst()  # the HTTP handler counts the requests in flight (bot/server.py)

    def ack_now(ack):
        ack()

    # Listeners use `client` itself, not Bolt's per-request copy: it is the TrackedWebClient whose
    # last call /healthz reports (the token never changes, so sharing it across threads is safe).
    def make_command_runner(command: str):
        def run(body):
            turns.wait_turn()
            actor = Actor(user=body["user_id"], channel=body.get("channel_id"), response_url=body.get("response_url"),
                          source=SLACK)
            reply = SlackReply(client, user=actor.user, channel=actor.channel, response_url=actor.response_url)
            if services.stopping.is_set():  # SIGTERM (bot/shutdown.py): running jobs finish, nothing new starts
                reply.ephemeral(Notice(STOPPING_TEXT))
                return
            dispatch.run_command(services, command, body.get("text") or "", actor, reply)

        run.__name__ = f"run_{command.strip('/').replace('-', '_')}"
        return run

    for command in dispatch.COMMANDS:
        app.command(command)(ack=ack_now, lazy=[make_command_runner(command)])

    def unknown_command(ack, body):
        """A command Slack sends that this version does not know (an outdated manifest): say so."""
        ack(text=f"backupbot does not know {str(body.get('command'))[:40]}; it knows {', '.join(dispatch.COMMANDS)}.")

    app.command(re.compile(r".*"))(unknown_command)

    def run_reaction(body):
        turns.wait_turn()
        event = body["event"]
        item = event.get("item") or {}
        if item.get("type") != "message":
            return
        stopwatch = event["type"] == "reaction_added" and dispatch.base_emoji(event["reaction"]) == stopwatch_emoji(settings)
        item_text = fetch_message_text(client, item["channel"], item["ts"]) if stopwatch else None
        reaction = dispatch.ReactionEvent(
            event_id=body.get("event_id") or f"{event.get('event_ts')}:{event.get('user')}:{event.get('reaction')}",
            user=event["user"], emoji=event["reaction"], added=event["type"] == "reaction_added",
            channel=item["channel"], message_id=f"{item['channel']}:{item['ts']}",
            item_author=event.get("item_user"), item_ts=item["ts"], item_text=item_text, source=SLACK,
        )
        reply = SlackReply(client, user=reaction.user, channel=reaction.channel)
        dispatch.run_reaction(services, reaction, reply)

    for name in REACTION_EVENTS:
        app.event(name)(ack=ack_now, lazy=[run_reaction])

    @app.error
    def on_error(error, body):
        error_id = uuid.uuid4().hex[:8]
        log.error("unhandled error %s for a %s request", error_id, (body or {}).get("type", "slash command"),
                  exc_info=error)

    return app
