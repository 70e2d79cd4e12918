"""The HTTP server refuses oversized bodies before reading them: Slack's requests are a few KB."""

from __future__ import annotations

import select
import socket
import time

from state.backups import list_backups
from tests.builders import make_settings

HUNDRED_MB = 100 * 1024 * 1024
CHUNK = b"x" * 65536


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def body_chunks(total: int, chunked: bool):
    """The body, made on the fly: the test itself never holds more than 64 KB of it."""
    sent = 0
    while sent < total:
        piece = CHUNK[: min(len(CHUNK), total - sent)]
        sent += len(piece)
        yield (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


def post_huge(port: int, chunked: bool, total: int = HUNDRED_MB) -> tuple[bytes, int, float]:
    """POST `total` bytes to /slack/events over a real socket, unsigned. Returns (response head, bytes sent,
    seconds until the answer arrived). Reads whatever the server says while sending: a server that refuses
    early closes the connection, which a plain HTTP client would see as a broken pipe, not as the answer."""
    headers = [b"POST /slack/events HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/x-www-form-urlencoded"]
    headers.append(b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    started = time.monotonic()
    sent = 0
    answer = b""
    try:
        sock.sendall(b"\r\n".join(headers) + b"\r\n\r\n")
        for piece in body_chunks(total, chunked):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        seconds = time.monotonic() - started
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    return answer, sent, seconds


def test_a_100_mb_body_is_refused_with_413_and_memory_stays_flat(tmp_path, sample_dsn, slack_env, fake_slack, start_bot,
                                                                 reliability):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    before = rss_bytes()
    for chunked in (False, True):
        answer, sent, seconds = post_huge(bot.port, chunked)
        assert answer.startswith(b"HTTP/1.1 413"), (chunked, answer[:200])
        # refused at once: nowhere near the whole body went over the wire
        assert sent < 20 * 1024 * 1024, (chunked, sent)
        assert seconds < 10
    assert rss_bytes() - before < 20 * 1024 * 1024
    # the server is still there for Slack, and nothing ran
    status, _, _ = bot.slack.command("/backup", "help")
    assert status == 200
    fake_slack.wait_for_text("Usage:", method="chat.postEphemeral")
    assert list_backups(bot.services.store) == []
    reliability("requests", "100 MB unsigned POST (sized and chunked)", 2, "413 before the body is read; RSS flat", 0)


def test_a_body_at_the_limit_is_still_read(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))
    body = bot.slack.command_body("/backup", "help")
    padded = body + b"&pad=" + b"y" * (1024 * 1024 - len(body) - 5)
    assert len(padded) == 1024 * 1024
    status, _, _ = bot.slack.post(padded, "application/x-www-form-urlencoded")
    assert status == 200
    fake_slack.wait_for_text("Usage:", method="chat.postEphemeral")
    answer, _, _ = post_huge(bot.port, chunked=False, total=len(padded) + 1)  # one byte over
    assert answer.startswith(b"HTTP/1.1 413") and b"Too Large" in answer, answer[:200]


def test_the_wsgi_app_itself_refuses_a_large_content_length(tmp_path, sample_dsn, slack_env, fake_slack, start_bot):
    """Behind another WSGI server too: the app answers 413 without reading wsgi.input."""
    from bot.server import make_wsgi_app

    bot = start_bot(make_settings(tmp_path, sample_dsn, env=slack_env))

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

    seen = []
    wsgi = make_wsgi_app(bot.app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "CONTENT_LENGTH": str(HUNDRED_MB),
               "CONTENT_TYPE": "application/json", "wsgi.input": Unreadable()}
    body = b"".join(wsgi(environ, lambda status, headers: seen.append(status)))
    assert seen == ["413 Payload Too Large"] and b"too large" in body
