"""A run emits what the issue asks for: chunk durations, members by outcome (summing to the run's counts, every
outcome but failed present), its profiles per second by destination, a Mailchimp 429 and the retry after it, every Mailchimp call as a CLIENT span with its HTTP status, and log
records carrying runId, destinationId, chunk and trigger as fields; no email address in any span, metric or record.

The real ExportService over Azurite and the local Mailchimp (export_driver.py), with opentelemetry-sdk's in-memory span
exporter and metric reader installed as the global providers (what shared.telemetry.setup does with Azure Monitor's or
the console's exporters).
"""
from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import telemetry
from shared.runs import OUTCOME_KEYS
from tests.integration.export_driver import TAKEN, ExportDriver
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


def test_a_run_emits_its_fields_metrics_and_mailchimp_dependencies(driver: ExportDriver, captured, caplog) -> None:
    spans, reader = captured
    driver.reset_mailchimp()
    # every outcome but failed: 25 new members, two whose first name changed, one already in step, one Mailchimp
    # refuses as fake (mailchimp_local/addresses.py)
    for name in ("upd0", "upd1"):
        driver.put_member(f"{name}@contoso.com", "subscribed", merge_fields={"FNAME": "Old", "LNAME": "Last"})
    driver.put_member("same0@contoso.com", "subscribed", merge_fields={"FNAME": "Same", "LNAME": "Last"},
                      tags=["Observed"])
    driver.write_snapshot("Observed", TAKEN, [
        *[(f"obs{i:02d}@contoso.com", f"First{i}", "Last") for i in range(25)],
        ("upd0@contoso.com", "New", "Last"), ("upd1@contoso.com", "New", "Last"),
        ("same0@contoso.com", "Same", "Last"), ("test@contoso.com", "Refused", "Last")])
    destination = driver.create_destination(segments=["Observed"])
    before = points(reader)
    spans.clear()
    caplog.set_level(logging.INFO)
    telemetry.install_log_fields()  # on pytest's handler, as setup() puts it on the Functions worker's
    run_id = driver.start(destination)
    driver.mailchimp.admin("POST", "faults", json={"rates": {"429": 1.0}, "limit": 1, "seed": 1})  # the next call
    try:
        driver.deliver_all()
    finally:
        driver.mailchimp.admin("POST", "faults", json={})
    run = driver.run(run_id)
    after = points(reader)
    delta = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}

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
