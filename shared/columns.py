"""Which snapshot column a mapping means: one rule, used by the check before a run and by planning alike.

A mapped name matches the column of exactly that name; failing that, the one column equal to it ignoring case.
Two columns equal to it ignoring case (and none exactly) is ambiguous, and no match is missing: either refuses the
export before anything is sent, because a mapping that silently matched nothing would make every row invalid and
take the segment's tag off every member.
"""
from __future__ import annotations

from typing import Iterable, Sequence


class ColumnMismatch(Exception):
    """The mapping does not fit the snapshot's columns; the message names each column and what to do."""

    def __init__(self, missing: list[str], ambiguous: dict[str, list[str]], columns: Sequence[str]) -> None:
        parts = []
        if missing:
            parts.append(f"the mapping names column(s) {missing} that the snapshot lacks")
        for wanted, candidates in ambiguous.items():
            parts.append(f"column {wanted!r} matches {candidates} (they differ only in letter case); map one of them exactly")
        super().__init__("; ".join(parts) + f"; the snapshot's columns are {list(columns)}: fix the mapping")
        self.missing = missing
        self.ambiguous = ambiguous
        # For log lines: counts and column numbers only. A snapshot's "columns" can be data (a CSV without its
        # header row makes the first row's addresses the column names); the message above is for the admin.
        numbers = [[i + 1 for i, column in enumerate(columns) if column in candidates] for candidates in ambiguous.values()]
        self.log_text = (f"{len(missing)} mapped column(s) missing and {len(ambiguous)} ambiguous"
                         + "".join(f" (snapshot columns {', '.join(map(str, n))} differ only in letter case)" for n in numbers)
                         + f" among the snapshot's {len(columns)} column(s)")


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
