"""[jobs] max_running: at most that many backups/restores/drills at once; the rest queue and are told their place."""

from __future__ import annotations

import threading

import psycopg
import pytest

from bot.console import Console
from commands.chat.job_slots import JobSlots
from commands.errors import ConfigError
from commands.settings import parse_settings
from state.backups import get_backup
from state.jobs import get_job
from tests.builders import make_console, make_settings


def eventually(predicate, timeout: float = 10) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def hold(slots: JobSlots, label: str, release: threading.Event, log: list, queued: list | None = None):
    def run():
        with slots.acquire(label, on_queued=lambda ahead: queued.append((label, ahead)) if queued is not None else None):
            log.append(f"start {label}")
            release.wait(30)
            log.append(f"end {label}")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_slots_queue_first_come_first_served_and_say_how_many_are_ahead():
    slots = JobSlots(2)
    log, queued = [], []
    gates = {name: threading.Event() for name in "abcd"}
    threads = [hold(slots, "a", gates["a"], log, queued), hold(slots, "b", gates["b"], log, queued)]
    assert slots.wait_for(lambda s: len(s.running()) == 2, 10)
    threads.append(hold(slots, "c", gates["c"], log, queued))
    assert slots.wait_for(lambda s: s.waiting() == ["c"], 10)
    threads.append(hold(slots, "d", gates["d"], log, queued))
    assert slots.wait_for(lambda s: s.waiting() == ["c", "d"], 10)
    # each is told its place just after it joins the line, on its own thread
    assert eventually(lambda: len(queued) == 2)
    assert queued == [("c", 2), ("d", 3)]  # two running ahead of c; those two and c ahead of d
    assert sorted(slots.running()) == ["a", "b"]

    gates["b"].set()  # one slot frees: c (first in line) gets it, d still waits
    assert slots.wait_for(lambda s: sorted(s.running()) == ["a", "c"] and s.waiting() == ["d"], 10)
    gates["c"].set()
    assert slots.wait_for(lambda s: sorted(s.running()) == ["a", "d"], 10)
    gates["a"].set()
    gates["d"].set()
    for thread in threads:
        thread.join(10)
    assert log.index("start c") < log.index("start d")
    assert log.index("end b") < log.index("start c")
    assert slots.running() == [] and slots.waiting() == []


def test_a_failing_job_gives_its_slot_back_and_a_failing_notice_keeps_the_place():
    slots = JobSlots(1)
    with pytest.raises(RuntimeError):
        with slots.acquire("boom"):
            raise RuntimeError("pg_dump died")
    assert slots.running() == []
    release, log = threading.Event(), []
    first = hold(slots, "first", release, log)
    assert slots.wait_for(lambda s: s.running() == ["first"], 10)
    done = []

    def second():
        def shout(ahead):
            raise ConnectionError("Slack is down")
        with slots.acquire("second", on_queued=shout):
            done.append("second ran")
    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    assert slots.wait_for(lambda s: s.waiting() == ["second"], 10)
    release.set()
    first.join(10)
    thread.join(10)
    assert done == ["second ran"]


def test_max_running_is_validated():
    assert parse_settings({}, {}).jobs.max_running == 2
    assert parse_settings({"jobs": {"max_running": 5}}, {}).jobs.max_running == 5
    assert parse_settings({}, {}).jobs.stop_grace_seconds == 60
    assert parse_settings({"jobs": {"stop_grace_seconds": 2.5}}, {}).jobs.stop_grace_seconds == 2.5
    for raw, message in [({"jobs": {"max_running": 0}}, "jobs.max_running: expected a whole number >= 1, got 0"),
                         ({"jobs": {"max_running": "2"}}, "jobs.max_running: expected a whole number >= 1"),
                         ({"jobs": {"max_running": True}}, "jobs.max_running: expected a whole number >= 1"),
                         ({"jobs": {"max_runing": 2}}, "jobs.max_runing: unknown key (known: max_running, stall_minutes, "
                                                       "stop_grace_seconds)"),
                         ({"jobs": {"stop_grace_seconds": -1}}, "jobs.stop_grace_seconds: expected a number >= 0")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_settings(raw, {})
    with pytest.raises(ValueError):
        JobSlots(0)


def test_second_backup_waits_for_the_one_slot_and_says_its_place(tmp_path, sample_dsn):
    settings = make_settings(tmp_path, sample_dsn, env={"OTHER_URL": sample_dsn}, jobs={"max_running": 1},
                             databases={"main": {"url_env": "DATABASE_URL"}, "other": {"url_env": "OTHER_URL"}})
    alice = make_console(settings, user="U0ALICE")
    bob = Console(alice.services, user="U0BOB", channel="C0OPS", plays_slack_users=True)  # another person, the same bot
    slots = alice.services.job_slots
    said: dict[str, str] = {}
    blocker = psycopg.connect(sample_dsn)  # keeps the first backup running until the test lets go
    blocker.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    try:
        first = threading.Thread(target=lambda: said.__setitem__("alice", alice.run("/backup main")), daemon=True)
        first.start()
        assert slots.wait_for(lambda s: s.running() == ["backup #1 of main"], 30)
        second = threading.Thread(target=lambda: said.__setitem__("bob", bob.run("/backup other")), daemon=True)
        second.start()
        assert slots.wait_for(lambda s: s.waiting() == ["backup #2 of other"], 30)
        assert not any("Backup #2" in m.text for m in bob.messages.values())  # queued: not started
    finally:
        blocker.rollback()
        blocker.close()
    first.join(120)
    second.join(120)
    assert "Backup #1 of main succeeded" in said["alice"]
    assert "(only you) :hourglass: queued: 1 job ahead of you" in said["bob"]
    assert said["bob"].index("queued: 1 job ahead") < said["bob"].index("Backup #2 of other started by @U0BOB")
    assert "Backup #2 of other succeeded" in said["bob"]
    store = alice.services.store
    assert get_job(store, 1).finished_at <= get_backup(store, 2).created_at  # #2 began dumping after #1 ended
    assert slots.running() == [] and slots.waiting() == []
