"""What happens when an export is cancelled, by someone (`cancel_run`, `cancel`) or by a withdrawn consent.

The run turns `cancelling`: no chunk that has not started sends anything (each chunk worker asks `_stop_reason` first
and counts its members failed with the reason, "cancelled by <who> at <when>"), chunks being sent finish and count
what Mailchimp answered, and once every chunk is counted the run ends `cancelled` (see Run.settle). A run cancelled
before planning plans nothing. The destination stays held until then, so a new run never overlaps this one's chunks.
"""
from __future__ import annotations

from shared.destinations import Destination
from shared.exports.ports import ExportParts
from shared.runs import CANCELLING, Run


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
        # The destination stays held until the run is counted (chunks not started count failed at once, without
        # calling Mailchimp): a new run never overlaps the chunks of this one still being sent.
        return self.runs.get(run_id)

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
