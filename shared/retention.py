"""How long what a finished run leaves behind is kept, and which runs are due (RETENTION_PERSONAL_DAYS, RETENTION_RUN_DAYS).

What names people goes `personal_days` after the run finished: its files in the work container (per-row report,
preview, chunk files kept for a retry, all under `runs/<runId>/`), the staff names on its record (who started it,
who cancelled it or withdrew consent) and a preview's sample of members (subscriber hashes). Its counts stay until `run_days` after it finished; then the record goes.
A run that has not finished is never chosen, however old: its workers still read its files and write its record.

Pure: shared/retention_sweep.py applies these decisions to storage, daily.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.runs import Run, run_id_time

FORGOTTEN = "peopleForgotten"  # in Run.details once files and names are gone: the record is not rewritten again
NAME_REMOVED = "(name removed)"
# The app's own messages naming a person: "cancelled by <who> at <when>", "consent withdrawn by <who> at <when>" (a
# name may hold " at ": the last one ends it).
_NAMED = re.compile(r"\b(cancelled|withdrawn) by .+ at ")


@dataclass(frozen=True)
class Retention:
    personal_days: int
    run_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(settings.retention_personal_days, settings.retention_run_days)

    def listed_before(self, now: datetime) -> str:
        """Run ids sorting before this are the only runs that may be due: a run created later cannot have finished
        `personal_days` ago (the shorter period; config.py keeps run_days >= personal_days)."""
        return run_id_time(now - timedelta(days=min(self.personal_days, self.run_days)))


@dataclass(frozen=True)
class Due:
    forget: tuple[str, ...]  # runs whose files and staff names go
    delete: tuple[str, ...]  # runs whose whole record (and any file left) goes


def finished_at(run: Run) -> datetime | None:
    """When the run finished (UTC); None while it runs, or when the record says no readable time (then it is kept)."""
    if not run.finished_at:
        return None
    try:
        moment = datetime.fromisoformat(run.finished_at)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _past(run: Run, now: datetime, days: int) -> bool:
    ended = finished_at(run)
    return ended is not None and now - ended > timedelta(days=days)


def due(runs: Iterable[Run], now: datetime, retention: Retention) -> Due:
    """Which runs have outlived their periods at `now`; a run whose names are gone already is not chosen to forget."""
    forget, delete = [], []
    for run in runs:
        if _past(run, now, retention.run_days):
            delete.append(run.id)
        elif _past(run, now, retention.personal_days) and not run.details.get(FORGOTTEN):
            forget.append(run.id)
    return Due(tuple(forget), tuple(delete))


def without_names(text: str) -> str:
    """`text` with the person named in the app's "cancelled by ... at" / "withdrawn by ... at" replaced."""
    return _NAMED.sub(rf"\1 by {NAME_REMOVED} at ", text)


def forget_people(run: Run, now: datetime, retention: Retention) -> bool:
    """Clear the staff names of a run past its personal period (a RunTable.update change: False leaves the record as
    it is, also when the newest copy is not due, e.g. another sweep did it first)."""
    if not _past(run, now, retention.personal_days) or run.details.get(FORGOTTEN):
        return False
    run.started_by = None
    run.message = without_names(run.message) if run.message else None
    preview = run.details.get("preview")
    if isinstance(preview, dict):
        preview.pop("sample", None)  # members by subscriber hash (shared/exports/preview.py)
    run.details[FORGOTTEN] = True
    return True
