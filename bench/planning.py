"""Planning benchmark: 1,000,000 sample rows in four segments (or fewer: --segments), read and planned against a
200k-member audience.

Targets: >= 50,000 rows/s and <= 300 MB peak RSS for the planning process. The rows are written by a
child process (so generating them does not count towards this process's peak) into a temp folder
that is removed afterwards. Timing covers reading the CSV partitions, validation, mapping, spilling,
merging and chunking; the audience is generated lazily while planning, so its cost is included too.
CPU seconds (this process's) are printed beside the wall time: on a shared machine they move far less.

With --refresh-changed P the timed plan is a scheduled refresh instead: a first, untimed plan's members are written
as an audience mirror would hold them (one line a contact, shared.members.contact_line, handed to planning as lines
as shared/audience_mirror.py does), P % of them (every n-th) with another first name, and the plan compares every row
with that audience and settles the unchanged members as the export planner does (`already_done`).

With --memo as well, the refresh has the row memo (shared/row_memo.py) an earlier plan made when every row was in step,
as the export planner gives it: the rows it knows whose contact is unchanged are skipped unread.

    .venv/bin/python bench/planning.py [--rows 1000000] [--audience 200000] [--chunk-size 500] [--refresh-changed 1]
                                       [--memo] [--segments 4]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.exports.planner import _already_done
from shared.members import Contact, contact_line
from shared.planning import Mapping, SegmentInput, plan_export
from shared.row_memo import RowMemo, RowSkips, read_stored
from shared.sample_segments import FolderSource, sample_audience
from shared.segment_rows import RowDigests, read_rows
from shared.snapshots import list_segments

SEGMENTS = ("HighValueCustomers", "NewsletterSubscribers", "LapsedBuyers", "RecentSignups")
MAPPING = Mapping("Email", {"FNAME": "FirstName", "LNAME": "LastName", "LTV": "LifetimeValue", "LASTBUY": "LastPurchaseDate", "BDAY": "BirthDate"})
TYPES = {"LTV": "number", "LASTBUY": "date", "BDAY": "birthday"}
TARGET_ROWS_PER_SECOND = 50_000
TARGET_PEAK_MB = 300


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_mirror(path: str, inputs: list[SegmentInput], every: int) -> int:
    """Plan `inputs` against an empty audience and write its members to `path` as contacts; every `every`-th one
    with another first name. How many were written."""
    plan = plan_export(inputs, MAPPING, merge_field_types=TYPES, on_problem=lambda _problem: None,
                       workdir=os.path.dirname(path))
    written = 0
    with open(path, "w", encoding="utf-8") as file:
        for chunk in plan:
            for member in chunk:
                fields = dict(member.merge_fields)
                if written % every == 0:
                    fields["FNAME"] = f"{fields.get('FNAME', '')} Before"
                file.write(contact_line(member.email, "subscribed", fields, member.tags))
                written += 1
    return written


class Rows:
    """A segment's rows, readable twice (as the export planner hands them to planning)."""

    def __init__(self, source: FolderSource, snapshot: object, digests: RowDigests | None) -> None:
        self.source, self.snapshot, self.digests = source, snapshot, digests

    def __iter__(self) -> Iterator:
        return read_rows(self.source, self.snapshot, self.digests)


def read_mirror(path: str) -> Iterator[str]:
    """The contacts of `path` as the audience mirror hands them to planning: its stored lines."""
    with open(path, encoding="utf-8", newline="\n") as file:
        yield from file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--audience", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--refresh-changed", type=float, default=0.0, metavar="PERCENT",
                        help="time a refresh against the first plan's members, PERCENT %% of them changed since")
    parser.add_argument("--segments", type=int, default=len(SEGMENTS), choices=range(1, len(SEGMENTS) + 1),
                        help="how many of the four segments the rows are spread over (1: a refresh's usual shape)")
    parser.add_argument("--memo", action="store_true", help="the refresh has the row memo of a plan with every row in step")
    args = parser.parse_args()
    if not 0 <= args.refresh_changed <= 100:
        parser.error("--refresh-changed is a percentage: 0 (off) to 100")
    if args.memo and not args.refresh_changed:
        parser.error("--memo needs --refresh-changed")

    segment_names = SEGMENTS[:args.segments]
    with tempfile.TemporaryDirectory(prefix="bench-planning-") as folder:
        started = time.perf_counter()
        command = [sys.executable, "-m", "shared.sample_segments", folder, "--rows", str(args.rows), "--segments", ",".join(segment_names)]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s (child process)")

        source = FolderSource(folder)
        segments = list_segments(source)

        def inputs(skips: RowSkips | None = None) -> list[SegmentInput]:
            return [SegmentInput(name, name, Rows(source, segments[name][0], skips.for_segment(name, name, {}) if skips else None))
                    for name in segment_names]

        existing: Iterator[Contact] = sample_audience(args.audience)
        audience = args.audience
        if args.refresh_changed:
            mirror = os.path.join(folder, "mirror.tsv")
            every = max(1, round(100 / args.refresh_changed))  # every n-th contact changed
            skips = None
            if args.memo:  # the earlier refresh: every row in step, each one in the memo it makes
                write_mirror(mirror, inputs(), args.rows + 1)
                earlier = RowSkips(RowMemo.empty())
                for _ in plan_export(inputs(earlier), MAPPING, existing=read_mirror(mirror), merge_field_types=TYPES,
                                     on_problem=lambda _problem: None, workdir=folder, removable_tags=segment_names,
                                     already_done=_already_done, memo=earlier):
                    pass
                stored = read_stored(earlier.next.to_bytes(""))  # as the export planner reads it
                skips = RowSkips(stored.memo or RowMemo.empty(), stored.by_contact)
                print(f"an earlier plan with every row in step made a memo of {len(skips.memo):,} rows")
            audience = write_mirror(mirror, inputs(), every)
            existing = read_mirror(mirror)
            print(f"wrote an audience of {audience:,} contacts from a first plan, every {every} changed "
                  f"({100 / every:g} %)")
        problems = 0

        def count_problem(_problem: object) -> None:
            nonlocal problems
            problems += 1

        rss_before = peak_rss_mb()
        started, cpu_started = time.perf_counter(), time.process_time()
        plan = plan_export(
            inputs(skips if args.refresh_changed else None),
            MAPPING,
            existing=existing,
            merge_field_types=TYPES,
            chunk_size=args.chunk_size,
            on_problem=count_problem,
            workdir=folder,
            removable_tags=segment_names if args.refresh_changed else (),
            already_done=_already_done if args.refresh_changed else None,
            memo=skips if args.refresh_changed else None,
        )
        chunks = members = with_existing = 0
        for chunk in plan:
            chunks += 1
            members += len(chunk)
            with_existing += sum(member.existing is not None for member in chunk)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    read = sum(counts.read for counts in plan.counts.values())
    settled = sum(counts.settled for counts in plan.counts.values())
    rate = read / seconds
    peak = peak_rss_mb()
    print(f"planned {read:,} rows -> {members:,} members in {chunks:,} chunks; {problems:,} invalid rows; "
          f"{with_existing:,} members already in the {audience:,}-member audience; {settled:,} settled (unchanged)")  # fmt: skip
    print(f"rows known from the memo (skipped unread): {plan.known:,}")
    print(f"time: {seconds:.1f} s  throughput: {rate:,.0f} rows/s (target >= {TARGET_ROWS_PER_SECOND:,})")
    print(f"CPU: {cpu:.1f} s  {read / cpu:,.0f} rows per CPU second, {1e6 * cpu / read:.1f} us a row")
    print(f"peak RSS: {peak:.0f} MB (target <= {TARGET_PEAK_MB}); before planning: {rss_before:.0f} MB")
    print("RESULT:", "PASS" if rate >= TARGET_ROWS_PER_SECOND and peak <= TARGET_PEAK_MB else "FAIL")


if __name__ == "__main__":
    main()
