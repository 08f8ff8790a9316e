"""Export runs and their accounting: every input row ends up in exactly one count.

`read = invalid + duplicates + created + updated + unchanged + refused + failed` holds for every finished run and for
each of its segments; `tagged` counts members that carry all their segments' tags after the run; `untagged` counts audience members who
left a segment and had its tag taken off (they are not input rows, so they stand outside the equation), and so do
the notices (NOTICE_KEYS), each of which makes a run `completed_with_errors`; so does a segment planning had to leave
out (`details.leftOut`: its files could not be read; its counts stay 0).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from shared.members import MemberResult, Outcome

OUTCOME_KEYS = ("created", "updated", "unchanged", "refused", "failed")
# Outside the equation: rows sent without a value that could not be converted; members written whose segment tag
# could not be added; members who left a segment but kept its tag because the mass-untag guard held it back, or
# because taking it off failed.
NOTICE_KEYS = ("fieldProblems", "tagFailed", "untagHeld", "untagFailed")
COUNT_KEYS = ("read", "invalid", "duplicates", *OUTCOME_KEYS, "tagged", "untagged", *NOTICE_KEYS)
PREVIEWED = "previewed"  # a dry run (see shared/exports/preview.py): planned, predicted, nothing sent
FINISHED = ("succeeded", "completed_with_errors", "failed", "cancelled", PREVIEWED)
CANCELLING = "cancelling"  # cancelled, but chunks sent before the cancel are still being counted


def zero_counts() -> dict[str, int]:
    return {key: 0 for key in COUNT_KEYS}


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {key: total.get(key, 0) + more.get(key, 0) for key in COUNT_KEYS}


def accounted(counts: dict[str, int]) -> int:
    """Rows whose fate is known; equals `read` once a run has finished."""
    return sum(counts.get(key, 0) for key in ("invalid", "duplicates", *OUTCOME_KEYS))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_id_time(moment: datetime) -> str:
    """How a run id begins: its creation time (UTC, to the second), so ids sort oldest first and read well in logs. A
    run created in an earlier second than `moment` has an id sorting before this (shared/retention.py lists by it)."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")


def new_run_id() -> str:
    return run_id_time(datetime.now(timezone.utc)) + "-" + uuid.uuid4().hex[:8]


@dataclass
class SegmentPart:
    segment: str
    snapshot: str  # snapshot id read by this run
    folder: str
    tag: str
    counts: dict[str, int] = field(default_factory=zero_counts)

    def public(self) -> dict[str, Any]:
        return {"segment": self.segment, "snapshot": self.snapshot, "tag": self.tag, "counts": {**zero_counts(), **self.counts}}


@dataclass
class Run:
    id: str
    destination_id: str
    trigger: str
    status: str
    created_at: str
    segments: list[SegmentPart]
    started_at: str | None = None
    finished_at: str | None = None
    total_chunks: int | None = None  # None until planning has finished
    chunks_done: int = 0
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # planning results the chunk workers need (tag ids, mirror time)
    started_by: str | None = None  # the verified caller (Principal.label) who asked for it; None for schedule and storage

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def counts(self) -> dict[str, int]:
        total = zero_counts()
        for part in self.segments:
            total = add_counts(total, part.counts)
        return total

    def segment(self, name: str) -> SegmentPart:
        for part in self.segments:
            if part.segment == name:
                return part
        raise KeyError(name)

    def add(self, per_segment: dict[str, dict[str, int]]) -> None:
        for name, counts in per_segment.items():
            part = self.segment(name)
            part.counts = add_counts(part.counts, counts)

    def settle(self) -> None:
        """Decide the final status once every chunk is accounted for."""
        counts = self.counts
        problems = sum(counts[key] for key in ("invalid", "refused", "failed", *NOTICE_KEYS))
        problems += len(self.details.get("leftOut") or {})  # segments planning could not read (the notice says why)
        problems += len(self.details.get("partlyRead") or {})  # ... or read only in part, after streaming began
        delivered = counts["created"] + counts["updated"] + counts["unchanged"]
        if self.status != CANCELLING and not self.message:
            # e.g. the credentials were revoked, or untags were held back: say so on the run itself
            self.message = self.details.get("abort") or self.details.get("notice")
        if self.status == CANCELLING:
            self.status = "cancelled"
        elif problems == 0:
            self.status = "succeeded"
        elif delivered == 0 and counts["failed"] > 0:
            self.status = "failed"
        else:
            self.status = "completed_with_errors"
        self.finished_at = now_iso()

    def public(self) -> dict[str, Any]:
        counts = self.counts
        elapsed = _seconds_between(self.started_at or self.created_at, self.finished_at)
        sent = sum(counts[key] for key in OUTCOME_KEYS)
        return {
            "id": self.id,
            "destinationId": self.destination_id,
            "status": self.status,
            "trigger": self.trigger,
            "startedBy": self.started_by,
            "message": self.message,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "chunks": {"total": self.total_chunks, "done": self.chunks_done},
            "counts": counts,
            "segments": [part.public() for part in self.segments],
            "dryRun": bool(self.details.get("dryRun")),
            **({"preview": self.details["preview"]} if "preview" in self.details else {}),
            "retryOf": self.details.get("retryOf"),
            "retriedBy": self.details.get("retriedBy"),
            "elapsedSeconds": round(elapsed, 3) if elapsed is not None else None,
            "profilesPerSecond": round(sent / elapsed, 1) if elapsed and not self.details.get("dryRun") else None,
            "knownRows": self.details.get("knownRows", 0),  # counted unchanged unread: in step at the last plan
        }


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    stop = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
    return max((stop - datetime.fromisoformat(start)).total_seconds(), 0.0)


def chunk_counts(results: Iterable[MemberResult], segment_of: dict[str, str], tagged: set[str]) -> dict[str, dict[str, int]]:
    """Per-segment counts of one chunk; each member counts in the segment of its first row."""
    per_segment: dict[str, dict[str, int]] = {}
    for result in results:
        counts = per_segment.setdefault(segment_of[result.email], zero_counts())
        counts[result.outcome.value] += 1
        if result.email in tagged and result.outcome not in (Outcome.REFUSED, Outcome.FAILED):
            counts["tagged"] += 1
    return per_segment
