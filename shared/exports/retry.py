"""Retry only what failed: a new run (trigger `retry`) for the members a finished run counted `failed`.

Failed means no answer from Mailchimp (retries exhausted, an outage, revoked credentials, a cancel): those members
are worth sending again as they were, and so are the untags that failed with them (members who left a segment and
kept its tag). Invalid rows need a fix at the source and refused ones a change in Mailchimp, so neither is retried.
Each chunk worker keeps its failed members (and its leavers, when their untags failed) in `runs/<id>/retry/`
(files.retry_blob) when it counts the chunk; they stay until a retry has planned from them or the retention period
ends (RETENTION_PERSONAL_DAYS), whichever comes first. A run is retried once, and only while it is the destination's
newest real run: a later run sent newer data, which a late retry would undo. A retry that ends before planning gives
the run back (it can be retried again); its own failures can be retried in turn.

The retry sends the members with what the first run planned for them (merge fields, tags, the tags they were to lose,
the untags the guard held back stay held), and reads Mailchimp's current statuses before writing as every chunk does
(shared/mailchimp/upsert.py): someone who unsubscribed in between stays unsubscribed.
"""
from __future__ import annotations

import logging

from shared.exports.files import retry_prefix
from shared.exports.ports import ExportParts, Refused
from shared.members import Member, decode_members
from shared.runs import Run, SegmentPart, zero_counts

log = logging.getLogger(__name__)

CARRIED = ("audienceId", "statusForNew", "tagIds", "mirrorAsOf", "untagHeld")  # planned once, by the retried run


def _sent_something(run: Run) -> bool:
    """A real run that wrote to the audience (or may still: not finished); previews and runs that ended having sent
    nothing (cancelled before planning, failed) leave the audience as it was."""
    counts = run.counts
    return not run.details.get("dryRun") and (not run.finished or any(
        counts[key] for key in ("created", "updated", "unchanged", "untagged")))


class Retrying(ExportParts):
    def retry(self, run_id: str, started_by: str | None = None) -> Run:
        """Start the retry of `run_id`; Refused (404, 409, 410) says why it cannot."""
        old = self.runs.get(run_id)
        if old is None:
            raise Refused(404, f"export {run_id} does not exist")
        if not old.finished or old.details.get("dryRun"):
            raise Refused(409, f"export {run_id} is {old.status}: only a finished export that sent members can be retried")
        if old.details.get("retriedBy"):
            raise Refused(409, f"export {run_id} was retried already by export {old.details['retriedBy']}; retry that one")
        if not old.counts["failed"] and not old.counts["untagFailed"]:
            raise Refused(409, f"export {run_id} has no failed members to retry (invalid rows need a fix at the source, "
                               "refused ones in Mailchimp; the per-row report says which)")
        later = next((r for r in self.runs.list_for_destination(old.destination_id)
                      if r.created_at > old.created_at and _sent_something(r)), None)
        if later is not None:  # its plan is older than what Mailchimp got since: sending it would undo that
            raise Refused(409, f"export {later.id} of this destination ran after export {run_id}, with newer data: "
                               "retry that one if it has failed members, or start a new export")
        if next(iter(self.work.list_names(retry_prefix(run_id))), None) is None:
            raise Refused(410, f"the failed members of export {run_id} are no longer kept (RETENTION_PERSONAL_DAYS): "
                               "start a new export instead")
        destination = self._destination(old.destination_id)
        if destination.audience_id != old.details.get("audienceId"):
            raise Refused(409, f"the destination exports to another audience than export {run_id} did: start a new export")
        self._check_mailchimp(destination)
        run = self._new_run(destination, "retry", [SegmentPart(p.segment, p.snapshot, p.folder, p.tag) for p in old.segments])
        run.started_by = started_by
        run.details["retryOf"] = old.id
        claim = self.destinations.claim(destination.id, run.id, {}, self._is_finished, "retry")  # no snapshot is new
        if claim.outcome != "claimed":
            self._kick(claim.holder)
            raise Refused(409, f"an export of this destination is already running (run {claim.holder}); wait for it to finish")

        def mark(r: Run) -> bool:
            if r.details.get("retriedBy"):
                return False
            r.details["retriedBy"] = run.id
            return True

        if self.runs.update(old.id, mark).details.get("retriedBy") != run.id:  # another retry won the race
            self.destinations.release(destination.id, run.id)
            raise Refused(409, f"export {run_id} is being retried already; follow that retry")
        return self._queue(run)

    def _unplanned_retry(self, run: Run) -> None:
        """A retry that ended before planning (cancelled, consent withdrawn, failed) sent nothing and left the kept
        members where they were: the retried run may be retried again."""
        if not run.details.get("retryOf") or run.details.get("retryPlanned"):
            return

        def unmark(r: Run) -> bool:
            if r.details.get("retriedBy") != run.id:
                return False
            del r.details["retriedBy"]
            return True

        try:
            self.runs.update(run.details["retryOf"], unmark)
        except KeyError:
            pass  # the retried run was deleted meanwhile (the retention sweep): nothing to make retryable

    def _plan_retry(self, run: Run) -> bool:
        """Planning of a retry: the kept members of the retried run, in chunks, instead of a read of the segments."""
        old = self.runs.get(run.details["retryOf"], counts=False)
        if old is None:
            self._fail(run, f"export {run.details['retryOf']}, which this one retries, no longer exists")
            return False
        self.runs.update(run.id, lambda r: r.details.update({k: old.details[k] for k in CARRIED if k in old.details}))
        read: dict[str, int] = {}
        chunk: list[Member] = []
        total = 0
        for name in sorted(self.work.list_names(retry_prefix(old.id))):
            for member in decode_members(self.work.read_bytes(name)):
                if not member.departed:  # members who left a segment are only untagged: not input rows
                    read[member.source.segment] = read.get(member.source.segment, 0) + 1
                chunk.append(member)
                if len(chunk) == self.settings.chunk_size:
                    self._write_chunk(run.id, total, chunk)
                    total, chunk = total + 1, []
        if chunk:
            self._write_chunk(run.id, total, chunk)
            total += 1
        self.runs.record_planned_outcomes(run.id, {})

        def freeze(r: Run) -> bool:
            if r.total_chunks is not None:
                return False
            r.total_chunks = total
            r.details["retryPlanned"] = True
            for part in r.segments:
                part.counts = {**zero_counts(), "read": read.get(part.segment, 0)}
            return True

        self.runs.update(run.id, freeze)
        self.work.delete_prefix(retry_prefix(old.id))  # sent again by this run: kept no longer
        log.info("export %s planned: retries %d members of export %s in %d chunks", run.id, sum(read.values()), old.id, total)
        return True
