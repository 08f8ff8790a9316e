"""What an export run works with: the boundaries it calls (storage, queues, run records) and the refusal it answers with."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ContextManager, Protocol

from shared.audience_mirror import AudienceMirror, Marks, NotRefreshed
from shared.config import Settings
from shared.connections import MailchimpConnections
from shared.destinations import Claim, Destination
from shared.member_lookup import Needed, look_up
from shared.members import Contact, ExistingMember
from shared.runs import Run
from shared.snapshots import BlobSource, ReadLimits

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
    # One holder across instances: waits for it, and raises TimeoutError once another kept it past `wait_seconds`
    # (the adapter's default wait when not given).
    def exclusive(self, name: str, wait_seconds: float = ..., remove: bool = False) -> ContextManager[None]: ...


class Queue(Protocol):
    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...


class Destinations(Protocol):
    def get(self, destination_id: str) -> Destination | None: ...
    def list(self) -> list[Destination]: ...
    def exported(self, destination_id: str) -> dict[str, str]: ...
    def claim(self, destination_id: str, run_id: str, covers: dict[str, str], is_finished: Callable[[str], bool],
              trigger: str = "http", only_if_newer: bool = False) -> Claim: ...
    def release(self, destination_id: str, run_id: str, restore: Mapping[str, str] | None = None) -> str | None: ...
    def own_tags(self, destination_id: str, audience_id: str, tags: Iterable[str]) -> None: ...
    def owned_tags(self, destination_id: str, audience_id: str) -> set[str]: ...
    def active_run(self, destination_id: str) -> str | None: ...


class Runs(Protocol):
    """Run records and their chunks (Table Storage in the app)."""

    def create(self, run: Run) -> None: ...
    def get(self, run_id: str, counts: bool = True) -> Run | None: ...
    def update(self, run_id: str, change: Callable[[Run], bool | None]) -> Run: ...
    def list_for_destination(self, destination_id: str, top: int | None = None) -> list[Run]: ...
    def add_chunk(self, run_id: str, number: int, members: int, streamed: bool = False) -> None: ...
    def get_chunk(self, run_id: str, number: int) -> dict[str, Any] | None: ...
    def chunks(self, run_id: str) -> Iterator[dict[str, Any]]: ...
    def note_chunk_error(self, run_id: str, number: int, reason: str) -> None: ...
    def finish_chunk(self, run_id: str, number: int, per_segment: dict[str, dict[str, int]], errors_blob: str) -> bool: ...
    def settle_if_done(self, run_id: str) -> tuple[Run, bool]: ...
    def record_planned_outcomes(self, run_id: str, per_segment: dict[str, dict[str, int]]) -> None: ...


class ErasedAddresses(Protocol):
    """Subscriber hash -> when the person had their address erased (shared/erasures.py keeps the ledger)."""

    def all(self) -> Mapping[str, str]: ...


@dataclass
class ExportParts:
    """The boundaries every part of the export service shares; `ExportService` puts the parts together."""

    settings: Settings
    destinations: Destinations
    runs: Runs
    segments: BlobSource
    work: WorkStore
    plan_queue: Queue
    chunk_queue: Queue
    connections: MailchimpConnections
    erased: ErasedAddresses | None = None  # None: nobody is kept out (no erasure ledger)
    mirror: AudienceMirror | None = None  # None: every run reads the whole audience, or looks up what it needs

    def audience(self, destination: Destination, client: Any, needed: Needed, marks: Marks | None = None,
                 not_refreshed: NotRefreshed | None = None) -> Iterator[Contact]:
        """The contacts of the destination's audience planning compares the rows with: every one, through the
        destination's audience mirror (only what changed since its last read is asked of Mailchimp) or read whole
        without one; or, when there is no mirror to refresh and what the run `needed` takes fewer calls to look up
        than the whole audience to read, only those (shared/member_lookup.py), the mirror left as it was. `marks`:
        the mirror's deletions marks as the run took them before it read the destination; `not_refreshed`: what
        refreshing its mirror ahead found (shared/exports/planner.py, `_audience_ahead`), not tried again."""
        list_id = destination.audience_id
        where = f"audience {list_id} of destination {destination.id}"

        def instead(why: str, mirror_kept: bool = True) -> list[ExistingMember] | None:
            return look_up(client, list_id, needed, f"{where} ({why})", mirror_kept)

        if self.mirror is not None:
            yield from self.mirror.members(destination.id, list_id, client, instead, marks, not_refreshed=not_refreshed)
            return
        found = instead("no audience mirror", mirror_kept=False)
        yield from client.iter_audience(list_id) if found is None else found

    def erased_for(self, destination: Destination | None) -> Mapping[str, str]:
        """The erasures a run of `destination` honours: every one, unless the destination says to export people
        again after an erasure (reAddErased)."""
        if self.erased is None or destination is None or destination.re_add_erased:
            return {}
        return self.erased.all()

    @property
    def _read_limits(self) -> ReadLimits:
        """How much of a segment file is read at most (SEGMENT_MAX_LINE_BYTES, SEGMENT_MAX_FIELDS, ...)."""
        return ReadLimits.from_settings(self.settings)
