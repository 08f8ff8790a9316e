"""What happens when an export is cancelled, by someone (`cancel_run`, `cancel`) or by a withdrawn consent.

The run turns `cancelling`: no chunk that has not started sends anything (each chunk worker asks `_stop_reason` first,
and `_write_guard` again right before its first write, for a chunk that was waiting for a connection: its members
count failed with the reason, "cancelled by <who> at <when>", and the untags it was to make `untagFailed`; both are
kept for a retry, see retry.py). Chunks that have written members are in flight and finish, tags included, and count
what Mailchimp answered; once every chunk is counted the run ends `cancelled` (see Run.settle). A run cancelled
before planning plans nothing (planner.py; a retry cancelled so gives its run back). The cancelled run's snapshots
stay recorded as exported: scheduled and arrival triggers do not send the rest of them again; a retry of the
cancelled run does, or a new export started by hand. The destination can start another export at once: that run is accepted and queued,
and its planning waits until the cancelled run is counted (`waits_for`), so it never reads the audience while chunks
of the cancelled run are still being written.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from shared.destinations import Destination
from shared.exports.ports import ExportParts
from shared.runs import CANCELLING, Run

log = logging.getLogger(__name__)

AFTER_CANCEL_SECONDS = 5  # how soon a run started during a cancel looks again whether it may plan


def _cancel(run: Run, reason: str) -> bool:
    """A cancelled run is `cancelling` until its planned chunks are counted (chunks not yet sent count failed),
    then `cancelled`."""
    if run.finished or run.status == CANCELLING:
        return False
    run.status, run.message = CANCELLING, reason
    return True


class Cancelling(ExportParts):
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
        # The destination can export again at once (see `_may_follow`): a run started now plans only once this
        # one is counted, so it never reads the audience while chunks of this one are still being sent.
        return self.runs.get(run_id)

    def _write_guard(self, run_id: str, destination_id: str) -> Callable[[], str | None]:
        """Asked right before every Mailchimp write of a chunk: a withdrawn consent stops the run there. A cancel
        stops a chunk that has sent nothing yet (one that read the run before the cancel but was still waiting for a
        connection: its members count failed with who cancelled); a chunk that has written members is in flight and
        finishes, tags included, so nobody it wrote is left without their segment tag."""
        sending = False

        def guard() -> str | None:
            nonlocal sending
            if not sending:
                run = self.runs.get(run_id, counts=False)
                if run is not None and run.status in (CANCELLING, "cancelled"):
                    return self._stop_reason(run)
            destination = self.destinations.get(destination_id)
            if destination is None or destination.consent_accepted:
                sending = True
                return None
            return f"not sent: {self._stop_for_consent(run_id, destination).message}"
        return guard

    def _stop_for_consent(self, run_id: str, destination: Destination) -> Run:
        """Consent withdrawn: nothing more leaves. Chunks not yet sent count failed with who withdrew it and when."""
        reason = f"consent withdrawn by {destination.consent_by or 'an admin'} at {destination.consent_at or 'an unknown time'}"
        run = self.runs.update(run_id, lambda r: _cancel(r, reason))
        if run.total_chunks is None and not run.details.get("streaming"):  # not planned yet: nothing will be sent,
            # the run ends now (a run streaming members while it plans ends once its plan is frozen and counted)
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

    def _may_follow(self, run_id: str) -> bool:
        """Whether a run asked for now may take the destination from `run_id`: finished, or cancelled and being
        counted (the new run then waits for it before planning, see `waits_for`)."""
        run = self.runs.get(run_id, counts=False)
        return run is None or run.finished or run.status == CANCELLING

    def waits_for(self, run: Run) -> bool:
        """Planning of `run` waits while the cancelled run it took the destination from is still being counted:
        the plan message comes back in AFTER_CANCEL_SECONDS."""
        before = run.details.get("after")
        if not before or self._is_finished(before):
            return False
        self.plan_queue.send({"runId": run.id}, delay_seconds=AFTER_CANCEL_SECONDS)
        log.info("export %s waits for cancelled export %s to be counted before planning", run.id, before)
        return True
