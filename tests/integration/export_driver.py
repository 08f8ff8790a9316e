"""A harness that drives the real ExportService step by step, with a crash at any call.

What is real: `shared.bootstrap.build` wires the app against empty Azurite storage (blob and table adapters, blob-lease
connection slots, a secret store) and the real local Mailchimp process. What is faked: the two queues only. The
`Queue` protocol (`send(message, delay_seconds=0)`) is served by `MemoryQueue`, and `ExportDriver.deliver_all`
plays the Functions host: it pops messages and calls `plan` / `process_chunk` as function_app.py does, puts a
message back when its handler raised (at-least-once delivery), and after MAX_DEQUEUE failed deliveries
(host.json maxDequeueCount) hands it to the poison handler (`plan_gave_up` / `chunk_gave_up`).

Crash injection: every port of the service (runs, destinations, segments, work, both queues, the Mailchimp
connections and the client they hand out) is wrapped in `Counted`, a proxy that numbers each method call. Each
HTTP request to Mailchimp is numbered too, by wrapping the connection-slot gate every request passes through
(entered just before the request is sent, left once the answer is in). `Injector.crash_at(n, when)` raises `Crash`
at call number n, once: "before" the call (it never happens) or "after" it (it happened, its answer is lost, as when
a worker dies right after a write); `Injector.rule` can crash at every call it picks (a message that keeps failing
until it is poisoned). A reference run records every call (`Injector.calls`) so a test can aim at any of them.

`Crash` is a BaseException: like a killed worker it skips the product's `except Exception:` clean-up. `Fault` (set
`Injector.exception = Fault`) is an ordinary error, such as a storage call timing out after it took effect.
Labels of calls carry ids, blob names and API path templates, never an email address or a credential.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import threading
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

import requests
from azure.storage.blob import BlobServiceClient

from shared import bootstrap
from shared.config import CONTAINER_WORK, load_settings
from shared.exports import ExportService, Refused
from shared.runs import Run
from tests.e2e.conftest import DEMO_AUDIENCE, DEMO_KEY
from tests.e2e.conftest import destination_body as e2e_destination_body
from tests.services import Azurite, LocalMailchimp

MAX_DEQUEUE = 5  # host.json extensions.queues.maxDequeueCount
HEADER = ("Email", "FirstName", "LastName")


class Crash(BaseException):
    """The worker died here: the message it was handling is delivered again.

    A BaseException, so that it passes the product's `except Exception:` clean-up as a killed process would (no
    clean-up runs); `with` blocks and `finally` still unwind, so connection slots are given back at once instead of
    after their 60 s lease."""


class Fault(Exception):
    """A call that raised an ordinary error (a storage timeout...): clean-up handlers do run."""


@dataclass(frozen=True)
class Call:
    number: int
    port: str  # runs, destinations, segments, work, plan_queue, chunk_queue, connections, mailchimp, http
    method: str
    detail: str  # a short description of the arguments (blob name, update function, HTTP method and path)
    handler: str  # what the driver was doing: start, plan, chunk 0, chunk_gave_up 1, ...

    def __str__(self) -> str:
        return f"#{self.number} [{self.handler}] {self.port}.{self.method}({self.detail})"


class Injector:
    """Numbers the calls made while armed and raises Crash at the chosen one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.armed = False
        self.handler = "-"
        self.calls: list[Call] = []
        self._target: int | None = None
        self._when = "before"
        self.fired: Call | None = None
        self.rule: Callable[[Call], str | None] | None = None  # crash every call it names ("before"/"after")
        self.exception: type[BaseException] = Crash  # or Fault

    def reset(self) -> None:
        with self._lock:
            self.calls = []
            self._target, self.fired, self.rule, self.exception = None, None, None, Crash

    def crash_at(self, number: int, when: str = "before") -> None:
        assert when in ("before", "after")
        self._target, self._when, self.fired = number, when, None

    def _enter(self, port: str, method: str, detail: str) -> tuple[Call | None, str | None]:
        if not self.armed:
            return None, None
        with self._lock:
            call = Call(len(self.calls) + 1, port, method, detail, self.handler)
            self.calls.append(call)
            when = None
            if self._target == call.number:
                when, self._target, self.fired = self._when, None, call
            elif self.rule is not None:
                when = self.rule(call)
        if when == "before":
            raise self.exception(f"{self.exception.__name__} before {call}")
        return call, when

    def run(self, port: str, method: str, detail: str, action: Callable[[], Any]) -> Any:
        call, when = self._enter(port, method, detail)
        result = action()
        if when == "after":
            raise self.exception(f"{self.exception.__name__} after {call}")
        return result

    @contextmanager
    def around(self, port: str, method: str, detail: str) -> Iterator[None]:
        call, when = self._enter(port, method, detail)
        yield
        if when == "after":
            raise self.exception(f"{self.exception.__name__} after {call}")


def _detail(args: tuple, kwargs: dict) -> str:
    parts = []
    for value in args:
        if callable(value):
            parts.append(getattr(value, "__qualname__", "fn").replace("ExportService.", ""))
        elif isinstance(value, (str, int)):
            parts.append(str(value)[:60])
        elif isinstance(value, bytes):
            parts.append(f"<{len(value)} bytes>")
        elif isinstance(value, dict):
            parts.append(json.dumps(value)[:60])
        else:
            parts.append(type(value).__name__)
    return ", ".join(parts)


class Counted:
    """A port whose every public method call goes through the injector (numbered, possibly crashed)."""

    def __init__(self, target: Any, port: str, injector: Injector) -> None:
        self._target = target
        self._port = port
        self._injector = injector

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            return self._injector.run(self._port, name, _detail(args, kwargs), lambda: attr(*args, **kwargs))

        return counted


class CountedConnections(Counted):
    """MailchimpConnections whose clients are counted too (call() hands its action a counted client)."""

    def call(self, destination: Any, action: Callable[[Any], Any]) -> Any:
        real = self._target
        return self._injector.run("connections", "call", destination.id,
                                  lambda: real.call(destination, lambda client: action(Counted(client, "mailchimp", self._injector))))

    def client(self, destination: Any) -> Any:
        return Counted(self._injector.run("connections", "client", destination.id, lambda: self._target.client(destination)),
                       "mailchimp", self._injector)


def _counting_gates(connections: Any, injector: Injector) -> None:
    """Every Mailchimp request passes its account's connection-slot gate (held from just before the request is sent
    until its answer is in): wrapping the gate numbers each HTTP request, and a crash "after" one is a write that
    happened but whose answer was lost. The gate factory is bootstrap's (blob-lease slots in Azurite), kept as is."""
    real_factory = connections._gate_factory

    def factory(account: str, cap: int) -> Callable[[], Any]:
        real_gate = real_factory(account, cap)

        @contextmanager
        def gate() -> Iterator[None]:
            frame = sys._getframe(2)  # Transport._once (through contextmanager's __enter__): for the label only
            where = str(frame.f_locals.get("where", "request"))
            with injector.around("http", where.split(" ", 1)[0], where.split(" ", 1)[-1]):
                with real_gate():
                    yield

        return gate

    connections._gate_factory = factory


@dataclass
class Message:
    body: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    dequeue_count: int = 0


class MemoryQueue:
    """The Queue protocol in memory; messages are JSON-serialised on the way in, as the real adapter does."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: deque[Message] = deque()
        self.sent = 0

    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        self.messages.append(Message(json.loads(json.dumps(message))))
        self.sent += 1

    def __len__(self) -> int:
        return len(self.messages)


class MemorySecrets:
    """The SecretStore protocol in memory (credentials never touch the disk in these tests)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def set(self, name: str, value: str) -> None:
        self._values[name] = value

    def delete(self, name: str) -> None:
        self._values.pop(name, None)


@dataclass
class Failure:
    handler: str
    error: BaseException
    dequeue_count: int


def destination_body(**overrides: Any) -> dict[str, Any]:
    """The end-to-end tests' destination, with the schedule and arrival triggers off: this driver starts exports."""
    return e2e_destination_body(**{"schedule": {"enabled": False}, "exportOnArrival": False, **overrides})


class ExportDriver:
    """The real ExportService over Azurite and the local Mailchimp, its queues driven by the test."""

    def __init__(self, azurite: Azurite, mailchimp: LocalMailchimp, **env: str) -> None:
        self.mailchimp = mailchimp
        self.settings = load_settings({
            "AzureWebJobsStorage": azurite.connection_string,
            "SEGMENTS_CONTAINER": "segments",
            "MAILCHIMP_API_BASE_URL": mailchimp.api_root,
            "MAILCHIMP_RETRY_SECONDS": "2",
            "EXPORT_CHUNK_SIZE": "500",
            **env,
        })
        self.app = bootstrap.build(self.settings, secrets=MemorySecrets())
        real = self.app.exports
        self.injector = Injector()
        _counting_gates(real.connections, self.injector)
        self.plan_queue = MemoryQueue("export-plans")
        self.chunk_queue = MemoryQueue("export-chunks")
        self.plan_poison = MemoryQueue("export-plans-poison")
        self.chunk_poison = MemoryQueue("export-chunks-poison")
        i = self.injector
        self.service: ExportService = dataclasses.replace(
            real,
            destinations=Counted(real.destinations, "destinations", i),
            runs=Counted(real.runs, "runs", i),
            segments=Counted(real.segments, "segments", i),
            work=Counted(real.work, "work", i),
            plan_queue=Counted(self.plan_queue, "plan_queue", i),
            chunk_queue=Counted(self.chunk_queue, "chunk_queue", i),
            connections=CountedConnections(real.connections, "connections", i),
        )
        self.raw = real  # the same adapters, unwrapped: for reading state in assertions
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.segments_container = blobs.get_container_client(self.settings.segments_container)
        if not self.segments_container.exists():
            self.segments_container.create_container()
        self.work_container = blobs.get_container_client(CONTAINER_WORK)
        self.failures: list[Failure] = []
        self.dropped: list[Message] = []

    # --- setting up ---------------------------------------------------------------------------------------

    def create_destination(self, **overrides: Any) -> str:
        return self.app.destinations.create(destination_body(**overrides), "tester").id

    def write_snapshot(self, segment: str, taken_at: datetime, rows: Iterable[Iterable[str]],
                       header: Iterable[str] = HEADER) -> str:
        """Plain layout: `<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/part-0.csv` (header first), then `_SUCCESS`."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(header))
        writer.writerows([list(row) for row in rows])
        folder = f"{segment}/{taken_at:%Y/%m/%d/%H%M}/"
        self.segments_container.upload_blob(folder + "part-0.csv", out.getvalue().encode("utf-8"), overwrite=True)
        self.segments_container.upload_blob(folder + "_SUCCESS", b"", overwrite=True)
        return folder

    def reset_mailchimp(self) -> None:
        self.mailchimp.reset()

    def reset_queues(self) -> None:
        """Empty queues, counters at zero, no failures recorded (between independent scenarios)."""
        for queue in (self.plan_queue, self.chunk_queue, self.plan_poison, self.chunk_poison):
            queue.messages.clear()
            queue.sent = 0
        self.failures.clear()
        self.dropped.clear()

    # --- running ------------------------------------------------------------------------------------------

    def start(self, destination_id: str, confirm_untag: bool = False) -> str:
        """POST .../exports; a start that crashed is asked again, as a client retries after a 500."""
        self.injector.handler = "start"
        try:
            return self.service.start(destination_id, "http", confirm_untag=confirm_untag).id
        except (Crash, Fault) as crash:  # HTTP 500 to the caller
            self.failures.append(Failure("start", crash, 1))
        try:
            return self.service.start(destination_id, "http", confirm_untag=confirm_untag).id
        except Refused as refused:  # the crashed start got its run going after all: follow that one
            assert refused.status == 409, refused.message
            run_id = self.raw.destinations.active_run(destination_id)
            assert run_id, refused.message
            return run_id

    def deliver_one(self, queue: MemoryQueue) -> bool:
        """Deliver the first message of `queue`; False when its handler raised (it went back, or to poison)."""
        message = queue.messages.popleft()
        message.dequeue_count += 1
        body = message.body
        attempt = f"{message.id[:8]}-{message.dequeue_count}"
        if queue is self.plan_queue:
            handler, call = "plan", lambda: self.service.plan(body["runId"])
            poison = self.plan_poison
        elif queue is self.chunk_queue:
            handler = f"chunk {body['chunk']}"
            call = lambda: self.service.process_chunk(body["runId"], int(body["chunk"]), attempt)  # noqa: E731
            poison = self.chunk_poison
        elif queue is self.plan_poison:
            handler, call = "plan_gave_up", lambda: self.service.plan_gave_up(body["runId"])
            poison = None
        else:
            handler = f"chunk_gave_up {body['chunk']}"
            call = lambda: self.service.chunk_gave_up(body["runId"], int(body["chunk"]), attempt)  # noqa: E731
            poison = None
        self.injector.handler = handler
        try:
            call()
            return True
        except (Exception, Crash) as error:  # noqa: BLE001 - the host redelivers whatever went wrong
            self.failures.append(Failure(handler, error, message.dequeue_count))
            if message.dequeue_count < MAX_DEQUEUE:
                queue.messages.append(message)
            elif poison is not None:
                poison.send(body)
            else:
                self.dropped.append(message)
            return False
        finally:
            self.injector.handler = "-"

    def deliver_all(self, limit: int = 2000) -> None:
        """Until every queue is empty: plans first, then chunks, then poison queues (FIFO within each)."""
        for _ in range(limit):
            queue = next((q for q in (self.plan_queue, self.chunk_queue, self.plan_poison, self.chunk_poison) if q), None)
            if queue is None:
                return
            self.deliver_one(queue)
        raise AssertionError(f"queues still not empty after {limit} deliveries")

    def export(self, destination_id: str, confirm_untag: bool = False) -> Run:
        run_id = self.start(destination_id, confirm_untag=confirm_untag)
        self.deliver_all()
        return self.run(run_id)

    # --- reading ------------------------------------------------------------------------------------------

    def run(self, run_id: str) -> Run:
        run = self.raw.runs.get(run_id)
        assert run is not None, run_id
        return run

    def members(self, audience_id: str = DEMO_AUDIENCE) -> list[dict[str, Any]]:
        """Every contact the local Mailchimp holds (archived ones too), from its admin dump."""
        return self.mailchimp.admin("GET", f"lists/{audience_id}/members").json()["members"]

    def work_blobs(self, prefix: str) -> dict[str, bytes]:
        return {b.name: self.work_container.download_blob(b.name).readall()
                for b in self.work_container.list_blobs(name_starts_with=prefix)}

    # --- the audience by hand (admin API and the real API, as a person in Mailchimp would) ------------

    def put_member(self, email: str, status: str, *, archived: bool = False, unsubscribed_by: str = "self",
                   merge_fields: dict[str, Any] | None = None, tags: list[str] | None = None,
                   audience_id: str = DEMO_AUDIENCE) -> None:
        body: dict[str, Any] = {"list_id": audience_id, "email": email, "status": status, "archived": archived,
                                "unsubscribed_by": unsubscribed_by}
        if merge_fields is not None:
            body["merge_fields"] = merge_fields
        if tags is not None:
            body["tags"] = tags
        self.mailchimp.admin("POST", "members", json=body)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.mailchimp.api_root}{path}", auth=("tester", DEMO_KEY), timeout=10, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response


def minutes_after(start: datetime, minutes: int) -> datetime:
    return start + timedelta(minutes=minutes)


TAKEN = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)  # the first snapshot's folder time in the tests
