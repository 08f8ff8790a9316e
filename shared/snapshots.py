"""Segment snapshots in Blob Storage: where they are and which ones are complete enough to export.

A snapshot is one refresh of one segment: the files in one `<yyyy>/<MM>/<dd>/<HHmm>/` folder (UTC).
Exporting a half-written snapshot would archive or untag real members, so completeness is decided
from markers the writer leaves last, never from the files alone.

Two layouts are recognised in the same container:

1. Customer Insights (CDM) export:
   `<root>/<ExportName>/<Entity>/<yyyy>/<MM>/<dd>/<HHmm>/<Entity>_<n>.csv` beside `<root>/<ExportName>/model.json`.
   The segment is the entity. The folder model.json points at (through `partitions[].location`) is
   complete when every partition model.json lists is present; folders newer than it are exports in
   progress and ignored; older folders are past snapshots, taken as complete (they were once current).
   Columns come from `attributes` (partitions often have no header row); header, delimiter and
   encoding from the first partition's `fileFormatSettings`. Entities whose partitions span several
   folders, or that list no partitions, have no current snapshot.
2. Plain: `<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/*.csv` (first row is the header) or `*.jsonl` (one JSON
   object a line), UTF-8. The folder is complete once a `_SUCCESS` blob is in it: write it after
   every data file. A folder holding only `_SUCCESS` is a segment that is empty right now. A folder
   mixing `.csv` and `.jsonl` files is skipped (with a warning) because its rows cannot be read one way.

Segment names match case-insensitively; snapshots report the name as the files spell it.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO, Iterable, Iterator, Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
SUCCESS_MARKER = "_SUCCESS"
DATA_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
_STAMP = re.compile(r"\d{4}/\d{2}/\d{2}/\d{4}")
_NUMBER_RUNS = re.compile(r"(\d+)")


class BlobSource(Protocol):
    """Read access to the container the segments land in (Blob Storage in Azure, a folder in tests)."""

    def list_names(self, prefix: str = "") -> Iterator[str]:
        """Blob names under prefix, in any order."""

    def read_bytes(self, name: str) -> bytes:
        """A small blob, whole (model.json)."""

    def open_binary(self, name: str) -> BinaryIO:
        """A large blob as a readable, buffered binary file (io.BufferedIOBase), read as it streams."""


@dataclass(frozen=True)
class Snapshot:
    """One complete refresh of one segment, with what it takes to read its rows."""

    segment: str
    folder: str  # blob prefix ending with "/"
    taken_at: datetime  # UTC, from the folder path
    partitions: tuple[str, ...]  # blob names, in read order
    columns: tuple[str, ...] | None  # from model.json; None when the files carry their own header
    format: str  # "csv" | "jsonl"
    has_header: bool
    delimiter: str = ","
    encoding: str = "utf-8"

    @property
    def id(self) -> str:
        """Stable across listings, so run records can say which refresh they exported."""
        return self.taken_at.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class _Place:
    """Where a blob sits in a `<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/<file>` layout."""

    parent: str  # prefix above the segment folder: "" or ending with "/"
    segment: str
    folder: str
    taken_at: datetime
    file: str


def _place(name: str) -> _Place | None:
    parts = name.split("/")
    if len(parts) < 6:
        return None
    *above, segment, year, month, day, hour_minute, file = parts
    if not segment or not file or not _STAMP.fullmatch(f"{year}/{month}/{day}/{hour_minute}"):
        return None
    try:
        taken_at = datetime(int(year), int(month), int(day), int(hour_minute[:2]), int(hour_minute[2:]), tzinfo=timezone.utc)
    except ValueError:
        return None
    parent = "".join(f"{part}/" for part in above)
    return _Place(parent, segment, name[: len(name) - len(file)], taken_at, file)


def _read_order(name: str) -> list:
    """Natural order, so `_10.csv` comes after `_9.csv`."""
    return [int(run) if run.isdigit() else run for run in _NUMBER_RUNS.split(name)]


@dataclass(frozen=True)
class _Entity:
    """What model.json says about one segment."""

    name: str
    columns: tuple[str, ...]
    partitions: tuple[str, ...]  # blob names of the current snapshot, in model order
    has_header: bool
    delimiter: str
    encoding: str

    def folder(self) -> _Place | None:
        """The current snapshot's folder; None unless every partition sits in one dated folder."""
        places = [_place(name) for name in self.partitions]
        if not places or None in places or len({place.folder for place in places}) != 1:
            return None
        return places[0]

    def snapshot(self, place: _Place, partitions: tuple[str, ...]) -> Snapshot:
        return Snapshot(
            segment=place.segment,
            folder=place.folder,
            taken_at=place.taken_at,
            partitions=partitions,
            columns=self.columns,
            format="csv",
            has_header=self.has_header,
            delimiter=self.delimiter,
            encoding=self.encoding,
        )


def partition_blob_name(location: str, export_prefix: str) -> str:
    """Blob name of a model.json `location` URL: the path after the container, URL-decoded.

    The container is found as the path part just before the export folder, which copes with
    account-in-host URLs (`https://acct.blob.core.windows.net/c/...`) and emulator URLs
    (`http://127.0.0.1:10000/devstoreaccount1/c/...`) alike.
    """
    split = urlsplit(location)
    if not split.scheme:
        return export_prefix + unquote(location).lstrip("/")
    parts = unquote(split.path).lstrip("/").split("/")
    if export_prefix:
        for start in range(1, len(parts)):
            candidate = "/".join(parts[start:])
            if candidate.startswith(export_prefix):
                return candidate
    account_in_path = split.hostname in ("localhost", "127.0.0.1") or (split.hostname or "").replace(".", "").isdigit()
    return "/".join(parts[2 if account_in_path else 1 :])


def _read_model(source: BlobSource, export_prefix: str) -> dict[str, _Entity]:
    """Entities of one export by case-folded name; {} (with a warning) when model.json is unusable."""
    name = export_prefix + MODEL_FILE
    try:
        model = json.loads(source.read_bytes(name))
        entities = {}
        for doc in model.get("entities", []):
            partitions = doc.get("partitions") or []
            settings = (partitions[0].get("fileFormatSettings") or {}) if partitions else {}
            entity = _Entity(
                name=doc["name"],
                columns=tuple(attribute["name"] for attribute in doc.get("attributes", [])),
                partitions=tuple(partition_blob_name(p["location"], export_prefix) for p in partitions),
                has_header=bool(settings.get("columnHeaders", False)),
                delimiter=settings.get("delimiter") or ",",
                encoding=settings.get("encoding") or "utf-8",
            )
            entities[entity.name.casefold()] = entity
        return entities
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("Skipping export %s: %s is not a readable CDM model.json (%s: %s)", export_prefix or "/", name, type(exc).__name__, exc)
        return {}


def _cdm_snapshots(entity: _Entity, folders: dict[str, tuple[_Place, set[str]]]) -> Iterator[tuple[Snapshot, bool]]:
    """(snapshot, is_current) for one entity, given the listed folders of its export."""
    current = entity.folder()
    if current is None:
        if entity.partitions:
            log.warning("Segment %s: model.json partitions are not all in one <yyyy>/<MM>/<dd>/<HHmm> folder; no current snapshot", entity.name)
        return
    present = folders.get(current.folder, (current, set()))[1]
    if all(_place(name).file in present for name in entity.partitions):
        yield entity.snapshot(current, entity.partitions), True
    for place, files in folders.values():
        if place.segment.casefold() == entity.name.casefold() and place.taken_at < current.taken_at:
            csvs = sorted((f for f in files if f.endswith(".csv")), key=_read_order)
            if csvs:
                yield entity.snapshot(place, tuple(place.folder + f for f in csvs)), False


def _plain_snapshot(place: _Place, files: set[str]) -> Snapshot | None:
    if SUCCESS_MARKER not in files:
        return None
    by_format: dict[str, list[str]] = defaultdict(list)
    for file in files:
        for extension, fmt in DATA_FORMATS.items():
            if file.endswith(extension):
                by_format[fmt].append(file)
    if len(by_format) > 1:
        log.warning("Skipping %s: it mixes .csv and .jsonl files; keep one format a folder", place.folder)
        return None
    fmt, data = next(iter(by_format.items()), ("csv", []))
    return Snapshot(
        segment=place.segment,
        folder=place.folder,
        taken_at=place.taken_at,
        partitions=tuple(place.folder + f for f in sorted(data, key=_read_order)),
        columns=None,
        format=fmt,
        has_header=fmt == "csv",
    )


def _scan(source: BlobSource, names: Iterable[str]) -> Iterator[tuple[Snapshot, bool]]:
    """Every complete snapshot in a listing, with whether it is what model.json points at (CDM) or marked done (plain)."""
    exports: dict[str, dict[str, tuple[_Place, set[str]]]] = {}
    folders: dict[str, tuple[_Place, set[str]]] = {}
    for name in names:
        if name == MODEL_FILE or name.endswith("/" + MODEL_FILE):
            exports.setdefault(name[: -len(MODEL_FILE)], {})
        place = _place(name)
        if place is not None:
            folders.setdefault(place.folder, (place, set()))[1].add(place.file)
    plain = []
    for folder, (place, files) in folders.items():
        if place.parent in exports:
            exports[place.parent][folder] = (place, files)
        else:
            plain.append((place, files))
    for export_prefix, export_folders in exports.items():
        for entity in _read_model(source, export_prefix).values():
            yield from _cdm_snapshots(entity, export_folders)
    for place, files in plain:
        snapshot = _plain_snapshot(place, files)
        if snapshot is not None:
            yield snapshot, True


def list_segments(source: BlobSource) -> dict[str, list[Snapshot]]:
    """Every segment with its complete snapshots, newest first (keyed by the newest snapshot's spelling)."""
    by_name: dict[str, list[Snapshot]] = defaultdict(list)
    for snapshot, _ in _scan(source, source.list_names()):
        by_name[snapshot.segment.casefold()].append(snapshot)
    segments = {}
    for snapshots in by_name.values():
        snapshots.sort(key=lambda s: (s.taken_at, s.folder), reverse=True)
        segments[snapshots[0].segment] = snapshots
    return segments


def newest_snapshots(source: BlobSource) -> dict[str, Snapshot]:
    """What runs export: each segment's newest complete snapshot, keyed by case-folded name, from one listing."""
    return {name.casefold(): snapshots[0] for name, snapshots in list_segments(source).items()}


def newest_snapshot(source: BlobSource, segment: str) -> Snapshot | None:
    """One segment's newest complete snapshot (name matched case-insensitively)."""
    return newest_snapshots(source).get(segment.casefold())


def snapshots_for_blob(source: BlobSource, blob_name: str) -> list[Snapshot]:
    """Snapshots a newly landed blob completes ("run on arrival"); [] when it completes none.

    A CDM model.json may complete one snapshot per entity it lists; a partition completes its
    snapshot when it is the last one model.json was waiting for; a plain folder is completed by its
    `_SUCCESS` marker only. When events are handled late, several blobs may report the same
    snapshot: callers dedupe by (segment, snapshot id).
    """
    if blob_name == MODEL_FILE or blob_name.endswith("/" + MODEL_FILE):
        export_prefix = blob_name[: -len(MODEL_FILE)]
        places = [entity.folder() for entity in _read_model(source, export_prefix).values()]
        folders = {place.folder for place in places if place is not None}
        names = [blob_name, *(name for folder in sorted(folders) for name in source.list_names(folder))]
    else:
        place = _place(blob_name)
        if place is None:
            return []
        model = place.parent + MODEL_FILE
        is_cdm = any(name == model for name in source.list_names(model))
        if not is_cdm and place.file != SUCCESS_MARKER:
            return []
        names = [*([model] if is_cdm else []), *source.list_names(place.folder)]
    return [snapshot for snapshot, current in _scan(source, names) if current]
