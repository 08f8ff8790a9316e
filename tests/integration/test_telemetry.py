"""A run emits what the issue asks for: chunk durations, members by outcome (summing to the run's counts, every
outcome but failed present), its profiles per second by destination, a Mailchimp 429 and the retry after it, every Mailchimp call as a CLIENT span with its HTTP status, and log
records carrying runId, destinationId, chunk and trigger as fields; no email address in any span, metric or record.
A run with a chunk Mailchimp keeps failing (poisoned, its members counted failed) emits those members as `failed`.

The real ExportService over Azurite and the local Mailchimp (export_driver.py), with opentelemetry-sdk's in-memory span
exporter and metric reader installed as the global providers (what shared.telemetry.setup does with Azure Monitor's or
the console's exporters).
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import bootstrap, telemetry
from shared.mailchimp.retry import RetryPolicy
from shared.runs import OUTCOME_KEYS, Run
from tests.e2e.conftest import DEMO_AUDIENCE
from tests.integration.export_driver import MAX_DEQUEUE, TAKEN, ExportDriver
from tests.privacy import LOOKS_LIKE_EMAIL

_providers: dict[str, object] = {}


@pytest.fixture(scope="module")
def captured():
    """Global providers can be set once per process: this module's, kept for any later use in the same session."""
    if not _providers:
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _providers.update(spans=spans, reader=reader)
    return _providers["spans"], _providers["reader"]


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server, EXPORT_CHUNK_SIZE="10")


@pytest.fixture(scope="module")
def impatient_driver(storage, mailchimp_server) -> ExportDriver:
    """The app's retry policy (6 attempts within MAILCHIMP_RETRY_SECONDS) with backoffs of a few ms instead of up to
    seconds: each delivery of a chunk Mailchimp keeps failing still tries 6 times, in well under a second."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "RetryPolicy", functools.partial(RetryPolicy, base_backoff=0.005, max_backoff=0.02))
        return ExportDriver(storage, mailchimp_server, EXPORT_CHUNK_SIZE="10")


def points(reader: InMemoryMetricReader) -> dict[tuple[str, str], float]:
    """(metric, outcome or destination) -> counter value, or histogram count; only this app's meter."""
    found: dict[tuple[str, str], float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != telemetry.NAME:
                continue
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, str(point.attributes.get("outcome", point.attributes.get("destinationId", ""))))
                    found[key] = found.get(key, 0) + (point.count if hasattr(point, "count") else point.value)
    return found


def since(reader: InMemoryMetricReader, before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """What changed since `before` (the reader's points are cumulative)."""
    after = points(reader)
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def every_outcome(driver: ExportDriver, segment: str) -> str:
    """A destination exporting `segment`, whose snapshot makes a member of every outcome a chunk can end in but
    failed: 25 new members, two whose first name changed, one already in step (settled by planning), one Mailchimp
    refuses as fake (mailchimp_local/addresses.py). Its id."""
    prefix = segment.lower()
    for n in range(2):
        driver.put_member(f"{prefix}.changed{n}@contoso.com", "subscribed", merge_fields={"FNAME": "Old", "LNAME": "Last"})
    driver.put_member(f"{prefix}.same@contoso.com", "subscribed", merge_fields={"FNAME": "Same", "LNAME": "Last"},
                      tags=[segment])
    driver.write_snapshot(segment, TAKEN, [
        *[(f"{prefix}{i:02d}@contoso.com", f"First{i}", "Last") for i in range(25)],
        *[(f"{prefix}.changed{n}@contoso.com", "New", "Last") for n in range(2)],
        (f"{prefix}.same@contoso.com", "Same", "Last"), ("test@contoso.com", "Refused", "Last")])
    return driver.create_destination(segments=[segment])


def deliver_all_under(driver: ExportDriver, run_id: str, faults: dict[str, Any]) -> Run:
    """Every queued message delivered while the local Mailchimp injects `faults`; the run after."""
    driver.mailchimp.admin("POST", "faults", json=faults)
    try:
        driver.deliver_all()
    finally:
        driver.mailchimp.admin("POST", "faults", json={})
    return driver.run(run_id)


def test_a_run_emits_its_fields_metrics_and_mailchimp_dependencies(driver: ExportDriver, captured, caplog) -> None:
    spans, reader = captured
    driver.reset_mailchimp()
    destination = every_outcome(driver, "Observed")  # but failed
    before = points(reader)
    spans.clear()
    caplog.set_level(logging.INFO)
    telemetry.install_log_fields()  # on pytest's handler, as setup() puts it on the Functions worker's
    run_id = driver.start(destination)
    run = deliver_all_under(driver, run_id, {"rates": {"429": 1.0}, "limit": 1, "seed": 1})  # a 429 to the next call
    delta = since(reader, before)

    assert run.finished and run.total_chunks == 3, run.public()
    assert {outcome: run.counts[outcome] for outcome in OUTCOME_KEYS} == \
        {"created": 25, "updated": 2, "unchanged": 1, "refused": 1, "failed": 0}, run.public()
    assert delta[("export.chunk.duration", "")] == 3
    assert {outcome: delta.get(("export.members", outcome), 0) for outcome in OUTCOME_KEYS} == \
        {outcome: run.counts[outcome] for outcome in OUTCOME_KEYS}
    assert delta[("export.profiles_per_second", destination)] == 1  # throughput per destination (the workbook's)
    assert delta[("mailchimp.throttled", "")] == 1 and delta[("mailchimp.retries", "")] == 1

    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    statuses = [s.attributes["http.response.status_code"] for s in calls]
    assert 429 in statuses and statuses.count(429) == 1 and all(200 <= s < 300 or s in (404, 429) for s in statuses)
    assert all(s.name.startswith(("GET /", "POST /", "PUT /", "PATCH /", "DELETE /")) and "{" in s.name or s.name.endswith("/")
               for s in calls), [s.name for s in calls]
    assert any(s.attributes.get("runId") == run.id and s.attributes.get("chunk") is not None for s in calls)

    records = [r for r in caplog.records if getattr(r, "runId", None) == run.id]
    finished = [r for r in records if "finished" in r.getMessage()]
    assert finished and finished[0].destinationId == destination and finished[0].trigger == "http"
    assert isinstance(finished[0].chunk, int)
    assert any("planned" in r.getMessage() and r.destinationId == destination for r in records)
    assert any("mailchimp retry" in r.getMessage() for r in records)

    everything = (json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
                  + reader.get_metrics_data().to_json()
                  + json.dumps([[r.getMessage(), {k: str(v) for k, v in vars(r).items()}] for r in caplog.records]))
    assert not LOOKS_LIKE_EMAIL.findall(everything)


def test_members_of_a_chunk_mailchimp_keeps_failing_count_failed_in_the_metric(impatient_driver: ExportDriver, captured,
                                                                             caplog) -> None:
    """Mailchimp answers 500 to every batch subscribe once two of the three chunks are sent: the third chunk's message
    fails every delivery (each after the app's retries), is poisoned, and its poison handler (chunk_gave_up) counts its
    members failed. The members metric says so, outcome by outcome as the run's counts do, and so does the run's
    "finished" record (membersFailed, what the alerts read)."""
    driver, (_spans, reader) = impatient_driver, captured
    driver.reset_mailchimp()
    driver.reset_queues()
    destination = every_outcome(driver, "Failing")  # 10 of its new members in the chunk that fails
    before = points(reader)
    caplog.set_level(logging.INFO)
    telemetry.install_log_fields()
    run_id = driver.start(destination)
    while driver.plan_queue:
        assert driver.deliver_one(driver.plan_queue)
    assert len(driver.chunk_queue) == 3, len(driver.chunk_queue)
    # the last chunk planned (the members who are not certainly new, and the refused one) goes first, and a chunk of
    # ten new members is the one that fails (a queue keeps no order)
    driver.chunk_queue.messages.rotate(1)
    for _ in range(2):
        assert driver.deliver_one(driver.chunk_queue)
    failing = driver.chunk_queue.messages[0].body["chunk"]
    run = deliver_all_under(driver, run_id, {"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}$", "method": "POST",
                                             "seed": 1})  # every batch subscribe from now on
    delta = since(reader, before)

    assert [f.handler for f in driver.failures] == [f"chunk {failing}"] * MAX_DEQUEUE and driver.chunk_poison.sent == 1
    assert all("(500)" in str(f.error) for f in driver.failures), driver.failures[0].error
    assert run.finished and run.status == "completed_with_errors" and run.total_chunks == 3, run.public()
    counts = {outcome: run.counts[outcome] for outcome in OUTCOME_KEYS}
    assert counts == {"created": 15, "updated": 2, "unchanged": 1, "refused": 1, "failed": 10}, run.public()
    assert {outcome: delta.get(("export.members", outcome), 0) for outcome in OUTCOME_KEYS} == counts
    assert delta[("mailchimp.retries", "")] >= MAX_DEQUEUE  # each delivery retried before it gave up
    assert delta[("export.profiles_per_second", destination)] == 1
    finished = [r for r in caplog.records if getattr(r, "runId", None) == run.id and "finished" in r.getMessage()]
    assert len(finished) == 1 and finished[0].membersFailed == counts["failed"], finished
