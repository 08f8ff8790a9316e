"""A run that streams new members while it plans (shared/exports/planner.py): when a file of its segment stops being
readable after members went out, those members are counted and said, nothing is untagged and nothing is lost."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from shared.emails import subscriber_hash
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


class DiesOnce(FolderSource):
    """The host dies the second time `name` is opened (after the line count, while the rows are read)."""

    def __init__(self, root: Path, name: str) -> None:
        super().__init__(root)
        self.name, self.opened = name, 0

    def open_binary(self, name: str) -> BinaryIO:
        if name.endswith(self.name):
            self.opened += 1
            if self.opened == 2:
                raise RuntimeError("host killed")
        return super().open_binary(name)


def _snapshot(root: Path, stamp: str, parts: list[list[str]]) -> None:
    folder = root / "Vip" / stamp
    folder.mkdir(parents=True)
    for number, emails in enumerate(parts):
        (folder / f"part-{number}.csv").write_text("Email,FirstName\r\n" + "".join(f"{e},N\r\n" for e in emails))
    (folder / "_SUCCESS").write_text("")


def _plan_crashing_once(service, work_chunks: bool) -> str:
    run = service.start("d1", "http")
    message = service.plan_queue.msgs.pop(0)
    try:
        service.plan(message["runId"])
    except RuntimeError:
        while work_chunks and service.chunk_queue.msgs:  # streamed chunks are worked on while the host restarts
            m = service.chunk_queue.msgs.pop(0)
            service.process_chunk(m["runId"], m["chunk"], "a1")
    service.plan_queue.msgs.append(message)
    drain(service)
    return run.id


def test_a_crash_after_streaming_leaves_the_untag_guard_deciding_as_without_it(tmp_path: Path):
    """Members streamed by the crashed attempt carry the tag when planning starts again: they must not dilute the
    share of members leaving the tag (6 of 10 leave here, more than the guard's 20 %: held, crash or not)."""
    outcomes = []
    for crash in (False, True):
        root = tmp_path / str(crash)
        _snapshot(root, "2026/11/28/1600", [[f"old{i}@x.com" for i in range(10)]])
        service, client = make(root, ["Vip"], chunk_size=2, guard=20)
        service.start("d1", "http")
        drain(service)
        _snapshot(root, STAMP, [[f"new{i}@x.com" for i in range(20)], [f"old{i}@x.com" for i in range(4)]])
        service.segments = DiesOnce(root, "1700/part-1.csv") if crash else FolderSource(root)
        counts = service.runs.get(_plan_crashing_once(service, work_chunks=True)).segments[0].counts
        outcomes.append((counts["untagged"], counts["untagHeld"], counts["created"],
                         sum("Vip" in v[2] for e, v in client.aud.items() if e.startswith("old"))))
    assert outcomes[0] == outcomes[1] == (0, 6, 20, 10)


def test_a_person_erased_between_two_planning_attempts_is_counted_once(tmp_path: Path):
    _snapshot(tmp_path, STAMP, [[f"n{i}@x.com" for i in range(4)], ["late@x.com"]])
    service, client = make(tmp_path, ["Vip"], chunk_size=2, guard=100)

    class Ledger:
        hashes: dict[str, str] = {}

        def all(self) -> dict[str, str]:
            return dict(self.hashes)

    service.erased = Ledger()
    service.segments = DiesOnce(tmp_path, "part-1.csv")
    run = service.start("d1", "http")
    message = service.plan_queue.msgs.pop(0)
    with pytest.raises(RuntimeError):
        service.plan(message["runId"])  # two chunks streamed, not yet worked on
    Ledger.hashes[subscriber_hash("n0@x.com")] = "2026-11-30T10:00:00+00:00"  # an erasure lands meanwhile
    service.plan_queue.msgs.append(message)
    drain(service)
    counts = service.runs.get(run.id).segments[0].counts
    assert (counts["read"], counts["created"], counts["refused"]) == (5, 4, 1)  # n0 refused by its chunk, once
    assert "n0@x.com" not in client.aud
