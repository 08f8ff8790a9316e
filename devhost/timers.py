"""Timer triggers with the schedule monitor of the Functions timer extension.

As in Azure: with useMonitor, the schedule status (Last, Next, LastUpdated) is saved after every run; a host
that starts after the saved Next has passed runs the function once at once with past_due=True. While the host
runs, an occurrence missed because a run overran fires as soon as the run ends, with past_due=False (Azure
does the same). Occurrences are computed in UTC, the only time zone Flex Consumption offers.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from azure.functions.timer import TimerRequest

from devhost.app_index import FunctionSpec
from devhost.background import Background
from devhost.errors import ConfigError
from devhost.invoker import Invoker
from devhost.ncrontab import CronSchedule
from devhost.settings import resolve_expression
from devhost.state import StateFile

log = logging.getLogger("devhost.timers")
STATE_SECTION = "timers"
NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)  # Azure's DateTime.MinValue for "no run yet"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class ScheduleStatus:
    last: dt.datetime
    next: dt.datetime
    last_updated: dt.datetime

    def to_json(self) -> dict[str, str]:
        """The shape Azure passes as TimerRequest.schedule_status and devhost stores."""
        return {"Last": self.last.isoformat(), "Next": self.next.isoformat(), "LastUpdated": self.last_updated.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ScheduleStatus:
        return cls(*(dt.datetime.fromisoformat(data[key]) for key in ("Last", "Next", "LastUpdated")))


@dataclass(eq=False)
class TimerRunner(Background):
    """One timer-triggered function; it runs on the runner's own thread, so runs never overlap (as in Azure)."""

    spec: FunctionSpec
    schedule: CronSchedule
    run_on_startup: bool
    use_monitor: bool
    state: StateFile
    invoker: Invoker
    stopping: threading.Event

    def __post_init__(self) -> None:
        self.status = ScheduleStatus(NEVER, self.schedule.next_after(utcnow()), NEVER)
        super().__init__(f"timer-{self.spec.name}")

    @classmethod
    def build(cls, spec: FunctionSpec, state: StateFile, invoker: Invoker, stopping: threading.Event) -> TimerRunner:
        """Read schedule (`%SETTING%` allowed), runOnStartup and useMonitor from a timerTrigger binding."""
        where = f"function {spec.name}"
        try:
            schedule = CronSchedule.parse(resolve_expression(spec.trigger["schedule"], where))
        except ValueError as error:
            raise ConfigError(f"{where}: schedule {error}") from None
        use_monitor = spec.trigger.get("useMonitor")
        if use_monitor is None:  # Azure's default: monitor schedules that recur at most once a minute
            first = schedule.next_after(utcnow())
            use_monitor = schedule.next_after(first) - first >= dt.timedelta(minutes=1)
        return cls(spec, schedule, bool(spec.trigger.get("runOnStartup")), use_monitor, state, invoker, stopping)

    def _run(self) -> None:
        if self.use_monitor and self._check_past_due(utcnow()):
            log.info("timer %s is past due (missed %s): running it now", self.spec.name, self.status.next.isoformat())
            self._fire(past_due=True)
        elif self.run_on_startup:
            self._fire(past_due=False)
        while not self.stopping.is_set():
            wait = (self.status.next - utcnow()).total_seconds()
            if wait > 0:
                self.stopping.wait(wait)  # may wake a little early: the loop checks the time again
            else:
                self._fire(past_due=False)

    def _check_past_due(self, now: dt.datetime) -> bool:
        """Load the saved status, re-basing it if the schedule changed; True when an occurrence was missed."""
        saved = self.state.get(STATE_SECTION, self.spec.name)
        if saved is None:
            self._save(ScheduleStatus(NEVER, self.schedule.next_after(now), now))
            return False
        status = ScheduleStatus.from_json(saved)
        base = status.last if status.last > NEVER else status.last_updated if status.last_updated > NEVER else now
        expected = self.schedule.next_after(base)
        if status.next != expected:  # the schedule changed since the status was written
            if now > expected:
                base, expected = now, self.schedule.next_after(now)
            status = ScheduleStatus(NEVER, expected, base)
            self._save(status)
        self.status = status
        return now > status.next

    def request(self, past_due: bool) -> TimerRequest:
        """The trigger argument of a run now (also for a run started by hand, devhost/admin.py)."""
        return TimerRequest(past_due=past_due, schedule={"AdjustForDST": True},
                            schedule_status=self.status.to_json() if self.use_monitor else None)

    def _fire(self, past_due: bool) -> None:
        invoked_at = utcnow()
        request = self.request(past_due)
        try:
            with self.invoker.invocation(self.spec, "timer", past_due=past_due):
                self.invoker.run(self.spec, request)
        except Exception:  # logged by the invoker; a failed run does not stop the schedule
            pass
        # Next counts from when this run started: occurrences that passed while it ran collapse into one run.
        self._save(ScheduleStatus(invoked_at, self.schedule.next_after(invoked_at), invoked_at))

    def _save(self, status: ScheduleStatus) -> None:
        self.status = status
        if self.use_monitor:
            self.state.put(STATE_SECTION, self.spec.name, status.to_json())
