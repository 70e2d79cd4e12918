"""Cron expressions are read as crontab(5) reads them, or refused with a message naming the key.

The expected runs below were worked out by hand from a calendar (2026-01-30 is a Friday; 2026 is
not a leap year), not computed with the code under test.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from bot.preflight import run_preflight
from bot.scheduler import build_scheduler
from commands.errors import ConfigError
from commands.schedules import cron_trigger
from tests.builders import make_settings

START = datetime(2026, 1, 30, 12, 0, 30, tzinfo=UTC)  # Friday, half a minute past noon


def at(*runs: str) -> list[datetime]:
    return [datetime.strptime(run, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) for run in runs]


NEXT_FIVE = {
    "*/15 * * * *": at("2026-01-30 12:15", "2026-01-30 12:30", "2026-01-30 12:45", "2026-01-30 13:00",
                       "2026-01-30 13:15"),
    # 0 and 7 are both Sunday (APScheduler alone would read 0 as Monday)
    "0 3 * * 0": at("2026-02-01 03:00", "2026-02-08 03:00", "2026-02-15 03:00", "2026-02-22 03:00", "2026-03-01 03:00"),
    "0 3 * * 7": at("2026-02-01 03:00", "2026-02-08 03:00", "2026-02-15 03:00", "2026-02-22 03:00", "2026-03-01 03:00"),
    # */2 over 0-7 is Sun, Tue, Thu, Sat (APScheduler alone would start at Monday)
    "30 2 * * */2": at("2026-01-31 02:30", "2026-02-01 02:30", "2026-02-03 02:30", "2026-02-05 02:30",
                       "2026-02-07 02:30"),
    "0 9 * * mon-fri": at("2026-02-02 09:00", "2026-02-03 09:00", "2026-02-04 09:00", "2026-02-05 09:00",
                          "2026-02-06 09:00"),
    "0 22 * * 1-5/2": at("2026-01-30 22:00", "2026-02-02 22:00", "2026-02-04 22:00", "2026-02-06 22:00",
                         "2026-02-09 22:00"),
    "0 6 * * 5-7": at("2026-01-31 06:00", "2026-02-01 06:00", "2026-02-06 06:00", "2026-02-07 06:00",
                      "2026-02-08 06:00"),
    # both day fields restricted: the 1st, the 15th, OR any Friday
    "0 0 1,15 * 5": at("2026-02-01 00:00", "2026-02-06 00:00", "2026-02-13 00:00", "2026-02-15 00:00",
                       "2026-02-20 00:00"),
    # the 10th OR a Friday (ANDed it would first run on Friday 2026-04-10)
    "0 12 10 * 5": at("2026-02-06 12:00", "2026-02-10 12:00", "2026-02-13 12:00", "2026-02-20 12:00",
                      "2026-02-27 12:00"),
    # day-of-month starts with *: not "restricted" for crontab, so both must match: odd-dated Mondays
    "0 0 */2 * 1": at("2026-02-09 00:00", "2026-02-23 00:00", "2026-03-09 00:00", "2026-03-23 00:00",
                      "2026-04-13 00:00"),
    "5 0 * jan,jul sat,sun": at("2026-01-31 00:05", "2026-07-04 00:05", "2026-07-05 00:05", "2026-07-11 00:05",
                                "2026-07-12 00:05"),
    "0 0,12 1 */3 *": at("2026-04-01 00:00", "2026-04-01 12:00", "2026-07-01 00:00", "2026-07-01 12:00",
                         "2026-10-01 00:00"),
    "0 4 29 2 *": at("2028-02-29 04:00", "2032-02-29 04:00", "2036-02-29 04:00", "2040-02-29 04:00",
                     "2044-02-29 04:00"),
    "@hourly": at("2026-01-30 13:00", "2026-01-30 14:00", "2026-01-30 15:00", "2026-01-30 16:00", "2026-01-30 17:00"),
    "@daily": at("2026-01-31 00:00", "2026-02-01 00:00", "2026-02-02 00:00", "2026-02-03 00:00", "2026-02-04 00:00"),
    "@weekly": at("2026-02-01 00:00", "2026-02-08 00:00", "2026-02-15 00:00", "2026-02-22 00:00", "2026-03-01 00:00"),
    "@monthly": at("2026-02-01 00:00", "2026-03-01 00:00", "2026-04-01 00:00", "2026-05-01 00:00", "2026-06-01 00:00"),
    "@yearly": at("2027-01-01 00:00", "2028-01-01 00:00", "2029-01-01 00:00", "2030-01-01 00:00", "2031-01-01 00:00"),
}


def next_runs(trigger, count: int = 5) -> list[datetime]:
    runs, previous, now = [], None, START
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        runs.append(previous)
        now = previous + timedelta(seconds=1)
    return runs


@pytest.mark.parametrize("expression", list(NEXT_FIVE))
def test_next_five_runs_match_crontab(expression):
    assert next_runs(cron_trigger(expression, timezone=UTC)) == NEXT_FIVE[expression]


BAD = {
    "every night": "expected 5 fields",
    "0 2 * * * *": "expected 5 fields",
    "60 * * * *": "minute 60 is out of range (0-59)",
    "0 24 * * *": "hour 24 is out of range (0-23)",
    "0 0 0 * *": "day-of-month 0 is out of range (1-31)",
    "0 0 * 13 *": "month 13 is out of range (1-12)",
    "0 0 * * 8": "day-of-week 8 is out of range (0-7)",
    "*/0 * * * *": "a step must be at least 1",
    "30-10 * * * *": "the range 30-10 runs backwards",
    "0 0 * * sat-sun": "Sunday is 0 or 7: write 6-7",
    "20/20 * * * *": "a step needs a range or * before it (write 20-59/20)",
    "0 0 L * *": "day-of-month 'L' is not a number 1-31",
    "0 0 ? * mon": "'?' is not crontab syntax",
    "0 0 * * mon#2": "'mon#2' is not crontab syntax",
    "0 0 * foo *": "month 'foo' is not a number 1-12 (or jan…dec)",
    "0 0 * * monday": "day-of-week 'monday' is not a number 0-7 (or sun…sat)",
    "@reboot": "@reboot is not supported",
    "@fortnightly": "@fortnightly is not supported",
}


@pytest.mark.parametrize("expression", list(BAD))
def test_bad_expressions_get_a_clear_error_naming_the_key(tmp_path, expression):
    with pytest.raises(ConfigError) as refused:
        make_settings(tmp_path, "postgresql://u@127.0.0.1:1/app", schedules={"main": {"backup": expression}})
    message = str(refused.value)
    assert message.startswith(f"schedules.main.backup: {expression!r} is not a cron expression (")
    assert BAD[expression] in message


def test_backupbot_check_fails_on_a_bad_expression(tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[storage]\nurl = "file://{tmp_path / "b"}"\n'
                      '[schedules.main]\nbackup = "0 3 * * 8"\n')
    out = io.StringIO()
    assert run_preflight(str(config), out=out) != 0
    assert ("FAIL config: schedules.main.backup: '0 3 * * 8' is not a cron expression "
            "(day-of-week 8 is out of range (0-7))") in out.getvalue()


def test_the_scheduler_fires_on_either_day_as_crontab_does(tmp_path):
    settings = make_settings(tmp_path, "postgresql://u@127.0.0.1:1/app",
                             schedules={"main": {"backup": "0 12 10 * 5", "drill": "30 2 * * */2"}})
    scheduler = build_scheduler(SimpleNamespace(settings=settings), lambda: None)
    triggers = {job.id: job.trigger for job in scheduler.get_jobs()}
    assert next_runs(triggers["backup main"]) == NEXT_FIVE["0 12 10 * 5"]
    assert next_runs(triggers["drill main"]) == NEXT_FIVE["30 2 * * */2"]


def test_names_are_read_in_any_case():
    assert next_runs(cron_trigger("0 9 * * MON-Fri", timezone=UTC)) == NEXT_FIVE["0 9 * * mon-fri"]
    assert next_runs(cron_trigger("5 0 * JAN,Jul Sat,SUN", timezone=UTC)) == NEXT_FIVE["5 0 * jan,jul sat,sun"]
    assert next_runs(cron_trigger("@DAILY", timezone=UTC)) == NEXT_FIVE["@daily"]
