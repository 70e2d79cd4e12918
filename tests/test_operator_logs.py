"""Logs an operator can use: one line per job start and end and per approval, with fields in
`--log-format json`; library chatter quieted; `--log-level`."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.cli import main
from bot.logs import JsonFormatter, RedactingFormatter, setup_logging
from state.backups import list_backups
from tests.builders import make_console, make_settings
from tests.test_restore import ACCESS, message_id


@pytest.fixture
def log_lines():
    """What the root logger writes, as `--log-format json` writes it (one JSON object per line)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(saved)


def test_one_json_line_per_job_start_and_end_and_per_approval(tmp_path, sample_dsn, log_lines):
    console = make_console(make_settings(tmp_path, sample_dsn, access=ACCESS))
    assert "Backup #1 of main succeeded" in console.run("/backup")
    request = message_id(console.run("/restore 1"), "Restore request #1")
    console.run(":as U0APP1")
    assert "restored backup #1" in console.run(f":react {request} white_check_mark")

    jobs = [r for r in log_lines() if r["logger"] == "commands.chat.run"]
    backup = [r for r in jobs if r["job_id"] == 1]
    assert [r["outcome"] for r in backup] == ["started", "succeeded"]
    start, end = backup
    assert start["message"] == "backup #1 of main started"
    assert (start["database"], start["user"], start["kind"]) == ("main", "U0OPS", "backup")
    assert end["level"] == "INFO" and end["seconds"] > 0
    assert end["bytes"] == next(b.size for b in list_backups(console.services.store) if b.id == 1)
    restore_ends = [r for r in jobs if r["kind"] == "restore" and r["outcome"] != "started"]
    assert [(r["outcome"], r["database"]) for r in restore_ends] == [("succeeded", "main")]
    assert isinstance(restore_ends[0]["seconds"], float)

    approvals = [r for r in log_lines() if r["logger"] == "commands.restore.approvals"]
    assert len(approvals) == 1
    assert approvals[0]["message"] == "restore request #1 of main approved by U0APP1"
    assert (approvals[0]["request_id"], approvals[0]["user"], approvals[0]["outcome"]) == (1, "U0APP1", "approved")
    assert (approvals[0]["votes"], approvals[0]["required"]) == (1, 1)


def test_a_failed_job_logs_a_warning_with_its_reason_and_no_secret(tmp_path, pg_cluster, log_lines):
    dsn = f"postgresql://postgres:{pg_cluster.password}@127.0.0.1:1/app"  # nothing listens on port 1
    console = make_console(make_settings(tmp_path, dsn))
    assert "Backup #1 failed" in console.run("/backup")
    end = [r for r in log_lines() if r["logger"] == "commands.chat.run" and r["outcome"] == "failed"]
    assert len(end) == 1 and end[0]["level"] == "WARNING" and end[0]["job_id"] == 1
    assert "cannot connect" in end[0]["message"]
    assert pg_cluster.password not in json.dumps(end)


def test_text_logs_carry_the_fields_too():
    record = logging.LogRecord("commands.chat.run", logging.INFO, __file__, 1, "backup #3 of main succeeded", (), None)
    record.fields = {"job_id": 3, "database": "main", "outcome": "succeeded", "bytes": None}
    text = RedactingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert text == "INFO commands.chat.run: backup #3 of main succeeded [job_id=3 database=main outcome=succeeded]"


def test_library_chatter_is_quiet_and_the_level_is_the_operators():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        for name in ("apscheduler.scheduler", "apscheduler.executors.default", "slack_bolt.App", "urllib3.connectionpool"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger("commands.chat.run").isEnabledFor(logging.INFO)
        setup_logging("WARNING")
        assert not logging.getLogger("commands.chat.run").isEnabledFor(logging.INFO)
        setup_logging("DEBUG")  # asked for: everything, the libraries too
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        setup_logging_levels_back()


def setup_logging_levels_back() -> None:
    from bot.logs import QUIET_LOGGERS

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def test_log_level_is_a_flag_of_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["check", "--log-level", "chatty"])
    assert exited.value.code == 2
    assert "--log-level: invalid choice: 'CHATTY'" in capsys.readouterr().err
