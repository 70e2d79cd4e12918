"""No job hangs quietly: a watchdog that stops a job which moved no bytes for `[jobs] stall_minutes`.

A backup waiting on a lock shows "in progress" for hours and nobody looks. The watchdog is told
each time the job moves bytes (`moved`); when the injected clock says nothing moved for the limit,
`check` asks what the job is waiting for (`describe`, e.g. the session holding the lock), stops
the job's own children (`stop`) and keeps the reason, which the Run stores as the failure. It
never touches the session the job waited for: `stop` ends only what the job itself started.

The decision reads `services.clock`, so tests advance a fake clock and call `check`; a daemon
thread calls it every few real seconds in production. Running watchdogs are listed by `active()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from commands.errors import BackupbotError
from commands.units import human_bytes, human_duration

log = logging.getLogger(__name__)

CHECK_EVERY = 5.0  # real seconds between checks; the limit itself is minutes
_ACTIVE: list[Watchdog] = []
_LOCK = threading.Lock()


class JobStalled(BackupbotError):
    """The watchdog stopped the job: its message is the stored failure reason."""


def active() -> list[Watchdog]:
    with _LOCK:
        return list(_ACTIVE)


class Watchdog:
    def __init__(self, what: str, clock: Callable[[], datetime], stall_minutes: float,
                 describe: Callable[[], str | None], stop: Callable[[], None], check_every: float = CHECK_EVERY):
        self.what, self.clock, self.limit = what, clock, timedelta(minutes=stall_minutes)
        self.describe, self.stop = describe, stop
        self.check_every = check_every
        self.moved_bytes = 0
        self.moved_at = clock()
        self.reason: str | None = None
        self.waiting_for: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- what the job reports
    def moved(self, total_bytes: int) -> None:
        """The job's byte count so far; more than last time resets the stall timer."""
        if total_bytes > self.moved_bytes:
            self.moved_bytes, self.moved_at = total_bytes, self.clock()

    @property
    def stalled(self) -> bool:
        return self.reason is not None

    def check(self) -> bool:
        """Stop the job when it moved nothing for the limit; True once it is stopped (the first call
        that finds the stall does it, later ones only report it)."""
        with self._lock:
            if self.reason is not None:
                return True
            idle = self.clock() - self.moved_at
            if idle < self.limit:
                return False
            try:
                self.waiting_for = self.describe()
            except Exception as exc:  # what it waits for is evidence, not a reason to keep it running
                self.waiting_for = f"what it waits for could not be read ({type(exc).__name__})"
            self.reason = (f"stalled: {self.what} moved no bytes for {human_duration(idle.total_seconds())} "
                           f"(limit {human_duration(self.limit.total_seconds())}, {human_bytes(self.moved_bytes)} "
                           f"before it stopped moving); stopped by the watchdog"
                           + (f"; it was waiting for {self.waiting_for}" if self.waiting_for else ""))
            log.warning("%s", self.reason)
            try:
                self.stop()
            except Exception:
                log.exception("the watchdog could not stop %s", self.what)
            return True

    # -- the thread
    def __enter__(self) -> Watchdog:
        with _LOCK:
            _ACTIVE.append(self)
        self._thread = threading.Thread(target=self._watch, name=f"watchdog {self.what}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._done.set()
        with _LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        if self.reason is not None and exc is not None and not isinstance(exc, JobStalled):
            raise JobStalled(self.reason) from None  # the children's death is not the reason: the stall is
        return False

    def _watch(self) -> None:
        while not self._done.wait(self.check_every):
            try:
                if self.check():
                    return
            except Exception:
                log.exception("watchdog of %s failed", self.what)
