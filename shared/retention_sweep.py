"""The daily retention sweep (timer `retention_sweep`): deletes what shared/retention.py says is due, and the audience
mirrors (shared/audience_mirror.py) neither written nor found unchanged for RETENTION_PERSONAL_DAYS.

Tables have no lifecycle rules, so in Azure as locally this is what clears staff names and deletes run records; the
files under `runs/<runId>/` also have a storage lifecycle rule in Azure (infra/app/storage.bicep), with the same number
of days. Every step is idempotent and re-checked on the newest copy, so two sweeps at once, or one after a crash,
do no harm: a run is marked forgotten only after its files are gone, and its main row is deleted last.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shared.audience_mirror import sweep_mirrors
from shared.exports.files import run_folder
from shared.retention import Retention, due, forget_people
from shared.runs import Run


class RunRecords(Protocol):
    """Run records (RunTable in the app)."""

    def list_created_before(self, run_id_prefix: str) -> list[Run]: ...
    def update(self, run_id: str, change: Callable[[Run], bool | None]) -> Run: ...
    def clear_chunk_errors(self, run_id: str) -> None: ...
    def delete_run(self, run_id: str) -> None: ...


class RunFiles(Protocol):
    """The work container (BlobFolder in the app)."""

    def list_names(self, prefix: str = "") -> Iterator[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


@dataclass(frozen=True)
class Swept:
    forgotten: int  # runs whose files and staff names went
    deleted: int  # run records deleted
    mirrors: int = 0  # audience mirrors deleted (neither written nor found unchanged for RETENTION_PERSONAL_DAYS)


class RetentionSweep:
    def __init__(self, runs: RunRecords, files: RunFiles, retention: Retention) -> None:
        self._runs = runs
        self._files = files
        self._retention = retention

    def sweep(self, now: datetime | None = None) -> Swept:
        """Forget the people of runs past RETENTION_PERSONAL_DAYS, delete the records of runs past RETENTION_RUN_DAYS
        and the audience mirrors no run wrote or found unchanged for RETENTION_PERSONAL_DAYS."""
        now = now or datetime.now(UTC)
        chosen = due(self._runs.list_created_before(self._retention.listed_before(now)), now, self._retention)
        for run_id in chosen.forget:
            self._files.delete_prefix(run_folder(run_id))
            self._runs.clear_chunk_errors(run_id)  # an error's text may quote a member
            try:
                self._runs.update(run_id, lambda run: forget_people(run, now, self._retention))
            except KeyError:
                pass  # deleted meanwhile (another sweep)
        for run_id in chosen.delete:
            self._files.delete_prefix(run_folder(run_id))
            self._runs.delete_run(run_id)
        mirrors = sweep_mirrors(self._files, now - timedelta(days=self._retention.personal_days))
        return Swept(len(chosen.forget), len(chosen.delete), mirrors)
