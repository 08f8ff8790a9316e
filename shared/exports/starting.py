"""Starting a run: on demand (HTTP), on a schedule and when segment files arrive; what is checked before anything is
queued, and how one destination never has two runs at once (its claim) and gets one follow-up for triggers meanwhile."""
from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from functools import partial
from typing import Any

from shared.columns import ColumnMismatch, resolve_columns
from shared.connections import NotConnected
from shared.destinations import Destination
from shared.exports.ahead import ahead
from shared.exports.ports import NOTICE_CHARS, ExportParts, Refused
from shared.mailchimp.errors import MailchimpAuthError, MailchimpError, MailchimpNotFound
from shared.runs import Run, SegmentPart, new_run_id, now_iso
from shared.segment_rows import snapshot_columns
from shared.snapshots import Snapshot, SnapshotProblem, newest_snapshots, snapshots_for_blob

log = logging.getLogger(__name__)


class Starting(ExportParts):
    def start(self, destination_id: str, trigger: str, segments: Iterable[str] | None = None,
              confirm_untag: bool = False, started_by: str | None = None, dry_run: bool = False) -> Run:
        """An export asked for by someone: refused, with the reason, whenever it cannot go ahead.

        `confirm_untag` confirms the untags the destination's last run held back (see `_held_untags`); `started_by`
        names the verified caller on the run record. `dry_run` starts a preview (see preview.py): checked and planned
        the same way, but it neither claims the destination nor sends anything, so it may run beside a real run."""
        destination = self._destination(destination_id)
        chosen = self._chosen_segments(destination, segments)
        checked = ahead(partial(self._check_mailchimp, destination))  # beside the segments' listing: its refusal
        newest = newest_snapshots(self.segments, self._read_limits)  # comes after theirs, as when it followed them
        parts = [self._segment_part(destination, name, newest) for name in chosen]
        checked()
        run = self._new_run(destination, trigger, parts)
        run.started_by = started_by
        if confirm_untag:
            run.details["confirmUntag"] = self._confirmation(destination, parts)
        if dry_run:
            run.details["dryRun"] = True
            return self._queue(run)
        previous = self.destinations.active_run(destination.id)
        if previous:  # cancelled and still being counted: this run plans after it (Cancelling.waits_for)
            run.details["after"] = previous
        claim = self.destinations.claim(destination.id, run.id, {p.segment: p.snapshot for p in parts}, self._may_follow, trigger)
        if claim.outcome != "claimed":
            self._kick(claim.holder)
            raise Refused(409, f"an export of this destination is already running (run {claim.holder}); wait for it to finish")
        return self._queue(run, claim.previous)

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
        return self._queue(run, claim.previous)

    def on_schedule(self) -> list[Run]:
        """A timer tick: follow every destination with scheduled export on. Past-due ticks do the same, once.

        Each destination followed is logged (`followed`) whether a run starts or not, and then the tick itself
        (`scheduleTick`), only once every destination was followed: the alerts on scheduled runs
        (infra/app/alerts.bicep) learn from these lines which destinations are on a schedule and that the schedule
        still works, since a log query looks back 48 hours at most. A tick that fails before its end (the segments
        container cannot be listed) logs no tick line, which the alert on a silent schedule sees."""
        scheduled = [d for d in self.destinations.list()  # a draft or one without consent is never exported
                     if d.schedule_enabled and d.consent_accepted and not d.is_draft]
        started = self._follow_all(scheduled, "schedule")
        log.info("export schedule ran: %d destinations with scheduled export, %d runs started", len(scheduled),
                 len(started), extra={"trigger": "schedule", "scheduleTick": len(scheduled)})
        return started

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
            fields = {"destinationId": destination.id, "trigger": trigger}
            try:
                run = self.follow(destination.id, trigger, newest)
            except Refused as refused:  # Mailchimp refused or unreachable: the next trigger tries again
                log.warning("destination %s: %s export not started: %s", destination.id, trigger, refused.message,
                            extra={**fields, "startRefused": refused.status, "followed": "refused"})
                continue
            except Exception as error:  # noqa: BLE001 - one destination's failure must not keep the others from theirs
                log.error("destination %s: %s export not started: unexpected %s (its message is not logged: it may hold "
                          "row data); the next trigger tries again\n%s", destination.id, trigger, type(error).__name__,
                          "".join(traceback.format_tb(error.__traceback__)), extra={**fields, "followed": "failed"})
                continue
            if trigger == "schedule":  # arrival events come once a file: their no-run lines would only be noise
                log.info("destination %s: %s", destination.id,
                         f"scheduled export started (run {run.id})" if run else "scheduled check: nothing started",
                         extra={**fields, "followed": "run started" if run else "no run"})
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

    def _queue(self, run: Run, previous: dict[str, str] | None = None) -> Run:
        """`previous`: the claim's, restored if the run's record was not created, so that its snapshots are not left
        recorded as exported by a run that never existed (no trigger would start them again until a newer one). A
        create that failed on the way back (a timeout) may have landed: then the run goes on as created, since giving
        its snapshots back would let a trigger export them a second time beside it. When that cannot be read either,
        the claim is kept, as after a failed send."""
        try:
            self.runs.create(run)
        except Exception as error:
            created = self._created(run.id)
            if created is False:
                self._give_back(run, previous)
            if created is not True:  # None, unknown: the claim is kept, as after a failed send (see _kick)
                raise
            log.warning("export %s: creating its record raised %s, but the record is there: going on", run.id,
                        type(error).__name__)
        # A failed send keeps the claim: the queue may have taken the message although the call failed (a timeout),
        # and releasing would let a retry start a second export alongside. A run left queued without its message is
        # sent again by the next start or trigger that finds it holding the destination (see _kick).
        self.plan_queue.send({"runId": run.id})
        log.info("export %s queued for destination %s (%s, %d segments)", run.id, run.destination_id, run.trigger, len(run.segments))
        return run

    def _give_back(self, run: Run, previous: dict[str, str] | None) -> None:
        """Free the destination of a run that was never created, with its snapshots given back; a failure here is
        logged, not raised, so the caller raises the create's own error."""
        try:
            self.destinations.release(run.destination_id, run.id, previous)
        except Exception as error:  # noqa: BLE001 - the claim stays; the next trigger finds its run missing (finished)
            log.error("export %s was not created and its claim could not be released (%s): the next trigger takes the "
                      "destination over", run.id, type(error).__name__)

    def _created(self, run_id: str) -> bool | None:
        """Whether a run's record exists; None when that cannot be read either."""
        try:
            return self.runs.get(run_id, counts=False) is not None
        except Exception:  # noqa: BLE001 - the caller raises the create's own error
            return None

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

    def _confirmation(self, destination: Destination, parts: list[SegmentPart]) -> dict[str, Any]:
        """What a start with confirmUntag confirms: the destination's last run, which must have held untags back
        and read the same snapshots (a newer snapshot may be broken in a new way: it is held, and confirmed, anew)."""
        runs = [r for r in self.runs.list_for_destination(destination.id) if r.finished and not r.details.get("dryRun")]
        last = runs[0] if runs else None
        held = (last.details.get("untagHeld") or {}) if last is not None else {}
        if not held:
            raise Refused(409, "there are no held-back untags to confirm: the destination's last export held none "
                               "back; start the export without confirmUntag")
        if {p.segment: p.snapshot for p in last.segments} != {p.segment: p.snapshot for p in parts}:
            raise Refused(409, f"export {last.id} held untags back for other snapshots than the newest ones; start the "
                               "export without confirmUntag, check what it holds back, then confirm that")
        return {"run": last.id, "held": held}
