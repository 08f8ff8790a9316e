"""The export service: the parts of a run's life put together, one module each.

Flow: `start` (HTTP, timer or storage event; starting.py) checks everything that can be checked cheaply and queues a
plan message; `plan` (queue worker; planner.py) reads the audience and the segment snapshots and writes chunks of at
most 500 members, queuing one pointer message per chunk; `process_chunk` (queue worker; chunks.py) upserts and tags one
chunk and adds its counts to the run atomically. Cancelling is in cancelling.py, previews in preview.py, retrying
what failed in retry.py, the per-row report in error_report.py. Every step is safe to run twice: messages are delivered at least once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.exports.cancelling import Cancelling
from shared.exports.chunks import ChunkWorker
from shared.exports.error_report import ErrorReport
from shared.exports.planner import Planner
from shared.exports.retry import Retrying
from shared.exports.starting import Starting
from shared.runs import Run
from shared.telemetry import run_context


@dataclass
class ExportService(Starting, Planner, ChunkWorker, Cancelling, Retrying, ErrorReport):
    # The entry points the Functions adapters call, each inside a run_context: their log records carry runId,
    # destinationId, chunk and trigger as fields (shared/telemetry.py; the run's destination and trigger are added
    # where the run is loaded).
    def start(self, destination_id: str, trigger: str, *args: Any, **kwargs: Any) -> Run:
        with run_context(destination_id=destination_id, trigger=trigger):
            return super().start(destination_id, trigger, *args, **kwargs)

    def plan(self, run_id: str) -> None:
        with run_context(run_id=run_id):
            super().plan(run_id)

    def plan_gave_up(self, run_id: str) -> None:
        with run_context(run_id=run_id):
            super().plan_gave_up(run_id)

    def process_chunk(self, run_id: str, number: int, attempt: str) -> None:
        with run_context(run_id=run_id, chunk=number):
            super().process_chunk(run_id, number, attempt)

    def chunk_gave_up(self, run_id: str, number: int, attempt: str) -> None:
        with run_context(run_id=run_id, chunk=number):
            super().chunk_gave_up(run_id, number, attempt)

    def get_run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def runs_of(self, destination_id: str, top: int | None = None) -> list[Run]:
        """Newest first; with `top`, only the newest `top`."""
        return self.runs.list_for_destination(destination_id, top)
