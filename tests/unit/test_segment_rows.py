"""Streaming rows out of real partition files (FolderSource fakes Blob Storage)."""
from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from datetime import datetime, timezone
import tempfile
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sample_segments import COLUMNS, FolderSource, folder_writer, write_plain_export, write_sample_export
from shared import segment_rows
from shared.segment_rows import SourceRow, read_rows, snapshot_columns
from shared.snapshots import Snapshot, newest_snapshot

T2 = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)


def snapshot_of(tmp_path: Path, files: dict[str, bytes], **options) -> tuple[FolderSource, Snapshot]:
    """A one-segment snapshot over the given partition files (written in the given order)."""
    write = folder_writer(tmp_path)
    for name, data in files.items():
        write(name, data)
    options.setdefault("format", "csv")
    options.setdefault("has_header", options["format"] == "csv" and "columns" not in options)
    options.setdefault("columns", None)
    return FolderSource(tmp_path), Snapshot("S", "", T2, tuple(files), **options)


def rows_of(tmp_path: Path, data: bytes, **options) -> list[tuple]:
    source, snapshot = snapshot_of(tmp_path, {"p.csv": data}, **options)
    return [(r.row, r.values, r.error) for r in read_rows(source, snapshot)]


def test_headerless_cdm_partitions_read_with_model_columns_and_quoted_fields(tmp_path: Path) -> None:
    stats = write_sample_export(tmp_path, {"Seg": 250}, rows_per_partition=100, taken_at=T2)
    source = FolderSource(tmp_path)
    snapshot = newest_snapshot(source, "Seg")

    rows = list(read_rows(source, snapshot))

    assert len(rows) == stats["Seg"].rows == 250
    assert [r.row for r in rows] == [*range(1, 101), *range(1, 101), *range(1, 51)]
    assert {r.partition for r in rows} == set(snapshot.partitions)
    assert all(r.error is None and tuple(r.values) == COLUMNS for r in rows)
    assert any("\n" in r.values["Street"] for r in rows)  # a quoted two-line address stays one field
    assert any(r.values["Company"] == "Fabrikam, Inc." for r in rows)
    assert any(r.values["Company"] == 'The "Green" Grocer' for r in rows)


def test_header_bom_crlf_and_quoted_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    data = '\ufeffEmail,Name,Note\r\na@contoso.com,"Doe, Jane","She said ""hi""\r\nthen left"\r\n\r\nb@contoso.com,Zoë,\r\n'

    rows = rows_of(tmp_path, data.encode("utf-8"))

    assert rows == [
        (1, {"Email": "a@contoso.com", "Name": "Doe, Jane", "Note": 'She said "hi"\r\nthen left'}, None),
        (2, {"Email": "b@contoso.com", "Name": "Zoë", "Note": ""}, None),
    ]


def test_bytes_that_are_not_utf8_make_only_their_row_unreadable(tmp_path: Path) -> None:
    data = b"Email,Name\na@contoso.com,Ren\xe9e\nb@contoso.com,Ren\xc3\xa9e\n"

    rows = rows_of(tmp_path, data)

    assert rows[0][:2] == (1, None) and "not valid UTF-8" in rows[0][2] and "line 2" in rows[0][2]
    assert rows[1] == (2, {"Email": "b@contoso.com", "Name": "Renée"}, None)


def test_other_declared_encodings_are_decoded(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, "a@contoso.com,Renée\n".encode("latin-1"), columns=("Email", "Name"), encoding="ISO-8859-1")

    assert rows == [(1, {"Email": "a@contoso.com", "Name": "Renée"}, None)]


def test_a_row_with_the_wrong_number_of_fields_is_one_error_row(tmp_path: Path) -> None:
    data = b"Email,Name,City\na@contoso.com,Jane,Paris\nb@contoso.com,Doe, John,Lyon\nc@contoso.com,Ann,Oslo,,\nd@contoso.com\n"

    rows = rows_of(tmp_path, data)

    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[1][1] is None and rows[1][2] == "has 4 fields, expected 3 (line 3; check quoting of commas and line breaks)"
    assert rows[2][1] == {"Email": "c@contoso.com", "Name": "Ann", "City": "Oslo"}  # trailing empty fields are harmless
    assert rows[3][2].startswith("has 1 fields, expected 3")


def test_broken_quoting_is_one_error_row_and_reading_goes_on(tmp_path: Path) -> None:
    data = b'Email,Name\na@contoso.com,"Jane"Doe\nb@contoso.com,John\nc@contoso.com,"never closed\n'

    rows = rows_of(tmp_path, data)

    assert [(r[0], r[1] is None) for r in rows] == [(1, True), (2, False), (3, True)]
    assert "is not valid CSV" in rows[0][2] and "line 2" in rows[0][2] and "check quoting" in rows[0][2]
    assert "is not valid CSV" in rows[2][2]


@pytest.mark.parametrize("data", [b"", b"Email,Name\r\n", b"\r\n\r\n"])
def test_an_empty_partition_yields_nothing(tmp_path: Path, data: bytes) -> None:
    assert rows_of(tmp_path, data) == []


def test_a_header_naming_a_column_twice_makes_every_row_unreadable(tmp_path: Path) -> None:
    rows = rows_of(tmp_path, b"Email,Name,Email\na@contoso.com,Jane,b@contoso.com\nc@contoso.com,Ann,d@contoso.com\n")

    assert [(r[0], r[1]) for r in rows] == [(1, None), (2, None)]
    assert "gives columns 1 and 3 the same name" in rows[0][2] and "Email" not in rows[0][2]


def test_a_later_partitions_header_problem_names_columns_by_number_however_long_their_names(tmp_path: Path) -> None:
    # the problem is repeated on every row of the partition (and so in every line of the errors report): a column
    # name of 130,000 characters in it made a 266 KB partition a 260 MB report
    name = "X" * 130_000
    source, snapshot = snapshot_of(tmp_path, {"p0.csv": b"Email,Name\na@contoso.com,Ann\n",
                                              "p1.csv": f"{name},{name}\n".encode() + b"b@contoso.com,Bo\n" * 2_000})

    rows = [r for r in read_rows(source, snapshot) if r.partition == "p1.csv"]

    assert len(rows) == 2_000 and all(r.values is None for r in rows)
    assert rows[0].error == "the header row gives columns 1 and 2 the same name; give each column its own name"


def test_an_unknown_encoding_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encoding 'klingon-8' is not known; export the files as UTF-8"):
        rows_of(tmp_path, b"a,b\n", encoding="klingon-8")


def test_jsonl_rows_bad_lines_are_error_rows(tmp_path: Path) -> None:
    lines = [
        "\ufeff" + json.dumps({"Email": "a@contoso.com", "Spend": 12.5, "Tags": ["x"], "Birth": None, "Vip": True}),
        "",
        '{"Email": "b@contoso.com",',
        "[1, 2]",
        '{"Email": "\\ud800"}',
    ]
    data = "\n".join(lines).encode("utf-8") + b"\n" + b'{"Email": "c@contoso.com", "Name": "Ren\xe9e"}\n'
    source, snapshot = snapshot_of(tmp_path, {"p.jsonl": data}, format="jsonl")

    rows = [(r.row, r.values, r.error) for r in read_rows(source, snapshot)]

    assert rows[0] == (1, {"Email": "a@contoso.com", "Spend": "12.5", "Tags": '["x"]', "Birth": "", "Vip": "true"}, None)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1][2].startswith("is not valid JSON") and "line 3" in rows[1][2]
    assert rows[2][2] == "is not a JSON object (line 4); write one object a line"
    assert "escape" in rows[3][2]
    assert rows[4][2] == "has bytes that are not valid UTF-8 (line 6; save the file as UTF-8)"


def test_sample_jsonl_snapshot_reads_every_row(tmp_path: Path) -> None:
    stats = write_plain_export(tmp_path, {"News": 120}, fmt="jsonl", taken_at=T2, rows_per_partition=50)
    source = FolderSource(tmp_path)

    rows = list(read_rows(source, newest_snapshot(source, "News")))

    assert len(rows) == stats["News"].rows and all(r.error is None for r in rows)


class RecordingSource(FolderSource):
    """Keeps the streams it opens, to see how far reading has gone."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[BinaryIO] = []

    def open_binary(self, name: str) -> BinaryIO:
        stream = super().open_binary(name)
        self.opened.append(stream)
        return stream


def test_rows_stream_without_reading_the_whole_partition(tmp_path: Path) -> None:
    body = "".join(f"user{n}@contoso.com,Name {n}\r\n" for n in range(100_000)).encode("utf-8")
    snapshot_of(tmp_path, {"big.csv": b"Email,Name\r\n" + body})
    source = RecordingSource(tmp_path)
    snapshot = Snapshot("S", "", T2, ("big.csv",), None, "csv", True)

    rows = read_rows(source, snapshot)
    first = next(rows)

    assert first.values == {"Email": "user0@contoso.com", "Name": "Name 0"}
    assert source.opened[0].tell() < len(body) // 10
    rows.close()
    assert source.opened[0].closed


def test_snapshot_columns_come_from_the_header_the_first_object_or_the_model(tmp_path: Path) -> None:
    csv_source, csv_snapshot = snapshot_of(tmp_path / "csv", {"e.csv": b"", "p.csv": b"\xef\xbb\xbf Email ,Name\r\nx,y\r\n"})
    jsonl_source, jsonl_snapshot = snapshot_of(tmp_path / "jsonl", {"p.jsonl": b'{"Email": "x", "Name": "y"}\n'}, format="jsonl")
    model_source, model_snapshot = snapshot_of(tmp_path / "cdm", {"p.csv": b""}, columns=("Email", "Name"))

    assert snapshot_columns(csv_source, csv_snapshot) == ("Email", "Name")
    assert snapshot_columns(jsonl_source, jsonl_snapshot) == ("Email", "Name")
    assert snapshot_columns(model_source, model_snapshot) == ("Email", "Name")
    assert snapshot_columns(csv_source, Snapshot("S", "", T2, ("e.csv",), None, "csv", True)) == ()


class Knowing:
    """RowDigests that knows the digests of some records' texts (as a planning run's memo would)."""

    def __init__(self, texts: list[str]) -> None:
        from shared.row_memo import row_digest, row_seed
        self.seed_value = row_seed("S", "T", {}, ["Email", "Name"], ",", 1000)
        self.digests = {row_digest(text, self.seed_value) for text in texts}

    def seed(self, columns: list[str], delimiter: str, most_fields: int) -> int:
        assert (columns, delimiter, most_fields) == (["Email", "Name"], ",", 1000)
        return self.seed_value

    def entry(self, digest: int) -> int | None:
        return self.entry_of(digest) if digest in self.digests else None

    def may_know(self) -> bool:
        return bool(self.digests)

    @staticmethod
    def entry_of(digest: int) -> int:
        """An entry of its own for each digest (a memo's would be its place)."""
        return digest >> 1

    def known(self, digest: int) -> bool:
        return digest in self.digests

    def entry_of_text(self, text: str) -> int:
        from shared.row_memo import row_digest
        return self.entry_of(row_digest(text, self.seed_value))


def one_per_row(rows: Iterable[SourceRow]) -> list[SourceRow]:
    """The rows read, a run of known rows as one SourceRow a row (each with its own entry)."""
    single = []
    for r in rows:
        if r.known is None:
            single.append(r)
        else:
            assert len(r.known) > 0 and r.values is None and r.error is None and r.digest == 0
            single += [SourceRow(r.partition, r.row + n, None, None, 0, array("q", [entry]))
                       for n, entry in enumerate(r.known)]
    return single


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_known_row_comes_unparsed_with_its_number_and_the_others_parsed_with_their_digest(tmp_path: Path, newline) -> None:
    lines = ["Email,Name", "a@contoso.com,Ann", 'b@contoso.com,"Bo, the ""second"""', "c@contoso.com,\"Cy\nMultiline\"",
             "d@contoso.com,Dee", "a@contoso.com,Ann"]
    data = newline.join(lines).encode("utf-8")  # the last row without a line break: the same row as the first
    knowing = Knowing(["a@contoso.com,Ann", 'b@contoso.com,"Bo, the ""second"""', "c@contoso.com,\"Cy\nMultiline\""])
    source, snapshot = snapshot_of(tmp_path, {"p.csv": data})
    runs = list(read_rows(source, snapshot, knowing))
    rows = one_per_row(runs)

    assert [(r.row, r.known is not None) for r in rows] == [(1, True), (2, True), (3, True), (4, False), (5, True)]
    assert [(r.row, len(r.known or ())) for r in runs] == [(1, 3), (4, 0), (5, 1)]  # consecutive known rows: one run
    assert rows[0].known[0] == knowing.entry_of_text("a@contoso.com,Ann") and rows[0].values is None
    assert rows[4].known[0] == knowing.entry_of_text("a@contoso.com,Ann")
    # A row spanning lines is looked up whole, up to the line where its quotes pair up: none of its lines reach csv.
    assert rows[2].known[0] == knowing.entry_of_text("c@contoso.com,\"Cy\nMultiline\"")
    # A parsed row carries the digest of its text, which a later plan's memo may know.
    assert rows[3].values == {"Email": "d@contoso.com", "Name": "Dee"} and rows[3].digest not in knowing.digests
    assert rows[3].digest != 0 and Knowing(["d@contoso.com,Dee"]).known(rows[3].digest)
    assert [r.values for r in read_rows(source, snapshot)][3] == rows[3].values  # no digests asked: parsed alike
    assert all(r.digest == 0 for r in read_rows(source, snapshot))
    parsed = list(read_rows(source, snapshot, Knowing([])))
    assert parsed[2].values == {"Email": "c@contoso.com", "Name": "Cy\nMultiline"}
    assert Knowing(["c@contoso.com,\"Cy\nMultiline\""]).known(parsed[2].digest)  # a row spanning lines has one too


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_quotes_that_pair_up_across_rows_do_not_make_them_one_known_row(tmp_path: Path, newline) -> None:
    """A quote inside an unquoted value is a character (csv reads `5" tall` as it stands), so quotes that pair up over
    two lines need not be one row: the digest of those lines together is never recorded, and rows read ahead in
    looking one up are read as usual, with their own digests and numbers; so are those of a quote never closed."""
    lines = ["Email,Name", 'a@contoso.com,5" tall', 'b@contoso.com,2" wide', "c@contoso.com,Cy", 'd@contoso.com,"Dee',
             "e@contoso.com,Eve"]
    data = newline.join(lines).encode("utf-8")
    source, snapshot = snapshot_of(tmp_path, {"p.csv": data})
    plain = list(read_rows(source, snapshot))
    together = Knowing(['a@contoso.com,5" tall' + newline + 'b@contoso.com,2" wide'])  # what no memo can know
    for knowing in (Knowing([]), Knowing(["c@contoso.com,Cy"]), Knowing(['d@contoso.com,"Dee' + newline + "e@contoso.com,Eve"])):
        rows = one_per_row(read_rows(source, snapshot, knowing))
        assert [(r.row, r.values, r.error) for r in rows if r.known is None] == \
            [(r.row, r.values, r.error) for r in plain if r.row not in {r.row for r in rows if r.known is not None}]
        assert not any(r.digest in together.digests for r in rows)
    rows = list(read_rows(source, snapshot, Knowing([])))
    assert [r.values["Name"] for r in rows[:3]] == ['5" tall', '2" wide', "Cy"]
    assert Knowing(['b@contoso.com,2" wide']).known(rows[1].digest) and Knowing(["c@contoso.com,Cy"]).known(rows[2].digest)
    assert [r.row for r in one_per_row(read_rows(source, snapshot, Knowing(["c@contoso.com,Cy"]))) if r.known] == [3]


class KnowingDigests(Knowing):
    def __init__(self, digests: set[int]) -> None:
        super().__init__([])
        self.digests = digests


_VALUES = ["a@contoso.com", 'Bo "B"', '5" tall', '"quoted, with a comma"', '"runs\non"', '"runs\r\non, ""and"" on"',
           '"never closed', 'x""y', "", '"', '""', '"a\n\nb"']


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(_VALUES), st.sampled_from(_VALUES)), max_size=12),
       newline=st.sampled_from(["\n", "\r\n"]), last_break=st.booleans(), picks=st.lists(st.booleans(), max_size=12),
       held=st.sampled_from([1, 2, segment_rows.HITS_HELD]))
def test_rows_known_by_a_digest_an_earlier_read_recorded_are_exactly_those_rows(rows, newline, last_break, picks,
                                                                                held) -> None:
    """Whatever the quotes (paired over lines, inside unquoted values, never closed), a row is known only by a digest
    an earlier read gave a row of the same text, and known rows aside, every row reads as it does with no lookup, in
    the same order (however many known rows the reader passes over before it hands them on: `held`)."""
    data = newline.join(["Email,Name", *(f"{a},{b}" for a, b in rows)]) + (newline if last_break else "")
    with tempfile.TemporaryDirectory() as folder:
        source, snapshot = snapshot_of(Path(folder), {"p.csv": data.encode("utf-8")})
        plain = [(r.row, r.values, r.error) for r in read_rows(source, snapshot)]
        recorded = list(read_rows(source, snapshot, KnowingDigests(set())))
        assert [(r.row, r.values, r.error) for r in recorded] == plain
        digests = {r.digest for r, pick in zip(recorded, picks) if pick and r.digest}
        default, segment_rows.HITS_HELD = segment_rows.HITS_HELD, held
        try:
            runs = list(read_rows(source, snapshot, KnowingDigests(digests)))
            again = one_per_row(runs)
        finally:
            segment_rows.HITS_HELD = default
    assert [r.row for r in again] == [row[0] for row in plain]
    known_rows = {r.row for r in again if r.known is not None}
    assert known_rows == {r.row for r in recorded if r.digest in digests}
    assert {r.row: r.known[0] for r in again if r.known} == \
        {r.row: Knowing.entry_of(r.digest) for r in recorded if r.digest in digests}  # each run in the order read
    assert all(len(r.known) <= held for r in runs if r.known is not None)
    assert [(r.row, r.values, r.error) for r in again if r.known is None] == [row for row in plain if row[0] not in known_rows]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_rows_after_a_run_of_known_rows_keep_their_numbers_and_lines(tmp_path: Path, newline) -> None:
    """Known rows are passed over in a loop of their own: the rows after them are numbered, and their problems name
    their lines, as without a lookup (a quoted line break in a known row counts as a line)."""
    lines = ["Email,Name", "a@contoso.com,Ann", 'b@contoso.com,"B\nb"', "c@contoso.com,Cy", "d@contoso.com,Dee,extra",
             "e@contoso.com,Eve", "f@contoso.com,Fay", 'g@contoso.com,"never closed', "h@contoso.com,Hal"]
    source, snapshot = snapshot_of(tmp_path, {"p.csv": newline.join(lines).encode("utf-8")})
    plain = list(read_rows(source, snapshot))
    assert "(line 6;" in plain[3].error and "(line 9;" in plain[6].error
    knowing = Knowing(["a@contoso.com,Ann", 'b@contoso.com,"B\nb"', "c@contoso.com,Cy", "e@contoso.com,Eve",
                       "f@contoso.com,Fay"])
    runs = list(read_rows(source, snapshot, knowing))
    assert [(r.row, len(r.known or ())) for r in runs] == [(1, 3), (4, 0), (5, 2), (7, 0), (8, 0)]
    assert [(r.row, r.values, r.error) for r in runs if r.known is None] == \
        [(r.row, r.values, r.error) for r in plain if r.row in (4, 7, 8)]
