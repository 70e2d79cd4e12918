"""Acknowledgements first (bot/ack_first.py): a command's work waits while Slack requests are being answered.

Against the real Bolt app under waitress; one more Slack request is held in flight by calling the
same WSGI app with a body that arrives only when the test says so.
"""

from __future__ import annotations

import threading
import time

from tests.builders import make_settings
from tests.fix_slack import sign


class HeldRequest:
    """A signed `/backup list` from `user` whose body is read only after release()."""

    def __init__(self, bot, user: str):
        from bot.server import make_wsgi_app

        body = bot.slack.command_body("/backup", "list", user=user)
        headers = sign(body)
        self.reading = threading.Event()
        self.released = threading.Event()
        self.statuses: list[str] = []
        held = self

        class Body:
            def read(self, *args):
                held.reading.set()
                held.released.wait(30)
                return body

        environ = {"REQUEST_METHOD": "POST", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/slack/events",
                   "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded", "wsgi.input": Body(),
                   "HTTP_X_SLACK_REQUEST_TIMESTAMP": headers["X-Slack-Request-Timestamp"],
                   "HTTP_X_SLACK_SIGNATURE": headers["X-Slack-Signature"]}
        wsgi = make_wsgi_app(bot.app)
        self.thread = threading.Thread(
            target=lambda: b"".join(wsgi(environ, lambda status, _headers: self.statuses.append(status))), daemon=True)
        self.thread.start()
        assert self.reading.wait(10), "the held request never reached its body"

    def release(self) -> None:
        self.released.set()
        self.thread.join(10)
        assert self.statuses == ["200 OK"]


def replied_to(fake_slack, user: str) -> list[dict]:
    return [a for a in fake_slack.said("chat.postEphemeral") if a.get("user") == user]


def test_a_reply_waits_until_the_requests_in_flight_are_answered(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    held = HeldRequest(bot, user="U0BOB")
    status, _, seconds = bot.slack.command("/backup", "list", user="U0ALICE")
    assert status == 200 and seconds < 3  # the ack itself does not wait
    time.sleep(0.5)  # Alice's listener would have replied by now (a list takes milliseconds)
    assert replied_to(fake_slack, "U0ALICE") == []
    held.release()
    for user in ("U0ALICE", "U0BOB"):
        answer = fake_slack.wait_for(lambda api, user=user: replied_to(api, user), what=f"the list for {user}")[0]
        assert "No backups of all databases yet" in answer["text"]


def test_requests_that_keep_coming_do_not_hold_the_work_back_for_long(tmp_path, sample_dsn, slack_env, fake_slack,
                                                                    start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    bot.app.ack_first.max_wait = 0.5  # 2 s in production
    started = time.monotonic()
    held = HeldRequest(bot, user="U0BOB")
    bot.slack.command("/backup", "list", user="U0ALICE")
    fake_slack.wait_for(lambda api: replied_to(api, "U0ALICE"), timeout=10, what="Alice's list")
    assert time.monotonic() - started >= 0.5
    assert held.thread.is_alive()  # Bob's request is still being answered: Alice's work went ahead anyway
    held.release()
    fake_slack.wait_for(lambda api: replied_to(api, "U0BOB"), what="Bob's list")
