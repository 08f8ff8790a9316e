"""Finding snapshots and deciding completeness, over real files in a temp folder (FolderSource fakes Blob Storage)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.sample_segments import COLUMNS, FolderSource, folder_writer, write_plain_export, write_sample_export
from shared.snapshots import list_segments, newest_snapshot, partition_blob_name, snapshots_for_blob

T1 = datetime(2026, 11, 27, 17, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
T3 = datetime(2026, 11, 28, 18, 30, tzinfo=timezone.utc)
EXPORT = "CustomerInsights_abc/Segments/"


def cdm(folder: Path, taken_at: datetime, **options) -> None:
    options.setdefault("segments", {"HighValueCustomers": 30, "LapsedBuyers": 20})
    write_sample_export(folder, root="CustomerInsights_abc", export_name="Segments", taken_at=taken_at, **options)


def test_cdm_export_lists_each_segment_with_partitions_in_natural_order(tmp_path: Path) -> None:
    cdm(tmp_path, T2, segments={"HighValueCustomers": 1050, "LapsedBuyers": 20}, rows_per_partition=100)

    segments = list_segments(FolderSource(tmp_path))

    assert sorted(segments) == ["HighValueCustomers", "LapsedBuyers"]
    [snapshot] = segments["HighValueCustomers"]
    folder = f"{EXPORT}HighValueCustomers/2026/11/28/1700/"
    assert snapshot.folder == folder
    assert snapshot.partitions == tuple(f"{folder}HighValueCustomers_{n}.csv" for n in range(1, 12))
    assert (snapshot.columns, snapshot.has_header, snapshot.format) == (COLUMNS, False, "csv")
    assert (snapshot.taken_at, snapshot.id) == (T2, "2026-11-28T17:00Z")


def test_newer_folder_is_in_progress_and_older_folder_is_a_past_snapshot(tmp_path: Path) -> None:
    cdm(tmp_path, T1, segments={"HighValueCustomers": 110}, rows_per_partition=10)
    cdm(tmp_path, T2)
    in_progress = f"{EXPORT}HighValueCustomers/2026/11/28/1830/HighValueCustomers_1.csv"
    folder_writer(tmp_path)(in_progress, b"x,y\r\n")
    source = FolderSource(tmp_path)

    snapshots = list_segments(source)["HighValueCustomers"]

    assert [s.taken_at for s in snapshots] == [T2, T1]
    past = f"{EXPORT}HighValueCustomers/2026/11/27/1700/HighValueCustomers_"
    assert snapshots[1].partitions == tuple(f"{past}{n}.csv" for n in range(1, 12))  # _10 after _9
    assert newest_snapshot(source, "HighValueCustomers").taken_at == T2
    assert snapshots_for_blob(source, in_progress) == []


def test_a_missing_partition_makes_the_current_snapshot_incomplete(tmp_path: Path) -> None:
    cdm(tmp_path, T1)
    cdm(tmp_path, T2, segments={"HighValueCustomers": 30, "LapsedBuyers": 20}, rows_per_partition=10)
    (tmp_path / f"{EXPORT}HighValueCustomers/2026/11/28/1700/HighValueCustomers_2.csv").unlink()
    source = FolderSource(tmp_path)

    assert newest_snapshot(source, "HighValueCustomers").taken_at == T1
    assert newest_snapshot(source, "LapsedBuyers").taken_at == T2


def test_segment_names_match_case_insensitively_but_keep_their_spelling(tmp_path: Path) -> None:
    cdm(tmp_path, T2)

    snapshot = newest_snapshot(FolderSource(tmp_path), "highVALUEcustomers")

    assert snapshot is not None and snapshot.segment == "HighValueCustomers"
    assert newest_snapshot(FolderSource(tmp_path), "NoSuchSegment") is None


@pytest.mark.parametrize(
    "location",
    [
        "https://acct.blob.core.windows.net/exports/CI_1/Segs/High%20Value/2026/11/28/1700/High%20Value_1.csv",
        "http://127.0.0.1:10000/devstoreaccount1/exports/CI_1/Segs/High%20Value/2026/11/28/1700/High%20Value_1.csv",
        "https://acct.dfs.core.windows.net/exports/CI_1/Segs/High Value/2026/11/28/1700/High Value_1.csv",
    ],
)
def test_partition_locations_map_to_the_blob_name_after_the_container(location: str) -> None:
    assert partition_blob_name(location, "CI_1/Segs/") == "CI_1/Segs/High Value/2026/11/28/1700/High Value_1.csv"


def test_model_json_at_the_container_root_maps_locations_without_an_export_prefix() -> None:
    assert partition_blob_name("https://a.blob.core.windows.net/c/Seg/2026/11/28/1700/Seg_1.csv", "") == "Seg/2026/11/28/1700/Seg_1.csv"
    assert partition_blob_name("http://localhost:10000/devstoreaccount1/c/Seg/2026/11/28/1700/Seg_1.csv", "") == (
        "Seg/2026/11/28/1700/Seg_1.csv"
    )


@pytest.mark.parametrize("base", ["https://acct.blob.core.windows.net/exports/", "http://127.0.0.1:10000/devstoreaccount1/exports/"])
def test_url_encoded_locations_of_a_segment_named_with_a_space_complete_the_snapshot(tmp_path: Path, base: str) -> None:
    cdm(tmp_path, T2, segments={"High Value": 10}, location_base=base)

    model = json.loads((tmp_path / EXPORT / "model.json").read_text())
    assert "High%20Value" in model["entities"][0]["partitions"][0]["location"]
    assert newest_snapshot(FolderSource(tmp_path), "high value").segment == "High Value"


def test_plain_folder_counts_only_once_its_success_marker_is_written(tmp_path: Path) -> None:
    write_plain_export(tmp_path, {"VIP": 30}, taken_at=T2, rows_per_partition=10, complete=False)
    source = FolderSource(tmp_path)
    assert list_segments(source) == {}

    folder_writer(tmp_path)("VIP/2026/11/28/1700/_SUCCESS", b"")

    [snapshot] = list_segments(source)["VIP"]
    assert snapshot.partitions == tuple(f"VIP/2026/11/28/1700/part-0000{n}.csv" for n in (1, 2, 3))
    assert (snapshot.format, snapshot.has_header, snapshot.columns) == ("csv", True, None)


def test_plain_jsonl_and_empty_segment_snapshots(tmp_path: Path) -> None:
    write_plain_export(tmp_path, {"Newsletter": 5}, fmt="jsonl", taken_at=T2)
    folder_writer(tmp_path)("Churned/2026/11/28/1700/_SUCCESS", b"")

    segments = list_segments(FolderSource(tmp_path))

    assert (segments["Newsletter"][0].format, segments["Newsletter"][0].has_header) == ("jsonl", False)
    assert segments["Churned"][0].partitions == ()  # a segment that is empty right now


def test_plain_folder_mixing_csv_and_jsonl_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write = folder_writer(tmp_path)
    for name in ("a.csv", "b.jsonl", "_SUCCESS"):
        write(f"VIP/2026/11/28/1700/{name}", b"")

    with caplog.at_level(logging.WARNING):
        assert list_segments(FolderSource(tmp_path)) == {}
    assert "VIP/2026/11/28/1700/" in caplog.text and "mixes" in caplog.text


def test_an_unreadable_model_json_skips_only_its_own_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cdm(tmp_path, T2)
    write_sample_export(tmp_path, {"Other": 5}, root="CI_broken", export_name="Segments", taken_at=T2)
    (tmp_path / "CI_broken/Segments/model.json").write_text('{"entities": [')

    with caplog.at_level(logging.WARNING):
        segments = list_segments(FolderSource(tmp_path))

    assert sorted(segments) == ["HighValueCustomers", "LapsedBuyers"]
    assert "CI_broken/Segments/model.json" in caplog.text


def test_blobs_that_complete_snapshots(tmp_path: Path) -> None:
    cdm(tmp_path, T1)
    cdm(tmp_path, T2)
    write_plain_export(tmp_path, {"VIP": 5}, taken_at=T3)
    source = FolderSource(tmp_path)

    by_model = snapshots_for_blob(source, f"{EXPORT}model.json")
    assert sorted((s.segment, s.taken_at) for s in by_model) == [("HighValueCustomers", T2), ("LapsedBuyers", T2)]
    assert [s.segment for s in snapshots_for_blob(source, "VIP/2026/11/28/1830/_SUCCESS")] == ["VIP"]
    assert snapshots_for_blob(source, "VIP/2026/11/28/1830/part-00001.csv") == []
    current = f"{EXPORT}LapsedBuyers/2026/11/28/1700/LapsedBuyers_1.csv"
    assert [(s.segment, s.taken_at) for s in snapshots_for_blob(source, current)] == [("LapsedBuyers", T2)]
    assert snapshots_for_blob(source, f"{EXPORT}LapsedBuyers/2026/11/27/1700/LapsedBuyers_1.csv") == []
    assert snapshots_for_blob(source, "notes/readme.txt") == []
