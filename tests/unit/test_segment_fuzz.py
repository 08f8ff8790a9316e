"""Fuzzing the segment readers: whatever bytes land in the container, they raise nothing but SnapshotProblem.

Partitions and model.json files are arbitrary bytes, byte soups made of what breaks readers (quotes, line breaks,
NULs, invalid UTF-8, BOMs, compression magic, brackets), and JSON of any shape where model.json expects entities.
The readers (shared/segment_rows.py read_rows and snapshot_columns, shared/snapshots.py listing and model.json
parsing, shared/cdm_types.py) must never raise RecursionError, MemoryError, UnicodeError, csv.Error,
json.JSONDecodeError, KeyError, TypeError or anything else: a bad row is a row with an error, a bad file a
SnapshotProblem whose message starts with the file's name. Small limits make the line, field and depth limits bite.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cdm_types import column_types
from shared.segment_rows import read_rows, snapshot_columns
from shared.snapshots import ReadLimits, Snapshot, SnapshotProblem, json_too_deep, list_segments, newest_snapshots, snapshots_for_blob

T = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
STAMP = "2026/11/28/1700/"
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class MemorySource:
    """A BlobSource over a dict; streams are plain BytesIO (no peek), as a test double might hand out."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def list_names(self, prefix: str = "") -> Iterator[str]:
        return iter([name for name in self.blobs if name.startswith(prefix)])

    def read_bytes(self, name: str) -> bytes:
        return self.blobs[name]

    def open_binary(self, name: str) -> BinaryIO:
        return io.BytesIO(self.blobs[name])


PIECES = [b",", b";", b'"', b'""', b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xe9", b"\xc3\xa9", b"\xed\xa0\x80",
          b"\xef\xbb\xbf", b"\x1f\x8b", b"PK\x03\x04", b"a@contoso.com", b"Email", b"x", b" ", b"\t", b"{", b"}", b"[", b"]",
          b'{"Email": "a@contoso.com"}', b'"k":', b"\\", b"\\u0000", b"\\ud800", b"1e999", b"9" * 40, b"null",
          b"9" * 4400, b"[" * 1500, b'{"entities": [{"name": "Seg", "attributes": ' + b"[" * 1200]  # too long an int, too deep
soup = st.lists(st.sampled_from(PIECES), max_size=120).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=600), soup)
limits = st.one_of(st.just(ReadLimits()), st.builds(ReadLimits, line_bytes=st.integers(4, 300), fields=st.integers(1, 12),
                                                   model_bytes=st.integers(16, 4000), json_depth=st.integers(1, 8)))
encodings = st.sampled_from(["utf-8", "UTF-8", "utf-8-sig", "latin-1", "cp1252", "shift_jis", "gb18030", "iso2022_jp",
                             "utf-16", "klingon-8", "rot13", "undefined"])


def snapshots(partitions: list[bytes], fmt: str, has_header: bool, columns: tuple[str, ...] | None, delimiter: str,
              encoding: str, limit: ReadLimits) -> tuple[MemorySource, Snapshot]:
    names = tuple(f"S/{STAMP}part-{n}.{fmt}" for n in range(len(partitions)))
    snapshot = Snapshot("S", f"S/{STAMP}", T, names, columns, fmt, has_header, delimiter, encoding, limit)
    return MemorySource(dict(zip(names, partitions))), snapshot


def clean_text(text: str) -> bool:
    """What a row value may hold: text that encodes as UTF-8 (no undecodable bytes) and no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@FUZZ
@given(partitions=st.lists(any_bytes, min_size=1, max_size=3), fmt=st.sampled_from(["csv", "jsonl"]), has_header=st.booleans(),
       columns=st.one_of(st.none(), st.lists(st.sampled_from(["Email", "Name", "email", ""]), max_size=4).map(tuple)),
       delimiter=st.sampled_from([",", ";", "\t", "|", "a", " "]), encoding=encodings, limit=limits)
def test_read_rows_of_any_bytes_gives_rows_or_a_snapshot_problem(partitions, fmt, has_header, columns, delimiter, encoding, limit) -> None:
    source, snapshot = snapshots(partitions, fmt, has_header, columns, delimiter, encoding, limit)
    rows = []
    try:
        rows.extend(read_rows(source, snapshot))
    except SnapshotProblem as problem:  # only a Snapshot built by hand with an encoding the listing would refuse
        assert fmt == "csv" and encoding in ("utf-16", "klingon-8", "rot13", "undefined")
        assert str(problem).startswith(tuple(name + ": encoding " for name in snapshot.partitions))
        return
    by_partition: dict[str, list[int]] = {}
    for row in rows:
        by_partition.setdefault(row.partition, []).append(row.row)
        assert (row.values is None) != (row.error is None)
        if row.values is None:
            assert isinstance(row.error, str) and row.error and clean_text(row.error)
        else:
            assert all(isinstance(k, str) and isinstance(v, str) and clean_text(k) and clean_text(v) for k, v in row.values.items())
            assert len(row.values) <= limit.fields
    for numbers in by_partition.values():
        assert numbers == list(range(1, len(numbers) + 1))


@FUZZ
@given(partitions=st.lists(any_bytes, min_size=1, max_size=3), fmt=st.sampled_from(["csv", "jsonl"]), has_header=st.booleans(),
       delimiter=st.sampled_from([",", ";", "|"]), encoding=st.sampled_from(["utf-8", "latin-1", "shift_jis"]), limit=limits)
def test_snapshot_columns_of_any_bytes_are_columns_or_a_problem_naming_the_file(partitions, fmt, has_header, delimiter, encoding, limit) -> None:
    source, snapshot = snapshots(partitions, fmt, has_header, ("Email",), delimiter, encoding, limit)
    try:
        columns = snapshot_columns(source, snapshot)
    except SnapshotProblem as problem:
        assert any(str(problem).startswith(name + ": ") for name in snapshot.partitions) and clean_text(str(problem))
        return
    assert isinstance(columns, tuple) and all(isinstance(c, str) and clean_text(c) for c in columns)
    assert len(columns) <= max(limit.fields, 1)


@FUZZ
@given(lines=st.lists(st.text(alphabet="abc@., \t;", max_size=30), max_size=40), ending=st.sampled_from(["\n", "\r\n", "\r"]),
       limit=limits)
def test_without_quotes_every_line_is_exactly_one_row(lines, ending, limit) -> None:
    """Nothing is lost or merged: each non-blank line comes out as one row, valid or not (here: no quotes at all)."""
    body = ("h1,h2" + ending + ending.join(lines) + (ending if lines else "")).encode()
    source, snapshot = snapshots([body], "csv", True, None, ",", "utf-8", limit)
    rows = list(read_rows(source, snapshot))
    header_unreadable = len("h1,h2" + ending) > limit.line_bytes
    expected = len([line for line in lines if line])
    assert len(rows) == (max(expected, 1) if header_unreadable else expected)


@FUZZ
@given(good=st.integers(0, 5), after=st.integers(0, 30), ending=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_an_unclosed_quote_loses_no_later_row(good, after, ending) -> None:
    body = ending.join([b"Email,Name", *(b"a%d@contoso.com,A" % n for n in range(good)), b'q@contoso.com,"open',
                        *(b"b%d@contoso.com,B" % n for n in range(after))]) + ending
    source, snapshot = snapshots([body], "csv", True, None, ",", "utf-8", ReadLimits())
    rows = list(read_rows(source, snapshot))
    assert [r.values["Email"] for r in rows if r.values] == [f"a{n}@contoso.com" for n in range(good)] + [f"b{n}@contoso.com" for n in range(after)]
    assert [r.row for r in rows if r.values is None] == [good + 1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
plausible = {
    "name": st.one_of(st.sampled_from(["Seg", "seg", "Other", "", "a/b", "\ud800", " Seg"]), json_values),
    "attributes": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"name": st.sampled_from(["Email", "Name", "Email"])}),
                                               json_values), max_size=4), json_values),
    "partitions": st.one_of(st.lists(st.one_of(st.fixed_dictionaries(
        {"location": st.one_of(st.sampled_from([f"Seg/{STAMP}Seg_1.csv", f"https://a.blob.core.windows.net/c/CI/Seg/{STAMP}Seg_1.csv",
                                                f"../Seg/{STAMP}Seg_1.csv", "http://[::1", f"Other/{STAMP}Other_1.csv", "", "/"]), json_values),
         "fileFormatSettings": st.one_of(st.fixed_dictionaries({}, optional={
             "delimiter": st.one_of(st.sampled_from([",", ";", ",,", "", '"', "\n"]), json_values),
             "encoding": st.one_of(st.sampled_from(["UTF-8", "utf-16", "klingon", "latin-1", "x" * 100]), json_values),
             "columnHeaders": st.one_of(st.booleans(), st.sampled_from(["true", "false", "yes"]), json_values)}), json_values)}),
        json_values), max_size=3), json_values),
}
entities = st.fixed_dictionaries({}, optional=plausible)
models = st.one_of(json_values, st.fixed_dictionaries({"entities": st.one_of(st.lists(st.one_of(entities, json_values), max_size=3), json_values)}))


def container(model: bytes) -> MemorySource:
    return MemorySource({
        "CI/model.json": model,
        f"CI/Seg/{STAMP}Seg_1.csv": b"a@contoso.com,Ann\r\nb@contoso.com,\"Bo\r\nb\"\r\n",
        f"CI/Other/{STAMP}Other_1.csv": b"\x1f\x8b\x08",
        f"Plain/{STAMP}part-1.csv": b"Email\r\nc@contoso.com\r\n",
        f"Plain/{STAMP}_SUCCESS": b"",
    })


def read_everything(source: MemorySource, limit: ReadLimits) -> None:
    """Every reader over every snapshot the listing gives: only SnapshotProblem may come out, naming its file."""
    newest = newest_snapshots(source, limit)
    assert newest["plain"].segment == "Plain"  # the plain segment beside the export is always there
    for key, problem in {**newest.problems, **newest.waiting}.items():
        assert isinstance(problem, str) and problem.startswith(("CI/", "Plain/")) and clean_text(problem), (key, problem)
    for snapshots_of_segment in list_segments(source, limit).values():
        for snapshot in snapshots_of_segment:
            assert all(isinstance(r.values, dict) or isinstance(r.error, str) for r in read_rows(source, snapshot))
            try:
                snapshot_columns(source, snapshot)
            except SnapshotProblem as problem:
                assert str(problem).startswith(tuple(name + ": " for name in snapshot.partitions))
    for blob in list(source.blobs):
        snapshots_for_blob(source, blob, limit)
    assert isinstance(column_types(source, ["Seg", "Other"], limit), dict)


@FUZZ
@given(model=any_bytes, limit=limits)
def test_any_bytes_as_model_json_never_stop_the_listing(model, limit) -> None:
    read_everything(container(model), limit)


@FUZZ
@given(model=models, limit=st.one_of(st.just(ReadLimits()), limits))
def test_model_json_of_any_shape_never_stops_the_listing(model, limit) -> None:
    read_everything(container(json.dumps(model).encode("utf-8", "surrogatepass")), limit)


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(0, 200), limit=st.integers(1, 100), opener=st.sampled_from(["[", '{"k": ']),
       value=st.sampled_from(["0", '"[[[[{{{{"', '"\\"[[{"', '" ]]]} "']))
def test_nesting_depth_is_measured_without_parsing(depth, limit, opener, value) -> None:
    """Brackets inside strings do not count; what is not too deep parses."""
    closer = "]" if opener == "[" else "}"
    text = opener * depth + value + closer * depth
    assert json_too_deep(text, limit) == (depth > limit)
    if not json_too_deep(text, limit):
        json.loads(text)
