"""Which snapshot column a mapping means: one rule, used by the check before a run and by planning alike.

A mapped name matches the column of exactly that name; failing that, the one column equal to it ignoring case.
Two columns equal to it ignoring case (and none exactly) is ambiguous, and no match is missing: either refuses the
export before anything is sent, because a mapping that silently matched nothing would make every row invalid and
take the segment's tag off every member.
"""
from __future__ import annotations

from typing import Iterable, Sequence


class ColumnMismatch(Exception):
    """The mapping does not fit the snapshot's columns.

    A snapshot's "columns" can be data: a CSV without its header row makes the first row's address and name the
    column names. So the exception's own message (str(error)), which ends up in logs and in run records (kept after
    the destination is deleted, read by operators), holds none of them: the mapped names, counts and column numbers,
    and what to do (`log_text` is the shortest form, for log lines). `detail` names the snapshot's columns too, for the
    answer to the admin starting an export, and for nothing that is stored or logged."""

    def __init__(self, missing: list[str], ambiguous: dict[str, list[str]], columns: Sequence[str]) -> None:
        self.missing = missing
        self.ambiguous = ambiguous
        numbers = [[i + 1 for i, column in enumerate(columns) if column in candidates] for candidates in ambiguous.values()]
        self.log_text = (f"{len(missing)} mapped column(s) missing and {len(ambiguous)} ambiguous"
                         + "".join(f" (snapshot columns {', '.join(map(str, n))} differ only in letter case)" for n in numbers)
                         + f" among the snapshot's {len(columns)} column(s)")
        super().__init__(f"mapped column(s) {[*missing, *ambiguous]} missing or ambiguous: {self.log_text}; check that "
                         "the segment's files have their header row, then fix the mapping or the export (starting the "
                         "export by hand answers with the snapshot's columns)")
        parts = []
        if missing:
            parts.append(f"the mapping names column(s) {missing} that the snapshot lacks")
        for wanted, candidates in ambiguous.items():
            parts.append(f"column {wanted!r} matches {candidates} (they differ only in letter case); map one of them exactly")
        self.detail = "; ".join(parts) + f"; the snapshot's columns are {list(columns)}: fix the mapping"


def resolve_columns(wanted: Iterable[str], columns: Sequence[str]) -> dict[str, str]:
    """Mapped name -> the snapshot's column name, or ColumnMismatch listing every problem."""
    exact = set(columns)
    folded: dict[str, list[str]] = {}
    for column in columns:
        folded.setdefault(column.casefold(), []).append(column)
    resolved: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for name in dict.fromkeys(wanted):
        if name in exact:
            resolved[name] = name
            continue
        candidates = folded.get(name.casefold(), [])
        if len(candidates) == 1:
            resolved[name] = candidates[0]
        elif candidates:
            ambiguous[name] = candidates
        else:
            missing.append(name)
    if missing or ambiguous:
        raise ColumnMismatch(missing, ambiguous, columns)
    return resolved
