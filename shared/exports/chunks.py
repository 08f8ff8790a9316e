"""Sending one chunk: upsert its members, add and take off segment tags, count every member once, and settle the run
when the last chunk is counted. A chunk whose message is poisoned is still counted, never dropped."""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared import json_codec, telemetry
from shared.destinations import Destination
from shared.emails import subscriber_hash
from shared.exports.error_report import erased_line, error_line
from shared.exports.files import (chunk_blob, chunks_prefix, cleanup_lock, errors_prefix, results_blob, retry_blob,
                                  run_folder)
from shared.exports.ports import ExportParts
from shared.mailchimp.errors import MailchimpAuthError, WritesStopped
from shared.mailchimp.transport import guarded_writes
from shared.members import Member, MemberResult, Outcome, decode_members, encode_members
from shared.planning import erased_reason
from shared.runs import Run, chunk_counts, zero_counts

log = logging.getLogger(__name__)


DELIVERED = (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED)
# A worker that finds the clean-up lease taken asks again this much later (a plan message: for an ended run it only
# cleans up): past the lease of a holder that died (EXCLUSIVE_LEASE_SECONDS, 15 s), whose own redelivery may come first
# and find that lease still there.
CLEAN_UP_AGAIN_SECONDS = 30


def missing_tags(member: Member) -> list[str]:
    """The member's segment tags the audience read did not show on it (tag names compare ignoring case)."""
    if member.existing is None or not member.existing.tags:  # most members of a first run: no case folding
        return list(member.tags)
    carried = {t.casefold() for t in member.existing.tags}
    return [tag for tag in member.tags if tag.casefold() not in carried]


@dataclass
class _Untags:
    """Per segment: members who had a tag taken off, and members whose untag failed."""

    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


def _needing_tags(members: list[Member], results: list[MemberResult]) -> set[str]:
    """Delivered members missing at least one of their segment tags (by the audience read), but for those the upsert
    wrote with their tags (sent in the batch-subscribe call, and shown on them in Mailchimp's answer)."""
    delivered = {r.email for r in results if r.outcome in DELIVERED and not r.tagged}
    return {m.email for m in members if m.email in delivered and missing_tags(m)}


def _due_untags(run: Run, members: list[Member]) -> dict[str, list[str]]:
    """Tag -> members to take it off: those who left its segment, but for the untags the guard holds back."""
    held = run.details.get("untagHeld") or {}
    by_tag: dict[str, list[str]] = {}
    for m in members:
        for tag in m.untag:
            if tag not in held:
                by_tag.setdefault(tag, []).append(m.email)
    return by_tag


def _tags_failed(run: Run, everyone: list[Member], results: list[MemberResult], reason: str) -> tuple[dict[str, str], _Untags]:
    """A chunk whose tagging could not happen: every tag it was to add and take off counts failed, with `reason`."""
    members = [m for m in everyone if not m.departed]
    segment_of_tag = {part.tag: part.segment for part in run.segments}
    failed: dict[str, int] = {}
    for tag, emails in _due_untags(run, everyone).items():
        failed[segment_of_tag[tag]] = failed.get(segment_of_tag[tag], 0) + len(emails)
    return dict.fromkeys(_needing_tags(members, results), reason), _Untags(failed=failed)


class ChunkWorker(ExportParts):
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
                    with telemetry.timed_chunk():
                        self._process_chunk(run_id, number, attempt)
        self._settle(run_id)  # also when redelivered: the worker that counted it may have died before settling

    def _process_chunk(self, run_id: str, number: int, attempt: str) -> None:
        run = self.runs.get(run_id, counts=False)
        telemetry.describe_run(run)  # log fields: its destination and trigger
        if run is not None and run.finished:  # failed while it was still planning (a streamed chunk): nothing more
            return  # is sent, and its files may be cleaned up already
        everyone = list(decode_members(self.work.read_bytes(chunk_blob(run_id, number))))
        members = [m for m in everyone if not m.departed]  # the chunk's input rows; departed ones are only untagged
        destination = self.destinations.get(run.destination_id) if run is not None else None
        leavers = [m for m in everyone if m.departed]  # kept for a retry when their untags fail
        stop_reason = self._stop_reason(run)
        if stop_reason:  # nothing sent: members failed, and the untags due failed with them
            results = [MemberResult(m.email, Outcome.FAILED, stop_reason) for m in members]
            self._count(run_id, number, attempt, members, results, *_tags_failed(run, everyone, results, stop_reason),
                        destination=destination, leavers=leavers)
            return
        # People who had their address erased since the run was planned are not sent (nor untagged): refused, and
        # reported by subscriber hash only (while nobody was erased, no member is hashed for this check).
        honoured = self.erased_for(destination)
        erased = {m.email: erased_reason(at) for m in everyone
                  if honoured and (at := honoured.get(subscriber_hash(m.email)))}
        if erased:
            everyone = [m for m in everyone if m.email not in erased]
        sent = [m for m in members if m.email not in erased]
        refused = [MemberResult(m.email, Outcome.REFUSED, erased[m.email]) for m in members if m.email in erased]
        untags = _Untags()
        with guarded_writes(self._write_guard(run_id, run.destination_id)):
            try:
                results = self._upsert(run, destination, number, sent) + refused
            except MailchimpAuthError as error:  # counted as far as it got; later chunks stop (the run says why)
                self._abort(run_id, str(error))
                results = (error.results or [MemberResult(m.email, Outcome.FAILED, str(error)) for m in sent]) + refused
                self._count(run_id, number, attempt, members, results, *_tags_failed(run, everyone, results, str(error)),
                            destination=destination, erased=erased.keys(), leavers=leavers)
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
        self._count(run_id, number, attempt, members, results, not_tagged, untags, destination=destination,
                    erased=erased.keys(), leavers=leavers if untags.failed else ())

    def _abort(self, run_id: str, message: str) -> None:
        """Credentials refused: every later chunk stops too, and the run says why."""
        self.runs.update(run_id, lambda r: r.details.update(abort=message))

    def _upsert(self, run: Run, destination: Destination | None, number: int, members: list[Member]) -> list[MemberResult]:
        saved = self._saved_results(run.id, number)
        if saved is not None:  # a retry after the upsert succeeded: do not write (or count) it again
            return saved
        if destination is None:
            return [MemberResult(m.email, Outcome.FAILED, "the destination was deleted during the export") for m in members]
        as_of = datetime.fromisoformat(run.details["mirrorAsOf"])
        # Members written carry their missing segment tags in the same call (names, never sync_tags); the static-
        # segment call of _tag is left for members not written (unchanged) and for tags the answer does not show.
        results = self.connections.call(destination, lambda client: client.upsert_members(
            run.details["audienceId"], members, status_for_new=run.details["statusForNew"], existing_as_of=as_of,
            tags_of=missing_tags))
        # ASCII (json's default): a reason of Mailchimp's holding a lone surrogate is saved, not a failure after the
        # write that would make every redelivery write again.
        self.work.write_bytes(results_blob(run.id, number), json.dumps([
            {"email": r.email, "outcome": r.outcome.value, "reason": r.reason, "field": r.field, "tagged": r.tagged}
            for r in results]).encode("ascii"))
        return results

    def _saved_results(self, run_id: str, number: int) -> list[MemberResult] | None:
        """Mailchimp's answer to the chunk's upsert, once it was written (None before)."""
        saved = results_blob(run_id, number)
        if not self.work.exists(saved):
            return None
        return [MemberResult(r["email"], Outcome(r["outcome"]), r.get("reason"), r.get("field"), bool(r.get("tagged")))
                for r in json_codec.loads(self.work.read_bytes(saved))]

    def _tag(self, run: Run, destination: Destination | None, members: list[Member],
             results: list[MemberResult]) -> dict[str, str]:
        """Add each delivered member's segment tags it does not carry yet, unless the upsert wrote them with it (one
        static-segment call per tag and 500 members); the members not tagged, with why."""
        needing = _needing_tags(members, results)
        if destination is None or not needing:
            return {}
        by_tag: dict[str, list[str]] = {}
        for m in members:
            if m.email in needing:
                for tag in missing_tags(m):
                    by_tag.setdefault(tag, []).append(m.email)
        not_tagged: dict[str, str] = {}
        for tag, emails in by_tag.items():
            refused = self.connections.call(destination, lambda client: client.tag_members(
                run.details["audienceId"], run.details["tagIds"][tag], emails))
            for email, reason in refused.items():
                not_tagged.setdefault(email, f"tag {tag!r} not added: {reason}")
        return not_tagged

    def _untag(self, run: Run, destination: Destination | None, members: list[Member]) -> _Untags:
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
               not_tagged: dict[str, str] | None = None, untags: _Untags | None = None, *,
               destination: Destination | None, erased: Collection[str] = (), leavers: Sequence[Member] = ()) -> None:
        """Count the chunk once. Members written whose segment tag could not be added count by what was written,
        each with a `tag` line in the errors report, and in `tagFailed`; untags that failed count in `untagFailed`.
        Members counted failed, and `leavers` (who left a segment, when their untags failed), are kept for a retry.

        Erased members (refused at the person's request, and anyone erased while the chunk was being sent) are
        reported by subscriber hash only and never kept: the ledger is read again here, so an erasure that has just
        cleaned the stored files finds no address written back by a chunk that was in flight."""
        not_tagged = not_tagged or {}
        untags = untags or _Untags()
        source = {m.email: m.source for m in members}
        honoured = self.erased_for(destination)
        erased = set(erased) | {email for email in source if honoured and subscriber_hash(email) in honoured}
        lines = [
            erased_line(source[r.email].segment, source[r.email].partition, source[r.email].row, r.email, r.reason or "")
            if r.email in erased else
            error_line(source[r.email].segment, source[r.email].partition, source[r.email].row, r.email,
                       r.reason if not r.field else f"{r.reason} (field {r.field})",
                       "mailchimp" if r.outcome is Outcome.REFUSED else "failure")
            for r in results if r.outcome in (Outcome.REFUSED, Outcome.FAILED)
        ]
        lines += [error_line(source[email].segment, source[email].partition, source[email].row, email,
                              f"written, but its segment tag was not added: {reason}", "tag")
                  for email, reason in not_tagged.items()]
        errors = ""
        if lines:
            errors = f"{errors_prefix(run_id)}chunk-{number:06d}-{attempt}.jsonl"
            self.work.write_bytes(errors, b"".join(lines))
        failed = {r.email for r in results if r.outcome is Outcome.FAILED} - erased
        kept = [m for m in members if m.email in failed]
        kept += [m for m in leavers if subscriber_hash(m.email) not in honoured]
        if kept:  # for a retry of only these members (rewritten alike if the chunk is counted again)
            self.work.write_bytes(retry_blob(run_id, number), encode_members(kept))
        delivered = {r.email for r in results if r.outcome in DELIVERED}
        per_segment = chunk_counts(results, {m.email: m.source.segment for m in members}, delivered - not_tagged.keys())
        for email in not_tagged:
            per_segment[source[email].segment]["tagFailed"] += 1
        for key, by_segment in (("untagged", untags.done), ("untagFailed", untags.failed)):
            for segment, count in by_segment.items():
                per_segment.setdefault(segment, zero_counts())[key] += count
        if self.runs.finish_chunk(run_id, number, per_segment, errors):  # False: counted before, by another delivery
            telemetry.count_members(per_segment)

    def _settle(self, run_id: str) -> None:
        """Finish the run once every chunk is counted, then clean up and free the destination. The clean-up is
        repeated by every later call for a finished run (a redelivered message), in case the worker that settled it
        died before cleaning up: both steps are idempotent."""
        run, settled = self.runs.settle_if_done(run_id)
        if settled:
            log.info("export %s finished: %s", run_id, run.status, extra=telemetry.ended_fields(run))
            telemetry.run_finished(run)
        elif run.finished_at is None or run.details.get("cleanedUp"):
            return
        self._clean_up(run, read_again=not settled)

    def _clean_up(self, run: Run, read_again: bool = True) -> None:
        """What follows the end of a run, for `run` as read once it ended; by one worker at a time. The last chunks of
        a big run all get here within a second, and each of them deleting the same thousands of files kept storage
        from answering anyone else for a minute. A worker that finds the lease taken leaves (its thread free for HTTP)
        and asks again later, which then finds the run cleaned up, or takes over from a holder that died.
        `read_again`: the run may have been cleaned up since it was read."""
        run_id = run.id
        held = contextlib.ExitStack()
        try:
            held.enter_context(self.work.exclusive(cleanup_lock(run_id), wait_seconds=0, remove=True))
        except TimeoutError:
            self.plan_queue.send({"runId": run_id}, delay_seconds=CLEAN_UP_AGAIN_SECONDS)
            return
        with held:
            if read_again:
                run = self.runs.get(run_id, counts=False)
                if run is None or run.details.get("cleanedUp"):
                    return
            self._clean_up_now(run)

    def _clean_up_now(self, run: Run) -> None:
        run_id = run.id
        # The destination is freed first (its follow-up run must not wait on a delete storage refuses; a second
        # release changes nothing). Chunks and saved answers hold personal data and are of no use once every chunk is
        # counted; the error report stays (for GET .../errors) unless the destination was deleted, whatever the run's
        # ending (a run failed or cancelled as its destination went).
        self._unplanned_retry(run)
        self._released(run)
        gone = self.destinations.get(run.destination_id) is None
        self.work.delete_prefix(run_folder(run_id) if gone else chunks_prefix(run_id))
        try:
            self.runs.update(run_id, lambda r: r.details.update(cleanedUp=True))
        except KeyError:
            pass  # its record went too (the retention sweep)

    def chunk_gave_up(self, run_id: str, number: int, attempt: str) -> None:
        """The chunk message was poisoned: its members are counted with what Mailchimp saved of them, never dropped.

        Members whose upsert went through (its answer is saved) count as written and only their tags as failed;
        the others count failed with the last error.
        """
        self._count_given_up(run_id, number, attempt)
        self._settle(run_id)

    def _count_given_up(self, run_id: str, number: int, attempt: str, reason: str | None = None) -> None:
        """Count the chunk as given up on (`reason`, else its last error), unless it is counted already; a worker still
        at work on it (the chunk blob's lease) finishes first."""
        chunk = self.runs.get_chunk(run_id, number)
        if chunk is None or chunk["state"] == "done":
            return
        with self.work.exclusive(chunk_blob(run_id, number)):
            chunk = self.runs.get_chunk(run_id, number)
            if chunk is not None and chunk["state"] != "done":
                self._give_up(run_id, number, attempt, reason or chunk.get("lastError") or "the chunk failed repeatedly")

    def _give_up(self, run_id: str, number: int, attempt: str, reason: str) -> None:
        everyone = list(decode_members(self.work.read_bytes(chunk_blob(run_id, number))))
        members = [m for m in everyone if not m.departed]
        why = f"gave up after repeated failures: {reason}"
        # Written members (the upsert's answer is saved) count as written, only their tags failed; the others failed.
        results = self._saved_results(run_id, number) or [MemberResult(m.email, Outcome.FAILED, why) for m in members]
        run = self.runs.get(run_id, counts=False)
        destination = self.destinations.get(run.destination_id) if run is not None else None
        self._count(run_id, number, attempt, members, results, *(_tags_failed(run, everyone, results, why) if run else ()),
                    destination=destination, leavers=[m for m in everyone if m.departed])
