"""Broken and hostile segment files stay with their own segment: one bad file, one bad row, contained.

Anyone who can write to the segments container (the platform, a script, an attacker with a leaked SAS) can write
anything. Each hostile input here must affect only its own segment (a row made invalid with the file, row and what to
fix; or a snapshot made unusable, named with its file and why), while every other segment is listed, checked and
exported as usual, and the timer and arrival triggers go on to the next destination. Real files in a temp folder
(FolderSource fakes Blob Storage); the export service runs with in-memory stand-ins for its tables, queues and
Mailchimp, since what is tested is what happens before anything is sent.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from shared import snapshots as snapshots_module
from shared.config import ConfigError, load_settings
from shared.destinations import Claim, Destination, new_destination
from shared.exports import ExportService, Refused
from shared.mailchimp.errors import MailchimpAuthError
from shared.segment_catalog import SegmentCatalog
from shared.sample_segments import FolderSource, folder_writer, write_plain_export, write_sample_export
from shared.segment_rows import read_rows, snapshot_columns
from shared.snapshots import Snapshot, list_segments, newest_snapshot, newest_snapshots, snapshots_for_blob

T = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
STAMP = "2026/11/28/1700/"
MB = 1 << 20
GOOD_MODEL = "CI_good/Segs/model.json"


# --- files ---------------------------------------------------------------------------------------------------------


def good_export(root: Path) -> None:
    """Two well-formed segments, Good and Fine, in their own Customer Insights export."""
    write_sample_export(root, {"Good": 20, "Fine": 10}, root="CI_good", export_name="Segs", taken_at=T)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def model_with(root: Path, export: str, entity: dict[str, Any], files: dict[str, bytes] | None = None) -> str:
    """An export `export` (e.g. "CI_bad/Segs/") whose model.json lists one entity; returns the model's blob name."""
    write = folder_writer(root)
    for name, data in (files or {}).items():
        write(name, data)
    write(export + "model.json", json.dumps({"name": "Segs", "entities": [entity]}).encode())
    return export + "model.json"


def bad_entity(name: str = "Bad", export: str = "CI_bad/Segs/", settings: dict[str, Any] | None = None,
               locations: list[str] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A well-formed entity with one present partition, changed by `settings` and `locations`."""
    partition = f"{export}{name}/{STAMP}{name}_1.csv"
    entity = {
        "name": name,
        "attributes": [{"name": "Email"}, {"name": "FirstName"}, {"name": "LastName"}],
        "partitions": [{"location": location, "fileFormatSettings": {"delimiter": ",", "encoding": "UTF-8", **(settings or {})}}
                       for location in (locations or [f"https://contoso.blob.core.windows.net/segments/{partition}"])],
    }
    return entity, {partition: b"bad@contoso.com,Bad,Row\r\n"}


def snapshot_of(root: Path, files: dict[str, bytes], **options: Any) -> tuple[FolderSource, Snapshot]:
    write = folder_writer(root)
    for name, data in files.items():
        write(name, data)
    options.setdefault("format", "csv")
    options.setdefault("has_header", options["format"] == "csv" and "columns" not in options)
    options.setdefault("columns", None)
    return FolderSource(root), Snapshot("S", "", T, tuple(files), **options)


def rows_of(root: Path, data: bytes, name: str = "p.csv", **options: Any) -> list[tuple[int, dict | None, str | None]]:
    source, snapshot = snapshot_of(root, {name: data}, **options)
    return [(r.row, r.values, r.error) for r in read_rows(source, snapshot)]


HEADER = b"Email,FirstName,LastName\r\n"


def row(n: int) -> bytes:
    return b"user%d@contoso.com,First%d,Last%d\r\n" % (n, n, n)


class CountingSource(FolderSource):
    """Counts the bytes actually read from each blob, through either way of reading."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: dict[str, int] = {}

    def read_bytes(self, name: str) -> bytes:
        data = super().read_bytes(name)
        self.read[name] = self.read.get(name, 0) + len(data)
        return data

    def open_binary(self, name: str) -> BinaryIO:
        source = self

        class Counted(io.RawIOBase):
            def __init__(self) -> None:
                self._file = open(source.root / name, "rb")

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                size = self._file.readinto(buffer)
                source.read[name] = source.read.get(name, 0) + size
                return size

            def close(self) -> None:
                self._file.close()
                super().close()

        return io.BufferedReader(Counted(), buffer_size=1 << 16)


def peak_bytes(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- model.json: a bad one makes only its own export's (or entity's) snapshots unusable, and says why ---------------


def test_a_model_json_nested_100000_deep_is_refused_before_parsing_and_the_others_are_listed(tmp_path: Path, caplog) -> None:
    good_export(tmp_path)
    folder_writer(tmp_path)(f"CI_deep/Segs/Deep/{STAMP}Deep_1.csv", b"a@contoso.com,A,B\r\n")
    folder_writer(tmp_path)("CI_deep/Segs/model.json", b'{"entities": ' + deep_json(100_000) + b"}")
    source = FolderSource(tmp_path)

    with caplog.at_level(logging.WARNING):
        newest = newest_snapshots(source)

    assert sorted(newest) == ["fine", "good"]
    assert "CI_deep/Segs/model.json" in newest.problems["deep"] and "SEGMENT_MAX_JSON_DEPTH" in newest.problems["deep"]
    assert "CI_deep/Segs/model.json" in caplog.text
    assert snapshots_for_blob(source, "CI_deep/Segs/model.json") == []
    assert [s.segment for s in snapshots_for_blob(source, GOOD_MODEL)] == ["Good", "Fine"]


def test_a_50_mb_model_json_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    good_export(tmp_path)
    entity, files = bad_entity("Big", export="CI_big/Segs/")
    entity["description"] = "x" * (50 * MB)
    model = model_with(tmp_path, "CI_big/Segs/", entity, files)
    source = CountingSource(tmp_path)

    newest = newest_snapshots(source)

    assert sorted(newest) == ["fine", "good"]
    assert model in newest.problems["big"] and "MODEL_JSON_MAX_BYTES (16,777,216 bytes)" in newest.problems["big"]
    assert source.read[model] <= 16 * MB + (1 << 16)  # never the whole 50 MB


def test_model_json_limits_follow_the_settings(tmp_path: Path) -> None:
    entity, files = bad_entity("Small", export="CI/Segs/")
    model_with(tmp_path, "CI/Segs/", entity, files)
    source = FolderSource(tmp_path)
    assert newest_snapshot(source, "Small") is not None

    newest = newest_snapshots(source, snapshots_module.ReadLimits(model_bytes=100))
    assert "Small" not in newest and "MODEL_JSON_MAX_BYTES (100 bytes)" in newest.problems["small"]
    shallow = newest_snapshots(source, snapshots_module.ReadLimits(json_depth=3))
    assert "SEGMENT_MAX_JSON_DEPTH" in shallow.problems["small"]


@pytest.mark.parametrize("settings, words", [
    ({"encoding": "klingon-8"}, "encoding 'klingon-8' is not known; export the files as UTF-8"),
    ({"encoding": "UTF-16"}, "keeps ASCII as it is"),
    ({"encoding": "rot13"}, "keeps ASCII as it is"),
    ({"encoding": "raw_unicode_escape"}, "keeps ASCII as it is"),  # "\\u000a" is a line break in it: lines undercount
    ({"encoding": "utf-7"}, "keeps ASCII as it is"),
    ({"encoding": 8}, "fileFormatSettings.encoding must be a name"),
    ({"delimiter": ",,"}, "fileFormatSettings.delimiter ',,' is not one character"),
    ({"delimiter": '"'}, "is not one character (other than a quote or a line break)"),
    ({"delimiter": ["x"]}, "fileFormatSettings.delimiter"),
    ({"columnHeaders": "maybe"}, "columnHeaders must be true or false"),
])
def test_unreadable_file_format_settings_make_only_that_entity_unusable(tmp_path: Path, settings, words) -> None:
    good_export(tmp_path)
    entity, files = bad_entity(settings=settings)
    model = model_with(tmp_path, "CI_bad/Segs/", entity, files)

    newest = newest_snapshots(FolderSource(tmp_path))

    assert sorted(newest) == ["fine", "good"]
    assert newest.problems["bad"].startswith(f"{model}: entity 'Bad': ") and words in newest.problems["bad"]


@pytest.mark.parametrize("location", [
    "https://evil.blob.core.windows.net/loot/secrets.csv",  # another account and container, outside this export
    "http://169.254.169.254/metadata/Bad_1.csv",
    "../../CI_good/Segs/Good/2026/11/28/1700/Good_1.csv",  # a relative path climbing out of the export
    "https://contoso.blob.core.windows.net/segments/CI_bad/Segs/Bad/2026/11/28/1700/../../../../../../etc/passwd",
    "CI_bad/Segs/Bad/2026/11/28/1700/..%2F..%2F..%2F..%2F..%2FGood_1.csv",
    "Bad/2026/11/28/1700/sub\\..\\Bad_1.csv",
    "http://[::1/Bad_1.csv",  # not even a URL
])
def test_partitions_pointing_outside_the_export_make_only_that_entity_unusable(tmp_path: Path, location: str) -> None:
    good_export(tmp_path)
    entity, files = bad_entity(locations=[location])
    model = model_with(tmp_path, "CI_bad/Segs/", entity, files)

    newest = newest_snapshots(FolderSource(tmp_path))

    assert sorted(newest) == ["fine", "good"]
    assert newest.problems["bad"].startswith(f"{model}: entity 'Bad': partition location ")


def test_a_partition_in_another_segments_folder_cannot_stand_in_for_that_segment(tmp_path: Path) -> None:
    good_export(tmp_path)  # Good at 17:00
    hijack = "CI_bad/Segs/Good/2026/11/28/1800/Good_1.csv"  # newer, in another export
    entity, files = bad_entity(locations=[hijack])
    model_with(tmp_path, "CI_bad/Segs/", entity, {**files, hijack: b"attacker@evil.example,Eve,Mallory\r\n"})

    newest = newest_snapshots(FolderSource(tmp_path))

    assert newest["good"].folder == f"CI_good/Segs/Good/{STAMP}"
    assert "is not in the entity's own folder CI_bad/Segs/Bad/" in newest.problems["bad"]


def test_a_url_naming_another_account_is_read_only_as_a_blob_of_this_container(tmp_path: Path) -> None:
    """The account and container in a location are never contacted: only the path inside the export counts."""
    entity, files = bad_entity("Elsewhere", export="CI/Segs/",
                               locations=[f"https://other.dfs.core.windows.net/other/CI/Segs/Elsewhere/{STAMP}Elsewhere_1.csv"])
    model_with(tmp_path, "CI/Segs/", entity, files)

    snapshot = newest_snapshot(FolderSource(tmp_path), "Elsewhere")

    assert snapshot.partitions == (f"CI/Segs/Elsewhere/{STAMP}Elsewhere_1.csv",)


def test_a_partition_model_json_lists_but_the_container_lacks_leaves_the_segment_waiting_and_says_for_what(tmp_path: Path) -> None:
    good_export(tmp_path)
    present, missing = (f"https://a.blob.core.windows.net/c/CI_bad/Segs/Waiting/{STAMP}Waiting_{n}.csv" for n in (1, 2))
    entity, files = bad_entity("Waiting", locations=[present, missing])
    model_with(tmp_path, "CI_bad/Segs/", entity, {f"CI_bad/Segs/Waiting/{STAMP}Waiting_1.csv": b"a@contoso.com,A,B\r\n"})

    newest = newest_snapshots(FolderSource(tmp_path))

    assert "waiting" not in newest and "waiting" not in newest.problems
    assert f"1 are not in the container (first: CI_bad/Segs/Waiting/{STAMP}Waiting_2.csv)" in newest.waiting["waiting"]


@pytest.mark.parametrize("body", [
    b"", b"null", b"[]", b'"entities"', b'{"entities": {}}', b'{"entities": [1, null, "x", []]}',
    b'{"entities": [{"name": "Bad", "attributes": 5}]}',
    b'{"entities": [{"name": "Bad", "attributes": [{"nom": "Email"}]}]}',
    b'{"entities": [{"name": "Bad", "partitions": [{"location": 5}]}]}',
    b'{"entities": [{"name": "Bad", "partitions": [{"location": "x", "fileFormatSettings": []}]}]}',
    b'{"entities": [{"name": "Bad", "partitions": "CI_bad/Segs/Bad/2026/11/28/1700/Bad_1.csv"}]}',
    b'{"entities": [{"name": ["Bad"]}, {"name": "../Bad"}, {"name": "\\ud800"}, {"name": ""}]}',
    b'{"entities": [' + b"1" * 5000 + b"]}",  # an integer too long for int()
    b"\xff\xfe\x00\x00garbage",
    gzip.compress(b'{"entities": []}', mtime=0),  # no timestamp: every xdist worker collects the same test id
])
def test_model_json_of_any_shape_never_stops_the_listing(tmp_path: Path, body: bytes) -> None:
    good_export(tmp_path)
    folder_writer(tmp_path)(f"CI_bad/Segs/Bad/{STAMP}Bad_1.csv", b"a@contoso.com,A,B\r\n")
    folder_writer(tmp_path)("CI_bad/Segs/model.json", body)
    source = FolderSource(tmp_path)

    newest = newest_snapshots(source)

    assert sorted(newest) == ["fine", "good"]
    assert snapshots_for_blob(source, "CI_bad/Segs/model.json") == []


def test_the_limits_are_settings_with_defaults_checked_at_start_up() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    settings = load_settings(base)
    assert (settings.segment_max_line_bytes, settings.segment_max_fields, settings.model_json_max_bytes,
            settings.segment_max_json_depth) == (1 << 20, 1000, 16 << 20, 64)
    assert snapshots_module.ReadLimits.from_settings(settings) == snapshots_module.ReadLimits()
    custom = load_settings({**base, "SEGMENT_MAX_LINE_BYTES": "65,536", "SEGMENT_MAX_FIELDS": "200",
                            "MODEL_JSON_MAX_BYTES": "1048576", "SEGMENT_MAX_JSON_DEPTH": "32"})
    assert snapshots_module.ReadLimits.from_settings(custom) == snapshots_module.ReadLimits(65536, 200, 1 << 20, 32)
    with pytest.raises(ConfigError) as refused:
        load_settings({**base, "SEGMENT_MAX_LINE_BYTES": "10", "SEGMENT_MAX_FIELDS": "many", "MODEL_JSON_MAX_BYTES": "0",
                       "SEGMENT_MAX_JSON_DEPTH": "100000"})
    for name in ("SEGMENT_MAX_LINE_BYTES", "SEGMENT_MAX_FIELDS", "MODEL_JSON_MAX_BYTES", "SEGMENT_MAX_JSON_DEPTH"):
        assert name in str(refused.value)


# --- partitions: a bad row is one invalid row naming its line and what to fix; the rows around it go through ------


def test_a_10_mb_line_is_one_invalid_row_skipped_without_holding_it(tmp_path: Path) -> None:
    data = HEADER + row(1) + b"long@contoso.com," + b"x" * (10 * MB) + b",Last\r\n" + row(3)
    source, snapshot = snapshot_of(tmp_path, {"p.csv": data})
    rows: list = []

    peak = peak_bytes(lambda: rows.extend(read_rows(source, snapshot)))

    assert [(r.row, r.values is None) for r in rows] == [(1, False), (2, True), (3, False)]
    assert "longer than SEGMENT_MAX_LINE_BYTES (1,048,576 bytes) (line 3)" in rows[1].error
    assert rows[2].values["Email"] == "user3@contoso.com"
    assert peak < 6 * MB, f"{peak:,} bytes held at once for a 10 MB line"


def test_a_10_mb_header_makes_the_snapshot_refused_naming_the_file(tmp_path: Path) -> None:
    source, snapshot = snapshot_of(tmp_path, {"p.csv": b"Email," + b"x" * (10 * MB) + b"\r\n" + row(1)})

    with pytest.raises(snapshots_module.SnapshotProblem, match=r"^p\.csv: the header row is longer than SEGMENT_MAX_LINE_BYTES"):
        snapshot_columns(source, snapshot)
    assert "longer than" in next(read_rows(source, snapshot)).error


def test_line_limit_follows_the_setting_and_a_row_spanning_lines_is_held_to_it_too(tmp_path: Path) -> None:
    limits = snapshots_module.ReadLimits(line_bytes=1024)
    body = HEADER + row(1) + b'a@contoso.com,"' + b"y" * 2000 + b'",x\r\n' + b'b@contoso.com,"open\r\n' + b"".join(row(n) for n in range(4, 60))
    rows = rows_of(tmp_path, body, limits=limits)

    assert rows[1][2].startswith("is longer than SEGMENT_MAX_LINE_BYTES (1,024 bytes) (line 3)")
    assert "quote" in rows[2][2] and "line 4" in rows[2][2]  # the open quote swallowed rows until the limit
    assert [r[1]["Email"] for r in rows[3:]] == [f"user{n}@contoso.com" for n in range(4, 60)]  # and they are read again
    assert [r[0] for r in rows] == list(range(1, 60))


def test_100000_fields_in_one_row_make_that_row_invalid(tmp_path: Path) -> None:
    wide = b"wide@contoso.com,Wide,Row" + b"," * 99_997 + b"\r\n"  # 100,000 fields, the extra ones empty
    rows = rows_of(tmp_path, HEADER + row(1) + wide + row(3))

    assert [(r[0], r[1] is None) for r in rows] == [(1, False), (2, True), (3, False)]
    assert rows[1][2].startswith("has 100,000 fields, more than SEGMENT_MAX_FIELDS (1,000) (line 3")


def test_a_header_of_100000_columns_is_refused_naming_the_file(tmp_path: Path) -> None:
    header = b",".join(b"c%d" % n for n in range(100_000)) + b"\r\n"
    source, snapshot = snapshot_of(tmp_path, {"wide.csv": header + row(1)})

    with pytest.raises(snapshots_module.SnapshotProblem, match=r"^wide\.csv: the header row has 100,000 columns, more than SEGMENT_MAX_FIELDS"):
        snapshot_columns(source, snapshot)
    assert "100,000 columns" in next(read_rows(source, snapshot)).error


def test_an_unclosed_quote_at_row_3_makes_row_3_invalid_and_every_later_row_is_read(tmp_path: Path) -> None:
    body = HEADER + row(1) + row(2) + b'open@contoso.com,"Never closed,Last\r\n' + b"".join(row(n) for n in range(4, 2001))

    rows = rows_of(tmp_path, body)

    assert [r[0] for r in rows] == list(range(1, 2001))
    assert rows[2][1] is None and "is not valid CSV" in rows[2][2] and "(line 4;" in rows[2][2]
    assert [r[1]["Email"] for r in rows if r[0] != 3] == [f"user{n}@contoso.com" for n in range(1, 2001) if n != 3]


def test_a_broken_quote_in_a_headerless_partition_is_one_row_too(tmp_path: Path) -> None:
    body = row(1) + b'x@contoso.com,"Ann"Lee,Z\r\n' + row(3) + b'y@contoso.com,"open\r\n' + row(5)

    rows = rows_of(tmp_path, body, columns=("Email", "FirstName", "LastName"))

    assert [(r[0], r[1] is None) for r in rows] == [(1, False), (2, True), (3, False), (4, True), (5, False)]


def test_nul_bytes_make_their_row_invalid(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, HEADER + b"nul@contoso.com,A\x00B,C\r\n" + row(2) + b"\x00\x00\x00\r\n")

    assert rows[0][1] is None and rows[0][2].startswith("holds a NUL byte (line 2)")
    assert rows[1][1]["Email"] == "user2@contoso.com"
    assert rows[2][1] is None and "NUL" in rows[2][2]


def test_invalid_utf8_makes_only_its_row_invalid(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, HEADER + b"bad@contoso.com,Ren\xe9e,\xff\r\n" + row(2))

    assert rows[0][1] is None and rows[0][2] == "has bytes that are not valid UTF-8 (line 2; save the file as UTF-8)"
    assert rows[1][1]["FirstName"] == "First2"


def test_a_gzip_partition_is_one_invalid_row_saying_so_and_a_gzip_header_is_refused(tmp_path: Path) -> None:
    packed = gzip.compress(HEADER + b"".join(row(n) for n in range(1, 500)))
    source, snapshot = snapshot_of(tmp_path, {"p.csv": packed})

    assert [(r.row, r.values, r.error.split(":")[0]) for r in read_rows(source, snapshot)] == [
        (1, None, "is gzip-compressed data, not text (line 1)")]
    with pytest.raises(snapshots_module.SnapshotProblem, match=r"^p\.csv: the header row is gzip-compressed"):
        snapshot_columns(source, snapshot)
    headerless = rows_of(tmp_path / "cdm", packed, columns=("Email", "FirstName", "LastName"))
    assert [(r[0], r[1]) for r in headerless] == [(1, None)] and "gzip" in headerless[0][2]


def test_a_jsonl_row_nested_100000_deep_is_one_invalid_row(tmp_path: Path) -> None:
    lines = [b'{"Email": "a@contoso.com"}', b'{"Email": "deep@contoso.com", "x": ' + deep_json(100_000) + b"}",
             b'{"Email": "b@contoso.com", "n": ' + b"9" * 5000 + b"}", b'{"Email": "c@contoso.com"}']

    rows = rows_of(tmp_path, b"\n".join(lines) + b"\n", name="p.jsonl", format="jsonl")

    assert [(r[0], r[1] and r[1]["Email"]) for r in rows] == [(1, "a@contoso.com"), (2, None), (3, None), (4, "c@contoso.com")]
    assert rows[1][2].startswith("nests JSON more than 64 levels deep (line 2)")
    assert "number too long" in rows[2][2]


def test_jsonl_long_lines_many_fields_nul_and_gzip_are_invalid_rows(tmp_path: Path) -> None:
    wide = json.dumps({f"k{n}": n for n in range(5000)}).encode()  # 100,000 fields would be over the line limit too
    lines = [b'{"Email": "a@contoso.com", "x": "' + b"x" * (10 * MB) + b'"}', wide, b'{"Email": "nul\\u0000@contoso.com"}',
             b'{"Email": "b@contoso.com"}']
    source, snapshot = snapshot_of(tmp_path, {"p.jsonl": b"\n".join(lines) + b"\n"}, format="jsonl")
    rows: list = []

    peak = peak_bytes(lambda: rows.extend(read_rows(source, snapshot)))

    assert [r.row for r in rows] == [1, 2, 3, 4] and rows[3].values == {"Email": "b@contoso.com"}
    assert "longer than SEGMENT_MAX_LINE_BYTES" in rows[0].error and "more than SEGMENT_MAX_FIELDS" in rows[1].error
    assert "NUL" in rows[2].error
    assert peak < 6 * MB
    packed = rows_of(tmp_path / "gz", gzip.compress(b"\n".join(lines[3:])), name="p.jsonl", format="jsonl")
    assert [(r[0], r[1]) for r in packed] == [(1, None)] and "gzip" in packed[0][2]


def test_line_endings_still_read_as_before(tmp_path: Path) -> None:
    assert rows_of(tmp_path / "cr", b"Email,Name\ra@contoso.com,A\rb@contoso.com,B\r") == [
        (1, {"Email": "a@contoso.com", "Name": "A"}, None), (2, {"Email": "b@contoso.com", "Name": "B"}, None)]
    assert rows_of(tmp_path / "lf", b'Email,Name\na@contoso.com,"A\r\nB"\n') == [(1, {"Email": "a@contoso.com", "Name": "A\r\nB"}, None)]


def test_a_snapshot_built_with_an_unknown_encoding_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(snapshots_module.SnapshotProblem, match=r"^p\.csv: encoding 'klingon-8' is not known"):
        rows_of(tmp_path, b"a,b\n", encoding="klingon-8")


def test_other_ascii_compatible_encodings_still_read(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, "a@contoso.com,Renée\n".encode("cp1252"), columns=("Email", "Name"), encoding="windows-1252")
    assert rows == [(1, {"Email": "a@contoso.com", "Name": "Renée"}, None)]
    bad = rows_of(tmp_path / "sjis", b"a@contoso.com,\x81\n", columns=("Email", "Name"), encoding="shift_jis")
    assert bad[0][1] is None and "not valid SHIFT_JIS" in bad[0][2]


# --- the export service: the other segments and destinations go on ---------------------------------------------------


class MemoryDestinations:
    def __init__(self, destinations: list[Destination]) -> None:
        self.items = {d.id: d for d in destinations}

    def get(self, destination_id: str) -> Destination | None:
        return self.items.get(destination_id)

    def list(self) -> list[Destination]:
        return list(self.items.values())

    def exported(self, destination_id: str) -> dict[str, str]:
        return {}

    def claim(self, destination_id, run_id, covers, is_finished, trigger="http", only_if_newer=False) -> Claim:
        return Claim("claimed")

    def release(self, destination_id: str, run_id: str, restore=None) -> str | None:
        return None

    def active_run(self, destination_id: str) -> str | None:
        return None


class MemoryRuns:
    def __init__(self) -> None:
        self.created: list = []

    def create(self, run) -> None:
        self.created.append(run)


class MemoryQueue:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, message: dict, delay_seconds: int = 0) -> None:
        self.sent.append(message)


class Mailchimp:
    """Answers the audience check; for destinations in `failing`, fails in a way nobody planned for."""

    def __init__(self, failing: set[str] = frozenset()) -> None:
        self.failing = failing

    def call(self, destination: Destination, action):
        if destination.id in self.failing:
            raise RuntimeError("unplanned failure mentioning " + "someone" + "@contoso.com")
        return action(self)

    def get_audience(self, audience_id: str) -> object:
        return object()


def destination(*segments: str, ident: str | None = None, email: str = "Email") -> Destination:
    made = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5",
                            "mapping": {"email": email, "mergeFields": {}}, "segments": list(segments)}, "admin").destination
    return dataclasses.replace(made, id=ident or "-".join(segments).lower())


def service(root: Path, destinations: list[Destination], failing: set[str] = frozenset()) -> ExportService:
    return ExportService(settings=load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}),
                         destinations=MemoryDestinations(destinations), runs=MemoryRuns(), segments=FolderSource(root),
                         work=None, plan_queue=MemoryQueue(), chunk_queue=MemoryQueue(), connections=Mailchimp(failing))


def hostile_container(root: Path) -> None:
    """Good and Fine (CDM), Plain (plain CSV), beside a hostile file of each kind, each with its own segment."""
    good_export(root)
    write_plain_export(root, {"Plain": 15}, taken_at=T)
    write = folder_writer(root)
    write(f"CI_deep/Segs/Deep/{STAMP}Deep_1.csv", b"a@contoso.com,A,B\r\n")
    write("CI_deep/Segs/model.json", b'{"entities": ' + deep_json(100_000) + b"}")
    for name, settings in (("Klingon", {"encoding": "klingon-8"}), ("Doubled", {"delimiter": ",,"})):
        entity, files = bad_entity(name, export=f"CI_{name}/Segs/", settings=settings)
        model_with(root, f"CI_{name}/Segs/", entity, files)
    entity, files = bad_entity("Outside", export="CI_out/Segs/", locations=["https://evil.blob.core.windows.net/loot/x.csv"])
    model_with(root, "CI_out/Segs/", entity, files)
    write(f"Gz/{STAMP}part-00001.csv", gzip.compress(HEADER + row(1)))
    write(f"Gz/{STAMP}_SUCCESS", b"")
    write(f"Headless/{STAMP}part-00001.csv", b"ann@contoso.com,Ann,Lee\r\nbob@contoso.com,Bob,Ray\r\n")
    write(f"Headless/{STAMP}_SUCCESS", b"")


BROKEN = {"Deep": "CI_deep/Segs/model.json", "Klingon": "CI_Klingon/Segs/model.json", "Doubled": "CI_Doubled/Segs/model.json",
          "Outside": "CI_out/Segs/model.json", "Gz": f"Gz/{STAMP}part-00001.csv"}


def test_the_timer_goes_on_to_every_destination_and_segment_past_broken_files(tmp_path: Path, caplog) -> None:
    hostile_container(tmp_path)
    only_broken = destination(*BROKEN, ident="only-broken")
    mixed = destination("Good", *BROKEN, "Plain", ident="mixed")
    failing = destination("Fine", ident="failing")
    fine = destination("Good", "Fine", ident="fine")
    exports = service(tmp_path, [only_broken, mixed, failing, fine], failing={"failing"})

    with caplog.at_level(logging.INFO):
        runs = exports.on_schedule()

    assert {r.destination_id: [p.segment for p in r.segments] for r in runs} == {"mixed": ["Good", "Plain"], "fine": ["Good", "Fine"]}
    notice = runs[0].details["notice"]
    assert all(f"segment {name!r}" in notice and file in notice for name, file in BROKEN.items()), notice
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("failing" in line and "RuntimeError" in line for line in warnings)
    assert "someone@contoso.com" not in caplog.text
    assert all(any(file in line for line in warnings) for file in BROKEN.values())


def test_each_tick_and_each_destination_it_follows_is_logged_with_the_fields_the_alert_reads(tmp_path: Path,
                                                                                             caplog) -> None:
    """The alerts on scheduled runs know a destination is on a schedule, and that the schedule works at all, only from
    these lines (a log query looks back 48 hours at most): each destination followed, run or not, then the tick, only
    once it got through them all."""
    good_export(tmp_path)
    fine, failing = destination("Good", ident="fine"), destination("Fine", ident="failing")
    idle = destination("NoSnapshotYet", ident="idle")
    off = dataclasses.replace(destination("Good", ident="off"), schedule_enabled=False)
    unconsented = dataclasses.replace(destination("Good", ident="unconsented"), consent_accepted=False)
    draft = dataclasses.replace(destination("Good", ident="draft"), segments=[])
    assert draft.is_draft
    exports = service(tmp_path, [fine, failing, idle, off, unconsented, draft], failing={"failing"})

    def tick() -> list[tuple[str, str]]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            exports.on_schedule()
        [ticked] = [r for r in caplog.records if hasattr(r, "scheduleTick")]
        assert ticked.scheduleTick == 3 and ticked.trigger == "schedule"
        followed = [r for r in caplog.records if hasattr(r, "followed")]
        assert all(r.trigger == "schedule" and caplog.records.index(r) < caplog.records.index(ticked) for r in followed)
        return sorted((r.destinationId, r.followed) for r in followed)

    assert tick() == [("failing", "failed"), ("fine", "run started"), ("idle", "no run")]

    def revoked(destination: Destination, action: Any) -> Any:
        raise MailchimpAuthError("Mailchimp refused the API key (401)", status=401)

    exports.connections.call = revoked
    assert ("failing", "refused") in tick()
    exports.connections = Mailchimp()
    assert ("failing", "run started") in tick()

    def unlistable() -> Any:
        raise PermissionError("the segments container cannot be listed")

    exports.segments.list_names = unlistable  # the tick fails before any destination: no tick line
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(PermissionError):
        exports.on_schedule()
    assert not [r for r in caplog.records if hasattr(r, "scheduleTick") or hasattr(r, "followed")]


def test_arrival_of_a_hostile_blob_starts_nothing_and_a_good_one_still_starts_its_exports(tmp_path: Path) -> None:
    hostile_container(tmp_path)
    everything = destination("Good", "Fine", "Plain", *BROKEN, ident="everything")
    exports = service(tmp_path, [everything])

    for blob in [*BROKEN.values(), f"CI_deep/Segs/Deep/{STAMP}Deep_1.csv", f"Gz/{STAMP}_SUCCESS"]:
        started = exports.on_blob_created(blob)
        assert all(set(p.segment for p in r.segments) <= {"Good", "Fine", "Plain", "Gz"} for r in started)
    runs = exports.on_blob_created(GOOD_MODEL)
    assert [[p.segment for p in r.segments] for r in runs] == [["Good", "Fine", "Plain"]]


@pytest.mark.parametrize("segment", sorted(BROKEN))
def test_an_export_of_a_broken_segment_is_refused_naming_the_file(tmp_path: Path, segment: str) -> None:
    hostile_container(tmp_path)
    exports = service(tmp_path, [destination(segment, "Good", ident="d")])

    with pytest.raises(Refused) as refused:
        exports.start("d", "http", [segment])

    assert refused.value.status == 422 and BROKEN[segment] in refused.value.message
    json.dumps(refused.value.message).encode("utf-8")  # answerable as JSON: no undecodable bytes in it
    assert [p.segment for p in exports.start("d", "http", ["Good"]).segments] == ["Good"]


def test_a_missing_partition_is_a_409_saying_what_the_snapshot_waits_for(tmp_path: Path) -> None:
    entity, files = bad_entity("Waiting", locations=[f"Waiting/{STAMP}Waiting_{n}.csv" for n in (1, 2)])
    model_with(tmp_path, "CI_bad/Segs/", entity, {f"CI_bad/Segs/Waiting/{STAMP}Waiting_1.csv": b"a@contoso.com,A,B\r\n"})
    exports = service(tmp_path, [destination("Waiting", ident="d")])

    with pytest.raises(Refused) as refused:
        exports.start("d", "http")

    assert refused.value.status == 409 and "no complete snapshot" in refused.value.message
    assert f"of which 1 are not in the container (first: CI_bad/Segs/Waiting/{STAMP}Waiting_2.csv)" in refused.value.message


def test_logs_about_a_headerless_csv_carry_column_counts_never_its_emails(tmp_path: Path, caplog) -> None:
    hostile_container(tmp_path)  # Headless: its first row (two emails' people) is taken for the header
    exports = service(tmp_path, [destination("Headless", "Good", ident="d")])

    with caplog.at_level(logging.DEBUG):
        [run] = exports.on_schedule()

    assert [p.segment for p in run.segments] == ["Good"]
    assert "ann@contoso.com" not in caplog.text and "ann@contoso.com" not in run.details["notice"]
    assert "['Email'] missing or ambiguous among its 3 columns" in caplog.text
    with pytest.raises(Refused) as refused:  # the admin's own answer may show them, to fix the mapping
        exports.start("d", "http", ["Headless"])
    assert refused.value.status == 422 and "ann@contoso.com" in refused.value.message


# --- a model.json at the container root reaches only what it names; a folder dated ahead of now is ignored -----------


@pytest.mark.parametrize("body, named", [(b"[[[", False), (b'{"entities": []}', False),
                                         (json.dumps({"entities": [{"name": "Listed", "partitions": "x"}]}).encode(), True)])
def test_a_model_json_at_the_container_root_leaves_the_root_plain_segments_exportable(tmp_path: Path, body: bytes,
                                                                                          named: bool) -> None:
    write_plain_export(tmp_path, {"Plain": 15, "Other": 5}, taken_at=T)
    write = folder_writer(tmp_path)
    write("model.json", body)
    write(f"Listed/{STAMP}Listed_1.csv", b"a@contoso.com,A,B\r\n")  # its own partition (no _SUCCESS)
    source = FolderSource(tmp_path)

    newest = newest_snapshots(source)

    assert {key: (s.folder, s.columns, len(s.partitions)) for key, s in newest.items()} == {
        "plain": (f"Plain/{STAMP}", None, 1), "other": (f"Other/{STAMP}", None, 1)}
    assert set(newest.problems) == ({"listed"} if named or body == b"[[[" else set())
    assert all("model.json" in problem for problem in newest.problems.values())
    assert [s.segment for s in snapshots_for_blob(source, f"Plain/{STAMP}_SUCCESS")] == ["Plain"]
    assert snapshots_for_blob(source, f"Plain/{STAMP}part-00001.csv") == []  # a plain folder: only _SUCCESS completes it
    exports = service(tmp_path, [destination("Plain", "Other", ident="d")])
    assert [p.segment for p in exports.start("d", "http").segments] == ["Plain", "Other"]
    [run] = exports.on_blob_created(f"Other/{STAMP}_SUCCESS")
    assert [p.segment for p in run.segments] == ["Plain", "Other"] and "notice" not in run.details
    [run] = exports.on_schedule()
    assert [p.segment for p in run.segments] == ["Plain", "Other"]


def test_an_entity_of_a_root_model_json_is_still_read_as_cdm_beside_root_plain_segments(tmp_path: Path) -> None:
    write_plain_export(tmp_path, {"Plain": 15}, taken_at=T)
    entity, files = bad_entity("Cdm", export="")  # a well-formed entity, model.json at the container root
    model_with(tmp_path, "", entity, files)

    newest = newest_snapshots(FolderSource(tmp_path))

    assert (newest["cdm"].columns is not None, newest["plain"].columns) == (True, None) and newest.problems == {}


FUTURE = "2099/12/31/2359/"


def test_a_snapshot_folder_dated_ahead_of_now_is_ignored_and_said_naming_the_folder(tmp_path: Path) -> None:
    write_plain_export(tmp_path, {"Plain": 15, "Ahead": 3}, taken_at=T)
    write = folder_writer(tmp_path)
    write(f"Plain/{FUTURE}_SUCCESS", b"")  # an empty "newest" snapshot, forever
    write(f"Only/{FUTURE}part-00001.csv", HEADER + row(1))
    write(f"Only/{FUTURE}_SUCCESS", b"")
    (tmp_path / f"Ahead/{STAMP}_SUCCESS").unlink()  # Ahead's only snapshot is the one written ahead
    write(f"Ahead/{FUTURE}_SUCCESS", b"")
    write(f"CI_x/Segs/Soon/{FUTURE}Soon_1.csv", b"a@contoso.com,A,B\r\n")
    entity, _ = bad_entity("Soon", export="CI_x/Segs/", locations=[f"Soon/{FUTURE}Soon_1.csv"])
    model_with(tmp_path, "CI_x/Segs/", entity)
    source = FolderSource(tmp_path)

    newest = newest_snapshots(source)

    assert newest["plain"].folder == f"Plain/{STAMP}" and len(newest["plain"].partitions) == 1  # the real newest
    assert set(newest) == {"plain"}
    for key, file in (("only", f"Only/{FUTURE}"), ("ahead", f"Ahead/{FUTURE}"), ("soon", "CI_x/Segs/model.json")):
        assert file in newest.problems[key] and "ahead of now" in newest.problems[key], newest.problems
    assert f"Soon/{FUTURE}" in newest.problems["soon"]
    assert snapshots_for_blob(source, f"Only/{FUTURE}_SUCCESS") == []
    exports = service(tmp_path, [destination("Plain", "Only", "Ahead", "Soon", ident="d")])
    for segment, file in (("Only", f"Only/{FUTURE}"), ("Soon", "CI_x/Segs/model.json")):
        with pytest.raises(Refused) as refused:
            exports.start("d", "http", [segment])
        assert refused.value.status == 422 and file in refused.value.message and "ahead of now" in refused.value.message
    assert [(p.segment, p.snapshot) for p in exports.start("d", "http", ["Plain"]).segments] == [("Plain", "2026-11-28T17:00Z")]
    catalog = {entry.name.casefold(): entry for entry in SegmentCatalog(source).segments()}
    assert catalog["plain"].usable and catalog["plain"].snapshot == "2026-11-28T17:00Z"
    assert not catalog["only"].usable and f"Only/{FUTURE}" in catalog["only"].problem


def test_a_folder_a_few_minutes_ahead_is_clock_skew_and_counts(tmp_path: Path) -> None:
    soon = datetime.now(timezone.utc) + timedelta(minutes=20)
    write_plain_export(tmp_path, {"Plain": 5}, taken_at=soon)

    assert newest_snapshot(FolderSource(tmp_path), "Plain").taken_at == soon.replace(second=0, microsecond=0)


# --- planning: a segment broken after the run started is left out, the others are exported ---------------------------


def break_duplicated_header(root: Path) -> str:
    partition = f"B/{STAMP}part-0.csv"
    (root / partition).write_text("Email,Email\r\nb0@x.com,b0@x.com\r\n")
    return partition


def break_stray_jsonl(root: Path) -> str:
    folder_writer(root)(f"B/{STAMP}stray.jsonl", b'{"Email": "z@x.com"}\n')
    return f"B/{STAMP}"


def break_cdm_partition(root: Path) -> str:
    (root / f"CI_b/Segs/B/{STAMP}B_1.csv").unlink()
    return f"CI_b/Segs/B/{STAMP}B_1.csv"


def break_partition_mid_read(root: Path) -> str:
    return f"B/{STAMP}part-0.csv"  # see RefusingSource: storage refuses it once its rows are read


class RefusingSource(FolderSource):
    """Serves B's partition for its header, then refuses it, as storage does for a blob archived meanwhile."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.refuse = False

    def open_binary(self, name: str) -> BinaryIO:
        if self.refuse and name.startswith("B/"):
            raise snapshots_module.SnapshotProblem(name, "could not be read (BlobArchived); it is in the Archive tier")
        if name.startswith("B/") and not name.endswith("_SUCCESS"):
            self.refuse = True  # the header check has read it: the rows will not be served
        return super().open_binary(name)


@pytest.mark.parametrize("breaking, words", [
    (break_duplicated_header, "gives columns 1 and 2 the same name"),
    (break_stray_jsonl, "mixes .csv and .jsonl files"),
    (break_cdm_partition, "of which 1 are not in the container"),
    (break_partition_mid_read, "BlobArchived"),
])
def test_a_segment_broken_after_the_export_started_is_left_out_and_the_others_are_exported(tmp_path: Path, breaking,
                                                                                           words: str) -> None:
    from tests.unit.export_fakes import drain, make, write_snapshot

    write_snapshot(tmp_path, "A", STAMP.rstrip("/"), [f"a{i}@x.com" for i in range(3)])
    if breaking is break_cdm_partition:
        entity, files = bad_entity("B", export="CI_b/Segs/", locations=[f"B/{STAMP}B_1.csv"])
        entity["attributes"] = [{"name": "Email"}, {"name": "FirstName"}]
        model_with(tmp_path, "CI_b/Segs/", entity, {f"CI_b/Segs/B/{STAMP}B_1.csv": b"b0@x.com,B\r\n"})
    else:
        write_snapshot(tmp_path, "B", STAMP.rstrip("/"), ["b0@x.com", "b1@x.com"])
    service, client = make(tmp_path, ["A", "B"])
    if breaking is break_partition_mid_read:
        service.segments = RefusingSource(tmp_path)
    run = service.start("d1", "http")
    file = breaking(tmp_path)  # before the plan message is handled

    drain(service)  # no exception reaches the queue worker

    result = service.runs.get(run.id)
    assert sorted(client.aud) == ["a0@x.com", "a1@x.com", "a2@x.com"]
    assert result.status == "completed_with_errors", result.message
    assert "segment 'B'" in result.message and file in result.message and words in result.message, result.message
    assert "export them again" in result.message
    counts = {part.segment: part.counts for part in result.segments}
    assert (counts["A"]["read"], counts["A"]["created"], counts["B"]["read"], counts["B"]["created"]) == (3, 3, 0, 0)
    assert "B" not in client.tags  # B's tag is neither created nor kept in step by this run


def test_a_run_whose_every_segment_broke_after_it_started_fails_at_once_saying_why(tmp_path: Path) -> None:
    from tests.unit.export_fakes import drain, make, write_snapshot

    write_snapshot(tmp_path, "B", STAMP.rstrip("/"), ["b0@x.com"])
    service, client = make(tmp_path, ["B"])
    run = service.start("d1", "http")
    break_duplicated_header(tmp_path)

    drain(service)

    result = service.runs.get(run.id)
    assert result.status == "failed" and result.message.startswith("nothing was sent")
    assert f"B/{STAMP}part-0.csv" in result.message and "the same name" in result.message
    assert client.writes == 0 and client.aud == {} and service.destinations.active is None
