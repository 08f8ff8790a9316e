"""The errors report stays small whatever a segment file holds: a line names columns by number, and its reason,
email and names are cut; so a run over a small hostile partition never writes (or pages out) a huge report.

ExportService runs on the in-memory ports of tests/unit/export_fakes.py over real files in a temp folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from shared.exports import errors_prefix
from shared.exports.error_report import error_line
from tests.unit.export_fakes import drain, make

STAMP = "2026/11/28/1700"


def plain(root: Path, segment: str, files: dict[str, bytes]) -> None:
    folder = Path(root, segment, STAMP)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "_SUCCESS").write_bytes(b"")


def report_of(svc, run_id: str) -> list[bytes]:
    return [line for blob in svc.error_lines(run_id) for line in blob.splitlines()]


def test_a_266_kb_partition_naming_a_130000_character_column_twice_makes_a_small_report(tmp_path: Path) -> None:
    # The review's case: a later partition whose header names one 130,000-character column twice, then 2,000 lines.
    # Its header problem stands on each of its 2,000 rows; with the name in it the report was 260 MB.
    name = "X" * 130_000
    hostile = f"{name},{name}\r\n".encode() + b"b@contoso.com,Bo\r\n" * 2_000
    assert 260_000 < len(hostile) < 300_000
    plain(tmp_path, "Seg", {"part-0.csv": b"Email,FirstName\r\na@contoso.com,Ann\r\n", "part-1.csv": hostile})
    svc, _ = make(tmp_path, ["Seg"], chunk_size=500)

    run = svc.start("d1", "http")
    drain(svc)

    run = svc.get_run(run.id)
    assert run.counts["invalid"] == 2_000, run.counts
    lines = report_of(svc, run.id)
    assert len(lines) == 2_000
    assert max(map(len, lines)) < 400
    report = sum(len(data) for blob, data in svc.work.blobs.items() if blob.startswith(errors_prefix(run.id)))
    assert report < 2 * len(hostile), f"{report:,} bytes of errors report for a {len(hostile):,}-byte partition"
    assert "columns 1 and 2" in json.loads(lines[0])["reason"]


def test_an_email_of_100000_characters_is_cut_in_the_report_saying_so(tmp_path: Path) -> None:
    given = "a" * 100_000 + "@contoso.com"
    plain(tmp_path, "Seg", {"part-0.csv": f"Email,FirstName\r\n{given},Ann\r\nb@contoso.com,Bo\r\n".encode()})
    svc, _ = make(tmp_path, ["Seg"], chunk_size=500)

    run = svc.start("d1", "http")
    drain(svc)

    (line,) = report_of(svc, run.id)
    doc = json.loads(line)
    assert len(doc["email"]) == 320 and doc["email"].endswith(" (shortened)")
    assert doc["email"].startswith("aaaa") and len(line) < 1_000


def test_a_line_cuts_its_reason_email_and_names_and_says_so() -> None:
    line = error_line("Seg", "p.csv", 7, "e" * 5_000, "why " * 10_000, "field", column="C" * 5_000, mergeTag="FNAME")
    doc = json.loads(line)
    assert len(doc["reason"]) == 500 and doc["reason"].endswith("(shortened)")
    assert len(doc["email"]) == 320 and doc["email"].endswith("(shortened)")
    assert len(doc["column"]) <= 300 and doc["column"].endswith("(shortened)") and doc["mergeTag"] == "FNAME"
    short = json.loads(error_line("Seg", "p.csv", 7, "ann@contoso.com", "no valid email", "validation"))
    assert (short["email"], short["reason"]) == ("ann@contoso.com", "no valid email")  # short ones are kept as given
    assert "column" not in short
