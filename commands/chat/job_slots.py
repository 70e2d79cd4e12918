"""At most `[jobs] max_running` backups, restores and drills run at once, across all databases.

In-process and first come, first served: a job that finds every slot taken waits in a FIFO line
and is told how many jobs are ahead of it. A slot is given back when the `with` block ends,
however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator

from commands.errors import BackupbotError

log = logging.getLogger(__name__)


def queued_text(ahead: int) -> str:
    return f":hourglass: queued: {ahead} job{'s' if ahead != 1 else ''} ahead of you. It starts when a slot frees up."


class SlotsClosed(BackupbotError):
    """The bot is stopping (bot/shutdown.py): a job still in line, or asking now, never gets a slot."""


class JobSlots:
    def __init__(self, max_running: int = 2):
        if max_running < 1:
            raise ValueError("max_running must be >= 1")
        self.max_running = max_running
        self._cond = threading.Condition()
        self._running: dict[int, str] = {}  # ticket -> label
        self._waiting: list[int] = []  # tickets, first in line first
        self._labels: dict[int, str] = {}
        self._tickets = itertools.count(1)
        self._closed = False

    @contextlib.contextmanager
    def acquire(self, label: str, on_queued: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold one slot for the `with` block; wait in line (calling on_queued(jobs ahead)) when none is free."""
        ticket = next(self._tickets)
        with self._cond:
            if self._closed:
                raise SlotsClosed("the bot is stopping: no new job starts")
            self._labels[ticket] = label
            if self._waiting or len(self._running) >= self.max_running:
                self._waiting.append(ticket)
                ahead = len(self._running) + len(self._waiting) - 1
                queued = True
            else:
                self._running[ticket] = label
                queued = False
            self._cond.notify_all()  # wakes anyone watching the slots (wait_for)
        try:
            if queued:
                log.info("%s queued: %d job(s) ahead", label, ahead)
                if on_queued is not None:
                    try:
                        on_queued(ahead)
                    except Exception:  # telling the user must not lose the job its place
                        log.exception("could not report that %s is queued", label)
                with self._cond:
                    while not (self._waiting[0] == ticket and len(self._running) < self.max_running):
                        if self._closed:
                            raise SlotsClosed("the bot stopped before this job got a slot")
                        self._cond.wait()
                    self._waiting.pop(0)
                    self._running[ticket] = label
                    self._cond.notify_all()
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._running.pop(ticket, None)
                self._labels.pop(ticket, None)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._running.pop(ticket, None)
                self._labels.pop(ticket, None)
                self._cond.notify_all()

    def close(self) -> None:
        """No slot is given from now on: waiters and later callers get SlotsClosed; running jobs keep theirs."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def running(self) -> list[str]:
        with self._cond:
            return list(self._running.values())

    def waiting(self) -> list[str]:
        with self._cond:
            return [self._labels[t] for t in self._waiting]

    def wait_for(self, predicate: Callable[[JobSlots], bool], timeout: float) -> bool:
        """Block until predicate(self) holds (re-checked whenever a slot changes hands); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)
