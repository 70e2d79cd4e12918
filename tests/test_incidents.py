"""/incident through the console: timelines, automatic entries, the DR checklist, measurements, exports."""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commands import dispatch
from commands.chat.context import Actor
from commands.errors import ConfigError
from commands.incident.audit import record_event
from state import incidents as incident_state
from tests.builders import FakeClock, make_console, make_settings


class RecordingReply:
    """A Reply for driving commands from threads: remembers what it was given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.said: list[tuple[str, str]] = []
        self.files: list[tuple[str, bytes, str]] = []
        self.ids = iter(range(1, 10**6))

    def _say(self, how: str, message) -> str:
        with self.lock:
            self.said.append((how, message.text()))
            return f"R{next(self.ids)}"

    def post(self, message, channel=None):
        return self._say("post", message)

    def update(self, message_id, message):
        self._say("update", message)

    def ephemeral(self, message):
        self._say("ephemeral", message)

    def thread(self, message_id, message):
        return self._say("thread", message)

    def react(self, message_id, emoji):
        pass

    def upload_file(self, filename, content, title):
        self.files.append((filename, content, title))


def uploaded(output: str) -> Path:
    match = re.search(r"\[file\] .*: (\S+)$", output, re.M)
    assert match, output
    return Path(match[1])


START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_open_note_stopwatch_status_timeline_close(tmp_path):
    console = make_console(make_settings(tmp_path, None), user="U0ALICE")
    header = console.run("/incident open Orders API returns 500s --sev 1")
    assert "Incident #1 · SEV1 critical · OPEN — Orders API returns 500s" in header
    assert ":white_check_mark: 1. Identify" in header and ":white_large_square: 2. Select backup" in header
    assert "already open in this channel" in console.run("/incident open Something else")

    note = console.run("/incident note Failover didn't happen: replica lag 40 min")
    assert "(thread of M1)" in note and "didn't happen" in note
    console.add_message("C0OPS", "pg_stat_replication shows the replica stuck on WAL 0/3000060", author="U0BOB")
    said = console.run(":react M3 stopwatch")
    assert "Added to incident #1's timeline" in said
    console.run(":as U0CAROL")
    console.run(":react M3 stopwatch")  # a second reactor: still one entry
    timeline = console.run("/incident timeline")
    assert "3 entries · page 1 of 1" in timeline
    assert "@U0BOB: pg_stat_replication shows the replica stuck" in timeline
    console.run(":unreact M3 stopwatch")
    assert "stuck on WAL" in console.run("/incident timeline"), "Alice's :stopwatch: is still on it"
    console.run(":as U0ALICE")
    console.run(":unreact M3 stopwatch")
    timeline = console.run("/incident timeline")
    assert "stuck on WAL" not in timeline and "2 entries" in timeline

    status = console.run("/incident status")
    assert "[M1 updated]" in status and "(only you)" in status
    closed = console.run("/incident close Replica slot filled the disk")
    assert "Incident #1 closed by @U0ALICE" in closed and "Root cause: Replica slot filled the disk" in closed
    assert "[M1 updated] :white_check_mark: Incident #1 · SEV1 critical · CLOSED" in closed
    assert ":white_check_mark: 7. Document" in closed
    assert "Time to recovery: not measured" in closed
    markdown = uploaded(closed).read_text()
    assert markdown.startswith("# Incident #1: Orders API returns 500s")
    assert "- [x] 7. Document" in markdown and "| note | U0ALICE | Failover didn't happen" in markdown
    assert "no incident is open" in console.run("/incident note too late")
    assert "#1 · closed · SEV1" in console.run("/incident list")
    # a closed incident can be opened again in the channel
    assert "Incident #2" in console.run("/incident open Second one")


def test_automatic_entries_checklist_and_measurements(tmp_path, sample_dsn):
    clock = FakeClock(START)
    settings = make_settings(tmp_path, sample_dsn)
    console = make_console(settings, user="U0ALICE", clock=clock)
    assert "Backup #1 of main succeeded" in console.run("/backup main")  # 12:00, before the incident
    services = console.services
    assert [r["kind"] for r in incident_state.audit_rows(services.store)] == ["backup.succeeded", "backup.started"]

    clock.advance(hours=2)  # 14:00
    console.run("/incident open orders table dropped --db main --sev 1 --at 13:50")
    clock.advance(minutes=5)
    backup = console.run("/backup main")
    assert "Backup #2 of main succeeded" in backup
    # a restore run from another channel: it concerns the incident's database, so it lands
    bob = Actor("U0BOB", "C0DBA")
    events = [
        (5, "restore.requested", {"backup_id": 1}, "Restore #1 of backup #1 into main requested"),
        (2, "restore.approved", {}, "Restore #1 approved by <@U0CAROL>"),
        (3, "restore.checkpoint", {"backup_id": 2}, "Safety snapshot #2 taken"),
        (15, "restore.succeeded", {"backup_id": 1}, "Restore #1 finished in 14m"),
        (10, "restore.verified", {"backup_id": 1, "passed": True}, "Restore #1 verified: row counts match"),
        (5, "health.ok", {}, "main healthy: 0 lock waits"),
    ]
    for minutes, kind, detail, text in events:
        clock.advance(minutes=minutes)
        assert record_event(services, kind, database="main", actor=bob, text=text, detail=detail) is not None
    # not about the incident's database nor its channel: audit only
    record_event(services, "backup.started", database="other", channel="C0ELSE", actor="U0X", text="unrelated")

    status = console.run("/incident status")
    for number, step in enumerate(["Identify", "Select backup", "Checkpoint", "Restore", "Verify", "Monitor"], 1):
        assert f":white_check_mark: {number}. {step}" in status
    assert "verified 2026-03-10 14:40:00 UTC" in status
    timeline = console.run("/incident timeline")
    assert "Backup #2 of main started by @U0ALICE" in timeline and "Backup #2 of main succeeded" in timeline
    assert "@U0BOB: Restore #1 verified: row counts match" in timeline and "unrelated" not in timeline

    clock.advance(minutes=20)  # 15:05
    closed = console.run("/incident close DROP TABLE ran against production")
    # opened 14:00, verified 14:40; started 13:50, backup #1 taken 12:00
    assert ":white_check_mark: Time to recovery: 40m00s (opened → restore verified) · target 1 h" in closed
    assert ":white_check_mark: Data-loss window: 1h50m (incident start → backup #1 taken 2026-03-10T12:00:00+00:00)" in closed
    assert "DR checklist: all seven steps done" in closed
    incident = incident_state.get_incident(services.store, 1)
    assert incident.summary["time_to_recovery_s"] == 2400 and incident.summary["rto_met"] is True
    assert incident.summary["data_loss_window_s"] == 6600 and incident.summary["rpo_met"] is True

    # the same timeline as CSV in New York time (EDT since 8 March 2026)
    rows = list(csv.DictReader(io.StringIO(uploaded(console.run(
        "/incident export 1 --format csv --tz America/New_York")).read_text())))
    assert rows[0]["time"] == "2026-03-10T09:50:00-04:00" and rows[0]["kind"] == "incident.opened"
    assert [r["time_utc"] for r in rows] == sorted(r["time_utc"] for r in rows)
    assert {"backup.started", "backup.succeeded", "restore.verified", "health.ok", "incident.closed"} <= {r["kind"] for r in rows}
    markdown = uploaded(console.run("/incident export 1 --tz Asia/Kolkata")).read_text()
    assert "| Time (Asia/Kolkata) |" in markdown and "2026-03-10T19:20:00+05:30 | incident.opened" in markdown
    assert "[met] Time to recovery: 40m00s" in markdown
    assert "unknown time zone 'Mars/Olympus'" in console.run("/incident export 1 --tz Mars/Olympus")
    assert "unknown export format 'pdf'" in console.run("/incident export --format pdf")
    kinds = [r["kind"] for r in incident_state.audit_rows(services.store, limit=1000)]
    assert "backup.started" in kinds and kinds.count("restore.verified") == 1 and "incident.closed" in kinds


def test_missed_targets_and_configured_targets(tmp_path):
    clock = FakeClock(START)
    settings = make_settings(tmp_path, None, incidents={"rto_full_hours": 0.5, "rpo_hours": 1, "emoji": ":timer_clock:"})
    console = make_console(settings, user="U0ALICE", clock=clock)
    console.run("/incident open Slow disk --sev 3")
    services = console.services
    record_event(services, "restore.requested", channel="C0OPS", actor="U0ALICE", text="restore asked",
                 detail={"recovery_point": "2026-03-10T09:00:00+00:00"})
    clock.advance(hours=2)
    record_event(services, "restore.verified", channel="C0OPS", actor="U0ALICE", text="verified", detail={"passed": True})
    closed = console.run("/incident close Disk")
    assert ":x: Time to recovery: 2h00m (opened → restore verified) · target 0.5 h — missed" in closed
    assert ":x: Data-loss window: 3h00m" in closed and "target 1 h — missed" in closed
    console.run("/incident open Next")
    console.add_message("C0OPS", "a message", author="U0BOB")
    assert console.run(":react M4 stopwatch").count("Added") == 0
    assert "Added to incident #2" in console.run(":react M4 timer_clock")


def test_failed_verification_does_not_tick_verify(tmp_path):
    console = make_console(make_settings(tmp_path, None), user="U0ALICE")
    console.run("/incident open X --db main")
    record_event(console.services, "restore.verified", database="main", text="row counts differ", detail={"passed": False})
    status = console.run("/incident status")
    assert ":white_large_square: 5. Verify" in status
    assert "Verify ticked" in console.run("/incident check verify checked by hand")
    assert ":white_check_mark: 5. Verify" in console.run("/incident status")
    assert "unknown checklist step 'dance'" in console.run("/incident check dance")


def test_note_at_a_past_time_lands_in_order(tmp_path):
    clock = FakeClock(datetime(2026, 7, 1, 9, 30, tzinfo=UTC))
    settings = make_settings(tmp_path, None, incidents={"timezone": "Europe/Paris"})
    console = make_console(settings, user="U0ALICE", clock=clock)
    console.run("/incident open Latency")  # 11:30 in Paris
    assert "2026-07-01 11:05:00 CEST" in console.run("/incident note --at 11:05 first alert fired")
    assert "2026-06-30 23:50:00 CEST" in console.run("/incident note --at 23:50 deploy went out")  # later today = yesterday
    lines = console.run("/incident timeline").splitlines()[1:]
    assert "deploy went out" in lines[0] and "first alert" in lines[1] and "Incident opened" in lines[2]
    assert "--at takes HH:MM" in console.run("/incident note --at noon lunch")
    assert "not a time of day" in console.run("/incident note --at 25:00 x")
    assert "needs the note's text" in console.run("/incident note --at 10:00")


def test_timeline_pages(tmp_path):
    console = make_console(make_settings(tmp_path, None, incidents={"page_size": 20}), user="U0ALICE")
    console.run("/incident open Paging")
    for n in range(44):
        console.run(f"/incident note note number {n:02d}")
    page1 = console.run("/incident timeline")
    assert "45 entries · page 1 of 3" in page1 and "`/incident timeline 1 --page 2`" in page1
    page3 = console.run("/incident timeline 1 --page 3")
    assert "page 3 of 3" in page3 and "note number 43" in page3 and len(page3.splitlines()) == 6
    assert "has 3 pages" in console.run("/incident timeline --page 4")
    assert "no incident #9" in console.run("/incident timeline 9")


def test_permissions_close_needs_an_operator(tmp_path):
    settings = make_settings(tmp_path, None, access={"operators": ["U0OPS"], "approvers": ["U0APPR"]})
    console = make_console(settings, user="U0GUEST")
    assert "Incident #1" in console.run("/incident open Anyone may declare")
    assert "Noted" in console.run("/incident note anyone may write")
    assert "page 1 of 1" in console.run("/incident timeline")
    assert "is not an operator" in console.run("/incident close guest cannot")
    console.run(":as U0OPS")
    assert "Incident #1 closed" in console.run("/incident close operator can")


def test_incidents_of_another_channel_stay_there(tmp_path):
    console = make_console(make_settings(tmp_path, None), user="U0ALICE")
    console.run("/incident open Private matter")
    console.channel = "C0OTHER"
    assert "belongs to <#C0OPS>" in console.run("/incident timeline 1") or "belongs to #C0OPS" in console.run(
        "/incident timeline 1")
    assert "No incidents in this channel" in console.run("/incident list")
    assert "Incident #2" in console.run("/incident open Here too")  # one open incident per channel, not per bot


def test_one_open_incident_per_channel_under_concurrency(tmp_path):
    console = make_console(make_settings(tmp_path, None))
    services = console.services
    results = []

    def opener(n: int) -> None:
        reply = RecordingReply()
        dispatch.run_command(services, "/incident", f"open race {n}", Actor(f"U0R{n}", "C0RACE"), reply)
        results.append(reply.said)

    threads = [threading.Thread(target=opener, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [said for said in results if said and said[0][0] == "post"]
    losers = [said for said in results if said and "already open in this channel" in said[0][1]]
    assert len(winners) == 1 and len(losers) == 11
    assert len(incident_state.list_incidents(services.store, "C0RACE")) == 1


def test_timeline_survives_a_restart(tmp_path):
    settings = make_settings(tmp_path, None)
    console = make_console(settings, user="U0ALICE")
    console.run("/incident open Survives --db main")
    console.run("/incident note before the restart")
    marked = console.add_message("C0OPS", "a marked message", author="U0BOB")
    console.run(":react M3 stopwatch")
    del console

    again = make_console(settings, user="U0ALICE")  # new Services on the same state file
    timeline = again.run("/incident timeline")
    assert "before the restart" in timeline and "a marked message" in timeline and "3 entries" in timeline
    record_event(again.services, "backup.started", database="main", text="after the restart")
    # the reaction is taken back after the restart: the entry goes
    dispatch.run_reaction(again.services, dispatch.ReactionEvent(
        event_id="after-restart-1", user="U0ALICE", emoji="stopwatch", added=False, channel="C0OPS", message_id=marked),
        RecordingReply())
    timeline = again.run("/incident timeline")
    assert "a marked message" not in timeline and "after the restart" in timeline
    assert "Incident #1 closed" in again.run("/incident close restarts are fine")


def test_audit_log_is_append_only_and_record_event_never_raises(tmp_path, caplog):
    console = make_console(make_settings(tmp_path, None))
    services = console.services
    audit_id = record_event(services, "drill.succeeded", database="main", text="drill ok with password=hunter2")
    row = incident_state.audit_rows(services.store, 1)[0]
    assert row["id"] == audit_id and "hunter2" not in row["text"]
    with services.store.db() as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_log SET text = 'changed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_log")
    source = "".join(Path(p).read_text() for p in ("commands/incident/audit.py", "state/incidents.py"))
    assert not re.search(r"(UPDATE|DELETE FROM)\s+audit_log", source)

    class BrokenStore:
        def immediate(self):
            raise sqlite3.OperationalError("disk I/O error")

    services.store, real = BrokenStore(), services.store
    with caplog.at_level(logging.ERROR):
        assert record_event(services, "backup.started", database="main", text="x") is None
    services.store = real
    assert "could not record backup.started event" in caplog.text


def test_incident_config_errors_name_the_key(tmp_path):
    for table, key in [({"rpo_hours": 0}, "incidents.rpo_hours"), ({"timezone": "Nowhere/Land"}, "incidents.timezone"),
                       ({"page_size": 5000}, "incidents.page_size"), ({"colour": "red"}, "incidents.colour"),
                       ({"emoji": ""}, "incidents.emoji")]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            make_settings(tmp_path, None, incidents=table)
    cfg = make_settings(tmp_path, None).incidents
    assert (cfg.emoji, cfg.rpo_hours, cfg.rto_hours(1), cfg.rto_hours(2)) == ("stopwatch", 24, 1, 4)


def test_parsing_keeps_free_text_as_typed(tmp_path):
    console = make_console(make_settings(tmp_path, None), user="U0ALICE")
    assert "unknown database 'nope'" in console.run("/incident open X --db nope")
    assert "--sev must be between 1 and 4" in console.run("/incident open X --sev 7")
    assert "needs a title" in console.run("/incident open --sev 2")
    header = console.run("/incident open \u201cCan't write\u201d \u2014sev 2 --db main")
    assert "SEV2 major · OPEN — Can't write" in header and "Database: main" in header
    assert "O'Brien's \"quote\" | pipe" in console.run("/incident note O'Brien's \"quote\" | pipe")
    assert "Usage:" in console.run("/incident help") and "Usage:" in console.run("/incident")


HUGE = 100_000


def test_an_incident_with_100000_events_pages_and_exports_in_bounded_time_and_memory(tmp_path):
    console = make_console(make_settings(tmp_path, None), user="U0ALICE")
    console.run("/incident open Storm --db main")
    store = console.services.store
    base = START
    rows = ((1, (base + timedelta(seconds=i)).isoformat(timespec="seconds"), base.isoformat(), "health.alert",
             "U0BOT", f"alert {i}: replication lag {i % 600} s on main, connections {i % 97}, p99 {i % 1000} ms", "{}")
            for i in range(HUGE))
    with store.immediate() as db:
        db.conn.executemany("INSERT INTO incident_entries (incident_id, at, recorded_at, kind, actor, text, detail)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    figures = {}
    for name, line in [("timeline page 1", "/incident timeline"), ("timeline page 1000", "/incident timeline --page 1000"),
                       ("export md", "/incident export"), ("export csv", "/incident export --format csv --tz Europe/Paris")]:
        tracemalloc.start()
        started = time.perf_counter()
        output = console.run(line)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        figures[name] = (seconds, peak)
        assert seconds < 20 and peak < 50 * 2**20, (name, seconds, peak)
        if name.startswith("timeline"):
            assert f"{HUGE + 1:,} entries · page" in output and "of 2,001" in output
        else:
            path = uploaded(output)
            with path.open(encoding="utf-8") as f:
                lines = sum(1 for _ in f)
            assert lines >= HUGE + 1, (name, lines)
            figures[name] += (path.stat().st_size,)
    page = console.run("/incident timeline --page 1000")
    assert "alert 49950:" in page and "alert 49999:" in page and "alert 49949:" not in page
    for name, figure in figures.items():
        size = f", file {figure[2] / 2**20:.1f} MB" if len(figure) > 2 else ""
        print(f"{name}: {figure[0]:.2f} s, peak {figure[1] / 2**20:.1f} MB{size}")
