"""The segment catalog the admin page picks from: newest snapshot, columns with types, profile counts counted once."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from shared.sample_segments import COLUMNS, FolderSource, write_plain_export, write_sample_export
from shared.segment_catalog import COUNTS_PREFIX, ProfileCounts, SegmentCatalog
from shared.segment_rows import read_rows
from shared.snapshots import newest_snapshots

EARLIER = datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)


class MemoryStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def read_bytes(self, name: str) -> bytes:
        return self.blobs[name]

    def write_bytes(self, name: str, data: bytes) -> None:
        self.blobs[name] = data

    def exists(self, name: str) -> bool:
        return name in self.blobs


class CountingSource(FolderSource):
    """Counts partition opens, to see what is read again."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []

    def open_binary(self, name: str):
        self.opened.append(name)
        return super().open_binary(name)


def by_name(entries):
    return {e.name: e for e in entries}


def test_cdm_segments_list_their_newest_snapshot_typed_columns_and_every_row_as_a_profile(tmp_path):
    write_sample_export(tmp_path, {"HighValueCustomers": 120, "LapsedBuyers": 30}, taken_at=EARLIER, root="ci",
                        rows_per_partition=50)
    stats = write_sample_export(tmp_path, {"HighValueCustomers": 70, "LapsedBuyers": 40}, taken_at=LATER, root="ci",
                                rows_per_partition=50, invalid_rate=0.2, duplicate_rate=0.2)
    found = by_name(SegmentCatalog(FolderSource(tmp_path)).segments())
    assert set(found) == {"HighValueCustomers", "LapsedBuyers"}
    high = found["HighValueCustomers"]
    assert (high.snapshot, high.taken_at, high.layout) == ("2026-11-28T17:00Z", "2026-11-28T17:00:00+00:00", "cdm")
    assert high.profiles == stats["HighValueCustomers"].rows == 70  # invalid and duplicate rows count, as for the limit
    assert found["LapsedBuyers"].profiles == 40
    assert [c.name for c in high.columns] == list(COLUMNS)
    types = {c.name: (c.type, c.mailchimp_type) for c in high.columns}
    assert types["Email"] == ("string", "text")
    assert types["LifetimeValue"] == ("decimal", "number")
    assert types["BirthDate"] == ("dateTime", "date")
    shown = high.public()
    assert shown["usable"] is True and shown["problem"] is None
    assert shown["columns"][0] == {"name": "CustomerId", "type": "string", "mailchimpType": "text"}


def test_plain_csv_and_jsonl_snapshots_have_their_header_as_columns_typed_string(tmp_path):
    write_plain_export(tmp_path, {"Newsletter": 25}, taken_at=LATER)
    write_plain_export(tmp_path / "j", {"Loyal": 12}, fmt="jsonl", taken_at=LATER)
    for name in list((tmp_path / "j").iterdir()):
        name.rename(tmp_path / name.name)
    found = by_name(SegmentCatalog(FolderSource(tmp_path)).segments())
    assert found["Newsletter"].layout == "csv" and found["Newsletter"].profiles == 25
    assert found["Loyal"].layout == "jsonl" and found["Loyal"].profiles == 12
    assert [c.name for c in found["Newsletter"].columns] == list(COLUMNS)
    assert {c.type for c in found["Loyal"].columns} == {"string"}


def test_unusable_and_waiting_segments_are_listed_with_why(tmp_path):
    write_sample_export(tmp_path, {"Good": 5}, taken_at=LATER, root="ok")
    (tmp_path / "bad" / "MailchimpSegments").mkdir(parents=True)
    write_sample_export(tmp_path, {"Broken": 5}, taken_at=LATER, root="bad")
    (tmp_path / "bad" / "MailchimpSegments" / "model.json").write_text("{not json")
    write_sample_export(tmp_path, {"Waiting": 5}, taken_at=LATER, root="wait")
    next((tmp_path / "wait").rglob("Waiting_1.csv")).unlink()
    mixed = tmp_path / "Mixed" / "2026" / "11" / "28" / "1700"
    mixed.mkdir(parents=True)
    for name, text in (("a.csv", "Email\r\nx@y.com\r\n"), ("b.jsonl", '{"Email": "x@y.com"}\n'), ("_SUCCESS", "")):
        (mixed / name).write_text(text)
    found = by_name(SegmentCatalog(FolderSource(tmp_path)).segments())
    assert found["Good"].usable and found["Good"].profiles == 5
    broken = found["broken"]  # no usable snapshot: named as the listing keys it (case-folded)
    assert not broken.usable and "model.json" in broken.problem and "not valid JSON" in broken.problem
    assert "mixes .csv and .jsonl" in found["mixed"].problem
    waiting = found["waiting"]
    assert not waiting.usable and waiting.problem is None and "not in the container" in waiting.waiting
    assert waiting.public()["profiles"] is None


def test_a_header_that_cannot_be_used_is_the_segments_problem(tmp_path):
    folder = tmp_path / "Twice" / "2026" / "11" / "28" / "1700"
    folder.mkdir(parents=True)
    (folder / "part.csv").write_text("Email,Email\r\na@x.com,b@x.com\r\n")
    (folder / "_SUCCESS").write_text("")
    entry = SegmentCatalog(FolderSource(tmp_path)).segments()[0]
    assert entry.name == "Twice" and not entry.usable and "same name" in entry.problem and entry.profiles is None


def test_profiles_are_counted_once_per_snapshot_and_kept_in_the_store(tmp_path):
    write_sample_export(tmp_path, {"HighValueCustomers": 30}, taken_at=EARLIER, root="ci", rows_per_partition=10)
    source, store = CountingSource(tmp_path), MemoryStore()
    catalog = SegmentCatalog(source, ProfileCounts(store))
    assert catalog.segments()[0].profiles == 30
    partitions = [name for name in source.opened if name.endswith(".csv")]
    assert len(partitions) == 3
    source.opened.clear()
    assert catalog.segments()[0].profiles == 30 and not [n for n in source.opened if n.endswith(".csv")]
    assert [name for name in store.blobs if name.startswith(COUNTS_PREFIX)] and len(store.blobs) == 1
    elsewhere = SegmentCatalog(source, ProfileCounts(store))  # another instance: reads the kept count
    assert elsewhere.segments()[0].profiles == 30 and not [n for n in source.opened if n.endswith(".csv")]
    write_sample_export(tmp_path, {"HighValueCustomers": 12}, taken_at=LATER, root="ci")  # a new snapshot: counted
    assert catalog.segments()[0].profiles == 12 and len(store.blobs) == 2


def test_a_damaged_kept_count_is_counted_again(tmp_path):
    write_plain_export(tmp_path, {"Newsletter": 8}, taken_at=LATER)
    store = MemoryStore()
    SegmentCatalog(FolderSource(tmp_path), ProfileCounts(store)).segments()
    (name,) = store.blobs
    for damage in (b"{", json.dumps({"profiles": -1}).encode(), json.dumps({"profiles": "8"}).encode()):
        store.blobs[name] = damage
        assert SegmentCatalog(FolderSource(tmp_path), ProfileCounts(store)).segments()[0].profiles == 8


def test_the_count_is_what_planning_reads_even_for_broken_rows(tmp_path):
    folder = tmp_path / "Odd" / "2026" / "11" / "28" / "1700"
    folder.mkdir(parents=True)
    rows = 'Email,Name\r\na@x.com,"two\r\nlines"\r\n\r\nb@x.com,"never closed\r\nc@x.com,C\r\nd@x.com,D,extra\r\n'
    (folder / "part.csv").write_bytes(rows.encode() + b"e@x.com,\xff\r\n")
    (folder / "_SUCCESS").write_text("")
    source = FolderSource(tmp_path)
    snapshot = newest_snapshots(source)["odd"]
    assert SegmentCatalog(source).segments()[0].profiles == sum(1 for _ in read_rows(source, snapshot))
