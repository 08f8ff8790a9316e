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

Anyone who can write to the container can write anything, so nothing read here is trusted: a model.json is read no
further than MODEL_JSON_MAX_BYTES and checked for nesting deeper than SEGMENT_MAX_JSON_DEPTH before it is parsed;
its encoding must be a known ASCII-compatible text encoding, its delimiter one character, and every partition
location must name a blob of this container inside the export's own `<Entity>/<yyyy>/<MM>/<dd>/<HHmm>/` folder
(the account and container a URL names are never contacted; `..` is refused). What fails makes only the segments
it describes unusable: the listing says why (`NewestSnapshots.problems`, naming the file, never a value from a
row) and every other segment is listed as usual. A model.json reaches only the entities it names: a dated folder
beside it that holds `_SUCCESS` and is no entity of a usable model.json is a plain snapshot (a model.json at the
container's root leaves the plain segments there alone). A folder dated more than FUTURE_TOLERANCE_MINUTES ahead of
now is ignored (it would stay the newest snapshot until then) and said as its segment's problem. A blob storage will
not serve is a SnapshotProblem of the adapter's (shared/adapters/storage.py SegmentFolder).
"""
from __future__ import annotations

import codecs
import functools
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, BinaryIO, Iterable, Iterator, Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
SUCCESS_MARKER = "_SUCCESS"
DATA_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
_STAMP = re.compile(r"\d{4}/\d{2}/\d{2}/\d{4}")
_NUMBER_RUNS = re.compile(r"(\d+)")
MAX_BLOB_NAME = 1024  # Azure's limit for a blob name
FUTURE_TOLERANCE_MINUTES = 60  # a snapshot folder dated further ahead of now than this is ignored (clock skew allowed)


class SnapshotProblem(ValueError):
    """A segment file that cannot be used as it is. The message names the file and what to fix, and never holds a
    value read from a row: it is logged, and shown in refusals and run messages."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class ReadLimits:
    """How much of a segment file is read at most; the app settings in brackets (shared/config.py)."""

    line_bytes: int = 1 << 20  # one row (line) of a partition (SEGMENT_MAX_LINE_BYTES)
    fields: int = 1000  # fields of one row, columns of a header or attributes of an entity (SEGMENT_MAX_FIELDS)
    model_bytes: int = 16 << 20  # a model.json (MODEL_JSON_MAX_BYTES)
    json_depth: int = 64  # nesting of a model.json or a JSONL row (SEGMENT_MAX_JSON_DEPTH)

    @classmethod
    def from_settings(cls, settings: Any) -> ReadLimits:
        """The limits of shared.config.Settings."""
        return cls(settings.segment_max_line_bytes, settings.segment_max_fields, settings.model_json_max_bytes,
                   settings.segment_max_json_depth)


DEFAULT_LIMITS = ReadLimits()


def shown(value: object, size: int = 80) -> str:
    """A value from a file as a message may show it: repr (so nothing unprintable gets through), cut to `size`."""
    if not isinstance(value, str):
        return _JSON_KINDS.get(type(value), "a value of another kind")
    return repr(value[:size]) + ("..." if len(value) > size else "")


_JSON_KINDS = {list: "a list", dict: "an object", int: "a number", float: "a number", bool: "true/false", type(None): "null"}


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_too_deep(text: str, limit: int) -> bool:
    """True when JSON text nests arrays and objects more than `limit` levels, found without parsing it (so without
    recursion): brackets inside strings do not count. Never less than the depth json.loads would recurse to."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def read_model_json(source: BlobSource, name: str, limits: ReadLimits = DEFAULT_LIMITS) -> Any:
    """A model.json, parsed; SnapshotProblem naming it when it is too large, too deep or not JSON text.

    Reads at most MODEL_JSON_MAX_BYTES + 1 bytes of it, so a file of any size costs no more than that."""
    try:
        with source.open_binary(name) as stream:
            data = stream.read(limits.model_bytes + 1)
    except SnapshotProblem:  # refused by storage, said by the adapter (the error code and what to do)
        raise
    except Exception as error:  # noqa: BLE001 - deleted since the listing, or refused by storage: this file only
        raise SnapshotProblem(name, f"could not be read ({type(error).__name__}); it is tried again at the next listing") from None
    if len(data) > limits.model_bytes:
        raise SnapshotProblem(name, f"is larger than MODEL_JSON_MAX_BYTES ({limits.model_bytes:,} bytes); a Customer "
                                    "Insights model.json is far smaller: check what wrote it, or raise the setting")
    try:
        text = data.decode(json.detect_encoding(data))
    except (UnicodeDecodeError, LookupError) as error:
        start = getattr(error, "start", 0)
        raise SnapshotProblem(name, f"is not UTF-8 text (byte {start:,} cannot be decoded); it must be the JSON file "
                                    "the export wrote") from None
    text = text.lstrip("\ufeff")
    too_deep = SnapshotProblem(name, f"nests JSON more than {limits.json_depth} levels deep (SEGMENT_MAX_JSON_DEPTH); "
                                     "it is not a Customer Insights model.json")
    if json_too_deep(text, limits.json_depth):
        raise too_deep
    try:
        return json.loads(text)
    except RecursionError:
        raise too_deep from None
    except json.JSONDecodeError as error:
        raise SnapshotProblem(name, f"is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise SnapshotProblem(name, "is not valid JSON: it holds a number too long to read") from None


def encoding_problem(encoding: str) -> str | None:
    """Why partitions in `encoding` cannot be read line by line, or None. Only text encodings in which every ASCII
    byte is that ASCII character (UTF-8, Latin-1, Windows-1252, ...) are read: in others (UTF-16, UTF-32, EBCDIC)
    a line break or a quote is not the byte it is in ASCII."""
    if len(encoding) > 64:  # no codec has such a name; not worth looking up (or caching)
        return f"encoding {shown(encoding)} is not known; export the files as UTF-8"
    return _encoding_problem(encoding)


# ASCII that a codec reading escapes (raw_unicode_escape: "\\u000a") or shifting into another alphabet (UTF-7) makes a
# line break or a quote of: the line breaks counted in the bytes would then undercount the rows.
_ESCAPES = (b"\\u000a", b"\\U0000000a", b"\\x0a", b"\\n", b"\\012", b"\\u0022", b"+AAo-")


@functools.lru_cache(maxsize=64)
def _encoding_problem(encoding: str) -> str | None:
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):
        return f"encoding {shown(encoding)} is not known; export the files as UTF-8"
    if info.name in ("utf-8", "utf-8-sig"):
        return None
    ascii_bytes = bytes(range(128))
    try:
        compatible = (getattr(info, "_is_text_encoding", True) and ascii_bytes.decode(info.name) == ascii_bytes.decode("ascii")
                      and ascii_bytes.decode("ascii").encode(info.name) == ascii_bytes
                      and all(escape.decode(info.name) == escape.decode("ascii") for escape in _ESCAPES))
    except Exception:  # noqa: BLE001 - a codec that cannot even do ASCII, whatever it raises
        compatible = False
    if not compatible:
        return f"encoding {shown(encoding)} is not a text encoding that keeps ASCII as it is (like UTF-8); export the files as UTF-8"
    return None


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
    limits: ReadLimits = field(default=DEFAULT_LIMITS, compare=False, repr=False)  # how much of a row is read

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
    """What model.json says about one segment (checked: see `_entity`)."""

    name: str
    columns: tuple[str, ...]
    partitions: tuple[str, ...]  # blob names of the current snapshot, in model order, all in one dated folder
    has_header: bool
    delimiter: str
    encoding: str
    limits: ReadLimits = DEFAULT_LIMITS

    def folder(self) -> _Place | None:
        """The current snapshot's folder; None when model.json lists no partitions."""
        return _place(self.partitions[0]) if self.partitions else None

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
            limits=self.limits,
        )


def partition_blob_name(location: str, export_prefix: str) -> str:
    """Blob name of a model.json `location` URL: the path after the container, URL-decoded.

    The container is found as the path part just before the export folder, which copes with
    account-in-host URLs (`https://acct.blob.core.windows.net/c/...`) and emulator URLs
    (`http://127.0.0.1:10000/devstoreaccount1/c/...`) alike. Only the name is used: the blob is read from the
    segments container, whatever account or container the URL names.
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


class _Unusable(Exception):
    """Why one entity of a model.json cannot be exported (without the file's name)."""


def _usable_entity_name(name: object) -> bool:
    """A name a segment folder can have: text, printable, not a path."""
    return isinstance(name, str) and 0 < len(name) <= 255 and name.isprintable() and "/" not in name


def _partition_name(location: object, export_prefix: str, entity: str) -> str:
    """The blob a partition location names, checked to be a file in the entity's own dated folder beside model.json."""
    where = f"{export_prefix}{entity}/<yyyy>/<MM>/<dd>/<HHmm>/"
    if not isinstance(location, str) or not location:
        raise _Unusable("a partition has no 'location' string")
    try:
        name = partition_blob_name(location, export_prefix)
    except ValueError:  # urlsplit: an unclosed IPv6 bracket, a bad port
        raise _Unusable(f"partition location {shown(location)} is not a URL or a path") from None
    if (len(name) > MAX_BLOB_NAME or "\\" in name or any(part in ("", ".", "..") for part in name.split("/"))
            or not name.isprintable() or not name.startswith(export_prefix)):
        raise _Unusable(f"partition location {shown(location)} is not a file beside model.json in this container (it "
                        f"must be in {where}; '..' is refused and no other account or container is read)")
    place = _place(name)
    if place is None or place.parent != export_prefix or place.segment.casefold() != entity.casefold():
        raise _Unusable(f"partition location {shown(location)} is not in the entity's own folder {where}")
    return name


def _entity(doc: dict, name: str, export_prefix: str, limits: ReadLimits) -> _Entity:
    """One entity of model.json, every part of it checked; _Unusable says what is wrong."""
    attributes = doc.get("attributes")
    attributes = [] if attributes is None else attributes
    if not isinstance(attributes, list) or not all(isinstance(a, dict) and isinstance(a.get("name"), str) for a in attributes):
        raise _Unusable("'attributes' must be a list of objects, each with a 'name' string")
    columns = tuple(attribute["name"] for attribute in attributes)
    if len(columns) > limits.fields:
        raise _Unusable(f"lists {len(columns):,} attributes, more than SEGMENT_MAX_FIELDS ({limits.fields:,})")
    if len(set(columns)) != len(columns):
        raise _Unusable("names one attribute twice; give each column its own name")
    partitions = doc.get("partitions") or []
    if not isinstance(partitions, list) or not all(isinstance(p, dict) for p in partitions):
        raise _Unusable("'partitions' must be a list of objects, each with a 'location'")
    settings = (partitions[0].get("fileFormatSettings") or {}) if partitions else {}
    if not isinstance(settings, dict):
        raise _Unusable("'fileFormatSettings' must be an object")
    delimiter = settings.get("delimiter") or ","
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n\x00':
        raise _Unusable(f"fileFormatSettings.delimiter {shown(delimiter)} is not one character (other than a quote or a "
                        "line break); export with a one-character delimiter such as ','")
    encoding = settings.get("encoding") or "utf-8"
    problem = encoding_problem(encoding) if isinstance(encoding, str) else "fileFormatSettings.encoding must be a name such as 'UTF-8'"
    if problem:
        raise _Unusable(problem)
    headers = settings.get("columnHeaders", False)
    if isinstance(headers, str) and headers.strip().lower() in ("true", "false"):
        headers = headers.strip().lower() == "true"
    if not isinstance(headers, bool):
        raise _Unusable("fileFormatSettings.columnHeaders must be true or false")
    names = tuple(_partition_name(p.get("location"), export_prefix, name) for p in partitions)
    if len({blob.rsplit("/", 1)[0] for blob in names}) > 1:
        raise _Unusable("its partitions are not all in one <yyyy>/<MM>/<dd>/<HHmm> folder; no current snapshot")
    return _Entity(name, columns, names, headers, delimiter, encoding, limits)


@dataclass
class _Model:
    """One export's model.json: its usable entities, and why anything in it cannot be used."""

    name: str
    entities: dict[str, _Entity]  # by case-folded name
    unusable: dict[str, str]  # case-folded entity name -> why (naming the file)
    problem: str | None = None  # why the whole file cannot be used (naming it); None when it can


def _read_model(source: BlobSource, export_prefix: str, limits: ReadLimits) -> _Model:
    """An export's model.json; an unusable file or entity is logged as a warning and said why in the result."""
    name = export_prefix + MODEL_FILE
    try:
        model = read_model_json(source, name, limits)
        entities = model.get("entities", []) if isinstance(model, dict) else None
        if not isinstance(entities, list):
            raise SnapshotProblem(name, "is not a CDM model.json: its top level must be an object with an 'entities' list")
    except SnapshotProblem as problem:
        log.warning("Skipping export %s: %s", export_prefix or "/", problem)
        return _Model(name, {}, {}, str(problem))
    result = _Model(name, {}, {})
    for number, doc in enumerate(entities, start=1):
        entity_name = doc.get("name") if isinstance(doc, dict) else None
        if not _usable_entity_name(entity_name):
            log.warning("%s: entity %d has no usable 'name' (a segment folder name); it is skipped", name, number)
            continue
        key = entity_name.casefold()
        try:
            result.entities[key] = _entity(doc, entity_name, export_prefix, limits)
            result.unusable.pop(key, None)
        except _Unusable as problem:
            result.entities.pop(key, None)
            result.unusable[key] = str(SnapshotProblem(name, f"entity {shown(entity_name)}: {problem}"))
            log.warning("Skipping segment %s: %s", shown(entity_name), result.unusable[key])
    return result


@dataclass
class _Found:
    """What one listing found: complete snapshots, and for segments without a usable one, why."""

    snapshots: list[tuple[Snapshot, bool]] = field(default_factory=list)  # (snapshot, is current)
    problems: dict[str, str] = field(default_factory=dict)  # case-folded segment -> a file it cannot be exported from, and why
    waiting: dict[str, str] = field(default_factory=dict)  # case-folded segment -> what its newest snapshot waits for


def _cdm_snapshots(model: _Model, entity: _Entity, folders: dict[str, tuple[_Place, set[str]]], found: _Found,
                   horizon: datetime) -> None:
    """(snapshot, is_current) for one entity, given the listed folders of its export. A current folder dated after
    `horizon` is ignored, with the older ones (model.json may have been written wrong), and said as a problem."""
    current = entity.folder()
    if current is None:
        found.waiting[entity.name.casefold()] = f"{model.name} lists no partitions for entity {shown(entity.name)}"
        return
    present = folders.get(current.folder, (current, set()))[1]
    missing = [name for name in entity.partitions if name[len(current.folder):] not in present]
    if current.taken_at > horizon:  # ignored, whatever it holds: it would stay the newest snapshot until that time
        found.problems.setdefault(entity.name.casefold(), str(SnapshotProblem(model.name, (
            f"entity {shown(entity.name)}: its partitions are in folder {current.folder}, {_future(current)}"))))
    elif not missing:
        found.snapshots.append((entity.snapshot(current, entity.partitions), True))
    else:
        found.waiting[entity.name.casefold()] = (
            f"{model.name} lists {len(entity.partitions):,} partitions of which {len(missing):,} are not in the container "
            f"(first: {missing[0]}): an export still being written, or a partition missing")
    for place, files in folders.values():
        if place.segment.casefold() == entity.name.casefold() and place.taken_at < current.taken_at <= horizon:
            csvs = sorted((f for f in files if f.endswith(".csv")), key=_read_order)
            if csvs:
                found.snapshots.append((entity.snapshot(place, tuple(place.folder + f for f in csvs)), False))


def _plain_snapshot(place: _Place, files: set[str], found: _Found) -> Snapshot | None:
    if SUCCESS_MARKER not in files:
        return None
    by_format: dict[str, list[str]] = defaultdict(list)
    for file in files:
        for extension, fmt in DATA_FORMATS.items():
            if file.endswith(extension):
                by_format[fmt].append(file)
    if len(by_format) > 1:
        log.warning("Skipping %s: it mixes .csv and .jsonl files; keep one format a folder", place.folder)
        found.problems[place.segment.casefold()] = f"{place.folder}: mixes .csv and .jsonl files; keep one format a folder"
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


def _future(place: _Place) -> str:
    """Why a folder dated ahead of now is ignored (its problem, after the folder or file it is about)."""
    return (f"which is dated {place.taken_at:%Y-%m-%d %H:%M} UTC, more than {FUTURE_TOLERANCE_MINUTES} minutes ahead of "
            "now, so it is ignored (it would otherwise stay the newest snapshot until then): a snapshot folder is named "
            "<yyyy>/<MM>/<dd>/<HHmm> by the UTC time it was written; delete the folder or write it again under that time")


def _scan(source: BlobSource, names: Iterable[str], limits: ReadLimits) -> _Found:
    """Every complete snapshot in a listing, with whether it is what model.json points at (CDM) or marked done
    (plain), and why segments whose files cannot be used have none.

    A dated folder beside a model.json belongs to that export when its segment is an entity of the model; one that
    holds `_SUCCESS` and is no entity of a usable model.json (a plain segment at the root of a container with a
    model.json there too) stays a plain snapshot, so a model.json's problem reaches only the entities it names and
    the folders beside it that could be its own (those without `_SUCCESS`). Folders dated more than
    FUTURE_TOLERANCE_MINUTES ahead of now are ignored, and said so as their segment's problem."""
    horizon = datetime.now(timezone.utc) + timedelta(minutes=FUTURE_TOLERANCE_MINUTES)
    exports: dict[str, dict[str, tuple[_Place, set[str]]]] = {}
    folders: dict[str, tuple[_Place, set[str]]] = {}
    for name in names:
        if name == MODEL_FILE or name.endswith("/" + MODEL_FILE):
            exports.setdefault(name[: -len(MODEL_FILE)], {})
        place = _place(name)
        if place is not None:
            folders.setdefault(place.folder, (place, set()))[1].add(place.file)
    found = _Found()
    plain = []
    for folder, (place, files) in folders.items():
        if place.parent in exports:
            exports[place.parent][folder] = (place, files)
        else:
            plain.append((place, files))
    for export_prefix, export_folders in exports.items():
        model = _read_model(source, export_prefix, limits)
        named = model.entities.keys() | model.unusable.keys()
        own: dict[str, tuple[_Place, set[str]]] = {}
        for folder, (place, files) in export_folders.items():
            if place.segment.casefold() in named:
                own[folder] = (place, files)
            elif SUCCESS_MARKER in files:  # no entity of this model.json: a plain snapshot beside it
                plain.append((place, files))
            elif model.problem:  # could be one of its entities: the model.json cannot say
                found.problems.setdefault(place.segment.casefold(), model.problem)
        found.problems.update(model.unusable)
        for entity in model.entities.values():
            _cdm_snapshots(model, entity, own, found, horizon)
    for place, files in plain:
        if place.taken_at > horizon:
            if SUCCESS_MARKER in files:  # complete, but it would stay the newest until then
                problem = f"{place.folder}: {_future(place)}"
                log.warning("Skipping %s", problem)
                found.problems.setdefault(place.segment.casefold(), problem)
            continue
        snapshot = _plain_snapshot(place, files, found)
        if snapshot is not None:
            found.snapshots.append((snapshot, True))
    return found


def _by_segment(found: _Found) -> dict[str, list[Snapshot]]:
    by_name: dict[str, list[Snapshot]] = defaultdict(list)
    for snapshot, _ in found.snapshots:
        by_name[snapshot.segment.casefold()].append(snapshot)
    segments = {}
    for snapshots in by_name.values():
        snapshots.sort(key=lambda s: (s.taken_at, s.folder), reverse=True)
        segments[snapshots[0].segment] = snapshots
    return segments


def list_segments(source: BlobSource, limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, list[Snapshot]]:
    """Every segment with its complete snapshots, newest first (keyed by the newest snapshot's spelling)."""
    return _by_segment(_scan(source, source.list_names(), limits))


def segment_listing(source: BlobSource, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[dict[str, list[Snapshot]], dict[str, str]]:
    """`list_segments`, and for segments without a complete snapshot why (case-folded name -> the problem, naming
    the file, or what the newest snapshot waits for), from one listing."""
    found = _scan(source, source.list_names(), limits)
    return _by_segment(found), {**found.waiting, **found.problems}


class NewestSnapshots(dict):
    """Case-folded segment name -> its newest complete snapshot, from one listing. For a segment without one,
    `problems` says which file cannot be used and why, `waiting` what its newest snapshot is still waiting for."""

    def __init__(self, snapshots: dict[str, Snapshot] | None = None, problems: dict[str, str] | None = None,
                 waiting: dict[str, str] | None = None) -> None:
        super().__init__(snapshots or {})
        self.problems = dict(problems or {})
        self.waiting = dict(waiting or {})


def newest_snapshots(source: BlobSource, limits: ReadLimits = DEFAULT_LIMITS) -> NewestSnapshots:
    """What runs export: each segment's newest complete snapshot, keyed by case-folded name, from one listing."""
    found = _scan(source, source.list_names(), limits)
    newest = {name.casefold(): snapshots[0] for name, snapshots in _by_segment(found).items()}
    return NewestSnapshots(newest, found.problems, found.waiting)


def newest_snapshot(source: BlobSource, segment: str, limits: ReadLimits = DEFAULT_LIMITS) -> Snapshot | None:
    """One segment's newest complete snapshot (name matched case-insensitively)."""
    return newest_snapshots(source, limits).get(segment.casefold())


def snapshots_for_blob(source: BlobSource, blob_name: str, limits: ReadLimits = DEFAULT_LIMITS) -> list[Snapshot]:
    """Snapshots a newly landed blob completes ("run on arrival"); [] when it completes none.

    A CDM model.json may complete one snapshot per entity it lists; a partition completes its
    snapshot when it is the last one model.json was waiting for; a plain folder is completed by its
    `_SUCCESS` marker only. When events are handled late, several blobs may report the same
    snapshot: callers dedupe by (segment, snapshot id). An unusable model.json completes no snapshot of its own; a
    plain folder beside it (one that is no entity of a usable model.json) is still completed by its `_SUCCESS`.
    """
    if blob_name == MODEL_FILE or blob_name.endswith("/" + MODEL_FILE):
        export_prefix = blob_name[: -len(MODEL_FILE)]
        places = [entity.folder() for entity in _read_model(source, export_prefix, limits).entities.values()]
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
        completes_plain = place.file == SUCCESS_MARKER
        return [snapshot for snapshot, current in _scan(source, names, limits).snapshots
                if current and (snapshot.columns is not None or completes_plain)]
    return [snapshot for snapshot, current in _scan(source, names, limits).snapshots if current]
