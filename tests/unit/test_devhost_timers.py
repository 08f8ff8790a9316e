"""Timer runner rules taken from Azure's timer extension: monitor defaults, past-due detection, schedule changes."""
from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.app_index import FunctionSpec
from devhost.invoker import Invoker
from devhost.state import StateFile
from devhost.timers import TimerRunner

EVERY_FIVE_MINUTES = "0 */5 * * * *"


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[TimerRunner]]:
    started: list[TimerRunner] = []
    yield started
    for runner in started:
        runner.stopping.set()
        runner.join(5)


def build(tmp_path: Path, schedule: str, calls: queue.Queue | None = None, **trigger: object) -> TimerRunner:
    binding = {"type": "timerTrigger", "name": "timer", "schedule": schedule, **trigger}
    spec = FunctionSpec("tick", binding, lambda timer: calls.put(timer) if calls else None, False)
    return TimerRunner.build(spec, StateFile(tmp_path / "state.json"), Invoker(str(tmp_path), 2), threading.Event())


def start_after_saved_status(tmp_path: Path, runners: list[TimerRunner], last: dt.datetime, next_: dt.datetime
                             ) -> queue.Queue:
    """Start an every-five-minutes timer on a state file saying it last ran at LAST and expected NEXT."""
    status = {"Last": last.isoformat(), "Next": next_.isoformat(), "LastUpdated": last.isoformat()}
    (tmp_path / "state.json").write_text(json.dumps({"timers": {"tick": status}}))
    calls: queue.Queue = queue.Queue()
    runner = build(tmp_path, EVERY_FIVE_MINUTES, calls)
    runners.append(runner)
    runner.start()
    return calls


def saved_next(tmp_path: Path) -> dt.datetime:
    return dt.datetime.fromisoformat(json.loads((tmp_path / "state.json").read_text())["timers"]["tick"]["Next"])


def clear_of_a_boundary(seconds: float) -> None:
    """Wait, if need be, until no five-minute boundary falls within `seconds`: the schedule's own occurrence there
    would be a run that a test waiting for none takes for a wrong one (it happened in CI, a test started at 4:59)."""
    now = dt.datetime.now(dt.timezone.utc)
    left = 300 - ((now.minute % 5) * 60 + now.second + now.microsecond / 1e6)
    if left < seconds:
        time.sleep(left + 0.2)


def five_minute_boundary_before_now() -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)


@pytest.mark.parametrize("schedule, trigger, expected", [
    (EVERY_FIVE_MINUTES, {}, True),  # at most once a minute: monitored by default
    ("*/30 * * * * *", {}, False),  # more often: not monitored by default
    (EVERY_FIVE_MINUTES, {"useMonitor": False}, False),
])
def test_schedule_monitor_default(tmp_path: Path, schedule: str, trigger: dict, expected: bool) -> None:
    assert build(tmp_path, schedule, **trigger).use_monitor is expected


def test_a_missed_occurrence_runs_once_at_start_with_past_due(tmp_path: Path, runners: list[TimerRunner]) -> None:
    clear_of_a_boundary(10)  # the saved Next checked at the end is the boundary after the run: not passed meanwhile
    boundary = five_minute_boundary_before_now()
    missed = boundary - dt.timedelta(minutes=5)
    calls = start_after_saved_status(tmp_path, runners, boundary - dt.timedelta(minutes=10), missed)
    request = calls.get(timeout=5)
    assert request.past_due is True
    assert request.schedule_status["Next"] == missed.isoformat()
    runners[0].stopping.set()
    runners[0].join(5)
    assert saved_next(tmp_path) > dt.datetime.now(dt.timezone.utc)


def test_a_changed_schedule_is_rebased_instead_of_running_past_due(tmp_path: Path, runners: list[TimerRunner]) -> None:
    # A Next 3 minutes after Last cannot come from the current schedule: Azure re-bases it, with no catch-up run.
    clear_of_a_boundary(10)
    boundary = five_minute_boundary_before_now()
    calls = start_after_saved_status(tmp_path, runners, boundary - dt.timedelta(minutes=10),
                                     boundary - dt.timedelta(minutes=7))
    with pytest.raises(queue.Empty):
        calls.get(timeout=1)
    assert saved_next(tmp_path) > dt.datetime.now(dt.timezone.utc)
