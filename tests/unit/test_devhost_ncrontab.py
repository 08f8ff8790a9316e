"""NCRONTAB parsing and next-occurrence rules as Azure's timer trigger applies them (six fields, seconds first)."""
from __future__ import annotations

import datetime as dt

import pytest

from devhost.ncrontab import CronSchedule


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def occurrences(expression: str, start: str, count: int) -> list[str]:
    schedule = CronSchedule.parse(expression)
    moment, found = at(start), []
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment.strftime("%a %Y-%m-%d %H:%M:%S"))
    return found


@pytest.mark.parametrize("expression, start, expected", [
    ("0 */5 * * * *", "2024-03-04 12:03:10", ["Mon 2024-03-04 12:05:00", "Mon 2024-03-04 12:10:00"]),
    ("*/15 * * * * *", "2024-03-04 12:00:14.900", ["Mon 2024-03-04 12:00:15", "Mon 2024-03-04 12:00:30"]),
    ("5/20 * * * * *", "2024-03-04 12:00:00", ["Mon 2024-03-04 12:00:05", "Mon 2024-03-04 12:00:25",
                                               "Mon 2024-03-04 12:00:45"]),
    ("0 0 9-17/4 * * 1-5", "2024-03-08 17:30:00", ["Mon 2024-03-11 09:00:00", "Mon 2024-03-11 13:00:00"]),
    ("0 30 8,20 * * *", "2024-03-04 09:00:00", ["Mon 2024-03-04 20:30:00", "Tue 2024-03-05 08:30:00"]),
    ("0 30 8 * jan,Jul Mon", "2024-03-04 00:00:00", ["Mon 2024-07-01 08:30:00", "Mon 2024-07-08 08:30:00"]),
    ("0 0 0 31 * *", "2024-01-31 00:00:00", ["Sun 2024-03-31 00:00:00", "Fri 2024-05-31 00:00:00"]),
    ("0 0 0 29 feb *", "2024-03-01 00:00:00", ["Tue 2028-02-29 00:00:00"]),
])
def test_next_occurrences(expression: str, start: str, expected: list[str]) -> None:
    assert occurrences(expression, start, len(expected)) == expected


def test_an_occurrence_is_strictly_after_the_given_moment() -> None:
    assert occurrences("0 */5 * * * *", "2024-03-04 12:05:00", 1) == ["Mon 2024-03-04 12:10:00"]


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab() -> None:
    # Vixie cron would fire on every 13th and every Friday; NCrontab only on Friday the 13th.
    assert occurrences("0 0 0 13 * Fri", "2024-01-01 00:00:00", 2) == ["Fri 2024-09-13 00:00:00",
                                                                       "Fri 2024-12-13 00:00:00"]


def test_results_are_utc_whatever_zone_the_moment_is_in() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    found = CronSchedule.parse("0 0 * * * *").next_after(dt.datetime(2024, 3, 4, 12, 30, tzinfo=paris))
    assert found == at("2024-03-04 12:00:00")


@pytest.mark.parametrize("expression, problem", [
    ("0 */5 * * *", "has 5 fields"),
    ("60 * * * * *", "second field '60': 60 is outside 0-59"),
    ("*/0 * * * * *", "step after / must be a whole number above 0"),
    ("0 0 0 * * Funday", "'Funday' is not a value"),
    ("0 0 17-9 * * *", "range start 17 is after its end 9"),
    ("0 0 0 * * 7", "7 is outside 0-6"),
    ("0 0 0 30 2 *", "never fires"),
])
def test_invalid_expressions_say_what_is_wrong(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CronSchedule.parse(expression)
