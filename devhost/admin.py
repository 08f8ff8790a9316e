"""Running a non-HTTP-triggered function by hand: `POST /admin/functions/{functionName}`.

Azure's documented way (Microsoft Learn, "Manually run a non HTTP-triggered function",
https://learn.microsoft.com/azure/azure-functions/functions-manually-run-non-http): POST to `/admin/functions/<name>`
with the master key in `x-functions-key` and the JSON body `{"input": "<TRIGGER_INPUT>"}`; the host answers
`202 Accepted` and runs the function in the background.

As in Azure, and unlike Core Tools (which does not check keys for /admin locally), the key is required: devhost's one
key (`--function-key`, which already stands in for the master key at the ADMIN level) must be given, and with no key
configured every call is refused (401) rather than left open. The key is checked before the function is looked up, so
a caller without it cannot learn which functions exist. Unknown function: 404.

Timer functions get a TimerRequest as the scheduler builds it (past_due False, the current schedule status when the
monitor is on); a manual run does not move the schedule. Queue functions get a QueueMessage whose body is the input
(dequeue count 1; there is no queue message to delete, poison or retry). HTTP functions are called at their route.
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from azure.functions.queue import QueueMessage

from devhost.app_index import FunctionSpec
from devhost.invoker import Invoker
from devhost.timers import TimerRunner

PATH = re.compile(r"^/admin/functions/([^/]+)/?$", re.IGNORECASE)
KEY_HEADER = "x-functions-key"


@dataclass(frozen=True)
class AdminAnswer:
    status: int
    body: bytes = b""


class ManualRuns:
    """The functions `/admin/functions/{name}` may start: timers (with their runner, for the schedule status) and queues."""

    def __init__(self, invoker: Invoker, key: str | None, timers: list[TimerRunner], queues: list[FunctionSpec]) -> None:
        self._invoker = invoker
        self._key = key or ""
        self._timers = {runner.spec.name.lower(): runner for runner in timers}
        self._queues = {spec.name.lower(): spec for spec in queues}

    @staticmethod
    def handles(path: str) -> bool:
        return path.lower().startswith("/admin/")

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> AdminAnswer:
        """The answer to a request under /admin/; a function it accepts is started on its own thread (202)."""
        given = headers.get(KEY_HEADER, "")
        if not self._key or not hmac.compare_digest(given.encode(), self._key.encode()):
            return AdminAnswer(401)
        match = PATH.match(path)
        if match is None or method != "POST":
            return AdminAnswer(404)  # the other admin APIs are not covered
        name = match[1].lower()
        if name not in self._timers and name not in self._queues:
            return AdminAnswer(404)
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = None
        given_input = document.get("input", "") if isinstance(document, dict) else None
        if isinstance(given_input, bool) or not isinstance(given_input, (str, int, float)):
            return AdminAnswer(400, b'{"error": "the body must be {\\"input\\": <a string, number or boolean>}"}')
        if name in self._timers:
            runner = self._timers[name]
            self._start(runner.spec, "timer", runner.request(past_due=False), past_due=False, manual=True)
        else:
            spec = self._queues[name]
            text = given_input if isinstance(given_input, str) else json.dumps(given_input)
            now = dt.datetime.now(dt.timezone.utc)
            message = QueueMessage(id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1, insertion_time=now,
                                   expiration_time=now + dt.timedelta(days=7), time_next_visible=now, pop_receipt="")
            self._start(spec, "queue", message, manual=True)
        return AdminAnswer(202)

    def _start(self, spec: FunctionSpec, trigger: str, value: Any, **details: object) -> None:
        def run() -> None:
            try:
                with self._invoker.invocation(spec, trigger, **details):
                    self._invoker.run(spec, value)
            except Exception:  # logged by the invoker, as for a scheduled run
                pass

        threading.Thread(target=run, name=f"manual-{spec.name}", daemon=True).start()
