"""Rows of a snapshot, streamed partition by partition, with unreadable rows reported instead of failing the file.

One bad row must not stop a 1M-row export, and every row must be accounted for: a row that cannot
be read comes out as a SourceRow with `values=None` and an `error` that says what to fix.
CSV is read with the csv module over a decoding stream (UTF-8 with or without BOM, CRLF or LF, quoted
commas, quotes and line breaks). Bytes that are not valid in the encoding are kept as surrogate
escapes so that only the rows carrying them are flagged. A quote that is never closed swallows the
lines after it into one field until the csv module's field limit; that comes out as one error row.
JSONL must be UTF-8; nested values come out as JSON text, null as "".
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from shared.snapshots import BlobSource, Snapshot

QUOTING_HINT = "check quoting of commas and line breaks"
UTF8_HINT = "save the file as UTF-8"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One data row as read, traceable to its partition and row number."""

    partition: str
    row: int  # 1-based data row number within the partition (header not counted)
    values: dict[str, str] | None  # None when the row is unreadable
    error: str | None  # why unreadable, naming what to fix


def read_rows(source: BlobSource, snapshot: Snapshot) -> Iterator[SourceRow]:
    """Every row of every partition in read order; never more than one partition buffer in memory."""
    read_partition = _jsonl_rows if snapshot.format == "jsonl" else _csv_rows
    for partition in snapshot.partitions:
        with source.open_binary(partition) as stream:
            yield from read_partition(partition, stream, snapshot)


def snapshot_columns(source: BlobSource, snapshot: Snapshot) -> tuple[str, ...]:
    """Columns a mapping can name: the first header (or JSON object) found, else model.json's columns."""
    if snapshot.format == "jsonl":
        for row in read_rows(source, snapshot):
            if row.values is not None:
                return tuple(row.values)
    elif snapshot.has_header:
        for partition in snapshot.partitions:
            with source.open_binary(partition) as stream:
                for fields in csv.reader(_text(stream, snapshot), delimiter=snapshot.delimiter):
                    if fields:
                        return tuple(field.strip() for field in fields)
    return snapshot.columns or ()


def _text(stream: BinaryIO, snapshot: Snapshot) -> io.TextIOWrapper:
    try:
        encoding = codecs.lookup(snapshot.encoding).name
    except LookupError:
        raise ValueError(f"Segment {snapshot.segment}: encoding {snapshot.encoding!r} is not known; export the files as UTF-8") from None
    if encoding == "utf-8":
        encoding = "utf-8-sig"  # a BOM, if any, is not part of the first column's name
    return io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")


def _undecodable(fields: list[str]) -> bool:
    """True when a field holds surrogate escapes, i.e. bytes the encoding could not decode."""
    joined = "".join(fields)
    if joined.isascii():
        return False
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _header_problem(header: list[str]) -> str | None:
    if _undecodable(header):
        return f"the header row has bytes that are not valid text ({UTF8_HINT})"
    seen = set()
    for name in header:
        if name in seen:
            return f"the header row names column '{name}' twice; give each column its own name"
        seen.add(name)
    return None


def _csv_rows(partition: str, stream: BinaryIO, snapshot: Snapshot) -> Iterator[SourceRow]:
    records = csv.reader(_text(stream, snapshot), delimiter=snapshot.delimiter, strict=True)
    columns: list[str] | None = None if snapshot.has_header else list(snapshot.columns or ())
    header_problem = None
    if columns == []:
        header_problem = "model.json lists no attributes for this headerless partition; export it with its columns"
    number = 0
    while True:
        try:
            fields = next(records)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield SourceRow(partition, number, None, f"is not valid CSV: {exc} (line {records.line_num}; {QUOTING_HINT})")
            continue
        if not fields:
            continue  # blank line: not a row
        if columns is None:
            columns = [name.strip() for name in fields]
            header_problem = _header_problem(columns)
            continue
        number += 1
        if header_problem:
            yield SourceRow(partition, number, None, header_problem)
        elif _undecodable(fields):
            yield SourceRow(partition, number, None, f"has bytes that are not valid {snapshot.encoding.upper()} (line {records.line_num}; {UTF8_HINT})")
        elif len(fields) == len(columns) or (len(fields) > len(columns) and not any(fields[len(columns) :])):
            yield SourceRow(partition, number, dict(zip(columns, fields)), None)
        else:
            yield SourceRow(
                partition,
                number,
                None,
                f"has {len(fields)} fields, expected {len(columns)} (line {records.line_num}; {QUOTING_HINT})",
            )


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _jsonl_rows(partition: str, stream: BinaryIO, snapshot: Snapshot) -> Iterator[SourceRow]:
    number = 0
    for line_number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        number += 1
        try:
            doc = json.loads(raw.decode("utf-8").lstrip("\ufeff"))
        except UnicodeDecodeError:
            yield SourceRow(partition, number, None, f"has bytes that are not valid UTF-8 (line {line_number}; {UTF8_HINT})")
            continue
        except json.JSONDecodeError as exc:
            yield SourceRow(partition, number, None, f"is not valid JSON: {exc.msg} (line {line_number}, column {exc.colno})")
            continue
        if not isinstance(doc, dict):
            yield SourceRow(partition, number, None, f"is not a JSON object (line {line_number}); write one object a line")
            continue
        values = {str(key): _json_text(value) for key, value in doc.items()}
        if _undecodable([*values, *values.values()]):
            yield SourceRow(partition, number, None, f"has a \\u escape that is not a character (line {line_number}); {UTF8_HINT}")
            continue
        yield SourceRow(partition, number, values, None)
