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
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Iterable, Iterator, Protocol

from shared.columns import ColumnMismatch, resolve_columns
from shared.config import Settings
from shared.connections import MailchimpConnections, NotConnected
from shared.destinations import Claim, Destination
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound, WritesStopped
from shared.mailchimp.transport import guarded_writes
from shared.mailchimp.merge_values import unchanged
from shared.members import Member, MemberResult, Outcome, decode_members, encode_members
from shared.planning import Mapping as PlanMapping
from shared.planning import RowProblem, SegmentInput, TagDepartures, TooManyRows, plan_export
from shared.runs import CANCELLING, Run, SegmentPart, chunk_counts, new_run_id, now_iso, zero_counts
from shared.segment_rows import read_rows, snapshot_columns
from shared.snapshots import (BlobSource, ReadLimits, Snapshot, SnapshotProblem, newest_snapshots, segment_listing,
                              snapshots_for_blob)

log = logging.getLogger(__name__)

ERRORS_BLOCK_BYTES = 1 << 20
ERRORS_PAGE_BYTES = 4 << 20  # a page of GET /exports/{id}/errors ends before this many bytes (or ?limit= lines)
CHUNK_WRITERS = 8  # chunk files written at once while planning
WRITABLE_STATUSES = ("subscribed", "unsubscribed", "pending", "transactional")  # not cleaned or archived
DELIVERED = (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED)
NOTICE_CHARS = 4000  # a run's notice (its message when nothing weightier replaces it) is cut to this many characters


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
    def exclusive(self, name: str) -> ContextManager[None]: ...  # one holder across instances; waits for it


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
    def list_for_destination(self, destination_id: str, top: int | None = None) -> list[Run]: ...
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
            and not _missing_tags(member) and unchanged(member.merge_fields, existing.merge_fields))


def _missing_tags(member: Member) -> list[str]:
    """The member's segment tags the audience read did not show on it (tag names compare ignoring case)."""
    carried = {t.casefold() for t in member.existing.tags} if member.existing else set()
    return [tag for tag in member.tags if tag.casefold() not in carried]


def _cancel(run: Run, reason: str) -> bool:
    """A cancelled run is `cancelling` until its planned chunks are counted (chunks not yet sent count failed),
    then `cancelled`."""
    if run.finished or run.status == CANCELLING:
        return False
    run.status, run.message = CANCELLING, reason
    return True


class _Unreadable(Exception):
    """A segment's files could not be read to the end while planning (`problem` names the file)."""

    def __init__(self, part: SegmentPart, problem: SnapshotProblem) -> None:
        super().__init__(str(problem))
        self.part = part
        self.problem = problem


def _left_out_notice(left_out: dict[str, str]) -> str:
    return (f"not exported: {'; '.join(left_out.values())} (the other segments were exported; the ones left out read 0 "
            "rows: fix what is said and export them again)")


def _held_notice(held: dict[str, int], departures: dict[str, TagDepartures], percent: int) -> str:
    parts = [f"{leaving:,} of the {departures[tag].carrying:,} members carrying tag {tag!r}" for tag, leaving in held.items()]
    return (f"untagging held back: {'; '.join(parts)} are no longer in the segment's snapshot, more than "
            f"UNTAG_GUARD_PERCENT ({percent}%); the tags were left on. If the snapshot is right, start the export again "
            'with the body {"confirmUntag": true}; if not, fix the export at the source')


@dataclass
class _Untags:
    """Per segment: members who had a tag taken off, and members whose untag failed."""

    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


def _owned(tag_id: int) -> str:
    """How a tag the destination created is recorded: by id (names of older records are not ids and never match)."""
    return f"#{tag_id}"


def _intended(run_id: str, name: str) -> str:
    """A tag this run is about to create: honoured by this run only, until the tag's id is recorded."""
    return f"?{run_id}/{name.casefold()}"


def _needing_tags(members: list[Member], results: list[MemberResult]) -> set[str]:
    """Delivered members missing at least one of their segment tags (by the audience read)."""
    delivered = {r.email for r in results if r.outcome in DELIVERED}
    return {m.email for m in members if m.email in delivered and _missing_tags(m)}


def _due_untags(run: Run, members: list[Member]) -> dict[str, list[str]]:
    """Tag -> members to take it off: those who left its segment, but for the untags the guard holds back."""
    held = run.details.get("untagHeld") or {}
    by_tag: dict[str, list[str]] = {}
    for m in members:
        for tag in m.untag:
            if tag not in held:
                by_tag.setdefault(tag, []).append(m.email)
    return by_tag


def _tags_failed(run: Run, everyone: list[Member], results: list[MemberResult], reason: str) -> tuple[dict[str, str], "_Untags"]:
    """A chunk whose tagging could not happen: every tag it was to add and take off counts failed, with `reason`."""
    members = [m for m in everyone if not m.departed]
    segment_of_tag = {part.tag: part.segment for part in run.segments}
    failed: dict[str, int] = {}
    for tag, emails in _due_untags(run, everyone).items():
        failed[segment_of_tag[tag]] = failed.get(segment_of_tag[tag], 0) + len(emails)
    return dict.fromkeys(_needing_tags(members, results), reason), _Untags(failed=failed)


def plan_lock(run_id: str) -> str:
    return f"runs/{run_id}/plan.lock"


def chunk_blob(run_id: str, number: int) -> str:
    return f"runs/{run_id}/chunks/{number:06d}.jsonl"


def results_blob(run_id: str, number: int) -> str:
    return f"runs/{run_id}/chunks/{number:06d}.results.json"


def errors_prefix(run_id: str) -> str:
    return f"runs/{run_id}/errors/"


ERROR_REASON_CHARS = 500  # a reason in the errors report is cut to this many characters
ERROR_EMAIL_CHARS = 320  # an address as given, too (the longest valid one is 254): anything longer is no address
ERROR_NAME_CHARS = 300  # and a column name or merge tag (mapped names are at most 255)
SHORTENED = " (shortened)"


def _capped(text: str | None, chars: int) -> str | None:
    """`text`, or when longer than `chars` its start marked " (shortened)", `chars` characters in all."""
    if text is None or len(text) <= chars:
        return text
    return text[:chars - len(SHORTENED)] + SHORTENED


def _error_line(segment: str, partition: str, row: int, email: str | None, reason: str, source: str,
                **more: str | None) -> bytes:
    """One line of a run's errors report; `source` is validation, field, mailchimp, failure or tag.

    Bounded whatever a segment file holds: the reason, the email as given and the other names are cut (ERROR_*_CHARS,
    marked "(shortened)"), so a partition cannot make its report many times its own size (one over-long value
    repeated on each of its rows)."""
    doc = {"segment": segment, "partition": partition, "row": row, "email": _capped(email, ERROR_EMAIL_CHARS),
           "reason": _capped(reason, ERROR_REASON_CHARS), "source": source,
           **{key: _capped(value, ERROR_NAME_CHARS) for key, value in more.items() if value is not None}}
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
        source = "field" if problem.kind == "field" else "validation"
        line = _error_line(problem.segment, problem.partition, problem.row, problem.email, problem.reason, source,
                           column=problem.column, mergeTag=problem.merge_tag)
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

    def start(self, destination_id: str, trigger: str, segments: Iterable[str] | None = None,
              confirm_untag: bool = False, started_by: str | None = None) -> Run:
        """An export asked for by someone: refused, with the reason, whenever it cannot go ahead.

        `confirm_untag` confirms the untags the destination's last run held back (see `_held_untags`); `started_by`
        names the verified caller on the run record."""
        destination = self._destination(destination_id)
        chosen = self._chosen_segments(destination, segments)
        newest = newest_snapshots(self.segments, self._read_limits)
        parts = [self._segment_part(destination, name, newest) for name in chosen]
        self._check_mailchimp(destination)
        run = self._new_run(destination, trigger, parts)
        run.started_by = started_by
        if confirm_untag:
            run.details["confirmUntag"] = self._confirmation(destination, parts)
        claim = self.destinations.claim(destination.id, run.id, {p.segment: p.snapshot for p in parts}, self._is_finished, trigger)
        if claim.outcome != "claimed":
            self._kick(claim.holder)
            raise Refused(409, f"an export of this destination is already running (run {claim.holder}); wait for it to finish")
        return self._queue(run)

    def follow(self, destination_id: str, trigger: str, newest: dict[str, Snapshot] | None = None) -> Run | None:
        """An export the platform's refresh calls for (schedule or arrival): only for snapshots not exported yet.

        Any number of triggers for the same snapshot start one run; triggers during a run leave one follow-up.
        A segment whose files or mapping cannot be used is left out (the others go ahead): logged as a warning and
        said in the run's message.
        """
        destination = self.destinations.get(destination_id)
        if destination is None or not destination.consent_accepted or destination.is_draft:
            return None
        newest = newest_snapshots(self.segments, self._read_limits) if newest is None else newest
        parts = []
        left_out = []
        for name in destination.segments:
            try:
                parts.append(self._segment_part(destination, name, newest))
            except Refused as refused:  # a segment without snapshot yet, or one whose files or mapping do not fit
                said = getattr(refused, "log_message", refused.message)  # without column names (they may be emails)
                if refused.status == 409:
                    log.info("destination %s: segment skipped for a %s export: %s", destination.id, trigger, said)
                else:
                    log.warning("destination %s: segment left out of a %s export: %s", destination.id, trigger, said)
                    left_out.append(said)
        covers = {p.segment: p.snapshot for p in parts}
        exported = self.destinations.exported(destination.id)
        if not parts or all(snap <= exported.get(segment, "") for segment, snap in covers.items()):
            return None
        self._check_mailchimp(destination)
        run = self._new_run(destination, trigger, parts)
        if left_out:  # the run's message unless a weightier notice replaces it (see Run.settle)
            run.details["notice"] = f"not exported: {'; '.join(left_out)}"[:NOTICE_CHARS]
        claim = self.destinations.claim(destination.id, run.id, covers, self._is_finished, trigger, only_if_newer=True)
        if claim.outcome != "claimed":
            self._kick(claim.holder)
            log.info("destination %s: %s trigger %s", destination.id, trigger,
                     "noted for after the running export" if claim.outcome == "deferred" else "found nothing new")
            return None
        return self._queue(run)

    def on_schedule(self) -> list[Run]:
        """A timer tick: follow every destination with scheduled export on. Past-due ticks do the same, once."""
        return self._follow_all([d for d in self.destinations.list() if d.schedule_enabled], "schedule")

    def on_blob_created(self, blob_name: str) -> list[Run]:
        """A new segment file: export the snapshots it completes to every destination that includes them."""
        segments = {s.segment.lower() for s in snapshots_for_blob(self.segments, blob_name, self._read_limits)}
        if not segments:
            return []
        wanted = [d for d in self.destinations.list()
                  if d.export_on_arrival and segments & {name.lower() for name in d.segments}]
        return self._follow_all(wanted, "storage")

    def _follow_all(self, destinations: list[Destination], trigger: str) -> list[Run]:
        started = []
        newest = newest_snapshots(self.segments, self._read_limits) if destinations else {}  # one listing for all of them
        for destination in destinations:
            try:
                run = self.follow(destination.id, trigger, newest)
            except Refused as refused:  # Mailchimp refused or unreachable: the next trigger tries again
                log.warning("destination %s: %s export not started: %s", destination.id, trigger, refused.message)
                continue
            except Exception as error:  # noqa: BLE001 - one destination's failure must not keep the others from theirs
                log.error("destination %s: %s export not started: unexpected %s (its message is not logged: it may hold "
                          "row data); the next trigger tries again\n%s", destination.id, trigger, type(error).__name__,
                          "".join(traceback.format_tb(error.__traceback__)))
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
        if destination.is_draft:
            raise Refused(409, "configure the mapping and segments first: this destination is a draft (PATCH mapping "
                               "and segments)")
        return destination

    @staticmethod
    def _new_run(destination: Destination, trigger: str, parts: list[SegmentPart]) -> Run:
        return Run(id=new_run_id(), destination_id=destination.id, trigger=trigger, status="queued",
                   created_at=now_iso(), segments=parts)

    def _queue(self, run: Run) -> Run:
        try:
            self.runs.create(run)
        except Exception:
            self.destinations.release(run.destination_id, run.id)
            raise
        # A failed send keeps the claim: the queue may have taken the message although the call failed (a timeout),
        # and releasing would let a retry start a second export alongside. A run left queued without its message is
        # sent again by the next start or trigger that finds it holding the destination (see _kick).
        self.plan_queue.send({"runId": run.id})
        log.info("export %s queued for destination %s (%s, %d segments)", run.id, run.destination_id, run.trigger, len(run.segments))
        return run

    def _kick(self, holder: str | None) -> None:
        """The run holding the destination is still queued: send its plan message again, in case the start that
        queued it died before sending it. Planning twice is harmless (it holds a lease and plans once)."""
        run = self.runs.get(holder, counts=False) if holder else None
        if run is not None and run.status == "queued":
            self.plan_queue.send({"runId": run.id})

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
            problem = getattr(newest, "problems", {}).get(name.casefold())
            if problem:  # its files are there but cannot be used: say which and why
                raise Refused(422, f"segment {name!r} cannot be exported: {problem}")
            waiting = getattr(newest, "waiting", {}).get(name.casefold())
            raise Refused(409, f"segment {name!r} has no complete snapshot in container {self.settings.segments_container!r} yet; "
                               "export it from the customer-data platform first (or check its name)"
                               + (f" ({waiting})" if waiting else ""))
        try:
            columns = snapshot_columns(self.segments, snapshot)
        except SnapshotProblem as problem:
            raise Refused(422, f"snapshot {snapshot.id} of segment {name!r} cannot be read: {problem}") from None
        try:
            resolve_columns(destination.mapping.columns(), columns)
        except ColumnMismatch as error:
            refused = Refused(422, f"snapshot {snapshot.id} of segment {name!r}: {error.detail}")  # may name row data
            refused.log_message = (f"snapshot {snapshot.id} of segment {name!r} does not fit the mapping: mapped "  # type: ignore[attr-defined]
                                   f"column(s) {[*error.missing, *error.ambiguous]} missing or ambiguous among its "
                                   f"{len(columns)} columns")
            raise refused from None
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
        """Plan in two steps, so that a redelivered plan message never sends a different plan.

        1. Read, write every chunk blob and chunk row, then freeze the plan in one run update (its chunk total,
           counts and held-back untags). No chunk message goes out before the freeze: a crash before it leaves
           nothing sent, and planning simply starts over.
        2. Send one message per chunk. A crash here is replayed from the frozen plan: the chunks not yet counted
           are sent again (a chunk counts once, whatever the number of its messages).
        """
        with self.work.exclusive(plan_lock(run_id)):  # a copy of the message delivered meanwhile waits here
            self._plan_once(run_id)

    def _plan_once(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None or run.finished_at is not None:
            return  # unknown or ended
        if run.details.get("chunksSent"):  # planned and sent (a redelivered message); a plan with no chunk is
            self._settle(run_id)  # settled here, so a worker that died before that is made good
            return
        if run.status == CANCELLING and run.total_chunks is None:
            self.runs.update(run_id, lambda r: setattr(r, "total_chunks", 0))  # cancelled before planning: nothing to send
            self._settle(run_id)
            return
        destination = self.destinations.get(run.destination_id)
        if destination is None and run.total_chunks is None:
            self._fail(run, "the destination was deleted before the export started")
            return
        if destination is not None and not destination.consent_accepted and run.status != CANCELLING:
            run = self._stop_for_consent(run.id, destination)
            if run.total_chunks == 0:
                return
        if run.total_chunks is None:
            run = self.runs.update(run_id, lambda r: self._mark_started(r))
            try:
                if not self._plan(run, destination):
                    return
            except (MailchimpAuthError, NotConnected) as error:
                self._fail(run, str(error))
                return
        self._send_chunks(run_id)  # a frozen plan of a cancelled run is sent too: its workers count it failed

    def _plan(self, run: Run, destination: Destination) -> bool:
        """Step 1 (see `plan`); False when the run ended instead (failed before anything was sent).

        A segment whose snapshot is gone, or whose files cannot be read (SnapshotProblem: a header that cannot be
        used, a partition storage refuses to serve, ...) or no longer fit the mapping, is left out of the run: its
        counts stay 0, the run's message says which file and what to do, and the other segments go on. When none is
        left the run fails at once, saying why."""
        run_id = run.id
        left_out: dict[str, str] = {}  # segment -> why this run does not export it (naming the file)
        snapshots = self._snapshots(run, left_out)
        columns: dict[str, dict[str, str]] = {}
        for part in run.segments:
            if part.segment in left_out:
                continue
            try:
                columns[part.segment] = resolve_columns(destination.mapping.columns(),
                                                        snapshot_columns(self.segments, snapshots[part.segment]))
            except SnapshotProblem as problem:
                self._leave_out(run, part, left_out, f"{problem}")
            except ColumnMismatch as error:
                self._leave_out(run, part, left_out, f"{error}", log_text=f"{error.log_text}: fix the mapping")
        if len(left_out) == len(run.segments):
            self._fail_left_out(run, left_out)
            return False
        # The first call goes through `call`, so a credential rotated in the secret store is re-read after a 401.
        audience = self.connections.call(destination, lambda c: c.get_audience(destination.audience_id))
        client = self.connections.client(destination)
        merge_types = {f.tag: f.type for f in client.list_merge_fields(destination.audience_id)}
        missing_tags = [tag for tag in destination.mapping.merge_fields if tag not in merge_types]
        if missing_tags:
            self._fail(run, f"the audience has no merge field(s) {missing_tags}: create them in Mailchimp or change the mapping")
            return False
        # Tags this destination created are kept in step with their segments (members who left lose them);
        # a tag someone made by hand is only ever added to. Ownership is by Mailchimp's tag id, so a tag deleted
        # in Mailchimp and made again by hand under the same name is not the destination's. The tags about to be
        # created are noted for this run first, so a planning attempt that dies right after creating one still
        # finds it its own when the run is planned again.
        tag_ids = client.ensure_tags(destination.audience_id, [part.tag for part in run.segments if part.segment not in left_out],
                                     before_creating=lambda missing: self.destinations.own_tags(
                                         destination.id, destination.audience_id, {_intended(run_id, n) for n in missing}))
        marks = self.destinations.owned_tags(destination.id, destination.audience_id)
        owned = {name for name in tag_ids if _owned(tag_ids[name]) in marks or _intended(run_id, name) in marks}
        if new_marks := {_owned(tag_ids[name]) for name in owned} - marks:
            self.destinations.own_tags(destination.id, destination.audience_id, new_marks)
        mirror_as_of = datetime.now(timezone.utc)
        details = {
            "audienceId": destination.audience_id,
            "statusForNew": destination.status_for_new or ("pending" if audience.double_optin else "subscribed"),
            "tagIds": {tag: int(tag_ids[tag]) for tag in tag_ids},
            "mirrorAsOf": mirror_as_of.isoformat(),
        }
        self.runs.update(run_id, lambda r: r.details.update(details))
        while True:  # once more without a segment whose files could not be read to the end
            live = [part for part in run.segments if part.segment not in left_out]
            if not live:
                self._fail_left_out(run, left_out)
                return False
            try:
                planned = self._plan_rows(run, destination, live, snapshots, columns, client, merge_types, owned)
            except _Unreadable as unreadable:  # raised while the rows were read: no chunk is written yet
                self._leave_out(run, unreadable.part, left_out, str(unreadable.problem))
                continue
            if planned is None:
                return False
            break
        plan, total = planned
        counts = plan.counts
        held = self._held_untags(run, plan.departures)
        segment_of_tag = {part.tag: part.segment for part in run.segments}
        planned_outcomes: dict[str, dict[str, int]] = {}
        for name, c in counts.items():
            if c.settled:
                planned_outcomes[name] = {**zero_counts(), "unchanged": c.settled, "tagged": c.settled}
        for tag, leaving in held.items():
            planned_outcomes.setdefault(segment_of_tag[tag], zero_counts())["untagHeld"] += leaving
        self.runs.record_planned_outcomes(run_id, planned_outcomes)

        def freeze(r: Run) -> bool:
            if r.total_chunks is not None:
                return False  # frozen already: the first freeze is the plan
            r.total_chunks = total
            if held:
                r.details["untagHeld"] = held
            if left_out:
                r.details["leftOut"] = dict(left_out)
            notes = [_held_notice(held, plan.departures, self.settings.untag_guard_percent) if held else None,
                     _left_out_notice(left_out) if left_out else None, r.details.get("notice")]
            if any(notes):
                r.details["notice"] = "; ".join(note for note in notes if note)[:NOTICE_CHARS]
            for part in r.segments:
                c = counts.get(part.segment)
                if c is not None:
                    part.counts.update(read=c.read, invalid=c.invalid, duplicates=c.duplicates, fieldProblems=c.field_problems)
            return True

        self.runs.update(run_id, freeze)
        log.info("export %s planned: %d chunks", run_id, total)
        return True

    def _plan_rows(self, run: Run, destination: Destination, live: list[SegmentPart], snapshots: dict[str, Snapshot],
                   columns: dict[str, dict[str, str]], client: Any, merge_types: dict[str, str],
                   owned: set[str]) -> tuple[Any, int] | None:
        """Read the live segments' rows and the audience, and write the chunks: (the plan, its chunk total), or None
        when the run failed instead (over MAX_PROFILES_PER_EXPORT). _Unreadable, before any chunk is written, when a
        segment's files cannot be read to the end."""
        run_id = run.id
        # An attempt's report of invalid rows is written anew (without a segment left out since, or by a crashed
        # attempt that read other segments): planning's part of the report is only read once the plan is frozen.
        self.work.delete_prefix(errors_prefix(run_id) + "plan-")
        problems = _ProblemWriter(self.work, run_id)
        inputs = [SegmentInput(segment=part.segment, tag=part.tag, rows=self._rows(part, snapshots[part.segment]),
                               columns=columns[part.segment])
                  for part in live]
        with tempfile.TemporaryDirectory(prefix="plan-") as workdir:
            plan = plan_export(
                inputs,
                PlanMapping(email=destination.mapping.email, merge_fields=dict(destination.mapping.merge_fields)),
                existing=client.iter_audience(destination.audience_id),
                merge_field_types=merge_types,
                chunk_size=self.settings.chunk_size,
                on_problem=problems,
                workdir=workdir,
                removable_tags=owned,
                already_done=_already_done,
                max_rows=self.settings.max_profiles_per_export,
            )
            total = 0
            # Chunk files and records are written a few at a time (storage round trips, not CPU, are the cost),
            # with a bounded number in flight so memory stays small.
            with ThreadPoolExecutor(max_workers=CHUNK_WRITERS) as writers:
                pending: deque[Future] = deque()
                try:
                    for number, members in enumerate(plan.chunks()):
                        pending.append(writers.submit(self._write_chunk, run_id, number, members))
                        if len(pending) >= 2 * CHUNK_WRITERS:
                            pending.popleft().result()
                        total = number + 1
                except TooManyRows as too_many:  # stopped reading there: nothing was spilled after it, none sent
                    self._fail(run, self._over_limit(too_many.limit))
                    return None
                for future in pending:
                    future.result()
        problems.flush()
        return plan, total

    def _rows(self, part: SegmentPart, snapshot: Snapshot) -> Iterator[Any]:
        """The snapshot's rows; a SnapshotProblem met while reading them is _Unreadable, naming the segment."""
        try:
            yield from read_rows(self.segments, snapshot)
        except SnapshotProblem as problem:
            raise _Unreadable(part, problem) from None

    def _leave_out(self, run: Run, part: SegmentPart, left_out: dict[str, str], problem: str,
                   log_text: str | None = None) -> None:
        """Note why planning leaves `part` out of the run. `log_text` stands in for `problem` in the log when the
        problem names columns (they can be row data)."""
        left_out[part.segment] = f"segment {part.segment!r} (snapshot {part.snapshot}): {problem}"
        log.warning("export %s: segment %r left out while planning: %s", run.id, part.segment, log_text or problem)

    def _fail_left_out(self, run: Run, left_out: dict[str, str]) -> None:
        self._fail(run, f"nothing was sent: every segment was left out: {'; '.join(left_out.values())}"[:NOTICE_CHARS],
                   log_message=f"nothing was sent: no segment is left ({len(left_out)} left out, each logged above)")

    def _write_chunk(self, run_id: str, number: int, members: list[Member]) -> None:
        self.work.write_bytes(chunk_blob(run_id, number), encode_members(members))
        self.runs.add_chunk(run_id, number, len(members))

    def _held_untags(self, run: Run, departures: dict[str, TagDepartures]) -> dict[str, int]:
        """Tags whose departures look like a broken upstream export rather than people leaving: more than
        UNTAG_GUARD_PERCENT of the members carrying a tag would lose it. Those untags are held back, unless the run
        confirms a held run of the same snapshots and no more members leave than that run held back."""
        confirmed = (run.details.get("confirmUntag") or {}).get("held") or {}
        limit = self.settings.untag_guard_percent
        return {tag: d.leaving for tag, d in sorted(departures.items())
                if d.leaving and d.leaving * 100 > d.carrying * limit and d.leaving > confirmed.get(tag, 0)}

    def _confirmation(self, destination: Destination, parts: list[SegmentPart]) -> dict[str, Any]:
        """What a start with confirmUntag confirms: the destination's last run, which must have held untags back
        and read the same snapshots (a newer snapshot may be broken in a new way: it is held, and confirmed, anew)."""
        runs = [r for r in self.runs.list_for_destination(destination.id) if r.finished]
        last = runs[0] if runs else None
        held = (last.details.get("untagHeld") or {}) if last is not None else {}
        if not held:
            raise Refused(409, "there are no held-back untags to confirm: the destination's last export held none "
                               "back; start the export without confirmUntag")
        if {p.segment: p.snapshot for p in last.segments} != {p.segment: p.snapshot for p in parts}:
            raise Refused(409, f"export {last.id} held untags back for other snapshots than the newest ones; start the "
                               "export without confirmUntag, check what it holds back, then confirm that")
        return {"run": last.id, "held": held}

    def _send_chunks(self, run_id: str) -> None:
        """Step 2 (see `plan`): one message per chunk not yet counted, then the run notes that all were sent."""
        run = self.runs.get(run_id, counts=False)
        total = run.total_chunks if run is not None and run.total_chunks is not None else 0
        for chunk in self.runs.chunks(run_id):
            number = int(chunk["RowKey"].split("-", 1)[1])
            if number >= total:
                break  # rows left from a planning attempt that crashed before the freeze are not part of the plan
            if chunk["state"] != "done":
                self.chunk_queue.send({"runId": run_id, "chunk": number})
        self.runs.update(run_id, lambda r: r.details.update(chunksSent=True))
        self._settle(run_id)  # every chunk may be counted already (or there were none)

    def _over_limit(self, limit: int) -> str:
        """MAX_PROFILES_PER_EXPORT counts profiles as the platform does: every row of the chosen segments' snapshots.
        Planning stops reading at the first row over it, so the message says "more than"."""
        return (f"the export has more than {limit:,} profiles, over the limit of {limit:,} per export "
                "(MAX_PROFILES_PER_EXPORT): reading stopped there and nothing was sent; export fewer segments or raise "
                "the setting")

    @staticmethod
    def _mark_started(run: Run) -> bool:
        if run.status != "queued":
            return False
        run.status = "running"
        run.started_at = now_iso()
        return True

    @property
    def _read_limits(self) -> ReadLimits:
        """How much of a segment file is read at most (SEGMENT_MAX_LINE_BYTES, SEGMENT_MAX_FIELDS, ...)."""
        return ReadLimits.from_settings(self.settings)

    def _snapshots(self, run: Run, left_out: dict[str, str]) -> dict[str, Snapshot]:
        """The snapshot each segment of the run was started for; one that is no longer complete is left out."""
        found, why = segment_listing(self.segments, self._read_limits)  # its snapshots carry the limits read_rows keeps to
        by_name = {name.lower(): snaps for name, snaps in found.items()}
        chosen: dict[str, Snapshot] = {}
        for part in run.segments:
            match = [s for s in by_name.get(part.segment.lower(), []) if s.id == part.snapshot]
            if match:
                chosen[part.segment] = match[0]
                continue
            reason = why.get(part.segment.casefold()) or "a file of it was deleted or replaced"
            self._leave_out(run, part, left_out, f"its folder {part.folder} is no longer a complete snapshot ({reason}); "
                                                 "export the segment again once it has a complete snapshot")
        return chosen

    def _fail(self, run: Run, message: str, log_message: str | None = None) -> None:
        """`log_message` stands in for `message` in the log when the run's message names row data (columns)."""
        def fail(r: Run) -> bool:
            if r.finished:
                return False
            r.status, r.message, r.finished_at = "failed", message, now_iso()
            return True

        self._released(self.runs.update(run.id, fail))
        log.warning("export %s failed: %s", run.id, log_message or message)

    def plan_gave_up(self, run_id: str) -> None:
        """The plan message was poisoned: the run fails with the last error the workers saw."""
        run = self.runs.get(run_id)
        if run is not None and not run.finished:
            self._fail(run, "planning failed repeatedly; see the function logs for the run id, fix the cause and start the export again")

    # --- chunks -------------------------------------------------------------------------------------------

    def process_chunk(self, run_id: str, number: int, attempt: str) -> None:
        """Upsert and tag one chunk and count it, once: a copy of its message delivered while it is being worked on
        waits for that worker (the chunk blob's lease) and then finds it counted, so it writes nothing again."""
        chunk = self.runs.get_chunk(run_id, number)
        if chunk is None:
            return
        if chunk["state"] != "done":
            with self.work.exclusive(chunk_blob(run_id, number)):
                chunk = self.runs.get_chunk(run_id, number)
                if chunk is not None and chunk["state"] != "done":
                    self._process_chunk(run_id, number, attempt)
        self._settle(run_id)  # also when redelivered: the worker that counted it may have died before settling

    def _process_chunk(self, run_id: str, number: int, attempt: str) -> None:
        run = self.runs.get(run_id, counts=False)
        everyone = list(decode_members(self.work.read_bytes(chunk_blob(run_id, number))))
        members = [m for m in everyone if not m.departed]  # the chunk's input rows; departed ones are only untagged
        destination = self.destinations.get(run.destination_id) if run is not None else None
        stop_reason = self._stop_reason(run)
        if stop_reason:
            results = [MemberResult(m.email, Outcome.FAILED, stop_reason) for m in members]
            self._count(run_id, number, attempt, members, results)
            return
        untags = _Untags()
        with guarded_writes(self._consent_guard(run_id, run.destination_id)):
            try:
                results = self._upsert(run, destination, number, members)
            except MailchimpAuthError as error:  # counted as far as it got; later chunks stop (the run says why)
                self._abort(run_id, str(error))
                results = error.results or [MemberResult(m.email, Outcome.FAILED, str(error)) for m in members]
                self._count(run_id, number, attempt, members, results, *_tags_failed(run, everyone, results, str(error)))
                return
            except Exception as error:
                self.runs.note_chunk_error(run_id, number, f"{type(error).__name__}: {error}")
                raise
            try:
                not_tagged = self._tag(run, destination, members, results)
                untags = self._untag(run, destination, everyone)
            except (MailchimpAuthError, WritesStopped) as error:  # the members are written; only their tags are not
                if isinstance(error, MailchimpAuthError):
                    self._abort(run_id, str(error))
                not_tagged, untags = _tags_failed(run, everyone, results, str(error))
            except Exception as error:
                self.runs.note_chunk_error(run_id, number, f"tagging: {type(error).__name__}: {error}")
                raise
        self._count(run_id, number, attempt, members, results, not_tagged, untags)

    def _consent_guard(self, run_id: str, destination_id: str) -> Callable[[], str | None]:
        """Asked right before every Mailchimp write of a chunk: a withdrawn consent stops the run there."""
        def guard() -> str | None:
            destination = self.destinations.get(destination_id)
            if destination is None or destination.consent_accepted:
                return None
            return f"not sent: {self._stop_for_consent(run_id, destination).message}"
        return guard

    def _abort(self, run_id: str, message: str) -> None:
        """Credentials refused: every later chunk stops too, and the run says why."""
        self.runs.update(run_id, lambda r: r.details.update(abort=message))

    def _stop_for_consent(self, run_id: str, destination: Destination) -> Run:
        """Consent withdrawn: nothing more leaves. Chunks not yet sent count failed with who withdrew it and when."""
        reason = f"consent withdrawn by {destination.consent_by or 'an admin'} at {destination.consent_at or 'an unknown time'}"
        run = self.runs.update(run_id, lambda r: _cancel(r, reason))
        if run.total_chunks is None:  # not planned yet: nothing will be sent, the run ends now
            run = self.runs.update(run_id, lambda r: setattr(r, "total_chunks", 0))
            self._settle(run_id)
        else:
            self.destinations.release(run.destination_id, run_id)
        return run

    @staticmethod
    def _stop_reason(run: Run | None) -> str | None:
        if run is None:
            return "the run record is missing"
        if run.status in (CANCELLING, "cancelled"):
            return f"not sent: {run.message or 'the export was cancelled'}"
        return run.details.get("abort")

    def _upsert(self, run: Run, destination: Destination | None, number: int, members: list[Member]) -> list[MemberResult]:
        saved = self._saved_results(run.id, number)
        if saved is not None:  # a retry after the upsert succeeded: do not write (or count) it again
            return saved
        if destination is None:
            return [MemberResult(m.email, Outcome.FAILED, "the destination was deleted during the export") for m in members]
        as_of = datetime.fromisoformat(run.details["mirrorAsOf"])
        results = self.connections.call(destination, lambda client: client.upsert_members(
            run.details["audienceId"], members, status_for_new=run.details["statusForNew"], existing_as_of=as_of))
        self.work.write_bytes(results_blob(run.id, number),
                              json.dumps([r.__dict__ | {"outcome": r.outcome.value} for r in results]).encode())
        return results

    def _saved_results(self, run_id: str, number: int) -> list[MemberResult] | None:
        """Mailchimp's answer to the chunk's upsert, once it was written (None before)."""
        saved = results_blob(run_id, number)
        if not self.work.exists(saved):
            return None
        return [MemberResult(r["email"], Outcome(r["outcome"]), r.get("reason"), r.get("field"))
                for r in json.loads(self.work.read_bytes(saved))]

    def _tag(self, run: Run, destination: Destination | None, members: list[Member],
             results: list[MemberResult]) -> dict[str, str]:
        """Add each delivered member's segment tags it does not carry yet; the members not tagged, with why."""
        needing = _needing_tags(members, results)
        if destination is None or not needing:
            return {}
        by_tag: dict[str, list[str]] = {}
        for m in members:
            if m.email in needing:
                for tag in _missing_tags(m):
                    by_tag.setdefault(tag, []).append(m.email)
        not_tagged: dict[str, str] = {}
        for tag, emails in by_tag.items():
            refused = self.connections.call(destination, lambda client: client.tag_members(
                run.details["audienceId"], run.details["tagIds"][tag], emails))
            for email, reason in refused.items():
                not_tagged.setdefault(email, f"tag {tag!r} not added: {reason}")
        return not_tagged

    def _untag(self, run: Run, destination: Destination | None, members: list[Member]) -> "_Untags":
        """Take segment tags off members no longer in those segments (not those the guard holds back)."""
        by_tag = _due_untags(run, members)
        untags = _Untags()
        if destination is None or not by_tag:
            return untags
        segment_of_tag = {part.tag: part.segment for part in run.segments}
        for tag, emails in by_tag.items():
            missed = self.connections.call(destination, lambda client: client.untag_members(
                run.details["audienceId"], run.details["tagIds"][tag], emails))
            segment = segment_of_tag[tag]
            untags.done[segment] = untags.done.get(segment, 0) + len(emails) - len(missed)
            if missed:
                untags.failed[segment] = untags.failed.get(segment, 0) + len(missed)
        return untags

    def _count(self, run_id: str, number: int, attempt: str, members: list[Member], results: list[MemberResult],
               not_tagged: dict[str, str] | None = None, untags: "_Untags | None" = None) -> None:
        """Count the chunk once. Members written whose segment tag could not be added count by what was written,
        each with a `tag` line in the errors report, and in `tagFailed`; untags that failed count in `untagFailed`."""
        not_tagged = not_tagged or {}
        untags = untags or _Untags()
        source = {m.email: m.source for m in members}
        lines = [
            _error_line(source[r.email].segment, source[r.email].partition, source[r.email].row, r.email,
                        r.reason if not r.field else f"{r.reason} (field {r.field})",
                        "mailchimp" if r.outcome is Outcome.REFUSED else "failure")
            for r in results if r.outcome in (Outcome.REFUSED, Outcome.FAILED)
        ]
        lines += [_error_line(source[email].segment, source[email].partition, source[email].row, email,
                              f"written, but its segment tag was not added: {reason}", "tag")
                  for email, reason in not_tagged.items()]
        errors = ""
        if lines:
            errors = f"{errors_prefix(run_id)}chunk-{number:06d}-{attempt}.jsonl"
            self.work.write_bytes(errors, b"".join(lines))
        delivered = {r.email for r in results if r.outcome in DELIVERED}
        per_segment = chunk_counts(results, {m.email: m.source.segment for m in members}, delivered - not_tagged.keys())
        for email in not_tagged:
            per_segment[source[email].segment]["tagFailed"] += 1
        for key, by_segment in (("untagged", untags.done), ("untagFailed", untags.failed)):
            for segment, count in by_segment.items():
                per_segment.setdefault(segment, zero_counts())[key] += count
        self.runs.finish_chunk(run_id, number, per_segment, errors)

    def _settle(self, run_id: str) -> None:
        """Finish the run once every chunk is counted, then clean up and free the destination. The clean-up is
        repeated by every later call for a finished run (a redelivered message), in case the worker that settled it
        died before cleaning up: both steps are idempotent."""
        run = self.runs.settle_if_done(run_id)
        if run is None:
            run = self.runs.get(run_id, counts=False)
            if run is None or run.finished_at is None or run.details.get("cleanedUp"):
                return
        else:
            log.info("export %s finished: %s", run_id, run.status)
        # Chunks and saved answers hold personal data and are of no use once every chunk is counted; the error
        # report stays (for GET .../errors) unless the destination was deleted.
        gone = run.status == "cancelled" and self.destinations.get(run.destination_id) is None
        self.work.delete_prefix(f"runs/{run_id}/" if gone else f"runs/{run_id}/chunks/")
        self._released(run)
        if not gone:
            self.runs.update(run_id, lambda r: r.details.update(cleanedUp=True))

    def chunk_gave_up(self, run_id: str, number: int, attempt: str) -> None:
        """The chunk message was poisoned: its members are counted with what Mailchimp saved of them, never dropped.

        Members whose upsert went through (its answer is saved) count as written and only their tags as failed;
        the others count failed with the last error.
        """
        chunk = self.runs.get_chunk(run_id, number)
        if chunk is None or chunk["state"] == "done":
            return
        with self.work.exclusive(chunk_blob(run_id, number)):
            chunk = self.runs.get_chunk(run_id, number)
            if chunk is not None and chunk["state"] != "done":
                self._give_up(run_id, number, attempt, chunk.get("lastError") or "the chunk failed repeatedly")
        self._settle(run_id)

    def _give_up(self, run_id: str, number: int, attempt: str, reason: str) -> None:
        everyone = list(decode_members(self.work.read_bytes(chunk_blob(run_id, number))))
        members = [m for m in everyone if not m.departed]
        why = f"gave up after repeated failures: {reason}"
        # Written members (the upsert's answer is saved) count as written, only their tags failed; the others failed.
        results = self._saved_results(run_id, number) or [MemberResult(m.email, Outcome.FAILED, why) for m in members]
        run = self.runs.get(run_id, counts=False)
        self._count(run_id, number, attempt, members, results, *(_tags_failed(run, everyone, results, why) if run else ()))

    def cancel(self, destination_id: str, reason: str) -> str | None:
        """Stop the destination's running export: chunks not yet sent count as failed with `reason`.

        Returns the cancelled run's id. Chunks already in Mailchimp stay there; the run keeps its record for audit.
        """
        run_id = self.destinations.active_run(destination_id)
        if not run_id:
            return None

        run = self.runs.update(run_id, lambda r: _cancel(r, reason))
        self.destinations.release(destination_id, run_id)
        return run.id

    def cancel_run(self, run_id: str, reason: str) -> Run | None:
        """Cancel one run by its id, as `cancel` does for a destination's running export: a chunk that has not started
        yet sends nothing (each reads the run first; chunks being sent finish), its members count failed with
        `reason`, and the run ends `cancelled` once every chunk is counted. A run already cancelling is left as it is
        (cancelling twice is harmless); a finished one is returned unchanged (the caller says it had finished).
        None when there is no such run."""
        run = self.runs.get(run_id, counts=False)
        if run is None or run.finished or run.status == CANCELLING:
            return self.runs.get(run_id) if run is not None else None
        run = self.runs.update(run_id, lambda r: _cancel(r, reason))
        if run.status == CANCELLING and run.total_chunks is None and run.started_at is None:
            self.plan_queue.send({"runId": run_id})  # queued: planning settles it at once, sending nothing (sent
            # again in case the first message was lost)
        # The destination stays held until the run is counted (chunks not started count failed at once, without
        # calling Mailchimp): a new run never overlaps the chunks of this one still being sent.
        return self.runs.get(run_id)

    # --- reading ------------------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    def runs_of(self, destination_id: str, top: int | None = None) -> list[Run]:
        """Newest first; with `top`, only the newest `top`."""
        return self.runs.list_for_destination(destination_id, top)

    def error_lines(self, run_id: str) -> Iterator[bytes]:
        """Every invalid, refused and failed row of a run as JSON Lines, one errors blob (about ERRORS_BLOCK_BYTES at
        most) at a time; `error_page` reads the same report a page at a time."""
        yield from (self.work.read_bytes(name) for name in self._error_blobs(run_id))

    def _error_blobs(self, run_id: str) -> Iterator[str]:
        """The run's errors blobs in report order: planning's first, then chunk by chunk."""
        yield from sorted(self.work.list_names(errors_prefix(run_id) + "plan-"))
        for chunk in self.runs.chunks(run_id):
            if chunk.get("errorsBlob"):
                yield chunk["errorsBlob"]

    def error_page(self, run_id: str, limit: int, continuation: str | None = None,
                   max_bytes: int = ERRORS_PAGE_BYTES) -> tuple[list[bytes], str | None]:
        """At most `limit` lines of the errors report, from where `continuation` (opaque, from the previous page) points,
        and the continuation of the next page (None: this was the last). The page also ends before a line that would
        take it past `max_bytes` (whichever comes first); it holds at least one line, so paging always goes on (a line
        is small, see `_error_line`). Memory: the page and one errors blob.

        The token is base64url of "<line>:<blob name>"; one of another run, altered or made up answers Refused(400). Lines of chunks counted after a page was read but ordered before it
        (a run still in progress) are not gone back for: read the report once the run has finished.
        """
        import base64
        import binascii
        import re

        if limit < 1:
            raise ValueError(f"a page holds at least one line, not {limit}")
        names = self._error_blobs(run_id)
        name, skip = next(names, None), 0
        if continuation:
            bad = Refused(400, "the continuation is not one this report gave out: start again without it")
            try:
                if len(continuation) > 2000:
                    raise ValueError("too long")
                text = base64.urlsafe_b64decode(continuation + "=" * (-len(continuation) % 4)).decode("utf-8")
            except (binascii.Error, ValueError):
                raise bad from None
            found = re.fullmatch(r"([0-9]{1,9}):(.+)", text, re.DOTALL)
            if found is None:
                raise bad
            skip, wanted = int(found[1]), found[2]
            while name is not None and name != wanted:
                name = next(names, None)
            if name is None:
                raise bad

        def token(at: str, line: int) -> str:
            return base64.urlsafe_b64encode(f"{line}:{at}".encode("utf-8")).decode("ascii").rstrip("=")

        page: list[bytes] = []
        size = 0
        while name is not None:
            lines = self.work.read_bytes(name).splitlines(keepends=True)
            while skip < len(lines):
                line = lines[skip]
                if len(page) >= limit or (page and size + len(line) > max_bytes):  # the page is full within this blob
                    return page, token(name, skip)
                page.append(line)
                size += len(line)
                skip += 1
            name, skip = next(names, None), 0
            if len(page) >= limit:
                return page, (token(name, 0) if name is not None else None)
        return page, None
