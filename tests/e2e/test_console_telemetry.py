"""One setting points the telemetry at the console: the real host with `OTEL_EXPORTER=console` runs an export, and its
output holds what Azure Monitor would get (shared/telemetry.py `setup`, opentelemetry-sdk's console exporters): log
records carrying runId, destinationId and trigger as attributes, a CLIENT span per Mailchimp call with its HTTP
status, and the app's metrics, members by outcome adding up to the run's counts; no email address anywhere in it.

tests/integration/test_telemetry.py checks the same with in-memory exporters, more closely (429s and retries); this
checks that the setting alone gets it all out of a running host.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared.runs import OUTCOME_KEYS
from shared.telemetry import CONSOLE_EXPORT_MILLIS, NAME
from tests.e2e.conftest import create_destination, host_log, start_export, wait_for, wait_for_run
from tests.privacy import LOOKS_LIKE_EMAIL



def printed_objects(log: Path) -> list[dict[str, Any]]:
    """The JSON objects the console exporters printed (each starts on a line of its own with "{"), among the host's
    other lines."""
    text = log.read_text(encoding="utf-8", errors="replace")
    decoder, found = json.JSONDecoder(), []
    for start in (m.start() for m in re.finditer(r"(?m)^\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def app_metrics(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Metric name -> data points of this app's meter, from the newest export (the counters are cumulative)."""
    newest: dict[str, list[dict[str, Any]]] = {}
    for value in objects:
        for resource in value.get("resource_metrics", []):
            for scope in resource["scope_metrics"]:
                if scope["scope"]["name"] == NAME:
                    for metric in scope["metrics"]:
                        newest[metric["name"]] = metric["data"]["data_points"]
    return newest


def test_one_setting_prints_a_runs_log_fields_spans_and_metrics_to_the_hosts_output(start_host, segments, tmp_path):
    rows = ["Email,FirstName,LastName", *(f"console{i}@contoso.com,First{i},Last" for i in range(7)),
            "test@contoso.com,Refused,AsFake", "not-an-email,Invalid,Row"]
    segments.upload_blob("Printed/2026/11/28/1700/part-0.csv", "\r\n".join(rows).encode())
    segments.upload_blob("Printed/2026/11/28/1700/_SUCCESS", b"")
    host = start_host(OTEL_EXPORTER="console")
    destination = create_destination(host, segments=["Printed"])["id"]

    run = wait_for_run(host, start_export(host, destination))
    counts = run["counts"]
    assert (counts["created"], counts["refused"], counts["invalid"]) == (7, 1, 1), counts  # the data tests something
    log = host_log(tmp_path)

    def run_printed() -> dict[str, list[dict[str, Any]]] | None:
        """The newest export once it holds the whole run (the throughput is recorded just after the run ends)."""
        metrics = app_metrics(printed_objects(log))
        points = {p["attributes"].get("outcome"): p["value"] for p in metrics.get("export.members", [])}
        done = (all(points.get(o, 0) == counts[o] for o in OUTCOME_KEYS) and metrics.get("export.profiles_per_second")
                and sum(p["count"] for p in metrics.get("export.chunk.duration", [])) == run["chunks"]["total"])
        return metrics if done else None

    metrics = wait_for(run_printed, "the run's metrics printed", timeout=3 * CONSOLE_EXPORT_MILLIS / 1000)
    [rate] = metrics["export.profiles_per_second"]
    assert rate["attributes"]["destinationId"] == destination and rate["count"] == 1

    objects = printed_objects(log)
    records = [o for o in objects if "severity_text" in o and o.get("attributes", {}).get("runId") == run["id"]]
    assert records and all(r["attributes"]["destinationId"] == destination for r in records)
    assert all(r["attributes"]["trigger"] == "http" for r in records)
    ended = [r for r in records if "runStatus" in r["attributes"]]
    assert [r["attributes"]["runStatus"] for r in ended] == [run["status"]]
    assert any(isinstance(r["attributes"].get("chunk"), int) for r in records)

    calls = [o for o in objects if o.get("kind") == "SpanKind.CLIENT"]
    statuses = {c["attributes"]["http.response.status_code"] for c in calls}
    assert calls and statuses <= {200, 204, 404} and 200 in statuses, statuses
    assert any(c["attributes"].get("runId") == run["id"] for c in calls)
    assert all("{" in c["name"] for c in calls if c["name"].count("/") > 1), [c["name"] for c in calls]

    assert not LOOKS_LIKE_EMAIL.findall(log.read_text(encoding="utf-8", errors="replace"))
