"""A run that streams new members while it plans (shared/exports/planner.py): when a file of its segment stops being
readable after members went out, those members are counted and said, nothing is untagged and nothing is lost."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from shared.sample_segments import FolderSource
from shared.snapshots import SnapshotProblem
from tests.unit.export_fakes import drain, make

STAMP = "2026/11/28/1700"


class RefusingSecondRead(FolderSource):
    """Serves part-1 once (the line count before streaming) and refuses it after, as storage does for a blob
    archived meanwhile."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: dict[str, int] = {}

    def open_binary(self, name: str) -> BinaryIO:
        self.opened[name] = self.opened.get(name, 0) + 1
        if name.endswith("part-1.csv") and self.opened[name] > 1:
            raise SnapshotProblem(name, "could not be read (BlobArchived); it is in the Archive tier")
        return super().open_binary(name)


def test_a_file_refused_after_members_were_streamed_counts_them_and_says_the_rest_was_not_sent(tmp_path: Path):
    first = tmp_path / "Vip" / "2026/11/28/1600"
    first.mkdir(parents=True)
    (first / "part-0.csv").write_text("Email,FirstName\r\ngone@x.com,N\r\n")
    (first / "_SUCCESS").write_text("")
    service, client = make(tmp_path, ["Vip"], chunk_size=2, guard=100)
    service.start("d1", "http")
    drain(service)  # the run creates the tag, so it keeps it in step
    assert client.aud["gone@x.com"][2] == ["Vip"]
    folder = tmp_path / "Vip" / STAMP  # newer: gone@x.com left the segment
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_text("Email,FirstName\r\n" + "".join(f"n{i}@x.com,N\r\n" for i in range(4))
                                       + "bad-address,N\r\n")
    (folder / "part-1.csv").write_text("Email,FirstName\r\nlate@x.com,N\r\n")
    (folder / "_SUCCESS").write_text("")
    service.segments = RefusingSecondRead(tmp_path)
    run = service.start("d1", "http")

    drain(service)

    result = service.runs.get(run.id)
    assert result.status == "completed_with_errors", result.message
    assert "part-1.csv" in result.message and "BlobArchived" in result.message
    assert "the 4 members sent while it was read are counted" in result.message, result.message
    counts = result.segments[0].counts
    assert (counts["read"], counts["created"], counts["invalid"], counts["untagged"]) == (5, 4, 1, 0)
    assert sorted(client.aud) == ["gone@x.com", *(f"n{i}@x.com" for i in range(4))]
    assert client.aud["gone@x.com"][2] == ["Vip"]  # the segment was not read to its end: nobody is untagged
    report = b"".join(data for name, data in service.work.blobs.items() if "/errors/" in name)
    assert b"bad-address" in report  # the invalid row read before the refused file is reported
