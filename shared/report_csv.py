"""A run's errors report (JSON Lines) as CSV, for `GET /api/exports/{runId}/errors?format=csv`.

The report holds what segment files held (emails, names in reasons), and anyone who can write to the segments
container chooses those values: a cell a spreadsheet would take for a formula (starting with =, +, -, @, or a tab or
carriage return, which some spreadsheets skip before looking) is written with a leading apostrophe, as OWASP
recommends against CSV injection. Pages join into one file: only the first page has the header row (and a UTF-8 byte
order mark, so spreadsheets read accented names right).
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

COLUMNS = ("segment", "partition", "row", "email", "reason", "source", "column", "mergeTag", "action", "memberHash")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def cell(value: Any) -> str:
    """One CSV cell: text as it is unless a spreadsheet could run it, numbers as digits, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(lines: Iterable[bytes], header: bool) -> bytes:
    """JSON Lines of the errors report as CSV rows (CRLF), with the header row (and BOM) first when `header`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        out.write(BOM)
        writer.writerow(COLUMNS)
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        writer.writerow([cell(doc.get(name)) for name in COLUMNS])
    return out.getvalue().encode("utf-8")
