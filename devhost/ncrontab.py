"""NCRONTAB schedules as Azure timer triggers read them: six fields, seconds first, in UTC.

Written here because the cron packages on PyPI either use five fields or put seconds last (croniter).
Semantics follow NCrontab, the .NET library Azure uses: `*`, values, `a-b` ranges, `/step` (on `*`, a range
or a start value), comma lists, month and weekday names (any prefix, English, case-insensitive; Sunday is 0),
and day-of-month AND day-of-week must both match (not OR as in Vixie cron).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from itertools import product

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (
    _Field("second", 0, 59), _Field("minute", 0, 59), _Field("hour", 0, 23), _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS), _Field("day-of-week", 0, 6, _WEEKDAYS),
)
# A schedule that matches no date within one leap-year cycle of weekdays never matches (e.g. 30 February).
_SEARCH_DAYS = 366 * 28


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse six fields; ValueError names the field that is wrong and what it accepts."""
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(
                f"{expression!r} has {len(parts)} fields; NCRONTAB needs 6: second minute hour day month day-of-week "
                "(e.g. '0 */5 * * * *' for every five minutes)"
            )
        seconds, minutes, hours, days, months, weekdays = (
            _parse_field(part, field) for part, field in zip(parts, _FIELDS)
        )
        schedule = cls(expression, tuple(sorted(seconds)), tuple(sorted(minutes)), tuple(sorted(hours)),
                       frozenset(days), frozenset(months), frozenset(weekdays))
        schedule.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))  # refuse schedules that never fire
        return schedule

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first occurrence strictly after MOMENT (an aware datetime), in UTC."""
        start = moment.astimezone(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
        earliest = (start.hour, start.minute, start.second)
        day = start.date()
        for _ in range(_SEARCH_DAYS):
            if day.month in self.months and day.day in self.days and (day.weekday() + 1) % 7 in self.weekdays:
                for hms in product(self.hours, self.minutes, self.seconds):
                    if hms >= earliest:
                        return dt.datetime(day.year, day.month, day.day, *hms, tzinfo=dt.timezone.utc)
            day += dt.timedelta(days=1)
            earliest = (0, 0, 0)
        raise ValueError(f"{self.expression!r} never fires: its day, month and day-of-week fields exclude every date")


def _parse_field(text: str, field: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, field))
    return values


def _parse_item(item: str, field: _Field) -> range:
    problem = f"{field.name} field {item!r}"
    base, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ValueError(f"{problem}: the step after / must be a whole number above 0")
        step = int(step_text)
    if base == "*":
        return range(field.low, field.high + 1, step)
    first_text, dash, last_text = base.partition("-")
    first = _parse_value(first_text, field, problem)
    if dash:
        last = _parse_value(last_text, field, problem)
    else:
        last = field.high if step_text else first  # "5/10" means from 5 to the end, every 10
    if first > last:
        raise ValueError(f"{problem}: range start {first} is after its end {last}")
    return range(first, last + 1, step)


def _parse_value(text: str, field: _Field, problem: str) -> int:
    if text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            raise ValueError(f"{problem}: {value} is outside {field.low}-{field.high}")
        return value
    lowered = text.lower()
    for index, name in enumerate(field.names):
        if lowered and name.startswith(lowered):
            return field.low + index
    accepted = f"{field.low}-{field.high}" + (f" or a name ({', '.join(n[:3] for n in field.names)})" if field.names else "")
    raise ValueError(f"{problem}: {text!r} is not a value; use {accepted}")
