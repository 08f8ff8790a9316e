"""The segment the end-to-end benchmarks export, shared so the connector and the plain SDK script get the same rows.

`write_segment` writes a Customer Insights export of one segment (headerless CSV partitions plus model.json, from
shared.sample_segments with its fixed seed: the same `rows` give the same people, invalid and duplicate rows whatever
the writer or the time); with `changed_percent`, that share of the rows (every n-th) has a changed first name, as a
scheduled refresh finds them. `read_segment_rows` reads such an export back from a folder the way a hand-written script
would: model.json for the column names and the partitions in order, then each CSV partition.
"""
from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

from shared.sample_segments import DEFAULT_LOCATION_BASE, SampleStats, Writer, folder_writer, write_sample_export

SEGMENT = "HighValueCustomers"
SEED = 1


def write_segment(target: Writer | str | os.PathLike, rows: int, taken_at: datetime | None = None,
                  changed_percent: float = 0.0) -> SampleStats:
    """`rows` rows of SEGMENT written through `target` (a writer or a folder); what was written."""
    write = target if callable(target) else folder_writer(target)
    if changed_percent:
        write = _changing(write, round(100 / changed_percent))
    stats = write_sample_export(write, segments={SEGMENT: rows}, seed=SEED,
                                taken_at=taken_at or datetime.now(timezone.utc))
    return stats[SEGMENT]


def _changing(write: Writer, every: int) -> Writer:
    """`write`, with the first name of every `every`-th row of each CSV partition changed."""
    def changed(name: str, data: bytes) -> None:
        if not name.endswith(".csv"):
            return write(name, data)
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        for number, row in enumerate(csv.reader(io.StringIO(data.decode("utf-8"), newline=""))):
            if number % every == 0 and len(row) > 1:
                row[1] = f"{row[1]} Refreshed"
            writer.writerow(row)
        return write(name, out.getvalue().encode("utf-8"))
    return changed


def read_segment_rows(folder: str | os.PathLike, segment: str = SEGMENT) -> Iterator[dict[str, str]]:
    """Every row of `segment` in an export written to `folder`, as {column: value}, in partition order."""
    root = Path(folder)
    model_path = next(root.rglob("model.json"))
    model = json.loads(model_path.read_text(encoding="utf-8"))
    entity = next(e for e in model["entities"] if e["name"] == segment)
    columns = [a["name"] for a in entity["attributes"]]
    for partition in entity["partitions"]:
        name = unquote(partition["location"].removeprefix(DEFAULT_LOCATION_BASE))
        with open(root / name, encoding="utf-8", newline="") as f:
            for values in csv.reader(f):
                yield dict(zip(columns, values))
