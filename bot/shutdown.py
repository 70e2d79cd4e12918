"""A graceful stop on SIGTERM or SIGINT (`docker stop`, `systemctl stop`, Ctrl-C).

Without it, PID 1 in a container ignores SIGTERM, the runtime kills the bot after its timeout, and a
running pg_dump dies with it, leaving the job `running` until the next start. Here the stop is
the bot's: it stops taking commands at once (Slack's connection or HTTP server closes, the
scheduler stops, nobody in the job queue starts), gives running jobs `[jobs] stop_grace_seconds`
to finish, then stops their children (pg_dump, pg_restore, psql, pgBackRest) and records each job
`interrupted`, removing its partial artifact and scratch files, so nothing half-written is ever
listed. systemd's TimeoutStopSec and `docker stop --time` must be longer than the grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# after the grace period: children get SIGTERM, then SIGKILL this much later; then the jobs have this
# long to record their own verdict before the rest are marked interrupted from outside
CHILD_TERM_SECONDS = 5.0
VERDICT_SECONDS = 10.0


def child_pids(parent: int | None = None) -> list[int]:
    """The direct children of `parent` (this process), read from /proc: every tool a job runs is one."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: the fields after the last ')' are fixed
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def stop_children(term_seconds: float = CHILD_TERM_SECONDS) -> list[int]:
    """SIGTERM every child, SIGKILL those still there after `term_seconds`. Returns the pids signalled."""
    pids = child_pids()
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + term_seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running and not yet a zombie (a zombie's job thread is about to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2:][:1] not in ("Z", "X")


class Shutdown:
    """The stop of one `backupbot run`. `install()` in the main thread, `wait()` there until a signal
    arrives, then `stop()`; `on_stop` callbacks close whatever takes commands (Slack, the scheduler)."""

    def __init__(self, services, grace_seconds: float | None = None):
        self.services = services
        self.grace = services.settings.jobs.stop_grace_seconds if grace_seconds is None else grace_seconds
        self.requested = threading.Event()
        self.signal_name: str | None = None
        self.on_stop: list[Callable[[], object]] = []

    def install(self, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested.is_set():
            log.warning("%s again: already stopping", signal.Signals(signum).name)
            return
        self.signal_name = signal.Signals(signum).name
        self.requested.set()

    def wait(self) -> None:
        """Block the main thread until a signal (a short timeout keeps the handler prompt)."""
        while not self.requested.wait(0.5):
            pass

    def stop(self) -> bool:
        """Drain, then interrupt what is left. True when every job finished within the grace period."""
        services = self.services
        services.stopping.set()
        log.warning("%s: stopping; taking no more commands; %d running job(s) get %ss to finish",
                    self.signal_name or "stop", len(services.job_slots.running()), self.grace)
        services.job_slots.close()  # anyone queued gives up (recorded interrupted), nobody new starts
        for callback in self.on_stop:
            try:
                callback()
            except Exception:
                log.exception("while stopping")
        if services.job_slots.wait_for(lambda slots: not slots.running(), timeout=self.grace):
            log.info("no job running: stopped cleanly")
            return True
        log.warning("grace period over: stopping %s", ", ".join(services.job_slots.running()))
        services.interrupting.set()  # from here a job's failure is recorded as interrupted (commands/chat/run.py)
        stop_children()
        services.job_slots.wait_for(lambda slots: not slots.running(), timeout=VERDICT_SECONDS)
        from bot.startup import interrupt_running_jobs  # a job stuck past its verdict; partial artifacts, scratch

        interrupt_running_jobs(services, "on stop")
        return False


def interrupt_on_signals(services, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
    """The console runs its job on the terminal's own thread, so it has no grace period to give: SIGTERM
    (like Ctrl-C) interrupts the job where it is. pg_dump is stopped and the partial file removed by
    the job's own cleanup, and the job is recorded interrupted, not failed (commands/chat/run.py).
    The children are stopped first: a pg_dump waiting on a lock writes nothing, and would never end."""
    def handle(signum, frame):
        services.stopping.set()
        services.interrupting.set()
        services.job_slots.close()
        stop_children()
        raise KeyboardInterrupt

    for sig in signals:
        signal.signal(sig, handle)
