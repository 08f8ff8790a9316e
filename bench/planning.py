"""Planning benchmark: 1,000,000 sample rows in four segments, read and planned against a 200k-member audience.

Targets: >= 50,000 rows/s and <= 300 MB peak RSS for the planning process. The rows are written by a
child process (so generating them does not count towards this process's peak) into a temp folder
that is removed afterwards. Timing covers reading the CSV partitions, validation, mapping, spilling,
merging and chunking; the audience is generated lazily while planning, so its cost is included too.

    .venv/bin/python bench/planning.py [--rows 1000000] [--audience 200000] [--chunk-size 500]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.planning import Mapping, SegmentInput, plan_export  # noqa: E402
from shared.sample_segments import FolderSource, sample_audience  # noqa: E402
from shared.segment_rows import read_rows  # noqa: E402
from shared.snapshots import list_segments  # noqa: E402

SEGMENTS = ("HighValueCustomers", "NewsletterSubscribers", "LapsedBuyers", "RecentSignups")
MAPPING = Mapping("Email", {"FNAME": "FirstName", "LNAME": "LastName", "LTV": "LifetimeValue", "LASTBUY": "LastPurchaseDate", "BDAY": "BirthDate"})
TYPES = {"LTV": "number", "LASTBUY": "date", "BDAY": "birthday"}
TARGET_ROWS_PER_SECOND = 50_000
TARGET_PEAK_MB = 300


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--audience", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-planning-") as folder:
        started = time.perf_counter()
        command = [sys.executable, "-m", "shared.sample_segments", folder, "--rows", str(args.rows), "--segments", ",".join(SEGMENTS)]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s (child process)")

        source = FolderSource(folder)
        segments = list_segments(source)
        inputs = [SegmentInput(name, name, read_rows(source, segments[name][0])) for name in SEGMENTS]
        problems = 0

        def count_problem(_problem: object) -> None:
            nonlocal problems
            problems += 1

        rss_before = peak_rss_mb()
        started = time.perf_counter()
        plan = plan_export(
            inputs,
            MAPPING,
            existing=sample_audience(args.audience),
            merge_field_types=TYPES,
            chunk_size=args.chunk_size,
            on_problem=count_problem,
            workdir=folder,
        )
        chunks = members = with_existing = 0
        for chunk in plan:
            chunks += 1
            members += len(chunk)
            with_existing += sum(member.existing is not None for member in chunk)
        seconds = time.perf_counter() - started

    read = sum(counts.read for counts in plan.counts.values())
    rate = read / seconds
    peak = peak_rss_mb()
    print(f"planned {read:,} rows -> {members:,} members in {chunks:,} chunks; {problems:,} invalid rows; "
          f"{with_existing:,} members already in the {args.audience:,}-member audience")  # fmt: skip
    print(f"time: {seconds:.1f} s  throughput: {rate:,.0f} rows/s (target >= {TARGET_ROWS_PER_SECOND:,})")
    print(f"peak RSS: {peak:.0f} MB (target <= {TARGET_PEAK_MB}); before planning: {rss_before:.0f} MB")
    print("RESULT:", "PASS" if rate >= TARGET_ROWS_PER_SECOND and peak <= TARGET_PEAK_MB else "FAIL")


if __name__ == "__main__":
    main()
