"""Erasure requests and the ledger of erased addresses in Table Storage: subscriber hashes only, never an address.

A request is one partition (PartitionKey = its id): the row "erasure" holds the request, and one row per subscriber
hash holds that hash's outcome in each audience as properties `o<n>`/`r<n>`/`a<n>` (outcome, reason, when; n = the
target's place in the request's `targets`), written by merge, so outcomes recorded in parallel never overwrite each
other. The ledger (`erasedaddresses`) has one row per hash (PartitionKey = its first two hex digits) and a change mark.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Iterable

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient, UpdateMode

from shared.adapters.tables import Conflict, _retry_on_conflict, _Table
from shared.erasures import DELETED, QUEUED, Erasure, Outcome, Target, now_iso

RECORD = "erasure"
BATCH = 100  # operations per entity-group transaction
MARK_PARTITION, MARK_ROW = "~", "changed"  # the ledger's change mark: "~" sorts after every hash's hex partition


def _target_doc(target: Target) -> dict[str, Any]:
    return {"audience": target.audience_id, "destinations": list(target.destination_ids)}


class ErasureTable(_Table):
    def create(self, erasure: Erasure) -> bool:
        record = {"PartitionKey": erasure.id, "RowKey": RECORD, "created_at": erasure.created_at,
                  "updated_at": erasure.updated_at or erasure.created_at, "requested_by": erasure.requested_by,
                  "source": erasure.source, "status": erasure.status, "addresses": len(erasure.hashes),
                  "message": erasure.message or "", "targets": "[]", "files_scrubbed": 0, "work_queued": False}
        if self._record(erasure.id) is not None:  # a request delivered again: its rows are there already
            return False
        # The hashes first, the record last: a request cut short has no record (its redelivery writes it all again),
        # never a record naming only some of its hashes.
        rows = [("upsert", {"PartitionKey": erasure.id, "RowKey": f"h-{h}"}) for h in erasure.hashes]
        for start in range(0, len(rows), BATCH):
            self.table.submit_transaction(rows[start:start + BATCH])
        try:
            self.table.create_entity(record)
        except ResourceExistsError:
            return False
        return True

    def _record(self, erasure_id: str) -> Any:
        return self.row(erasure_id, RECORD)

    @staticmethod
    def _from_record(entity: Any) -> Erasure:
        targets = tuple(Target(t["audience"], tuple(t["destinations"])) for t in json.loads(entity.get("targets") or "[]"))
        return Erasure(id=entity["PartitionKey"], created_at=entity["created_at"], updated_at=entity.get("updated_at"),
                       requested_by=entity["requested_by"], source=entity["source"], hashes=(),
                       status=entity["status"], message=entity.get("message") or None, targets=targets,
                       files_scrubbed=int(entity.get("files_scrubbed") or 0), addresses=int(entity.get("addresses") or 0),
                       work_queued=bool(entity.get("work_queued", True)))  # records of the previous release: queued

    def get(self, erasure_id: str) -> Erasure | None:
        if not erasure_id.isalnum():
            return None
        record = None
        hashes: list[str] = []
        outcomes: dict[str, dict[str, Outcome]] = {}
        rows = list(self.table.query_entities("PartitionKey eq @id", parameters={"id": erasure_id}))
        for entity in rows:
            if entity["RowKey"] == RECORD:
                record = entity
        if record is None:
            return None
        erasure = self._from_record(record)
        for entity in rows:
            if not entity["RowKey"].startswith("h-"):
                continue
            member_hash = entity["RowKey"][2:]
            hashes.append(member_hash)
            for n, target in enumerate(erasure.targets):
                if entity.get(f"o{n}"):
                    outcomes.setdefault(member_hash, {})[target.key] = Outcome(
                        entity[f"o{n}"], entity.get(f"r{n}") or None, entity.get(f"a{n}") or None)
        erasure.hashes = tuple(hashes)
        erasure.outcomes = outcomes
        return erasure

    def list(self, top: int) -> list[Erasure]:
        found = [self._from_record(e) for e in self.table.query_entities("RowKey eq @row", parameters={"row": RECORD})]
        return sorted(found, key=lambda e: e.created_at, reverse=True)[:top]

    def list_unqueued(self) -> list[Erasure]:
        # Records written before work_queued existed have no such property, so the filter leaves them out (queued).
        return [self._from_record(e) for e in self.table.query_entities(
            "RowKey eq @row and status eq @status and work_queued eq false",
            parameters={"row": RECORD, "status": QUEUED})]

    def add_targets(self, erasure_id: str, targets: Iterable[Target]) -> None:
        """Append targets not yet listed; a target keeps its place, so the outcome properties keep pointing at it."""

        def attempt() -> None:
            entity = self.table.get_entity(erasure_id, RECORD)
            listed = json.loads(entity.get("targets") or "[]")
            added = [_target_doc(t) for t in targets if _target_doc(t) not in listed]
            if not added:
                return
            entity["targets"] = json.dumps(listed + added)
            self._replace(entity)

        _retry_on_conflict(attempt)

    def record(self, erasure_id: str, member_hash: str, target: Target, outcome: Outcome) -> None:
        """A deletion recorded is final: a second worker on the same request (its message delivered twice at once)
        finds the person gone and would say `alreadyGone`, or fail and say `refused`, which must not replace it. So
        any other outcome is written only on the row as read, with no deletion on it."""
        listed = json.loads(self.table.get_entity(erasure_id, RECORD).get("targets") or "[]")
        n = listed.index(_target_doc(target))
        key = f"h-{member_hash}"
        row = {"PartitionKey": erasure_id, "RowKey": key, f"o{n}": outcome.outcome, f"r{n}": outcome.reason or "",
               f"a{n}": outcome.at or ""}
        if outcome.outcome == DELETED:
            self.table.upsert_entity(row, mode=UpdateMode.MERGE)
            return

        def attempt() -> None:
            current = self.row(erasure_id, key)
            if current is None:
                try:
                    self.table.create_entity(row)
                except ResourceExistsError:
                    raise Conflict() from None
                return
            if current.get(f"o{n}") != DELETED:
                current.update(row)
                self._replace(current)

        _retry_on_conflict(attempt)

    def note_queued(self, erasure_id: str) -> None:
        self.table.upsert_entity({"PartitionKey": erasure_id, "RowKey": RECORD, "work_queued": True}, mode=UpdateMode.MERGE)

    def set_status(self, erasure_id: str, status: str, message: str | None = None,
                   files_scrubbed: int | None = None) -> None:
        change: dict[str, Any] = {"PartitionKey": erasure_id, "RowKey": RECORD, "status": status,
                                  "message": message or "", "updated_at": now_iso()}
        if files_scrubbed is not None:
            change["files_scrubbed"] = files_scrubbed
        self.table.upsert_entity(change, mode=UpdateMode.MERGE)


class ErasedLedgerTable(_Table):
    """Every export chunk asks for the whole ledger twice (before sending, and again as it counts), so a process keeps
    the ledger it last listed and lists it again only when the change mark says it grew: a ledger of many thousand
    erasures would otherwise cost every chunk pages of reads. `note` writes the hashes, then changes the mark (a new
    ETag); `all` reads the mark, then lists. A listing is reused only while the mark is as it was read before that
    listing, so whatever was noted before a mark change the reader has seen is in what it gets. A note cut short
    between its hashes and its mark is redone by its request's redelivery (ErasureService.request: the record says
    its work was not queued yet). A listing is also never reused for longer than RELIST_SECONDS, for hashes written
    without the mark (by the previous release, during a deployment that swaps it out)."""

    RELIST_SECONDS = 60.0

    def __init__(self, service: TableServiceClient, name: str, create: bool = True) -> None:
        super().__init__(service, name, create)
        # (the mark's ETag or None, when it was listed (time.monotonic), the listing)
        self._listed: tuple[str | None, float, Mapping[str, str]] | None = None

    def note(self, hashes: Iterable[str], erased_at: str) -> None:
        by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for h in hashes:
            by_partition.setdefault(h[:2], []).append(
                ("upsert", {"PartitionKey": h[:2], "RowKey": h, "erased_at": erased_at}))
        for rows in by_partition.values():
            for start in range(0, len(rows), BATCH):
                self.table.submit_transaction(rows[start:start + BATCH])
        self.table.upsert_entity({"PartitionKey": MARK_PARTITION, "RowKey": MARK_ROW, "changed_at": erased_at},
                                 mode=UpdateMode.REPLACE)

    def erased_on(self, hashes: Iterable[str]) -> dict[str, str]:
        return {h: entity["erased_at"] for h in hashes if (entity := self.row(h[:2], h)) is not None}

    def all(self) -> Mapping[str, str]:
        """Subscriber hash -> when; read-only, as it may be the listing other callers of this process share."""
        # None: nothing noted since the mark was introduced; the first note creates it
        mark: str | None = None if (entity := self.row(MARK_PARTITION, MARK_ROW)) is None else entity.metadata["etag"]
        listed = self._listed
        if listed is not None and listed[0] == mark and time.monotonic() - listed[1] < self.RELIST_SECONDS:
            return listed[2]
        at = time.monotonic()
        found = MappingProxyType({e["RowKey"]: e["erased_at"] for e in self.table.query_entities(
            "PartitionKey lt @mark", parameters={"mark": MARK_PARTITION}, select=["RowKey", "erased_at"])})
        self._listed = (mark, at, found)
        return found
