"""The app's housekeeping timers: the daily retention sweep and the sweep of stranded erasure requests are registered
as timers, and a tick sweeps once and says what it did."""
from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

import function_app
from blueprints import erasure_workers, retention
from devhost.ncrontab import CronSchedule
from shared import bootstrap
from shared.retention_sweep import Swept


def timer_binding(name: str = "retention_sweep") -> dict:
    """A function's trigger as function_app registers it (read without get_functions(), which may run only once per
    app)."""
    functions = {builder._function.get_function_name(): builder._function
                 for builder in function_app.app._function_builders}
    return json.loads(functions[name].get_function_json())["bindings"][0]


def test_the_sweep_is_a_timer_firing_once_a_day_at_a_quiet_hour_without_running_at_start_up():
    binding = timer_binding()
    assert binding["type"] == "timerTrigger"
    assert binding["useMonitor"] is True and binding["runOnStartup"] is False  # a missed day runs once when back
    schedule = CronSchedule.parse(binding["schedule"])
    first = schedule.next_after(dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC))
    second = schedule.next_after(first)
    assert (first.hour, first.minute) == (2, 30) and second - first == dt.timedelta(days=1)


class Timer:
    past_due = True


def test_a_tick_sweeps_once_and_logs_only_counts(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    calls = []

    class Sweep:
        def sweep(self) -> Swept:
            calls.append("sweep")
            return Swept(forgotten=2, deleted=1)

    monkeypatch.setattr(bootstrap, "app", lambda: type("App", (), {"retention": Sweep()})())
    with caplog.at_level(logging.INFO, logger="function_app"):
        retention.retention_sweep(Timer())
    assert calls == ["sweep"]
    assert "retention tick (past due): 2 run(s) forgotten, 1 run record(s) deleted" in caplog.text


def test_stranded_erasures_are_swept_every_15_minutes_and_each_one_queued_is_logged_by_id(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    binding = timer_binding("erasure_stranded_sweep")
    assert binding["type"] == "timerTrigger" and binding["runOnStartup"] is False
    schedule = CronSchedule.parse(binding["schedule"])
    first = schedule.next_after(dt.datetime(2027, 3, 1, 12, 1, tzinfo=dt.UTC))
    assert (first.hour, first.minute) == (12, 15) and schedule.next_after(first) - first == dt.timedelta(minutes=15)

    class Erasures:
        def queue_stranded(self) -> list[str]:
            return ["e1", "e2"]

    monkeypatch.setattr(bootstrap, "app", lambda: type("App", (), {"erasures": Erasures()})())
    with caplog.at_level(logging.INFO, logger="function_app"):
        erasure_workers.erasure_stranded_sweep(Timer())
    assert [r.getMessage().split()[2] for r in caplog.records] == ["e1", "e2"]
