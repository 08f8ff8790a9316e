"""Export runs from start to finish: checks before a run, planning into chunks, chunk workers, accounting.

Flow: `start` (HTTP, timer or storage event) checks everything that can be checked cheaply and queues a plan
message; `plan` (queue worker) reads the audience and the segment snapshots and writes chunks of at most 500 members,
queuing one pointer message per chunk; `process_chunk` (queue worker) upserts and tags one chunk and adds its counts
to the run atomically. Every step is safe to run twice: messages are delivered at least once.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Protocol

from shared.config import Settings
from shared.connections import MailchimpConnections, NotConnected
from shared.destinations import Claim, Destination
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound
from shared.mailchimp.merge_values import unchanged
from shared.members import Member, MemberResult, Outcome, decode_members, encode_members
from shared.planning import Mapping as PlanMapping
from shared.planning import RowProblem, SegmentInput, plan_export
from shared.runs import Run, SegmentPart, chunk_counts, new_run_id, now_iso, zero_counts
from shared.segment_rows import read_rows, snapshot_columns
from shared.snapshots import BlobSource, Snapshot, list_segments, newest_snapshots, snapshots_for_blob

log = logging.getLogger(__name__)

ERRORS_BLOCK_BYTES = 1 << 20
WRITABLE_STATUSES = ("subscribed", "unsubscribed", "pending", "transactional")  # not cleaned or archived


class Refused(Exception):
    """An export cannot start; `status` is the HTTP status to answer with and the message says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WorkStore(BlobSource, Protocol):
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def exists(self, name: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...


class Queue(Protocol):
    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...


class Destinations(Protocol):
    def get(self, destination_id: str) -> Destination | None: ...
    def list(self) -> list[Destination]: ...
    def exported(self, destination_id: str) -> dict[str, str]: ...
    def claim(self, destination_id: str, run_id: str, covers: dict[str, str], is_finished: Callable[[str], bool],
              trigger: str = "http", only_if_newer: bool = False) -> Claim: ...
    def release(self, destination_id: str, run_id: str) -> str | None: ...
    def own_tags(self, destination_id: str, audience_id: str, tags: Iterable[str]) -> None: ...
    def owned_tags(self, destination_id: str, audience_id: str) -> set[str]: ...
    def active_run(self, destination_id: str) -> str | None: ...


class Runs(Protocol):
    """Run records and their chunks (Table Storage in the app)."""

    def create(self, run: Run) -> None: ...
    def get(self, run_id: str, counts: bool = True) -> Run | None: ...
    def update(self, run_id: str, change: Callable[[Run], bool | None]) -> Run: ...
    def list_for_destination(self, destination_id: str) -> list[Run]: ...
    def add_chunk(self, run_id: str, number: int, members: int) -> None: ...
    def get_chunk(self, run_id: str, number: int) -> dict[str, Any] | None: ...
    def chunks(self, run_id: str) -> Iterator[dict[str, Any]]: ...
    def note_chunk_error(self, run_id: str, number: int, reason: str) -> None: ...
    def finish_chunk(self, run_id: str, number: int, per_segment: dict[str, dict[str, int]], errors_blob: str) -> bool: ...
    def settle_if_done(self, run_id: str) -> Run | None: ...
    def record_planned_outcomes(self, run_id: str, per_segment: dict[str, dict[str, int]]) -> None: ...


def _already_done(member: Member) -> bool:
    """In the audience with these values and every tag, nothing to take off: no Mailchimp call would change it.

    Such members are counted unchanged (and tagged) at planning and never sent, which makes the usual scheduled
    refresh, where most people are as they were, cost little more than reading the audience.
    """
    existing = member.existing
    return (existing is not None and existing.status in WRITABLE_STATUSES and not member.untag
            and set(member.tags) <= set(existing.tags) and unchanged(member.merge_fields, existing.merge_fields))


def chunk_blob(run_id: str, number: int) -> str:
    return f"runs/{run_id}/chunks/{number:06d}.jsonl"


def results_blob(run_id: str, number: int) -> str:
    return f"runs/{run_id}/chunks/{number:06d}.results.json"


def errors_prefix(run_id: str) -> str:
    return f"runs/{run_id}/errors/"


def _error_line(segment: str, partition: str, row: int, email: str | None, reason: str, source: str) -> bytes:
    doc = {"segment": segment, "partition": partition, "row": row, "email": email, "reason": reason, "source": source}
    return json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n"


class _ProblemWriter:
    """Streams invalid rows of planning into numbered blobs of about 1 MiB, rewritten identically on a replay."""

    def __init__(self, work: WorkStore, run_id: str) -> None:
        self._work = work
        self._run_id = run_id
        self._buffer: list[bytes] = []
        self._size = 0
        self._part = 0

    def __call__(self, problem: RowProblem) -> None:
        line = _error_line(problem.segment, problem.partition, problem.row, problem.email, problem.reason, "validation")
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= ERRORS_BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._work.write_bytes(f"{errors_prefix(self._run_id)}plan-{self._part:04d}.jsonl", b"".join(self._buffer))
            self._part += 1
            self._buffer, self._size = [], 0


@dataclass
class ExportService:
    settings: Settings
    destinations: Destinations
    runs: Runs
    segments: BlobSource
    work: WorkStore
    plan_queue: Queue
    chunk_queue: Queue
    connections: MailchimpConnections

    # --- start --------------------------------------------------------------------------------------------

    def start(self, destination_id: str, trigger: str, segments: Iterable[str] | None = None) -> Run:
        """An export asked for by someone: refused, with the reason, whenever it cannot go ahead."""
        destination = self._destination(destination_id)
        chosen = self._chosen_segments(destination, segments)
        newest = newest_snapshots(self.segments)
        parts = [self._segment_part(destination, name, newest) for name in chosen]
        self._check_mailchimp(destination)
        run = self._new_run(destination, trigger, parts)
        claim = self.destinations.claim(destination.id, run.id, {p.segment: p.snapshot for p in parts}, self._is_finished, trigger)
        if claim.outcome != "claimed":
            raise Refused(409, f"an export of this destination is already running (run {claim.holder}); wait for it to finish")
        return self._queue(run)

    def follow(self, destination_id: str, trigger: str, newest: dict[str, Snapshot] | None = None) -> Run | None:
        """An export the platform's refresh calls for (schedule or arrival): only for snapshots not exported yet.

        Any number of triggers for the same snapshot start one run; triggers during a run leave one follow-up.
        """
        destination = self.destinations.get(destination_id)
        if destination is None or not destination.consent_accepted:
            return None
        newest = newest_snapshots(self.segments) if newest is None else newest
        parts = []
        for name in destination.segments:
            try:
                parts.append(self._segment_part(destination, name, newest))
            except Refused as refused:  # a segment without snapshot yet, or one the mapping does not fit
                log.info("destination %s: segment skipped for a %s export: %s", destination.id, trigger, refused.message)
        covers = {p.segment: p.snapshot for p in parts}
        exported = self.destinations.exported(destination.id)
        if not parts or all(snap <= exported.get(segment, "") for segment, snap in covers.items()):
            return None
        self._check_mailchimp(destination)
        run = self._new_run(destination, trigger, parts)
        claim = self.destinations.claim(destination.id, run.id, covers, self._is_finished, trigger, only_if_newer=True)
        if claim.outcome != "claimed":
            log.info("destination %s: %s trigger %s", destination.id, trigger,
                     "noted for after the running export" if claim.outcome == "deferred" else "found nothing new")
            return None
        return self._queue(run)

    def on_schedule(self) -> list[Run]:
        """A timer tick: follow every destination with scheduled export on. Past-due ticks do the same, once."""
        return self._follow_all([d for d in self.destinations.list() if d.schedule_enabled], "schedule")

    def on_blob_created(self, blob_name: str) -> list[Run]:
        """A new segment file: export the snapshots it completes to every destination that includes them."""
        segments = {s.segment.lower() for s in snapshots_for_blob(self.segments, blob_name)}
        if not segments:
            return []
        wanted = [d for d in self.destinations.list()
                  if d.export_on_arrival and segments & {name.lower() for name in d.segments}]
        return self._follow_all(wanted, "storage")

    def _follow_all(self, destinations: list[Destination], trigger: str) -> list[Run]:
        started = []
        newest = newest_snapshots(self.segments) if destinations else {}  # one listing of the container for all of them
        for destination in destinations:
            try:
                run = self.follow(destination.id, trigger, newest)
            except Refused as refused:  # Mailchimp refused or unreachable: the next trigger tries again
                log.warning("destination %s: %s export not started: %s", destination.id, trigger, refused.message)
                continue
            if run is not None:
                started.append(run)
        return started

    def _destination(self, destination_id: str) -> Destination:
        destination = self.destinations.get(destination_id)
        if destination is None:
            raise Refused(404, f"destination {destination_id} does not exist")
        if not destination.consent_accepted:
            raise Refused(409, "the data-privacy consent of this destination is not accepted: accept it (PATCH consent) before exporting")
        return destination

    @staticmethod
    def _new_run(destination: Destination, trigger: str, parts: list[SegmentPart]) -> Run:
        return Run(id=new_run_id(), destination_id=destination.id, trigger=trigger, status="queued",
                   created_at=now_iso(), segments=parts)

    def _queue(self, run: Run) -> Run:
        try:
            self.runs.create(run)
            self.plan_queue.send({"runId": run.id})
        except Exception:
            self.destinations.release(run.destination_id, run.id)
            raise
        log.info("export %s queued for destination %s (%s, %d segments)", run.id, run.destination_id, run.trigger, len(run.segments))
        return run

    def _released(self, run: Run) -> None:
        """Free the destination once a run is over, and start the follow-up that triggers asked for meanwhile."""
        follow_up = self.destinations.release(run.destination_id, run.id)
        if follow_up:
            try:
                self.follow(run.destination_id, follow_up)
            except Refused as refused:
                log.warning("destination %s: follow-up export not started: %s", run.destination_id, refused.message)

    def _is_finished(self, run_id: str) -> bool:
        run = self.runs.get(run_id, counts=False)
        return run is None or run.finished

    @staticmethod
    def _chosen_segments(destination: Destination, segments: Iterable[str] | None) -> list[str]:
        if segments is None:
            return list(destination.segments)
        known = {name.lower(): name for name in destination.segments}
        chosen = list(dict.fromkeys(segments))
        unknown = [name for name in chosen if not isinstance(name, str) or name.lower() not in known]
        if unknown or not chosen:
            raise Refused(400, f"segments {unknown or chosen} are not segments of this destination; it exports {list(destination.segments)}")
        return [known[name.lower()] for name in chosen]

    def _segment_part(self, destination: Destination, name: str, newest: dict[str, Snapshot]) -> SegmentPart:
        snapshot = newest.get(name.casefold())
        if snapshot is None:
            raise Refused(409, f"segment {name!r} has no complete snapshot in container {self.settings.segments_container!r} yet; "
                               "export it from the customer-data platform first (or check its name)")
        columns = snapshot_columns(self.segments, snapshot)
        lowered = {c.lower() for c in columns}
        missing = [c for c in destination.mapping.columns() if c.lower() not in lowered]
        if missing:
            raise Refused(422, f"the mapping names column(s) {missing} that snapshot {snapshot.id} of segment {name!r} lacks; "
                               f"its columns are {list(columns)}: fix the mapping")
        return SegmentPart(segment=snapshot.segment, snapshot=snapshot.id, folder=snapshot.folder, tag=destination.tag_for(snapshot.segment))

    def _check_mailchimp(self, destination: Destination) -> None:
        try:
            self.connections.call(destination, lambda client: client.get_audience(destination.audience_id))
        except NotConnected as error:
            raise Refused(409, str(error)) from None
        except MailchimpAuthError as error:
            raise Refused(409, str(error)) from None
        except MailchimpNotFound:
            raise Refused(422, f"Mailchimp has no audience {destination.audience_id!r} for these credentials: check the audience ID") from None
        except MailchimpError as error:
            raise Refused(502, f"Mailchimp could not be reached to check the audience: {error}") from None

    # --- plan ---------------------------------------------------------------------------------------------

    def plan(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.status == "cancelled" and run.total_chunks is None:
            self.runs.update(run_id, lambda r: setattr(r, "total_chunks", 0))  # cancelled before planning: nothing to send
            self._settle(run_id)
            return
        if run is None or run.finished or run.total_chunks is not None:
            return  # unknown, failed, or already planned (a redelivered message)
        destination = self.destinations.get(run.destination_id)
        if destination is None:
            self._fail(run, "the destination was deleted before the export started")
            return
        run = self.runs.update(run_id, lambda r: self._mark_started(r))
        try:
            self._plan(run, destination)
        except (MailchimpAuthError, NotConnected) as error:
            self._fail(run, str(error))

    def _plan(self, run: Run, destination: Destination) -> None:
        run_id = run.id
        # The first call goes through `call`, so a credential rotated in the secret store is re-read after a 401.
        audience = self.connections.call(destination, lambda c: c.get_audience(destination.audience_id))
        client = self.connections.client(destination)
        merge_types = {f.tag: f.type for f in client.list_merge_fields(destination.audience_id)}
        missing_tags = [tag for tag in destination.mapping.merge_fields if tag not in merge_types]
        if missing_tags:
            self._fail(run, f"the audience has no merge field(s) {missing_tags}: create them in Mailchimp or change the mapping")
            return
        tag_ids = client.ensure_tags(destination.audience_id, [part.tag for part in run.segments])
        # Tags this destination created are kept in step with their segments (members who left lose them);
        # a tag someone made by hand is only ever added to.
        self.destinations.own_tags(destination.id, destination.audience_id, tag_ids.created)
        owned = self.destinations.owned_tags(destination.id, destination.audience_id)
        mirror_as_of = datetime.now(timezone.utc)
        details = {
            "audienceId": destination.audience_id,
            "statusForNew": destination.status_for_new or ("pending" if audience.double_optin else "subscribed"),
            "tagIds": {tag: int(tag_ids[tag]) for tag in tag_ids},
            "mirrorAsOf": mirror_as_of.isoformat(),
        }
        self.runs.update(run_id, lambda r: r.details.update(details))
        snapshots = self._snapshots(run)
        problems = _ProblemWriter(self.work, run_id)
        inputs = [SegmentInput(segment=part.segment, tag=part.tag, rows=read_rows(self.segments, snapshots[part.segment]))
                  for part in run.segments]
        with tempfile.TemporaryDirectory(prefix="plan-") as workdir:
            plan = plan_export(
                inputs,
                PlanMapping(email=destination.mapping.email, merge_fields=dict(destination.mapping.merge_fields)),
                existing=client.iter_members(destination.audience_id, fields=("email_address", "status", "merge_fields", "tags")),
                merge_field_types=merge_types,
                chunk_size=self.settings.chunk_size,
                on_problem=problems,
                workdir=workdir,
                removable_tags=owned,
                already_done=_already_done,
            )
            total = 0
            for number, members in enumerate(plan.chunks()):
                if number == 0 and (too_many := self._over_limit(plan.counts)):  # all rows are read by now, none sent
                    self._fail(run, too_many)
                    return
                self.work.write_bytes(chunk_blob(run_id, number), encode_members(members))
                self.runs.add_chunk(run_id, number, len(members))
                self.chunk_queue.send({"runId": run_id, "chunk": number})
                total = number + 1
            counts = plan.counts
        problems.flush()

        def planned(r: Run) -> None:
            r.total_chunks = total
            for part in r.segments:
                c = counts.get(part.segment)
                if c is not None:
                    part.counts.update(read=c.read, invalid=c.invalid, duplicates=c.duplicates)

        self.runs.record_planned_outcomes(run_id, {
            name: {**zero_counts(), "unchanged": c.settled, "tagged": c.settled} for name, c in counts.items() if c.settled})
        self.runs.update(run_id, planned)
        log.info("export %s planned: %d chunks", run_id, total)
        self._settle(run_id)  # every chunk may be counted already (or there were none)

    def _over_limit(self, counts: dict[str, Any]) -> str | None:
        """MAX_PROFILES_PER_EXPORT counts profiles as the platform does: every row of the chosen segments' snapshots."""
        profiles = sum(c.read for c in counts.values())
        limit = self.settings.max_profiles_per_export
        if profiles <= limit:
            return None
        return (f"the export has {profiles:,} profiles, {profiles - limit:,} over the limit of {limit:,} per export "
                "(MAX_PROFILES_PER_EXPORT): nothing was sent; export fewer segments or raise the setting")

    @staticmethod
    def _mark_started(run: Run) -> bool:
        if run.status != "queued":
            return False
        run.status = "running"
        run.started_at = now_iso()
        return True

    def _snapshots(self, run: Run) -> dict[str, Snapshot]:
        found = list_segments(self.segments)
        by_name = {name.lower(): snaps for name, snaps in found.items()}
        chosen: dict[str, Snapshot] = {}
        for part in run.segments:
            match = [s for s in by_name.get(part.segment.lower(), []) if s.id == part.snapshot]
            if not match:
                raise RuntimeError(f"snapshot {part.snapshot} of segment {part.segment!r} disappeared before it could be read")
            chosen[part.segment] = match[0]
        return chosen

    def _fail(self, run: Run, message: str) -> None:
        def fail(r: Run) -> bool:
            if r.finished:
                return False
            r.status, r.message, r.finished_at = "failed", message, now_iso()
            return True

        self._released(self.runs.update(run.id, fail))
        log.warning("export %s failed: %s", run.id, message)

    def plan_gave_up(self, run_id: str) -> None:
        """The plan message was poisoned: the run fails with the last error the workers saw."""
        run = self.runs.get(run_id)
        if run is not None and not run.finished:
            self._fail(run, "planning failed repeatedly; see the function logs for the run id, fix the cause and start the export again")

    # --- chunks -------------------------------------------------------------------------------------------

    def process_chunk(self, run_id: str, number: int, attempt: str) -> None:
        chunk = self.runs.get_chunk(run_id, number)
        if chunk is None:
            return
        if chunk["state"] == "done":  # redelivered; if the worker that counted it died before settling, settle now
            self._settle(run_id)
            return
        run = self.runs.get(run_id, counts=False)
        everyone = list(decode_members(self.work.read_bytes(chunk_blob(run_id, number))))
        members = [m for m in everyone if not m.departed]  # the chunk's input rows; departed ones are only untagged
        stop_reason = self._stop_reason(run)
        untagged: dict[str, int] = {}
        if stop_reason:
            results = [MemberResult(m.email, Outcome.FAILED, stop_reason) for m in members]
            tagged: set[str] = set()
        else:
            destination = self.destinations.get(run.destination_id)
            try:
                results = self._upsert(run, destination, number, members)
                tagged = self._tag(run, destination, members, results)
                untagged = self._untag(run, destination, everyone)
            except MailchimpAuthError as error:
                message = str(error)
                self.runs.update(run_id, lambda r: r.details.update(abort=message))
                results = [MemberResult(m.email, Outcome.FAILED, message) for m in members]
                tagged = set()
            except Exception as error:
                self.runs.note_chunk_error(run_id, number, f"{type(error).__name__}: {error}")
                raise
        self._finish(run_id, number, attempt, members, results, tagged, untagged)

    @staticmethod
    def _stop_reason(run: Run | None) -> str | None:
        if run is None:
            return "the run record is missing"
        if run.status == "cancelled":
            return f"not sent: {run.message or 'the export was cancelled'}"
        return run.details.get("abort")

    def _upsert(self, run: Run, destination: Destination | None, number: int, members: list[Member]) -> list[MemberResult]:
        saved = results_blob(run.id, number)
        if self.work.exists(saved):  # a retry after the upsert succeeded: do not write (or count) it again
            return [MemberResult(r["email"], Outcome(r["outcome"]), r.get("reason"), r.get("field"))
                    for r in json.loads(self.work.read_bytes(saved))]
        if destination is None:
            return [MemberResult(m.email, Outcome.FAILED, "the destination was deleted during the export") for m in members]
        as_of = datetime.fromisoformat(run.details["mirrorAsOf"])
        results = self.connections.call(destination, lambda client: client.upsert_members(
            run.details["audienceId"], members, status_for_new=run.details["statusForNew"], existing_as_of=as_of))
        self.work.write_bytes(saved, json.dumps([r.__dict__ | {"outcome": r.outcome.value} for r in results]).encode())
        return results

    def _tag(self, run: Run, destination: Destination | None, members: list[Member], results: list[MemberResult]) -> set[str]:
        delivered = {r.email for r in results if r.outcome in (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED)}
        if destination is None or not delivered:
            return set()
        by_tag: dict[str, list[str]] = {}
        for m in members:
            if m.email in delivered:
                carried = m.existing.tags if m.existing else ()
                for tag in m.tags:
                    if tag not in carried:  # the audience read before the run shows it tagged already
                        by_tag.setdefault(tag, []).append(m.email)
        not_tagged: set[str] = set()
        for tag, emails in by_tag.items():
            refused = self.connections.call(destination, lambda client: client.tag_members(
                run.details["audienceId"], run.details["tagIds"][tag], emails))
            not_tagged.update(refused)
        return delivered - not_tagged

    def _untag(self, run: Run, destination: Destination | None, members: list[Member]) -> dict[str, int]:
        """Take segment tags off members no longer in those segments; returns how many per segment."""
        by_tag: dict[str, list[str]] = {}
        for m in members:
            for tag in m.untag:
                by_tag.setdefault(tag, []).append(m.email)
        if destination is None or not by_tag:
            return {}
        segment_of_tag = {part.tag: part.segment for part in run.segments}
        untagged: dict[str, int] = {}
        for tag, emails in by_tag.items():
            missed = self.connections.call(destination, lambda client: client.untag_members(
                run.details["audienceId"], run.details["tagIds"][tag], emails))
            untagged[segment_of_tag[tag]] = untagged.get(segment_of_tag[tag], 0) + len(emails) - len(missed)
        return untagged

    def _finish(self, run_id: str, number: int, attempt: str, members: list[Member], results: list[MemberResult],
                tagged: set[str], untagged: dict[str, int] | None = None) -> None:
        source = {m.email: m.source for m in members}
        lines = [
            _error_line(source[r.email].segment, source[r.email].partition, source[r.email].row, r.email,
                        r.reason if not r.field else f"{r.reason} (field {r.field})",
                        "mailchimp" if r.outcome is Outcome.REFUSED else "failure")
            for r in results if r.outcome in (Outcome.REFUSED, Outcome.FAILED)
        ]
        errors = ""
        if lines:
            errors = f"{errors_prefix(run_id)}chunk-{number:06d}-{attempt}.jsonl"
            self.work.write_bytes(errors, b"".join(lines))
        per_segment = chunk_counts(results, {m.email: m.source.segment for m in members}, tagged)
        for segment, count in (untagged or {}).items():
            per_segment.setdefault(segment, zero_counts())["untagged"] += count
        self.runs.finish_chunk(run_id, number, per_segment, errors)
        self._settle(run_id)

    def _settle(self, run_id: str) -> None:
        run = self.runs.settle_if_done(run_id)
        if run is None:
            return
        log.info("export %s finished: %s", run_id, run.status)
        # Chunks and saved answers hold personal data and are of no use once every chunk is counted; the error
        # report stays (for GET .../errors) unless the destination was deleted.
        gone = run.status == "cancelled" and self.destinations.get(run.destination_id) is None
        self.work.delete_prefix(f"runs/{run_id}/" if gone else f"runs/{run_id}/chunks/")
        self._released(run)

    def chunk_gave_up(self, run_id: str, number: int, attempt: str) -> None:
        """The chunk message was poisoned: its members are counted failed with the last error, never dropped."""
        chunk = self.runs.get_chunk(run_id, number)
        if chunk is None or chunk["state"] == "done":
            return
        reason = chunk.get("lastError") or "the chunk failed repeatedly"
        members = [m for m in decode_members(self.work.read_bytes(chunk_blob(run_id, number))) if not m.departed]
        results = [MemberResult(m.email, Outcome.FAILED, f"gave up after repeated failures: {reason}") for m in members]
        self._finish(run_id, number, attempt, members, results, set())

    def cancel(self, destination_id: str, reason: str) -> str | None:
        """Stop the destination's running export: chunks not yet sent count as failed with `reason`.

        Returns the cancelled run's id. Chunks already in Mailchimp stay there; the run keeps its record for audit.
        """
        run_id = self.destinations.active_run(destination_id)
        if not run_id:
            return None

        def cancel(r: Run) -> bool:
            if r.finished:
                return False
            r.status, r.message = "cancelled", reason  # it settles when its planned chunks are counted
            return True

        run = self.runs.update(run_id, cancel)
        self.destinations.release(destination_id, run_id)
        return run.id

    # --- reading ------------------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def runs_of(self, destination_id: str) -> list[Run]:
        return self.runs.list_for_destination(destination_id)

    def error_lines(self, run_id: str) -> Iterator[bytes]:
        """Every invalid, refused and failed row of a run as JSON Lines: planning's first, then chunk by chunk."""
        prefix = errors_prefix(run_id)
        yield from (self.work.read_bytes(name) for name in sorted(self.work.list_names(prefix + "plan-")))
        for chunk in self.runs.chunks(run_id):
            if chunk.get("errorsBlob"):
                yield self.work.read_bytes(chunk["errorsBlob"])
