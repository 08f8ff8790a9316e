"""What a run tells Azure Monitor (or the console): log fields, Mailchimp dependencies and export metrics.

- `run_context(run_id=..., destination_id=..., chunk=..., trigger=...)` (a context variable) puts `runId`,
  `destinationId`, `chunk` and `trigger` on every log record made inside it (`RunFields`, put on the root logger's
  handlers by `install_log_fields`), so `log.info("export %s planned", ...)` carries them as fields, not only in its text.
- Metric instruments of the meter `mailchimp_export`, recorded where the work happens: `export.members` (attribute
  `outcome`), `export.chunk.duration`, `export.profiles_per_second`, `mailchimp.throttled` (429s), `mailchimp.retries`.
- `mailchimp_call` wraps one HTTP exchange with Mailchimp in a CLIENT span named by its path template (Application
  Insights shows it as a dependency with its result code). Its URL is the template's, so it names no member (member
  URLs carry the subscriber hash, a pseudonym of the address), and the query string (paging) is left out.

Only the OpenTelemetry API is imported here: with no provider set up (no `setup`, or set up `off`) every instrument and
span is a no-op. `setup` is called once per process by shared.bootstrap (`_configured`, before the app is built); the
SDK and Azure Monitor are imported there, only when asked for.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

NAME = "mailchimp_export"
FIELDS = ("runId", "destinationId", "chunk", "trigger")
OUTCOMES = ("created", "updated", "unchanged", "refused", "failed")

_fields: ContextVar[Mapping[str, Any]] = ContextVar("export_run_fields", default={})


@contextmanager
def run_context(*, run_id: str | None = None, destination_id: str | None = None, chunk: int | None = None,
                trigger: str | None = None) -> Iterator[None]:
    """Within this block (this thread), log records and Mailchimp spans carry these fields (None ones are left out;
    fields of an enclosing block stay)."""
    given = dict(zip(FIELDS, (run_id, destination_id, chunk, trigger)))
    token = _fields.set({**_fields.get(), **{k: v for k, v in given.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def describe_run(run: Any) -> None:
    """Inside a run_context, once the run is loaded: add its destination and trigger (undone when the block ends).
    Outside one it does nothing, so no field outlives the work it describes."""
    current = _fields.get()
    if run is not None and current:
        _fields.set({**current, "runId": run.id, "destinationId": run.destination_id, "trigger": run.trigger})


def current_fields() -> Mapping[str, Any]:
    return _fields.get()


class RunFields(logging.Filter):
    """Adds the run_context's fields to a record as attributes (`extra=` would do the same); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def install_log_fields(logger: logging.Logger | None = None) -> None:
    """Put RunFields on every handler of `logger` (the root logger: the Functions worker's handler, Azure Monitor's,
    the console's), so records of every logger that reach them carry the fields; a filter on a logger would miss its
    children's records. Handlers added later need it too (setup adds it after configuring). Idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RunFields) for f in handler.filters):
            handler.addFilter(RunFields())


# --- metrics: created once; through the API's proxy they reach whichever provider is set up, also later -----------

_meter = metrics.get_meter(NAME)
MEMBERS = _meter.create_counter("export.members", unit="{member}",
                                description="Members sent to Mailchimp (or settled without a call), by outcome")
CHUNK_DURATION = _meter.create_histogram("export.chunk.duration", unit="s",
                                         description="Time to upsert, tag and count one chunk")
PROFILES_PER_SECOND = _meter.create_histogram("export.profiles_per_second", unit="{profile}/s",
                                              description="Members accounted for per second of a finished run")
THROTTLED = _meter.create_counter("mailchimp.throttled", unit="{response}",
                                  description="Mailchimp answers 429 Too Many Requests")
RETRIES = _meter.create_counter("mailchimp.retries", unit="{retry}",
                                description="Mailchimp requests sent again after a 429, 5xx, timeout or lost connection")

_tracer = trace.get_tracer(NAME)


def count_members(per_segment: Mapping[str, Mapping[str, int]]) -> None:
    """A chunk's (or planning's) per-segment counts, added by outcome."""
    for outcome in OUTCOMES:
        total = sum(counts.get(outcome, 0) for counts in per_segment.values())
        if total:
            MEMBERS.add(total, {"outcome": outcome})


@contextmanager
def timed_chunk() -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        CHUNK_DURATION.record(time.monotonic() - started)


def run_finished(run: Any) -> None:
    """Once, by the worker that settled the run: its throughput (Run.public()'s profilesPerSecond; none for a
    preview or a run that sent nobody), by destination (few per app: the workbook charts each one's)."""
    rate = run.public().get("profilesPerSecond")
    if rate:
        PROFILES_PER_SECOND.record(rate, {"destinationId": run.destination_id, "trigger": run.trigger,
                                          "status": run.status})


def ended_fields(run: Any, *, credentials_refused: bool | None = None) -> dict[str, Any]:
    """`extra=` of the log line that says a run ended ("export ... finished" / "... failed"): what the alerts and the
    workbook (infra/app/alerts.bicep, workbook.json) query in AppTraces.Properties. `credentialsRefused`: Mailchimp
    refused the credentials during the run (the run's abort, set only on a MailchimpAuthError), unless given."""
    counts = run.counts
    refused = bool(run.details.get("abort")) if credentials_refused is None else credentials_refused
    return {"runStatus": run.status, "destinationId": run.destination_id, "trigger": run.trigger,
            "membersRead": counts.get("read", 0), "membersFailed": counts.get("failed", 0),
            "membersRefused": counts.get("refused", 0), "membersInvalid": counts.get("invalid", 0),
            "credentialsRefused": refused}


GIVEN_UP = "what it asked for is counted or recorded as given up on"


def handled_again(queue: str, where: str, remedy: str) -> str:
    """`then` for a poison queue's handler that handles the event once more (`queue`: the poison queue): where the
    message goes if that fails too, `where` its subject is then, and what to do about it."""
    return (f"handled once more (up to 5 deliveries); if that fails too, it moves on to {queue}-poison, read by nothing "
            f"({where}): {remedy}")


def poisoned(queue: str, what: str, then: str = GIVEN_UP) -> None:
    """A poison queue's handler got a message (`queue`: the poison queue's name; `what`: the run, chunk or request
    it was for, never a person's data; `then`: what happens to it now): one warning with `poisonQueue` as a field,
    which the poison-message alert (infra/app/alerts.bicep) reads."""
    logging.getLogger(__name__).warning("a message was poisoned into queue %s (%s): %s", queue, what, then,
                                        extra={"poisonQueue": queue})


def throttled() -> None:
    THROTTLED.add(1)


def retried() -> None:
    RETRIES.add(1)


@contextmanager
def mailchimp_call(method: str, root: str, template: str) -> Iterator[Any]:
    """One HTTP exchange as a CLIENT span; the caller sets the status with `answered(span, status)`."""
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": root + template,
                                  "url.template": template, **_fields.get()}
    with _tracer.start_as_current_span(f"{method} {template}", kind=SpanKind.CLIENT, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except Exception as error:  # timeouts and lost connections: no status code, an error type
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR))
            raise


def answered(span: Any, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    if status == 429:
        throttled()


# --- set-up, once per process ---------------------------------------------------------------------------------

_mode: str | None = None
CONSOLE_EXPORT_MILLIS = 10_000


def setup(mode: str, connection_string: str | None = None) -> str:
    """`azure`: Azure Monitor through its OpenTelemetry distro (traces, metrics, logs; APPLICATIONINSIGHTS_CONNECTION_
    STRING, and APPLICATIONINSIGHTS_AUTHENTICATION_STRING for Entra ID, read by the exporter itself); `console`: the
    same to stdout; `off`: nothing is exported. Log fields are installed in every mode. Once per process."""
    global _mode
    if _mode is not None:
        install_log_fields()
        return _mode
    _mode = mode
    if mode == "azure":
        # The distro in the worker, as https://learn.microsoft.com/azure/azure-functions/opentelemetry-howto?pivot=
        # programming-language-python has Python apps do; the host's own OpenTelemetry mode (host.json telemetryMode,
        # a Flex Consumption preview) is left off (docs/deploy.md, "Telemetry"). The exporter reads
        # APPLICATIONINSIGHTS_AUTHENTICATION_STRING itself: Entra ID sign-in with the app's managed identity.
        from azure.monitor.opentelemetry import configure_azure_monitor

        # Mailchimp calls get their spans from mailchimp_call (named by template, no member in the URL): the generic
        # HTTP instrumentations would record member URLs, and every storage call a second time.
        off = {"enabled": False}
        configure_azure_monitor(connection_string=connection_string, logger_name="",
                                instrumentation_options={name: off for name in ("requests", "urllib", "urllib3", "django",
                                                                                "fastapi", "flask", "psycopg2", "httpx")})
    elif mode == "console":
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import ConsoleLogExporter, SimpleLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry._logs import set_logger_provider

        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": NAME})  # OTEL_SERVICE_NAME, when set, wins
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=CONSOLE_EXPORT_MILLIS)]))
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogExporter()))
        set_logger_provider(logger_provider)
        logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))
    install_log_fields()  # on the handlers there were and on the one just added
    return mode
