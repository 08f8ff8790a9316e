"""Planning a run: read the audience and the segment snapshots, write chunks of at most 500 members, freeze the plan,
then queue one message per chunk. Members already as wanted are counted unchanged here and never sent; members
certainly new are streamed (queued while the rows are still read, see `_plan_rows`)."""
from __future__ import annotations

import contextvars
import itertools
import logging
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from shared import telemetry
from shared.audience_mirror import Marks, NotRefreshed
from shared.columns import ColumnMismatch, resolve_columns
from shared.connections import NotConnected
from shared.destinations import Destination
from shared.exports.ahead import ahead
from shared.exports.chunks import missing_tags
from shared.exports.error_report import REPORT_KINDS, ProblemWriter, ReportWriter
from shared.exports.files import chunk_blob, errors_prefix, plan_lock
from shared.exports.ports import NOTICE_CHARS, ExportParts
from shared.exports.preview import PreviewTally, existing_tags
from shared.mailchimp.client import MailchimpClient
from shared.mailchimp.errors import MailchimpAuthError
from shared.mailchimp.merge_values import unchanged
from shared.mailchimp.models import Audience, MergeField
from shared.member_lookup import Needed
from shared.members import Contact, Member, decode_members, encode_members
from shared.planning import Mapping as PlanMapping
from shared.planning import SegmentInput, TagDepartures, TooManyRows, plan_export
from shared.row_memo import RowMemo, RowSkips, StoredMemo, fingerprint, read_stored
from shared.runs import CANCELLING, PREVIEWED, Run, SegmentPart, add_counts, now_iso, zero_counts
from shared.segment_rows import RowDigests, read_rows, rows_at_most, snapshot_columns
from shared.snapshots import Snapshot, SnapshotProblem, segment_listing

log = logging.getLogger(__name__)


CHUNK_WRITERS = 8  # chunk files written at once while planning
UNQUEUED = "not sent: queuing the run's chunks failed repeatedly; retry the export's failed members"
UNQUEUED_NOTICE = ("queuing its chunks failed repeatedly: the members of the chunks not sent yet were counted failed; "
                   "see the function logs for the run id, fix the cause and retry the export's failed members")


def _joined(*notes: str | None) -> str:
    """The run's notice (its message once it settles) made of `notes`, those given."""
    return "; ".join(note for note in notes if note)[:NOTICE_CHARS]


def _with_notice(run: Run, notice: str) -> bool:
    """Put `notice` first in the run's notice, once."""
    earlier = run.details.get("notice") or ""
    if notice in earlier:
        return False
    run.details["notice"] = _joined(notice, earlier)
    return True


def _number(chunk: dict[str, Any]) -> int:
    """A chunk row's number (RowKey chunk-000042)."""
    return int(chunk["RowKey"].split("-", 1)[1])


WRITABLE_STATUSES = ("subscribed", "unsubscribed", "pending", "transactional")  # not cleaned or archived


def _already_done(member: Member) -> bool:
    """In the audience with these values and every tag, nothing to take off: no Mailchimp call would change it.

    Such members are counted unchanged (and tagged) at planning and never sent, which makes the usual scheduled
    refresh, where most people are as they were, cost little more than reading the audience.
    """
    existing = member.existing
    return (existing is not None and existing.status in WRITABLE_STATUSES and not member.untag
            and not missing_tags(member) and unchanged(member.merge_fields, existing.merge_fields))


@dataclass
class _Planned:
    """What planning's reading produced: the plan, its chunk total and the chunks whose message went out while the
    rows were read (streamed). `broken` when a segment's files stopped being readable after members were streamed:
    the plan is then those streamed chunks alone."""

    plan: Any
    total: int
    sent: set[int] = field(default_factory=set)
    broken: _Unreadable | None = None


class _Unreadable(Exception):
    """A segment's files could not be read to the end while planning (`problem` names the file)."""

    def __init__(self, part: SegmentPart, problem: SnapshotProblem) -> None:
        super().__init__(str(problem))
        self.part = part
        self.problem = problem


def _audience_and_fields(client: MailchimpClient, audience_id: str) -> tuple[Audience, list[MergeField]]:
    """The audience and its merge fields, asked at once: two reads, each a round trip before planning can begin. Both
    have ended when it returns or raises (the audience's error first), so a retry after a 401 overlaps neither."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        fields = pool.submit(contextvars.copy_context().run, client.list_merge_fields, audience_id)
        audience = client.get_audience(audience_id)
        return audience, fields.result()


def _left_out_notice(left_out: dict[str, str]) -> str:
    return (f"not exported: {'; '.join(left_out.values())} (the other segments were exported; the ones left out read 0 "
            "rows: fix what is said and export them again)")


def _held_notice(held: dict[str, int], departures: dict[str, TagDepartures], percent: int) -> str:
    parts = [f"{leaving:,} of the {departures[tag].carrying:,} members carrying tag {tag!r}" for tag, leaving in held.items()]
    return (f"untagging held back: {'; '.join(parts)} are no longer in the segment's snapshot, more than "
            f"UNTAG_GUARD_PERCENT ({percent}%); the tags were left on. If the snapshot is right, start the export again "
            'with the body {"confirmUntag": true}; if not, fix the export at the source')


def _owned(tag_id: int) -> str:
    """How a tag the destination created is recorded: by id (names of older records are not ids and never match)."""
    return f"#{tag_id}"


def _intended(run_id: str, name: str) -> str:
    """A tag this run is about to create: honoured by this run only, until the tag's id is recorded."""
    return f"?{run_id}/{name.casefold()}"


@dataclass(frozen=True)
class _Rows:
    """A live segment's rows, which planning may read twice (shared/planning.py, "Known rows"); a SnapshotProblem
    met while reading them is _Unreadable, naming the segment."""

    parts: ExportParts
    part: SegmentPart
    snapshot: Snapshot
    digests: RowDigests | None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from read_rows(self.parts.segments, self.snapshot, self.digests)
        except SnapshotProblem as problem:
            raise _Unreadable(self.part, problem) from None


class Planner(ExportParts):
    def plan(self, run_id: str) -> None:
        """Plan in two steps, so that a redelivered plan message never sends a different plan.

        1. Read, write every chunk blob and chunk row, then freeze the plan in one run update (its chunk total,
           counts and held-back untags). Only streamed chunks (certainly new members, see `_plan_rows`) go out
           before the freeze: a crash before it leaves only those sent, and planning starts over around them.
        2. Send one message per chunk. A crash here is replayed from the frozen plan: the chunks not yet counted
           are sent again (a chunk counts once, whatever the number of its messages).
        """
        with self.work.exclusive(plan_lock(run_id), remove=True):  # a copy of the message delivered meanwhile waits here
            self._plan_once(run_id)

    def _plan_once(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        telemetry.describe_run(run)  # log fields: its destination and trigger
        if run is None or self._ended(run):
            return
        if run.details.get("chunksSent"):  # planned and sent (a redelivered message); a plan with no chunk is
            self._settle(run_id)  # settled here, so a worker that died before that is made good
            return
        if run.status == CANCELLING and run.total_chunks is None and not self._streamed_earlier(run_id):
            self.runs.update(run_id, lambda r: setattr(r, "total_chunks", 0))  # cancelled before planning: nothing to send
            self._settle(run_id)
            return
        # Before the destination is read: its mirror is kept only if no deletion came since (shared/audience_mirror.py)
        deletion_marks = self.mirror.marks(run.destination_id) if self.mirror is not None else None
        destination = self.destinations.get(run.destination_id)
        if destination is None and run.total_chunks is None:
            self._fail(run, "the destination was deleted before the export started")
            return
        if destination is not None and not destination.consent_accepted and run.status != CANCELLING:
            run = self._stop_for_consent(run.id, destination)
            if run.total_chunks == 0:
                return
        if run.total_chunks is None and self.waits_for(run):
            return
        sent: set[int] = set()
        if run.total_chunks is None:
            run = self.runs.update(run_id, lambda r: self._mark_started(r))
            try:
                planned = self._plan(run, destination, deletion_marks)
            except (MailchimpAuthError, NotConnected) as error:
                self._fail(run, str(error), credentials_refused=isinstance(error, MailchimpAuthError))
                return
            if planned is None:
                return
            sent = planned
        self._send_chunks(run_id, skip=sent)  # a frozen plan of a cancelled run is sent too: its workers count it failed

    def _plan(self, run: Run, destination: Destination, deletion_marks: Marks | None) -> set[int] | None:
        """Step 1 (see `plan`): the chunks whose message went out already (streamed while the rows were read), or None
        when the run ended instead (failed before anything was sent, or a preview).

        A segment whose snapshot is gone, or whose files cannot be read (SnapshotProblem: a header that cannot be
        used, a partition storage refuses to serve, ...) or no longer fit the mapping, is left out of the run: its
        counts stay 0, the run's message says which file and what to do, and the other segments go on. When none is
        left the run fails at once, saying why."""
        if run.details.get("retryOf"):
            return set() if self._plan_retry(run) else None
        run_id = run.id
        stored_memo = self._memo_ahead(destination)
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
            return None
        # The first calls go through `call`, so a credential rotated in the secret store is re-read after a 401.
        audience, merge_fields = self.connections.call(destination, lambda c: _audience_and_fields(c, destination.audience_id))
        client = self.connections.client(destination)
        merge_types = {f.tag: f.type for f in merge_fields}
        missing_fields = [tag for tag in destination.mapping.merge_fields if tag not in merge_types]
        if missing_fields:
            self._fail(run, f"the audience has no merge field(s) {missing_fields}: create them in Mailchimp or change the mapping")
            return None
        mirror_as_of = datetime.now(UTC)  # before the audience is read: from now on (`_audience_ahead`)
        audience_of = self._audience_ahead(destination, client, deletion_marks)
        within_limit = self._limit_ahead(run, audience, left_out, snapshots)
        # Tags this destination created are kept in step with their segments (members who left lose them);
        # a tag someone made by hand is only ever added to. Ownership is by Mailchimp's tag id, so a tag deleted
        # in Mailchimp and made again by hand under the same name is not the destination's. The tags about to be
        # created are noted for this run first, so a planning attempt that dies right after creating one still
        # finds it its own when the run is planned again.
        # A preview creates no tag and records no ownership: it reads the tags as they are.
        wanted = [part.tag for part in run.segments if part.segment not in left_out]
        dry = bool(run.details.get("dryRun"))
        tag_ids = (existing_tags(client.list_tags(destination.audience_id), wanted) if dry else
                   client.ensure_tags(destination.audience_id, wanted,
                                      before_creating=lambda missing: self.destinations.own_tags(
                                          destination.id, destination.audience_id, {_intended(run_id, n) for n in missing})))
        marks = self.destinations.owned_tags(destination.id, destination.audience_id)
        owned = {name: tag_ids[name] for name in tag_ids
                 if _owned(tag_ids[name]) in marks or _intended(run_id, name) in marks}
        if (new_marks := {_owned(tag_ids[name]) for name in owned} - marks) and not dry:
            self.destinations.own_tags(destination.id, destination.audience_id, new_marks)
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
                return None
            preview = PreviewTally({p.tag: p.segment for p in run.segments},
                                   ReportWriter(self.work, run_id, "preview")) if dry else None
            try:
                planned = self._plan_rows(run, destination, live, snapshots, columns, client, merge_types, owned,
                                          audience.member_count, preview.keep if preview else self._write_chunk,
                                          deletion_marks, audience_of, stored_memo, within_limit)
            except _Unreadable as unreadable:  # raised while the rows were read: no chunk is written yet
                self._leave_out(run, unreadable.part, left_out, str(unreadable.problem))
                continue
            if planned is None:
                return None
            break
        plan, total, broken = planned.plan, planned.total, planned.broken
        partly: dict[str, str] = {}  # segment -> why it was exported in part
        if broken is not None:
            c = plan.counts[broken.part.segment]
            partly[broken.part.segment] = (
                f"segment {broken.part.segment!r} (snapshot {broken.part.snapshot}) was exported in part: "
                f"{broken.problem}; reading stopped there: the {plan.streamed:,} members sent while it was read are "
                f"counted, {c.read - plan.streamed - c.invalid - c.erased:,} rows read but not sent are not, and no "
                "tag was taken off; fix the file and export the segment again")
            log.warning("export %s: %s", run_id, partly[broken.part.segment])
        counts = plan.counts
        held = self._held_untags(run, plan.departures)
        segment_of_tag = {part.tag: part.segment for part in run.segments}
        planned_outcomes: dict[str, dict[str, int]] = {}
        for name, c in counts.items():
            if c.settled or c.erased:  # erased at the person's request: refused without a call (shared/erasures.py)
                planned_outcomes[name] = {**zero_counts(), "unchanged": c.settled, "tagged": c.settled, "refused": c.erased}
        for tag, leaving in held.items():
            planned_outcomes.setdefault(segment_of_tag[tag], zero_counts())["untagHeld"] += leaving
        if preview is not None:  # what the chunks would have added, as if every one had been sent
            preview.tally(held)
            for name, predicted in preview.counts.items():
                planned_outcomes[name] = add_counts(planned_outcomes.get(name, zero_counts()), predicted)
        self.runs.record_planned_outcomes(run_id, planned_outcomes)

        def freeze(r: Run) -> bool:
            if r.total_chunks is not None or r.finished_at is not None:
                return False  # frozen already (the first freeze is the plan), or it ended meanwhile (given up on)
            r.total_chunks = total
            if preview is not None:  # ends here: nothing is sent
                r.total_chunks, r.status, r.finished_at = 0, PREVIEWED, now_iso()
                r.details["preview"] = {"segments": preview.changes, "sample": preview.sample}
            if held:
                r.details["untagHeld"] = held
            if left_out:
                r.details["leftOut"] = dict(left_out)
            if partly:
                r.details["partlyRead"] = partly
            if plan.known:
                r.details["knownRows"] = plan.known  # counted unchanged unread: the last plan found them in step
            notes = [_held_notice(held, plan.departures, self.settings.untag_guard_percent) if held else None,
                     _left_out_notice(left_out) if left_out else None, *partly.values(), r.details.get("notice")]
            if any(notes):
                r.details["notice"] = _joined(*notes)
            for part in r.segments:
                c = counts.get(part.segment)
                if c is not None and broken is not None:  # only the rows accounted for (the notice says the rest)
                    part.counts.update(read=plan.streamed + c.invalid + c.erased, invalid=c.invalid, duplicates=0,
                                       fieldProblems=c.field_problems)
                elif c is not None:
                    part.counts.update(read=c.read, invalid=c.invalid, duplicates=c.duplicates, fieldProblems=c.field_problems)
            return True

        self.runs.update(run_id, freeze)
        if preview is not None:
            log.info("export %s previewed: %d chunks would be sent", run_id, total)
            return None
        telemetry.count_members(planned_outcomes)  # members settled without a call (in step already, or erased)
        log.info("export %s planned: %d chunks (%d sent while reading, %d rows known from the last plan)", run_id, total,
                 len(planned.sent), plan.known, extra={"knownRows": plan.known})
        return planned.sent

    def _plan_rows(self, run: Run, destination: Destination, live: list[SegmentPart], snapshots: dict[str, Snapshot],
                   columns: dict[str, dict[str, str]], client: Any, merge_types: dict[str, str],
                   owned: dict[str, int], subscribed: int,
                   write_chunk: Callable[[str, int, list[Member]], None],
                   deletion_marks: Marks | None, audience_of: Callable[[Needed], Iterator[Contact]],
                   stored_memo: Callable[[], StoredMemo | None],
                   within_limit: Callable[[SegmentPart], bool]) -> _Planned | None:
        """Read the live segments' rows and the audience, and write the chunks with `write_chunk` (a preview keeps
        them instead); None when the run failed instead (over MAX_PROFILES_PER_EXPORT). _Unreadable, before any chunk
        is written, when a segment's files cannot be read to the end.

        Members who are certainly new are streamed when the run may (shared/planning.py says when; `may_stream` first
        proves the rows within MAX_PROFILES_PER_EXPORT, `rows_at_most`): each such chunk is written
        and its message sent while the rows are still read, so Mailchimp gets its first members within seconds. A
        crashed attempt's streamed chunks stay as they are: planning again counts their members without planning
        them twice (shared/planning.py, `streamed_before`).

        `owned`: the run's tags it keeps in step (name -> id); `subscribed`: the audience's subscribed contacts. When
        no audience mirror can be refreshed, the rows are read once more before planning, so that a run with few of
        them against the audience looks up only their contacts and those of its tags (`ExportParts.audience`)."""
        run_id = run.id
        # An attempt's report of invalid rows is written anew (without a segment left out since, or by a crashed
        # attempt that read other segments): planning's part of the report is only read once the plan is frozen.
        for kind in REPORT_KINDS:
            self.work.delete_prefix(f"{errors_prefix(run_id)}{kind}-")
        problems = ProblemWriter(self.work, run_id)
        earlier = self._streamed_earlier(run_id)
        before = {m.email for n in sorted(earlier) for m in decode_members(self.work.read_bytes(chunk_blob(run_id, n)))}
        streamable = not earlier and not run.details.get("dryRun") and len(live) == 1

        def may_stream() -> bool:  # asked by planning before the first chunk would be streamed
            if not within_limit(live[0]):
                return False
            self.runs.update(run_id, lambda r: r.details.update(streaming=True))  # see Cancelling._stop_for_consent
            return True
        # Numbers a crashed attempt left unused below its streamed chunks are filled with empty chunks, so the plan's
        # chunks are numbered 0 .. total-1 whatever that attempt got to write.
        top = max(earlier, default=-1) + 1
        numbers = itertools.count(top)
        sent: set[int] = set()
        mapping = PlanMapping(email=destination.mapping.email, merge_fields=dict(destination.mapping.merge_fields))
        erased = self.erased_for(destination)
        memo_fingerprint = fingerprint(mapping.email, mapping.merge_fields, merge_types,
                                       {part.segment: part.tag for part in live}, owned, erased)
        skips = self._row_skips(destination, memo_fingerprint, stored_memo)
        inputs = self._inputs(live, snapshots, columns, skips)
        needed = Needed(lambda most: self._row_emails(self._inputs(live, snapshots, columns), mapping, erased, most),
                        tag_ids={owned[part.tag] for part in live if part.tag in owned}, subscribed=subscribed)
        with tempfile.TemporaryDirectory(prefix="plan-") as workdir, \
                ThreadPoolExecutor(max_workers=CHUNK_WRITERS) as writers:
            # Chunk files and records are written a few at a time (storage round trips, not CPU, are the cost),
            # with a bounded number in flight so memory stays small.
            pending: deque[Future] = deque()

            def submit(task: Callable[..., None], *args: Any) -> None:
                pending.append(writers.submit(task, *args))
                if len(pending) >= 2 * CHUNK_WRITERS:
                    pending.popleft().result()

            def stream(members: list[Member]) -> None:
                number = next(numbers)
                sent.add(number)
                submit(self._write_and_send, run_id, number, members)

            plan = plan_export(
                inputs,
                mapping,
                existing=audience_of(needed),
                merge_field_types=merge_types,
                chunk_size=self.settings.chunk_size,
                on_problem=problems,
                workdir=workdir,
                removable_tags=owned,
                already_done=_already_done,
                max_rows=self.settings.max_profiles_per_export,
                erased=erased,
                stream=stream if streamable else None,
                rows_at_most=self.settings.max_profiles_per_export,
                streamed_before=before,
                may_stream=may_stream,
                memo=skips,
            )
            for hole in (n for n in range(top) if n not in earlier):
                submit(write_chunk, run_id, hole, [])
            try:
                for members in plan.chunks():
                    submit(write_chunk, run_id, next(numbers), members)
            except TooManyRows as too_many:  # stopped reading there: nothing was spilled after it
                if not (sent or earlier):  # ... and nothing sent (the count before streaming rules this out,
                    # unless a partition grew between the count and the read)
                    self._fail(run, self._over_limit(too_many.limit))
                    return None
                unreadable = _Unreadable(live[0], SnapshotProblem(live[0].folder, (
                    f"it grew past MAX_PROFILES_PER_EXPORT ({too_many.limit:,}) while it was read")))
                for future in pending:
                    future.result()
                problems.flush()
                return _Planned(plan, top + len(sent), sent, broken=unreadable)
            except _Unreadable as unreadable:
                if not (sent or earlier):
                    raise
                for future in pending:
                    future.result()
                problems.flush()  # the invalid rows read before it are reported
                return _Planned(plan, top + len(sent), sent, broken=unreadable)
            if skips is not None and deletion_marks is not None and {p.segment for p in live} == set(destination.segments):
                # a plan of some of the destination's segments (a run of chosen ones, or without one that could not be
                # read) would replace the memo of every segment with one the next full run cannot use; a preview's
                # memo states facts as a run's does. Stored beside the last chunks and the report of invalid rows.
                pending.append(writers.submit(contextvars.copy_context().run, self.mirror.keep_row_memo,  # type: ignore[union-attr]
                                              destination.id, destination.audience_id,
                                              skips.next.to_bytes(memo_fingerprint), deletion_marks))
            problems.flush()
            for future in pending:
                future.result()
        return _Planned(plan, next(numbers), sent)

    def _memo_ahead(self, destination: Destination) -> Callable[[], StoredMemo | None]:
        """The destination's row memo as stored (`_row_skips`), downloaded and read (its entries indexed by contact)
        from now on, beside the calls to Mailchimp that come before planning. The first call takes it; a later one
        (planning again without a segment) reads it again. Read a little earlier, it is checked as before: by a
        fingerprint made after (the erasure requests the destination honours included), and a row is skipped only
        while the audience holds its contact as it was."""
        if self.mirror is None:
            return lambda: None
        mirror, ids = self.mirror, (destination.id, destination.audience_id)

        def stored() -> StoredMemo | None:
            data = mirror.row_memo(*ids)
            return read_stored(data) if data is not None else None

        return ahead(stored)

    def _audience_ahead(self, destination: Destination, client: Any,
                        marks: Marks | None) -> Callable[[Needed], Iterator[Contact]]:
        """`audience` as planning asks it, the mirror brought up to date from now on, on a thread of its own, beside
        the calls and reads that come before planning (the run's tags, the row memo): the refresh's calls to Mailchimp,
        about half a second at any size (what changed, the tags, the counts per status), and when something changed
        the new version merged and stored. Only a refresh starts early: when there is no mirror to refresh, or its
        refresh finds a full read needed, the audience is read in full (or looked up) when planning asks, as before.
        It starts once the run's checks of Mailchimp passed (the audience and its merge fields), with their client: a
        run that fails on them refreshes nothing. The first call takes what was started; a later one (planning again
        without a segment) does all of it again, when asked."""
        mirror = self.mirror
        if mirror is None:
            return lambda needed: self.audience(destination, client, needed, marks)

        def refreshed() -> tuple[Contact | None, Iterator[Contact]]:
            contacts = mirror.members(destination.id, destination.audience_id, client, marks=marks, refresh_only=True)
            return next(contacts, None), contacts

        first = ahead(refreshed)

        def audience(needed: Needed) -> Iterator[Contact]:
            try:
                contact, contacts = first()
            except NotRefreshed as not_refreshed:
                yield from self.audience(destination, client, needed, marks, not_refreshed)
                return
            if contact is not None:
                yield contact
                yield from contacts

        return audience

    def _row_skips(self, destination: Destination, memo_fingerprint: str,
                   stored: Callable[[], StoredMemo | None]) -> RowSkips | None:
        """The rows the destination's last plan found in step (shared/row_memo.py), when it has an audience mirror
        (the memo lives beside it): a memo of another fingerprint, or none, is an empty one."""
        if self.mirror is None:
            return None
        found = stored()
        if found is None or found.memo is None or found.fingerprint != memo_fingerprint:
            state, skips = "none" if found is None else "unusable", RowSkips(RowMemo.empty())
        else:
            state, skips = "used", RowSkips(found.memo, found.by_contact)
        why = ("; made under another mapping, tags, erasure requests or planning code, or unreadable: every row is read"
               if state == "unusable" else "")
        log.info("row memo of destination %s: %s (%d rows%s)", destination.id, state, len(skips.memo), why,
                 extra={"rowMemo": state})
        return skips

    def _streamed_earlier(self, run_id: str) -> set[int]:
        """The chunks a crashed planning attempt of this run streamed (their message may have gone out)."""
        return {_number(c) for c in self.runs.chunks(run_id) if c.get("streamed")}

    def _limit_ahead(self, run: Run, audience: Audience, left_out: dict[str, str],
                     snapshots: dict[str, Snapshot]) -> Callable[[SegmentPart], bool]:
        """`_within_limit` as planning asks it before it streams. Into an audience without a contact of any status
        (Mailchimp's `total_contacts`; `member_count` counts subscribed ones only) every row is new, so a run of one
        segment streams: its rows are counted from now on, beside the calls to Mailchimp before planning (at a million
        rows, about a second sooner to the first write). Anything else is counted when asked: a refresh, or a run into
        a double opt-in audience of pending contacts, may never ask."""
        parts = [part for part in run.segments if part.segment not in left_out]
        if len(parts) != 1 or audience.total_contacts != 0 or run.details.get("dryRun"):
            return lambda part: self._within_limit(part, snapshots)
        counted = ahead(partial(self._within_limit, parts[0], snapshots))
        return lambda part: counted() if part == parts[0] else self._within_limit(part, snapshots)

    def _within_limit(self, part: SegmentPart, snapshots: dict[str, Snapshot]) -> bool:
        """Whether the segment's rows are proved within MAX_PROFILES_PER_EXPORT (`rows_at_most`), which promises
        nothing is sent past it: the condition for streaming new members while its rows are read."""
        try:
            bound = rows_at_most(self.segments, snapshots[part.segment], self.settings.max_profiles_per_export)
        except SnapshotProblem:
            return False  # reading the rows says what is wrong
        return bound <= self.settings.max_profiles_per_export

    def _write_and_send(self, run_id: str, number: int, members: list[Member]) -> None:
        """A streamed chunk: recorded (as streamed) before its message goes out, so a crash never loses it."""
        self._write_chunk(run_id, number, members, streamed=True)
        self.chunk_queue.send({"runId": run_id, "chunk": number})

    def _inputs(self, live: list[SegmentPart], snapshots: dict[str, Snapshot], columns: dict[str, dict[str, str]],
                skips: RowSkips | None = None) -> list[SegmentInput]:
        return [SegmentInput(segment=part.segment, tag=part.tag, columns=columns[part.segment],
                             rows=_Rows(self, part, snapshots[part.segment],
                                        skips.for_segment(part.segment, part.tag, columns[part.segment]) if skips else None))
                for part in live]

    def _row_emails(self, inputs: list[SegmentInput], mapping: PlanMapping, erased: Mapping[str, str],
                    most: int) -> set[str] | None:
        """The addresses planning `inputs` plans (valid rows, not erased), read by the same planning with no
        audience and nothing reported; None past `most` rows (reading stops there)."""
        plan = plan_export(inputs, mapping, on_problem=lambda problem: None, max_rows=most, erased=erased)
        try:
            return {member.email for chunk in plan.chunks() for member in chunk}
        except TooManyRows:
            return None

    def _leave_out(self, run: Run, part: SegmentPart, left_out: dict[str, str], problem: str,
                   log_text: str | None = None) -> None:
        """Note why planning leaves `part` out of the run. `log_text` stands in for `problem` in the log when the
        problem names columns (they can be row data)."""
        left_out[part.segment] = f"segment {part.segment!r} (snapshot {part.snapshot}): {problem}"
        log.warning("export %s: segment %r left out while planning: %s", run.id, part.segment, log_text or problem)

    def _fail_left_out(self, run: Run, left_out: dict[str, str]) -> None:
        self._fail(run, f"nothing was sent: every segment was left out: {'; '.join(left_out.values())}"[:NOTICE_CHARS],
                   log_message=f"nothing was sent: no segment is left ({len(left_out)} left out, each logged above)")

    def _write_chunk(self, run_id: str, number: int, members: list[Member], streamed: bool = False) -> None:
        self.work.write_bytes(chunk_blob(run_id, number), encode_members(members))
        self.runs.add_chunk(run_id, number, len(members), streamed=streamed)

    def _held_untags(self, run: Run, departures: dict[str, TagDepartures]) -> dict[str, int]:
        """Tags whose departures look like a broken upstream export rather than people leaving: more than
        UNTAG_GUARD_PERCENT of the members carrying a tag would lose it. Those untags are held back, unless the run
        confirms a held run of the same snapshots and no more members leave than that run held back."""
        confirmed = (run.details.get("confirmUntag") or {}).get("held") or {}
        limit = self.settings.untag_guard_percent
        return {tag: d.leaving for tag, d in sorted(departures.items())
                if d.leaving and d.leaving * 100 > d.carrying * limit and d.leaving > confirmed.get(tag, 0)}

    def _send_chunks(self, run_id: str, skip: set[int]) -> None:
        """Step 2 (see `plan`): one message per chunk not yet counted, but for those in `skip` (sent while the rows
        were read, by this very attempt), then the run notes that all were sent."""
        run = self.runs.get(run_id, counts=False)
        total = run.total_chunks if run is not None and run.total_chunks is not None else 0
        for number in self._not_counted(run_id, total):
            if number not in skip:
                self.chunk_queue.send({"runId": run_id, "chunk": number})
        self.runs.update(run_id, lambda r: r.details.update(chunksSent=True))
        self._settle(run_id)  # every chunk may be counted already (or there were none)

    def _not_counted(self, run_id: str, total: int) -> Iterator[int]:
        """The plan's chunks not counted yet, in order. Rows left from a planning attempt that crashed before the
        freeze (numbered from `total` on) are not part of the plan."""
        for chunk in self.runs.chunks(run_id):
            number = _number(chunk)
            if number < total and chunk["state"] != "done":
                yield number

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

    def _fail(self, run: Run, message: str, log_message: str | None = None, credentials_refused: bool = False) -> None:
        """`log_message` stands in for `message` in the log when the run's message names row data (columns)."""
        failed: list[Run] = []

        def fail(r: Run) -> bool:
            failed.clear()  # an attempt whose write lost to another update must not count as this call's
            if r.finished:
                return False
            r.status, r.message, r.finished_at = "failed", message, now_iso()
            failed.append(r)
            return True

        ended = self.runs.update(run.id, fail)
        if failed:
            log.warning("export %s failed: %s", run.id, log_message or message,
                        extra=telemetry.ended_fields(failed[0], credentials_refused=credentials_refused))
        # The clean-up every ended run gets, once (chunk files deleted: streamed ones no worker sends now hold
        # people's data; the destination released; a retried run made retryable again). If it fails, a redelivered
        # message does it (`_ended` again).
        self._ended(ended)

    def _ended(self, run: Run) -> bool:
        """Has the run ended? One whose clean-up was not done (the call that ended it died, or storage refused a
        delete) is cleaned up now: a redelivered message is where that clean-up is tried again."""
        if not run.finished:
            return False
        if run.status != PREVIEWED and not run.details.get("cleanedUp"):
            self._clean_up(run)
        return True

    def plan_gave_up(self, run_id: str) -> None:
        """The plan message was poisoned: its deliveries failed, or it was delivered too often (each time an instance
        stalled past its lease, or was stopped, another copy went out). Planning is safe to repeat, so it is tried once
        more here, as a sixth delivery would be: a frozen plan is sent, one not frozen yet is planned again. Under the
        plan lock, so a planner still at work on an earlier copy (a stalled instance) finishes first.

        That last attempt is noted on the run first. If it fails, the run is given up on (`_give_up_plan`), and the
        error is raised for the host to log; if it dies without a word (its host killed or timed out, as the earlier
        deliveries may have been), the next delivery of this message finds the note and gives the run up at once
        instead of dying again, which would leave the run `running` with no message left to end it."""
        run = self.runs.get(run_id)
        if run is None or self._ended(run):
            return  # checked before the lock too: no lease taken for a run that has ended or is gone
        telemetry.describe_run(run)  # log fields: its destination and trigger, on the give-up warning too
        with self.work.exclusive(plan_lock(run_id), remove=True):
            run = self.runs.get(run_id)
            if run is None or self._ended(run):
                return  # ended by the planner that held the lock
            if run.details.get("lastPlanAttempt") and not run.details.get("chunksSent"):
                self._give_up_plan(run)  # the last attempt died mid-way
                return
            self.runs.update(run_id, lambda r: r.details.update(lastPlanAttempt=True))
            try:
                self._plan_once(run_id)
            except Exception:
                run = self.runs.get(run_id)
                if run is not None and not run.finished and not run.details.get("chunksSent"):
                    self._give_up_plan(run)  # (with every message out, a later step failed: the chunks are on their way)
                raise  # the cause, for the host to log; the next delivery only cleans up (or goes on counting)
            # Done: another copy of the message poisoned later (plan messages are sent more than once) plans again
            # harmlessly instead of taking the note for a last attempt that died
            self.runs.update(run_id, lambda r: r.details.pop("lastPlanAttempt", None) is not None)

    def _give_up_plan(self, run: Run) -> None:
        """Planning failed for good. A run with no plan fails. A frozen plan whose chunk messages could not all be
        queued ends as a chunk given up on does: every chunk not counted yet is counted, its members failed (retry them
        with the run's retry), so that every row is still accounted for, and the run says why. Which messages went out
        is not recorded, so a queued chunk still waiting for a worker is among them (its worker then finds it counted);
        one a worker is sending is counted by that worker. Each chunk is counted once, so a handler killed part-way is
        carried on by the next delivery; CHUNK_WRITERS chunks are counted at once."""
        if run.total_chunks is None:
            self._fail(run, "planning failed repeatedly; see the function logs for the run id, fix the cause and start "
                            "the export again")
            return
        left = list(self._not_counted(run.id, run.total_chunks))
        log.warning("export %s: queuing its chunks failed repeatedly; %d chunks not counted yet are counted failed",
                    run.id, len(left))
        self.runs.update(run.id, lambda r: not r.finished and _with_notice(r, UNQUEUED_NOTICE))
        with ThreadPoolExecutor(CHUNK_WRITERS, thread_name_prefix="give-up") as pool:
            for done in [pool.submit(contextvars.copy_context().run, self._count_given_up, run.id, number, "unqueued",
                                     UNQUEUED) for number in left]:  # (each in the run's log context)
                done.result()
        self._settle(run.id)
