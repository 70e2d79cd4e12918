"""Acknowledgements first: a command's work waits while Slack requests are still being answered.

Slack drops a command whose HTTP answer takes over 3 seconds; the reply to it may come later. One
Python process does both, so under a burst (50 people typing `/backup list` at once) every lazy
listener that starts its work while acks are still in flight competes with them for the GIL and the
CPU: measured in bench/ack.py, that work, not the acks themselves, made the ack p99 of a burst several
times its p50 (bench/results.md). So the HTTP handler counts the Slack requests in flight, and a
listener's work starts only once none has been in flight for `quiet` seconds (the answer's bytes
still go out on waitress's I/O thread just after the handler returns), or once requests have kept
coming for `max_wait`: a steady stream of requests never starves the work, and after that much of one
the work runs beside the acks as it did before. The acks themselves run in the request's thread
(bot/app.py), never in the pool where the waiting work sits.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

QUIET_SECONDS = 0.05
MAX_WAIT_SECONDS = 2.0


class AckFirst:
    def __init__(self, quiet: float = QUIET_SECONDS, max_wait: float = MAX_WAIT_SECONDS, clock=time.monotonic):
        self.quiet = quiet
        self.max_wait = max_wait
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._last_answer = float("-inf")
        self._busy_since = float("-inf")  # when the current run of requests without a quiet gap began

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Around the handling of one Slack request, up to its answer."""
        with self._cond:
            now = self._clock()
            if self._in_flight == 0 and now - self._last_answer >= self.quiet:
                self._busy_since = now
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._last_answer = self._clock()
                self._cond.notify_all()

    def wait_turn(self) -> float:
        """Block until no request has been in flight for `quiet` seconds, or requests have kept coming for
        `max_wait` (and never longer than that from now); the seconds waited."""
        started = self._clock()
        with self._cond:
            deadline = min(started, self._busy_since) + self.max_wait
            while True:
                now = self._clock()
                if now >= deadline:
                    break
                if self._in_flight == 0:
                    left = self._last_answer + self.quiet - now
                    if left <= 0:
                        break
                    self._cond.wait(min(left, deadline - now))
                else:
                    self._cond.wait(deadline - now)
        return self._clock() - started
