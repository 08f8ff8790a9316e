"""The segments an admin can choose from: each one's newest complete snapshot, its columns with their types, and its
profile count; segments whose files cannot be used, with why. What `GET /api/segments` answers.

One listing of the segments container (shared.snapshots, the same one exports use), so the page offers exactly what
an export would read. Columns come from the snapshot the way the mapping check reads them (`snapshot_columns`: the
header, the first JSON object, or model.json's attributes) and their types from the CDM model.json beside the
export (`attributes[].dataType`; plain files have no types, shown as `string`), with the Mailchimp merge-field type
`createMissingMergeFields` would give each.

Profiles are counted as planning counts them for MAX_PROFILES_PER_EXPORT: every row `read_rows` yields. That reads
the whole snapshot, so each snapshot is counted once and the count kept (in memory, and in the app's work
container, so other instances and restarts reuse it), keyed by the snapshot's folder and partition names: a
complete snapshot's files are not rewritten (each refresh writes a new folder).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shared.cdm_types import mailchimp_type
from shared.segment_rows import read_rows, snapshot_columns
from shared.snapshots import (DEFAULT_LIMITS, MODEL_FILE, BlobSource, ReadLimits, Snapshot, SnapshotProblem,
                              newest_snapshots, read_model_json)

log = logging.getLogger(__name__)

COUNTS_PREFIX = "catalog/profile-counts/"
_MEMORY_ENTRIES = 512


class CountStore(Protocol):
    """Where counts are kept between requests (the work container in the app)."""

    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def exists(self, name: str) -> bool: ...


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the CDM dataType from model.json ("string" when the files carry no types)
    mailchimp_type: str  # the merge-field type a missing merge field mapped to it is created with

    def public(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "mailchimpType": self.mailchimp_type}


@dataclass(frozen=True)
class SegmentEntry:
    name: str
    snapshot: str | None = None  # id of the newest complete snapshot (e.g. 2026-11-28T17:00Z)
    taken_at: str | None = None  # its time, ISO 8601 UTC
    layout: str | None = None  # cdm | csv | jsonl
    columns: tuple[Column, ...] = ()
    profiles: int | None = None
    problem: str | None = None  # why it cannot be exported (names the file), or None
    waiting: str | None = None  # what its newest snapshot still waits for (no complete one yet)

    @property
    def usable(self) -> bool:
        return self.snapshot is not None and self.problem is None

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "usable": self.usable, "snapshot": self.snapshot, "snapshotTime": self.taken_at,
                "layout": self.layout, "columns": [c.public() for c in self.columns], "profiles": self.profiles,
                "problem": self.problem, "waiting": self.waiting}


def _export_prefix(snapshot: Snapshot) -> str:
    """`<root>/<Export>/` of a snapshot folder `<root>/<Export>/<Entity>/<yyyy>/<MM>/<dd>/<HHmm>/`."""
    parts = snapshot.folder.rstrip("/").split("/")
    return "".join(f"{part}/" for part in parts[:-5])


def _cdm_types(source: BlobSource, snapshot: Snapshot, limits: ReadLimits, models: dict[str, Any]) -> dict[str, str]:
    """Case-folded column -> CDM dataType of the snapshot's entity in the model.json beside it ({} when unreadable:
    the listing has said why already)."""
    prefix = _export_prefix(snapshot)
    if prefix not in models:
        try:
            models[prefix] = read_model_json(source, prefix + MODEL_FILE, limits)
        except SnapshotProblem:
            models[prefix] = None
    model = models[prefix]
    entities = model.get("entities") if isinstance(model, dict) else None
    for entity in entities if isinstance(entities, list) else []:
        if isinstance(entity, dict) and isinstance(entity.get("name"), str) and entity["name"].casefold() == snapshot.segment.casefold():
            attributes = entity.get("attributes")
            return {a["name"].casefold(): a["dataType"] for a in (attributes if isinstance(attributes, list) else [])
                    if isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("dataType"), str)}
    return {}


def _count_key(snapshot: Snapshot) -> str:
    identity = json.dumps([snapshot.folder, list(snapshot.partitions), snapshot.format, snapshot.has_header,
                           snapshot.delimiter, snapshot.encoding, list(snapshot.columns or ())])
    return COUNTS_PREFIX + hashlib.sha256(identity.encode("utf-8")).hexdigest() + ".json"


class ProfileCounts:
    """Rows per snapshot, counted once: memory first, then the store, else read (and kept in both)."""

    def __init__(self, store: CountStore | None = None) -> None:
        self._store = store
        self._memory: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, source: BlobSource, snapshot: Snapshot) -> int:
        key = _count_key(snapshot)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        rows = self._stored(key)
        if rows is None:
            rows = sum(1 for _ in read_rows(source, snapshot))
            if self._store is not None:
                try:
                    self._store.write_bytes(key, json.dumps({"folder": snapshot.folder, "profiles": rows}).encode())
                except Exception as error:  # noqa: BLE001 - keeping it is an optimisation; the count stands
                    log.warning("profile count of %s not kept (%s)", snapshot.folder, type(error).__name__)
        with self._lock:
            self._memory[key] = rows
            while len(self._memory) > _MEMORY_ENTRIES:
                self._memory.popitem(last=False)
        return rows

    def _stored(self, key: str) -> int | None:
        if self._store is None:
            return None
        try:
            if not self._store.exists(key):
                return None
            rows = json.loads(self._store.read_bytes(key))["profiles"]
        except Exception:  # noqa: BLE001 - unreadable or hand-edited: count again
            return None
        return rows if isinstance(rows, int) and rows >= 0 else None


@dataclass
class SegmentCatalog:
    source: BlobSource
    counts: ProfileCounts = field(default_factory=ProfileCounts)
    limits: ReadLimits = DEFAULT_LIMITS

    def segments(self) -> list[SegmentEntry]:
        """Every segment the container holds, by name: usable ones with their newest complete snapshot, the others
        with the problem or what they wait for."""
        newest = newest_snapshots(self.source, self.limits)
        models: dict[str, Any] = {}
        entries = [self._entry(snapshot, models) for snapshot in newest.values()]
        for key, problem in newest.problems.items():
            if key not in newest:
                entries.append(SegmentEntry(name=key, problem=problem))
        for key, waiting in newest.waiting.items():
            if key not in newest and key not in newest.problems:
                entries.append(SegmentEntry(name=key, waiting=waiting))
        return sorted(entries, key=lambda e: (e.name.casefold(), e.name))

    def _entry(self, snapshot: Snapshot, models: dict[str, Any]) -> SegmentEntry:
        layout = "cdm" if snapshot.columns is not None else snapshot.format
        base = SegmentEntry(name=snapshot.segment, snapshot=snapshot.id, taken_at=snapshot.taken_at.isoformat(),
                            layout=layout)
        try:
            names = snapshot_columns(self.source, snapshot)
        except SnapshotProblem as problem:
            return replace(base, problem=str(problem))
        types = _cdm_types(self.source, snapshot, self.limits, models) if layout == "cdm" else {}
        columns = tuple(Column(name, types.get(name.casefold(), "string"), mailchimp_type(types.get(name.casefold())))
                        for name in names)
        try:
            profiles = self.counts.count(self.source, snapshot)
        except SnapshotProblem as problem:
            return replace(base, columns=columns, problem=str(problem))
        return replace(base, columns=columns, profiles=profiles)
