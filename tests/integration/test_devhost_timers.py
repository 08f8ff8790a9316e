"""Timer triggers through a real devhost process: firing on schedule, past_due after a missed occurrence, startup runs."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from tests.devhost_app.harness import SampleApp, make_app, wait_for  # noqa: F401  (make_app is a fixture)

MakeApp = Callable[..., SampleApp]


def parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def test_timer_fires_on_schedule_then_once_past_due_after_a_missed_occurrence(make_app: MakeApp) -> None:
    app = make_app(TICK_SCHEDULE="*/2 * * * * *")
    host = app.start()
    ticks = wait_for(lambda: len(app.records("tick")) >= 2 and app.records("tick"), "two scheduled ticks")
    host.stop()
    assert [tick["past_due"] for tick in ticks[:2]] == [False, False]
    # just after even seconds: an odd-second tick would be at 1-2 (a loaded machine may start a handler 0.5 s late)
    assert all(tick["at"] % 2 < 1.0 for tick in ticks[:2]), "ticks should land just after even seconds"
    status = ticks[1]["status"]  # what the monitor recorded after the first tick
    assert parse(status["Last"]).second % 2 == 0, status  # the runner's own start, before any handler's delay
    assert parse(status["Next"]) - parse(status["Last"]).replace(microsecond=0) == dt.timedelta(seconds=2)

    before = len(app.records("tick"))
    time.sleep(2.5)  # the host is down while at least one occurrence passes
    app.start()
    ticks = wait_for(lambda: len(app.records("tick")) >= before + 2 and app.records("tick"), "two ticks after restart")
    assert [tick["past_due"] for tick in ticks[before:before + 2]] == [True, False]


def test_a_function_disabled_by_app_setting_does_not_run(make_app: MakeApp) -> None:
    app = make_app(**{"AzureWebJobs.on_startup.Disabled": "true"})
    host = app.start()
    host.stop()
    assert app.records("on_startup") == []
    assert "function on_startup is disabled by AzureWebJobs.on_startup.Disabled" in host.log()


def test_run_on_startup_fires_at_every_start_without_a_schedule_status(make_app: MakeApp) -> None:
    app = make_app()
    app.start().stop()
    app.start()
    runs = wait_for(lambda: len(app.records("on_startup")) == 2 and app.records("on_startup"), "a run per start")
    assert runs == [{"function": "on_startup", "past_due": False, "status": {}}] * 2  # useMonitor=False: no status


def test_a_timer_or_queue_function_runs_by_hand_through_the_admin_api_with_the_key_only(make_app: MakeApp) -> None:
    """Azure's POST /admin/functions/{name} (Microsoft Learn, "Manually run a non HTTP-triggered function")."""
    import requests

    from tests.devhost_app.harness import KEY

    app = make_app()  # TICK_SCHEDULE: once a year, so any tick below was started by hand
    host = app.start()
    admin = f"{host.url}/admin/functions"

    for headers in ({}, {"x-functions-key": "wrong"}):
        assert requests.post(f"{admin}/tick", json={"input": ""}, headers=headers, timeout=10).status_code == 401
        assert requests.post(f"{admin}/nosuch", json={"input": ""}, headers=headers, timeout=10).status_code == 401
    assert requests.post(f"{admin}/tick", params={"code": KEY}, json={"input": ""}, timeout=10).status_code == 401
    key = {"x-functions-key": KEY}
    assert requests.post(f"{admin}/nosuch", json={"input": ""}, headers=key, timeout=10).status_code == 404
    assert requests.post(f"{admin}/echo", json={"input": ""}, headers=key, timeout=10).status_code == 404  # HTTP: its route
    assert requests.post(f"{admin}/tick", data=b"not json", headers=key, timeout=10).status_code == 400
    assert app.records("tick") == []

    answer = requests.post(f"{admin}/tick", json={"input": ""}, headers=key, timeout=10)
    assert (answer.status_code, answer.content) == (202, b"")
    tick = wait_for(lambda: app.records("tick"), "the tick started by hand")[0]
    assert tick["past_due"] is False and set(tick["status"]) == {"Last", "Next", "LastUpdated"}  # as the scheduler's

    assert requests.post(f"{admin}/WORK", json={"input": "by hand"}, headers=key, timeout=10).status_code == 202
    work = wait_for(lambda: app.records("work"), "the queue function started by hand")[0]
    assert (work["body"], work["dequeue_count"]) == ("by hand", 1)
    wait_for(lambda: "function=tick trigger=timer outcome=succeeded" in host.log(), "the manual run's log line")
    assert "manual=True" in host.log()
