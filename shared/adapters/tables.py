"""Destinations and run records in Table Storage.

A run and its chunks share one partition (PartitionKey = run id), so finishing a chunk and adding its counts to the
run is one atomic entity-group transaction guarded by ETags: a redelivered chunk can never be counted twice, and a
crash between the two writes cannot happen.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Iterator, Mapping

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.destinations import Claim, Destination, ExportUser, FieldMapping, InvalidDestination, utf16_units
from shared.runs import Run, SegmentPart, add_counts

RUN_ROW = "run"
SHARDS = 16  # counter rows per run
PLAN_KEYS = ("read", "invalid", "duplicates", "fieldProblems")  # counts planning sets; chunk workers add all the others


class Conflict(Exception):
    """Someone else changed the record first; the caller decides whether to retry."""


class TableMissing(RuntimeError):
    """A table the app uses is gone (deleted while the app ran): not the same as a row that is not there."""


def _ensure(service: TableServiceClient, name: str) -> TableClient:
    try:
        service.create_table(name)
    except ResourceExistsError:
        pass
    return service.get_table_client(name)


def _retry_on_conflict(attempt: Callable[[], Any], tries: int = 50) -> Any:
    for i in range(tries):
        try:
            return attempt()
        except Conflict:
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**i)))
    raise Conflict("record kept changing under us; giving up after retries")


def _error_text(error: HttpResponseError) -> str:
    """The error's code and message: the Table service's code is in one or the other, depending on the call."""
    return f"{getattr(error, 'error_code', '')} {error}"


def _precondition_failed(error: HttpResponseError) -> bool:
    return getattr(error, "status_code", None) == 412 or "UpdateConditionNotSatisfied" in str(error)


class _Table:
    """A table, looked up on first use so building the app touches no network. `create`: made there if missing, for
    local development (bootstrap: table calls going to this machine); in Azure `azd provision` makes the tables
    (infra/app/storage.bicep), and the app never makes one again: an instance starting after a table was deleted would
    make it empty, and an empty erasedaddresses table would let erased people be exported again."""

    def __init__(self, service: TableServiceClient, name: str, create: bool = True) -> None:
        self._service = service
        self._name = name
        self._create = create
        self._table: TableClient | None = None

    @property
    def table(self) -> TableClient:
        if self._table is None:
            self._table = (_ensure(self._service, self._name) if self._create
                           else self._service.get_table_client(self._name))
        return self._table

    def row(self, partition: str, row: str) -> Any:
        """The entity, or None when the table has no such row. A table that is gone raises TableMissing instead: read
        as "no such row", every record would look absent (a run's chunks as never planned and their messages dropped,
        a destination as deleted, an erased person as never erased)."""
        try:
            return self.table.get_entity(partition, row)
        except ResourceNotFoundError as error:
            self._raise_if_table_missing(error)
            return None

    def _raise_if_table_missing(self, error: ResourceNotFoundError) -> None:
        # the Table service's code for a missing table, not a missing row (in the error's code or, on some paths,
        # only in its body, as RunTable.create finds EntityAlreadyExists)
        if "TableNotFound" in _error_text(error):
            raise TableMissing(f"table {self._name} is missing: restore it from a backup, or make it again empty "
                               "(`azd provision`; locally, restarting the app does) knowing that an empty "
                               "erasedaddresses table lets erased people be exported again: request their erasures "
                               "again first") from None

    def _replace(self, entity: Any) -> None:
        """Write back an entity read before, only if nobody changed it since (else Conflict: read again)."""
        try:
            self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if _precondition_failed(error):
                raise Conflict() from error
            raise


PROPERTY_CHARS = 30_000  # a string property holds at most 64 KiB, 32,768 UTF-16 code units; room for surrogates kept


def _split(name: str, text: str) -> dict[str, str]:
    """`text` as properties name, name_1, name_2, ... of at most PROPERTY_CHARS code units each (100 export users
    with long names and addresses take about 55,000)."""
    parts, part, size = [], [], 0
    for char in text:
        units = 2 if ord(char) > 0xFFFF else 1
        if size + units > PROPERTY_CHARS:
            parts.append("".join(part))
            part, size = [], 0
        part.append(char)
        size += units
    parts.append("".join(part))
    return {name if i == 0 else f"{name}_{i}": value for i, value in enumerate(parts)}


def _joined(entity: Any, name: str) -> str:
    text, i = entity.get(name) or "", 1
    while entity.get(f"{name}_{i}"):
        text += entity[f"{name}_{i}"]
        i += 1
    return text


PROPERTY_UNITS = 32_768  # Table storage: a string property holds at most 64 KiB (UTF-16 code units, 2 bytes each)
ENTITY_BYTES = (1 << 20) - 16 * 1024  # and an entity at most 1 MiB, property names and types included; some kept spare
TOO_LARGE = ("PropertyValueTooLarge", "EntityTooLarge", "RequestBodyTooLarge")
_FIELDS = {"display_name": "displayName", "audience_id": "audienceId", "mapping": "mapping", "segments": "segments",
           "tag_prefix": "tagPrefix", "export_users": "exportUsers"}  # stored property -> field of the API


def _field(key: str) -> str:
    """The API's name for a stored property (export_users_2 is part of exportUsers); "(body)" for bookkeeping."""
    return _FIELDS.get("export_users" if key.startswith("export_users") else key, "(body)")


def _entity_bytes(entity: dict[str, Any]) -> int:
    """About what Table storage counts against its 1 MiB: names and string values as UTF-16, 8 bytes otherwise."""
    return sum(4 + 2 * len(key) + (2 * utf16_units(value) + 4 if isinstance(value, str) else 8) for key, value in entity.items())


def _too_large(entity: dict[str, Any]) -> InvalidDestination | None:
    """InvalidDestination naming the field (as the API calls it) that makes the record too large to store, or None."""
    for key, value in entity.items():
        if isinstance(value, str) and utf16_units(value) > PROPERTY_UNITS:
            field = _field(key)
            what = "" if field != "(body)" else f"the destination's {key} "  # bookkeeping, e.g. owned_tags
            return InvalidDestination([{"field": field, "message": (
                f"{what}is too large to store: {utf16_units(value):,} characters as stored, Table storage holds at "
                f"most {PROPERTY_UNITS:,} (64 KiB) in one value; nothing was saved")}])
    size = _entity_bytes(entity)
    if size > ENTITY_BYTES:
        return InvalidDestination([{"field": "(body)", "message": (
            f"the destination would take {size:,} bytes to store, Table storage holds at most 1 MiB per record; "
            "nothing was saved: use fewer or shorter names (segments, mapped columns, export users)")}])
    return None


def _storage_refused(entity: dict[str, Any], error: HttpResponseError) -> InvalidDestination | None:
    """Table storage's own refusal of a record too large (PropertyValueTooLarge, EntityTooLarge, RequestBodyTooLarge),
    as InvalidDestination naming the largest field; None for any other error."""
    code = next((code for code in TOO_LARGE if code in _error_text(error)), None)
    if code is None:
        return None
    largest = max((key for key in entity if isinstance(entity[key], str)), key=lambda key: utf16_units(entity[key]))
    field = _field(largest)
    part = field if field != "(body)" else f"the stored {largest}"
    return InvalidDestination([{"field": field, "message": (
        f"Table storage refused the destination as too large ({code}; {part} is its largest part): nothing was "
        "saved; use fewer or shorter names")}])


class StaleDestination(Exception):
    """The destination changed (or was deleted) after the version the write was computed from: nothing was written."""

    def __init__(self, destination_id: str, deleted: bool, current: str | None = None) -> None:
        super().__init__(f"destination {destination_id} was {'deleted' if deleted else 'changed'} meanwhile")
        self.deleted = deleted
        self.current = current  # the version it has now (None when deleted)


class DestinationTable(_Table):
    """Destination settings, plus run bookkeeping (active run, exported snapshots, owned tags) in the same entity.

    Settings carry a version, bumped by every settings write and shown to clients as the ETag. A write of settings
    names the version it was computed from and fails with StaleDestination if the settings (or the record's
    existence) changed since; every write is also conditional on the entity's storage ETag, and a write that only
    lost to run bookkeeping (claim, release, owned tags) is simply redone on top of it, so neither overwrites the
    other.
    """

    VERSION = "settings_version"
    BOOKKEEPING = ("active_run", "exported", "follow_up", "owned_tags")  # not part of the settings

    @staticmethod
    def _to_entity(d: Destination) -> dict[str, Any]:
        doc = asdict(d)
        doc["mapping"] = json.dumps(doc["mapping"], ensure_ascii=False)  # a "\\uXXXX" escape would take 6 of the 32,767
        doc["segments"] = json.dumps(list(d.segments), ensure_ascii=False)
        users = doc.pop("export_users")
        entity = {"PartitionKey": "destination", "RowKey": d.id, **{k: v for k, v in doc.items() if v is not None and k != "id"}}
        if users:
            entity.update(_split("export_users", json.dumps(users, ensure_ascii=False)))
        return entity

    @staticmethod
    def _from_entity(e: dict[str, Any]) -> Destination:
        mapping = json.loads(e["mapping"])
        return Destination(
            id=e["RowKey"],
            display_name=e["display_name"],
            audience_id=e["audience_id"],
            mapping=FieldMapping(email=mapping["email"], merge_fields=mapping.get("merge_fields", {})),
            segments=tuple(json.loads(e["segments"])),
            consent_accepted=e["consent_accepted"],
            consent_by=e.get("consent_by"),
            consent_at=e.get("consent_at"),
            status_for_new=e.get("status_for_new"),
            tag_prefix=e.get("tag_prefix", ""),
            credential_kind=e.get("credential_kind", "none"),
            created_at=e["created_at"],
            updated_at=e["updated_at"],
            schedule_enabled=e.get("schedule_enabled", True),
            export_on_arrival=e.get("export_on_arrival", True),
            credential_id=e.get("credential_id"),
            export_users=tuple(ExportUser(**user) for user in json.loads(_joined(e, "export_users") or "[]")),
            created_by=e.get("created_by"),
            updated_by=e.get("updated_by"),
            re_add_erased=e.get("re_add_erased", False),
        )

    @classmethod
    def _version(cls, entity: Any) -> str:
        return str(entity.get(cls.VERSION) or 0)

    def save(self, destination: Destination, expected: str | None = None) -> str:
        """Store the settings and return their new version.

        With `expected` (the version read), only if the record still has that version; else StaleDestination,
        also when it was deleted. Without it, whatever is stored is replaced (a create, or a test's setup)."""

        def attempt() -> str:
            existing = self._get_entity(destination.id)
            if expected is not None and (existing is None or self._version(existing) != expected):
                raise StaleDestination(destination.id, existing is None, None if existing is None else self._version(existing))
            entity = self._to_entity(destination)
            version = int(self._version(existing)) + 1 if existing is not None else 1
            entity[self.VERSION] = version
            for kept in self.BOOKKEEPING if existing is not None else ():
                if existing.get(kept):
                    entity[kept] = existing[kept]
            too_large = _too_large(entity)
            if too_large is not None:
                raise too_large
            try:
                if existing is None:
                    self.table.create_entity(entity)
                else:
                    self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                                             match_condition=MatchConditions.IfNotModified)
            except ResourceExistsError:
                raise Conflict() from None  # created meanwhile
            except ResourceNotFoundError:
                raise Conflict() from None  # deleted since it was read: look again
            except HttpResponseError as error:
                if _precondition_failed(error):
                    raise Conflict() from error  # run bookkeeping (or a settings write) landed since it was read
                refused = _storage_refused(entity, error)
                if refused is not None:
                    raise refused from None
                raise
            return str(version)

        return _retry_on_conflict(attempt)

    def _get_entity(self, destination_id: str) -> Any:
        return self.row("destination", destination_id)

    def get(self, destination_id: str) -> Destination | None:
        entity = self._get_entity(destination_id)
        return None if entity is None else self._from_entity(entity)

    def read(self, destination_id: str) -> tuple[Destination, str] | None:
        """The destination and the version of its settings, to write a change computed from it (see `save`)."""
        entity = self._get_entity(destination_id)
        return None if entity is None else (self._from_entity(entity), self._version(entity))

    def list(self) -> list[Destination]:
        return [self._from_entity(e) for e in self.table.query_entities("PartitionKey eq 'destination'")]

    def delete(self, destination_id: str, expected: str | None = None) -> None:
        """Delete the record; with `expected`, only while its settings still have that version (else
        StaleDestination). Run bookkeeping written meanwhile does not stop it. Deleting a missing record is fine."""

        def attempt() -> None:
            entity = self._get_entity(destination_id)
            if entity is None:
                return
            if expected is not None and self._version(entity) != expected:
                raise StaleDestination(destination_id, False, self._version(entity))
            try:
                self.table.delete_entity("destination", destination_id, etag=entity.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
            except ResourceNotFoundError:
                return
            except HttpResponseError as error:
                if _precondition_failed(error):
                    raise Conflict() from error
                raise

        _retry_on_conflict(attempt)

    def active_run(self, destination_id: str) -> str | None:
        entity = self._get_entity(destination_id)
        return (entity or {}).get("active_run") or None

    def owned_tags(self, destination_id: str, audience_id: str) -> set[str]:
        """Tags this destination created in the audience: the ones it keeps in step with their segments."""
        entity = self._get_entity(destination_id)
        return {key.split("/", 1)[1] for key in json.loads((entity or {}).get("owned_tags") or "[]")
                if key.startswith(audience_id + "/")}

    def own_tags(self, destination_id: str, audience_id: str, tags: Iterable[str]) -> None:
        keys = {f"{audience_id}/{tag}" for tag in tags}
        if not keys:
            return

        def attempt() -> None:
            entity = self._get_entity(destination_id)
            if entity is None:
                return
            entity["owned_tags"] = json.dumps(sorted(keys | set(json.loads(entity.get("owned_tags") or "[]"))))
            self._replace(entity)

        _retry_on_conflict(attempt)

    def exported(self, destination_id: str) -> dict[str, str]:
        """Snapshot id per segment of the newest snapshots a run was started for."""
        entity = self._get_entity(destination_id)
        return json.loads((entity or {}).get("exported") or "{}")

    def claim(self, destination_id: str, run_id: str, covers: dict[str, str], is_finished: Callable[[str], bool],
              trigger: str = "http", only_if_newer: bool = False) -> Claim:
        """Make run_id the destination's one active run, recording the snapshots it covers, in one conditional write.

        With only_if_newer (schedule and arrival triggers) nothing starts unless some segment has a newer snapshot
        than the last run started for; if a run is active, a follow-up is noted instead, so any number of triggers
        during a run lead to one more run after it, not to one each.
        """

        def attempt() -> Claim:
            entity = self._get_entity(destination_id)
            if entity is None:
                raise KeyError(destination_id)
            exported = json.loads(entity.get("exported") or "{}")
            if only_if_newer and all(snap <= exported.get(segment, "") for segment, snap in covers.items()):
                return Claim("up_to_date")
            holder = entity.get("active_run")
            if holder and holder != run_id and not is_finished(holder):
                if not only_if_newer:
                    return Claim("busy", holder)
                entity["follow_up"] = entity.get("follow_up") or trigger
                self._replace(entity)
                return Claim("deferred", holder)
            previous = {segment: exported.get(segment, "") for segment in covers}
            exported.update(covers)
            entity.update(active_run=run_id, exported=json.dumps(exported), follow_up="")
            self._replace(entity)
            return Claim("claimed", previous=previous)

        return _retry_on_conflict(attempt)

    def release(self, destination_id: str, run_id: str, restore: Mapping[str, str] | None = None) -> str | None:
        """Free the destination; returns the trigger of a follow-up run noted while it was busy, if any. `restore`:
        the claim's `previous`, put back as what the segments last exported, in the same write (a run that was never
        created exported nothing)."""

        def attempt() -> str | None:
            entity = self._get_entity(destination_id)
            if entity is None or entity.get("active_run") != run_id:
                return None
            follow_up = entity.get("follow_up") or None
            if restore:
                exported = json.loads(entity.get("exported") or "{}")
                for segment, snapshot in restore.items():
                    if snapshot:
                        exported[segment] = snapshot
                    else:
                        exported.pop(segment, None)
                entity["exported"] = json.dumps(exported)
            entity.update(active_run="", follow_up="")
            self._replace(entity)
            return follow_up

        return _retry_on_conflict(attempt)


class RunTable(_Table):
    READ_CHUNKS_KEPT = 256  # chunk rows kept from get_chunk for finish_chunk (one per chunk being worked on)

    def __init__(self, service: TableServiceClient, name: str, create: bool = True) -> None:
        super().__init__(service, name, create)
        self._read_chunks: dict[tuple[str, int], Any] = {}  # (run, chunk) -> its row as get_chunk last read it

    @staticmethod
    def _to_entity(run: Run) -> dict[str, Any]:
        return {
            "PartitionKey": run.id,
            "RowKey": RUN_ROW,
            "destinationId": run.destination_id,
            "trigger": run.trigger,
            "status": run.status,
            "createdAt": run.created_at,
            "startedAt": run.started_at or "",
            "finishedAt": run.finished_at or "",
            "totalChunks": -1 if run.total_chunks is None else run.total_chunks,
            "message": run.message or "",
            # Planning's counts only; what chunks add lives in the shard rows (see finish_chunk).
            # split like export_users: 50 segments with names of 255 characters (and their tags and folders) can
            # take more than one property's 64 KiB
            **_split("segments", json.dumps([{**asdict(p), "counts": {k: p.counts.get(k, 0) for k in PLAN_KEYS}}
                                              for p in run.segments], ensure_ascii=False)),
            "details": json.dumps(run.details),
            **({"startedBy": run.started_by} if run.started_by else {}),
        }

    @staticmethod
    def _from_entity(e: Any) -> Run:
        return Run(
            id=e["PartitionKey"],
            destination_id=e["destinationId"],
            trigger=e["trigger"],
            status=e["status"],
            created_at=e["createdAt"],
            segments=[SegmentPart(**p) for p in json.loads(_joined(e, "segments"))],
            started_at=e.get("startedAt") or None,
            finished_at=e.get("finishedAt") or None,
            total_chunks=None if e["totalChunks"] < 0 else e["totalChunks"],
            message=e.get("message") or None,
            details=json.loads(e.get("details") or "{}"),
            started_by=e.get("startedBy") or None,
        )

    def create(self, run: Run) -> None:
        try:
            self.table.create_entity(self._to_entity(run))
        except ResourceExistsError as error:
            # the create path's 409 carries its code in the body only; another 409 (TableBeingDeleted) is not created
            if "EntityAlreadyExists" not in _error_text(error):
                raise
            # run ids are unique: a retry (the SDK's, on a 5xx) of a create that had landed finds its own record

    def get(self, run_id: str, counts: bool = True) -> Run | None:
        """counts=False skips adding up the chunk counters (a chunk worker needs the run's settings, not its totals)."""
        if not counts:
            return None if (entity := self.row(run_id, RUN_ROW)) is None else self._from_entity(entity)
        return None if (found := self._get(run_id)) is None else found[0]

    def _get(self, run_id: str, counted: Callable[[Run], bool] | None = None) -> tuple[Run, str] | None:
        """The run with its chunks' counts added (only if `counted` says so of the run row, when given), and the ETag
        of its main row. One query reads both: the run row and its counter rows are neighbours in key order ('run',
        then 'shard-..'), and every chunk worker settling its run asks this."""
        try:
            rows = {e["RowKey"]: e for e in self.table.query_entities(
                "PartitionKey eq @run and RowKey ge @first and RowKey lt 'shard.'", parameters={"run": run_id, "first": RUN_ROW})}
        except ResourceNotFoundError as error:  # a query finds no rows without an error: only a table can be missing
            self._raise_if_table_missing(error)
            raise
        entity = rows.pop(RUN_ROW, None)
        if entity is None:
            return None
        run = self._from_entity(entity)
        return (self._counted(run, rows.values()) if counted is None or counted(run) else run), entity.metadata["etag"]

    def _with_shards(self, run: Run) -> Run:
        return self._counted(run, self.table.query_entities(
            "PartitionKey eq @run and RowKey ge 'shard-' and RowKey lt 'shard.'", parameters={"run": run.id}))

    @staticmethod
    def _counted(run: Run, shards: Iterable[Any]) -> Run:
        for shard in shards:
            if not shard["RowKey"].startswith("shard-"):
                continue  # another row of the run's partition in the key range read (none today)
            run.chunks_done += shard["chunksDone"]
            run.add(json.loads(shard["counts"]))
        return run

    def list_for_destination(self, destination_id: str, top: int | None = None) -> list[Run]:
        """Newest first; with `top`, only that many, and the chunk counters are added up only for those returned."""
        entities = self.table.query_entities(
            "RowKey eq @row and destinationId eq @dest", parameters={"row": RUN_ROW, "dest": destination_id}
        )
        runs = sorted((self._from_entity(e) for e in entities), key=lambda r: r.created_at, reverse=True)
        return [self._with_shards(run) for run in (runs if top is None else runs[:top])]

    def list_created_before(self, run_id_prefix: str) -> list[Run]:
        """Runs whose id sorts before `run_id_prefix` (ids begin with their creation time: runs.run_id_time), found by
        the key range alone, without their chunk counters: the oldest runs, for the retention sweep."""
        entities = self.table.query_entities("PartitionKey lt @before and RowKey eq @row",
                                             parameters={"before": run_id_prefix, "row": RUN_ROW})
        return [self._from_entity(e) for e in entities]

    def list_all(self) -> list[Run]:
        """Every run record, without its chunk counters, in no order: a scan of the table (erasures read it to find
        every audience a run wrote to, shared/erasures.py; they are rare)."""
        return [self._from_entity(e) for e in self.table.query_entities("RowKey eq @row", parameters={"row": RUN_ROW})]

    def delete_run(self, run_id: str) -> None:
        """Delete every row of the run (chunks, counters, the run row last, so a delete cut short is found again by
        the next listing). Rows deleted meanwhile by someone else are fine."""
        keys = [e["RowKey"] for e in self.table.query_entities("PartitionKey eq @run", parameters={"run": run_id},
                                                               select=["RowKey"])]
        others = [key for key in keys if key != RUN_ROW]
        for start in range(0, len(others), 100):  # a transaction holds at most 100 operations
            self._delete_rows(run_id, others[start:start + 100])
        if RUN_ROW in keys:
            self._delete_rows(run_id, [RUN_ROW])

    def _delete_rows(self, run_id: str, keys: list[str]) -> None:
        try:
            self.table.submit_transaction([("delete", {"PartitionKey": run_id, "RowKey": key}) for key in keys])
        except TableTransactionError:  # one was gone already: the rest one by one (a missing row is no error there)
            for key in keys:
                self.table.delete_entity(run_id, key)

    def clear_chunk_errors(self, run_id: str) -> None:
        """Empty the chunks' lastError (an error's text, which may quote a member), for the retention sweep."""
        for chunk in self.table.query_entities(
                "PartitionKey eq @run and RowKey ge 'chunk-' and RowKey lt 'chunk.' and lastError ne ''",
                parameters={"run": run_id}, select=["RowKey"]):
            try:
                self.table.update_entity({"PartitionKey": run_id, "RowKey": chunk["RowKey"], "lastError": ""},
                                         mode=UpdateMode.MERGE)
            except ResourceNotFoundError:
                pass  # the run was deleted meanwhile

    def update(self, run_id: str, change: Callable[[Run], bool | None],
               counted: Callable[[Run], bool] | None = None) -> Run:
        """Apply `change` to the newest copy of the run and store it, retrying on concurrent updates.

        `change` returns False to leave the record as it is. With `counted`, the chunk counters are added only to a
        run it says needs them (`change` sees zero chunks done otherwise).
        """

        def attempt() -> Run:
            found = self._get(run_id, counted)
            if found is None:
                raise KeyError(run_id)
            run, etag = found
            if change(run) is False:
                return run
            try:
                self.table.update_entity(self._to_entity(run), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
            except HttpResponseError as error:
                if _precondition_failed(error):
                    raise Conflict() from error
                raise
            return run

        return _retry_on_conflict(attempt)

    # --- chunks ---------------------------------------------------------------------------------------------

    @staticmethod
    def chunk_row(number: int) -> str:
        return f"chunk-{number:06d}"

    def add_chunk(self, run_id: str, number: int, members: int, streamed: bool = False) -> None:
        """Register a planned chunk; a replanned (redelivered) chunk keeps its existing record and state. `streamed`:
        its message went out while the run was still planning (see Planner._plan_rows)."""
        try:
            self.table.create_entity({"PartitionKey": run_id, "RowKey": self.chunk_row(number), "state": "pending", "members": members, "counts": "{}", "errorsBlob": "", "lastError": "", "streamed": streamed})
        except ResourceExistsError:
            if streamed:  # a row an earlier attempt wrote unsent: its message goes out now
                self.table.update_entity({"PartitionKey": run_id, "RowKey": self.chunk_row(number), "streamed": True},
                                         mode=UpdateMode.MERGE)

    def get_chunk(self, run_id: str, number: int) -> dict[str, Any] | None:
        """The chunk's row; also kept for finish_chunk, which the worker calls once it has sent the chunk."""
        entity = self.row(run_id, self.chunk_row(number))
        if entity is None:
            return None
        if len(self._read_chunks) >= self.READ_CHUNKS_KEPT:  # rows of chunks found done are never taken back
            self._read_chunks.clear()
        self._read_chunks[(run_id, number)] = entity
        return dict(entity)

    def note_chunk_error(self, run_id: str, number: int, reason: str) -> None:
        self.table.update_entity({"PartitionKey": run_id, "RowKey": self.chunk_row(number), "lastError": reason[:2000]}, mode=UpdateMode.MERGE)

    def chunks(self, run_id: str) -> Iterator[dict[str, Any]]:
        for entity in self.table.query_entities("PartitionKey eq @run and RowKey ge 'chunk-' and RowKey lt 'chunk.'", parameters={"run": run_id}):
            yield dict(entity)

    def finish_chunk(self, run_id: str, number: int, per_segment: dict[str, dict[str, int]], errors_blob: str) -> bool:
        """Mark the chunk done and add its counts in one transaction; False if it was done already.

        Counts go to one of SHARDS counter rows (by chunk number) rather than to the run row, so that chunk workers
        finishing at the same moment rarely contend for the same ETag.

        The first attempt uses the chunk's row as get_chunk last read it (the worker reads it under the chunk's lease
        before sending) instead of reading it again: the transaction is conditional on that row's ETag, so a row
        changed since fails it, and the next attempt reads the row anew.
        """

        def attempt() -> bool:
            chunk = self._read_chunks.pop((run_id, number), None) or self.table.get_entity(run_id, self.chunk_row(number))
            if chunk["state"] == "done":
                return False
            key = f"shard-{number % SHARDS:02d}"
            shard: Any = self.row(run_id, key)
            counts: dict[str, dict[str, int]] = json.loads(shard["counts"]) if shard else {}
            for segment, more in per_segment.items():
                counts[segment] = add_counts(counts.get(segment, {}), more)
            row = {"PartitionKey": run_id, "RowKey": key, "chunksDone": (shard["chunksDone"] if shard else 0) + 1,
                   "counts": json.dumps(counts)}
            shard_op = (("update", row, {"mode": UpdateMode.REPLACE, "etag": shard.metadata["etag"], "match_condition": MatchConditions.IfNotModified})
                        if shard else ("create", row))
            chunk_update = {"PartitionKey": run_id, "RowKey": chunk["RowKey"], "state": "done", "members": chunk["members"],
                            "counts": json.dumps(per_segment), "errorsBlob": errors_blob, "lastError": chunk.get("lastError", ""),
                            "streamed": bool(chunk.get("streamed"))}
            try:
                self.table.submit_transaction([
                    ("update", chunk_update, {"mode": UpdateMode.REPLACE, "etag": chunk.metadata["etag"], "match_condition": MatchConditions.IfNotModified}),
                    shard_op,
                ])
            except TableTransactionError as error:
                if _precondition_failed(error) or "EntityAlreadyExists" in str(error):
                    raise Conflict() from error
                raise
            return True

        return _retry_on_conflict(attempt)

    def record_planned_outcomes(self, run_id: str, per_segment: dict[str, dict[str, int]]) -> None:
        """Outcomes planning settled without a chunk (members already as wanted, untags held back). Always
        written, empty too: a planning attempt replaces whatever an earlier, crashed attempt recorded."""
        self.table.upsert_entity({"PartitionKey": run_id, "RowKey": "shard-plan", "chunksDone": 0,
                                  "counts": json.dumps(per_segment)}, mode=UpdateMode.REPLACE)

    def settle_if_done(self, run_id: str) -> tuple[Run, bool]:
        """Give the run its final status once every chunk is counted: the run as read (or as settled), and whether this
        call was the one to settle it; the caller needs no second read to see whether it has ended. The chunk counters
        are read with the run row (one query) but not added up for a run finished already or still planning (chunks
        streamed while it plans)."""
        settled: list[Run] = []

        def settle(run: Run) -> bool:
            settled.clear()  # an attempt whose write lost to another settler must not report the run as its own
            if run.finished_at is not None or run.total_chunks is None or run.chunks_done < run.total_chunks:
                return False
            run.settle()
            settled.append(run)
            return True

        run = self.update(run_id, settle, counted=lambda r: r.finished_at is None and r.total_chunks is not None)
        return run, bool(settled)
